//! Building responses: JSON bodies, error bodies, and the headers every response carries.

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue, REFERRER_POLICY, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::ErrorBody;
use serde::Serialize;

use crate::error::{Error, RequestError};

/// The `Strict-Transport-Security` value of every answer over TLS: a year.
pub const HSTS: &str = "max-age=31536000";

/// Media type of every JSON body.
pub const JSON: &str = "application/json";

/// Room for the headers a response ends up with: its own, [`SECURITY_HEADERS`], HSTS,
/// the request id and CORS. Reserved up front, so that adding them never regrows the map.
const HEADER_ROOM: usize = 16;

/// A 200 response with `body`, with room for every header it will carry.
pub fn with_body(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.headers_mut() = http::HeaderMap::with_capacity(HEADER_ROOM);
    response
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    // Serialising the wire types cannot fail: they hold only strings and integers.
    let bytes = serde_json::to_vec(body).expect("wire types serialise");
    let mut response = with_body(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A response without a body (204).
pub fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = with_body(Bytes::new());
    *response.status_mut() = status;
    response
}

/// The error body for `error`, with `Allow` on a 405.
pub fn error(error: &Error, status: StatusCode, code: &'static str) -> Response<Full<Bytes>> {
    let mut response = json(status, &ErrorBody { error: code.to_owned(), message: error.public_message() });
    if let Error::Request(RequestError::MethodNotAllowed { allow }) = error {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    }
    if let Error::Limit(refusal) = error {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(refusal.retry_after()));
    }
    if status == StatusCode::INSUFFICIENT_STORAGE {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(30u32));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !response.headers().contains_key(RETRY_AFTER) {
        // Every 503 passes: say when to try again.
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u32));
    }
    if let Error::Auth(crate::auth::AuthError::StaleDate { retry_after }) = error {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    response
}

/// The headers every response carries: nothing is cached, sniffed, framed or referred.
pub fn secure(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The headers every answer carries.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (CACHE_CONTROL, "no-store"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
    (REFERRER_POLICY, "no-referrer"),
];

/// [`SECURITY_HEADERS`] (and HSTS when `tls`) as raw header lines, for the answers
/// hyper writes itself before a request reaches the app.
pub fn early_answer_headers(tls: bool) -> &'static [u8] {
    static PLAIN: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| header_lines(false));
    static TLS: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| header_lines(true));
    if tls { &TLS } else { &PLAIN }
}

fn header_lines(tls: bool) -> Vec<u8> {
    let mut lines = Vec::new();
    let hsts = tls.then_some((http::header::STRICT_TRANSPORT_SECURITY, HSTS));
    for (name, value) in SECURITY_HEADERS.into_iter().chain(hsts) {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    lines
}

/// `"N"`: the ETag of key version N.
pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a quoted number is a valid header value")
}
