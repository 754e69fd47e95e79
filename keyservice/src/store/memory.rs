//! An in-memory [`Store`] for tests: the same contract as the durable backends, minus
//! the disk. Nothing survives the process, so "durable" holds trivially.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::record;
use super::{
    AccessId, AccessRecord, Counts, Erased, InitRecord, KeyRecord, KeyringEntry, MakeSession, Precondition, Pseudonym,
    PutOutcome, Redeemed, SealVersion, SessionRecord, SnapshotEntry, Store, StoreError, Swept, UnixTime, UserKey,
};

/// A [`Store`] held in process memory.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keyring: BTreeMap<Vec<u8>, Vec<u8>>,
    deks: HashMap<UserKey, Vec<u8>>,
    inits: HashMap<Pseudonym, InitRecord>,
    sessions: HashMap<Pseudonym, SessionRecord>,
    keys: HashMap<UserKey, BTreeMap<u64, KeyRecord>>,
    replay_floor: UnixTime,
    ledger_mark: Option<Vec<u8>>,
    nonces: HashMap<u64, UnixTime>,
    accesses: BTreeMap<(UserKey, AccessId), Vec<u8>>,
    /// Access appends accepted before the rest are refused (tests of partial failure).
    #[cfg(test)]
    appends_left: Option<usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `count` more access appends, then refuses them as unavailable (`None`:
    /// accepts all again).
    #[cfg(test)]
    pub fn refuse_appends_after(&self, count: Option<usize>) {
        self.lock().appends_left = count;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method does its checks (and runs its sealing closure) before its first
        // mutation, so a panic cannot leave `Inner` half-updated: a poisoned lock is fine.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn keyring_get(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().keyring.get(name).cloned())
    }

    async fn keyring_create(&self, name: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(self.lock().keyring.entry(name.to_vec()).or_insert(value).clone())
    }

    async fn keyring_list(&self) -> Result<Vec<KeyringEntry>, StoreError> {
        Ok(self.lock().keyring.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    async fn keyring_replace(&self, entries: Vec<KeyringEntry>) -> Result<(), StoreError> {
        self.lock().keyring.extend(entries);
        Ok(())
    }

    async fn user_dek(&self, user: &UserKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().deks.get(user).cloned())
    }

    async fn create_user_dek(&self, user: &UserKey, wrapped: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(self.lock().deks.entry(*user).or_insert(wrapped).clone())
    }

    async fn add_pending_init(&self, id: Pseudonym, init: InitRecord) -> Result<(), StoreError> {
        self.lock().inits.insert(id, init);
        Ok(())
    }

    async fn redeem_init(
        &self,
        id: &Pseudonym,
        now: UnixTime,
        session_id: Pseudonym,
        make_session: MakeSession,
    ) -> Result<Redeemed, StoreError> {
        let mut inner = self.lock();
        let Some(init) = inner.inits.remove(id) else {
            return Ok(Redeemed::UnknownInit);
        };
        if init.expires_at <= now {
            return Ok(Redeemed::ExpiredInit);
        }
        let session = make_session(&init)?;
        inner.sessions.insert(session_id, session);
        Ok(Redeemed::Session)
    }

    async fn session(&self, id: &Pseudonym) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(id).cloned())
    }

    async fn delete_session(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        Ok(self.lock().sessions.remove(id).is_some())
    }

    async fn touch_session(&self, id: &Pseudonym, now: UnixTime) -> Result<(), StoreError> {
        if let Some(session) = self.lock().sessions.get_mut(id) {
            session.last_used = session.last_used.max(now);
        }
        Ok(())
    }

    async fn user_sessions(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.values().filter(|s| s.user == *user).cloned().collect())
    }

    async fn put_key(
        &self,
        user: &UserKey,
        precondition: &Precondition,
        keep: u64,
        created_at: UnixTime,
        seal: SealVersion,
    ) -> Result<PutOutcome, StoreError> {
        let mut inner = self.lock();
        let versions = inner.keys.entry(*user).or_default();
        let current = versions.keys().next_back().copied();
        if !precondition.admits(current) {
            return Ok(PutOutcome::PreconditionFailed);
        }
        let version = current.unwrap_or(0) + 1;
        let sealed = seal(version)?;
        versions.insert(version, KeyRecord { version, created_at, sealed });
        while versions.len() as u64 > keep.max(1) {
            versions.pop_first();
        }
        Ok(PutOutcome::Stored { version })
    }

    async fn get_key(&self, user: &UserKey, version: Option<u64>) -> Result<Option<KeyRecord>, StoreError> {
        let inner = self.lock();
        let Some(versions) = inner.keys.get(user) else {
            return Ok(None);
        };
        Ok(match version {
            Some(v) => versions.get(&v).cloned(),
            None => versions.values().next_back().cloned(),
        })
    }

    async fn list_keys(&self, user: &UserKey) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self.lock().keys.get(user).map(|v| v.values().cloned().collect()).unwrap_or_default())
    }

    async fn delete_keys(&self, user: &UserKey) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        inner.deks.remove(user);
        Ok(inner.keys.remove(user).map_or(0, |v| v.len() as u64))
    }

    async fn erase_user(&self, user: &UserKey) -> Result<Erased, StoreError> {
        let mut inner = self.lock();
        inner.deks.remove(user);
        let versions = inner.keys.remove(user).map_or(0, |v| v.len() as u64);
        let before = inner.sessions.len();
        inner.sessions.retain(|_, s| s.user != *user);
        let sessions = (before - inner.sessions.len()) as u64;
        let before = inner.accesses.len();
        inner.accesses.retain(|(owner, _), _| owner != user);
        Ok(Erased { versions, sessions, accesses: (before - inner.accesses.len()) as u64 })
    }

    async fn sweep(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
        forget_nonces_before: UnixTime,
    ) -> Result<Swept, StoreError> {
        let mut inner = self.lock();
        let (inits, sessions, nonces) = (inner.inits.len(), inner.sessions.len(), inner.nonces.len());
        inner.inits.retain(|_, init| init.expires_at > now);
        inner.sessions.retain(|_, session| session.expires_at > now && session.last_used >= idle_before);
        inner.nonces.retain(|_, date| *date >= forget_nonces_before);
        Ok(Swept {
            inits: (inits - inner.inits.len()) as u64,
            sessions: (sessions - inner.sessions.len()) as u64,
            nonces: (nonces - inner.nonces.len()) as u64,
        })
    }

    async fn delete_pending_init(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        Ok(self.lock().inits.remove(id).is_some())
    }

    async fn ledger_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().ledger_mark.clone())
    }

    async fn set_ledger_mark(&self, mark: Vec<u8>) -> Result<(), StoreError> {
        self.lock().ledger_mark = Some(mark);
        Ok(())
    }

    async fn replay_floor(&self) -> Result<UnixTime, StoreError> {
        Ok(self.lock().replay_floor)
    }

    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError> {
        self.lock().replay_floor = floor;
        Ok(())
    }

    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<bool, StoreError> {
        Ok(self.lock().nonces.insert(fingerprint, date).is_none())
    }

    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError> {
        let inner = self.lock();
        Ok(inner.nonces.iter().filter(|(_, date)| **date >= since).map(|(f, d)| (*f, *d)).collect())
    }

    async fn append_accesses(&self, entries: Vec<(UserKey, AccessRecord)>) -> Result<(), StoreError> {
        let mut inner = self.lock();
        #[cfg(test)]
        if let Some(left) = &mut inner.appends_left {
            if *left == 0 {
                return Err(StoreError::Unavailable("appends refused for the test".into()));
            }
            *left -= 1;
        }
        for (user, entry) in entries {
            inner.accesses.entry((user, entry.id)).or_insert(entry.sealed);
        }
        Ok(())
    }

    async fn accesses(
        &self,
        user: &UserKey,
        before: Option<AccessId>,
        limit: usize,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let inner = self.lock();
        let end =
            before.map_or(std::ops::Bound::Included((*user, [0xff; 16])), |id| std::ops::Bound::Excluded((*user, id)));
        Ok(inner
            .accesses
            .range((std::ops::Bound::Included((*user, [0; 16])), end))
            .rev()
            .take(limit)
            .map(|((_, id), sealed)| AccessRecord { id: *id, sealed: sealed.clone() })
            .collect())
    }

    async fn purge_accesses(&self, before: AccessId) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let count = inner.accesses.len();
        inner.accesses.retain(|(_, id), _| *id >= before);
        Ok((count - inner.accesses.len()) as u64)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let inner = self.lock();
        Ok(Counts {
            pending_inits: inner.inits.len() as u64,
            sessions: inner.sessions.len() as u64,
            key_versions: inner.keys.values().map(|v| v.len() as u64).sum(),
        })
    }

    async fn snapshot(&self) -> Result<Vec<SnapshotEntry>, StoreError> {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut push = |table: &str, key: Vec<u8>, value: Vec<u8>| out.push((table.to_owned(), key, value));
        for (name, value) in &inner.keyring {
            push("keyring", name.clone(), value.clone());
        }
        for (user, wrapped) in &inner.deks {
            push("dek", record::user_prefix(user).to_vec(), wrapped.clone());
        }
        for (id, init) in &inner.inits {
            push("pending_init", id.to_vec(), record::encode_init(init));
        }
        for (id, session) in &inner.sessions {
            push("session", id.to_vec(), record::encode_session(session));
            push("user_session", record::user_session_key(&session.user, id), Vec::new());
        }
        for (user, versions) in &inner.keys {
            for key in versions.values() {
                push(
                    "key",
                    record::key_version_key(user, key.version),
                    record::encode_key(key.created_at, &key.sealed),
                );
            }
        }
        for (fingerprint, date) in &inner.nonces {
            push("nonce", fingerprint.to_be_bytes().to_vec(), date.to_be_bytes().to_vec());
        }
        for ((user, id), sealed) in &inner.accesses {
            push("access", record::access_key(user, id), record::encode_access(sealed));
        }
        push("meta", b"replay_floor".to_vec(), inner.replay_floor.to_be_bytes().to_vec());
        if let Some(mark) = &inner.ledger_mark {
            push("meta", b"ledger_mark".to_vec(), mark.clone());
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
