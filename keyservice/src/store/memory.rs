//! An in-memory [`Store`] for tests: the same contract as the durable backends, minus
//! the disk. Nothing survives the process, so "durable" holds trivially.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    InitDigest, KeyVersion, NewKey, PendingInit, Precondition, PutOutcome, Redeemed, Session, SessionId, Store,
    StoreError, Swept, UnixTime, UserRef,
};

/// A [`Store`] held in process memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    inits: HashMap<InitDigest, PendingInit>,
    sessions: HashMap<SessionId, Session>,
    /// Each user's versions in order; a version's number is its index + 1.
    keys: HashMap<UserRef, BTreeMap<u64, StoredKey>>,
    replay_floor: UnixTime,
    nonces: HashMap<u64, UnixTime>,
}

struct StoredKey {
    content_type: String,
    created_at: UnixTime,
    bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated (every method
        // does its checks before its first mutation), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn add_pending_init(&self, digest: InitDigest, init: PendingInit) -> Result<(), StoreError> {
        self.lock().inits.insert(digest, init);
        Ok(())
    }

    async fn redeem_init(
        &self,
        digest: &InitDigest,
        now: UnixTime,
        session_id: SessionId,
        user: UserRef,
        session_expires_at: UnixTime,
    ) -> Result<Redeemed, StoreError> {
        let mut inner = self.lock();
        let Some(init) = inner.inits.remove(digest) else {
            return Ok(Redeemed::UnknownInit);
        };
        if init.expires_at <= now {
            return Ok(Redeemed::ExpiredInit);
        }
        let session = Session { user, secret: init.token, expires_at: session_expires_at };
        inner.sessions.insert(session_id, session);
        Ok(Redeemed::Session)
    }

    async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.lock().sessions.get(id).cloned())
    }

    async fn put_key(
        &self,
        user: &UserRef,
        key: NewKey,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let mut inner = self.lock();
        let versions = inner.keys.entry(user.clone()).or_default();
        let current = versions.keys().next_back().copied();
        if !precondition.admits(current) {
            return Ok(PutOutcome::PreconditionFailed);
        }
        let version = current.unwrap_or(0) + 1;
        versions.insert(
            version,
            StoredKey { content_type: key.content_type, created_at: key.created_at, bytes: key.bytes },
        );
        Ok(PutOutcome::Stored { version })
    }

    async fn get_key(&self, user: &UserRef, version: Option<u64>) -> Result<Option<KeyVersion>, StoreError> {
        let inner = self.lock();
        let Some(versions) = inner.keys.get(user) else {
            return Ok(None);
        };
        let found = match version {
            Some(v) => versions.get_key_value(&v),
            None => versions.iter().next_back(),
        };
        Ok(found.map(|(&version, stored)| KeyVersion {
            version,
            content_type: stored.content_type.clone(),
            created_at: stored.created_at,
            bytes: stored.bytes.clone(),
        }))
    }

    async fn sweep(&self, now: UnixTime, forget_nonces_before: UnixTime) -> Result<Swept, StoreError> {
        let mut inner = self.lock();
        let (inits, sessions, nonces) = (inner.inits.len(), inner.sessions.len(), inner.nonces.len());
        inner.inits.retain(|_, init| init.expires_at > now);
        inner.sessions.retain(|_, session| session.expires_at > now);
        inner.nonces.retain(|_, date| *date >= forget_nonces_before);
        Ok(Swept {
            inits: (inits - inner.inits.len()) as u64,
            sessions: (sessions - inner.sessions.len()) as u64,
            nonces: (nonces - inner.nonces.len()) as u64,
        })
    }

    async fn replay_floor(&self) -> Result<UnixTime, StoreError> {
        Ok(self.lock().replay_floor)
    }

    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError> {
        self.lock().replay_floor = floor;
        Ok(())
    }

    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<(), StoreError> {
        self.lock().nonces.insert(fingerprint, date);
        Ok(())
    }

    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError> {
        let inner = self.lock();
        Ok(inner.nonces.iter().filter(|(_, date)| **date >= since).map(|(f, d)| (*f, *d)).collect())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
