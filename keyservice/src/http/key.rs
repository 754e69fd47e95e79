//! `PUT /key` and `GET /key`: a device stores and reads versions of its key.
//!
//! Signed with key id = session token and secret = init token. A session reaches only the
//! (namespace, userId) it was made for: the user comes from the stored session, never
//! from the request.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::{DEFAULT_KEY_CONTENT_TYPE, PutKeyResponse};
use zeroize::Zeroizing;

use super::app::{App, RequestInfo};
use super::audit::{AuditSubject, audit_failure};
use super::response;
use super::signed::FromDevice;
use crate::access::Operation;
use crate::auth::AuthError;
use crate::error::{Error, RequestError};
use crate::store::{EntityTags, Precondition, PutOutcome};

/// Longest Content-Type stored with a key version.
const MAX_CONTENT_TYPE_LEN: usize = 255;

pub async fn put(app: &App, from: FromDevice, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let FromDevice { device, parts, body } = from;
    let session = device.session();
    if parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(RequestError::BadQuery { takes: "PUT /key takes no query string" }.into());
    }
    if body.is_empty() {
        return Err(RequestError::EmptyKey.into());
    }
    let content_type = match parts.headers.get(CONTENT_TYPE) {
        None => DEFAULT_KEY_CONTENT_TYPE.to_owned(),
        Some(value) => valid_content_type(value).ok_or(RequestError::InvalidContentType)?,
    };
    let precondition = precondition(&parts.headers)?;
    app.inner.disks.admit_growth()?;
    let bytes = Zeroizing::new(body.to_vec());
    let now = app.inner.clock.now();
    let subject = AuditSubject { user: Some(&session.user), ..AuditSubject::default() };
    app.audit_batched(info, "key_write", "allowed", subject).await?;
    let outcome = app.inner.escrow.put_key(&device, content_type, bytes, &precondition, now).await;
    if let Err(error) = &outcome
        && error.store_error().is_some_and(crate::store::StoreError::is_transient)
    {
        // The store may have written it all the same (a commit it could not confirm):
        // the history must not miss a version that exists.
        app.record_session_access(session, Operation::KeyWriteUnconfirmed, info.client, None).await;
    }
    // Writes that were not made are failures of the request, audited as such.
    let outcome = outcome.and_then(|outcome| match outcome {
        PutOutcome::Stored { version } => Ok(Some(version)),
        PutOutcome::PreconditionFailed => Ok(None),
        PutOutcome::DekChanged => Err(crate::store::StoreError::Unavailable(
            "the user's keys were deleted again and again while this write was made; nothing was written".into(),
        )
        .into()),
        // The user was erased (or the session revoked) while the write was made.
        PutOutcome::SessionGone => Err(AuthError::UnknownSession.into()),
    });
    match audit_failure(app, info, "key_write", subject, outcome)? {
        Some(version) => {
            app.record_session_access(session, Operation::KeyWrite, info.client, Some(version)).await;
            let status = if version == 1 { StatusCode::CREATED } else { StatusCode::OK };
            let mut response = response::json(status, &PutKeyResponse { version });
            response.headers_mut().insert(ETAG, response::etag(version));
            Ok(response)
        }
        None => Err(RequestError::PreconditionFailed.into()),
    }
}

pub async fn get(app: &App, from: FromDevice, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let version = requested_version(from.parts.uri.query())?;
    let Some(key) = app.inner.escrow.get_key(&from.device, version).await? else {
        return Err(if version.is_some() { RequestError::NoSuchVersion } else { RequestError::NoKey }.into());
    };
    let content_type = HeaderValue::from_str(&key.content_type)
        .map_err(|_| crate::store::StoreError::Corrupt { kind: "key version" })?;
    // The key leaves only once its reading is on record.
    let subject = AuditSubject { user: Some(&from.device.session().user), ..AuditSubject::default() };
    app.audit_batched(info, "key_read", "ok", subject).await?;
    app.record_session_access(from.device.session(), Operation::KeyRead, info.client, Some(key.version)).await;
    let mut response = response::with_body(Bytes::copy_from_slice(&key.bytes));
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response.headers_mut().insert(ETAG, response::etag(key.version));
    Ok(response)
}

/// `DELETE /key`: every version of the user's key, and the key that sealed them, gone.
pub async fn delete(app: &App, from: FromDevice, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    if from.parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(RequestError::BadQuery { takes: "DELETE /key takes no query string" }.into());
    }
    let subject = AuditSubject { user: Some(&from.device.session().user), ..AuditSubject::default() };
    app.audit(info, "key_delete", "allowed", subject)?;
    let deleted = app.inner.escrow.delete_keys(&from.device).await;
    audit_failure(app, info, "key_delete", subject, deleted)?;
    app.record_session_access(from.device.session(), Operation::KeyDelete, info.client, None).await;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// `GET /key/history`: a page of the access history of the session's user, newest
