//! The embedded default [`Store`](super::Store): sled 0.34 in the data directory.
//!
//! Layout (one sled tree per kind of record; see `docs/storage.md`). Every identifier
//! is a pseudonym and every secret a sealed envelope (see `crate::crypto::vault`):
//!
//! | tree           | key                                      | value                          |
//! |----------------|------------------------------------------|--------------------------------|
//! | `keyring`      | entry name (`system/…`, `kek/…`)         | wrapped key                    |
//! | `dek`          | [`record::user_prefix`]                  | wrapped user key               |
//! | `pending_init` | init pseudonym                           | [`record::encode_init`]        |
//! | `session`      | session pseudonym                        | [`record::encode_session`]     |
//! | `user_session` | [`record::user_session_key`]             | empty                          |
//! | `key`          | [`record::key_version_key`]              | [`record::encode_key`]         |
//! | `nonce`        | replay fingerprint, u64 big-endian       | request date, u64 big-endian   |
//! | `meta`         | `replay_floor`                           | u64 big-endian                 |
//! | `meta`         | `ledger_mark`                            | erasure-ledger lines applied   |
//!
//! **Writes** go through one committer thread. It takes every write that is waiting,
//! applies them in order, makes them durable with one flush, and only then answers each:
//! writes that arrive together share one flush (group commit), and a conditional PUT's
//! check-and-write cannot interleave with another write. One thread rather than one
//! `flush_async` per task also sidesteps sled's deadlock when many tasks flush at once
//! (sled issue #1308). Steps that touch several records (redeeming an init, pruning,
//! erasing a user) are one sled transaction or batch, so a crash leaves all or nothing;
//! being the only writer, the committer can read what a step will touch just before it.
//!
//! **Room.** The store never lets sled meet a full disk, which sled 0.34 does not
//! survive: see [`room`]. A batch is refused (`507`) before sled sees it when the disk
//! would be left without the room to reopen the store; an open without that room
//! changes nothing and fails with [`NoRoom`]; half-written snapshots are removed before
//! an open; and sled writes nothing in the background.
//!
//! **Durable** means on the drive, not in the page cache: sled's `flush` ends with
//! `sync_file_range`, which does not flush the drive's write cache, and it writes large
//! nodes as blob files that it never fsyncs. So after each flush the committer fsyncs new
//! blob files, the blob directory and the database file.
//!
//! **Reads** call sled directly on the async worker. A sled read is a lookup in its page
//! cache, microseconds, and touches the disk only for a page not yet cached; handing each
//! read to `spawn_blocking` would cost more than it saves. A read can see a write that the
//! committer has applied but whose flush is still running (a window of about a
//! millisecond); the write's own caller is answered only after the flush.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::apply::{Flags, commit_loop};
use self::durability::{Durability, SyncFailure, create_private_dir};
pub use self::room::NoRoom;
use self::room::Room;
use super::record::{self};
use super::{
    AccessRecord, Erased, InitRecord, KeyringEntry, MakeSession, Precondition, Pseudonym, PutOutcome, Redeemed,
    SealVersion, SnapshotEntry, StoreError, Swept, UnixTime, UserKey,
};

mod apply;
mod coordination;
mod durability;
mod maintenance;
mod records;
mod room;

/// Most writes one flush covers; more wait for the next.
const MAX_BATCH: usize = 1024;
const REPLAY_FLOOR_KEY: &[u8] = b"replay_floor";
const LEDGER_MARK_KEY: &[u8] = b"ledger_mark";

/// A [`Store`](super::Store) in a sled database on local disk.
pub struct SledStore {
    trees: Trees,
    /// Set by the committer when a flush failed for good.
    poisoned: Arc<AtomicBool>,
    /// Set when a write timed out waiting for the committer; cleared by the committer
    /// when it next answers a batch. While set, writes fail at once instead of waiting.
    stalled: Arc<AtomicBool>,
    /// The data disk's room, for refusing writes that would fill it.
    room: Arc<Room>,
    /// `None` only while dropping, so the committer sees the channel close.
    jobs: Option<mpsc::Sender<Job>>,
    committer: Option<JoinHandle<()>>,
}

/// Tree names, in the order backups list them.
const TREE_NAMES: [&str; 9] =
    ["keyring", "dek", "pending_init", "session", "user_session", "key", "nonce", "access", "meta"];

#[derive(Clone)]
struct Trees {
    keyring: sled::Tree,
    deks: sled::Tree,
    inits: sled::Tree,
    sessions: sled::Tree,
    user_sessions: sled::Tree,
    keys: sled::Tree,
    nonces: sled::Tree,
    accesses: sled::Tree,
    meta: sled::Tree,
}

