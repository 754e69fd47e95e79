//! What keeps the escrow's store in shape besides requests: readiness, counts, the
//! sweep of expired records, the final flush and the snapshot a backup is made of.

use super::Escrow;
use crate::store::{Counts, SnapshotEntry, StoreError, Swept, UnixTime};

impl Escrow {
    /// Whether the store takes writes and its replay floor can be read: what `/readyz`
    /// reports as `store`.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn health(&self) -> Result<(), StoreError> {
        self.store.health().await?;
        self.store.replay_floor().await.map(|_| ())
    }

    /// How many pending inits, sessions and key versions the store holds.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        self.store.counts().await
    }

    /// Deletes expired inits, sessions expired or idle at `now`, and remembered nonces
    /// dated before `forget_nonces_before`.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn sweep(&self, now: UnixTime, forget_nonces_before: UnixTime) -> Result<Swept, StoreError> {
        self.store.sweep(now, self.idle_before(now), forget_nonces_before).await
    }

    /// Makes every acknowledged write durable; called once no request is served.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.store.flush().await
    }

    /// Every record, as one consistent copy: what a backup holds.
    ///
    /// # Errors
    ///
    /// The store's failure.
    pub async fn snapshot(&self) -> Result<Vec<SnapshotEntry>, StoreError> {
        self.store.snapshot().await
    }
}
