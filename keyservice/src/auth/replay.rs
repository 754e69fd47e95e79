//! Replay protection: each (key id, nonce) pair is accepted once within the skew window,
//! including across restarts.
//!
//! **In memory**, a request is remembered by its 64-bit fingerprint
//! ([`crate::crypto::replay_fingerprint`]) in a bucket of its claimed date, 16 seconds a
//! bucket. A request dated `d` can only be accepted while the server clock is within
//! `d ± window`, so its bucket is dropped once the clock passes the bucket's last second
//! plus the retention: the window plus the longest a request may take to arrive and be
//! accepted (header and body timeouts and a margin), so an entry outlives every request
//! it must refuse, however slowly that request is sent. Each entry costs its 8-byte fingerprint plus the hash table's control
//! byte and slack: 10 to 21 bytes, about 16 on average. At 20,000 requests per second
//! and the default 5-minute window that is about 6.3 million entries, ~100 MB; at 1,000
//! per second, ~5 MB. Only requests whose MAC verified are remembered, so nobody without
//! a secret can grow it. The memory is split into shards, each behind its own lock.
//!
//! **Across restarts**, memory is gone, so two durable facts take its place:
//! - the *replay floor*: no request dated at or before it is accepted after a restart.
//!   While running, the server keeps the stored floor at least [`FUTURE_TOLERANCE`] plus
//!   [`RESERVE_AHEAD`] seconds ahead of its clock (one small durable write every
//!   `RESERVE_AHEAD` seconds under traffic), so every request it accepts with a date up
//!   to `now + FUTURE_TOLERANCE` is at or below the floor the next run starts with. The
//!   cost: after a crash, requests dated in those few seconds are refused as
//!   `stale_date`. A graceful stop instead stores the latest date it actually accepted,
//!   so after a clean restart only requests dated in that last second are refused.
//! - *remembered nonces*: the rare request dated further ahead than that (a client clock
//!   running fast) has its fingerprint written durably before it is accepted, and the
//!   next run loads them. A fast clock thus cannot push the floor into the future and
//!   lock everyone out after a restart.
//!
//! **On a store several nodes share** ([`Coordination::shared`](crate::store::Coordination::shared)), the store is the memory: every
//! request that passes this node's own memory is then claimed in the store
//! ([`Coordination::remember_nonce`](crate::store::Coordination::remember_nonce), one insert-if-absent), and refused if another node
//! claimed it first. No floor is needed: nothing lives only in a node. The cost is one
//! committed insert per signed request, and rows for the retention (370 s by default)
//! of every accepted request, swept with the rest.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::{Coordination, StoreError, UnixTime};

/// Requests dated at most this many seconds ahead of the server clock are covered by the
/// replay floor; later-dated ones are remembered one by one.
pub const FUTURE_TOLERANCE: u64 = 2;
/// How far ahead of the clock the stored floor is reserved, in seconds.
pub const RESERVE_AHEAD: u64 = 4;
const BUCKET_SECS: u64 = 16;
const SHARDS: usize = 16;

/// Why a request was refused as a possible replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Dated at or before the floor of a previous run.
    Stale,
    /// The (key id, nonce) pair was already accepted.
    Seen,
}

/// The replay memory of one server process.
pub struct ReplayGuard {
    store: Arc<dyn Coordination>,
    /// How long after its date a request's entry is kept, in seconds: the skew window
    /// plus the longest a request can take to be accepted.
    retention: u64,
    /// Requests dated at or before this were possibly accepted by an earlier run.
    startup_floor: UnixTime,
    /// The floor currently stored; requests dated up to it are covered.
    reserved: AtomicU64,
    /// The latest date accepted under the floor, stored as the floor on a graceful stop.
    latest_accepted: AtomicU64,
    /// Serialises raising the stored floor, so one request does the write and the rest
    /// wait for it instead of each writing.
    raising: tokio::sync::Mutex<()>,
    shards: Box<[Mutex<Shard>]>,
    /// Whether the store is shared by several nodes and so keeps every nonce.
    shared: bool,
}

#[derive(Default)]
struct Shard {
    /// Date bucket → fingerprints of requests dated in it.
    buckets: BTreeMap<u64, HashSet<u64, BuildHasherDefault<FingerprintHasher>>>,
}

