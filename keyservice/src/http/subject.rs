//! The data subject's rights, exercised by the Real Service: `POST /erase` (the user
//! deleted their account) and `POST /export` (a subject-access request).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::{EraseRequest, UserRequest};

use super::app::{App, RequestInfo};
use super::audit::{AuditSubject, audit_failure};
use super::signed::FromRealService;
use super::{identity, response};
use crate::access::Operation;
use crate::error::Error;
use crate::oidc::Purpose;
use crate::store::UserKey;

/// `POST /erase`: every key version, the user's key and every session, destroyed; the
/// receipt also when nothing was held.
pub async fn erase(app: &App, from: FromRealService, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let request: EraseRequest = from.json()?;
    let (namespace, user) = (from.principal.namespace(), app.inner.escrow.user(&request.namespace, &request.user_id));
    // On a namespace with `oidc`, the user confirmed this erasure at the identity
    // provider: checked before anything is spent, spent last.
    let purpose = Purpose::Erase { namespace, now: app.inner.clock.now() };
    let token =
        identity::check(app, info, &from, (&request.user_id, &user), request.id_token.as_deref(), purpose).await?;
    let subject = AuditSubject { namespace: Some(namespace), user: Some(&user), reason: None };
    if let Err(refusal) = app.inner.limiter.admit_erase(namespace) {
        tracing::warn!(request_id = %info.id, namespace = %namespace, "namespace exceeded its erase budget");
        app.inner.metrics.namespace_budget_exceeded(namespace, "erase");
        let _ = app.audit(info, "erase", "denied", AuditSubject { reason: Some(refusal.limit()), ..subject });
        return Err(refusal.into());
    }
    if let Some(token) = token {
        identity::spend(app, info, &from, &user, token).await?;
    }
    app.audit(info, "erase", "allowed", subject)?;
    let receipt = app.erase_whole(user).await;
    let receipt = audit_failure(app, info, "erase", subject, receipt)?;
    tracing::info!(
        request_id = %info.id,
        user = %receipt.user_id,
        versions = receipt.versions_destroyed,
        sessions = receipt.sessions_revoked,
        "user erased"
    );
    Ok(response::json(StatusCode::OK, &receipt))
}

impl App {
    /// Erases `user` on a task of its own, so that a caller who goes away (the
    /// connection closed, the request's future dropped) cannot leave an erasure half
    /// done: its ledger line written but the records not yet destroyed, or destroyed
    /// but the store's ledger mark not moved.
    async fn erase_whole(&self, user: UserKey) -> Result<keyservice_client::protocol::wire::ErasureReceipt, Error> {
        let app = self.clone();
        tokio::spawn(async move { app.inner.escrow.erase(&user, app.inner.clock.now()).await })
            .await
            .map_err(|e| Error::Ledger(format!("the erasure did not finish: {e}")))?
    }

    /// Erases a user at the operator's request (the admin socket): audited as an
    /// erasure whose reason is `operator`, from no address.
    ///
    /// # Errors
    ///
    /// As `POST /erase`.
    pub(crate) async fn erase_as_operator(
        &self,
        namespace: &str,
        user_id: &str,
    ) -> Result<keyservice_client::protocol::wire::ErasureReceipt, Error> {
        let info = RequestInfo { id: "admin".to_owned(), client: std::net::Ipv4Addr::UNSPECIFIED.into() };
        let user = self.inner.escrow.user(namespace, user_id);
        let subject = AuditSubject { namespace: Some(namespace), user: Some(&user), reason: Some("operator") };
        self.audit(&info, "erase", "allowed", subject)?;
        let receipt = self.erase_whole(user).await;
        let receipt = audit_failure(self, &info, "erase", subject, receipt)?;
        tracing::info!(user = %receipt.user_id, versions = receipt.versions_destroyed, "user erased by the operator");
        Ok(receipt)
    }
}

/// `POST /export`: what is held for the user, never key bytes.
pub async fn export(app: &App, from: FromRealService, info: &RequestInfo) -> Result<Response<Full<Bytes>>, Error> {
    let request: UserRequest = from.json()?;
    let (namespace, user) = (&request.namespace, app.inner.escrow.user(&request.namespace, &request.user_id));
    let credential = from.principal.credential();
    let export = app.inner.escrow.export(&user, app.inner.clock.now()).await?;
    app.audit(info, "export", "ok", AuditSubject { namespace: Some(namespace), user: Some(&user), reason: None })?;
    app.record_access(user, Operation::Export, None, Some(credential), info.client, None).await;
    Ok(response::json(StatusCode::OK, &export))
}
