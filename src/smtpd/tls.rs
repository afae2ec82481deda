//! The server side of STARTTLS: the certificate and key, and the handshake as the log shows it.
//!
//! The certificate and key are those of `tls_cert` and `tls_key`, loaded once when the server
//! starts.
//!
//! The files are read at start-up, not at the first STARTTLS, so that a missing or malformed
//! file stops the daemon with EX_CONFIG instead of failing every client's handshake later.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, ConfigError};

/// The rustls configuration for STARTTLS, or `None` when no certificate is configured.
pub fn server_config(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let file = config
        .source
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let error = |key: &str, reason: String| ConfigError {
        file: file.clone(),
        key: Some(key.to_string()),
        reason,
    };
    let chain = read_chain(cert).map_err(|reason| error("tls_cert", reason))?;
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| error("tls_key", format!("{}: {}", key.display(), pem_reason(&e))))?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| error("tls_cert", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    // A key of a kind rustls cannot use, or one that does not match the certificate.
    .map_err(|e| error("tls_key", format!("{}: {e}", key.display())))?;
    Ok(Some(Arc::new(server)))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(chain)
}

/// The I/O error itself when the file could not be read, rather than its debug form.
fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM private key in the file".into(),
        other => format!("not usable PEM: {other}"),
    }
}

/// `TLSv1.3 TLS13_AES_256_GCM_SHA384`, for the log.
pub fn describe(connection: &rustls::ServerConnection) -> String {
    let (protocol, cipher) = crate::smtp::negotiated(connection);
    format!("{protocol} {cipher}")
}
