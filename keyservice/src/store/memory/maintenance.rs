//! The in-memory store: maintenance (sweep, history purge, counts, snapshot, health, flush).

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::record;
use crate::store::{AccessId, Counts, Maintenance, SnapshotEntry, StoreError, Swept, UnixTime};

#[async_trait]
impl Maintenance for MemoryStore {
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
