//! The embedded default [`Store`]: sled 0.34 in the data directory.
//!
//! Layout (one sled tree per kind of record; see `docs/storage.md`):
//!
//! | tree           | key                                   | value                              |
//! |----------------|---------------------------------------|------------------------------------|
//! | `pending_init` | SHA-512(init token), 64 bytes         | [`record::encode_pending_init`]    |
//! | `session`      | SHA-256(session token), 32 bytes      | [`record::encode_session`]         |
//! | `key`          | [`record::key_version_key`]           | [`record::encode_key_version`]     |
//! | `nonce`        | replay fingerprint, u64 big-endian    | request date, u64 big-endian       |
//! | `meta`         | `replay_floor`                        | u64 big-endian                     |
//!
//! **Writes** go through one committer thread. It takes every write that is waiting,
//! applies them in order, makes them durable with one flush, and only then answers each:
//! writes that arrive together share one flush (group commit), and a conditional PUT's
//! check-and-write cannot interleave with another write. One thread rather than one
//! `flush_async` per task also sidesteps sled's deadlock when many tasks flush at once
//! (sled issue #1308).
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
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::record::{self, decode_u64};
use super::{
    InitDigest, KeyVersion, NewKey, PendingInit, Precondition, PutOutcome, Redeemed, SessionId, Store, StoreError,
    Swept, UnixTime, UserRef,
};

/// Most writes one flush covers; more wait for the next.
const MAX_BATCH: usize = 1024;
const REPLAY_FLOOR_KEY: &[u8] = b"replay_floor";

/// A [`Store`] in a sled database on local disk.
pub struct SledStore {
    trees: Trees,
    /// `None` only while dropping, so the committer sees the channel close.
    jobs: Option<mpsc::Sender<Job>>,
    committer: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Trees {
    inits: sled::Tree,
    sessions: sled::Tree,
    keys: sled::Tree,
    nonces: sled::Tree,
    meta: sled::Tree,
}

enum Op {
    AddInit(InitDigest, PendingInit),
    Redeem { digest: InitDigest, now: UnixTime, session_id: SessionId, user: UserRef, expires_at: UnixTime },
    PutKey { user: UserRef, key: NewKey, precondition: Precondition },
    Remove(Vec<(Which, sled::IVec)>),
    SetFloor(UnixTime),
    RememberNonce(u64, UnixTime),
    Flush,
}

#[derive(Clone, Copy)]
enum Which {
    Init,
    Session,
    Nonce,
}

enum Reply {
    Done,
    Redeemed(Redeemed),
    Put(PutOutcome),
    Removed(Swept),
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Reply, StoreError>>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    ///
    /// Fails when the directory cannot be created, sled cannot open it (another process
    /// holds it, or it is damaged), or the database file cannot be opened for fsync.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        let open_tree = |name: &str| db.open_tree(name).map_err(backend);
        let trees = Trees {
            inits: open_tree("pending_init")?,
            sessions: open_tree("session")?,
            keys: open_tree("key")?,
            nonces: open_tree("nonce")?,
            meta: open_tree("meta")?,
        };
        let mut durability = Durability {
            db_file: File::open(dir.join("db")).map_err(backend)?,
            dir: dir.to_path_buf(),
            synced_blobs: HashSet::new(),
            db,
        };
        durability.sync().map_err(backend)?;
        // The files sled just created exist for sure only once their directory is synced.
        File::open(dir).and_then(|d| d.sync_all()).map_err(backend)?;

        let (jobs, queue) = mpsc::channel();
        let committer_trees = trees.clone();
        let committer = std::thread::Builder::new()
            .name("keyservice-committer".into())
            .spawn(move || commit_loop(&queue, &committer_trees, &mut durability))
            .map_err(backend)?;
        Ok(Self { trees, jobs: Some(jobs), committer: Some(committer) })
    }