impl ReplayGuard {
    /// Loads the previous run's floor and remembered nonces, and reserves a new floor.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be read or written.
    pub async fn open(
        store: Arc<dyn Coordination>,
        window: u64,
        retention: u64,
        now: UnixTime,
    ) -> Result<Self, StoreError> {
        let shared = store.shared();
        let startup_floor = if shared { 0 } else { store.replay_floor().await? };
        let retention = retention.max(window);
        let guard = Self {
            retention,
            startup_floor,
            reserved: AtomicU64::new(startup_floor),
            latest_accepted: AtomicU64::new(startup_floor),
            raising: tokio::sync::Mutex::new(()),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shared,
            store,
        };
        if shared {
            return Ok(guard);
        }
        for (fingerprint, date) in guard.store.remembered_nonces(now.saturating_sub(retention)).await? {
            guard.remember_in_memory(fingerprint, date, now);
        }
        guard.reserve(now).await?;
        Ok(guard)
    }

    /// Accepts the request dated `date` with this fingerprint once; the caller has
    /// already checked the date lies within the window and the MAC verified.
    ///
    /// # Errors
    ///
    /// `Ok(Err(Replay))` for a replay; `Err` when the durable record could not be written
    /// (the request must then fail, since it could be replayed after a restart).
    pub async fn accept(
        &self,
        fingerprint: u64,
        date: UnixTime,
        now: UnixTime,
    ) -> Result<Result<(), Replay>, StoreError> {
        if date <= self.startup_floor {
            return Ok(Err(Replay::Stale));
        }
        if !self.remember_in_memory(fingerprint, date, now) {
            return Ok(Err(Replay::Seen));
        }
        if self.shared || date > now + FUTURE_TOLERANCE {
            if !self.store.remember_nonce(fingerprint, date).await? {
                return Ok(Err(Replay::Seen));
            }
        } else {
            if date > self.reserved.load(Ordering::Acquire) {
                self.reserve(now).await?;
            }
            self.latest_accepted.fetch_max(date, Ordering::AcqRel);
        }
        Ok(Ok(()))
    }

    /// Stores the latest accepted date as the floor, once no more requests will be
    /// accepted: the next run then refuses only what this one could have accepted.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be written; the reserved floor then stays, which is
    /// safe, only more cautious.
    pub async fn close(&self) -> Result<(), StoreError> {
        if self.shared {
            return Ok(());
        }
        let _one_writer = self.raising.lock().await;
        let floor = self.latest_accepted.load(Ordering::Acquire).max(self.startup_floor);
        self.store.set_replay_floor(floor).await?;
        // Nothing may be accepted after this; make sure nothing can be.
        self.reserved.store(floor, Ordering::Release);
        Ok(())
    }

    /// Requests dated at or before this are refused as possibly seen before a restart.
    pub fn startup_floor(&self) -> UnixTime {
        self.startup_floor
    }

    /// Remembered nonces older than this can be deleted from the store.
    pub fn forget_before(&self, now: UnixTime) -> UnixTime {
        now.saturating_sub(self.retention + BUCKET_SECS)
    }

    fn remember_in_memory(&self, fingerprint: u64, date: UnixTime, now: UnixTime) -> bool {
        // Middle bits pick the shard: the table hashes with the low bits and tags with the
        // high ones, so those stay fully random within a shard.
        let shard = &self.shards[(fingerprint >> 32) as usize % SHARDS];
        // A panic while holding the lock cannot leave a shard inconsistent (an insert is
        // all or nothing), so a poisoned lock is still usable.
        let mut shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some((&bucket, _)) = shard.buckets.first_key_value() {
            if (bucket + 1) * BUCKET_SECS + self.retention > now {
                break;
            }
            shard.buckets.pop_first();
        }
        shard.buckets.entry(date / BUCKET_SECS).or_default().insert(fingerprint)
    }

    async fn reserve(&self, now: UnixTime) -> Result<(), StoreError> {
        let _one_writer = self.raising.lock().await;
        let target = now + FUTURE_TOLERANCE + RESERVE_AHEAD;
        if self.reserved.load(Ordering::Acquire) >= now + FUTURE_TOLERANCE {
            return Ok(());
        }
        let target = target.max(self.startup_floor);
        self.store.set_replay_floor(target).await?;
        self.reserved.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Entries held in memory.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.values().map(HashSet::len).sum::<usize>())
            .sum()
    }
}

