//! The sled store: the coordination state (erasure-ledger mark, replay floor and nonces, connect budgets).

use async_trait::async_trait;

use super::{LEDGER_MARK_KEY, Op, REPLAY_FLOOR_KEY, Reply, SledStore, backend, mismatch};
use crate::store::record::decode_u64;
use crate::store::{Coordination, StoreError, UnixTime};

#[async_trait]
impl Coordination for SledStore {
    async fn ledger_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.trees.meta.get(LEDGER_MARK_KEY).map_err(backend)?.map(|v| v.to_vec()))
    }

    async fn set_ledger_mark(&self, mark: Vec<u8>) -> Result<(), StoreError> {
        self.submit(Op::SetLedgerMark(mark)).await.map(|_| ())
    }

    async fn replay_floor(&self) -> Result<UnixTime, StoreError> {
        match self.trees.meta.get(REPLAY_FLOOR_KEY).map_err(backend)? {
            Some(bytes) => decode_u64(&bytes, "replay floor"),
            None => Ok(0),
        }
    }

    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError> {
        self.submit(Op::SetFloor(floor)).await.map(|_| ())
    }

    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<bool, StoreError> {
        match self.submit(Op::RememberNonce(fingerprint, date)).await? {
            Reply::Flag(fresh) => Ok(fresh),
            _ => Err(mismatch()),
        }
    }

    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.trees.nonces.iter() {
            let (key, value) = entry.map_err(backend)?;
            let date = decode_u64(&value, "nonce")?;
            if date >= since {
                out.push((decode_u64(&key, "nonce")?, date));
            }
        }
        Ok(out)
    }
}
