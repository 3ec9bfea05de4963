//! HTTP plumbing shared by the endpoints: the buffered request each handler
//! sees, response builders, and a channel-fed body for the streaming faults.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame};
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of every response.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

pub(crate) const JSON_UTF8: &str = "application/json; charset=utf-8";

/// A request with its body read, as the endpoint handlers see it.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// First query parameter called `name` (names are case-sensitive, as the
    /// Azure endpoints treat them).
    pub(crate) fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as `application/x-www-form-urlencoded` pairs.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

pub(crate) fn parse_query(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

/// What a handler decided.
pub(crate) enum Outcome {
    Respond(Response<Body>),
    /// Drop the connection (HTTP/1.1) or reset the stream (HTTP/2) without a response.
    Abort,
}

pub(crate) fn full_body(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn bytes_response(
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full_body(body));
    *r.status_mut() = status_code(status);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A JSON response with `Content-Type: application/json; charset=utf-8`.
pub(crate) fn json(status: u16, value: &Value) -> Response<Body> {
    bytes_response(status, JSON_UTF8, value.to_string())
}

/// Sets a header; values the emulator builds are always valid header text,
/// and one that is not is dropped rather than failing the response.
pub(crate) fn set_header(r: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// A response body fed by a channel: the streaming faults (slow, oversized,
/// reset mid-body) push chunks, or an error to abort the stream.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    exact_len: Option<u64>,
}

impl ChannelBody {
    pub(crate) fn channel(
        buffer: usize,
        exact_len: Option<u64>,
    ) -> (mpsc::Sender<Result<Bytes, BoxError>>, Body) {
        let (tx, rx) = mpsc::channel(buffer);
        (tx, ChannelBody { rx, exact_len }.boxed())
    }
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        // An exact hint makes hyper send Content-Length, which a truncated
        // stream then visibly fails to honour.
        match self.exact_len {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => hyper::body::SizeHint::default(),
        }
    }
}

/// Collects a (full) response body; used by faults that rewrite a real answer.
pub(crate) async fn body_bytes(body: Body) -> Bytes {
    body.collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default()
}
