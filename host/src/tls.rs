//! TLS for the host's own connections to a queue's services: the web's
//! root certificates (webpki-roots, built in, so a host behaves the same
//! on every machine), plus the certificates of a private CA an operator
//! names in `ca_file`. Certificates are always verified, names included;
//! there is no setting to turn that off.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::CaFile;

/// A client configuration trusting the web's roots and `extra`'s.
pub fn client_config(extra: Option<&CaFile>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = extra {
        for certificate in CertificateDer::pem_slice_iter(&ca.pem) {
            roots
                .add(certificate?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The web's root certificates as PEM, for a client that takes the
/// certificates it trusts that way (redis-rs).
pub fn web_roots_pem() -> Vec<u8> {
    use base64::Engine;
    let mut out = Vec::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        for line in text.as_bytes().chunks(64) {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    out
}

/// The admin server's TLS configuration: the certificate chain in
/// `cert_pem` (the server's certificate first) and its private key in
/// `key_pem`. The errors say which of the two is at fault.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ServerConfig, ServerTlsError> {
    use rustls::pki_types::PrivateKeyDer;

    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerTlsError::Cert(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(ServerTlsError::Cert(
            "holds no certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        ServerTlsError::Key(format!(
            "holds no private key (-----BEGIN PRIVATE KEY-----): {e}"
        ))
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServerTlsError::Cert(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            ServerTlsError::Key("is not the key of the certificate in tls_cert".into())
        }
        e => ServerTlsError::Key(e.to_string()),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What is wrong with the admin server's certificate or key.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerTlsError {
    Cert(String),
    Key(String),
}