enum Op {
    KeyringCreate(Vec<u8>, Vec<u8>),
    KeyringReplace(Vec<KeyringEntry>),
    CreateDek(UserKey, Vec<u8>, Option<Pseudonym>),
    AddInit(Pseudonym, InitRecord),
    Redeem {
        id: Pseudonym,
        now: UnixTime,
        session_id: Pseudonym,
        make: MakeSession,
    },
    DeleteSession(Pseudonym),
    TouchSession(Pseudonym, UnixTime),
    PutKey {
        user: UserKey,
        dek: Vec<u8>,
        session: Option<Pseudonym>,
        precondition: Precondition,
        keep: u64,
        created_at: UnixTime,
        seal: SealVersion,
    },
    DeleteKeys(UserKey),
    Erase(UserKey),
    Remove(Vec<(Which, sled::IVec)>),
    SetFloor(UnixTime),
    SetLedgerMark(Vec<u8>),
    RememberNonce(u64, UnixTime),
    AppendAccesses(Vec<(UserKey, AccessRecord)>),
    PurgeAccesses(Vec<sled::IVec>),
    Snapshot,
    Import(Vec<SnapshotEntry>),
    Flush,
}

#[derive(Clone, Copy)]
enum Which {
    Init,
    Session,
    UserSession,
    Nonce,
}

enum Reply {
    Done,
    Bytes(Vec<u8>),
    Flag(bool),
    Count(u64),
    Redeemed(Redeemed),
    Put(PutOutcome),
    Erased(Erased),
    Removed(Swept),
    Snapshot(Vec<SnapshotEntry>),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

impl Trees {
    fn by_name(&self, name: &str) -> Option<&sled::Tree> {
        Some(match name {
            "keyring" => &self.keyring,
            "dek" => &self.deks,
            "pending_init" => &self.inits,
            "session" => &self.sessions,
            "user_session" => &self.user_sessions,
            "key" => &self.keys,
            "nonce" => &self.nonces,
            "access" => &self.accesses,
            "meta" => &self.meta,
            _ => return None,
        })
    }
}

impl SledStore {
    /// Writes a snapshot's entries into this store, durably; for restoring a backup
    /// into a new, empty store.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for an entry of an unknown table; storage failures.
    pub async fn import(&self, entries: Vec<SnapshotEntry>) -> Result<(), StoreError> {
        self.submit(Op::Import(entries)).await.map(|_| ())
    }

    /// Bytes that must be free on its disk to open the store in `dir` (a new one if
    /// there is none): what [`SledStore::open`] checks before it changes anything.
    ///
    /// # Errors
    ///
    /// I/O errors reading the directory.
    pub fn room_to_open(dir: &Path) -> std::io::Result<u64> {
        room::room_to_open(dir)
    }

    /// The most an open leaves taken on its disk once it is done, which a running store
    /// keeps free beyond [`SledStore::room_to_open`] for every write but the replay
    /// floor's: a store stopped at its limit opens, and can be opened again after that.
    pub const AN_OPEN_TAKES_AT_MOST: u64 = room::AN_OPEN_TAKES_AT_MOST;

