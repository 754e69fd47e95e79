//! The escrow's side of the access history: queueing entries, sealing and writing them
//! in batches, reading them back for their user, and purging them past retention.

use keyservice_client::protocol::wire::AccessHistory;

use super::Escrow;
use crate::access::Entry;
use crate::auth::Device;
use crate::crypto::vault::VaultError;
use crate::error::Error;
use crate::store::{AccessId, AccessRecord, StoreError, UnixTime, UserKey};

/// Access history entries sealed and written together.
pub(super) const ACCESS_CHUNK: usize = 128;

impl Escrow {
    /// Puts an entry on `user`'s access history; it is written within
    /// [`crate::access::FLUSH_INTERVAL`] (by the caller, when the queue is over its bound).
    ///
    /// # Errors
    ///
    /// Only a write the caller had to make because the queue was full; the entries stay
    /// queued then.
    pub async fn record_access(&self, user: UserKey, entry: Entry) -> Result<(), Error> {
        if self.accesses.push(user, entry) {
            self.flush_accesses().await?;
        }
        Ok(())
    }

    /// Seals and writes every queued access entry in one batch. On failure the entries
    /// are queued again, to be written with the next batch.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn flush_accesses(&self) -> Result<(), Error> {
        let _writing = self.writing_accesses.lock().await;
        self.write_queued_accesses().await
    }

    /// [`Escrow::flush_accesses`], with `writing_accesses` held by the caller.
    pub(super) async fn write_queued_accesses(&self) -> Result<(), Error> {
        let mut queued = self.accesses.take();
        // In chunks, each sealed just before it is written: a second's worth of entries
        // sealed and written at once held a worker thread and the store's writer for
        // tens of milliseconds, which every request queued behind them waited out.
        let mut written = 0;
        while written < queued.len() {
            let end = queued.len().min(written + ACCESS_CHUNK);
            let stored = match self.seal_accesses(&queued[written..end]) {
                Ok(sealed) => self.store.append_accesses(sealed).await.map_err(Error::from),
                Err(error) => Err(error),
            };
            if let Err(error) = stored {
                // What was written stays; the rest is queued again.
                let dropped = self.accesses.restore(queued.split_off(written));
                if dropped > 0 {
                    tracing::error!(dropped, "access history entries dropped: the store has refused them for too long");
                }
                return Err(error);
            }
            written = end;
        }
        Ok(())
    }

    fn seal_accesses(&self, queued: &[(UserKey, AccessId, Entry)]) -> Result<Vec<(UserKey, AccessRecord)>, Error> {
        queued
            .iter()
            .map(|(user, id, entry)| {
                let plain =
                    zeroize::Zeroizing::new(serde_json::to_vec(entry).map_err(|e| StoreError::Seal(Box::new(e)))?);
                Ok((*user, AccessRecord { id: *id, sealed: self.vault.seal_access(user, id, &plain)? }))
            })
            .collect()
    }

    /// A page of the device's user's access history, newest first, after writing what
    /// is queued; entries of the device's own session are marked as such.
    ///
    /// # Errors
    ///
    /// Storage failures, or an entry that fails to open.
    pub async fn access_history(
        &self,
        device: &Device,
        before: Option<AccessId>,
        limit: usize,
    ) -> Result<AccessHistory, Error> {
        let (user, current) = (device.user(), &device.session().id);
        self.flush_accesses().await?;
        // One more than asked, to know whether there is a next page.
        let mut records = self.store.accesses(user, before, limit + 1).await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let current = Entry::session_tag(current);
        let mut entries = Vec::with_capacity(records.len());
        for record in &records {
            let plain = self.vault.open_access(user, &record.id, &record.sealed)?;
            let entry: Entry =
                serde_json::from_slice(&plain).map_err(|_| Error::Vault(VaultError::Tampered("access entry")))?;
            entries.push(entry.to_wire(&record.id, &current));
        }
        let next = if more { records.last().map(|r| hex::encode(r.id)) } else { None };
        Ok(AccessHistory { entries, next })
    }

    /// Deletes access entries older than the retention; returns how many.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn purge_accesses(&self, now: UnixTime) -> Result<u64, Error> {
        let cutoff = now.saturating_sub(self.policy.access_history_days.saturating_mul(86_400));
        Ok(self.store.purge_accesses(crate::store::access_id_floor(cutoff.saturating_mul(1_000_000))).await?)
    }
}
