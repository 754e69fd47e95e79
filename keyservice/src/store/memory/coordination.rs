//! The in-memory store: the coordination state (erasure-ledger mark, replay floor and nonces, connect budgets).

use async_trait::async_trait;

use super::MemoryStore;
use crate::store::{Coordination, StoreError, UnixTime};

#[async_trait]
impl Coordination for MemoryStore {
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
}
