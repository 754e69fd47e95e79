//! The escrow itself: every operation on inits, sessions and keys, in terms of
//! pseudonyms and sealed records. HTTP handlers call this; it calls the vault to seal
//! and the store to keep.

use std::sync::Arc;

use keyservice_client::protocol::Secret;
use keyservice_client::protocol::wire::{ErasureReceipt, ExportResponse, KeyVersionInfo, SessionInfo};
use zeroize::Zeroizing;

use self::cache::{Cache, Memo};
use crate::access;
pub use crate::auth::Session;
use crate::auth::{Device, Found, Sessions};
use crate::crypto::master::MasterKey;
use crate::crypto::vault::{IfAbsent, Vault, VaultError};
use crate::error::Error;
use crate::ledger::ErasureLedger;
use crate::store::{InitRecord, Pseudonym, Redeemed, SessionRecord, Store, StoreError, UnixTime, UserKey};
use crate::time::{Clock, SystemClock};

mod cache;
mod history;
mod keys;
mod upkeep;

/// How the escrow treats what it holds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Versions kept per user; older ones are pruned.
    pub max_key_versions: u64,
    /// Seconds a session may go unused before it is refused.
    pub session_idle_secs: u64,
    /// Days an entry of a user's access history is kept.
    pub access_history_days: u64,
    /// Bytes of opened sessions and keys kept in memory (0: none).
    pub cache_bytes: usize,
}

impl From<&crate::config::Config> for Policy {
    fn from(config: &crate::config::Config) -> Self {
        Self {
            max_key_versions: config.max_key_versions,
            session_idle_secs: config.session_idle.as_secs(),
            access_history_days: config.access_history_days,
            cache_bytes: config.cache_bytes,
        }
    }
}

/// A key version, opened.
pub struct Key {
    /// Its number.
    pub version: u64,
    /// Its Content-Type.
    pub content_type: String,
    /// The key material.
    pub bytes: Zeroizing<Vec<u8>>,
}

/// The escrow: a store, the vault that seals for it, and the erasure ledger.
pub struct Escrow {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    /// Shared with the blocking thread that appends to it.
    ledger: Arc<ErasureLedger>,
    policy: Policy,
    accesses: access::Queue,
    /// Held while queued access entries are written, and by an erasure from before it
    /// writes the user's queued entries until it has deleted them: an entry taken from
    /// the queue just before an erasure cannot land after it.
    writing_accesses: tokio::sync::Mutex<()>,
    /// Opened sessions and unwrapped user keys; `None` on a store several nodes share,
    /// where another node's `DELETE /key` or erasure could not reach them.
    cache: Option<Cache>,
    /// On a store several nodes share, opened sessions only: each use is confirmed
    /// against the store in the same moment as its request's nonce
    /// ([`Sessions::confirm`]), so a logout or erasure at another node holds here at once.
    remembered: Option<Memo<Pseudonym, Session>>,
    /// The time of day, for a session's liveness when it is looked up.
    clock: Arc<dyn Clock>,
}

