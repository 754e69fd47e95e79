//! `DELETE /session`: the device logs out; its session stops working at once.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::app::{App, RequestInfo};
use super::audit::{AuditSubject, audit_failure};
use super::response;
use super::signed::FromDevice;
use crate::error::{Error, RequestError};

pub async fn delete(app: &App, from: FromDevice, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    if from.parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(RequestError::BadQuery { takes: "DELETE /session takes no query string" }.into());
    }
    let subject = AuditSubject { user: Some(&from.device.session().user), ..AuditSubject::default() };
    app.audit(info, "session_revoke", "allowed", subject)?;
    let revoked = app.inner.escrow.revoke_session(&from.device).await;
    audit_failure(app, info, "session_revoke", subject, revoked)?;
    app.record_session_access(from.device.session(), crate::access::Operation::Logout, info.client, None).await;
    Ok(response::empty(StatusCode::NO_CONTENT))
}
