//! The audit trail: one JSON line per security event, each chained to the one before.
//!
//! ```text
//! {"seq":7,"prev":"<hex SHA-256 of line 6's hash>","event":{…},"hash":"<hex>"}
//! hash = SHA-256(seq as u64 big-endian ‖ prev (32 bytes) ‖ the event's JSON, exactly as written)
//! ```
//!
//! Changing, removing, inserting or reordering a line breaks the chain at that line,
//! which `keyservice audit verify FILE...` reports. The log rotates by size into
//! `<log>.<next seq>` files and the chain runs on through them; a head file
//! (`<log>.head`) records the last synced line, so lines cut off the end are found too.
//! (Whoever can rewrite the whole file and its head can also recompute the chain; ship
//! the log to another host to guard against that.) Repeated refusals of one client
//! network share a line per minute ([`DenialDigest`]). Events
//! carry the time, the node, event, outcome, request id, client IP, namespace where known, and
//! the user's pseudonym: never a user id, token, secret or key byte.
//!
//! Lines are written (not fsynced) before what they record happens, and fsynced every
//! second and at shutdown by [`AuditLog::sync`], which the server runs on a blocking
//! thread: a request only ever waits for a `write`, never for an fsync (a rotation
//! renames and opens under the writer's lock; the full file is synced by the next sync). Lines queued together are written with one system call
//! ([`AuditLog::queue`], [`AuditLog::settle`]): a key read's line is on file before
//! the key leaves, and a whole batch fails together. By default the log fails closed: a
//! request whose line cannot be written fails with 503 instead of happening unrecorded.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use self::chain::{Head, Line, chain_hash, chain_line, last_line, latest_end, open_append, rotated_path};
pub use self::chain::{head_path, pseudonym_hex};
pub use self::digest::{DenialDigest, DenialKey};
pub use self::verify::{ChainBreak, Verified, verify, verify_series};

mod chain;
mod digest;
#[cfg(test)]
mod tests;
mod verify;

/// One security event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    /// RFC 3339, UTC.
    pub time: String,
    /// The node that wrote it (`node_id`): several nodes on one database each keep
    /// their own log.
    pub node: &'a str,
    /// `init`, `connect`, `key_read`, `key_write`, `key_delete`, `erase`, `export`,
    /// `session_revoke`, `auth_failure`, `connect_budget_exceeded`, …
    pub event: &'a str,
    /// `ok`, `allowed` (checked, about to happen), `denied`, `failed`.
    pub outcome: &'a str,
    /// The request id.
    pub request_id: &'a str,
    /// The client's address.
    pub client_ip: String,
    /// The namespace, where the request names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    /// The user's pseudonym (hex), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A code saying why (an error code, a limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// On a summary line: how many more events like it (same client network, event and
    /// reason) were refused in its window without a line of their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated: Option<u64>,
}

/// The audit line could not be written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

/// An open audit log.
pub struct AuditLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    fail_closed: bool,
    writable: AtomicBool,
    /// Rotate once the file reaches this many bytes (0: never).
    max_bytes: u64,
    /// Held through a whole [`AuditLog::sync`], so that head files are written in order;
    /// the sequence number the head file last recorded. Requests never take it.
    syncing: Mutex<Option<u64>>,
}

struct Writer {
    /// The live file (shared with a sync that is making it durable).
    file: Arc<File>,
    /// Files moved aside (rotated, or reopened away from) whose lines the next sync
    /// must make durable before the head may name them.
    retired: Vec<Arc<File>>,
    /// Bytes in the current file.
    bytes: u64,
    /// The chain as far as it is queued: the next line's number and the last hash.
    next_seq: u64,
    prev: [u8; 32],
    /// The chain as far as it is written to the file.
    written_seq: u64,
    written_prev: [u8; 32],
    /// Lines queued ([`AuditLog::queue`]) and not yet written, in chain order.
    pending: Vec<u8>,
    /// The ticket the next queued line gets; every ticket below `settled` has been
    /// written or has failed.
    next_ticket: u64,
    settled: u64,
    /// The most recent tickets whose write failed: `[first, end)` and why.
    failed: std::collections::VecDeque<(u64, u64, std::io::ErrorKind, Option<i32>)>,
}

/// A queued line's place in the queue, to [`AuditLog::settle`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a queued line must be settled before what it records happens"]
pub struct Ticket(u64);

/// Failed batches remembered, so that a line's queuer can still learn that its write
/// failed; far more than can fail between a queueing and its settling.
const FAILURES_KEPT: usize = 1024;