    async fn submit(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or(StoreError::Poisoned)?;
        jobs.send(Job { op, reply }).map_err(|_| StoreError::Poisoned)?;
        answer.await.map_err(|_| StoreError::Poisoned)?
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        // Closing the channel lets the committer finish the writes already queued and
        // exit; joining it releases its handle on the database, so the directory can be
        // reopened as soon as this store is gone.
        self.jobs.take();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

#[async_trait]
impl Store for SledStore {
    async fn add_pending_init(&self, digest: InitDigest, init: PendingInit) -> Result<(), StoreError> {
        self.submit(Op::AddInit(digest, init)).await.map(|_| ())
    }

    async fn redeem_init(
        &self,
        digest: &InitDigest,
        now: UnixTime,
        session_id: SessionId,
        user: UserRef,
        session_expires_at: UnixTime,
    ) -> Result<Redeemed, StoreError> {
        let op = Op::Redeem { digest: *digest, now, session_id, user, expires_at: session_expires_at };
        match self.submit(op).await? {
            Reply::Redeemed(redeemed) => Ok(redeemed),
            _ => unreachable!("the committer answers Redeem with Redeemed"),
        }
    }

    async fn session(&self, id: &SessionId) -> Result<Option<super::Session>, StoreError> {
        match self.trees.sessions.get(id).map_err(backend)? {
            Some(bytes) => record::decode_session(&bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn put_key(
        &self,
        user: &UserRef,
        key: NewKey,
        precondition: &Precondition,
    ) -> Result<PutOutcome, StoreError> {
        let op = Op::PutKey { user: user.clone(), key, precondition: precondition.clone() };
        match self.submit(op).await? {
            Reply::Put(outcome) => Ok(outcome),
            _ => unreachable!("the committer answers PutKey with Put"),
        }
    }

    async fn get_key(&self, user: &UserRef, version: Option<u64>) -> Result<Option<KeyVersion>, StoreError> {
        let found = match version {
            Some(v) => self.trees.keys.get(record::key_version_key(user, v)).map_err(backend)?.map(|bytes| (v, bytes)),
            None => match latest_key(&self.trees.keys, user)? {
                Some((key, bytes)) => Some((record::version_of_key(&key)?, bytes)),
                None => None,
            },
        };
        found.map(|(v, bytes)| record::decode_key_version(v, &bytes)).transpose()
    }

    async fn sweep(&self, now: UnixTime, forget_nonces_before: UnixTime) -> Result<Swept, StoreError> {
        // Finding what expired reads whole trees, so it runs on a blocking thread and
        // outside the committer: writes keep flowing while it scans.
        let trees = self.trees.clone();
        let doomed = tokio::task::spawn_blocking(move || expired_records(&trees, now, forget_nonces_before))
            .await
            .map_err(backend)??;
        if doomed.is_empty() {
            return Ok(Swept::default());
        }
        match self.submit(Op::Remove(doomed)).await? {
            Reply::Removed(swept) => Ok(swept),
            _ => unreachable!("the committer answers Remove with Removed"),
        }
    }

    async fn replay_floor(&self) -> Result<UnixTime, StoreError> {
        match self.trees.meta.get(REPLAY_FLOOR_KEY).map_err(backend)? {
            Some(bytes) => decode_u64(&bytes, "replay floor"),
            None => Ok(0),
        }
    }

    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError> {
        self.submit(Op::SetFloor(floor)).await.map(|_| ())
    }

    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<(), StoreError> {
        self.submit(Op::RememberNonce(fingerprint, date)).await.map(|_| ())
    }

    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.trees.nonces.iter() {
            let (key, value) = entry.map_err(backend)?;
            let date = decode_u64(&value, "nonce")?;
            if date >= since {
                out.push((decode_u64(&key, "nonce")?, date));
            }
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.submit(Op::Flush).await.map(|_| ())
    }
}

fn commit_loop(queue: &mpsc::Receiver<Job>, trees: &Trees, durability: &mut Durability) {
    let mut poisoned = false;
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }

        let mut answers = Vec::with_capacity(batch.len());
        for Job { op, reply } in batch {
            let result = if poisoned { Err(StoreError::Poisoned) } else { apply(trees, op) };
            answers.push((reply, result));
        }
        if !poisoned && let Err(error) = durability.sync() {
            // What was applied may or may not be on disk; none of it may be acknowledged,
            // and nothing written later could be promised durable either.
            tracing::error!(%error, "flushing the store failed; refusing further writes");
            poisoned = true;
        }
        for (reply, result) in answers {
            let result = if poisoned { Err(StoreError::Poisoned) } else { result };
            // The caller may have gone away (its connection closed); nothing to tell then.
            let _ = reply.send(result);
        }
    }
}

fn apply(trees: &Trees, op: Op) -> Result<Reply, StoreError> {
    match op {
        Op::AddInit(digest, init) => {
            trees.inits.insert(digest, &record::encode_pending_init(&init)[..]).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::Redeem { digest, now, session_id, user, expires_at } => {
            let Some(bytes) = trees.inits.remove(digest).map_err(backend)? else {
                return Ok(Reply::Redeemed(Redeemed::UnknownInit));
            };
            let init = record::decode_pending_init(&bytes)?;
            if init.expires_at <= now {
                return Ok(Reply::Redeemed(Redeemed::ExpiredInit));
            }
            let session = super::Session { user, secret: init.token, expires_at };
            trees.sessions.insert(session_id, &record::encode_session(&session)[..]).map_err(backend)?;
            Ok(Reply::Redeemed(Redeemed::Session))
        }
        Op::PutKey { user, key, precondition } => {
            let current = match latest_key(&trees.keys, &user)? {
                Some((k, _)) => Some(record::version_of_key(&k)?),
                None => None,
            };
            if !precondition.admits(current) {
                return Ok(Reply::Put(PutOutcome::PreconditionFailed));
            }
            let version = current.unwrap_or(0) + 1;
            let value = record::encode_key_version(key.created_at, &key.content_type, &key.bytes);
            trees.keys.insert(record::key_version_key(&user, version), &value[..]).map_err(backend)?;
            Ok(Reply::Put(PutOutcome::Stored { version }))
        }
        Op::Remove(doomed) => {
            let mut swept = Swept::default();
            for (which, key) in doomed {
                let (tree, counter) = match which {
                    Which::Init => (&trees.inits, &mut swept.inits),
                    Which::Session => (&trees.sessions, &mut swept.sessions),
                    Which::Nonce => (&trees.nonces, &mut swept.nonces),
                };
                if tree.remove(key).map_err(backend)?.is_some() {
                    *counter += 1;
                }
            }
            Ok(Reply::Removed(swept))
        }
        Op::SetFloor(floor) => {
            trees.meta.insert(REPLAY_FLOOR_KEY, &floor.to_be_bytes()).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::RememberNonce(fingerprint, date) => {
            trees.nonces.insert(fingerprint.to_be_bytes(), &date.to_be_bytes()).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::Flush => Ok(Reply::Done),
    }
}

fn latest_key(keys: &sled::Tree, user: &UserRef) -> Result<Option<(sled::IVec, sled::IVec)>, StoreError> {
    // Versions are big-endian after a prefix-free user prefix, so the last key under the
    // prefix is the highest version.
    keys.scan_prefix(record::user_prefix(user)).next_back().transpose().map_err(backend)
}

fn expired_records(
    trees: &Trees,
    now: UnixTime,
    forget_nonces_before: UnixTime,
) -> Result<Vec<(Which, sled::IVec)>, StoreError> {
    let mut doomed = Vec::new();
    for entry in trees.inits.iter() {
        let (key, value) = entry.map_err(backend)?;
        if record::decode_pending_init(&value)?.expires_at <= now {
            doomed.push((Which::Init, key));
        }
    }
    for entry in trees.sessions.iter() {
        let (key, value) = entry.map_err(backend)?;
        if record::decode_session(&value)?.expires_at <= now {
            doomed.push((Which::Session, key));
        }
    }
    for entry in trees.nonces.iter() {
        let (key, value) = entry.map_err(backend)?;
        if decode_u64(&value, "nonce")? < forget_nonces_before {
            doomed.push((Which::Nonce, key));
        }
    }
    Ok(doomed)
}

/// What it takes to make sled's writes survive a power loss.
struct Durability {
    db: sled::Db,
    /// sled's single log-and-page file, `<dir>/db`.
    db_file: File,
    dir: PathBuf,
    /// Blob files already fsynced; blob files are written once and never changed.
    synced_blobs: HashSet<OsString>,
}

impl Durability {
    fn sync(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.db.flush()?;
        self.sync_new_blobs()?;
        self.db_file.sync_data()?;
        Ok(())
    }

    fn sync_new_blobs(&mut self) -> std::io::Result<()> {
        let blob_dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        let mut present = HashSet::new();
        let mut new_files = false;
        for entry in entries {
            let name = entry?.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(blob_dir.join(&name))?.sync_all()?;
                new_files = true;
            }
            present.insert(name);
        }
        if new_files {
            File::open(&blob_dir)?.sync_all()?;
        }
        // Forget blobs sled has since collected, so the set stays as small as the dir.
        self.synced_blobs = present;
        Ok(())
    }
}

fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::Backend(error.into())
}
