//! Scripted faults and throttling: the `[[fault]]` entries (the first K
//! matching requests, or those in the first N ms, get a status, a reset, a
//! broken or slow body, a redirect, or a hostile challenge) and the per-endpoint
//! token buckets that answer 429 with `Retry-After`.
//!
//! Error bodies are shaped like each endpoint's own errors, so that a client's
//! error parsing is exercised, not just its status handling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::Response;
use serde_json::{Value, json};

use crate::config::{FaultAction, FaultConfig, FaultWindow, RetryAfter, Throttle};
use crate::http::{self, Body, ChannelBody, Outcome, Req};
use crate::server::{EndpointId, Shared};

/// The configured faults, each with its count of matching requests.
#[derive(Debug)]
pub(crate) struct Faults {
    list: Vec<(FaultConfig, AtomicU64)>,
}

impl Faults {
    pub(crate) fn new(faults: &[FaultConfig]) -> Faults {
        Faults {
            list: faults
                .iter()
                .map(|f| (f.clone(), AtomicU64::new(0)))
                .collect(),
        }
    }

    /// The first fault that matches the request and is still active.
    pub(crate) fn find(&self, label: &str, req: &Req, elapsed: Duration) -> Option<&FaultConfig> {
        for (f, count) in &self.list {
            if f.endpoint != label {
                continue;
            }
            if f.path.as_deref().is_some_and(|p| !req.path.starts_with(p)) {
                continue;
            }
            if f.method
                .as_deref()
                .is_some_and(|m| m != req.method.as_str())
            {
                continue;
            }
            if f.authorized
                .is_some_and(|a| a != req.headers.contains_key(hyper::header::AUTHORIZATION))
            {
                continue;
            }
            let active = match f.window {
                FaultWindow::Always => true,
                FaultWindow::First(k) => count.fetch_add(1, Ordering::Relaxed) < k,
                FaultWindow::ForMs(ms) => elapsed < Duration::from_millis(ms),
            };
            if active {
                return Some(f);
            }
        }
        None
    }
}

/// A token bucket: `requests` tokens, refilled continuously at
/// `requests / per_seconds` per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(t: Throttle) -> TokenBucket {
        let capacity = f64::from(t.requests);
        TokenBucket {
            capacity,
            tokens: capacity,
            per_sec: capacity / t.per_seconds,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub(crate) fn take(&mut self, now: Instant) -> Option<Duration> {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }
}

fn reason(status: u16) -> &'static str {
    http::status_code(status)
        .canonical_reason()
        .unwrap_or("Error")
}

/// An error body in the shape of the endpoint's own errors.
pub(crate) fn error_body(ep: EndpointId, status: u16, message: &str) -> Value {
    let slug = reason(status).to_ascii_lowercase().replace(' ', "_");
    let code: String = reason(status).split_whitespace().collect();
    match ep {
        EndpointId::Imds | EndpointId::Arc | EndpointId::AzureMl => {
            json!({"error": slug, "error_description": message})
        }
        // App Service's error shape is not documented; MSAL reads these two
        // fields (statusCode, message). [UNCONFIRMED]
        EndpointId::AppService => json!({"statusCode": status, "message": message}),
        EndpointId::ServiceFabric | EndpointId::CloudShell => json!({"error": {
            "correlationId": crate::ids::new_guid(), "code": code, "message": message}}),
        EndpointId::Entra => crate::entra::error_json(
            if status >= 500 {
                "temporarily_unavailable"
            } else {
                "invalid_request"
            },
            50000,
            message,
            None,
            "",
        ),
        EndpointId::Vault(_) => {
            let code = match status {
                429 => "Throttled".to_owned(),
                _ => code,
            };
            json!({"error": {"code": code, "message": message}})
        }
    }
}

fn set_retry_after(r: &mut Response<Body>, retry: RetryAfter) {
    match retry {
        RetryAfter::None => {}
        RetryAfter::Seconds(s) => http::set_header(r, "retry-after", &s.to_string()),
        RetryAfter::HttpDate(s) => http::set_header(
            r,
            "retry-after",
            &httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(s)),
        ),
        RetryAfter::Millis(ms) => http::set_header(r, "x-ms-retry-after-ms", &ms.to_string()),
    }
}

/// 429 from a token bucket, with `Retry-After` in whole seconds (at least 1).
pub(crate) fn throttled(ep: EndpointId, wait: Duration) -> Response<Body> {
    // Key Vault's 429 body is not in any recording; this follows its error
    // envelope with the reason the throttling guidance names. [UNCONFIRMED]
    let message = match ep {
        EndpointId::Vault(_) => {
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached"
        }
        _ => "Too many requests",
    };
    let mut r = http::json(429, &error_body(ep, 429, message));
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    set_retry_after(&mut r, RetryAfter::Seconds(secs.max(1)));
    r
}