    /// Whether `dir` holds a store (sled's database file).
    pub fn exists(dir: &Path) -> bool {
        dir.join("db").is_file()
    }

    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Full`] with [`NoRoom`] when the disk lacks the room to open the store
    /// safely (nothing is changed then). Fails when the directory cannot be created, sled
    /// cannot open it (another process holds it, or it is damaged), or the database file
    /// cannot be opened for fsync.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if let Err(no_room) = room::check_before_open(dir).map_err(backend)? {
            return Err(StoreError::Full(Box::new(no_room)));
        }
        create_private_dir(dir).map_err(backend)?;
        let removed = room::remove_partial_snapshots(dir).map_err(backend)?;
        if !removed.is_empty() {
            tracing::warn!(
                files = ?removed,
                "removed half-written snapshots that an interrupted start left; the store opens from the complete snapshot and the log"
            );
        }
        // No flusher thread: the committer flushes every batch itself, and a thread that
        // writes on its own (sled's page cleaning) could fill the disk with no write to
        // refuse.
        let db = sled::Config::new().path(dir).flush_every_ms(None).open().map_err(backend)?;
        let open_tree = |name: &str| db.open_tree(name).map_err(backend);
        let trees = Trees {
            keyring: open_tree("keyring")?,
            deks: open_tree("dek")?,
            inits: open_tree("pending_init")?,
            sessions: open_tree("session")?,
            user_sessions: open_tree("user_session")?,
            keys: open_tree("key")?,
            nonces: open_tree("nonce")?,
            accesses: open_tree("access")?,
            meta: open_tree("meta")?,
        };
        let db_file = File::open(dir.join("db")).map_err(backend)?;
        let room = Arc::new(Room::new(dir, db_file.try_clone().map_err(backend)?).map_err(backend)?);
        let mut durability =
            Durability { db_file, dir: dir.to_path_buf(), synced_blobs: HashSet::new(), blob_dir_unsynced: false, db };
        durability.sync().map_err(SyncFailure::into_store_error)?;
        // The files sled just created exist for sure only once their directory is synced.
        File::open(dir).and_then(|d| d.sync_all()).map_err(backend)?;

        let (jobs, queue) = mpsc::channel();
        let committer_trees = trees.clone();
        let poisoned = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let flags = Flags { poisoned: poisoned.clone(), stalled: stalled.clone() };
        let committer_room = room.clone();
        let committer = std::thread::Builder::new()
            .name("keyservice-committer".into())
            .spawn(move || commit_loop(&queue, &committer_trees, &mut durability, &committer_room, &flags))
            .map_err(backend)?;
        Ok(Self { trees, poisoned, stalled, room, jobs: Some(jobs), committer: Some(committer) })
    }

    async fn submit(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.stalled.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("the store is not finishing writes; it is retried later".into()));
        }
        let jobs = self.jobs.as_ref().ok_or(StoreError::Poisoned)?;
        jobs.send(Job { op, reply }).map_err(|_| StoreError::Poisoned)?;
        let started = Instant::now();
        let mut answer = answer;
        loop {
            match tokio::time::timeout(FULL_DISK_LOOK_EVERY, &mut answer).await {
                Ok(answer) => return answer.map_err(|_| StoreError::Poisoned)?,
                // The committer is stuck (sled blocked on a full or failing disk): answer
                // rather than hang; the write is not acknowledged and may or may not land.
                // On a full disk that is known at once; otherwise a slow disk gets the
                // benefit of the doubt for WRITE_TIMEOUT.
                Err(_) => {
                    let full = self.room.is_short();
                    if full || started.elapsed() >= WRITE_TIMEOUT {
                        self.stalled.store(true, Ordering::Release);
                        tracing::error!(
                            full,
                            "the store did not finish a write in time; refusing writes until it does"
                        );
                        return Err(StoreError::Unavailable(
                            if full {
                                "the data disk filled up during a write, which did not finish"
                            } else {
                                "the store did not finish the write in time"
                            }
                            .into(),
                        ));
                    }
                }
            }
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Closing the channel lets the committer finish the writes already queued and
        // exit; joining it releases its handle on the database, so the directory can be
        // reopened as soon as this store is gone. A committer stuck on a failing disk is
        // left behind after a while rather than hold up the process's exit.
        self.jobs.take();
        if let Some(committer) = self.committer.take() {
            // A committer already known to be stuck gets a moment, not a full timeout.
            let wait = if self.stalled.load(Ordering::Acquire) { Duration::from_millis(500) } else { WRITE_TIMEOUT };
            let deadline = std::time::Instant::now() + wait;
            while !committer.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if committer.is_finished() {
                let _ = committer.join();
            } else {
                tracing::error!("the store's committer did not finish; leaving it behind");
            }
        }
    }
}

/// Longest a write may wait for the committer before it is answered as unavailable.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a write waiting for the committer looks whether the data disk filled up
/// (then it is answered at once, rather than after [`WRITE_TIMEOUT`]).
const FULL_DISK_LOOK_EVERY: Duration = Duration::from_millis(250);

/// The committer answers each op with the reply of its kind; anything else is a bug
/// in this file, reported as a backend error rather than a panic.
fn mismatch() -> StoreError {
    StoreError::Backend("the committer answered with the wrong kind of reply".into())
}

/// A failure of sled or the file system; one that says the disk is full is
/// [`StoreError::Full`] (`507`), although the room kept by [`room`] means sled should
/// never meet one.
fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    let error = error.into();
    let io = match error.downcast_ref::<sled::Error>() {
        Some(sled::Error::Io(io)) => Some(io),
        _ => error.downcast_ref::<std::io::Error>(),
    };
    if io.is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull) {
        return StoreError::Full(error);
    }
    StoreError::Backend(error)
}
