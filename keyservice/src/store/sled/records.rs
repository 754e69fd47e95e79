//! The sled store: the records (keyring, user keys, pending inits, sessions, key versions, access history).

use async_trait::async_trait;

use super::{Op, Reply, SledStore, Which, backend, mismatch};
use crate::store::record;
use crate::store::{
    AccessId, AccessRecord, Erased, InitRecord, KeyRecord, KeyringEntry, MakeSession, Precondition, Pseudonym,
    PutOutcome, Records, Redeemed, SealVersion, SessionRecord, StoreError, UnixTime, UserKey, Writer,
};

#[async_trait]
impl Records for SledStore {
    async fn keyring_get(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees.keyring.get(name).map_err(backend)?.map(|v| v.to_vec()))
    }

    async fn keyring_create(&self, name: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self.submit(Op::KeyringCreate(name.to_vec(), value)).await? {
            Reply::Bytes(stored) => Ok(stored),
            _ => Err(mismatch()),
        }
    }

    async fn keyring_list(&self) -> Result<Vec<KeyringEntry>, StoreError> {
        self.trees.keyring.iter().map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend)).collect()
    }

    async fn keyring_replace(&self, entries: Vec<KeyringEntry>) -> Result<(), StoreError> {
        self.submit(Op::KeyringReplace(entries)).await.map(|_| ())
    }

    async fn user_dek(&self, user: &UserKey) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees.deks.get(record::user_prefix(user)).map_err(backend)?.map(|v| v.to_vec()))
    }

    async fn create_user_dek(
        &self,
        user: &UserKey,
        wrapped: Vec<u8>,
        session: Option<&Pseudonym>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.submit(Op::CreateDek(*user, wrapped, session.copied())).await? {
            Reply::Bytes(stored) => Ok(Some(stored)),
            // The session is gone: nothing was stored.
            Reply::Done => Ok(None),
            _ => Err(mismatch()),
        }
    }

    async fn add_pending_init(&self, id: Pseudonym, init: InitRecord) -> Result<(), StoreError> {
        self.submit(Op::AddInit(id, init)).await.map(|_| ())
    }

    async fn redeem_init(
        &self,
        id: &Pseudonym,
        now: UnixTime,
        session_id: Pseudonym,
        make_session: MakeSession,
    ) -> Result<Redeemed, StoreError> {
        match self.submit(Op::Redeem { id: *id, now, session_id, make: make_session }).await? {
            Reply::Redeemed(redeemed) => Ok(redeemed),
            _ => Err(mismatch()),
        }
    }

    async fn session(&self, id: &Pseudonym) -> Result<Option<SessionRecord>, StoreError> {
        self.trees.sessions.get(id).map_err(backend)?.map(|bytes| record::decode_session(&bytes)).transpose()
    }

    async fn delete_session(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        match self.submit(Op::DeleteSession(*id)).await? {
            Reply::Flag(existed) => Ok(existed),
            _ => Err(mismatch()),
        }
    }

    async fn touch_session(&self, id: &Pseudonym, now: UnixTime) -> Result<(), StoreError> {
        self.submit(Op::TouchSession(*id, now)).await.map(|_| ())
    }

    async fn user_sessions(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.trees.user_sessions.scan_prefix(record::user_prefix(user)) {
            let (key, _) = entry.map_err(backend)?;
            let id = record::session_of_index_key(&key)?;
            // An index entry can outlive its session by a crash between the two deletes.
            if let Some(session) = self.session(&id).await? {
                out.push(session);
            }
        }
        Ok(out)
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
        let op = Op::PutKey {
            user: *user,
            dek: writer.dek.to_vec(),
            session: writer.session.copied(),
            precondition: precondition.clone(),
            keep,
            created_at,
            seal,
        };
        match self.submit(op).await? {
            Reply::Put(outcome) => Ok(outcome),
            _ => Err(mismatch()),
        }
    }

    async fn get_key(&self, user: &UserKey, version: Option<u64>) -> Result<Option<KeyRecord>, StoreError> {
        let found = match version {
            Some(v) => self.trees.keys.get(record::key_version_key(user, v)).map_err(backend)?.map(|bytes| (v, bytes)),
            None => {
                match self.trees.keys.scan_prefix(record::user_prefix(user)).next_back().transpose().map_err(backend)? {
                    Some((key, bytes)) => Some((record::version_of_key(&key)?, bytes)),
                    None => None,
                }
            }
        };
        found.map(|(v, bytes)| record::decode_key(v, &bytes)).transpose()
    }

    async fn list_keys(&self, user: &UserKey) -> Result<Vec<KeyRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.trees.keys.scan_prefix(record::user_prefix(user)) {
            let (key, bytes) = entry.map_err(backend)?;
            out.push(record::decode_key(record::version_of_key(&key)?, &bytes)?);
        }
        Ok(out)
    }

    async fn delete_keys(&self, user: &UserKey) -> Result<u64, StoreError> {
        match self.submit(Op::DeleteKeys(*user)).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(mismatch()),
        }
    }

    async fn erase_user(&self, user: &UserKey) -> Result<Erased, StoreError> {
        match self.submit(Op::Erase(*user)).await? {
            Reply::Erased(erased) => Ok(erased),
            _ => Err(mismatch()),
        }
    }

    async fn delete_pending_init(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        match self.submit(Op::Remove(vec![(Which::Init, sled::IVec::from(&id[..]))])).await? {
            Reply::Removed(swept) => Ok(swept.inits > 0),
            _ => Err(mismatch()),
        }
    }

    async fn append_accesses(&self, entries: Vec<(UserKey, AccessRecord)>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.submit(Op::AppendAccesses(entries)).await.map(|_| ())
    }

    async fn accesses(
        &self,
        user: &UserKey,
        before: Option<AccessId>,
        limit: usize,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let start = record::access_key(user, &[0; 16]);
        let range = match before {
            Some(id) => self.trees.accesses.range(start..record::access_key(user, &id)),
            None => self.trees.accesses.range(start..=record::access_key(user, &[0xff; 16])),
        };
        range
            .rev()
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                record::decode_access(record::access_id_of_key(&key)?, &value)
            })
            .collect()
    }
}
