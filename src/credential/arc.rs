//! Azure Arc-enabled servers (protocol reference §4.2): a local agent that answers the
//! first request with `401 WWW-Authenticate: Basic realm=<path of a .key file>`; the
//! file's content, sent back as `Authorization: Basic <content>`, proves that the
//! caller may read the agent's token directory.
//!
//! Before the file is read it must be a `.key` file directly in the agent's token
//! directory and at most 4096 bytes, so an endpoint cannot make kvrun read and send
//! an arbitrary file.

use std::path::{Path, PathBuf};

use reqwest::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use zeroize::Zeroizing;

use super::app_service::{parse_endpoint, set_query};
use super::{
    CredentialError, Env, ErrorKind, UserAssigned, describe_status, identity_retry_status,
    token_response, unix_now,
};
use crate::http::{self, Clients, MAX_BODY_BYTES};
use crate::retry::{self, Attempt, Deadline, Policy};
use crate::secret::AccessToken;

const SOURCE: &str = "Azure Arc managed identity";
const AGENT_BINARY: &str = "/opt/azcmagent/bin/himds";
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:40342/metadata/identity/oauth2/token";
/// The only directory the agent writes key files to on Linux.
pub const KEY_DIRECTORY: &str = "/var/opt/azcmagent/tokens";
const MAX_KEY_BYTES: u64 = 4096;

#[derive(Debug)]
pub struct Arc {
    endpoint: Url,
}

impl Arc {
    /// `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`, or the agent installed at its usual path.
    pub fn detect(
        env: &Env,
        user_assigned: Option<&UserAssigned>,
    ) -> Result<Option<Self>, CredentialError> {
        let endpoint = match (env.get("IDENTITY_ENDPOINT"), env.has("IMDS_ENDPOINT")) {
            (Some(endpoint), true) => endpoint,
            _ if Path::new(AGENT_BINARY).exists() => DEFAULT_ENDPOINT,
            _ => return Ok(None),
        };
        if let Some(ua) = user_assigned {
            return Err(CredentialError::new(
                SOURCE,
                ErrorKind::Misconfigured,
                format!("Azure Arc supports only the system-assigned identity, but a user-assigned one was asked for ({ua})"),
            )
            .with_hint("remove --client-id/--object-id/--resource-id and unset AZURE_CLIENT_ID"));
        }
        Ok(Some(Self {
            endpoint: parse_endpoint(endpoint, "IDENTITY_ENDPOINT", SOURCE)?,
        }))
    }

    pub fn description(&self) -> String {
        format!("{SOURCE} ({})", self.endpoint)
    }

    pub async fn get_token(
        &self,
        clients: &Clients,
        deadline: Deadline,
        audience: &str,
    ) -> Result<AccessToken, CredentialError> {
        let mut url = self.endpoint.clone();
        set_query(
            &mut url,
            &[("api-version", "2020-06-01"), ("resource", audience)],
        );
        let source = self.description();
        let fail = |kind, message: String| CredentialError::new(&source, kind, message);
        // A key file is made per challenge, so both steps are retried together.
        let result = retry::run(deadline, Policy::IDENTITY, |_| async {
            let first = match send(clients.identity.get(url.clone()), deadline).await {
                Ok(r) => r,
                Err(retry) => return retry,
            };
            if first.status() != StatusCode::UNAUTHORIZED {
                let status = first.status();
                let transient = identity_retry_status(status);
                let body = http::read_body(first, MAX_BODY_BYTES)
                    .await
                    .unwrap_or_default();
                let message = format!(
                    "expected a 401 challenge, got {}",
                    describe_status(status, &token_response::parse_error_body(&body))
                );
                return if transient {
                    Attempt::Retry {
                        error: (ErrorKind::GaveUp, message),
                        retry_after: None,
                        connect: false,
                    }
                } else {
                    Attempt::Fatal((ErrorKind::Rejected, message))
                };
            }
            let realm = first
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(basic_realm);
            let Some(realm) = realm else {
                return Attempt::Fatal((
                    ErrorKind::Rejected,
                    "the 401 has no 'WWW-Authenticate: Basic realm=<key file>' challenge"
                        .to_owned(),
                ));
            };
            let key = match read_key_file(&realm, Path::new(KEY_DIRECTORY)) {
                Ok(key) => key,
                Err(why) => return Attempt::Fatal((ErrorKind::Rejected, why)),
            };
            let mut authorization = match HeaderValue::from_bytes(&basic_header(&key)) {
                Ok(v) => v,
                Err(_) => {
                    return Attempt::Fatal((
                        ErrorKind::Rejected,
                        "the key file holds characters not allowed in a header".to_owned(),
                    ));
                }
            };
            authorization.set_sensitive(true);
            let second = match send(
                clients
                    .identity
                    .get(url.clone())
                    .header(AUTHORIZATION, authorization),
                deadline,
            )
            .await
            {
                Ok(r) => r,
                Err(retry) => return retry,
            };
            let status = second.status();
            let retry_after = retry::retry_after(second.headers());
            let body = match http::read_body(second, MAX_BODY_BYTES).await {
                Ok(b) => b,
                Err(e) => {
                    return Attempt::Retry {
                        error: (ErrorKind::GaveUp, e.to_string()),
                        retry_after: None,
                        connect: false,
                    };
                }
            };
            if status.is_success() {
                return match token_response::parse(&body, unix_now()) {
                    Ok(token) => Attempt::Done(token),
                    Err(e) => Attempt::Fatal((
                        ErrorKind::Rejected,
                        format!("unusable token response: {e}"),
                    )),
                };
            }
            let message = describe_status(status, &token_response::parse_error_body(&body));
            if identity_retry_status(status) {
                Attempt::Retry {
                    error: (ErrorKind::GaveUp, message),
                    retry_after,
                    connect: false,
                }
            } else {
                Attempt::Fatal((ErrorKind::Rejected, message))
            }
        })
        .await;
        result.map_err(|e| fail(e.error.0, e.error.1))
    }
}

