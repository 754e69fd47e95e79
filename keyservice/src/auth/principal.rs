//! Who a request acts for, as authentication found it: a [`Device`] (a session whose
//! signature and nonce checked out) or a [`RealService`] (a namespace credential, from an
//! address the namespace allows). Only this module builds them, so an operation that
//! takes one can only be reached through authentication.

use keyservice_client::protocol::Secret;

use crate::store::{Pseudonym, StoreError, UnixTime, UserKey};

/// A device's session, opened.
#[derive(Clone)]
pub struct Session {
    /// Its pseudonym.
    pub id: Pseudonym,
    /// Whose key it reaches.
    pub user: UserKey,
    /// The namespace credential (key id) that connected it; `None` for sessions made
    /// before credentials were recorded.
    pub credential: Option<String>,
    /// The init token the device signs with.
    pub secret: Secret,
    /// When it ends.
    pub expires_at: UnixTime,
    /// When it was last used (to the touch granularity).
    pub last_used: UnixTime,
}

impl Session {
    /// Whether it may still be used at `now`: before its expiry, and not idle for longer
    /// than `idle_limit` seconds.
    pub fn is_live(&self, now: UnixTime, idle_limit: u64) -> bool {
        is_live(self.expires_at, self.last_used, now, idle_limit)
    }
}

/// Whether a session that ends at `expires_at` and was last used at `last_used` may
/// still be used at `now`, with an idle limit of `idle_limit` seconds.
pub fn is_live(expires_at: UnixTime, last_used: UnixTime, now: UnixTime, idle_limit: u64) -> bool {
    expires_at > now && now.saturating_sub(last_used) <= idle_limit
}

/// A device whose request was signed with its live session's secret, and was no replay.
pub struct Device {
    session: Session,
}

impl Device {
    pub(super) fn new(session: Session) -> Self {
        Self { session }
    }

    /// A device for unit tests of what takes one, without a signed request.
    #[cfg(test)]
    pub(crate) fn for_tests(session: Session) -> Self {
        Self { session }
    }

    /// The session it signed with.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whose key it reaches.
    pub fn user(&self) -> &UserKey {
        &self.session.user
    }
}

/// A Real Service whose request was signed with a credential of `namespace`, from an
/// address that namespace allows, and was no replay.
pub struct RealService {
    namespace: String,
    credential: String,
}

impl RealService {
    pub(super) fn new(namespace: String, credential: String) -> Self {
        Self { namespace, credential }
    }

    /// The credential's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The credential's key id.
    pub fn credential(&self) -> &str {
        &self.credential
    }
}

/// A session as [`Sessions::find`] found it.
pub struct Found {
    /// The session, opened.
    pub session: Session,
    /// Answered from this node's memory of a store other nodes change too: whether the
    /// session still exists, and when it was last used, are asked with
    /// [`Sessions::confirm`] before it is accepted.
    pub unconfirmed: bool,
}

/// Where authentication finds the session a device claims (the escrow).
pub trait Sessions {
    /// Why a session could not be looked up or its use recorded.
    type Error: From<StoreError> + std::fmt::Display;

    /// The session with this token, opened, or `None` when there is none.
    fn find(&self, token: &str) -> impl Future<Output = Result<Option<Found>, Self::Error>> + Send;

    /// For a session found `unconfirmed`: when the store says it was last used, or
    /// `None` when it no longer exists (ended or erased at another node). Asked in the
    /// same moment as the request's nonce, so it costs no extra wait.
    fn confirm(&self, session: &Session) -> impl Future<Output = Result<Option<UnixTime>, Self::Error>> + Send;

    /// Whether the session may still be used at `now`.
    fn is_live(&self, session: &Session, now: UnixTime) -> bool;

    /// Records a use of the session at `now` (as often as the implementation needs).
    fn touch(&self, session: &Session, now: UnixTime) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
