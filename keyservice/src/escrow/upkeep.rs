//! What keeps the escrow's store in shape besides requests: readiness, counts, the
//! sweep of expired records, the final flush and the snapshot a backup is made of.

use std::time::Duration;

use super::Escrow;
use crate::crypto::vault::VaultError;
use crate::store::{Counts, SnapshotEntry, StoreError, Swept, UnixTime};

/// How long `/readyz` waits for the master key to answer.
pub const MASTER_KEY_CHECK_DEADLINE: Duration = Duration::from_secs(2);

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

    /// Whether the master key answers: what `/readyz` reports as `masterKey`. A key kept
    /// outside the process (a PKCS#11 token) that does not answer within
    /// `MASTER_KEY_CHECK_DEADLINE` (2 s) counts as unreachable.
    ///
    /// # Errors
    ///
    /// Why it cannot be used.
    pub async fn master_key_health(&self) -> Result<(), VaultError> {
        match tokio::time::timeout(MASTER_KEY_CHECK_DEADLINE, self.vault.master_key_health()).await {
            Ok(result) => result,
            Err(_) => {
                Err(VaultError::MasterKeyUnavailable(format!("it did not answer within {MASTER_KEY_CHECK_DEADLINE:?}")))
            }
        }
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