/// first (`limit`, `before`).
pub async fn history(app: &App, from: FromDevice, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let (limit, before) =
        crate::access::parse_query(from.parts.uri.query()).ok_or(RequestError::BadQuery { takes: HISTORY_TAKES })?;
    let session = from.device.session();
    let page = app.inner.escrow.access_history(&from.device, before, limit).await?;
    app.audit(
        info,
        "access_history_read",
        "ok",
        AuditSubject { user: Some(&session.user), ..AuditSubject::default() },
    )?;
    Ok(response::json(StatusCode::OK, &page))
}

/// What `GET /key/history` takes ([`crate::access::MAX_PAGE`] at most).
const HISTORY_TAKES: &str =
    "GET /key/history takes only limit=N (1 to 500) and before=<32 hex digits>, each at most once";

/// What `GET /key` takes.
const GET_KEY_TAKES: RequestError = RequestError::BadQuery { takes: "GET /key takes only version=N (N ≥ 1)" };

/// `version=N`, N ≥ 1, and nothing else; no query at all means the latest.
fn requested_version(query: Option<&str>) -> Result<Option<u64>, RequestError> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let digits = query.strip_prefix("version=").ok_or(GET_KEY_TAKES)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GET_KEY_TAKES);
    }
    match digits.parse::<u64>() {
        Ok(version) if version >= 1 => Ok(Some(version)),
        _ => Err(GET_KEY_TAKES),
    }
}

fn valid_content_type(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let printable = text.bytes().all(|b| (0x20..0x7f).contains(&b));
    (printable && !text.is_empty() && text.len() <= MAX_CONTENT_TYPE_LEN).then(|| text.to_owned())
}

pub(super) fn precondition(headers: &HeaderMap) -> Result<Precondition, RequestError> {
    match (entity_tags(headers, &IF_MATCH)?, entity_tags(headers, &IF_NONE_MATCH)?) {
        (None, None) => Ok(Precondition::None),
        (Some(tags), None) => Ok(Precondition::IfMatch(tags)),
        (None, Some(tags)) => Ok(Precondition::IfNoneMatch(tags)),
        (Some(_), Some(_)) => Err(RequestError::ConflictingPreconditions),
    }
}

/// `*`, or a comma-separated list of strong ETags `"N"` (over one or more header lines).
fn entity_tags(headers: &HeaderMap, name: &HeaderName) -> Result<Option<EntityTags>, RequestError> {
    let mut versions = Vec::new();
    let mut any = false;
    for value in headers.get_all(name) {
        let text = value.to_str().map_err(|_| RequestError::BadPrecondition)?;
        for item in text.split(',').map(str::trim) {
            if item == "*" {
                any = true;
                continue;
            }
            let digits = item
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(RequestError::BadPrecondition)?;
            versions.push(digits.parse::<u64>().map_err(|_| RequestError::BadPrecondition)?);
        }
    }
    match (any, versions.is_empty()) {
        (false, true) if headers.get(name).is_none() => Ok(None),
        (false, true) => Err(RequestError::BadPrecondition),
        (true, true) => Ok(Some(EntityTags::Any)),
        (true, false) => Err(RequestError::BadPrecondition),
        (false, false) => Ok(Some(EntityTags::Versions(versions))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn preconditions_parse() {
        assert_eq!(precondition(&headers(&[])), Ok(Precondition::None));
        assert_eq!(precondition(&headers(&[(IF_NONE_MATCH, "*")])), Ok(Precondition::IfNoneMatch(EntityTags::Any)));
        assert_eq!(
            precondition(&headers(&[(IF_MATCH, "\"3\", \"4\""), (IF_MATCH, "\"9\"")])),
            Ok(Precondition::IfMatch(EntityTags::Versions(vec![3, 4, 9])))
        );
        for bad in ["3", "W/\"3\"", "\"\"", "\"-1\"", "*, \"2\"", "", "\"99999999999999999999999\""] {
            assert_eq!(precondition(&headers(&[(IF_MATCH, bad)])), Err(RequestError::BadPrecondition), "{bad}");
        }
        assert_eq!(
            precondition(&headers(&[(IF_MATCH, "\"1\""), (IF_NONE_MATCH, "*")])),
            Err(RequestError::ConflictingPreconditions)
        );
    }

    #[test]
    fn version_query_parses() {
        assert_eq!(requested_version(None), Ok(None));
        assert_eq!(requested_version(Some("")), Ok(None));
        assert_eq!(requested_version(Some("version=12")), Ok(Some(12)));
        for bad in ["version=0", "version=", "version=+1", "version=1&x=2", "v=1", "version=18446744073709551616"] {
            assert_eq!(requested_version(Some(bad)), Err(GET_KEY_TAKES), "{bad}");
        }
        assert!(HISTORY_TAKES.contains(&format!("1 to {}", crate::access::MAX_PAGE)));
    }
}
