//! `POST /init`: a new pending init token. No authentication; the body is ignored.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::InitResponse;

use super::{App, AuditSubject, RequestInfo, response};
use crate::crypto;
use crate::error::Error;

pub async fn handle(app: &App, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    app.inner.limiter.admit_init(info.client)?;
    let token = crypto::new_token()?;
    let expires_at = crate::time::now() + app.inner.init_ttl.as_secs();
    app.inner.escrow.add_init(&token, expires_at).await?;
    app.audit(info, "init", "ok", AuditSubject::default())?;
    let body = InitResponse { init_token: token, expires_at: crate::time::rfc3339(expires_at) };
    Ok(response::json(StatusCode::OK, &body))
}
