//! The store's contract, in three parts by what they hold: [`Records`], [`Coordination`]
//! and [`Maintenance`]; [`Store`] is all three. Code that needs only one part takes that
//! part (the vault takes `&dyn Records`, replay protection `Arc<dyn Coordination>`).

use async_trait::async_trait;

use super::{
    AccessId, AccessRecord, ConnectCount, Counts, Erased, InitRecord, KeyRecord, KeyWithDek, KeyringEntry, MakeSession,
    Precondition, Pseudonym, PutOutcome, Redeemed, SealVersion, SessionRecord, SharedBudget, SnapshotEntry, StoreError,
    Swept, UnixTime, UserKey, Writer,
};

/// The records: the keyring, users' wrapped keys, pending inits, sessions, key
/// versions and access histories.
///
/// Every method may be called concurrently; see the module docs for the contract.
#[async_trait]
pub trait Records: Send + Sync + 'static {
    /// A keyring entry (a wrapped system or namespace key).
    async fn keyring_get(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a keyring entry unless one exists; returns the entry that is stored.
    async fn keyring_create(&self, name: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError>;

    /// Every keyring entry, as (name, value).
    async fn keyring_list(&self) -> Result<Vec<KeyringEntry>, StoreError>;

    /// Replaces keyring entries (master-key rotation), all in one atomic step.
    async fn keyring_replace(&self, entries: Vec<KeyringEntry>) -> Result<(), StoreError>;

    /// The user's wrapped data-encryption key.
    async fn user_dek(&self, user: &UserKey) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores the user's wrapped DEK unless one exists, and only while `session` (the
    /// session of the write that needs it; none for the operator's) still exists, checked
    /// in the same atomic step: a write racing its user's erasure leaves no DEK behind.
    /// Returns the DEK that is stored; `None` when none is (the session is gone).
    async fn create_user_dek(
        &self,
        user: &UserKey,
        wrapped: Vec<u8>,
        session: Option<&Pseudonym>,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a pending init.
    async fn add_pending_init(&self, id: Pseudonym, init: InitRecord) -> Result<(), StoreError>;

    /// Atomically consumes the pending init `id` and, if it had not expired at `now`,
    /// stores the session `make_session` builds from it under `session_id`. A token is
    /// redeemed at most once, however many calls race for it.
    async fn redeem_init(
        &self,
        id: &Pseudonym,
        now: UnixTime,
        session_id: Pseudonym,
        make_session: MakeSession,
    ) -> Result<Redeemed, StoreError>;

    /// The session stored under `id`, expired or not (the caller decides).
    async fn session(&self, id: &Pseudonym) -> Result<Option<SessionRecord>, StoreError>;

    /// Deletes one session; whether it existed.
    async fn delete_session(&self, id: &Pseudonym) -> Result<bool, StoreError>;

    /// Records that the session was used at `now` (nothing when it no longer exists).
    /// Losing a touch in a crash only makes a session look idle sooner.
    async fn touch_session(&self, id: &Pseudonym, now: UnixTime) -> Result<(), StoreError>;

    /// The user's sessions.
    async fn user_sessions(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError>;

    /// Stores a new version of `user`'s key if `writer.dek` (the wrapped DEK `seal` seals
    /// under) is still the user's stored DEK, `writer.session` (if any) still exists and
    /// `precondition` admits the current latest version, sealed by `seal` once its number
    /// is known, and deletes the oldest versions beyond `keep` (at least 1); checks, write
    /// and pruning are one atomic step, so a version is never stored under a DEK that a
    /// racing deletion removed, nor after the erasure of its user.
    async fn put_key(
        &self,
        user: &UserKey,
        writer: Writer<'_>,
        precondition: &Precondition,
        keep: u64,
        created_at: UnixTime,
        seal: SealVersion,
    ) -> Result<PutOutcome, StoreError>;

    /// The given version of `user`'s key, or the latest when `version` is `None`.
    async fn get_key(&self, user: &UserKey, version: Option<u64>) -> Result<Option<KeyRecord>, StoreError>;

    /// [`Records::get_key`] and [`Records::user_dek`] together, for a store that can
    /// answer both in one look (by default, both asked at once).
    async fn key_with_dek(&self, user: &UserKey, version: Option<u64>) -> Result<KeyWithDek, StoreError> {
        key_and_dek_apart(self, user, version).await
    }

    /// Every stored version of `user`'s key, oldest first.
    async fn list_keys(&self, user: &UserKey) -> Result<Vec<KeyRecord>, StoreError>;

    /// Deletes every version of the user's key and their DEK, in one atomic step; how many
    /// versions there were. Sessions stay.
    async fn delete_keys(&self, user: &UserKey) -> Result<u64, StoreError>;

    /// Deletes every version of the user's key, their DEK and every session of theirs, in
    /// one atomic step.
    async fn erase_user(&self, user: &UserKey) -> Result<Erased, StoreError>;

    /// Deletes one pending init (to make room under a full cap); whether it existed.
    async fn delete_pending_init(&self, id: &Pseudonym) -> Result<bool, StoreError>;

    /// Durably appends entries to users' access histories (ids are unique; an id already
    /// stored is kept as it is).
    async fn append_accesses(&self, entries: Vec<(UserKey, AccessRecord)>) -> Result<(), StoreError>;

    /// Up to `limit` entries of the user's access history with ids below `before` (all,
    /// for `None`), newest first.
    async fn accesses(
        &self,
        user: &UserKey,
        before: Option<AccessId>,
        limit: usize,
    ) -> Result<Vec<AccessRecord>, StoreError>;
}

/// [`Records::key_with_dek`] as its two reads, asked at once.
pub(crate) async fn key_and_dek_apart<R: Records + ?Sized>(
    store: &R,
    user: &UserKey,
    version: Option<u64>,
) -> Result<KeyWithDek, StoreError> {
    let (key, dek) = tokio::join!(store.get_key(user, version), store.user_dek(user));
    Ok((key?, dek?))
}

/// The state that keeps requests and nodes in step: the erasure ledger's mark, the
/// replay floor and remembered nonces, and (on a shared store) connect budgets.
///
/// Every method may be called concurrently; see the module docs for the contract.
#[async_trait]
pub trait Coordination: Send + Sync + 'static {
    /// How much of the erasure ledger this store has had applied, as last recorded by
    /// [`Coordination::set_ledger_mark`]; `None` when never. It travels with the data (and with
    /// its backups), so a restored older copy re-applies only the erasures after it.
    async fn ledger_mark(&self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Durably records how much of the erasure ledger has been applied.
    async fn set_ledger_mark(&self, mark: Vec<u8>) -> Result<(), StoreError>;

    /// The replay floor: no request dated at or before it may be accepted, because one
    /// accepted before a restart could be dated so. 0 when never set.
    async fn replay_floor(&self) -> Result<UnixTime, StoreError>;

    /// Durably sets the replay floor. Lowering it is the caller's decision: it does so
    /// only at a graceful stop, to the latest date it actually accepted.
    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError>;

    /// Durably remembers a nonce (by its 64-bit replay fingerprint) of a request dated
    /// `date`, so a restart (or, on a shared store, another node) cannot accept it again;
    /// `false` when it was already remembered.
    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<bool, StoreError>;

    /// Every remembered nonce dated at or after `since`, as `(fingerprint, date)`.
    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError>;

    /// Whether several nodes share this store. A shared store is the replay memory
    /// itself (every accepted nonce goes through [`Coordination::remember_nonce`]) and counts
    /// connect budgets for all nodes ([`Coordination::count_connect`]).
    fn shared(&self) -> bool {
        false
    }

    /// Counts one `/connect` of `user` against `namespace`'s budget for every node that
    /// shares this store; `None` from a store that one node owns, whose budgets the node
    /// keeps in memory.
    async fn count_connect(
        &self,
        namespace: &Pseudonym,
        user: &Pseudonym,
        now: UnixTime,
        budget: SharedBudget,
    ) -> Result<Option<ConnectCount>, StoreError> {
        let _ = (namespace, user, now, budget);
        Ok(None)
    }
}

/// What keeps a store in shape besides requests: sweeping expired records, purging old
/// history, counting, snapshots for backups, health and the final flush.
///
/// Every method may be called concurrently; see the module docs for the contract.
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Deletes pending inits and sessions expired at `now`, sessions last used before
    /// `idle_before`, and remembered nonces dated before `forget_nonces_before`.
    async fn sweep(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
        forget_nonces_before: UnixTime,
    ) -> Result<Swept, StoreError>;

    /// Deletes every user's access entries with ids below `before`; returns how many.
    async fn purge_accesses(&self, before: AccessId) -> Result<u64, StoreError>;

    /// How many records of each kind are stored (may walk the store: call it rarely).
    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Every stored entry, as one consistent snapshot (no write lands halfway through
    /// it). Sealed values stay sealed.
    async fn snapshot(&self) -> Result<Vec<SnapshotEntry>, StoreError>;

    /// Whether the store can take writes: `Err` once it refuses them for good (a failed
    /// flush), until it is reopened. `/readyz` turns red on it.
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Makes everything written so far durable; for shutdown.
    async fn flush(&self) -> Result<(), StoreError>;
}

/// A whole store: its records, its coordination state and its maintenance. Every
/// backend implements the three parts (in its `records.rs`, `coordination.rs` and
/// `maintenance.rs`).
pub trait Store: Records + Coordination + Maintenance {}

impl<T: Records + Coordination + Maintenance> Store for T {}
