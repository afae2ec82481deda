//! A certificate made for one test run: self-signed, so no client trusts it, but it encrypts.

use std::sync::Arc;

/// A rustls server configuration with a fresh self-signed certificate for `names`.
pub fn self_signed(names: &[&str]) -> Arc<rustls::ServerConfig> {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server certificate");
    Arc::new(config)
}
