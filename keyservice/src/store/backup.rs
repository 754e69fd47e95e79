//! The backup file: a store's snapshot, sealed records and all, with an integrity check.
//!
//! ```text
//! "KSBACKUP" ‖ format (1) ‖ entries ‖ count (u64) ‖ SHA-256 of everything before it
//! entry = table name length (u8) ‖ table name ‖ key length (u32) ‖ key ‖ value length (u32) ‖ value
//! ```
//!
//! The file is written beside its destination and renamed into place once complete and
//! fsynced, so a crash never leaves a half-written backup under the final name. It
//! holds what the data directory holds: pseudonyms and sealed envelopes, nothing
//! readable without the master key.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::SnapshotEntry;

const MAGIC: &[u8; 8] = b"KSBACKUP";
const FORMAT: u8 = 1;

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file could not be written or read.
    #[error("backup file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a complete, unaltered keyservice backup.
    #[error("{0} is not a complete keyservice backup (wrong header, truncated, or altered)")]
    Invalid(PathBuf),
}

/// Writes `entries` to `path` atomically; returns how many were written.
///
/// # Errors
///
/// [`BackupError::Io`].
pub fn write(path: &Path, entries: &[SnapshotEntry]) -> Result<u64, BackupError> {
    write_file(path, &encode(entries))?;
    Ok(entries.len() as u64)
}

/// The backup file's bytes for `entries`.
pub fn encode(entries: &[SnapshotEntry]) -> Vec<u8> {
    let mut bytes =
        Vec::with_capacity(64 + entries.iter().map(|(t, k, v)| 9 + t.len() + k.len() + v.len()).sum::<usize>());
    bytes.extend_from_slice(MAGIC);
    bytes.push(FORMAT);
    for (table, key, value) in entries {
        // Table names are short constants; keys and values are bounded far below 4 GiB.
        bytes.push(table.len() as u8);
        bytes.extend_from_slice(table.as_bytes());
        bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bytes.extend_from_slice(value);
    }
    bytes.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// Writes a backup's `bytes` (as [`encode`] made them, perhaps in another process) to
/// `path` atomically: mode 0600, beside it first, fsynced, renamed into place.
///
/// # Errors
///
/// [`BackupError::Io`]; [`BackupError::Invalid`] for bytes that are not a whole backup,
/// which are not written.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    parse(bytes).ok_or_else(|| BackupError::Invalid(path.to_path_buf()))?;
    write_file(path, bytes)
}

/// Writes `bytes` to `path`: beside it first, fsynced, renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    crate::files::write_whole(path, bytes, crate::files::Place::Replace)
        .map_err(|source| BackupError::Io { path: path.to_path_buf(), source })
}

/// Reads and checks a backup file.
///
/// # Errors
///
/// [`BackupError::Io`], or [`BackupError::Invalid`] for anything but a complete,
/// unaltered backup.
pub fn read(path: &Path) -> Result<Vec<SnapshotEntry>, BackupError> {
    let bytes = std::fs::read(path).map_err(|source| BackupError::Io { path: path.to_path_buf(), source })?;
    parse(&bytes).ok_or_else(|| BackupError::Invalid(path.to_path_buf()))
}

pub(crate) fn parse(bytes: &[u8]) -> Option<Vec<SnapshotEntry>> {
    let body_len = bytes.len().checked_sub(32)?;
    let (body, digest) = bytes.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest || !body.starts_with(MAGIC) || body.get(8) != Some(&FORMAT) {
        return None;
    }
    let count_at = body.len().checked_sub(8)?;
    let count = u64::from_be_bytes(body[count_at..].try_into().ok()?);
    let mut rest = body.get(9..count_at)?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let (&name_len, tail) = rest.split_first()?;
        let (name, tail) = tail.split_at_checked(usize::from(name_len))?;
        let (key, tail) = take_u32_prefixed(tail)?;
        let (value, tail) = take_u32_prefixed(tail)?;
        entries.push((String::from_utf8(name.to_vec()).ok()?, key.to_vec(), value.to_vec()));
        rest = tail;
    }
    (entries.len() as u64 == count).then_some(entries)
}

fn take_u32_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, tail) = bytes.split_at_checked(4)?;
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    tail.split_at_checked(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_a_whole_backup_are_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.ks");
        let bytes = encode(&[("key".to_owned(), vec![1; 8], vec![2; 8])]);
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(write_bytes(&path, cut), Err(BackupError::Invalid(_))));
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
        write_bytes(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.ks");
        let entries = vec![
            ("keyring".to_owned(), b"system/index".to_vec(), vec![1; 40]),
            ("key".to_owned(), vec![2; 72], vec![]),
        ];
        assert_eq!(write(&path, &entries).unwrap(), 2);
        assert_eq!(read(&path).unwrap(), entries);

        let good = std::fs::read(&path).unwrap();
        for damage in [good.len() - 1, 20, 9] {
            let mut bad = good.clone();
            bad[damage] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(read(&path), Err(BackupError::Invalid(_))), "byte {damage}");
        }
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(matches!(read(&path), Err(BackupError::Invalid(_))));
    }
}
