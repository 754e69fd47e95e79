//! The user's independent identity on a namespace with `oidc`: the ID token a Real
//! Service must send on `/connect` and `/erase`, checked in one place, and its refusals
//! budgeted and audited like every other refusal flood.

use super::app::{App, RequestInfo};
use super::audit::AuditSubject;
use super::signed::FromRealService;
use crate::error::{Error, RequestError};
use crate::oidc::{IdTokenError, Purpose};
use crate::store::UserKey;

/// What an `/erase` must still do with its accepted ID token: spend it, once.
#[derive(Debug, Clone, Copy)]
pub struct SingleUse {
    fingerprint: u64,
    usable_until: u64,
}

/// Checks the request's ID token where `namespace` requires one (nothing to check
/// otherwise). For an erasure, the answer is the token still to be spent with
/// [`spend`] once every other check passed.
///
/// # Errors
///
/// A refused token: 401 with its `id_token_…` code, or 429 `id_token_failures` once the
/// credential has sent too many refused tokens (see
/// [`crate::limits::Limiter::id_token_refused`]).
pub async fn check(
    app: &App,
    info: &RequestInfo,
    from: &FromRealService,
    (user_id, user): (&str, &UserKey),
    token: Option<&str>,
    purpose: Purpose<'_>,
) -> Result<Option<SingleUse>, Error> {
    let Some(oidc) = app.tenants().namespaces.get(from.principal.namespace()).and_then(|ns| ns.oidc.clone()) else {
        return Ok(None);
    };
    match crate::oidc::verify(&oidc, token, user_id, purpose).await {
        Ok(accepted) => Ok(match (purpose, token) {
            (Purpose::Erase { .. }, Some(token)) => Some(SingleUse {
                fingerprint: crate::crypto::id_token_fingerprint(token),
                usable_until: accepted.usable_until,
            }),
            _ => None,
        }),
        Err(refused) => Err(refuse(app, info, from, user, event(purpose), refused)),
    }
}

/// Spends an erasure's ID token: accepted once across restarts and every node.
///
/// # Errors
///
/// `id_token_replayed` when it was spent before; the store's failure.
pub async fn spend(
    app: &App,
    info: &RequestInfo,
    from: &FromRealService,
    user: &UserKey,
    token: SingleUse,
) -> Result<(), Error> {
    if app.inner.escrow.spend_once(token.fingerprint, token.usable_until).await? {
        Ok(())
    } else {
        Err(refuse(app, info, from, user, "erase", IdTokenError::Replayed))
    }
}

fn event(purpose: Purpose<'_>) -> &'static str {
    match purpose {
        Purpose::Connect { .. } => "connect",
        Purpose::Erase { .. } => "erase",
    }
}

/// Counts, audits and answers a refused ID token. The first refusal of a client network,
/// event and reason in a minute gets an audit line naming the namespace and user; the
/// rest of that minute share one summary line, as every refusal flood does.
fn refuse(
    app: &App,
    info: &RequestInfo,
    from: &FromRealService,
    user: &UserKey,
    event: &'static str,
    refused: IdTokenError,
) -> Error {
    let code = refused.code();
    app.inner.metrics.auth_failure(code);
    let client = app.client_key(info.client);
    let answer =
        match app.inner.limiter.id_token_refused(from.principal.namespace(), from.principal.credential(), client) {
            Ok(()) => RequestError::IdToken(refused).into(),
            // Counted in the rate-limited metric where every limit's refusal is.
            Err(over) => Error::Limit(over),
        };
    if app.inner.denials.admit((app.inner.limiter.network_of(info.client), event, code)) {
        tracing::warn!(request_id = %info.id, namespace = %from.principal.namespace(), reason = code, "{event} refused: ID token");
        let subject =
            AuditSubject { namespace: Some(from.principal.namespace()), user: Some(user), reason: Some(code) };
        // Best effort: the request is refused whether or not this is written.
        let _ = app.audit(info, event, "denied", subject);
    }
    answer
}
