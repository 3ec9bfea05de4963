//! Key Vault's secrets REST API: get one secret, and discover a vault's audience from
//! its 401 challenge when the vault is not in a known cloud.
//!
//! `GET https://<vault>/secrets/<name>[/<version>]?api-version=2025-07-01` with the
//! bearer token. The body (at most 1 MiB, read into zeroizing memory) is a
//! SecretBundle; errors are `{"error":{"code","message","innererror":{"code"}}}`.

pub mod challenge;

use reqwest::header::{AUTHORIZATION, HeaderMap, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::cloud;
use crate::config::SecretId;
use crate::credential::{CredentialError, service_retry_status};
use crate::http::{self, MAX_BODY_BYTES, Preconnected, TransportKind};
use crate::reference::VaultUrl;
use crate::retry::{self, Attempt, Deadline, Policy};
use crate::secret::{AccessToken, SecretValue};

pub const API_VERSION: &str = "2025-07-01";

/// A fetched secret.
#[derive(Debug)]
pub struct Fetched {
    pub value: SecretValue,
    /// The version served (from the bundle's `id`).
    pub version: Option<String>,
}

/// Why a secret could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {status}{}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default(), inner.as_deref().map(|c| format!("/{c}")).unwrap_or_default())]
    Status {
        status: u16,
        code: Option<String>,
        inner: Option<String>,
        message: Option<String>,
        request_id: Option<String>,
    },
    #[error("the vault answered HTTP {status} redirecting to {}; kvrun does not follow redirects with a token", location.as_deref().unwrap_or("(no location)"))]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    #[error("unusable response: {0}")]
    BadBody(String),
    #[error("the value contains a NUL byte, which an environment variable cannot hold")]
    ValueHasNul,
    #[error("{detail} (gave up after {attempts} attempt{}: {})", if *attempts == 1 { "" } else { "s" }, if *deadline_hit { "the deadline was reached" } else { "out of attempts" })]
    GaveUp {
        detail: String,
        attempts: u32,
        deadline_hit: bool,
    },
    #[error("{0}")]
    Challenge(String),
    #[error("TLS refused, nothing was sent: {0}")]
    Tls(String),
    #[error("no access token: {0}")]
    Token(CredentialError),
    #[error("not fetched: the deadline was reached first")]
    DeadlineExceeded,
}

