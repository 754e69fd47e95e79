//! The erasure ledger: an append-only file of every user erased, by pseudonym and time.
//!
//! It lives outside the data directory, so restoring an older backup of the data cannot
//! bring an erased user back: every start re-applies the ledger before serving.
//!
//! The cost at start is bounded by a [`Mark`] kept in the store itself (and so in its
//! backups): the ledger's length and the hash of its last line when they were last
//! applied. A start reads and re-applies only the lines after the store's mark; a
//! restored older backup carries an older mark and so gets every erasure since it. A
//! mark that does not match the ledger (the ledger was replaced or cut) re-applies
//! everything.
//! Each line is JSON, `{"at": <unix seconds>, "namespace": "<hex>", "user": "<hex>"}`,
//! and is fsynced before the erasure is acknowledged. It holds pseudonyms only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::{UnixTime, UserKey};

/// An open ledger.
pub struct ErasureLedger {
    path: PathBuf,
    file: Mutex<File>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    at: UnixTime,
    namespace: String,
    user: String,
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("erasure ledger {path}: {reason}")]
pub struct LedgerError {
    path: PathBuf,
    reason: String,
    full: bool,
}

impl LedgerError {
    /// Whether the ledger's disk is full.
    pub fn is_disk_full(&self) -> bool {
        self.full
    }
}

impl ErasureLedger {
    /// Opens (or creates, mode 0600) the ledger at `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let mut options = OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| error(path, e))?;
        Ok(Self { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// The erasures after `mark` (all of them when `mark` is `None` or does not match
    /// this ledger), oldest first, and the mark of the ledger's end.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or a line is not a ledger entry.
    pub fn entries_after(&self, mark: Option<&Mark>) -> Result<(Vec<(UserKey, UnixTime)>, Mark), LedgerError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = File::open(&self.path).map_err(|e| error(&self.path, e))?;
        let len = file.metadata().map_err(|e| error(&self.path, e))?.len();
        let start = match mark {
            Some(mark) if mark.offset == 0 => 0,
            Some(mark) if mark.offset <= len => {
                // The last line before the mark must be the one the mark names.
                let back = mark.offset.min(MAX_LINE);
                let mut tail = vec![0; back as usize];
                file.seek(SeekFrom::Start(mark.offset - back)).map_err(|e| error(&self.path, e))?;
                file.read_exact(&mut tail).map_err(|e| error(&self.path, e))?;
                if last_line_hash(&tail) == Some(mark.hash) { mark.offset } else { 0 }
            }
            _ => 0,
        };
        if mark.is_some() && start == 0 && len > 0 {
            tracing::warn!(path = %self.path.display(), "the store's ledger mark does not match the erasure ledger; re-applying all of it");
        }
        file.seek(SeekFrom::Start(start)).map_err(|e| error(&self.path, e))?;
        let mut rest = Vec::new();
        file.read_to_end(&mut rest).map_err(|e| error(&self.path, e))?;
        // Only whole lines count: a line cut short by a crash was never acknowledged.
        let whole = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut out = Vec::new();
        for (number, line) in rest[..whole].split(|&b| b == b'\n').enumerate() {
            let Ok(line) = std::str::from_utf8(line) else {
                return Err(error(&self.path, format!("line {} after the mark is not text", number + 1)));
            };
            if line.trim().is_empty() {
                continue;
            }
            out.push(parse_line(line).ok_or_else(|| {
                error(&self.path, format!("line {} after the mark is not a ledger entry", number + 1))
            })?);
        }
        let end = start + whole as u64;
        let end_mark = if whole > 0 {
            Mark { offset: end, hash: last_line_hash(&rest[..whole]).unwrap_or_default() }
        } else {
            mark.filter(|m| m.offset == start).copied().unwrap_or(Mark { offset: start, hash: [0; 32] })
        };
        Ok((out, end_mark))
    }

    /// Appends an erasure and fsyncs it; answers the mark of the ledger's new end, for
    /// the store to record once the erasure is applied (so that a later start does not
    /// apply it again to what the user stores after it).
    ///
    /// # Errors
    ///
    /// When the line cannot be written and synced; the erasure must then not be
    /// acknowledged.
    pub fn append(&self, user: &UserKey, at: UnixTime) -> Result<Mark, LedgerError> {
        let line = Line { at, namespace: hex::encode(user.namespace), user: hex::encode(user.user) };
        // A struct of an integer and two strings always serialises.
        let mut text = serde_json::to_string(&line).expect("a ledger line serialises");
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = file.metadata().map_err(|e| error(&self.path, e))?.len();
        file.write_all(text.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| {
            // A line half written (the disk filled up) is taken back, so the next one
            // starts on a line of its own.
            let _ = file.set_len(before);
            let full = e.kind() == std::io::ErrorKind::StorageFull;
            LedgerError { full, ..error(&self.path, e) }
        })?;
        use sha2::Digest;
        Ok(Mark { offset: before + text.len() as u64, hash: sha2::Sha256::digest(text.as_bytes()).into() })
    }
}

/// How far a ledger has been applied: its length then, and the hash of its last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Bytes of the ledger applied.
    pub offset: u64,
    /// SHA-256 of the last line applied, newline included.
    pub hash: [u8; 32],
}

