//! The escrow itself: every operation on inits, sessions and keys, in terms of
//! pseudonyms and sealed records. HTTP handlers call this; it calls the vault to seal
//! and the store to keep.

use std::sync::Arc;

use keyservice_client::protocol::Secret;
use keyservice_client::protocol::wire::{ErasureReceipt, ExportResponse, KeyVersionInfo, SessionInfo};
use zeroize::Zeroizing;

use crate::crypto::master::MasterKey;
use crate::crypto::vault::{Vault, VaultError};
use crate::error::Error;
use crate::ledger::ErasureLedger;
use crate::store::{
    InitRecord, Precondition, PutOutcome, Redeemed, SessionRecord, Store, StoreError, UnixTime, UserKey,
};

/// A device's session, opened.
pub struct Session {
    /// Whose key it reaches.
    pub user: UserKey,
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

/// How the escrow treats what it holds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Versions kept per user; older ones are pruned.
    pub max_key_versions: u64,
    /// Seconds a session may go unused before it is refused.
    pub session_idle_secs: u64,
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
    ledger: ErasureLedger,
    policy: Policy,
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
        let escrow = Self { store, vault, ledger, policy };
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

    /// The store beneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
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

    /// The store's id of the pending init with this SHA-512 digest.
    pub fn init_id(&self, digest: &[u8; 64]) -> crate::store::Pseudonym {
        self.vault.init_id(digest)
    }

    /// Redeems the pending init with this SHA-512 digest for a session of `user`.
    ///
    /// # Errors
    ///
    /// Storage failures, or a pending init that fails to open.
    pub async fn connect(
        &self,
        digest: &[u8; 64],
        user: UserKey,
        session_token: &Secret,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Redeemed, Error> {
        let init_id = self.vault.init_id(digest);
        let session_id = self.vault.session_id(session_token.expose());
        let vault = self.vault.clone();
        let make = Box::new(move |init: &InitRecord| {
            let token = vault.open_init(&init_id, &init.sealed).map_err(seal_error)?;
            let sealed = vault.seal_session(&session_id, &user, &token).map_err(seal_error)?;
            Ok(SessionRecord { user, sealed, expires_at, last_used: now })
        });
        Ok(self.store.redeem_init(&init_id, now, session_id, make).await?)
    }

    /// The session with this token, opened, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// Storage failures, or a session record that fails to open.
    pub async fn session(&self, session_token: &str) -> Result<Option<Session>, Error> {
        let id = self.vault.session_id(session_token);
        let Some(record) = self.store.session(&id).await? else {
            return Ok(None);
        };
        let secret = self.vault.open_session(&id, &record.user, &record.sealed)?;
        Ok(Some(Session { user: record.user, secret, expires_at: record.expires_at, last_used: record.last_used }))
    }

    /// Whether the session may still be used at `now`.
    pub fn is_live(&self, session: &Session, now: UnixTime) -> bool {
        session.is_live(now, self.policy.session_idle_secs)
    }

    /// Records a use of the session at `now`, when the last recorded one is older than
    /// a fraction of the idle limit (so a busy session is written about once a minute,
    /// not on every request).
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn touch(&self, session_token: &str, session: &Session, now: UnixTime) -> Result<(), Error> {
        let granularity = (self.policy.session_idle_secs / 4).clamp(1, 60);
        if now.saturating_sub(session.last_used) >= granularity {
            self.store.touch_session(&self.vault.session_id(session_token), now).await?;
        }
        Ok(())
    }

    /// Sessions last used before this are idle beyond the limit.
    pub fn idle_before(&self, now: UnixTime) -> UnixTime {
        now.saturating_sub(self.policy.session_idle_secs)
    }

    /// Ends the session with this token at once.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn revoke_session(&self, session_token: &str) -> Result<bool, Error> {
        Ok(self.store.delete_session(&self.vault.session_id(session_token)).await?)
    }

    /// Stores a new version of the user's key, pruning beyond the retention limit.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn put_key(
        &self,
        user: &UserKey,
        content_type: String,
        bytes: Zeroizing<Vec<u8>>,
        precondition: &Precondition,
        now: UnixTime,
    ) -> Result<PutOutcome, Error> {
        let dek = self.vault.user_dek(self.store.as_ref(), user, true).await?.ok_or_else(missing_dek)?;
        let sealing_user = *user;
        let seal = Box::new(move |version: u64| {
            Vault::seal_key(&dek, &sealing_user, version, &content_type, &bytes).map_err(seal_error)
        });
        Ok(self.store.put_key(user, precondition, self.policy.max_key_versions, now, seal).await?)
    }

    /// The given version of the user's key (the latest for `None`), opened.
    ///
    /// # Errors
    ///
    /// Storage failures, or a record that fails to open (damaged, or moved under another
    /// user: never returned).
    pub async fn get_key(&self, user: &UserKey, version: Option<u64>) -> Result<Option<Key>, Error> {
        let Some(record) = self.store.get_key(user, version).await? else {
            return Ok(None);
        };
        let dek = self.vault.user_dek(self.store.as_ref(), user, false).await?.ok_or_else(missing_dek)?;
        let (content_type, bytes) = Vault::open_key(&dek, user, record.version, &record.sealed)?;
        Ok(Some(Key { version: record.version, content_type, bytes }))
    }

    /// Deletes every version of the user's key, and their DEK.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn delete_keys(&self, user: &UserKey) -> Result<u64, Error> {
        Ok(self.store.delete_keys(user).await?)
    }

    /// Erases a user: every key version, their DEK and every session, recorded in the
    /// ledger first so that the erasure survives any restore.
    ///
    /// # Errors
    ///
    /// Ledger or storage failures; the erasure is then not acknowledged (and a later
    /// start re-applies it if the ledger line was written).
    pub async fn erase(&self, user: &UserKey, now: UnixTime) -> Result<ErasureReceipt, Error> {
        self.ledger.append(user, now).map_err(|e| {
            if e.is_disk_full() {
                Error::Storage(crate::disk::InsufficientStorage { disk: "ledger" })
            } else {
                Error::Ledger(e.to_string())
            }
        })?;
        let erased = self.store.erase_user(user).await?;
        Ok(ErasureReceipt {
            user_id: hex::encode(user.user),
            erased_at: crate::time::rfc3339(now),
            versions_destroyed: erased.versions,
            sessions_revoked: erased.sessions,
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
            let dek = self.vault.user_dek(self.store.as_ref(), user, false).await?.ok_or_else(missing_dek)?;
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
            .filter(|s| is_live(s.expires_at, s.last_used, now, self.policy.session_idle_secs))
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
fn is_live(expires_at: UnixTime, last_used: UnixTime, now: UnixTime, idle_limit: u64) -> bool {
    expires_at > now && now.saturating_sub(last_used) <= idle_limit
}

fn seal_error(error: VaultError) -> StoreError {
    StoreError::Seal(Box::new(error))
}

/// Key versions exist but their DEK does not: the two are only ever deleted together.
fn missing_dek() -> Error {
    Error::Vault(VaultError::Tampered("user key"))
}
