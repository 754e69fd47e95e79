//! The erasure ledger: an append-only file of every user erased, by pseudonym and time.
//!
//! It lives outside the data directory, so restoring an older backup of the data cannot
//! bring an erased user back: every start re-applies the whole ledger before serving.
//! Each line is JSON, `{"at": <unix seconds>, "namespace": "<hex>", "user": "<hex>"}`,
//! and is fsynced before the erasure is acknowledged. It holds pseudonyms only.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
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

    /// Every erasure recorded, oldest first.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or a line is not a ledger entry.
    pub fn entries(&self) -> Result<Vec<(UserKey, UnixTime)>, LedgerError> {
        let file = File::open(&self.path).map_err(|e| error(&self.path, e))?;
        let mut out = Vec::new();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| error(&self.path, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = || error(&self.path, format!("line {} is not a ledger entry", number + 1));
            let entry: Line = serde_json::from_str(&line).map_err(|_| bad())?;
            let namespace = decode(&entry.namespace).ok_or_else(bad)?;
            let user = decode(&entry.user).ok_or_else(bad)?;
            out.push((UserKey { namespace, user }, entry.at));
        }
        Ok(out)
    }

    /// Appends an erasure and fsyncs it.
    ///
    /// # Errors
    ///
    /// When the line cannot be written and synced; the erasure must then not be
    /// acknowledged.
    pub fn append(&self, user: &UserKey, at: UnixTime) -> Result<(), LedgerError> {
        let line = Line { at, namespace: hex::encode(user.namespace), user: hex::encode(user.user) };
        // A struct of an integer and two strings always serialises.
        let mut text = serde_json::to_string(&line).expect("a ledger line serialises");
        text.push('\n');
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(text.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| error(&self.path, e))
    }
}

fn decode(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn error(path: &Path, reason: impl ToString) -> LedgerError {
    LedgerError { path: path.to_path_buf(), reason: reason.to_string() }
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
        assert_eq!(ledger.entries().unwrap(), vec![(a, 10), (b, 11)]);
        std::fs::write(&path, "not json\n").unwrap();
        assert!(ledger.entries().is_err());
    }
}