impl Escrow {
    /// Opens the escrow over `store` with `master`, then re-applies every erasure in the
    /// ledger after the store's mark (so a restored older backup, which carries an older
    /// mark, cannot serve an erased user), and moves the mark to the ledger's end.
    ///
    /// # Errors
    ///
    /// [`VaultError::WrongMasterKey`] and storage or ledger failures.
    pub async fn open(
        store: Arc<dyn Store>,
        master: &MasterKey,
        ledger: ErasureLedger,
        policy: Policy,
    ) -> Result<Self, Error> {
        let vault = Arc::new(Vault::open(master, store.as_ref()).await?);
        let accesses = access::Queue::new().map_err(VaultError::from)?;
        let memory = policy.cache_bytes > 0;
        let cache = (!store.shared() && memory).then(|| Cache::new(policy.cache_bytes));
        let remembered = (store.shared() && memory).then(|| Memo::new(policy.cache_bytes / 4));
        let writing_accesses = tokio::sync::Mutex::new(());
        let ledger = Arc::new(ledger);
        let escrow = Self {
            store,
            vault,
            ledger,
            policy,
            accesses,
            writing_accesses,
            cache,
            remembered,
            clock: Arc::new(SystemClock),
        };
        let mark = escrow.store.ledger_mark().await?.and_then(|bytes| crate::ledger::Mark::decode(&bytes));
        let (erasures, end) = escrow.ledger.entries_after(mark.as_ref()).map_err(|e| Error::Ledger(e.to_string()))?;
        let mut reapplied = 0;
        for (user, _) in &erasures {
            let erased = escrow.store.erase_user(user).await?;
            reapplied += u64::from(erased.versions + erased.sessions > 0);
        }
        if reapplied > 0 {
            tracing::warn!(users = reapplied, "re-applied erasures from the ledger to records that had come back");
        }
        if Some(end) != mark {
            escrow.store.set_ledger_mark(end.encode()).await?;
        }
        tracing::debug!(lines = erasures.len(), "erasure ledger applied since the store's mark");
        Ok(escrow)
    }

    /// The escrow reading the time of day from `clock` (the system's by default).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A namespace, pseudonymised.
    pub fn namespace(&self, namespace: &str) -> crate::store::Pseudonym {
        self.vault.namespace(namespace)
    }

    /// The user of a namespace, pseudonymised.
    pub fn user(&self, namespace: &str, user_id: &str) -> UserKey {
        self.vault.user(namespace, user_id)
    }

