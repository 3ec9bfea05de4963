//! An HTTP/2 connection to a vault, opened before the first request needs it.
//!
//! The minimum start-up is one token round trip, then one round of parallel GETs. The
//! vault's TCP and TLS handshakes need no token, so they run while the token is being
//! fetched instead of after it. reqwest opens connections only for a request, so this
//! module opens one itself (TCP, rustls with the same verifier and roots as the `tls`
//! client, ALPN `h2`, hyper's HTTP/2 handshake) and hands out a sender that multiplexes
//! every request of the vault on it.
//!
//! It is an optimisation only, never a second policy: anything unusual — a server
//! without HTTP/2, a failed handshake, a connection that closed — makes the caller use
//! the pooled `tls` client, whose errors are the ones reported. The same rules hold on
//! both paths: HTTPS only (the connection is TLS by construction), no redirects (hyper's
//! connection API never follows one), the certificate verified against the host name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reqwest::header::{HeaderValue, USER_AGENT};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::Resolve;

/// An established HTTP/2 connection; cheap to clone (every clone multiplexes on it).
#[derive(Debug, Clone)]
pub struct Preconnected {
    sender: SendRequest<reqwest::Body>,
    /// The host and port the connection was opened (and its certificate verified)
    /// for: the only requests it carries.
    host: String,
    port: u16,
}

/// The settings a pre-connection is made with: the TLS configuration (shared with the
/// `tls` client's rules: ring, the platform verifier, h2 then http/1.1) and the
/// `--resolve` pins.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: Arc<ClientConfig>,
    resolve: Arc<[Resolve]>,
    connect_timeout: Duration,
}

impl Connector {
    pub(super) fn new(
        tls: Arc<ClientConfig>,
        resolve: &[Resolve],
        connect_timeout: Duration,
    ) -> Self {
        Self {
            tls,
            resolve: resolve.into(),
            connect_timeout,
        }
    }

    /// Opens an HTTP/2 connection to `host:port`; the error says why not (for the log).
    pub async fn connect(&self, host: &str, port: u16) -> Result<Preconnected, String> {
        let addrs = self.addresses(host, port).await?;
        let tcp = self.tcp(&addrs).await?;
        // Small requests and responses: Nagle's delay would only add latency.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("'{host}' is not a TLS server name: {e}"))?;
        let tls = tokio::time::timeout(
            self.connect_timeout,
            TlsConnector::from(self.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err("the server did not offer HTTP/2".to_owned());
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                crate::debug!("pre-opened connection closed: {e}");
            }
        });
        Ok(Preconnected {
            sender,
            host: host.to_owned(),
            port,
        })
    }

    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Some(pin) = self.resolve.iter().find(|r| r.host == host) {
            return Ok(vec![SocketAddr::new(pin.addr, port)]);
        }
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| format!("resolving {host} timed out"))?
                .map_err(|e| format!("resolving {host}: {e}"))?
                .collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no address"));
        }
        Ok(addrs)
    }

    async fn tcp(&self, addrs: &[SocketAddr]) -> Result<TcpStream, String> {
        let mut last = String::new();
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = format!("connecting to {addr}: {e}"),
                Err(_) => last = format!("connecting to {addr} timed out"),
            }
        }
        Err(last)
    }
}

impl Preconnected {
    /// Whether requests can still go on this connection (not closed by either side).
    pub fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends `request` on the connection. The response is handed back as reqwest's, so
    /// that status handling and the capped body reader are the same on both paths.
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, String> {
        // A request (and its token) for another host never goes on this connection.
        let url = request.url();
        if url.host_str().map(|h| h.trim_matches(['[', ']'])) != Some(self.host.as_str())
            || url.port_or_known_default() != Some(self.port)
        {
            return Err(format!(
                "refused: the connection is for {}:{}, the request for another origin",
                self.host, self.port
            ));
        }
        let mut request = http::Request::try_from(request).map_err(|e| e.to_string())?;
        request
            .headers_mut()
            .insert(USER_AGENT, HeaderValue::from_static(super::USER_AGENT));
        *request.version_mut() = http::Version::HTTP_2;
        let mut sender = self.sender.clone();
        sender.ready().await.map_err(|e| super::error_chain(&e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| super::error_chain(&e))?;
        Ok(reqwest::Response::from(response.map(reqwest::Body::wrap)))
    }
}
