//! The committer: it takes every write waiting, charges each its room, applies them,
//! makes them durable with one flush and answers each; and what the sweep finds expired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use sled::Transactional;
use sled::transaction::TransactionError;

use super::durability::{Durability, SyncFailure};
use super::record::{self, decode_u64};
use super::room::Room;
use super::room::{self, Budget, Kind, NoRoom};
use super::{
    Erased, Job, LEDGER_MARK_KEY, MAX_BATCH, Op, PutOutcome, REPLAY_FLOOR_KEY, Redeemed, Reply, TREE_NAMES, Trees,
    Which, backend,
};
use crate::store::{Pseudonym, StoreError, Swept, UnixTime, UserKey};

/// What the committer tells the store's callers.
pub(super) struct Flags {
    pub(super) poisoned: Arc<AtomicBool>,
    pub(super) stalled: Arc<AtomicBool>,
}

pub(super) fn commit_loop(
    queue: &mpsc::Receiver<Job>,
    trees: &Trees,
    durability: &mut Durability,
    room: &Room,
    flags: &Flags,
) {
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
        // One look at the disk per batch; each write then takes its room from it.
        let mut budget = room.budget();
        for Job { op, reply } in batch {
            let result = if poisoned { Err(StoreError::Poisoned) } else { apply(trees, op, &mut budget) };
            answers.push((reply, result));
        }
        let mut unavailable = None;
        // A batch whose every write was refused for want of room flushes nothing: sled
        // may hold pages that reads consolidated, and writing them out now could meet
        // the full disk that refused the batch.
        if !poisoned && budget.admitted_any() {
            match durability.sync() {
                Ok(()) => {}
                Err(SyncFailure::Transient(error)) => {
                    // Nothing was found undurable, only unchecked: refuse this batch and
                    // check everything again with the next one.
                    tracing::warn!(%error, "making writes durable failed for now; refusing this batch");
                    unavailable = Some(error);
                }
                Err(SyncFailure::Fatal(error)) => {
                    // What was applied may or may not be on disk; none of it may be
                    // acknowledged, and nothing written later could be promised durable.
                    tracing::error!(%error, "flushing the store failed; refusing further writes");
                    poisoned = true;
                    flags.poisoned.store(true, Ordering::Release);
                }
            }
        }
        for (reply, result) in answers {
            let result = match (&unavailable, poisoned) {
                (_, true) => Err(StoreError::Poisoned),
                (Some(error), false) => Err(StoreError::Unavailable(error.to_string().into())),
                (None, false) => result,
            };
            // The caller may have gone away (its connection closed); nothing to tell then.
            let _ = reply.send(result);
        }
        flags.stalled.store(false, Ordering::Release);
    }
}

impl Op {
    /// Bytes this step brings to the disk beyond one write's allowance, as far as they
    /// are known before it runs (a PUT's sealed value is charged once sealed), and what
    /// kind of write it is; `None` for a step that writes nothing.
    fn payload(&self) -> Option<(u64, Kind)> {
        let len = |bytes: &[u8]| bytes.len() as u64;
        let records = |n: usize| n as u64 * room::PER_WRITE;
        let (growth, upkeep) = (Kind::Growth, Kind::Upkeep);
        Some(match self {
            Op::KeyringCreate(name, value) => (len(name) + len(value), growth),
            Op::KeyringReplace(entries) => {
                (entries.iter().map(|(n, v)| len(n) + len(v)).sum::<u64>() + records(entries.len()), growth)
            }
            Op::CreateDek(_, wrapped, _) => (len(wrapped), growth),
            Op::AddInit(..) | Op::PutKey { .. } => (0, growth),
            Op::Redeem { .. } => (records(2), growth),
            Op::AppendAccesses(entries) => {
                (entries.iter().map(|(_, e)| len(&e.sealed)).sum::<u64>() + records(entries.len()), growth)
            }
            Op::Import(entries) => {
                (entries.iter().map(|(_, k, v)| len(k) + len(v)).sum::<u64>() + records(entries.len()), growth)
            }
            Op::TouchSession(..) | Op::RememberNonce(..) => (0, upkeep),
            Op::SetFloor(_) => (0, Kind::Floor),
            Op::SetLedgerMark(mark) => (len(mark), upkeep),
            Op::DeleteSession(_) => (records(2), upkeep),
            Op::DeleteKeys(_) | Op::Erase(_) => (records(4), upkeep),
            Op::Remove(doomed) => (records(doomed.len()), upkeep),
            Op::PurgeAccesses(keys) => (records(keys.len()), upkeep),
            // A flush writes out whatever is pending.
            Op::Flush => (0, upkeep),
            Op::Snapshot => return None,
        })
    }
}