impl AuditLog {
    /// Opens (or creates, mode 0600) the log at `path` and continues its chain.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened, or its last line is not an audit line.
    pub fn open(path: &Path, fail_closed: bool) -> Result<Self, AuditError> {
        Self::open_rotating(path, fail_closed, 0)
    }

    /// [`AuditLog::open`], moving the file aside (to `<path>.<next seq>`) whenever it
    /// reaches `max_bytes` (0: never); the chain continues into the next file. A log
    /// that is empty (just rotated away by another tool) continues the chain its head
    /// file records.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened, or its last line is not an audit line.
    pub fn open_rotating(path: &Path, fail_closed: bool, max_bytes: u64) -> Result<Self, AuditError> {
        let io = |source| AuditError { path: path.to_path_buf(), source };
        let file = open_append(path).map_err(io)?;
        let bytes = file.metadata().map_err(io)?.len();
        let (mut next_seq, mut prev) = (0, [0u8; 32]);
        let bad = || io(std::io::Error::other("its last line is not an audit line; run `keyservice audit verify`"));
        if let Some(line) = last_line(path).map_err(io)? {
            let parsed: Line<'_> = serde_json::from_str(&line).map_err(|_| bad())?;
            hex::decode_to_slice(&parsed.hash, &mut prev).map_err(|_| bad())?;
            next_seq = parsed.seq + 1;
        } else if let Some(head) = latest_end(path).map_err(io)? {
            // The file was moved away and a new one begun: continue the chain.
            hex::decode_to_slice(&head.hash, &mut prev).map_err(|_| bad())?;
            next_seq = head.seq + 1;
        }
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                retired: Vec::new(),
                bytes,
                next_seq,
                prev,
                written_seq: next_seq,
                written_prev: prev,
                pending: Vec::new(),
                next_ticket: 0,
                settled: 0,
                failed: std::collections::VecDeque::new(),
            }),
            fail_closed,
            writable: AtomicBool::new(true),
            max_bytes,
            syncing: Mutex::new(None),
        })
    }

    /// Appends `event`, written before this returns.
    ///
    /// # Errors
    ///
    /// When the line cannot be written and the log fails closed; the request must then
    /// fail. When it fails open, the failure is logged and `Ok` returned.
    pub fn record(&self, event: &Event<'_>) -> Result<(), AuditError> {
        let ticket = self.queue(event);
        self.settle(ticket)
    }

    /// Chains `event` onto the log and queues its line, unwritten. Lines queued together
    /// are written with one system call by whichever [`AuditLog::settle`] comes first
    /// (or the next [`AuditLog::sync`]); whatever the line records must not happen
    /// before its ticket is settled.
    pub fn queue(&self, event: &Event<'_>) -> Ticket {
        // An event of strings always serialises. Sized for a key read's event, so that
        // the buffer is not grown while it is written.
        let mut body = Vec::with_capacity(400);
        serde_json::to_writer(&mut body, event).expect("an audit event serialises");
        let mut writer = self.lock();
        let seq = writer.next_seq;
        let prev = writer.prev;
        let hash = chain_hash(seq, &prev, &body);
        chain_line(&mut writer.pending, seq, &prev, &body, &hash);
        writer.next_seq += 1;
        writer.prev = hash;
        writer.next_ticket += 1;
        Ticket(writer.next_ticket - 1)
    }

    /// Makes sure the line of `ticket` is written: writes every queued line unless an
    /// earlier settle already did.
    ///
    /// # Errors
    ///
    /// When the line could not be written and the log fails closed; what it records must
    /// then not happen. When it fails open, the failure is logged and `Ok` returned.
    pub fn settle(&self, ticket: Ticket) -> Result<(), AuditError> {
        let mut writer = self.lock();
        if ticket.0 >= writer.settled {
            self.write_pending(&mut writer);
        }
        let failed = writer.failed.iter().find(|(first, end, _, _)| (*first..*end).contains(&ticket.0));
        match failed {
            Some(&(_, _, kind, code)) if self.fail_closed => {
                let source = code.map_or_else(|| std::io::Error::from(kind), std::io::Error::from_raw_os_error);
                Err(AuditError { path: self.path.clone(), source })
            }
            _ => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes every queued line in one call, and settles their tickets.
    fn write_pending(&self, writer: &mut Writer) {
        if writer.pending.is_empty() {
            return;
        }
        let (first, end) = (writer.settled, writer.next_ticket);
        match (&*writer.file).write_all(&writer.pending) {
            Ok(()) => {
                writer.bytes += writer.pending.len() as u64;
                writer.written_seq = writer.next_seq;
                writer.written_prev = writer.prev;
                self.writable.store(true, Ordering::Relaxed);
                if self.max_bytes > 0 && writer.bytes >= self.max_bytes {
                    self.rotate(writer);
                }
            }
            Err(source) => {
                // Lines half written (the disk filled up) are taken back, and so is
                // everything queued with them: the chain goes on from the last whole line.
                let _ = writer.file.set_len(writer.bytes);
                writer.next_seq = writer.written_seq;
                writer.prev = writer.written_prev;
                self.writable.store(false, Ordering::Relaxed);
                tracing::error!(error = %source, lines = end - first, "writing the audit log failed");
                if writer.failed.len() == FAILURES_KEPT {
                    writer.failed.pop_front();
                }
                writer.failed.push_back((first, end, source.kind(), source.raw_os_error()));
            }
        }
        writer.settled = end;
        // Emptied, not freed: the next batch reuses the buffer.
        writer.pending.clear();
    }

    /// Moves the full file aside and begins a new one; on failure, keeps writing the
    /// old one (the line just written is safe either way). Only a rename and an open:
    /// the old file is made durable, and the head written, by the next sync.
    fn rotate(&self, writer: &mut Writer) {
        let rotated = rotated_path(&self.path, writer.written_seq);
        let moved = std::fs::rename(&self.path, &rotated).and_then(|()| open_append(&self.path));
        match moved {
            Ok(file) => {
                let full = std::mem::replace(&mut writer.file, Arc::new(file));
                writer.retired.push(full);
                writer.bytes = 0;
                tracing::info!(rotated = %rotated.display(), "audit log rotated");
            }
            Err(error) => tracing::error!(%error, "rotating the audit log failed; still writing the full one"),
        }
    }

    /// Records `seq` (the last line written and synced, whose hash is `hash`) in the head
    /// file, atomically; `head_seq` is what it recorded last.
    fn write_head(&self, head_seq: &mut Option<u64>, seq: u64, hash: &[u8; 32]) -> std::io::Result<()> {
        if *head_seq == Some(seq) {
            return Ok(());
        }
        let head = Head { seq, hash: hex::encode(hash) };
        let path = head_path(&self.path);
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        // A head is a few dozen bytes of JSON: it always serialises.
        let text = serde_json::to_string(&head).expect("a head serialises");
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_data()?;
        std::fs::rename(&tmp, &path)?;
        *head_seq = Some(seq);
        Ok(())
    }

    /// Opens the file at the log's path again (after an external rotation moved it
    /// away); the chain continues where it was, so the new file's first line names the
    /// old file's last hash.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened; the old one stays in use.
    pub fn reopen(&self) -> Result<(), AuditError> {
        let mut writer = self.lock();
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let same = |a: std::fs::Metadata, b: std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
            if let (Ok(current), Ok(at_path)) = (writer.file.metadata(), std::fs::metadata(&self.path))
                && same(current, at_path)
            {
                // Not moved away: nothing to reopen.
                return Ok(());
            }
        }
        let file = open_append(&self.path).map_err(|source| AuditError { path: self.path.clone(), source })?;
        writer.bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        // What was written to the old file is made durable by the next sync.
        let old = std::mem::replace(&mut writer.file, Arc::new(file));
        writer.retired.push(old);
        Ok(())
    }

    /// Whether the last write succeeded.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Writes every queued line and makes every line written so far durable, then
    /// records the last of them in the head file. The fsyncs run without the writer's
    /// lock, so requests queue and write lines meanwhile; call it off the async workers.
    ///
    /// # Errors
    ///
    /// When a file cannot be synced (it is synced again by the next call) or the head
    /// cannot be written.
    pub fn sync(&self) -> Result<(), AuditError> {
        let mut head_seq = self.syncing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (retired, live, written_seq, written_prev) = {
            let mut writer = self.lock();
            self.write_pending(&mut writer);
            (std::mem::take(&mut writer.retired), writer.file.clone(), writer.written_seq, writer.written_prev)
        };
        let failed = |source| {
            self.writable.store(false, Ordering::Relaxed);
            AuditError { path: self.path.clone(), source }
        };
        for (done, file) in retired.iter().enumerate() {
            if let Err(source) = file.sync_data() {
                // Those not yet synced wait for the next sync, before anything retired since.
                self.lock().retired.splice(0..0, retired[done..].iter().cloned());
                return Err(failed(source));
            }
        }
        live.sync_data().map_err(failed)?;
        let Some(seq) = written_seq.checked_sub(1) else { return Ok(()) };
        self.write_head(&mut head_seq, seq, &written_prev)
            .map_err(|source| AuditError { path: head_path(&self.path), source })
    }
}
