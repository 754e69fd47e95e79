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
//! second and at shutdown. Lines queued together are written with one system call
//! ([`AuditLog::queue`], [`AuditLog::settle`]): a key read's line is on file before
//! the key leaves, and a whole batch fails together. By default the log fails closed: a
//! request whose line cannot be written fails with 503 instead of happening unrecorded.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

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

/// Refusals of unauthenticated callers cost them nothing, so each one must not cost a
/// line: per client network, event and reason, the first refusal of a window gets its
/// line, the rest are counted, and the count is written as one summary line when the
/// window ends ([`DenialDigest::due`]). Past [`DenialDigest::MAX_KEYS`] distinct keys in
/// a window, all further refusals share one key, so the map stays bounded.
pub struct DenialDigest {
    window: std::time::Duration,
    open: Mutex<std::collections::HashMap<DenialKey, (std::time::Instant, u64)>>,
}

/// Who was refused, for what.
pub type DenialKey = (ipnet::IpNet, &'static str, &'static str);

impl DenialDigest {
    /// Most distinct keys tracked at once.
    pub const MAX_KEYS: usize = 10_000;

    /// A digest whose windows last `window`.
    pub fn new(window: std::time::Duration) -> Self {
        Self { window, open: Mutex::default() }
    }

    /// Whether this refusal gets a line of its own: true for the first of its window.
    pub fn admit(&self, key: DenialKey) -> bool {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if open.len() >= Self::MAX_KEYS && !open.contains_key(&key) {
            (ipnet::IpNet::V4(ipnet::Ipv4Net::default()), "denials_overflow", "many_clients")
        } else {
            key
        };
        match open.get_mut(&key) {
            Some((_, suppressed)) => {
                *suppressed += 1;
                false
            }
            None => {
                open.insert(key, (std::time::Instant::now(), 0));
                true
            }
        }
    }

    /// The windows that have ended (with `all`, every window), with how many refusals
    /// each counted without a line; they are forgotten.
    pub fn due(&self, all: bool) -> Vec<(DenialKey, u64)> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        open.retain(|key, (started, suppressed)| {
            let ended = all || now.duration_since(*started) >= self.window;
            if ended && *suppressed > 0 {
                out.push((*key, *suppressed));
            }
            !ended
        });
        out
    }
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
}

struct Writer {
    file: File,
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
    /// The sequence number the head file last recorded.
    head_seq: Option<u64>,
}

/// A queued line's place in the queue, to [`AuditLog::settle`] it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a queued line must be settled before what it records happens"]
pub struct Ticket(u64);

/// Failed batches remembered, so that a line's queuer can still learn that its write
/// failed; far more than can fail between a queueing and its settling.
const FAILURES_KEPT: usize = 1024;

/// The head file beside a log: the last line known synced, so that lines cut off the
/// end can be told from lines never written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
}

/// Where the head of the log at `path` is kept.
pub fn head_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".head");
    path.with_file_name(name)
}

/// The name a full log is moved to: its path and the sequence number of the first line
/// of the file that follows it, zero-padded so that names sort in chain order.
fn rotated_path(path: &Path, next_seq: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{next_seq:020}"));
    path.with_file_name(name)
}

#[derive(Deserialize)]
struct Line<'a> {
    seq: u64,
    prev: String,
    #[serde(borrow)]
    event: &'a RawValue,
    hash: String,
}

fn chain_hash(seq: u64, prev: &[u8; 32], event: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(seq.to_be_bytes());
    hasher.update(prev);
    hasher.update(event);
    hasher.finalize().into()
}

