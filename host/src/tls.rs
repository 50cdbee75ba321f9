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
