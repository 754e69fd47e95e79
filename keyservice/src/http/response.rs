//! Building responses: JSON bodies, error bodies, and the headers every response carries.

use bytes::Bytes;
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, REFERRER_POLICY, RETRY_AFTER,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::ErrorBody;
use serde::Serialize;

use crate::error::{Error, RequestError};

/// Media type of every JSON body.
pub const JSON: &str = "application/json";

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    // Serialising the wire types cannot fail: they hold only strings and integers.
    let bytes = serde_json::to_vec(body).expect("wire types serialise");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// A response without a body (204).
pub fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
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
    if let Error::Auth(crate::auth::AuthError::StaleDate { retry_after }) = error {
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after));
    }
    response
}

/// The headers every response carries: nothing is cached, sniffed, framed or referred.
pub fn secure(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `"N"`: the ETag of key version N.
pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a quoted number is a valid header value")
}
