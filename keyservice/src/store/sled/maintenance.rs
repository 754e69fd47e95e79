//! The sled store: maintenance (sweep, history purge, counts, snapshot, health, flush).

use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::apply::{expired_records, full};
use super::room::Kind;
use super::{Op, Reply, SledStore, backend, mismatch};
use crate::store::record;
use crate::store::{AccessId, Counts, Maintenance, SnapshotEntry, StoreError, Swept, UnixTime};

#[async_trait]
impl Maintenance for SledStore {
    async fn sweep(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
        forget_nonces_before: UnixTime,
    ) -> Result<Swept, StoreError> {
        // Finding what expired reads whole trees, so it runs on a blocking thread and
        // outside the committer: writes keep flowing while it scans.
        let trees = self.trees.clone();
        let doomed =
            tokio::task::spawn_blocking(move || expired_records(&trees, now, idle_before, forget_nonces_before))
                .await
                .map_err(backend)??;
        if doomed.is_empty() {
            return Ok(Swept::default());
        }
        match self.submit(Op::Remove(doomed)).await? {
            Reply::Removed(swept) => Ok(swept),
            _ => Err(mismatch()),
        }
    }

    async fn purge_accesses(&self, before: AccessId) -> Result<u64, StoreError> {
        // Entries are keyed by user first, so finding the old ones reads the whole tree:
        // on a blocking thread, outside the committer.
        let tree = self.trees.accesses.clone();
        let doomed = tokio::task::spawn_blocking(move || -> Result<Vec<sled::IVec>, StoreError> {
            let mut doomed = Vec::new();
            for key in tree.iter().keys() {
                let key = key.map_err(backend)?;
                if record::access_id_of_key(&key)? < before {
                    doomed.push(key);
                }
            }
            Ok(doomed)
        })
        .await
        .map_err(backend)??;
        if doomed.is_empty() {
            return Ok(0);
        }
        match self.submit(Op::PurgeAccesses(doomed)).await? {
            Reply::Count(count) => Ok(count),
            _ => Err(mismatch()),
        }
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        // sled counts by walking each tree; on a blocking thread, like the sweep.
        let trees = self.trees.clone();
        tokio::task::spawn_blocking(move || Counts {
            pending_inits: trees.inits.len() as u64,
            sessions: trees.sessions.len() as u64,
            key_versions: trees.keys.len() as u64,
        })
        .await
        .map_err(backend)
    }

    async fn snapshot(&self) -> Result<Vec<SnapshotEntry>, StoreError> {
        // The committer is the only writer, so a snapshot taken on its thread sees every
        // write whole or not at all.
        match self.submit(Op::Snapshot).await? {
            Reply::Snapshot(entries) => Ok(entries),
            _ => Err(mismatch()),
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        if self.stalled.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is not finishing writes".into()));
        }
        match self.room.budget().spend(0, Kind::Growth) {
            Ok(()) => Ok(()),
            Err(no_room) => Err(full(no_room)),
        }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.submit(Op::Flush).await.map(|_| ())
    }
}
