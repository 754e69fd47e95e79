//! `POST /connect`: a Real Service redeems a device's init token for a session.
//!
//! Checks run cheapest first, each with its own error: the caller's IP, the ss1 header
//! and date, the credential, the namespace's allowlist, the media type, the body size,
//! the MAC and replay memory, then the JSON fields, and last the init token itself.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::{ConnectRequest, ConnectResponse, MAX_USER_ID_LEN};

use super::{App, MAX_CONNECT_BODY, RequestBody, body, response};
use crate::auth::{AuthError, Verified};
use crate::crypto;
use crate::error::{Error, RequestError};
use crate::store::{Redeemed, UserRef};

pub async fn handle<B: RequestBody>(
    app: &App,
    request: Request<B>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Error> {
    let inner = &app.inner;
    let ip = peer.ip().to_canonical();
    if !inner.namespaces.values().any(|ns| ns.allows(ip)) {
        return Err(RequestError::IpNotAllowed.into());
    }
    let now = crate::time::now();
    let (parts, body) = request.into_parts();
    let claim = inner.auth.claim(&parts.headers, now)?;
    let (namespace, secret) = inner.credentials.get(claim.key_id()).ok_or(AuthError::UnknownKeyId)?;
    if !inner.namespaces.get(namespace).is_some_and(|ns| ns.allows(ip)) {
        return Err(RequestError::IpNotAllowed.into());
    }
    if !is_json(&parts.headers) {
        return Err(RequestError::UnsupportedMediaType.into());
    }
    let body = body::read(body, &parts.headers, MAX_CONNECT_BODY, inner.body_read_timeout).await?;
    let path = parts.uri.path_and_query().map_or("/connect", |pq| pq.as_str());
    let verified = inner.auth.verify(claim, secret, parts.method.as_str(), path, &body, now).await?;
    connect(app, &verified, namespace, &body, now).await
}

async fn connect(
    app: &App,
    signed: &Verified,
    credential_namespace: &str,
    body: &[u8],
    now: u64,
) -> Result<Response<Full<Bytes>>, Error> {
    let request: ConnectRequest =
        serde_json::from_slice(body).map_err(|e| RequestError::BadJson(describe_json_error(&e)))?;
    if request.namespace != credential_namespace {
        return Err(RequestError::WrongNamespace.into());
    }
    if request.user_id.is_empty() || request.user_id.len() > MAX_USER_ID_LEN {
        return Err(RequestError::InvalidUserId { max: MAX_USER_ID_LEN }.into());
    }
    let digest = crypto::decode_init_token_hash(&request.init_token_hash).ok_or(RequestError::InvalidInitTokenHash)?;

    let session_token = crypto::new_token()?;
    let expires_at = now + app.inner.session_ttl.as_secs();
    let user = UserRef { namespace: request.namespace, user_id: request.user_id };
    let session_id = crypto::session_id(session_token.expose());
    match app.inner.store.redeem_init(&digest, now, session_id, user, expires_at).await? {
        Redeemed::Session => {
            tracing::info!(credential = signed.key_id(), namespace = credential_namespace, "session created");
            Ok(response::json(
                StatusCode::OK,
                &ConnectResponse { session_token, expires_at: crate::time::rfc3339(expires_at) },
            ))
        }
        Redeemed::UnknownInit => Err(RequestError::UnknownInitToken.into()),
        Redeemed::ExpiredInit => Err(RequestError::InitTokenExpired.into()),
    }
}

/// `application/json`, with or without parameters such as `charset=utf-8`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case(response::JSON)
}

/// What is wrong with a JSON body, without quoting any of its values (serde's "invalid
/// type" messages quote them, and a body may carry a user id).
fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let position = format!("line {} column {}", error.line(), error.column());
    match error.classify() {
        Category::Syntax | Category::Eof => format!("malformed JSON at {position}"),
        Category::Io => "the body could not be read".to_owned(),
        Category::Data => {
            let text = error.to_string();
            let field_error = ["missing field", "unknown field", "duplicate field"].iter().any(|p| text.starts_with(p));
            if field_error {
                // serde quotes only the field name here, e.g. "unknown field `x`, expected …".
                let end = text.find(" at line").unwrap_or(text.len());
                let head = text[..end].split(", expected").next().unwrap_or_default();
                format!("{head} at {position}")
            } else {
                format!("a value has the wrong type at {position}; namespace, userId and initTokenHash are strings")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(text: &str) -> String {
        describe_json_error(&serde_json::from_str::<ConnectRequest>(text).unwrap_err())
    }

    #[test]
    fn json_errors_name_fields_but_never_values() {
        assert!(describe("{").starts_with("malformed JSON"));
        assert!(describe(r#"{"namespace":"n","userId":"u"}"#).starts_with("missing field `initTokenHash`"));
        assert!(
            describe(r#"{"namespace":"n","userId":"u","initTokenHash":"h","extra":1}"#)
                .starts_with("unknown field `extra`")
        );
        let wrong_type = describe(r#"{"namespace":"n","userId":"secret-user-4711","initTokenHash":12345}"#);
        assert!(!wrong_type.contains("12345") && !wrong_type.contains("4711"), "{wrong_type}");
    }
}