impl FetchError {
    /// The failures an `optional` entry tolerates: not found, or disabled.
    pub fn is_absent(&self) -> bool {
        match self {
            FetchError::Status { status: 404, .. } => true,
            FetchError::Status {
                status: 403, inner, ..
            } => inner.as_deref() == Some("SecretDisabled"),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct SecretBundle {
    value: Option<SecretValue>,
    id: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorEnvelope {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
    innererror: Option<InnerError>,
}

#[derive(Deserialize, Default)]
struct InnerError {
    code: Option<String>,
}

fn secret_url(id: &SecretId) -> String {
    match &id.version {
        Some(version) => format!(
            "{}/secrets/{}/{version}?api-version={API_VERSION}",
            id.vault.origin(),
            id.name
        ),
        None => format!(
            "{}/secrets/{}?api-version={API_VERSION}",
            id.vault.origin(),
            id.name
        ),
    }
}

/// What the vault's challenge said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub audience: String,
    pub tenant: Option<String>,
}

/// The audience of a vault: from its cloud when known, else from the 401 challenge to
/// an unauthenticated request for `probe` — accepted only when it names the vault's
/// own host or a parent domain of it.
pub async fn audience_for(
    client: &Client,
    via: Option<&Preconnected>,
    vault: &VaultUrl,
    probe: &SecretId,
    deadline: Deadline,
) -> Result<Discovered, FetchError> {
    if let Some(audience) = cloud::known_audience(vault.host()) {
        return Ok(Discovered {
            audience: audience.to_owned(),
            tenant: None,
        });
    }
    let url = secret_url(probe);
    // Whatever a vault says without a token (404 included) is not the word of a vault
    // we have authenticated to: never "absent", only "no challenge".
    let (headers, _) = send(deadline, Unauthorized::IsTheAnswer, via, || client.get(&url))
        .await
        .map_err(|e| match e {
            FetchError::Status { status, .. } => FetchError::Challenge(format!(
                "{vault} is not a known Key Vault host, and it answered a request without a token with HTTP {status} instead of a 401 challenge"
            )),
            other => other,
        })?;
    let Some(header) = headers.get(WWW_AUTHENTICATE) else {
        return Err(FetchError::Challenge(format!(
            "{vault} is not a known Key Vault host, and it answered a request without a token without a challenge naming the token audience"
        )));
    };
    let header = header.to_str().unwrap_or("");
    let challenge = challenge::parse_bearer(header);
    let audience = challenge
        .as_ref()
        .and_then(challenge::Challenge::audience)
        .ok_or_else(|| {
            FetchError::Challenge(format!(
                "{vault} answered 401 without a Bearer challenge naming a resource"
            ))
        })?;
    // Only a bare https origin may become an audience, and only its canonical form
    // is passed on: the raw string (with a path, a query, or a second scope after a
    // space) would otherwise reach the token request verbatim.
    let canonical = canonical_origin(&audience);
    match canonical {
        Some((host, origin)) if cloud::challenge_host_allowed(vault.host(), &host) => {
            crate::debug!("vault {vault}: challenge names audience {origin}");
            Ok(Discovered {
                audience: origin,
                tenant: challenge.and_then(|c| c.tenant()),
            })
        }
        _ => Err(FetchError::Challenge(format!(
            "{vault} asked for a token for '{audience}', which is not an https origin of its own host or a parent domain of it: refused, no token was sent"
        ))),
    }
}

/// `https://host[:port]` and the bare host, for an https URL with nothing else
/// (no user, query, fragment, or path beyond `/`); None for anything else.
fn canonical_origin(resource: &str) -> Option<(String, String)> {
    let url = reqwest::Url::parse(resource.trim()).ok()?;
    let plain = url.scheme() == "https"
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && matches!(url.path(), "" | "/");
    if !plain {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let origin = match url.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    };
    Some((host.trim_matches(['[', ']']).to_owned(), origin))
}

/// Fetches one secret with the token.
pub async fn get_secret(
    client: &Client,
    via: Option<&Preconnected>,
    id: &SecretId,
    token: &AccessToken,
    deadline: Deadline,
) -> Result<Fetched, FetchError> {
    let url = secret_url(id);
    let authorization = token
        .bearer_header()
        .map_err(|e| FetchError::BadBody(e.to_string()))?;
    let (_, body) = send(deadline, Unauthorized::IsAnError, via, || {
        client
            .get(&url)
            .header(AUTHORIZATION, authorization.clone())
    })
    .await?;
    parse_bundle(&body)
}

/// Reads a SecretBundle: the value (no NUL allowed) and the version it came from.
pub fn parse_bundle(body: &[u8]) -> Result<Fetched, FetchError> {
    let bundle: SecretBundle = serde_json::from_slice(body)
        .map_err(|e| FetchError::BadBody(format!("not a secret bundle: {e}")))?;
    let value = bundle
        .value
        .ok_or_else(|| FetchError::BadBody("the secret bundle has no value".to_owned()))?;
    if value.expose_secret().contains('\0') {
        return Err(FetchError::ValueHasNul);
    }
    let version = bundle
        .id
        .as_deref()
        .and_then(|id| id.trim_end_matches('/').rsplit('/').next())
        .map(str::to_owned);
    Ok(Fetched { value, version })
}

/// Reads Key Vault's error envelope (`{"error":{"code","message","innererror"}}`);
/// whatever the body holds, the status is kept.
pub fn parse_error(status: u16, request_id: Option<String>, body: &[u8]) -> FetchError {
    let detail = serde_json::from_slice::<ErrorEnvelope>(body)
        .unwrap_or_default()
        .error
        .unwrap_or_default();
    FetchError::Status {
        status,
        code: detail.code,
        inner: detail.innererror.and_then(|i| i.code),
        message: detail
            .message
            .map(|m| m.lines().next().unwrap_or("").to_owned()),
        request_id,
    }
}

/// Whether a 401 ends the exchange as an answer (the unauthenticated challenge
/// probe) or as a refusal (a request that carried a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unauthorized {
    IsTheAnswer,
    IsAnError,
}

/// Sends until a final answer: success, a permanent error, or (for the probe) the 401.
/// Transient statuses, resets (also in the middle of a body) and timeouts are retried
/// within the deadline. Returns the final response's headers and body.
async fn send(
    deadline: Deadline,
    unauthorized: Unauthorized,
    via: Option<&Preconnected>,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(HeaderMap, Zeroizing<Vec<u8>>), FetchError> {
    let result = retry::run(deadline, Policy::SERVICE, |_| async {
        let exchange = async {
            let (client, built) = request().timeout(deadline.remaining()).build_split();
            let built = match built {
                Ok(built) => built,
                Err(e) => {
                    return Attempt::Fatal(Failure::Final(FetchError::BadBody(format!(
                        "cannot build the request: {}",
                        http::error_chain(&e)
                    ))));
                }
            };
            let url = built.url().clone();
            // The pre-opened connection while it lasts; the pooled client otherwise
            // (and for every failure of its own, so errors are classified one way).
            let response = match via.filter(|c| c.is_usable()) {
                Some(connection) => match connection.execute(built).await {
                    Ok(response) => response,
                    Err(detail) => {
                        crate::debug!("pre-opened connection failed: {detail}");
                        return Attempt::Retry {
                            error: Failure::Transient(detail),
                            retry_after: None,
                            connect: false,
                        };
                    }
                },
                None => match client.execute(built).await {
                    Ok(response) => response,
                    Err(e) => {
                        let kind = http::classify(&e);
                        if kind == TransportKind::Tls {
                            return Attempt::Fatal(Failure::Final(FetchError::Tls(
                                http::error_chain(&e),
                            )));
                        }
                        let connect = kind == TransportKind::Connect;
                        return Attempt::Retry {
                            error: Failure::Transient(http::error_chain(&e)),
                            retry_after: None,
                            connect,
                        };
                    }
                },
            };
            crate::trace!(
                "{} {} -> {} over {:?}",
                url.host_str().unwrap_or(""),
                url.path(),
                response.status().as_u16(),
                response.version()
            );
            answer(response, unauthorized).await
        };
        match tokio::time::timeout(deadline.remaining(), exchange).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Retry {
                error: Failure::Transient("no complete answer before the deadline".to_owned()),
                retry_after: None,
                connect: false,
            },
        }
    })
    .await;
    result.map_err(|exhausted| match exhausted.error {
        Failure::Final(error) => error,
        Failure::Transient(detail) => FetchError::GaveUp {
            detail,
            attempts: exhausted.attempts,
            deadline_hit: exhausted.deadline_hit,
        },
    })
}

/// How one attempt ends.
enum Failure {
    Final(FetchError),
    Transient(String),
}

/// Turns one response into the attempt's outcome: the answer (with its body), a
/// permanent error, or a transient one to retry (with the server's Retry-After).
async fn answer(
    response: reqwest::Response,
    unauthorized: Unauthorized,
) -> Attempt<(HeaderMap, Zeroizing<Vec<u8>>), Failure> {
    let status = response.status();
    if status.is_success()
        || (status == StatusCode::UNAUTHORIZED && unauthorized == Unauthorized::IsTheAnswer)
    {
        let headers = response.headers().clone();
        return match http::read_body(response, MAX_BODY_BYTES).await {
            Ok(body) => Attempt::Done((headers, body)),
            Err(e @ http::BodyError::TooLarge { .. }) => {
                Attempt::Fatal(Failure::Final(FetchError::BadBody(e.to_string())))
            }
            Err(e) => Attempt::Retry {
                error: Failure::Transient(e.to_string()),
                retry_after: None,
                connect: false,
            },
        };
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        return Attempt::Fatal(Failure::Final(FetchError::Redirect {
            status: status.as_u16(),
            location,
        }));
    }
    let retry_after = retry::retry_after(response.headers());
    let request_id = response
        .headers()
        .get("x-ms-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match http::read_body(response, 64 * 1024).await {
        Ok(body) => body,
        Err(e) => {
            return Attempt::Retry {
                error: Failure::Transient(e.to_string()),
                retry_after: None,
                connect: false,
            };
        }
    };
    let error = parse_error(status.as_u16(), request_id, &body);
    if service_retry_status(status) {
        Attempt::Retry {
            error: Failure::Transient(error.to_string()),
            retry_after,
            connect: false,
        }
    } else {
        Attempt::Fatal(Failure::Final(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;

    #[test]
    fn urls() {
        let vault = VaultUrl::parse("https://127.0.0.1:8443", Cloud::Public).unwrap();
        let latest = SecretId {
            vault: vault.clone(),
            name: "db".into(),
            version: None,
        };
        assert_eq!(
            secret_url(&latest),
            "https://127.0.0.1:8443/secrets/db?api-version=2025-07-01"
        );
        let pinned = SecretId {
            vault,
            name: "db".into(),
            version: Some("0123456789abcdef0123456789abcdef".into()),
        };
        assert_eq!(
            secret_url(&pinned),
            "https://127.0.0.1:8443/secrets/db/0123456789abcdef0123456789abcdef?api-version=2025-07-01"
        );
    }

    #[test]
    fn bundles_and_error_envelopes() {
        // Recording kv-get-secret-200-api2025-07-01-python.json (trimmed).
        let ok = parse_bundle(br#"{"value":"secret-value","id":"https://vaultname.vault.azure.net/secrets/n/54a5883d2c8f4c379c19bd85e046e213","attributes":{"enabled":true}}"#).unwrap();
        assert_eq!(
            (ok.value.expose_secret(), ok.version.as_deref()),
            ("secret-value", Some("54a5883d2c8f4c379c19bd85e046e213"))
        );
        for (body, expected) in [
            (&br#"{"id":"x"}"#[..], "no value"),
            (b"{\"value\":\"a\\u0000b\"}", "NUL"),
            (b"{\"value\":", "not a secret bundle"),
            (b"<html>", "not a secret bundle"),
        ] {
            let err = parse_bundle(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        // Recording kv-403-secret-disabled-get-api7.6-preview.1-net-2024.json.
        let disabled = parse_error(403, None, br#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#);
        assert!(disabled.is_absent());
        assert_eq!(disabled.to_string(), "HTTP 403 Forbidden/SecretDisabled");
        assert_eq!(parse_error(500, None, b"oops").to_string(), "HTTP 500");
    }

    #[test]
    fn challenge_resources_are_reduced_to_a_canonical_origin() {
        for (resource, expected) in [
            (
                "https://vault.azure.net",
                Some(("vault.azure.net", "https://vault.azure.net")),
            ),
            (
                "https://Vault.Azure.NET/",
                Some(("vault.azure.net", "https://vault.azure.net")),
            ),
            (
                "https://127.0.0.1:8443",
                Some(("127.0.0.1", "https://127.0.0.1:8443")),
            ),
            ("https://[::1]:8443/", Some(("::1", "https://[::1]:8443"))),
            (
                "https://v.emu.test/.default https://graph.microsoft.com/.default",
                None,
            ),
            ("https://vault.azure.net/path", None),
            ("https://vault.azure.net?x=1", None),
            ("https://user@vault.azure.net", None),
            ("http://vault.azure.net", None),
            ("api://vault.azure.net", None),
            ("vault.azure.net", None),
        ] {
            let got = canonical_origin(resource);
            assert_eq!(
                got.as_ref().map(|(h, o)| (h.as_str(), o.as_str())),
                expected,
                "{resource}"
            );
        }
    }

    #[test]
    fn absent_means_not_found_or_disabled() {
        let status = |status, inner: Option<&str>| FetchError::Status {
            status,
            code: None,
            inner: inner.map(Into::into),
            message: None,
            request_id: None,
        };
        assert!(status(404, None).is_absent());
        assert!(status(403, Some("SecretDisabled")).is_absent());
        assert!(!status(403, Some("ForbiddenByRbac")).is_absent());
        assert!(!status(401, None).is_absent());
    }
}