    /// Stores a pending init token until `expires_at`; returns its id.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn add_init(&self, token: &Secret, expires_at: UnixTime) -> Result<crate::store::Pseudonym, Error> {
        let id = self.vault.init_id(&crate::crypto::init_digest(token));
        let sealed = self.vault.seal_init(&id, token)?;
        self.store.add_pending_init(id, InitRecord { sealed, expires_at }).await?;
        Ok(id)
    }

    /// Deletes the pending init `id` (one evicted to make room for another); whether
    /// it was there.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn forget_init(&self, id: &Pseudonym) -> Result<bool, Error> {
        Ok(self.store.delete_pending_init(id).await?)
    }

    /// The store's id of the pending init with this SHA-512 digest.
    pub fn init_id(&self, digest: &[u8; 64]) -> crate::store::Pseudonym {
        self.vault.init_id(digest)
    }

    /// Redeems the pending init with this SHA-512 digest for a session of `user`.
    ///
    /// # Errors
    ///
    /// Storage failures, or a pending init that fails to open.
    /// `credential` is the namespace key id that made the call, kept with the session.
    pub async fn connect(
        &self,
        digest: &[u8; 64],
        user: UserKey,
        credential: &str,
        session_token: &Secret,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Redeemed, Error> {
        let init_id = self.vault.init_id(digest);
        let session_id = self.vault.session_id(session_token.expose());
        let vault = self.vault.clone();
        let credential = credential.to_owned();
        let make = Box::new(move |init: &InitRecord| {
            let token = vault.open_init(&init_id, &init.sealed).map_err(seal_error)?;
            let sealed = vault.seal_session(&session_id, &user, &token).map_err(seal_error)?;
            let credential = Some(vault.seal_credential(&session_id, &user, &credential).map_err(seal_error)?);
            Ok(SessionRecord { user, sealed, credential, expires_at, last_used: now })
        });
        Ok(self.store.redeem_init(&init_id, now, session_id, make).await?)
    }

    /// The pseudonym of the session with this token.
    pub fn session_id(&self, session_token: &str) -> Pseudonym {
        self.vault.session_id(session_token)
    }

    /// The session with this token, opened, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// Storage failures, or a session record that fails to open.
    pub async fn session(&self, session_token: &str) -> Result<Option<Found>, Error> {
        let id = self.vault.session_id(session_token);
        let epoch = match self.sessions_memo() {
            Some(memo) => match memo.get(&id) {
                (Some(session), _) => return Ok(Some(Found { session, unconfirmed: self.remembered.is_some() })),
                (None, epoch) => Some(epoch),
            },
            None => None,
        };
        let Some(record) = self.store.session(&id).await? else {
            return Ok(None);
        };
        let secret = self.vault.open_session(&id, &record.user, &record.sealed)?;
        let credential = match &record.credential {
            Some(sealed) => Some(self.vault.open_credential(&id, &record.user, sealed)?),
            None => None,
        };
        let session = Session {
            id,
            user: record.user,
            credential,
            secret,
            expires_at: record.expires_at,
            last_used: record.last_used,
        };
        if let (Some(memo), Some(epoch)) = (self.sessions_memo(), epoch) {
            // Only live sessions: one past its time is refused (and forgotten) anyway.
            if self.is_live(&session, self.clock.now()) {
                memo.insert(epoch, id, session.clone());
            }
        }
        Ok(Some(Found { session, unconfirmed: false }))
    }

    /// Where opened sessions are kept, if anywhere.
    fn sessions_memo(&self) -> Option<&Memo<Pseudonym, Session>> {
        self.cache.as_ref().map(|cache| &cache.sessions).or(self.remembered.as_ref())
    }

    /// Forgets `user`'s DEK and latest key, and with `sessions` every session of theirs,
    /// from the cache.
    fn forget(&self, user: &UserKey, sessions: bool) {
        if let Some(cache) = &self.cache {
            cache.latest.forget(user);
            cache.deks.forget(user);
        }
        if let (Some(memo), true) = (self.sessions_memo(), sessions) {
            memo.invalidate(|_, cached| cached.user == *user);
        }
    }

    /// Whether the session may still be used at `now`.
    pub fn is_live(&self, session: &Session, now: UnixTime) -> bool {
        session.is_live(now, self.policy.session_idle_secs)
    }

    /// Sessions last used before this are idle beyond the limit.
    pub fn idle_before(&self, now: UnixTime) -> UnixTime {
        now.saturating_sub(self.policy.session_idle_secs)
    }

    /// Ends the device's session at once.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn revoke_session(&self, device: &Device) -> Result<bool, Error> {
        let id = device.session().id;
        let revoked = self.store.delete_session(&id).await;
        // Also when the store failed: the deletion may have happened.
        if let Some(memo) = self.sessions_memo() {
            memo.forget(&id);
        }
        Ok(revoked?)
    }

    /// Spends a single-use token (by its fingerprint), remembered until `until` (Unix
    /// seconds) by this store, shared by every node: `false` when it was spent before.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn spend_once(&self, fingerprint: u64, until: UnixTime) -> Result<bool, StoreError> {
        self.store.remember_nonce(fingerprint, until).await
    }

    /// Erases a user: every key version, their DEK and every session, recorded in the
    /// ledger first so that the erasure survives any restore.
    ///
    /// # Errors
    ///
    /// Ledger or storage failures; the erasure is then not acknowledged (and a later
    /// start re-applies it if the ledger line was written).
    ///
    /// The user's queued access entries are written first, so the erasure deletes them
    /// too, and any queued while it ran are dropped.
    pub async fn erase(&self, user: &UserKey, now: UnixTime) -> Result<ErasureReceipt, Error> {
        let _writing = self.writing_accesses.lock().await;
        self.write_queued_accesses().await?;
        // The append waits for its fsync: on a blocking thread, not a runtime worker.
        let (ledger, erased_user) = (self.ledger.clone(), *user);
        let appended = tokio::task::spawn_blocking(move || ledger.append(&erased_user, now))
            .await
            .map_err(|e| Error::Ledger(format!("the ledger append did not finish: {e}")))?;
        let mark = appended.map_err(|e| {
            if e.is_disk_full() {
                Error::Storage(crate::disk::InsufficientStorage { disk: "ledger" })
            } else {
                Error::Ledger(e.to_string())
            }
        })?;
        let erased = self.store.erase_user(user).await;
        self.forget(user, true);
        let erased = erased?;
        // Applied: a start must not apply it again, or it would destroy what the user
        // stores after coming back (erasures run one at a time, under the lock above, so
        // every line before this one is applied too).
        self.store.set_ledger_mark(mark.encode()).await?;
        self.accesses.forget(user);
        Ok(ErasureReceipt {
            user_id: hex::encode(user.user),
            erased_at: crate::time::rfc3339(now),
            versions_destroyed: erased.versions,
            sessions_revoked: erased.sessions,
            access_records_destroyed: erased.accesses,
        })
    }

    /// What is held for a user: key versions (sizes, types, dates) and active sessions.
    ///
    /// # Errors
    ///
    /// Storage failures, or a record that fails to open.
    pub async fn export(&self, user: &UserKey, now: UnixTime) -> Result<ExportResponse, Error> {
        let records = self.store.list_keys(user).await?;
        let mut key_versions = Vec::with_capacity(records.len());
        if !records.is_empty() {
            let dek = self.user_dek(user, IfAbsent::None).await?.ok_or_else(keys::missing_dek)?;
            for record in records {
                let (content_type, bytes) = Vault::open_key(&dek, user, record.version, &record.sealed)?;
                key_versions.push(KeyVersionInfo {
                    version: record.version,
                    size: bytes.len() as u64,
                    content_type,
                    created_at: crate::time::rfc3339(record.created_at),
                });
            }
        }
        let mut expiries: Vec<UnixTime> = self
            .store
            .user_sessions(user)
            .await?
            .into_iter()
            .filter(|s| crate::auth::is_live(s.expires_at, s.last_used, now, self.policy.session_idle_secs))
            .map(|s| s.expires_at)
            .collect();
        expiries.sort_unstable();
        let sessions = expiries.into_iter().map(|e| SessionInfo { expires_at: crate::time::rfc3339(e) }).collect();
        Ok(ExportResponse { user_id: hex::encode(user.user), key_versions, sessions })
    }
}

