//! `POST /init`: a new pending init token. No authentication; the body is ignored.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::InitResponse;

use super::app::{App, RequestInfo};
use super::audit::AuditSubject;
use super::response;
use crate::crypto;
use crate::error::Error;

pub async fn handle(app: &App, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let limiter = &app.inner.limiter;
    app.inner.disks.admit_growth()?;
    let admission = limiter.admit_init(info.client)?;
    let issued = async {
        if let Some(evicted) = admission.evict {
            // The cap is full: the network holding the most gives up its oldest.
            app.inner.escrow.forget_init(&evicted).await?;
            app.inner.metrics.rate_limited("pending_inits_evicted");
        }
        let token = crypto::new_token()?;
        let expires_at = app.inner.clock.now() + app.inner.init_ttl.as_secs();
        let id = app.inner.escrow.add_init(&token, expires_at).await?;
        Ok::<_, Error>((token, id, expires_at))
    };
    let (token, id, expires_at) = match issued.await {
        Ok(issued) => issued,
        Err(error) => {
            limiter.init_failed(&admission);
            return Err(error);
        }
    };
    limiter.init_issued(&admission, id, expires_at);
    app.audit(info, "init", "ok", AuditSubject::default())?;
    let body = InitResponse { init_token: token, expires_at: crate::time::rfc3339(expires_at) };
    Ok(response::json(StatusCode::OK, &body))
}