/// Streams `chunks` with `delay` between them, then ends (or fails, when
/// `fail_at_end`).
fn stream(chunks: Vec<Bytes>, delay: Duration, exact_len: Option<u64>, fail_at_end: bool) -> Body {
    let (tx, body) = ChannelBody::channel(4, exact_len);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(c)).await.is_err() {
                return;
            }
        }
        if fail_at_end {
            let _ = tx
                .send(Err("stream reset by an injected fault".into()))
                .await;
        }
    });
    body
}

fn with_body(parts: hyper::http::response::Parts, body: Body) -> Response<Body> {
    let mut r = Response::from_parts(parts, body);
    r.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    r
}

/// Answers a request the way the fault says.
pub(crate) async fn apply(shared: &Shared, ep: EndpointId, f: &FaultConfig, req: &Req) -> Outcome {
    let mut resp = match f.action {
        FaultAction::Status => {
            let message = format!("{} (injected fault)", reason(f.status));
            http::json(f.status, &error_body(ep, f.status, &message))
        }
        FaultAction::Reset => return Outcome::Abort,
        FaultAction::Hang => {
            // Never answers; the connection task ends when the client gives
            // up or the emulator shuts down.
            std::future::pending::<()>().await;
            return Outcome::Abort;
        }
        FaultAction::ResetMidBody => {
            // Promise 4 KiB, send 1 KiB, then fail: the client sees a body
            // cut short by a reset.
            let mut r = http::bytes_response(f.status, http::JSON_UTF8, Bytes::new());
            let body = stream(
                vec![Bytes::from(format!("{{\"value\":\"{}", "x".repeat(1024)))],
                Duration::ZERO,
                Some(4096),
                true,
            );
            *r.body_mut() = body;
            r
        }
        FaultAction::MalformedJson => http::bytes_response(
            f.status,
            http::JSON_UTF8,
            "{\"value\": \"unterminated, \"id\": ,,}<html>not json</html>",
        ),
        FaultAction::TruncatedJson => {
            let (parts, body) = shared.dispatch(ep, req).into_parts();
            let bytes = http::body_bytes(body).await;
            let cut = bytes.slice(..bytes.len() / 2);
            with_body(parts, http::full_body(cut))
        }
        FaultAction::SlowBody => {
            let (parts, body) = shared.dispatch(ep, req).into_parts();
            let bytes = http::body_bytes(body).await;
            let chunks: Vec<Bytes> = bytes.chunks(16).map(Bytes::copy_from_slice).collect();
            let len = bytes.len() as u64;
            with_body(
                parts,
                stream(chunks, Duration::from_millis(f.delay_ms), Some(len), false),
            )
        }
        FaultAction::OversizedBody => {
            // Valid JSON, just far too big: `{"value":"aaaa…"}`.
            let total = f.size_bytes.max(16);
            let head = b"{\"value\":\"";
            let tail = b"\"}";
            let fill = total - (head.len() + tail.len()) as u64;
            let mut chunks = vec![Bytes::from_static(head)];
            let block = Bytes::from(vec![b'a'; 64 * 1024]);
            let mut left = fill;
            while left > 0 {
                let n = left.min(block.len() as u64);
                // n <= 64 KiB, so it fits in usize on every platform.
                chunks.push(block.slice(..usize::try_from(n).unwrap_or(block.len())));
                left -= n;
            }
            chunks.push(Bytes::from_static(tail));
            let mut r = http::bytes_response(f.status, http::JSON_UTF8, Bytes::new());
            let announced = f.content_length.then_some(total);
            *r.body_mut() = stream(chunks, Duration::ZERO, announced, false);
            r
        }
        FaultAction::Redirect => {
            let mut r = http::bytes_response(f.status, "text/plain; charset=utf-8", Bytes::new());
            http::set_header(&mut r, "location", f.location.as_deref().unwrap_or("/"));
            r
        }
        FaultAction::ChallengeResource => {
            let resource = f.resource.as_deref().unwrap_or("https://evil.example");
            crate::keyvault::challenge(
                shared,
                resource,
                f.status,
                "AKV10000: Request is missing a Bearer, PoP, or MTLS_POP token.",
            )
        }
    };
    set_retry_after(&mut resp, f.retry_after);
    Outcome::Respond(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills() {
        let mut b = TokenBucket::new(Throttle {
            requests: 2,
            per_seconds: 1.0,
        });
        let t0 = b.last;
        assert_eq!(b.take(t0), None);
        assert_eq!(b.take(t0), None);
        let wait = b.take(t0).expect("empty");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(b.take(t0 + Duration::from_millis(600)), None);
    }

    #[test]
    fn bodies_follow_each_endpoint() {
        assert_eq!(error_body(EndpointId::Imds, 410, "m")["error"], "gone");
        assert_eq!(
            error_body(EndpointId::AppService, 500, "m")["statusCode"],
            500
        );
        assert_eq!(
            error_body(EndpointId::Vault(0), 429, "m")["error"]["code"],
            "Throttled"
        );
        assert_eq!(
            error_body(EndpointId::Vault(0), 503, "m")["error"]["code"],
            "ServiceUnavailable"
        );
        assert_eq!(
            error_body(EndpointId::Entra, 503, "m")["error_codes"][0],
            50000
        );
    }
}