/// Sends one request of the handshake; a transport failure becomes the retry
/// loop's answer.
async fn send(
    request: reqwest::RequestBuilder,
    deadline: Deadline,
) -> Result<reqwest::Response, Attempt<AccessToken, (ErrorKind, String)>> {
    request
        .header("Metadata", "true")
        .timeout(deadline.remaining())
        .send()
        .await
        .map_err(|e| Attempt::Retry {
            error: (ErrorKind::GaveUp, http::error_chain(&e)),
            retry_after: None,
            connect: e.is_connect(),
        })
}

/// `Basic <key>` built in zeroizing memory of the right size.
fn basic_header(key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut value = Zeroizing::new(Vec::with_capacity(6 + key.len()));
    value.extend_from_slice(b"Basic ");
    value.extend_from_slice(key);
    value
}

/// The path in `Basic realm=<path>` (the agent sends it unquoted; tolerate quotes).
fn basic_realm(header: &str) -> Option<PathBuf> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let (name, value) = rest.trim().split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("realm") {
        return None;
    }
    let value = value.trim().trim_matches('"');
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// Reads the challenge's key file after checking where it is, its name and its size.
fn read_key_file(path: &Path, directory: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let shown = path.display();
    let canonical = path
        .canonicalize()
        .map_err(|e| format!("cannot open the challenge's key file {shown}: {e}"))?;
    let expected = directory.canonicalize().map_err(|e| {
        format!(
            "the Arc agent's token directory {} is not there: {e}",
            directory.display()
        )
    })?;
    if canonical.parent() != Some(expected.as_path()) {
        return Err(format!(
            "the challenge's key file {shown} is not in {}: refused",
            directory.display()
        ));
    }
    if canonical.extension().and_then(|e| e.to_str()) != Some("key") {
        return Err(format!(
            "the challenge's key file {shown} is not a .key file: refused"
        ));
    }
    let size = std::fs::metadata(&canonical)
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if size > MAX_KEY_BYTES {
        return Err(format!(
            "the challenge's key file {shown} is {size} bytes, more than {MAX_KEY_BYTES}: refused"
        ));
    }
    std::fs::read(&canonical).map(Zeroizing::new).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (run as root or a member of the himds group)"
        } else {
            ""
        };
        format!("cannot read {shown}: {e}{hint}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms() {
        for (header, expected) in [
            (
                "Basic realm=/var/opt/azcmagent/tokens/a.key",
                Some("/var/opt/azcmagent/tokens/a.key"),
            ),
            (
                "basic realm=\"/var/opt/azcmagent/tokens/a.key\"",
                Some("/var/opt/azcmagent/tokens/a.key"),
            ),
            ("Bearer realm=/x.key", None),
            ("Basic", None),
            ("Basic realm=", None),
        ] {
            assert_eq!(basic_realm(header), expected.map(PathBuf::from), "{header}");
        }
    }

    #[test]
    fn key_file_checks() {
        let dir = std::env::temp_dir().join(format!("kvrun-arc-test-{}", std::process::id()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        std::fs::write(tokens.join("ok.key"), "k3y").unwrap();
        std::fs::write(tokens.join("big.key"), vec![b'x'; 5000]).unwrap();
        std::fs::write(tokens.join("wrong.txt"), "x").unwrap();
        std::fs::write(dir.join("outside.key"), "x").unwrap();
        assert_eq!(
            read_key_file(&tokens.join("ok.key"), &tokens)
                .unwrap()
                .as_slice(),
            b"k3y"
        );
        for (file, needle) in [
            (tokens.join("big.key"), "more than 4096"),
            (tokens.join("wrong.txt"), "not a .key file"),
            (dir.join("outside.key"), "is not in"),
            (tokens.join("../tokens/../outside.key"), "is not in"),
            (tokens.join("missing.key"), "cannot open"),
        ] {
            let err = read_key_file(&file, &tokens).unwrap_err();
            assert!(err.contains(needle), "{}: {err}", file.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
