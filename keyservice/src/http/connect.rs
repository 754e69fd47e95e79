//! `POST /connect`: a Real Service redeems a device's init token for a session.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::{ConnectRequest, ConnectResponse};

use super::app::{App, RequestInfo};
use super::audit::{AuditSubject, audit_failure};
use super::signed::FromRealService;
use super::{identity, response};
use crate::crypto;
use crate::error::{Error, RequestError};
use crate::oidc::Purpose;
use crate::store::Redeemed;

pub async fn handle(app: &App, from: FromRealService, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let request: ConnectRequest = from.json()?;
    let digest = crypto::decode_init_token_hash(&request.init_token_hash).ok_or(RequestError::InvalidInitTokenHash)?;
    let user = app.inner.escrow.user(&request.namespace, &request.user_id);
    // Independent identity, where the namespace asks for it: before anything is spent.
    let purpose = Purpose::Connect { init_token_hash: &request.init_token_hash };
    identity::check(app, info, &from, (&request.user_id, &user), request.id_token.as_deref(), purpose).await?;
    app.inner.disks.admit_growth()?;

    let escrow = &app.inner.escrow;
    let now = app.inner.clock.now();
    let session_token = crypto::new_token()?;
    let expires_at = now + app.inner.session_ttl.as_secs();
    let subject = AuditSubject { namespace: Some(&request.namespace), user: Some(&user), reason: None };
    let admitted = app.inner.limiter.admit_connect_counted(&request.namespace, &user, now).await;
    if let Err(refusal) = admitted? {
        // Either ceiling (calls per minute, distinct users per window) may mean a
        // compromised Real Service harvesting keys: warn, count and record it.
        tracing::warn!(request_id = %info.id, namespace = %request.namespace, limit = refusal.limit(), "namespace exceeded its connect budget");
        app.inner.metrics.namespace_budget_exceeded(&request.namespace, "connect");
        let _ = app.audit(
            info,
            "connect_budget_exceeded",
            "denied",
            AuditSubject { reason: Some(refusal.limit()), ..subject },
        );
        return Err(refusal.into());
    }
    app.audit(info, "connect", "allowed", subject)?;
    let credential = from.principal.credential();
    let redeemed = escrow.connect(&digest, user, credential, &session_token, now, expires_at).await;
    let refused = |reason| {
        let _ = app.audit(info, "connect", "denied", AuditSubject { reason: Some(reason), ..subject });
    };
    let redeemed = audit_failure(app, info, "connect", subject, redeemed)?;
    if redeemed != Redeemed::UnknownInit {
        app.inner.limiter.init_consumed(Some(&escrow.init_id(&digest)));
    }
    match redeemed {
        Redeemed::Session => {
            tracing::info!(request_id = %info.id, credential, namespace = %from.principal.namespace(), "session created");
            let session = escrow.session_id(session_token.expose());
            app.record_access(
                user,
                crate::access::Operation::Connect,
                Some(&session),
                Some(credential),
                info.client,
                None,
            )
            .await;
            let body = ConnectResponse { session_token, expires_at: crate::time::rfc3339(expires_at) };
            Ok(response::json(StatusCode::OK, &body))
        }
        Redeemed::UnknownInit => {
            refused("unknown_init_token");
            Err(RequestError::UnknownInitToken.into())
        }
        Redeemed::ExpiredInit => {
            refused("init_token_expired");
            Err(RequestError::InitTokenExpired.into())
        }
    }
}
