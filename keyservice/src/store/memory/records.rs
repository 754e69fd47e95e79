//! The in-memory store: the records (keyring, user keys, pending inits, sessions, key versions, access history).

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{
    AccessId, AccessRecord, Erased, InitRecord, KeyRecord, KeyringEntry, MakeSession, Precondition, Pseudonym,
    PutOutcome, Records, Redeemed, SealVersion, SessionRecord, StoreError, UnixTime, UserKey, Writer,
};

#[async_trait]
impl Records for MemoryStore {
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

    async fn create_user_dek(
        &self,
        user: &UserKey,
        wrapped: Vec<u8>,
        session: Option<&Pseudonym>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut inner = self.lock();
        if let Some(stored) = inner.deks.get(user) {
            return Ok(Some(stored.clone()));
        }
        if session.is_some_and(|id| !inner.sessions.contains_key(id)) {
            return Ok(None);
        }
        inner.deks.insert(*user, wrapped.clone());
        Ok(Some(wrapped))
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
        writer: Writer<'_>,
        precondition: &Precondition,
        keep: u64,
        created_at: UnixTime,
        seal: SealVersion,
    ) -> Result<PutOutcome, StoreError> {
        let mut inner = self.lock();
        #[cfg(test)]
        if inner.deletions_before_puts > 0 {
            inner.deletions_before_puts -= 1;
            inner.deks.remove(user);
            inner.keys.remove(user);
        }
        if inner.deks.get(user).map(Vec::as_slice) != Some(writer.dek) {
            return Ok(PutOutcome::DekChanged);
        }
        if writer.session.is_some_and(|id| !inner.sessions.contains_key(id)) {
            return Ok(PutOutcome::SessionGone);
        }
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

    async fn delete_pending_init(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        Ok(self.lock().inits.remove(id).is_some())
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
}
