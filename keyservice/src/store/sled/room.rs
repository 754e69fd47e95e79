//! Room on the data disk for sled to write and to recover.
//!
//! sled 0.34 does not survive running out of space: a flush that meets `ENOSPC` waits
//! forever for a write that never completes, and an open on a full disk fails half way
//! through its recovery. Worse, an open that fails while writing its snapshot leaves the
//! half-written `snap.*.generating` file behind, and sled reads that file as the newest
//! snapshot at every later open: "Read corrupted data", although every record is intact
//! in the log beside it. So the store:
//! - never opens without [`needed_to_open`] bytes free, and then changes nothing;
//! - removes half-written snapshots before it opens (the complete snapshot they were
//!   to replace is only deleted once they are whole, so nothing is lost with them);
//! - writes nothing in the background (sled's flusher thread is off; the committer
//!   flushes every batch, and page cleaning runs with each write);
//! - refuses a write, before sled sees it, when it would leave the disk with less than
//!   the room to reopen the store, the room that opening leaves taken, and a margin (see
//!   [`Room::budget`]): the store can then never fill its disk past the point where it
//!   could not be opened again, nor past the point where the open after next could not.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// sled's segment size (the default, which the store keeps): the log grows by whole
/// segments, and the tail of the last one is rewritten when a store is opened.
const SEGMENT: u64 = 512 * 1024;

/// Room assumed per write in a batch, beyond its payload: the log entries and the
/// rewritten index nodes it causes.
pub const PER_WRITE: u64 = 512;

/// Room kept beyond [`needed_to_open`] for writes that make the store grow: the
/// database file grows while a batch is flushed (by up to a segment at a time), and a
/// store stopped at its limit, even by SIGKILL, must still have the room to be opened
/// again. [`Kind::Upkeep`] writes may spend it.
const GROWTH_MARGIN: u64 = 2 * SEGMENT;

/// The most an open leaves taken once it is done: the zeroed end of the last segment
/// and the segment its first writes start (the snapshot it writes replaces the old one,
/// so [`needed_to_open`] covers it only while both exist). Kept free beyond
/// [`needed_to_open`] by every write but the replay floor's, so that a store stopped at
/// its limit opens, and then still has the room to be opened once more.
pub const AN_OPEN_TAKES_AT_MOST: u64 = 2 * SEGMENT;

/// What a write is for, which decides how near the room to reopen it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// New records: keys, inits, sessions, history. Refused first.
    Growth,
    /// What keeps the running store safe and its users in control: the ledger mark,
    /// recording a session's use, logouts, deletions, erasures and sweeps. These go on
    /// into [`GROWTH_MARGIN`], as reads and deletions go on into the operator's reserve.
    Upkeep,
    /// The replay floor, which every read needs moved forward every few seconds. It
    /// alone may spend [`AN_OPEN_TAKES_AT_MOST`], so that a store opened at its limit
    /// still serves reads; never the room to open.
    Floor,
}

impl Kind {
    /// Room this kind of write leaves free beyond [`needed_to_open`].
    fn keeps(self) -> u64 {
        match self {
            Kind::Growth => AN_OPEN_TAKES_AT_MOST + GROWTH_MARGIN,
            Kind::Upkeep => AN_OPEN_TAKES_AT_MOST,
            Kind::Floor => 0,
        }
    }
}

/// Bytes that must be free to open a store whose database file is `db_len` bytes and
/// whose largest snapshot is `snapshot_len` bytes, and to take its first writes.
///
/// Opening zeroes the unused tail of the last log segment (up to a segment, which a
/// sparse file must allocate), writes a new snapshot beside the old one before removing
/// it (the page table, which grows with the database: at most `db_len / 64` more than
/// the old one), and the first write after it may start a new segment. Doubled for the
/// margin; measured in `docs/storage.md`.
pub fn needed_to_open(db_len: u64, snapshot_len: u64) -> u64 {
    2 * (2 * SEGMENT + snapshot_len + db_len / 64)
}

/// The data disk has less room than the store needs: nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the data disk has {free} bytes free and the store needs {needed} to go on safely; nothing was written. Free space on that disk"
)]
pub struct NoRoom {
    /// Bytes free on the disk when it was looked at.
    pub free: u64,
    /// Bytes the store needed.
    pub needed: u64,
}

/// What the committer and `/readyz` know of the data disk.
pub struct Room {
    dir: PathBuf,
    /// sled's database file, to read its length.
    db_file: File,
    /// The largest snapshot, as the open left it (sled writes snapshots only when it
    /// opens).
    snapshot_len: u64,
}

impl Room {
    /// The room of the store in `dir`, whose database file is `db_file`.
    pub fn new(dir: &Path, db_file: File) -> std::io::Result<Self> {
        Ok(Self { dir: dir.to_path_buf(), db_file, snapshot_len: largest_snapshot(dir)? })
    }

    /// What a batch of writes may spend: the free space beyond the room to reopen the
    /// store, looked at once per batch. A disk whose free space cannot be read is not
    /// limited here: its writes meet the file system's own answer.
    pub fn budget(&self) -> Budget {
        match crate::disk::free_bytes(&self.dir) {
            Ok(free) => Budget { free, needed: self.needed(), spent: 0, admitted: false },
            Err(_) => Budget { free: u64::MAX, needed: 0, spent: 0, admitted: false },
        }
    }

    /// Whether the disk has less room than the store keeps for growing writes: they are
    /// refused.
    pub fn is_short(&self) -> bool {
        self.budget().spend(0, Kind::Growth).is_err()
    }

    /// The room to reopen the store as it is now.
    fn needed(&self) -> u64 {
        let db_len = self.db_file.metadata().map(|m| m.len()).unwrap_or(0);
        needed_to_open(db_len, self.snapshot_len)
    }
}

