//! Persistence behind one contract, so the HTTP layer never sees a storage engine.
//!
//! [`Store`] is the contract every backend keeps, in three parts by what they hold
//! (`contract.rs`): [`Records`] (the keyring, users' keys, pending inits, sessions, key
//! versions, access histories), [`Coordination`] (the erasure ledger's mark, replay
//! floor and nonces, shared connect budgets) and [`Maintenance`] (sweeps, counts,
//! snapshots, health, flush). Each backend implements the parts in its own files
//! (`records.rs`, `coordination.rs`, `maintenance.rs`): [`MemoryStore`] serves unit
//! tests, [`SledStore`] is the embedded default and [`PostgresStore`] the shared
//! database of several nodes; `tests/store_conformance.rs` runs one suite against every
//! backend.
//!
//! A store holds only what the vault (`crate::crypto::vault`) gives it: identifiers are
//! keyed-hash [`Pseudonym`]s and secrets are sealed envelopes, so nothing a store writes
//! can be listed back to a user or read without the master key. The contract, for every
//! backend:
//! - **Values are opaque.** A backend never interprets a sealed value; it keeps the
//!   bytes exactly.
//! - **Acknowledged means durable.** Every mutating method returns only after its change
//!   would survive a power loss; a backend that cannot promise that fails the call.
//! - **Atomic where it says so.** Redeeming an init, a conditional PUT with its pruning,
//!   and erasing a user are each one all-or-nothing step.
//! - **Delete means delete.** Erased, pruned, expired and revoked records are removed
//!   from the store, not flagged.

pub mod backup;
mod contract;
mod memory;
pub mod postgres;
pub(crate) mod record;
mod sled;

use std::path::Path;

pub use self::contract::{Coordination, Maintenance, Records, Store};
pub use self::memory::MemoryStore;
pub use self::postgres::{PostgresConfig, PostgresStore};
pub use self::sled::{NoRoom, SledStore};

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The sled directory could not be opened.
    #[error("cannot open the store in {dir}: {message}")]
    Sled {
        /// The data directory.
        dir: std::path::PathBuf,
        /// Why, with a hint when another process holds it.
        message: String,
    },
    /// The data disk lacks the room to open the store safely; nothing was changed.
    #[error("cannot open the store in {dir}: {no_room}, then start again")]
    NoRoom {
        /// The data directory.
        dir: std::path::PathBuf,
        /// What was free, and what is needed.
        no_room: NoRoom,
    },
    /// The shared database could not be used.
    #[error(transparent)]
    Postgres(#[from] postgres::OpenError),
}

impl OpenError {
    /// Whether the operator must change something before a restart can work (exit 2).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::Postgres(error) if error.is_configuration())
    }

    /// Whether the data disk is too full to open the store (exit 3: a restart cannot
    /// work until space is freed, and must not be tried in a loop).
    pub fn is_no_room(&self) -> bool {
        matches!(self, Self::NoRoom { .. })
    }
}

/// Where a server keeps its records.
#[derive(Debug, Clone)]
pub enum Storage {
    /// sled, in `data_dir`: one node.
    Sled,
    /// A PostgreSQL (or compatible) database that several nodes share.
    Postgres(PostgresConfig),
}

/// Opens the store `storage` names: sled in `data_dir`, or the shared database, where
/// this node is `node_id`.
///
/// # Errors
///
/// [`OpenError`] when it cannot be opened.
pub async fn open(storage: &Storage, data_dir: &Path, node_id: &str) -> Result<std::sync::Arc<dyn Store>, OpenError> {
    match storage {
        Storage::Sled => {
            let store = SledStore::open(data_dir).map_err(|e| {
                if let StoreError::Full(source) = &e
                    && let Some(no_room) = source.downcast_ref::<NoRoom>()
                {
                    return OpenError::NoRoom { dir: data_dir.to_path_buf(), no_room: *no_room };
                }
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                let held = cause.contains("lock");
                OpenError::Sled {
                    dir: data_dir.to_path_buf(),
                    message: format!(
                        "{e}{cause}{}",
                        if held { " (another keyservice process is using this data directory)" } else { "" }
                    ),
                }
            })?;
            Ok(std::sync::Arc::new(store))
        }
        Storage::Postgres(database) => Ok(std::sync::Arc::new(PostgresStore::open(database, node_id).await?)),
    }
}

