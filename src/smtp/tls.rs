//! STARTTLS for the client side: rustls with the *ring* provider, certificates checked against
//! the system's trust store (`/etc/ssl/certs`, read through `rustls-native-certs`, the store that
//! `ca-certificates` and the administrator maintain), or not checked at all when asked.
//!
//! Either way the verdict of the check is recorded, so a probe can report "certificate not
//! trusted: UnknownIssuer" for a server it nevertheless talked to; and the peer certificate's
//! names and validity are exposed for `mx-check`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::error::TlsErrorKind;

/// Whether the server's certificate must be trusted for the handshake to succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The chain must lead to a trusted root and name the host we connected to.
    Required,
    /// Anything is accepted (the verdict is still recorded): for self-signed test servers and
    /// private relays the administrator knows.
    Insecure,
}

/// TLS settings shared by every connection of a program. The trust store is read once, on the
/// first handshake that needs it.
#[derive(Debug)]
pub struct TlsClient {
    verification: Verification,
    provider: Arc<CryptoProvider>,
    webpki: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

/// What a finished handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    pub cipher_suite: String,
    /// `Ok` when the certificate is trusted for the name we connected to; the reason otherwise.
    pub verified: Result<(), String>,
    pub certificate: Option<CertificateInfo>,
}

/// The parts of the server certificate an administrator checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject common names.
    pub common_names: Vec<String>,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub alt_names: Vec<String>,
    pub issuer: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

impl TlsClient {
    pub fn new(verification: Verification) -> TlsClient {
        TlsClient {
            verification,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            webpki: OnceLock::new(),
        }
    }

    pub fn verification(&self) -> Verification {
        self.verification
    }

    /// A configuration for one handshake, with a verifier that records its verdict in `verdict`.
    /// A trust store that cannot be read is a certificate failure when certificates must be
    /// trusted, and no failure otherwise.
    pub(crate) fn config(
        &self,
        verdict: Arc<Mutex<Option<Result<(), String>>>>,
    ) -> Result<Arc<rustls::ClientConfig>, (TlsErrorKind, String)> {
        let webpki = self.webpki.get_or_init(|| self.load_webpki()).clone();
        if self.verification == Verification::Required
            && let Err(reason) = &webpki
        {
            return Err((TlsErrorKind::Certificate, reason.clone()));
        }
        let verifier = Arc::new(RecordingVerifier {
            webpki: webpki.ok(),
            insecure: self.verification == Verification::Insecure,
            provider: self.provider.clone(),
            verdict,
        });
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| (TlsErrorKind::Handshake, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    fn load_webpki(&self) -> Result<Arc<WebPkiServerVerifier>, String> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let reason = found
                .errors
                .first()
                .map_or_else(|| "none found".to_string(), |e| e.to_string());
            return Err(format!(
                "no trusted CA certificates in the system store ({reason}); \
                 install ca-certificates or use --tls-insecure"
            ));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| e.to_string())
    }
}

/// The name a certificate must carry: the host name we were given, or the IP address we
/// connected to when we were given none.
pub(crate) fn server_name(name: Option<&str>, ip: IpAddr) -> ServerName<'static> {
    name.and_then(|n| ServerName::try_from(n.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
}

#[derive(Debug)]
struct RecordingVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
    verdict: Arc<Mutex<Option<Result<(), String>>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let outcome = match &self.webpki {
            Some(webpki) => webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map(|_| ()),
            None => Err(rustls::Error::General(
                "no trusted CA certificates in the system store".to_string(),
            )),
        };
        if let Ok(mut verdict) = self.verdict.lock() {
            *verdict = Some(outcome.clone().map_err(|e| describe(&e)));
        }
        match outcome {
            Err(e) if !self.insecure => Err(e),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    // Signatures over the handshake are checked in every mode: "insecure" skips the trust
    // decision, not the proof that the peer holds the certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The negotiated protocol and cipher suite of a finished handshake, as logs name them:
/// (`TLSv1.3`, `TLS13_AES_256_GCM_SHA384`). Either side's connection will do.
pub(crate) fn negotiated(state: &rustls::CommonState) -> (String, String) {
    let protocol = match state.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let cipher_suite = state
        .negotiated_cipher_suite()
        .map(|suite| format!("{:?}", suite.suite()))
        .unwrap_or_default();
    (protocol, cipher_suite)
}

/// A certificate problem in words an administrator knows.
pub(crate) fn describe(err: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "certificate not trusted: unknown issuer (self-signed or private CA)".to_string()
        }
        rustls::Error::InvalidCertificate(C::Expired) => "certificate has expired".to_string(),
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "certificate does not name this host".to_string()
        }
        other => other.to_string(),
    }
}

/// Whether accepting any certificate would have let the handshake that failed with `err` succeed.
pub(crate) fn kind(err: &rustls::Error) -> TlsErrorKind {
    match err {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::NoCertificatesPresented => TlsErrorKind::Certificate,
        _ => TlsErrorKind::Handshake,
    }
}

/// Reads names and validity from a DER certificate; `None` when it does not parse.
pub(crate) fn certificate_info(der: &[u8]) -> Option<CertificateInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_names = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_string)
        .collect();
    let mut alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    alt_names.push(dns.to_string())
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        alt_names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let time = |t: &x509_parser::time::ASN1Time| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(t.timestamp(), 0)
    };
    Some(CertificateInfo {
        common_names,
        alt_names,
        issuer: cert.issuer().to_string(),
        not_before: time(&cert.validity().not_before)?,
        not_after: time(&cert.validity().not_after)?,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validity_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["mx.example.test".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mx.example.test");
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let info = certificate_info(cert.der()).unwrap();
        assert_eq!(info.common_names, ["mx.example.test"]);
        assert_eq!(info.alt_names, ["mx.example.test", "127.0.0.1"]);
        assert_eq!(info.not_after.format("%Y-%m-%d").to_string(), "2031-01-02");
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(certificate_info(b"not a certificate"), None);
    }
}