impl Escrow {
    /// Re-wraps the keyring under `new` and seals with it from now on.
    ///
    /// # Errors
    ///
    /// Storage failures, or a keyring entry under neither key.
    pub async fn rotate_master_key(&self, new: &MasterKey) -> Result<crate::crypto::vault::Rotation, Error> {
        Ok(self.vault.rotate(self.store.as_ref(), new).await?)
    }
}

/// Before its expiry, and not idle for longer than `idle_limit` seconds.
/// Authentication finds a device's session here.
impl Sessions for Escrow {
    type Error = Error;

    async fn find(&self, token: &str) -> Result<Option<Found>, Error> {
        self.session(token).await
    }

    async fn confirm(&self, session: &Session) -> Result<Option<UnixTime>, Error> {
        let stored = self.store.session(&session.id).await?;
        if stored.is_none()
            && let Some(memo) = self.sessions_memo()
        {
            memo.forget(&session.id);
        }
        Ok(stored.map(|record| record.last_used))
    }

    fn is_live(&self, session: &Session, now: UnixTime) -> bool {
        Escrow::is_live(self, session, now)
    }

    /// Records the use when the last recorded one is older than a fraction of the idle
    /// limit (so a busy session is written about once a minute, not on every request).
    async fn touch(&self, session: &Session, now: UnixTime) -> Result<(), Error> {
        let granularity = (self.policy.session_idle_secs / 4).clamp(1, 60);
        if now.saturating_sub(session.last_used) >= granularity {
            self.store.touch_session(&session.id, now).await?;
            if let Some(memo) = self.sessions_memo() {
                memo.update(&session.id, |cached| cached.last_used = cached.last_used.max(now));
            }
        }
        Ok(())
    }
}

fn seal_error(error: VaultError) -> StoreError {
    StoreError::Seal(Box::new(error))
}

#[cfg(test)]
mod tests;