/// Appends one line of the log to `out`: the event's JSON between its place in the
/// chain and its hash. (In place: this runs for every key read.)
fn chain_line(out: &mut Vec<u8>, seq: u64, prev: &[u8; 32], event: &[u8], hash: &[u8; 32]) {
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
        } else if let Some(head) = read_head(&head_path(path)) {
            // The file was moved away and a new one begun: continue the chain.
            hex::decode_to_slice(&head.hash, &mut prev).map_err(|_| bad())?;
            next_seq = head.seq + 1;
        }
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                bytes,
                next_seq,
                prev,
                written_seq: next_seq,
                written_prev: prev,
                pending: Vec::new(),
                next_ticket: 0,
                settled: 0,
                failed: std::collections::VecDeque::new(),
                head_seq: None,
            }),
            fail_closed,
            writable: AtomicBool::new(true),
            max_bytes,
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
        match writer.file.write_all(&writer.pending) {
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
    /// old one (the line just written is safe either way).
    fn rotate(&self, writer: &mut Writer) {
        let rotated = rotated_path(&self.path, writer.written_seq);
        let moved = writer
            .file
            .sync_data()
            .and_then(|()| std::fs::rename(&self.path, &rotated))
            .and_then(|()| open_append(&self.path));
        match moved {
            Ok(file) => {
                writer.file = file;
                writer.bytes = 0;
                // The new file starts empty: its head names the old file's last line.
                let _ = self.write_head(writer);
                tracing::info!(rotated = %rotated.display(), "audit log rotated");
            }
            Err(error) => tracing::error!(%error, "rotating the audit log failed; still writing the full one"),
        }
    }

    /// Records the last line written (and synced) in the head file, atomically.
    fn write_head(&self, writer: &mut Writer) -> std::io::Result<()> {
        let Some(seq) = writer.written_seq.checked_sub(1) else { return Ok(()) };
        if writer.head_seq == Some(seq) {
            return Ok(());
        }
        let head = Head { seq, hash: hex::encode(writer.written_prev) };
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
        writer.head_seq = Some(seq);
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
        // What was written to the old file is made durable before it is let go.
        let _ = writer.file.sync_data();
        writer.bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        writer.file = file;
        Ok(())
    }

    /// Whether the last write succeeded.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// Writes every queued line and makes every line written so far durable.
    ///
    /// # Errors
    ///
    /// When the file cannot be synced.
    pub fn sync(&self) -> Result<(), AuditError> {
        let mut writer = self.lock();
        self.write_pending(&mut writer);
        writer.file.sync_data().map_err(|source| {
            self.writable.store(false, Ordering::Relaxed);
            AuditError { path: self.path.clone(), source }
        })?;
        self.write_head(&mut writer).map_err(|source| AuditError { path: head_path(&self.path), source })
    }
}

