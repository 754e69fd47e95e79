//! The chain: how a line is hashed and written, where the head and the rotated files
//! are kept, and reading the end of a log back.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// The head file beside a log: the last line known synced, so that lines cut off the
/// end can be told from lines never written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Head {
    pub(super) seq: u64,
    pub(super) hash: String,
}

/// Where the head of the log at `path` is kept.
pub fn head_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    path.with_file_name(name)
}

/// The name a full log is moved to: its path and the sequence number of the first line
/// of the file that follows it, zero-padded so that names sort in chain order.
pub(super) fn rotated_path(path: &Path, next_seq: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{next_seq:020}"));
    path.with_file_name(name)
}

#[derive(Deserialize)]
pub(super) struct Line<'a> {
    pub(super) seq: u64,
    pub(super) prev: String,
    #[serde(borrow)]
    pub(super) event: &'a RawValue,
    pub(super) hash: String,
}

pub(super) fn chain_hash(seq: u64, prev: &[u8; 32], event: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(seq.to_be_bytes());
    hasher.update(prev);
    hasher.update(event);
    hasher.finalize().into()
}

/// Appends one line of the log to `out`: the event's JSON between its place in the
/// chain and its hash. (In place: this runs for every key read.)
pub(super) fn chain_line(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], event: &[u8], hash: &[u8; 32]) {
    let mut hex = [0u8; 64];
    out.reserve(event.len() + 200);
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.extend_from_slice(b",\"prev\":\"");
    out.extend_from_slice(hex_of(prev, &mut hex).as_bytes());
    out.extend_from_slice(b"\",\"event\":");
    out.extend_from_slice(event);
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hex_of(hash, &mut hex).as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// A user's pseudonym as it stands in an audit line: lower-case hex.
pub fn pseudonym_hex(bytes: &[u8; 32]) -> String {
    let mut hex = [0u8; 64];
    hex_of(bytes, &mut hex).to_owned()
}

/// `bytes` in lower-case hex, written into `out`.
fn hex_of<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    // Both lengths are fixed and match, and hex digits are ASCII.
    hex::encode_to_slice(bytes, out).expect("64 hex digits for 32 bytes");
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// Opens the log for appending (created 0600), locked against a second writer: two
/// processes appending to one chain would break it.
pub(super) fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    if std::fs::metadata(path)?.is_file() {
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|error| {
            if error == rustix::io::Errno::WOULDBLOCK {
                std::io::Error::other("another process is writing this audit log; give each server its own")
            } else {
                std::io::Error::from(error)
            }
        })?;
    }
    Ok(file)
}

/// The last non-empty line of a regular file, read from its end (audit lines are far
/// shorter than the 64 KiB looked at). `None` for an empty file, or for something that
/// is not a regular file (a device such as /dev/null), whose content is no chain.
pub(super) fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    if !std::fs::metadata(path)?.is_file() {
        return Ok(None);
    }
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = String::new();
    file.read_to_string(&mut tail)?;
    Ok(tail.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned))
}

/// The head file at `path`, when there is one and it parses.
pub(super) fn read_head(path: &Path) -> Option<Head> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Where the chain of the log at `path` ended, for a live file that is empty: the later
/// of what the head file records and the last line of the newest file rotated from it
/// (a rotation reaches the head file only at the next sync).
pub(super) fn latest_end(path: &Path) -> std::io::Result<Option<Head>> {
    let head = read_head(&head_path(path));
    let rotated = match newest_rotated(path)? {
        Some(file) => last_line(&file)?
            .and_then(|line| serde_json::from_str::<Line<'_>>(&line).ok().map(|l| Head { seq: l.seq, hash: l.hash })),
        None => None,
    };
    Ok(match (head, rotated) {
        (Some(head), Some(rotated)) => Some(if rotated.seq > head.seq { rotated } else { head }),
        (head, rotated) => head.or(rotated),
    })
}

/// The newest file [`rotated_path`] made from the log at `path`, if any.
fn newest_rotated(path: &Path) -> std::io::Result<Option<PathBuf>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(None) };
    let dir = crate::files::dir_of(path);
    let prefix = format!("{name}.");
    let mut newest: Option<String> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry_name = entry?.file_name();
        let Some(entry_name) = entry_name.to_str() else { continue };
        let Some(seq) = entry_name.strip_prefix(&prefix) else { continue };
        if seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()) && newest.as_deref() < Some(entry_name) {
            newest = Some(entry_name.to_owned());
        }
    }
    Ok(newest.map(|n| dir.join(n)))
}
