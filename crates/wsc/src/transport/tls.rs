//! TLS with rustls (the crypto provider the application installed process-wide, else aws-lc-rs
//! with post-quantum key exchange): server certificates checked against the platform's roots
//! (or bundled Mozilla roots, or both) plus any extra CAs, client certificates, SNI, ALPN
//! `http/1.1`, and a loudly named way to skip verification for development.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::BoxIo;
use super::TransportConfig;
use crate::error::{Error, IoContext};

/// Which root certificates a client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Roots {
    /// The operating system's store (default; needs the `native-roots` feature, on by default).
    #[default]
    Platform,
    /// Mozilla's roots compiled into the binary (webpki-roots), for systems without a store
    /// (needs the `webpki-roots` feature).
    Bundled,
    /// Both (needs both features).
    PlatformAndBundled,
    /// Only the extra CAs added with `add_root_certificates_pem`.
    None,
}

/// TLS settings gathered by the builder.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    pub roots: Roots,
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub client_cert: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub danger_accept_invalid_certs: bool,
    pub custom: Option<Arc<ClientConfig>>,
}

/// Parses PEM certificates.
pub(crate) fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| Error::InvalidConfig(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidConfig(
            "no certificate in the PEM data".into(),
        ));
    }
    Ok(certs)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::InvalidConfig(format!("bad PEM private key: {e}")))
}

impl TlsSettings {
    /// The rustls configuration these settings describe.
    pub(crate) fn build(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(c) = &self.custom {
            return Ok(c.clone());
        }
        // The application's choice (`CryptoProvider::install_default`), else rustls's default.
        let provider = rustls::crypto::CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
        let builder = if self.danger_accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
        } else {
            let mut store = RootCertStore::empty();
            if matches!(self.roots, Roots::Platform | Roots::PlatformAndBundled) {
                #[cfg(feature = "native-roots")]
                store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                #[cfg(not(feature = "native-roots"))]
                return Err(Error::InvalidConfig(format!(
                    "Roots::{:?} needs the `native-roots` feature of wsc",
                    self.roots
                )));
            }
            if matches!(self.roots, Roots::Bundled | Roots::PlatformAndBundled) {
                #[cfg(feature = "webpki-roots")]
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                #[cfg(not(feature = "webpki-roots"))]
                return Err(Error::InvalidConfig(format!(
                    "Roots::{:?} needs the `webpki-roots` feature of wsc",
                    self.roots
                )));
            }
            for c in &self.extra_roots {
                store
                    .add(c.clone())
                    .map_err(|e| Error::InvalidConfig(format!("bad root certificate: {e}")))?;
            }
            builder.with_root_certificates(store)
        };
        let mut config = match &self.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| Error::InvalidConfig(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Runs the TLS handshake over `io` for `host` (SNI and certificate name).
pub(crate) async fn connect(
    config: &TransportConfig,
    host: &str,
    io: BoxIo,
) -> Result<BoxIo, Error> {
    let tls = config.tls_config()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|_| Error::InvalidUrl {
        url: host.into(),
        reason: "not a valid TLS server name".into(),
    })?;
    match TlsConnector::from(tls).connect(name, io).await {
        Ok(s) => {
            let (_, session) = s.get_ref();
            crate::trace::debug!(
                host,
                version = session.protocol_version().and_then(|v| v.as_str()),
                alpn = session
                    .alpn_protocol()
                    .map(String::from_utf8_lossy)
                    .as_deref(),
                "wsc: TLS established"
            );
            #[cfg(not(feature = "tracing"))]
            let _ = session;
            Ok(Box::new(s))
        }
        Err(e) => Err(tls_error(host, e)),
    }
}

/// A TLS failure says which host and keeps rustls's error; an I/O failure during the
/// handshake stays an I/O error.
pub(crate) fn tls_error(host: &str, e: std::io::Error) -> Error {
    let host = host.to_owned();
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match tls {
        Some(source) => Error::Tls {
            host,
            source: Arc::new(Box::new(source)),
        },
        None => Error::io(IoContext::Tls { host }, e),
    }
}

/// Accepts any certificate: `ClientBuilder::danger_accept_invalid_certs`. Signatures are
/// still checked, so the handshake itself stays sound; only the identity is not.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