/// Opens the log for appending (created 0600), locked against a second writer: two
/// processes appending to one chain would break it.
fn open_append(path: &Path) -> std::io::Result<File> {
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
fn last_line(path: &Path) -> std::io::Result<Option<String>> {
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

/// Where a log's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{reason}", if *line == 0 { String::new() } else { format!("line {line}: ") })]
pub struct ChainBreak {
    /// 1-based line number; 0 when the file itself could not be read.
    pub line: u64,
    /// The file.
    pub file: String,
    /// What is wrong there.
    pub reason: String,
}

fn read_head(path: &Path) -> Option<Head> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// What [`verify_series`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub lines: u64,
    /// The first line's sequence number: above 0 when earlier files were not given.
    pub first_seq: u64,
    /// The last line's sequence number, if any.
    pub last_seq: Option<u64>,
    /// Whether a head file was found and agrees with the end of the chain (`None`: no
    /// head file, so lines cut off the end could not be noticed).
    pub head: Option<u64>,
}

/// Checks one log file's chain from its start; returns how many lines it holds.
///
/// # Errors
///
/// The first line that was altered, or at which lines were removed, inserted or
/// reordered, or lines cut off the end that the head file records (or an I/O error,
/// reported at line 0).
pub fn verify(path: &Path) -> Result<u64, ChainBreak> {
    let verified = verify_series(&[path.to_path_buf()])?;
    if verified.first_seq != 0 {
        return Err(ChainBreak {
            line: 1,
            file: path.display().to_string(),
            reason: format!("the file begins at sequence number {}: give the earlier files too", verified.first_seq),
        });
    }
    Ok(verified.lines)
}

/// Checks the chain through `paths`, a log and the files rotated from it, in any order
/// (they are put in chain order by their first line). The first file may begin mid-chain
/// (older files deleted); every later one must continue the one before exactly. The
/// head file beside the newest one (`<file>.head`), when there is one, must not name a
/// line beyond the end: that would mean lines were cut off.
///
/// # Errors
///
/// The first break, naming its file and line.
pub fn verify_series(paths: &[PathBuf]) -> Result<Verified, ChainBreak> {
    let io = |file: &str, e: std::io::Error| ChainBreak {
        line: 0,
        file: file.to_owned(),
        reason: format!("cannot read it: {e}"),
    };
    let mut files = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        let mut first = String::new();
        BufReader::new(File::open(path).map_err(|e| io(&file, e))?).read_line(&mut first).map_err(|e| io(&file, e))?;
        let first_seq = serde_json::from_str::<Line<'_>>(first.trim_end()).ok().map(|l| l.seq);
        files.push((first_seq.unwrap_or(u64::MAX), path, file));
    }
    files.sort_by_key(|(first, _, _)| *first);
    let mut expected: Option<(u64, [u8; 32])> = None;
    let mut verified = Verified { lines: 0, first_seq: 0, last_seq: None, head: None };
    for (_, path, file) in &files {
        let reader = BufReader::new(File::open(path).map_err(|e| io(file, e))?);
        for (index, line) in reader.lines().enumerate() {
            let number = index as u64 + 1;
            let fail = |reason: &str| ChainBreak { line: number, file: file.clone(), reason: reason.to_owned() };
            let line = line.map_err(|e| fail(&e.to_string()))?;
            let parsed: Line<'_> = serde_json::from_str(&line).map_err(|_| fail("not an audit line"))?;
            let mut prev = [0u8; 32];
            hex::decode_to_slice(&parsed.prev, &mut prev).map_err(|_| fail("not an audit line"))?;
            match expected {
                None => verified.first_seq = parsed.seq,
                Some((seq, _)) if parsed.seq != seq => {
                    return Err(fail(&format!(
                        "sequence number {} where {seq} was expected: lines were removed, inserted or reordered",
                        parsed.seq
                    )));
                }
                Some((_, hash)) if prev != hash => {
                    return Err(fail("does not follow the line before it: a line was removed, inserted or reordered"));
                }
                Some(_) => {}
            }
            if expected.is_none() && parsed.seq == 0 && prev != [0u8; 32] {
                return Err(fail("the first line of the chain must follow no line"));
            }
            let hash = chain_hash(parsed.seq, &prev, parsed.event.get().as_bytes());
            if parsed.hash != hex::encode(hash) {
                return Err(fail("its content does not match its hash: the line was altered"));
            }
            expected = Some((parsed.seq + 1, hash));
            verified.last_seq = Some(parsed.seq);
            verified.lines += 1;
        }
    }
    if let Some((_, newest, file)) = files.last()
        && let Some(head) = read_head(&head_path(newest))
    {
        let end = verified.last_seq;
        let cut = || ChainBreak {
            line: verified.lines,
            file: file.clone(),
            reason: format!(
                "the head file records line seq {} but the chain ends at {}: lines were cut off the end",
                head.seq,
                end.map_or("nothing".to_owned(), |s| s.to_string())
            ),
        };
        match end {
            Some(end) if end > head.seq => {}
            Some(end) if end == head.seq => {
                let hash = expected.map(|(_, hash)| hex::encode(hash)).unwrap_or_default();
                if hash != head.hash {
                    return Err(ChainBreak {
                        line: verified.lines,
                        file: file.clone(),
                        reason: "the last line is not the one the head file records: it was replaced".to_owned(),
                    });
                }
            }
            _ => return Err(cut()),
        }
        verified.head = Some(head.seq);
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Event<'_> {
        Event {
            time: "2026-11-22T06:00:00Z".into(),
            node: "node-a",
            event: name,
            outcome: "ok",
            request_id: "r1",
            client_ip: "127.0.0.1".into(),
            namespace: Some("shop"),
            user: Some("ab".repeat(32)),
            reason: None,
            repeated: None,
        }
    }

    #[test]
    fn repeated_denials_get_one_line_and_a_count() {
        let digest = DenialDigest::new(std::time::Duration::from_millis(50));
        let key = ("192.0.2.0/24".parse().unwrap(), "access_denied", "ip_not_allowed");
        let other = ("198.51.100.0/24".parse().unwrap(), "access_denied", "ip_not_allowed");
        assert!(digest.admit(key));
        for _ in 0..99 {
            assert!(!digest.admit(key));
        }
        assert!(digest.admit(other));
        assert!(digest.due(false).is_empty(), "the window is still open");
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(digest.due(false), vec![(key, 99)], "the quiet key has nothing to report");
        assert!(digest.admit(key), "a new window starts with a line");
        assert!(!digest.admit(key));
        assert_eq!(digest.due(true), vec![(key, 1)], "a stop reports open windows too");
    }

    fn write_log(path: &Path, n: usize) {
        let log = AuditLog::open(path, true).unwrap();
        for i in 0..n {
            log.record(&event(if i % 2 == 0 { "init" } else { "connect" })).unwrap();
        }
        log.sync().unwrap();
    }

    #[test]
    fn lines_queued_together_are_written_by_the_first_settle_in_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, true).unwrap();
        let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        let first = log.queue(&event("key_read"));
        let second = log.queue(&event("key_write"));
        assert_eq!(lines(), 0, "a queued line was written before it was settled");
        log.settle(second).unwrap();
        assert_eq!(lines(), 2, "the later ticket's settle writes the earlier line too");
        log.settle(first).unwrap();
        assert_eq!(lines(), 2, "a settled line was written twice");
        let _unsettled = log.queue(&event("init"));
        log.sync().unwrap();
        assert_eq!(lines(), 3, "sync writes what is still queued");
        assert_eq!(verify(&path), Ok(3));
        let text = std::fs::read_to_string(&path).unwrap();
        let order: Vec<_> = ["key_read", "key_write", "init"].iter().map(|e| text.find(e).unwrap()).collect();
        assert!(order.is_sorted(), "lines out of queue order");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn every_line_of_a_failed_batch_fails_when_the_log_fails_closed() {
        // Every write to /dev/full fails with ENOSPC.
        let closed = AuditLog::open(Path::new("/dev/full"), true).unwrap();
        let tickets: Vec<_> = (0..3).map(|_| closed.queue(&event("key_read"))).collect();
        for ticket in tickets.into_iter().rev() {
            let error = closed.settle(ticket).expect_err("a line that was never written was settled");
            assert_eq!(error.source.raw_os_error(), Some(28), "{error}");
        }
        assert!(!closed.is_writable());
        let open = AuditLog::open(Path::new("/dev/full"), false).unwrap();
        let ticket = open.queue(&event("key_read"));
        assert!(open.settle(ticket).is_ok(), "a log failing open refused a request");
    }

    #[test]
    fn an_intact_log_verifies_and_continues_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        write_log(&path, 3);
        write_log(&path, 2);
        assert_eq!(verify(&path), Ok(5));
    }

    #[test]
    fn a_rotated_series_verifies_and_a_cut_end_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open_rotating(&path, true, 600).unwrap();
        for i in 0..10 {
            log.record(&event(if i % 2 == 0 { "init" } else { "connect" })).unwrap();
        }
        log.sync().unwrap();
        drop(log);
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with(".head"))
            .collect();
        assert!(files.len() >= 3, "{files:?}");
        files.reverse();
        let verified = verify_series(&files).unwrap();
        assert_eq!((verified.lines, verified.first_seq, verified.last_seq, verified.head), (10, 0, Some(9), Some(9)));
        // In chain order: the rotated files by name, then the live one.
        let mut chain: Vec<PathBuf> = files.iter().filter(|f| **f != path).cloned().collect();
        chain.sort();
        chain.push(path.clone());
        // The oldest file deleted: the rest still verifies, from mid-chain.
        assert!(verify_series(&chain[1..]).unwrap().first_seq > 0);
        // A file in the middle missing breaks the chain.
        let gap: Vec<PathBuf> = chain.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, f)| f.clone()).collect();
        assert!(verify_series(&gap).unwrap_err().reason.contains("expected"));
        // Lines cut off the end are found through the head.
        let newest = chain.iter().rev().find(|f| std::fs::metadata(f).unwrap().len() > 0).unwrap();
        let text = std::fs::read_to_string(newest).unwrap();
        let kept: Vec<&str> = text.lines().collect();
        std::fs::write(newest, kept[..kept.len() - 1].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let cut = verify_series(&files).unwrap_err();
        assert!(cut.reason.contains("cut off the end"), "{cut}");
        // Reopening an emptied (externally rotated) log continues the chain from the head.
        std::fs::rename(&path, dir.path().join("audit.jsonl.moved")).unwrap();
        let log = AuditLog::open(&path, true).unwrap();
        log.record(&event("init")).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 10);
    }

    #[cfg(unix)]
    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let first = AuditLog::open(&path, true).unwrap();
        let error = AuditLog::open(&path, true).err().expect("refused");
        assert!(error.to_string().contains("another process is writing this audit log"), "{error}");
        drop(first);
        assert!(AuditLog::open(&path, true).is_ok());
    }

    #[test]
    fn tampering_is_found_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        write_log(&path, 5);
        let lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect();
        let save = |lines: &[String]| std::fs::write(&path, lines.join("\n") + "\n").unwrap();

        let mut altered = lines.clone();
        altered[2] = altered[2].replace("connect", "erase!!").replace("init", "erase");
        save(&altered);
        assert_eq!(verify(&path).unwrap_err().line, 3);

        let mut removed = lines.clone();
        removed.remove(1);
        save(&removed);
        assert_eq!(verify(&path).unwrap_err().line, 2);

        let mut reordered = lines.clone();
        reordered.swap(3, 4);
        save(&reordered);
        assert_eq!(verify(&path).unwrap_err().line, 4);
    }
}