/// Fingerprints are already uniformly random (truncated SHA-256), so the table can use
/// them as their own hash.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const WINDOW: u64 = 300;
    const NOW: u64 = 1_800_000_000;

    #[tokio::test]
    async fn a_nonce_is_accepted_once() {
        let guard = ReplayGuard::open(Arc::new(MemoryStore::new()), WINDOW, WINDOW, NOW).await.unwrap();
        assert_eq!(guard.accept(7, NOW, NOW).await.unwrap(), Ok(()));
        assert_eq!(guard.accept(7, NOW, NOW + 10).await.unwrap(), Err(Replay::Seen));
        assert_eq!(guard.accept(8, NOW, NOW).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn memory_is_released_after_the_window() {
        let guard = ReplayGuard::open(Arc::new(MemoryStore::new()), WINDOW, WINDOW, NOW).await.unwrap();
        for fp in 0..1000u64 {
            guard.accept(fp << 32 | fp, NOW, NOW).await.unwrap().unwrap();
        }
        assert_eq!(guard.len(), 1000);
        let later = NOW + WINDOW + BUCKET_SECS + 1;
        for shard in 0..SHARDS as u64 {
            guard.accept((shard << 32) | 0xdead_0000, later, later).await.unwrap().unwrap();
        }
        assert_eq!(guard.len(), SHARDS);
    }

    #[tokio::test]
    async fn entries_outlive_the_window_by_the_retention() {
        let retention = WINDOW + 70;
        let guard = ReplayGuard::open(Arc::new(MemoryStore::new()), WINDOW, retention, NOW).await.unwrap();
        guard.accept(7, NOW, NOW).await.unwrap().unwrap();
        // Traffic well past the window, within the retention, must not evict it.
        let late = NOW + WINDOW + BUCKET_SECS + 30;
        for shard in 0..SHARDS as u64 {
            guard.accept((shard << 32) | 0xbeef, late, late).await.unwrap().unwrap();
        }
        assert_eq!(guard.accept(7, NOW, late).await.unwrap(), Err(Replay::Seen));
        assert_eq!(guard.forget_before(late), late - retention - BUCKET_SECS);
    }

    #[tokio::test]
    async fn a_restart_refuses_what_the_last_run_could_have_accepted() {
        let store: Arc<dyn Coordination> = Arc::new(MemoryStore::new());
        let guard = ReplayGuard::open(store.clone(), WINDOW, WINDOW, NOW).await.unwrap();
        guard.accept(1, NOW, NOW).await.unwrap().unwrap();
        guard.accept(2, NOW + 1, NOW).await.unwrap().unwrap();
        // A client clock 4 minutes fast: remembered durably, not folded into the floor.
        guard.accept(3, NOW + 240, NOW).await.unwrap().unwrap();
        drop(guard);

        let restarted = ReplayGuard::open(store, WINDOW, WINDOW, NOW + 5).await.unwrap();
        assert_eq!(restarted.accept(1, NOW, NOW + 5).await.unwrap(), Err(Replay::Stale));
        assert_eq!(restarted.accept(2, NOW + 1, NOW + 5).await.unwrap(), Err(Replay::Stale));
        assert_eq!(restarted.accept(3, NOW + 240, NOW + 5).await.unwrap(), Err(Replay::Seen));
        // The floor stayed near the clock: a fresh request shortly after is fine.
        let after_floor = NOW + FUTURE_TOLERANCE + RESERVE_AHEAD + 1;
        assert_eq!(restarted.accept(4, after_floor, after_floor).await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_graceful_stop_leaves_the_floor_at_the_latest_accepted_date() {
        let store: Arc<dyn Coordination> = Arc::new(MemoryStore::new());
        let guard = ReplayGuard::open(store.clone(), WINDOW, WINDOW, NOW).await.unwrap();
        guard.accept(1, NOW - 3, NOW).await.unwrap().unwrap();
        guard.accept(2, NOW - 1, NOW).await.unwrap().unwrap();
        assert_eq!(store.replay_floor().await.unwrap(), NOW + FUTURE_TOLERANCE + RESERVE_AHEAD);
        guard.close().await.unwrap();
        assert_eq!(store.replay_floor().await.unwrap(), NOW - 1);

        let restarted = ReplayGuard::open(store, WINDOW, WINDOW, NOW + 1).await.unwrap();
        assert_eq!(restarted.accept(2, NOW - 1, NOW + 1).await.unwrap(), Err(Replay::Stale));
        assert_eq!(restarted.accept(5, NOW, NOW + 1).await.unwrap(), Ok(()));
    }
}