/// [`open`] for a serving node: with a shared database it also claims the node's
/// `node_id` ([`PostgresStore::claim_node_id`]), held while the returned claim lives, so
/// that two live nodes never run under one id. Operator commands use [`open`].
///
/// # Errors
///
/// As [`open`]; [`postgres::OpenError::NodeIdTaken`] when another live node has the id.
pub async fn open_serving(
    storage: &Storage,
    data_dir: &Path,
    node_id: &str,
) -> Result<(std::sync::Arc<dyn Store>, Option<postgres::NodeClaim>), OpenError> {
    match storage {
        Storage::Postgres(database) => {
            let store = PostgresStore::open(database, node_id).await?;
            let claim = store.claim_node_id().await?;
            Ok((std::sync::Arc::new(store), Some(claim)))
        }
        Storage::Sled => Ok((open(storage, data_dir, node_id).await?, None)),
    }
}

/// A keyed hash (HMAC-SHA-256 under the store's index key) standing in for an
/// identifier: a namespace, a user, an init token or a session token.
pub type Pseudonym = [u8; 32];
pub use crate::time::UnixTime;

/// Whose key: the pseudonyms of a namespace and of a user within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    /// The namespace's pseudonym: selects the key-encryption key.
    pub namespace: Pseudonym,
    /// The user's pseudonym (derived from namespace and user id together).
    pub user: Pseudonym,
}

/// A pending init token, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitRecord {
    /// The sealed token.
    pub sealed: Vec<u8>,
    /// After this instant it cannot be redeemed.
    pub expires_at: UnixTime,
}

/// A device's session, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The only user whose key this session reaches.
    pub user: UserKey,
    /// The sealed signing secret (the device's init token).
    pub sealed: Vec<u8>,
    /// The sealed key id of the namespace credential that connected it; `None` for
    /// sessions made before it was recorded. Kept apart from `sealed` so that a binary
    /// from before it can still open the session (a rolling upgrade mixes both).
    pub credential: Option<Vec<u8>>,
    /// After this instant the session is refused.
    pub expires_at: UnixTime,
    /// When the session was last used, to the granularity the server touches it at;
    /// a session idle for longer than the configured limit is refused.
    pub last_used: UnixTime,
}

/// One stored version of a user's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// 1 for the first version of a user's key, then 2, 3, …
    pub version: u64,
    /// When it was written.
    pub created_at: UnixTime,
    /// The sealed content type and key bytes.
    pub sealed: Vec<u8>,
}

/// A version of a user's key and the user's wrapped DEK, as read together
/// ([`Records::key_with_dek`]); either may be absent.
pub type KeyWithDek = (Option<KeyRecord>, Option<Vec<u8>>);

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
    /// The user's DEK is no longer the one the version would be sealed under (their keys
    /// were deleted or erased meanwhile); nothing was written. Sealing under a fresh DEK
    /// and trying again is safe.
    DekChanged,
    /// The session the write was made in no longer exists (the user was erased, or the
    /// session revoked, meanwhile); nothing was written.
    SessionGone,
}

/// Who writes a key version: what must still hold, checked in the same atomic step as
/// the write, for it to be made.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The wrapped DEK the version is sealed under: it must still be the user's.
    pub dek: &'a [u8],
    /// The session the write is made in, which must still exist: a write racing the
    /// user's erasure is then either erased with the rest or not made. `None` for the
    /// operator's writes, made in no session.
    pub session: Option<&'a Pseudonym>,
}

