//! How the host reaches a queue's database: plain, or over TLS with the
//! server's certificate and name verified (`sslmode=require`).

use deadpool_postgres::{Manager, ManagerConfig};
use tokio_postgres::config::SslMode;
use tokio_postgres::{CancelToken, Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::CaFile;

/// How the host reaches a database: as its URL's `sslmode` says.
#[derive(Clone)]
pub enum DbTls {
    Plain,
    /// `sslmode=require`: TLS, the certificate and name verified.
    Verified(MakeRustlsConnect),
}

impl std::fmt::Debug for DbTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbTls::Plain => "Plain",
            DbTls::Verified(_) => "Verified",
        })
    }
}

impl DbTls {
    pub fn new(config: &tokio_postgres::Config, ca_file: Option<&CaFile>) -> anyhow::Result<Self> {
        Ok(match config.get_ssl_mode() {
            SslMode::Require => {
                DbTls::Verified(MakeRustlsConnect::new(crate::tls::client_config(ca_file)?))
            }
            _ => DbTls::Plain,
        })
    }

    /// A pool manager connecting this way.
    pub(super) fn manager(
        &self,
        config: tokio_postgres::Config,
        settings: ManagerConfig,
    ) -> Manager {
        match self {
            DbTls::Plain => Manager::from_config(config, NoTls, settings),
            DbTls::Verified(tls) => Manager::from_config(config, tls.clone(), settings),
        }
    }

    /// One connection, outside any pool; its driving task is spawned.
    pub async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        fn drive<S, T>(connection: tokio_postgres::Connection<S, T>) -> tokio::task::JoinHandle<()>
        where
            S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        {
            tokio::spawn(async move {
                let _ = connection.await;
            })
        }
        match self {
            DbTls::Plain => {
                let (client, connection) = config.connect(NoTls).await?;
                Ok((client, drive(connection)))
            }
            DbTls::Verified(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                Ok((client, drive(connection)))
            }
        }
    }

    /// Asks the server to cancel what runs on a connection.
    pub(super) async fn cancel(&self, token: CancelToken) {
        let _ = match self {
            DbTls::Plain => token.cancel_query(NoTls).await,
            DbTls::Verified(tls) => token.cancel_query(tls.clone()).await,
        };
    }
}
