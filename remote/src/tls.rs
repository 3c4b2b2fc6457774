//! Certificate pinning: the server's certificate is trusted when its
//! SHA-256 fingerprint is the one recorded at enrollment, and the server
//! proves it holds the certificate's key (the TLS 1.3 handshake signature
//! is checked against the certificate's public key). No certificate
//! authority is involved, so a self-signed certificate is enough, and a
//! different certificate, even one a public CA signed, is refused.

use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Checks the server's certificate against a pinned fingerprint (or, with
/// no pin, accepts any and records what it saw, for trust on first use).
#[derive(Debug)]
pub struct Pinned {
    expected: Option<String>,
    seen: Mutex<Option<String>>,
    algs: WebPkiSupportedAlgorithms,
}

impl Pinned {
    /// What the last handshake presented.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pin, if any.
    pub fn expected(&self) -> Option<&str> {
        self.expected.as_deref()
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = rewind_core::wire::fingerprint(end_entity);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(fp.clone());
        match &self.expected {
            None => Ok(ServerCertVerified::assertion()),
            Some(e) if *e == fp => Ok(ServerCertVerified::assertion()),
            Some(e) => Err(rustls::Error::General(format!(
                "the server presents certificate {fp}, but {e} is pinned"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A TLS 1.3 client configuration pinned to `fingerprint` (or recording
/// only, with `None`), and its verifier.
pub fn client_config(fingerprint: Option<&str>) -> (rustls::ClientConfig, Arc<Pinned>) {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = Arc::new(Pinned {
        expected: fingerprint.map(str::to_string),
        seen: Mutex::new(None),
        algs: provider.signature_verification_algorithms,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(pinned.clone())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (cfg, pinned)
}
