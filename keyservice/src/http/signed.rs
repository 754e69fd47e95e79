//! The two kinds of signed request, authenticated in one place each: a Real Service's
//! (credential, allowlisted address) and a device's (session). The principal comes
//! from authentication; this adds what HTTP decides: addresses, media type, bodies.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request};
use keyservice_client::protocol::wire::MAX_USER_ID_LEN;
use serde::de::DeserializeOwned;

use super::app::App;
use super::body::RequestBody;
use super::{body, response};

/// Largest `/connect` body accepted, in bytes.
const MAX_CONNECT_BODY: usize = 4096;

use crate::auth::{AuthError, Device, RealService, Signed};
use crate::error::{Error, RequestError};

/// A request a Real Service signed with a credential, from an address its namespace
/// allows.
pub struct FromRealService {
    /// Who signed.
    pub principal: RealService,
    /// The body the signature covers.
    pub body: Bytes,
}

impl FromRealService {
    /// The JSON body as `T`, whose `namespace` must be the credential's.
    ///
    /// # Errors
    ///
    /// `bad_json`, `wrong_namespace`, `invalid_user_id`.
    pub fn json<T: DeserializeOwned + NamesUser>(&self) -> Result<T, Error> {
        let request: T =
            serde_json::from_slice(&self.body).map_err(|e| RequestError::BadJson(describe_json_error(&e)))?;
        if request.namespace() != self.principal.namespace() {
            return Err(RequestError::WrongNamespace.into());
        }
        let user_id = request.user_id();
        if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN {
            return Err(RequestError::InvalidUserId { max: MAX_USER_ID_LEN }.into());
        }
        Ok(request)
    }
}

/// A Real Service's request body that names a namespace and a user.
pub trait NamesUser {
    /// The namespace it names.
    fn namespace(&self) -> &str;
    /// The user it names.
    fn user_id(&self) -> &str;
}

impl NamesUser for keyservice_client::protocol::wire::ConnectRequest {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl NamesUser for keyservice_client::protocol::wire::EraseRequest {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn user_id(&self) -> &str {
        &self.user_id
    }
}

impl NamesUser for keyservice_client::protocol::wire::UserRequest {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn user_id(&self) -> &str {
        &self.user_id
    }
}

/// Authenticates a Real Service's request. Checks run cheapest first, each with its own
/// error: the caller's IP, the ss1 header and date, the credential, the namespace's
/// allowlist, the media type, the body size, then the MAC and replay memory.
///
/// # Errors
///
/// `ip_not_allowed`, the [`AuthError`]s, `unsupported_media_type`, `body_too_large`.
pub async fn real_service<B: RequestBody>(
    app: &App,
    request: Request<B>,
    client: IpAddr,
) -> Result<FromRealService, Error> {
    let inner = &app.inner;
    let ip = client;
    inner.limiter.admit_signed(app.client_key(ip))?;
    let tenants = app.tenants();
    if !tenants.namespaces.values().any(|ns| ns.allows(ip)) {
        return Err(RequestError::IpNotAllowed.into());
    }
    let (parts, body) = request.into_parts();
    // A cheap look at the header before the body is read; the date is checked again
    // once the request has fully arrived.
    let claim = inner.auth.claim(&parts.headers, inner.clock.now())?;
    let (namespace, secret) = tenants.credentials.get(claim.key_id()).ok_or(AuthError::UnknownKeyId)?;
    if !tenants.namespaces.get(namespace).is_some_and(|ns| ns.allows(ip)) {
        return Err(RequestError::IpNotAllowed.into());
    }
    if !is_json(&parts.headers) {
        return Err(RequestError::UnsupportedMediaType.into());
    }
    let body = body::read(body, &parts.headers, MAX_CONNECT_BODY, inner.body_read_timeout).await?;
    let signed = signed_parts(&parts, &body);
    let principal = inner.auth.real_service(claim, namespace, secret, signed).await??;
    Ok(FromRealService { principal, body })
}

/// A request a device signed with its session.
pub struct FromDevice {
    /// Who signed.
    pub device: Device,
    /// The request line and headers.
    pub parts: http::request::Parts,
    /// The body the signature covers.
    pub body: Bytes,
}

/// Authenticates a device's request: reads the body within the key size limit (it is
/// part of the MAC), then the ss1 header and date, the session, the MAC and replay.
///
/// # Errors
///
/// `body_too_large`, the [`AuthError`]s (`unknown_session`, `session_expired`, …).
pub async fn device<B: RequestBody>(app: &App, request: Request<B>, client: IpAddr) -> Result<FromDevice, Error> {
    let inner = &app.inner;
    inner.limiter.admit_signed(app.client_key(client))?;
    let (parts, body) = request.into_parts();
    let body = body::read(body, &parts.headers, inner.max_key_bytes, inner.body_read_timeout).await?;
    let tenants = app.tenants();
    let configured = |namespace: &crate::store::Pseudonym| tenants.pseudonyms.contains(namespace);
    let signed = signed_parts(&parts, &body);
    let device = inner.auth.device(&inner.escrow, &parts.headers, signed, configured).await??;
    Ok(FromDevice { device, parts, body })
}

/// What the signature of a request with these `parts` and `body` covers.
fn signed_parts<'a>(parts: &'a http::request::Parts, body: &'a [u8]) -> Signed<'a> {
    let path_and_query = parts.uri.path_and_query().map_or(parts.uri.path(), |pq| pq.as_str());
    Signed { method: parts.method.as_str(), path_and_query, body }
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
pub(super) fn describe_json_error(error: &serde_json::Error) -> String {
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
                format!("a value has the wrong type at {position}; the fields are strings")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyservice_client::protocol::wire::ConnectRequest;

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
