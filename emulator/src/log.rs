//! The request log: every request any endpoint answered, kept in memory for
//! [`crate::Emulator::requests`] and optionally appended as JSON lines to the
//! `--log-requests` file, so that tests can prove which host received which
//! token.
//!
//! Tokens never enter the log: the Authorization header is reduced to its
//! scheme, a fingerprint (first 12 hex characters of SHA-256), and the
//! audience and identity the token claims; credential-bearing query values are
//! replaced.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use ring::digest;
use serde::Serialize;
use serde_json::Value;

/// Records kept in memory; older ones are dropped so that a long benchmark
/// run does not grow without bound. The file log keeps everything.
const MEMORY_CAP: usize = 100_000;

/// Query parameters whose values are credentials and are never logged.
const SECRET_QUERY_KEYS: [&str; 3] = ["client_secret", "client_assertion", "access_token"];

/// One request as the emulator saw and answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// `imds`, `app-service`, `entra`, `vault:<name>`, `arc`, `cloud-shell`,
    /// `service-fabric` or `azure-ml`.
    pub endpoint: String,
    pub method: String,
    /// The Host header (HTTP/1.1) or the `:authority` (HTTP/2).
    pub host: String,
    pub path: String,
    /// The raw query string, with credential values replaced by `REDACTED`.
    pub query: String,
    /// Status sent; 0 when the connection was dropped without a response.
    pub status: u16,
    /// `None` when the request had no Authorization header.
    pub auth: Option<AuthRecord>,
    /// The connection that carried the request, named by the event number of its
    /// accept. Event numbers count accepts and answers together, across every
    /// endpoint, so they also order them: `connection < other.answered` means this
    /// request's connection was open before the other request was answered.
    pub connection: u64,
    /// The event number of the answer (or of the drop).
    pub answered: u64,
}

/// The Authorization header of a request, minus the credential itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthRecord {
    /// `Bearer`, `Basic`, ... as sent.
    pub scheme: String,
    /// [`fingerprint`] of the credential.
    pub fingerprint: String,
    /// `aud` claim when the credential is a JWT.
    pub audience: Option<String>,
    /// Name of the configured identity the token's `oid` belongs to.
    pub identity: Option<String>,
}

/// First 12 hex characters of the SHA-256 of `token`: enough to tell tokens
/// apart in a log, useless for replaying one.
pub fn fingerprint(token: &str) -> String {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut h = crate::ids::hex(d.as_ref());
    h.truncate(12);
    h
}

/// Reduces an Authorization header value to an [`AuthRecord`]. `identity_of`
/// maps a token's `oid` to a configured identity name.
pub(crate) fn auth_record(value: &str, identity_of: impl Fn(&str) -> Option<String>) -> AuthRecord {
    let value = value.trim();
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    let credential = credential.trim();
    let mut audience = None;
    let mut identity = None;
    if let Some((_, claims)) = crate::token::decode(credential) {
        audience = match claims.get("aud") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        identity = claims
            .get("oid")
            .and_then(Value::as_str)
            .and_then(identity_of);
    }
    AuthRecord {
        scheme: scheme.to_owned(),
        fingerprint: fingerprint(credential),
        audience,
        identity,
    }
}

/// The query string with the values of credential parameters replaced.
pub(crate) fn redact_query(raw: &str) -> String {
    if raw.is_empty() {
        return String::new();
    }
    raw.split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            let decoded: String = form_urlencoded::parse(key.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            if SECRET_QUERY_KEYS
                .iter()
                .any(|s| decoded.eq_ignore_ascii_case(s))
            {
                format!("{key}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    record: &'a RequestRecord,
}

/// The in-memory log and the optional JSON-lines file.
#[derive(Debug)]
pub(crate) struct RequestLog {
    memory: Mutex<VecDeque<RequestRecord>>,
    file: Option<Mutex<BufWriter<File>>>,
}

impl RequestLog {
    pub(crate) fn new(path: Option<&Path>) -> std::io::Result<RequestLog> {
        let file = match path {
            Some(p) => Some(Mutex::new(BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ))),
            None => None,
        };
        Ok(RequestLog {
            memory: Mutex::new(VecDeque::new()),
            file,
        })
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        if let Some(file) = &self.file {
            let line = Line {
                ts: crate::clock::rfc3339_millis(SystemTime::now()),
                record: &record,
            };
            if let Ok(mut f) = file.lock() {
                // A full disk must not take the emulator down; the in-memory
                // log still has the record.
                let _ = serde_json::to_writer(&mut *f, &line);
                let _ = f.write_all(b"\n");
                // One line per request is visible to readers at once.
                let _ = f.flush();
            }
        }
        if let Ok(mut m) = self.memory.lock() {
            if m.len() == MEMORY_CAP {
                m.pop_front();
            }
            m.push_back(record);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.memory
            .lock()
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_12_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
    }

    #[test]
    fn redaction_table() {
        let cases = [
            ("", ""),
            ("api-version=7.4", "api-version=7.4"),
            ("client_secret=abc&x=1", "client_secret=REDACTED&x=1"),
            (
                "a=1&client%5Fassertion=eyJ",
                "a=1&client%5Fassertion=REDACTED",
            ),
            ("ACCESS_TOKEN=t", "ACCESS_TOKEN=REDACTED"),
            ("access_token", "access_token=REDACTED"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_query(input), want, "{input}");
        }
    }

    #[test]
    fn auth_records_never_hold_the_token() {
        let r = auth_record("Bearer not-a-jwt", |_| None);
        assert_eq!(r.scheme, "Bearer");
        assert_eq!(r.fingerprint, fingerprint("not-a-jwt"));
        assert_eq!(r.audience, None);
        let json = serde_json::to_string(&r).expect("serialises");
        assert!(!json.contains("not-a-jwt"));
    }
}
