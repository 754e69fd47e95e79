//! Free space on the disks the server writes to: the data directory's, the audit log's
//! and the erasure ledger's.
//!
//! A store that fills its disk completely fails in ways that are hard to recover from
//! (sled stops at its first failed write, and a flush that fails leaves the page cache's
//! state unknown). So the server keeps a reserve: once a disk has less than
//! `min_free_bytes` free, requests that make the store grow (`/init`, `/connect`, `PUT
//! /key`) are refused with `507 insufficient_storage` before anything is written, while
//! reads, deletions, erasures and logouts go on and spend the reserve, along with the
//! audit lines they need. Writes resume by themselves as soon as space is freed.
//!
//! Looking costs a `statvfs` per disk. A disk found at least [`TRUST_HEADROOM`] above
//! its reserve is not looked at again for [`TRUST_FOR`]: no write rate the server
//! reaches spends that much in that time. A disk nearer its reserve, or below it, is
//! looked at on every growing write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::files::dir_of;

/// How long a look that found ample room is trusted, in nanoseconds (100 ms).
const TRUST_FOR: u64 = 100_000_000;

/// Room above the reserve that makes a look trusted for [`TRUST_FOR`] (2.5 GiB/s).
const TRUST_HEADROOM: u64 = 256 * 1024 * 1024;

/// Below this a disk is reported `full` whatever the reserve: the next audit or
/// ledger lines may not fit. (The data disk is also `full` while the store lacks its
/// own room; the store says so itself.)
pub const FULL_BELOW: u64 = 16 * 1024;

/// One disk the server writes to, named for logs and metrics.
struct Disk {
    name: &'static str,
    /// A directory on that disk (the parent of the file, or the data directory).
    dir: PathBuf,
    /// Whether it was below the reserve at the last look, to log changes once.
    low: AtomicBool,
    /// Until when (nanoseconds after the guard's `epoch`) the last look is trusted; 0
    /// for not at all.
    trusted_until: AtomicU64,
}

/// What a look at one disk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskState {
    /// `data`, `audit` or `ledger`.
    pub name: &'static str,
    /// Bytes free for the server's user, if they could be read.
    pub free: Option<u64>,
    /// Whether that is below the reserve.
    pub low: bool,
    /// Whether that is below [`FULL_BELOW`].
    pub full: bool,
}

impl DiskState {
    /// How `/readyz` names it: `full`, `low` (below the reserve) or `ok`.
    pub fn label(&self) -> &'static str {
        if self.full {
            "full"
        } else if self.low {
            "low"
        } else {
            "ok"
        }
    }
}

/// The reserve check for the disks of one server.
pub struct DiskGuard {
    disks: Vec<Disk>,
    reserve: u64,
    epoch: Instant,
}