impl Mark {
    /// 8 bytes of offset (big-endian) and the hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.offset.to_be_bytes().to_vec();
        out.extend_from_slice(&self.hash);
        out
    }

    /// The inverse of [`Mark::encode`]; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (offset, hash) = bytes.split_at_checked(8)?;
        Some(Self { offset: u64::from_be_bytes(offset.try_into().ok()?), hash: hash.try_into().ok()? })
    }
}

/// Longest ledger line looked back over to check a mark: lines are about 170 bytes.
const MAX_LINE: u64 = 4096;

/// SHA-256 of the last whole line of `bytes` (which end with a newline).
fn last_line_hash(bytes: &[u8]) -> Option<[u8; 32]> {
    use sha2::Digest;
    let body = bytes.strip_suffix(b"\n")?;
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if start == 0 && bytes.len() as u64 >= MAX_LINE {
        return None;
    }
    Some(sha2::Sha256::digest(&bytes[start..]).into())
}

fn parse_line(line: &str) -> Option<(UserKey, UnixTime)> {
    let entry: Line = serde_json::from_str(line).ok()?;
    Some((UserKey { namespace: decode(&entry.namespace)?, user: decode(&entry.user)? }, entry.at))
}

fn decode(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn error(path: &Path, reason: impl ToString) -> LedgerError {
    LedgerError { path: path.to_path_buf(), reason: reason.to_string(), full: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erasures.jsonl");
        let ledger = ErasureLedger::open(&path).unwrap();
        let a = UserKey { namespace: [1; 32], user: [2; 32] };
        let b = UserKey { namespace: [1; 32], user: [3; 32] };
        ledger.append(&a, 10).unwrap();
        ledger.append(&b, 11).unwrap();
        drop(ledger);
        let ledger = ErasureLedger::open(&path).unwrap();
        assert_eq!(ledger.entries_after(None).unwrap().0, vec![(a, 10), (b, 11)]);
        std::fs::write(&path, "not json\n").unwrap();
        assert!(ledger.entries_after(None).is_err());
    }

    #[test]
    fn a_mark_limits_what_is_read_again_unless_it_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erasures.jsonl");
        let ledger = ErasureLedger::open(&path).unwrap();
        let user = |n: u8| UserKey { namespace: [1; 32], user: [n; 32] };
        let (none, empty_mark) = ledger.entries_after(None).unwrap();
        assert!(none.is_empty());
        ledger.append(&user(1), 10).unwrap();
        let appended = ledger.append(&user(2), 11).unwrap();
        let (all, mark) = ledger.entries_after(Some(&empty_mark)).unwrap();
        assert_eq!(all, vec![(user(1), 10), (user(2), 11)]);
        assert_eq!(appended, mark, "an append answers the mark of the end it made");
        ledger.append(&user(3), 12).unwrap();
        let (after, later) = ledger.entries_after(Some(&mark)).unwrap();
        assert_eq!(after, vec![(user(3), 12)], "only what came after the mark");
        assert_eq!(Mark::decode(&later.encode()), Some(later));
        assert_eq!(ledger.entries_after(Some(&later)).unwrap().0, vec![]);
        // A mark from another ledger (or one cut and rewritten) re-applies everything.
        let foreign = Mark { offset: mark.offset, hash: [9; 32] };
        assert_eq!(ledger.entries_after(Some(&foreign)).unwrap().0.len(), 3);
        let beyond = Mark { offset: 1 << 40, hash: mark.hash };
        assert_eq!(ledger.entries_after(Some(&beyond)).unwrap().0.len(), 3);
        // A line cut short by a crash is not an erasure yet.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"at\":13,").unwrap();
        assert_eq!(ledger.entries_after(Some(&later)).unwrap().0, vec![]);
    }
}
