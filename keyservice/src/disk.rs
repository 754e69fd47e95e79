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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// One disk the server writes to, named for logs and metrics.
struct Disk {
    name: &'static str,
    /// A directory on that disk (the parent of the file, or the data directory).
    dir: PathBuf,
    /// Whether it was below the reserve at the last look, to log changes once.
    low: AtomicBool,
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
}

/// The reserve check for the disks of one server.
pub struct DiskGuard {
    disks: Vec<Disk>,
    reserve: u64,
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

fn dir_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl DiskGuard {
    /// A guard keeping `reserve` bytes free on the disks of `data_dir` (none for a store
    /// in a database, which refuses writes itself), `audit_log` and `ledger` (0: no
    /// reserve).
    pub fn new(data_dir: Option<&Path>, audit_log: &Path, ledger: &Path, reserve: u64) -> Self {
        let disk = |name, dir| Disk { name, dir, low: AtomicBool::new(false) };
        let mut disks = Vec::with_capacity(3);
        if let Some(data_dir) = data_dir {
            disks.push(disk("data", data_dir.to_path_buf()));
        }
        disks.push(disk("audit", dir_of(audit_log)));
        disks.push(disk("ledger", dir_of(ledger)));
        Self { disks, reserve }
    }

    /// Looks at every disk now.
    pub fn states(&self) -> Vec<DiskState> {
        self.disks
            .iter()
            .map(|disk| {
                let free = free_bytes(&disk.dir).ok();
                let low = free.is_some_and(|free| free < self.reserve);
                if disk.low.swap(low, Ordering::Relaxed) != low {
                    if low {
                        tracing::warn!(
                            disk = disk.name,
                            free,
                            reserve = self.reserve,
                            "disk below its free-space reserve; refusing writes that grow the store"
                        );
                    } else {
                        tracing::info!(
                            disk = disk.name,
                            free,
                            "disk above its free-space reserve again; accepting writes"
                        );
                    }
                }
                DiskState { name: disk.name, free, low }
            })
            .collect()
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
        match self.states().into_iter().find(|state| state.low) {
            Some(state) => Err(InsufficientStorage { disk: state.name }),
            None => Ok(()),
        }
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
}
