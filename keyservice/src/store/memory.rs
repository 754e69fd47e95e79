//! An in-memory [`Store`](super::Store) for tests: the same contract as the durable backends, minus
//! the disk. Nothing survives the process, so "durable" holds trivially.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

mod coordination;
mod maintenance;
mod records;

use super::{AccessId, InitRecord, KeyRecord, Pseudonym, SessionRecord, UnixTime, UserKey};

/// A [`Store`](super::Store) held in process memory.
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
    /// Puts before which the user's keys are deleted, as a `DELETE /key` racing each
    /// of them would (tests of a write that keeps losing that race).
    #[cfg(test)]
    deletions_before_puts: usize,
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

    /// Deletes the user's keys and DEK just before each of the next `count` puts, as
    /// a deletion made after the writer read the DEK would.
    #[cfg(test)]
    pub fn delete_before_puts(&self, count: usize) {
        self.lock().deletions_before_puts = count;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method does its checks (and runs its sealing closure) before its first
        // mutation, so a panic cannot leave `Inner` half-updated: a poisoned lock is fine.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