/// A disk is below its reserve: growing writes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {disk} disk is below its free-space reserve, so this write was refused and nothing changed; it will be accepted again once space is freed"
)]
pub struct InsufficientStorage {
    /// Which disk.
    pub disk: &'static str,
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free on the disks of `data_dir` (none for a store
    /// in a database, which refuses writes itself), `audit_log` and `ledger` (0: no
    /// reserve).
    pub fn new(data_dir: Option<&Path>, audit_log: &Path, ledger: &Path, reserve: u64) -> Self {
        let disk = |name, dir| Disk { name, dir, low: AtomicBool::new(false), trusted_until: AtomicU64::new(0) };
        let mut disks = Vec::with_capacity(3);
        if let Some(data_dir) = data_dir {
            disks.push(disk("data", data_dir.to_path_buf()));
        }
        disks.push(disk("audit", dir_of(audit_log).to_path_buf()));
        disks.push(disk("ledger", dir_of(ledger).to_path_buf()));
        Self { disks, reserve, epoch: Instant::now() }
    }

    /// Looks at every disk now.
    pub fn states(&self) -> Vec<DiskState> {
        let now = self.nanos();
        self.disks.iter().map(|disk| self.look(disk, now)).collect()
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Looks at `disk` at `now` (from [`DiskGuard::nanos`]), logging a crossing of the
    /// reserve, and trusts the look for a while when it found ample room.
    fn look(&self, disk: &Disk, now: u64) -> DiskState {
        let free = free_bytes(&disk.dir).ok();
        let low = free.is_some_and(|free| free < self.reserve);
        let ample = free.is_some_and(|free| free >= self.reserve.saturating_add(TRUST_HEADROOM));
        let trusted_until = if ample { now.saturating_add(TRUST_FOR).max(1) } else { 0 };
        disk.trusted_until.store(trusted_until, Ordering::Relaxed);
        if disk.low.swap(low, Ordering::Relaxed) != low {
            if low {
                tracing::warn!(
                    disk = disk.name,
                    free,
                    reserve = self.reserve,
                    "disk below its free-space reserve; refusing writes that grow the store"
                );
            } else {
                tracing::info!(disk = disk.name, free, "disk above its free-space reserve again; accepting writes");
            }
        }
        DiskState { name: disk.name, free, low, full: free.is_some_and(|free| free < FULL_BELOW) }
    }

    /// Admits a write that makes the store grow.
    ///
    /// # Errors
    ///
    /// [`InsufficientStorage`] naming the first disk below the reserve.
    pub fn admit_growth(&self) -> Result<(), InsufficientStorage> {
        if self.reserve == 0 {
            return Ok(());
        }
        let now = self.nanos();
        for disk in &self.disks {
            if now < disk.trusted_until.load(Ordering::Relaxed) {
                continue;
            }
            if self.look(disk, now).low {
                return Err(InsufficientStorage { disk: disk.name });
            }
        }
        Ok(())
    }
}

/// Bytes available to an unprivileged user on the file system holding `dir`.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes available on the file system holding `dir` (unknown here: never low).
#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_beyond_the_free_space_refuses_growth_and_zero_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let fine = DiskGuard::new(Some(dir.path()), &file, &file, 1);
        assert_eq!(fine.admit_growth(), Ok(()));
        let full = DiskGuard::new(Some(dir.path()), &file, &file, u64::MAX);
        assert_eq!(full.admit_growth(), Err(InsufficientStorage { disk: "data" }));
        assert!(full.states().iter().all(|s| s.low));
        assert_eq!(DiskGuard::new(Some(dir.path()), &file, &file, 0).admit_growth(), Ok(()));
    }

    #[test]
    fn only_a_look_that_found_ample_room_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        let free = free_bytes(dir.path()).unwrap();
        // Just above the reserve: looked at again on every write.
        let near = DiskGuard::new(Some(dir.path()), &file, &file, free.saturating_sub(TRUST_HEADROOM / 2).max(1));
        let _ = near.admit_growth();
        assert!(near.disks.iter().all(|d| d.trusted_until.load(Ordering::Relaxed) == 0));
        let low = DiskGuard::new(Some(dir.path()), &file, &file, u64::MAX);
        assert!(low.admit_growth().is_err());
        assert!(low.disks.iter().all(|d| d.trusted_until.load(Ordering::Relaxed) == 0));
        if free > 2 * TRUST_HEADROOM {
            let ample = DiskGuard::new(Some(dir.path()), &file, &file, 1);
            assert_eq!(ample.admit_growth(), Ok(()));
            let now = ample.nanos();
            for disk in &ample.disks {
                let until = disk.trusted_until.load(Ordering::Relaxed);
                assert!(until > now && until <= now + TRUST_FOR);
            }
            // A trusted look is not repeated, even when the reserve is now crossed.
            ample.disks[0].low.store(true, Ordering::Relaxed);
            assert_eq!(ample.admit_growth(), Ok(()));
            assert!(ample.disks[0].low.load(Ordering::Relaxed));
        }
    }
}
