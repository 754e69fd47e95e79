//! The audit lines of requests, and each user's access history.

use std::net::IpAddr;

use super::app::{App, RequestInfo};
use crate::error::Error;

/// Who an audit line is about.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AuditSubject<'a> {
    pub namespace: Option<&'a str>,
    pub user: Option<&'a crate::store::UserKey>,
    pub reason: Option<&'a str>,
}

impl App {
    /// Puts an operation on the user's access history. A history that cannot be written
    /// now stays queued (and the store's failure shows elsewhere), so this never fails
    /// the request.
    pub(crate) async fn record_access(
        &self,
        user: crate::store::UserKey,
        op: crate::access::Operation,
        session: Option<&crate::store::Pseudonym>,
        credential: Option<&str>,
        client: IpAddr,
        version: Option<u64>,
    ) {
        let entry = crate::access::Entry {
            op,
            session: session.map(crate::access::Entry::session_tag),
            address: client,
            credential: credential.map(str::to_owned),
            version,
            first_version: None,
            count: 1,
            last: None,
        };
        if let Err(error) = self.inner.escrow.record_access(user, entry).await {
            tracing::warn!(%error, "writing access history entries failed; they stay queued");
        }
    }

    /// Puts an operation done with `session` on its user's access history.
    pub(crate) async fn record_session_access(
        &self,
        session: &crate::auth::Session,
        op: crate::access::Operation,
        client: IpAddr,
        version: Option<u64>,
    ) {
        self.record_access(session.user, op, Some(&session.id), session.credential.as_deref(), client, version).await;
    }

    /// Appends an audit line for this request.
    ///
    /// # Errors
    ///
    /// [`Error::Audit`] when the line cannot be written and the log fails closed: the
    /// request must not go on.
    pub(crate) fn audit(
        &self,
        info: &RequestInfo,
        event: &str,
        outcome: &str,
        subject: AuditSubject<'_>,
    ) -> Result<(), Error> {
        let ticket = self.queue_audit(info, event, outcome, subject);
        Ok(self.inner.audit.settle(ticket)?)
    }

    /// [`App::audit`] for the busiest events (key reads and writes): the line is queued,
    /// the task lets the other requests ready on its thread queue theirs, and then all
    /// of them are written with one system call. Still fail-closed, and still written
    /// before this returns.
    ///
    /// # Errors
    ///
    /// As [`App::audit`].
    pub(crate) async fn audit_batched(
        &self,
        info: &RequestInfo,
        event: &str,
        outcome: &str,
        subject: AuditSubject<'_>,
    ) -> Result<(), Error> {
        let ticket = self.queue_audit(info, event, outcome, subject);
        tokio::task::yield_now().await;
        Ok(self.inner.audit.settle(ticket)?)
    }

    fn queue_audit(
        &self,
        info: &RequestInfo,
        event: &str,
        outcome: &str,
        subject: AuditSubject<'_>,
    ) -> crate::audit::Ticket {
        let event = crate::audit::Event {
            time: crate::time::rfc3339_now(),
            node: &self.inner.node_id,
            event,
            outcome,
            request_id: &info.id,
            client_ip: info.client.to_string(),
            namespace: subject.namespace,
            user: subject.user.map(|u| crate::audit::pseudonym_hex(&u.user)),
            reason: subject.reason,
            repeated: None,
        };
        self.inner.audit.queue(&event)
    }

    /// Writes a summary line for each refusal window that ended with refusals it
    /// counted without a line.
    pub(super) fn audit_denial_summaries(&self, all: bool) {
        for ((network, event, reason), repeated) in self.inner.denials.due(all) {
            let event = crate::audit::Event {
                time: crate::time::rfc3339_now(),
                node: &self.inner.node_id,
                event,
                outcome: "denied",
                request_id: "summary",
                client_ip: network.to_string(),
                namespace: None,
                user: None,
                reason: Some(reason),
                repeated: Some(repeated),
            };
            let _ = self.inner.audit.record(&event);
        }
    }

    /// Opens the audit log's file again (after an external rotation moved it away).
    ///
    /// # Errors
    ///
    /// When the file cannot be opened; the old one stays in use.
    pub fn reopen_audit(&self) -> Result<(), crate::audit::AuditError> {
        self.inner.audit.reopen()
    }

    /// Writes the summaries of ended refusal windows, then flushes the audit log to
    /// disk; the server calls it every second.
    pub async fn tick_audit(&self) {
        self.audit_denial_summaries(false);
        self.sync_audit().await;
    }

    /// Flushes the audit log to disk, on a blocking thread: requests go on writing lines
    /// meanwhile.
    pub async fn sync_audit(&self) {
        let app = self.clone();
        match tokio::task::spawn_blocking(move || app.inner.audit.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "syncing the audit log failed"),
            Err(error) => tracing::error!(%error, "the audit log's sync did not finish"),
        }
    }
}

/// Passes `result` through; a failure of an action already audited as `allowed` also
/// gets a `failed` line (best effort: the request fails either way).
pub(crate) fn audit_failure<T>(
    app: &App,
    info: &RequestInfo,
    event: &str,
    subject: AuditSubject<'_>,
    result: Result<T, Error>,
) -> Result<T, Error> {
    if let Err(error) = &result {
        let _ = app.audit(info, event, "failed", AuditSubject { reason: Some(error.status_and_code().1), ..subject });
    }
    result
}