/// A write refused for want of room on the data disk.
pub(super) fn full(no_room: NoRoom) -> StoreError {
    StoreError::Full(Box::new(no_room))
}

pub(super) fn apply(trees: &Trees, op: Op, budget: &mut Budget) -> Result<Reply, StoreError> {
    if let Some((payload, kind)) = op.payload() {
        budget.spend(payload, kind).map_err(full)?;
    }
    match op {
        Op::KeyringCreate(name, value) => create_if_absent(&trees.keyring, &name, value),
        Op::KeyringReplace(entries) => {
            let mut batch = sled::Batch::default();
            for (name, value) in entries {
                batch.insert(name, value);
            }
            trees.keyring.apply_batch(batch).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::CreateDek(user, wrapped, session) => {
            let key = record::user_prefix(&user);
            if let Some(stored) = trees.deks.get(key).map_err(backend)? {
                return Ok(Reply::Bytes(stored.to_vec()));
            }
            // Applied in turn with an erasure: a session it removed is seen.
            if let Some(session) = session
                && !trees.sessions.contains_key(session).map_err(backend)?
            {
                return Ok(Reply::Done);
            }
            trees.deks.insert(key, wrapped.as_slice()).map_err(backend)?;
            Ok(Reply::Bytes(wrapped))
        }
        Op::AddInit(id, init) => {
            trees.inits.insert(id, record::encode_init(&init)).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::Redeem { id, now, session_id, make } => {
            let Some(bytes) = trees.inits.get(id).map_err(backend)? else {
                return Ok(Reply::Redeemed(Redeemed::UnknownInit));
            };
            let init = record::decode_init(&bytes)?;
            if init.expires_at <= now {
                trees.inits.remove(id).map_err(backend)?;
                return Ok(Reply::Redeemed(Redeemed::ExpiredInit));
            }
            let session = make(&init)?;
            let value = record::encode_session(&session);
            let index = record::user_session_key(&session.user, &session_id);
            (&trees.inits, &trees.sessions, &trees.user_sessions)
                .transaction(|(inits, sessions, user_sessions)| {
                    inits.remove(&id)?;
                    sessions.insert(&session_id, value.as_slice())?;
                    user_sessions.insert(index.as_slice(), &[])?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            Ok(Reply::Redeemed(Redeemed::Session))
        }
        Op::DeleteSession(id) => {
            let Some(bytes) = trees.sessions.get(id).map_err(backend)? else {
                return Ok(Reply::Flag(false));
            };
            let index = record::user_session_key(&record::decode_session(&bytes)?.user, &id);
            (&trees.sessions, &trees.user_sessions)
                .transaction(|(sessions, user_sessions)| {
                    sessions.remove(&id)?;
                    user_sessions.remove(index.as_slice())?;
                    Ok(())
                })
                .map_err(transaction_error)?;
            Ok(Reply::Flag(true))
        }
        Op::TouchSession(id, now) => {
            if let Some(bytes) = trees.sessions.get(id).map_err(backend)? {
                let mut session = record::decode_session(&bytes)?;
                if now > session.last_used {
                    session.last_used = now;
                    trees.sessions.insert(id, record::encode_session(&session)).map_err(backend)?;
                }
            }
            Ok(Reply::Done)
        }
        Op::PutKey { user, dek, session, precondition, keep, created_at, seal } => {
            // Applied in turn with a deletion or an erasure: a DEK they removed, or a
            // session an erasure removed, is seen.
            if trees.deks.get(record::user_prefix(&user)).map_err(backend)?.as_deref() != Some(dek.as_slice()) {
                return Ok(Reply::Put(PutOutcome::DekChanged));
            }
            if let Some(session) = session
                && !trees.sessions.contains_key(session).map_err(backend)?
            {
                return Ok(Reply::Put(PutOutcome::SessionGone));
            }
            // One scan gives both ends: the newest version, and the oldest kept.
            let mut versions = trees.keys.scan_prefix(record::user_prefix(&user)).keys();
            let current = match versions.next_back() {
                Some(key) => Some(record::version_of_key(&key.map_err(backend)?)?),
                None => None,
            };
            let oldest = match versions.next() {
                Some(key) => Some(record::version_of_key(&key.map_err(backend)?)?),
                None => current,
            };
            drop(versions);
            if !precondition.admits(current) {
                return Ok(Reply::Put(PutOutcome::PreconditionFailed));
            }
            let version = current.unwrap_or(0) + 1;
            let sealed = seal(version)?;
            budget.spend(sealed.len() as u64, Kind::Growth).map_err(full)?;
            // The new version first, then the pruning, as single-record writes rather
            // than one sled batch: sled writes out and syncs its I/O buffer twice for
            // every batch, which made a batch per PUT most of a PUT's cost. A crash
            // recovers a prefix of the writes in this order, and the group's flush is
            // what acknowledges the PUT: at worst one version too many survives, and
            // the next PUT prunes it (the range below the cutoff is pruned whole).
            trees
                .keys
                .insert(record::key_version_key(&user, version), record::encode_key(created_at, &sealed))
                .map_err(backend)?;
            // Prune what falls out of the newest `keep`: every version from the oldest
            // kept up to the cutoff is removed by name, with no second scan. Only the
            // oldest are ever pruned, so the versions are contiguous and in steady state
            // that is one removal (reading every version on every PUT made a PUT's cost
            // grow with the user's history).
            if let (Some(cutoff), Some(oldest)) = (version.checked_sub(keep.max(1)), oldest) {
                for old in oldest..=cutoff {
                    trees.keys.remove(record::key_version_key(&user, old)).map_err(backend)?;
                }
            }
            Ok(Reply::Put(PutOutcome::Stored { version }))
        }
        Op::DeleteKeys(user) => {
            let keys = user_keys(trees, &user)?;
            let dek = record::user_prefix(&user);
            (&trees.deks, &trees.keys)
                .transaction(|(deks, key_tree)| {
                    deks.remove(dek.as_slice())?;
                    for key in &keys {
                        key_tree.remove(key)?;
                    }
                    Ok(())
                })
                .map_err(transaction_error)?;
            Ok(Reply::Count(keys.len() as u64))
        }
        Op::Erase(user) => {
            let keys = user_keys(trees, &user)?;
            let prefix = record::user_prefix(&user);
            let index: Vec<sled::IVec> =
                trees.user_sessions.scan_prefix(prefix).keys().collect::<Result<_, _>>().map_err(backend)?;
            let mut sessions_revoked = 0;
            let mut session_ids = Vec::with_capacity(index.len());
            for key in &index {
                let id = record::session_of_index_key(key)?;
                if trees.sessions.contains_key(id).map_err(backend)? {
                    sessions_revoked += 1;
                }
                session_ids.push(id);
            }
            let accesses: Vec<sled::IVec> =
                trees.accesses.scan_prefix(prefix).keys().collect::<Result<_, _>>().map_err(backend)?;
            (&trees.deks, &trees.keys, &trees.sessions, &trees.user_sessions, &trees.accesses)
                .transaction(|(deks, key_tree, sessions, user_sessions, access_tree)| {
                    deks.remove(prefix.as_slice())?;
                    for key in &keys {
                        key_tree.remove(key)?;
                    }
                    for (key, id) in index.iter().zip(&session_ids) {
                        user_sessions.remove(key)?;
                        sessions.remove(id)?;
                    }
                    for key in &accesses {
                        access_tree.remove(key)?;
                    }
                    Ok(())
                })
                .map_err(transaction_error)?;
            Ok(Reply::Erased(Erased {
                versions: keys.len() as u64,
                sessions: sessions_revoked,
                accesses: accesses.len() as u64,
            }))
        }
        Op::Remove(doomed) => {
            let mut swept = Swept::default();
            for (which, key) in doomed {
                let (tree, counter) = match which {
                    Which::Init => (&trees.inits, Some(&mut swept.inits)),
                    Which::Session => (&trees.sessions, Some(&mut swept.sessions)),
                    Which::UserSession => (&trees.user_sessions, None),
                    Which::Nonce => (&trees.nonces, Some(&mut swept.nonces)),
                };
                if tree.remove(key).map_err(backend)?.is_some()
                    && let Some(counter) = counter
                {
                    *counter += 1;
                }
            }
            Ok(Reply::Removed(swept))
        }
        Op::SetLedgerMark(mark) => {
            trees.meta.insert(LEDGER_MARK_KEY, mark).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::SetFloor(floor) => {
            trees.meta.insert(REPLAY_FLOOR_KEY, &floor.to_be_bytes()).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::RememberNonce(fingerprint, date) => {
            let previous = trees.nonces.insert(fingerprint.to_be_bytes(), &date.to_be_bytes()).map_err(backend)?;
            Ok(Reply::Flag(previous.is_none()))
        }
        Op::AppendAccesses(entries) => {
            let mut batch = sled::Batch::default();
            for (user, entry) in entries {
                let key = record::access_key(&user, &entry.id);
                // A retried batch may hold entries already written: those stay as they are.
                if !trees.accesses.contains_key(&key).map_err(backend)? {
                    batch.insert(key, record::encode_access(&entry.sealed));
                }
            }
            trees.accesses.apply_batch(batch).map_err(backend)?;
            Ok(Reply::Done)
        }
        Op::PurgeAccesses(keys) => {
            let mut batch = sled::Batch::default();
            for key in &keys {
                batch.remove(key);
            }
            trees.accesses.apply_batch(batch).map_err(backend)?;
            Ok(Reply::Count(keys.len() as u64))
        }
        Op::Snapshot => {
            let mut entries = Vec::new();
            for name in TREE_NAMES {
                let tree = trees.by_name(name).ok_or(StoreError::Corrupt { kind: "tree name" })?;
                for entry in tree.iter() {
                    let (key, value) = entry.map_err(backend)?;
                    entries.push((name.to_owned(), key.to_vec(), value.to_vec()));
                }
            }
            Ok(Reply::Snapshot(entries))
        }
        Op::Import(entries) => {
            for (name, key, value) in entries {
                let tree = trees.by_name(&name).ok_or(StoreError::Corrupt { kind: "backup table" })?;
                tree.insert(key, value).map_err(backend)?;
            }
            Ok(Reply::Done)
        }
        Op::Flush => Ok(Reply::Done),
    }
}

fn create_if_absent(tree: &sled::Tree, key: &[u8], value: Vec<u8>) -> Result<Reply, StoreError> {
    if let Some(existing) = tree.get(key).map_err(backend)? {
        return Ok(Reply::Bytes(existing.to_vec()));
    }
    tree.insert(key, value.as_slice()).map_err(backend)?;
    Ok(Reply::Bytes(value))
}

fn user_keys(trees: &Trees, user: &UserKey) -> Result<Vec<sled::IVec>, StoreError> {
    trees.keys.scan_prefix(record::user_prefix(user)).keys().collect::<Result<_, _>>().map_err(backend)
}

fn transaction_error(error: TransactionError<()>) -> StoreError {
    match error {
        TransactionError::Storage(error) => backend(error),
        TransactionError::Abort(()) => StoreError::Backend("a store transaction aborted".into()),
    }
}

pub(super) fn expired_records(
    trees: &Trees,
    now: UnixTime,
    idle_before: UnixTime,
    forget_nonces_before: UnixTime,
) -> Result<Vec<(Which, sled::IVec)>, StoreError> {
    let mut doomed = Vec::new();
    for entry in trees.inits.iter() {
        let (key, value) = entry.map_err(backend)?;
        if record::decode_init(&value)?.expires_at <= now {
            doomed.push((Which::Init, key));
        }
    }
    for entry in trees.sessions.iter() {
        let (key, value) = entry.map_err(backend)?;
        let session = record::decode_session(&value)?;
        if session.expires_at <= now || session.last_used < idle_before {
            let id: Pseudonym = key.as_ref().try_into().map_err(|_| StoreError::Corrupt { kind: "session" })?;
            doomed.push((Which::UserSession, record::user_session_key(&session.user, &id).into()));
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
