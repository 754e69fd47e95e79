//! Persistence behind one trait, so the HTTP layer never sees a storage engine.
//!
//! [`Store`] is the contract every backend keeps; [`MemoryStore`] serves unit tests and
//! [`SledStore`] is the embedded default. A PostgreSQL backend fits the same trait (its
//! methods are async for that reason), and `tests/store_conformance.rs` runs one suite
//! against every backend.
//!
//! The contract, for every backend:
//! - **Keys are untrusted.** Namespaces and user ids come from Real Services and are
//!   stored length-prefixed, so no user id can reach into another user's records.
//! - **Values are secret.** Init tokens, session secrets and key bytes are returned in
//!   zeroizing types, and no error carries them.
//! - **Acknowledged means durable.** Every mutating method returns only after its change
//!   would survive a power loss; a backend that cannot promise that fails the call.
//! - **Expired means gone.** Expired pending inits and sessions are never returned, and
//!   [`Store::sweep`] deletes them.

mod memory;
pub(crate) mod record;
mod sled;

use async_trait::async_trait;
use keyservice_client::protocol::Secret;
use zeroize::Zeroizing;

pub use self::memory::MemoryStore;
pub use self::sled::SledStore;

/// SHA-512 of an init token: the index of a pending init.
pub type InitDigest = [u8; 64];
/// SHA-256 of a session token: the index of a session, so the store never holds the
/// token a device signs with.
pub type SessionId = [u8; 32];
/// Seconds since the Unix epoch.
pub type UnixTime = u64;

/// Whose key: a user of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserRef {
    /// The Real Service's namespace.
    pub namespace: String,
    /// The Real Service's user id within it.
    pub user_id: String,
}

/// An init token waiting for a `/connect`.
#[derive(Debug, Clone)]
pub struct PendingInit {
    /// The token itself: it becomes the session's signing secret.
    pub token: Secret,
    /// After this instant the token cannot be redeemed.
    pub expires_at: UnixTime,
}

/// A device's session, made by `/connect`.
#[derive(Debug, Clone)]
pub struct Session {
    /// The only user whose key this session reaches.
    pub user: UserRef,
    /// The init token the device signs with.
    pub secret: Secret,
    /// After this instant the session is refused.
    pub expires_at: UnixTime,
}

/// A key version to store.
pub struct NewKey {
    /// The Content-Type the device sent.
    pub content_type: String,
    /// The opaque key material.
    pub bytes: Zeroizing<Vec<u8>>,
    /// When it was written.
    pub created_at: UnixTime,
}

/// A stored key version.
pub struct KeyVersion {
    /// 1 for the first version of a user's key, then 2, 3, …
    pub version: u64,
    /// The Content-Type it was stored with.
    pub content_type: String,
    /// When it was written.
    pub created_at: UnixTime,
    /// The opaque key material, wiped when dropped.
    pub bytes: Zeroizing<Vec<u8>>,
}

/// The versions an `If-Match` or `If-None-Match` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    /// `*`: any existing version.
    Any,
    /// `"3", "4"`: these versions.
    Versions(Vec<u64>),
}

impl EntityTags {
    fn matches(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Self::Any, Some(_)) => true,
            (Self::Versions(versions), Some(current)) => versions.contains(&current),
        }
    }
}

/// The condition a PUT makes on the current latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// Write only when the latest version is one of these (compare-and-swap).
    IfMatch(EntityTags),
    /// Write only when the latest version is none of these (`*`: only the first write).
    IfNoneMatch(EntityTags),
}

impl Precondition {
    /// Whether a PUT may proceed when `current` is the latest version (`None`: no key).
    pub fn admits(&self, current: Option<u64>) -> bool {
        match self {
            Self::None => true,
            Self::IfMatch(tags) => tags.matches(current),
            Self::IfNoneMatch(tags) => !tags.matches(current),
        }
    }
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored as this version.
    Stored {
        /// The new version number.
        version: u64,
    },
    /// The precondition did not hold; nothing was written.
    PreconditionFailed,
}

/// What redeeming an init token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The token was consumed and the session stored.
    Session,
    /// No pending init has this digest (never made, already redeemed, or swept).
    UnknownInit,
    /// The pending init had expired; it is deleted and no session was made.
    ExpiredInit,
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired pending inits.
    pub inits: u64,
    /// Expired sessions.
    pub sessions: u64,
    /// Remembered nonces older than the replay window.
    pub nonces: u64,
}

/// Why a storage call failed. No variant carries a value that was stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine or the file system failed.
    #[error("the storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored record could not be decoded.
    #[error("a stored {kind} record is corrupt")]
    Corrupt {
        /// Which kind of record.
        kind: &'static str,
    },
    /// An earlier flush failed, so nothing written since can be promised durable; the
    /// store refuses further writes until it is reopened.
    #[error("the store refuses writes after a failed flush")]
    Poisoned,
}

/// Persistence for pending inits, sessions, key versions and replay protection.
///
/// Every method may be called concurrently. See the module docs for the contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a pending init under the SHA-512 of its token.
    async fn add_pending_init(&self, digest: InitDigest, init: PendingInit) -> Result<(), StoreError>;

    /// Atomically consumes the pending init `digest` and, if it had not expired at `now`,
    /// stores a session for `user` whose secret is the init token. A token is redeemed at
    /// most once, however many calls race for it.
    async fn redeem_init(
        &self,
        digest: &InitDigest,
        now: UnixTime,
        session_id: SessionId,
        user: UserRef,
        session_expires_at: UnixTime,
    ) -> Result<Redeemed, StoreError>;

    /// The session stored under `id`, expired or not (the caller decides).
    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Stores a new version of `user`'s key if `precondition` admits the current latest
    /// version; the check and the write are one atomic step.
    async fn put_key(&self, user: &UserRef, key: NewKey, precondition: &Precondition)
    -> Result<PutOutcome, StoreError>;

    /// The given version of `user`'s key, or the latest when `version` is `None`.
    async fn get_key(&self, user: &UserRef, version: Option<u64>) -> Result<Option<KeyVersion>, StoreError>;

    /// Deletes pending inits and sessions expired at `now`, and remembered nonces dated
    /// before `forget_nonces_before`.
    async fn sweep(&self, now: UnixTime, forget_nonces_before: UnixTime) -> Result<Swept, StoreError>;

    /// The replay floor: no request dated at or before it may be accepted, because one
    /// accepted before a restart could be dated so. 0 when never set.
    async fn replay_floor(&self) -> Result<UnixTime, StoreError>;

    /// Durably sets the replay floor. Lowering it is the caller's decision: it does so
    /// only at a graceful stop, to the latest date it actually accepted.
    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError>;

    /// Durably remembers a nonce (by its 64-bit replay fingerprint) of a request dated
    /// `date`, which lies beyond the replay floor, so a restart cannot forget it.
    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<(), StoreError>;

    /// Every remembered nonce dated at or after `since`, as `(fingerprint, date)`.
    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError>;

    /// Makes everything written so far durable; for shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}