/// The room one batch of writes may take.
#[derive(Debug)]
pub struct Budget {
    free: u64,
    needed: u64,
    spent: u64,
    /// Whether any write was admitted.
    admitted: bool,
}

impl Budget {
    /// Takes room for one write of `payload` bytes.
    ///
    /// # Errors
    ///
    /// [`NoRoom`] when it would leave less than the room to reopen the store and what
    /// `kind` keeps above it ([`Kind::keeps`]); nothing is taken then.
    pub fn spend(&mut self, payload: u64, kind: Kind) -> Result<(), NoRoom> {
        let cost = payload.saturating_add(PER_WRITE);
        let needed = self.needed.saturating_add(kind.keeps()).saturating_add(self.spent).saturating_add(cost);
        if self.free < needed {
            return Err(NoRoom { free: self.free, needed });
        }
        self.spent += cost;
        self.admitted = true;
        Ok(())
    }

    /// Whether any write of the batch was admitted (and so needs flushing).
    pub fn admitted_any(&self) -> bool {
        self.admitted
    }
}

/// Checks, before anything is written, that `dir` (or, for a new store, the nearest
/// existing directory above it) has the room to open the store.
///
/// # Errors
///
/// [`NoRoom`] with what was free and what is needed; I/O errors reading the directory.
pub fn check_before_open(dir: &Path) -> Result<Result<(), NoRoom>, std::io::Error> {
    let needed = room_to_open(dir)?;
    let existing = dir.ancestors().find(|d| d.is_dir()).unwrap_or(Path::new("."));
    let free = crate::disk::free_bytes(existing)?;
    Ok(if free < needed { Err(NoRoom { free, needed }) } else { Ok(()) })
}

/// [`needed_to_open`] for the store in `dir`, or for a new one.
pub fn room_to_open(dir: &Path) -> std::io::Result<u64> {
    let db_len = match std::fs::metadata(dir.join("db")) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(error),
    };
    let snapshot_len = if dir.is_dir() { largest_snapshot(dir)? } else { 0 };
    Ok(needed_to_open(db_len, snapshot_len))
}

/// Removes the half-written snapshots an interrupted open left in `dir`, returning
/// their names. sled writes a snapshot as `snap.<lsn>.generating`, syncs it, renames it
/// to `snap.<lsn>` and only then removes the older one; a `.generating` file is
/// therefore never the only copy of anything, but sled would read it as the newest.
pub fn remove_partial_snapshots(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let text = name.to_string_lossy();
        if text.starts_with("snap.") && text.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    Ok(removed)
}

/// The length of the largest complete snapshot in `dir` (0 for none).
fn largest_snapshot(dir: &Path) -> std::io::Result<u64> {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("snap.") {
            largest = largest.max(entry.metadata()?.len());
        }
    }
    Ok(largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_to_open_grows_with_the_database_and_its_snapshot() {
        let empty = needed_to_open(0, 0);
        assert_eq!(empty, 4 * SEGMENT);
        assert!(needed_to_open(64 * 1024 * 1024, 0) > empty);
        assert!(needed_to_open(0, 1024 * 1024) >= empty + 2 * 1024 * 1024);
    }

    #[test]
    fn only_half_written_snapshots_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["snap.00000000000A0000", "snap.00000000000B0000.generating", "db", "conf"] {
            std::fs::write(dir.path().join(name), b"bytes").unwrap();
        }
        let removed = remove_partial_snapshots(dir.path()).unwrap();
        assert_eq!(removed, vec![OsString::from("snap.00000000000B0000.generating")]);
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["conf", "db", "snap.00000000000A0000"]);
    }

    #[test]
    fn a_disk_without_the_room_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("data");
        assert_eq!(check_before_open(&store).unwrap(), Ok(()), "a new store on a disk with room");
        assert!(!store.exists(), "the check creates nothing");
        let room = Room::new(dir.path(), File::open(dir.path()).unwrap()).unwrap();
        assert!(!room.is_short());
        let mut budget = room.budget();
        assert_eq!(budget.spend(100, Kind::Growth), Ok(()));
        let refused = budget.spend(budget.free, Kind::Growth).unwrap_err();
        assert!(refused.needed > refused.free);
        // A refused write takes nothing: a smaller one still fits.
        assert_eq!(budget.spend(100, Kind::Growth), Ok(()));
        // Upkeep goes on into the margin that growth keeps.
        let needed = 9 * GROWTH_MARGIN;
        let mut near =
            Budget { free: needed + AN_OPEN_TAKES_AT_MOST + GROWTH_MARGIN / 2, needed, spent: 0, admitted: false };
        assert!(near.spend(0, Kind::Growth).is_err());
        assert!(!near.admitted_any(), "a refused write needs no flush");
        assert_eq!(near.spend(0, Kind::Upkeep), Ok(()));
        assert!(near.admitted_any());
        assert!(near.spend(GROWTH_MARGIN, Kind::Upkeep).is_err(), "but not into the room an open takes");
        assert_eq!(near.spend(GROWTH_MARGIN, Kind::Floor), Ok(()), "which the replay floor may spend");
        assert!(near.spend(AN_OPEN_TAKES_AT_MOST, Kind::Floor).is_err(), "but never the room to open");
    }

    #[test]
    fn each_kind_of_write_stops_short_of_the_next() {
        assert!(Kind::Growth.keeps() > Kind::Upkeep.keeps());
        assert!(Kind::Upkeep.keeps() > Kind::Floor.keeps());
        assert_eq!(Kind::Floor.keeps(), 0, "the floor may go down to the room to open, not below");
    }
}