/// What redeeming an init token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeemed {
    /// The token was consumed and the session stored.
    Session,
    /// No pending init has this id (never made, already redeemed, or swept).
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

/// How many records a store holds, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pending init tokens.
    pub pending_inits: u64,
    /// Sessions.
    pub sessions: u64,
    /// Key versions.
    pub key_versions: u64,
}

/// What erasing a user removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// Key versions deleted.
    pub versions: u64,
    /// Sessions revoked.
    pub sessions: u64,
    /// Entries of the user's access history deleted.
    pub accesses: u64,
}

/// Orders a user's access history: when (microseconds since the epoch, big-endian)
/// followed by 8 random bytes, so ids are unique and sort by time.
pub type AccessId = [u8; 16];

/// One entry of a user's access history, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Its place in the history.
    pub id: AccessId,
    /// The sealed entry: which operation, session, address and credential.
    pub sealed: Vec<u8>,
}

/// The first id at or after `micros` (microseconds since the epoch).
pub fn access_id_floor(micros: u64) -> AccessId {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&micros.to_be_bytes());
    id
}

/// A keyring entry: its name and its (wrapped) value.
pub type KeyringEntry = (Vec<u8>, Vec<u8>);

/// One stored entry as a backup carries it: (table, key, value), in the key-value
/// layout of `record` (the sled layout).
pub type SnapshotEntry = (String, Vec<u8>, Vec<u8>);

/// Turns a redeemed pending init into the session to store, inside the redeeming step
/// (called again when a backend retries the step).
pub type MakeSession = Box<dyn Fn(&InitRecord) -> Result<SessionRecord, StoreError> + Send + Sync>;
/// Seals the new key version once its number is known, inside the writing step (called
/// again, with the then-current number, when a backend retries the step).
pub type SealVersion = Box<dyn Fn(u64) -> Result<Vec<u8>, StoreError> + Send + Sync>;

/// A namespace's connect budget, as a shared store counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBudget {
    /// `/connect` calls per calendar minute.
    pub calls_per_minute: u32,
    /// Distinct users per window.
    pub users_per_window: u32,
    /// The window, in seconds; windows start at multiples of it.
    pub window_secs: u64,
}

/// What counting one `/connect` against a shared budget found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCount {
    /// Within budget, and counted.
    Admitted,
    /// Over the calls of this minute; not counted.
    TooManyCalls {
        /// Seconds until the minute ends.
        retry_after: u64,
    },
    /// A new user beyond the window's distinct users; not counted.
    TooManyUsers {
        /// Seconds until the window ends.
        retry_after: u64,
    },
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
    /// Sealing inside a store step failed.
    #[error("sealing a record failed")]
    Seal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An earlier flush failed, so nothing written since can be promised durable; the
    /// store refuses further writes until it is reopened.
    #[error("the store refuses writes after a failed flush")]
    Poisoned,
    /// The write could not be made durable for a reason that passes (the process is out
    /// of file descriptors, say): it is not acknowledged, may or may not land, and a
    /// later write is tried afresh.
    #[error("the store is temporarily unable to make writes durable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database has no space left for the write; nothing was written, and writes
    /// work again once space is freed.
    #[error("the database has no space left for the write")]
    Full(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether the store, not the request, is the problem, and another attempt (later, or
    /// at another node) may succeed: 503, not 500. A poisoned store needs its operator to
    /// restart it, and says so on `/readyz`.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Poisoned)
    }

    /// For [`StoreError::Full`], which disk is full, as metrics name it: `data` for the
    /// embedded store's data directory, `database` for a shared database.
    pub fn full_disk(&self) -> Option<&'static str> {
        let Self::Full(source) = self else { return None };
        let embedded = source.is::<NoRoom>() || source.is::<::sled::Error>() || source.is::<std::io::Error>();
        Some(if embedded { "data" } else { "database" })
    }
}
