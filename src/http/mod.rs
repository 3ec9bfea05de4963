//! The only place HTTP clients are built, and the capped body reader.
//!
//! Two clients, each with every policy visible here:
//! - `identity`: for the platform's managed-identity endpoints (IMDS, App Service, Arc,
//!   Cloud Shell, Azure ML). Plain HTTP is allowed because those endpoints are plain
//!   HTTP on link-local or loopback addresses; proxies are off (IMDS must never be
//!   reached through a proxy, and hyper does not exempt 169.254.169.254 itself).
//! - `tls`: for Entra ID and Key Vault. HTTPS only, so a token can never be sent in
//!   clear text whatever URL is built; HTTP/2 when the server offers it (ALPN).
//!
//! - `connector`: opens a vault's HTTP/2 connection while the token is being fetched
//!   ([`preconnect`]), with the `tls` client's TLS configuration.
//!
//! Both clients refuse to follow redirects: a redirect would carry the request (and with it
//! the `Authorization` header) to a host nobody checked. TLS roots are the OS store,
//! which `SSL_CERT_FILE` / `SSL_CERT_DIR` replace, as with OpenSSL. There is no way to
//! turn certificate verification off.

pub mod preconnect;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response, redirect};
use zeroize::Zeroizing;

pub use preconnect::{Connector, Preconnected};

pub const USER_AGENT: &str = concat!("kvrun/", env!("CARGO_PKG_VERSION"));

/// Largest response body kvrun reads. A secret is at most 25 KB; token responses are
/// a few KB. Anything larger is refused before it is read in full.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The HTTP clients of one run.
#[derive(Debug, Clone)]
pub struct Clients {
    pub identity: Client,
    pub tls: Client,
    /// Opens vault connections ahead of their first request (see [`preconnect`]), with
    /// the `tls` client's TLS configuration.
    pub connector: Connector,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up HTTP: {0}")]
pub struct SetupError(String);

/// How long a TCP connect (and a TLS handshake) to Entra ID or a vault may take.
const TLS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Clients {
    /// `resolve` pins host names to addresses for the `tls` client (`--resolve`); the
    /// certificate is still verified against the host name, so this changes where a
    /// connection goes, never whom it trusts.
    pub fn new(resolve: &[crate::cli::Resolve]) -> Result<Self, SetupError> {
        install_crypto_provider();
        // Loading the trust roots is most of kvrun's own CPU time (the OS store is
        // parsed certificate by certificate): do it once, for both clients and the
        // pre-opened connections. The identity endpoints are plain HTTP, but sharing
        // keeps an https one (if a platform ever serves one) on the same roots.
        let tls_config = Arc::new(tls_config()?);
        let identity = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .tls_backend_preconfigured((*tls_config).clone())
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SetupError(error_chain(&e)))?;
        let mut tls = Client::builder()
            .user_agent(USER_AGENT)
            .redirect(redirect::Policy::none())
            .https_only(true)
            .tls_backend_preconfigured((*tls_config).clone())
            .connect_timeout(TLS_CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30));
        for entry in resolve {
            // The port is the URL's: reqwest ignores the one given here.
            tls = tls.resolve(&entry.host, SocketAddr::new(entry.addr, 0));
        }
        let tls = tls.build().map_err(|e| SetupError(error_chain(&e)))?;
        let connector = Connector::new(tls_config, resolve, TLS_CONNECT_TIMEOUT);
        Ok(Self {
            identity,
            tls,
            connector,
        })
    }
}

/// The TLS configuration of Entra ID and Key Vault connections: rustls on ring, TLS
/// 1.2 and 1.3, the platform's verifier (the OS roots, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), HTTP/2 offered first.
fn tls_config() -> Result<rustls::ClientConfig, SetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| SetupError(format!("TLS roots: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls on ring. Installed explicitly because reqwest is built without a default
/// provider (aws-lc's start-up cost is what we avoid).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("response body larger than {limit} bytes (refused)")]
    TooLarge { limit: usize },
    #[error("connection failed while reading the response body: {0}")]
    Read(String),
}

/// Reads a body into zeroizing memory, refusing more than `limit` bytes: at once when
/// Content-Length says so, else as soon as the running total passes the limit.
pub async fn read_body(
    mut response: Response,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, BodyError> {
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(BodyError::TooLarge { limit });
    }
    // Reserve up front: growing the vector would leave unzeroized copies behind.
    let capacity = usize::try_from(announced)
        .unwrap_or(limit)
        .clamp(256, limit);
    let mut body = Zeroizing::new(Vec::with_capacity(capacity));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        if body.len() + chunk.len() > body.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (body.capacity() * 2)
                    .max(body.len() + chunk.len())
                    .min(limit),
            ));
            bigger.extend_from_slice(&body);
            body = bigger;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error with its causes on one line ("error sending request: connection
/// refused"). reqwest's messages name URLs, never headers or bodies.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How a transport error should be treated by the retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Nothing listens there (or the host does not resolve): retried briefly only.
    Connect,
    Timeout,
    /// The TLS handshake failed (an untrusted, expired or misnamed certificate):
    /// permanent, since asking again gets the same certificate.
    Tls,
    /// Reset or closed mid-exchange, a broken body: retried.
    Other,
}

pub fn classify(error: &reqwest::Error) -> TransportKind {
    if is_tls_failure(error) {
        TransportKind::Tls
    } else if error.is_timeout() {
        TransportKind::Timeout
    } else if error.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    }
}

/// Whether a rustls error is among the causes (hyper wraps it in an `io::Error`).
/// Certificate failures are what matters: the same request gets the same certificate.
fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && inner.downcast_ref::<rustls::Error>().is_some()
        {
            return true;
        }
        // io::Error's source() skips the error it wraps, so the typed check can miss
        // it: rustls's own wording for certificate failures is the fallback.
        if e.to_string().contains("invalid peer certificate") {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A client for Service Fabric's identity endpoint: HTTPS with a self-signed
/// certificate that is trusted only because its SHA-1 thumbprint equals
/// `IDENTITY_SERVER_THUMBPRINT` (the way MSAL Go pins it). The chain and name are not
/// checked, since the endpoint's certificate is not issued by any CA; the handshake
/// signature still is, so only the holder of that certificate's key can answer.
pub fn pinned_client(sha1_thumbprint: [u8; 20]) -> Result<Client, SetupError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ThumbprintVerifier {
        thumbprint: sha1_thumbprint,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Client::builder()
        .user_agent(USER_AGENT)
        .redirect(redirect::Policy::none())
        .https_only(true)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .tls_backend_preconfigured(config)
        .build()
        .map_err(|e| SetupError(error_chain(&e)))
}

#[derive(Debug)]
struct ThumbprintVerifier {
    thumbprint: [u8; 20],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for ThumbprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest =
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, end_entity.as_ref());
        if digest.as_ref() == self.thumbprint {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate thumbprint does not match IDENTITY_SERVER_THUMBPRINT".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
