//! Access transparency: every connect, read, write and delete of a user's key, kept for
//! that user to see (`GET /key/history`).
//!
//! An entry records the operation, the session (a short id), the client address and the
//! Real Service credential that connected the session. It is sealed under the store's
//! system key, bound to the user's pseudonym and its place in the history, and stored
//! under the user's pseudonym; erasing the user deletes it, and entries older than the
//! retention are purged.
//!
//! A request only queues its entry. Identical reads queued within one interval (the
//! same session reading the same version from the same address) become one entry with
//! a count, so a device reading in a loop costs one entry a second, not one per read.
//! Likewise a run of writes queued within one interval by the same session, from the
//! same address, with no other operation on that user's key or sessions between them,
//! is one entry with a count and the first and last version written: a device writing
//! in a loop costs one entry a second, not one per write (each write still has its own
//! audit line). Every other operation keeps an entry of its own, in order. Queued entries
//! are sealed and written in one batch every [`FLUSH_INTERVAL`], before a history is
//! read, and at shutdown, so recording costs a read no store write of its own. The
//! bound that follows: a node killed outright loses at most the last interval of its
//! entries (the audit log, written before each answer, still has them), and a history
//! read at one node shows another node's entries after at most one interval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use keyservice_client::protocol::wire::AccessEntry;
use serde::{Deserialize, Serialize};

use crate::store::{AccessId, Pseudonym, UserKey};

/// How often queued entries are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Distinct entries queued past this are written by the request that queues the next one.
const MAX_QUEUED: usize = 10_000;

/// Longest page of history one request returns.
pub const MAX_PAGE: usize = 500;

/// Page size when the request names none.
pub const DEFAULT_PAGE: usize = 50;

/// What happened to a user's key or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A session was made for the user.
    Connect,
    /// A version of the key was read.
    KeyRead,
    /// A version of the key was written.
    KeyWrite,
    /// A write was sent to the store, which did not confirm it in time (the request was
    /// answered 503): the version may or may not have been stored. A version nobody was
    /// told of is explained by one of these.
    KeyWriteUnconfirmed,
    /// Every version of the key was deleted.
    KeyDelete,
    /// The session was ended by its device.
    Logout,
    /// The Real Service asked what is held for the user.
    Export,
}

impl Operation {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::KeyRead => "key_read",
            Self::KeyWrite => "key_write",
            Self::KeyWriteUnconfirmed => "key_write_unconfirmed",
            Self::KeyDelete => "key_delete",
            Self::Logout => "logout",
            Self::Export => "export",
        }
    }
}

/// One entry, as sealed (its time, or its first access's, is in its id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// What was done.
    pub op: Operation,
    /// The session's pseudonym, cut to 8 bytes: enough to tell sessions apart.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session: Option<[u8; 8]>,
    /// The client's address.
    pub address: IpAddr,
    /// The namespace credential that connected the session or made the call.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub credential: Option<String>,
    /// The key version read or written (for a run of writes, the last).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<u64>,
    /// For a run of writes, the first version written.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_version: Option<u64>,
    /// How many accesses the entry stands for: identical reads, or a run of writes.
    #[serde(skip_serializing_if = "is_one", default = "one")]
    pub count: u64,
    /// When the last of them happened (microseconds since the epoch), if more than one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last: Option<u64>,
}

fn one() -> u64 {
    1
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_one(count: &u64) -> bool {
    *count == 1
}

/// What is queued: reads by what was read (with a count of 1 and no `last`), with their
/// tally; every other operation in order, a run of writes as one.
#[derive(Default)]
struct Queued {
    reads: HashMap<(UserKey, Entry), Tally>,
    others: Vec<(UserKey, AccessId, Entry)>,
    /// For each user whose latest entry in `others` is a write, where it is: the next
    /// write of the same run is counted into it.
    open_runs: HashMap<UserKey, usize>,
}

impl Queued {
    fn len(&self) -> usize {
        self.reads.len() + self.others.len()
    }

    fn add_read(&mut self, user: UserKey, mut entry: Entry, tally: Tally) {
        entry.count = 1;
        entry.last = None;
        self.reads
            .entry((user, entry))
            .and_modify(|queued| {
                if tally.id < queued.id {
                    queued.id = tally.id;
                }
                queued.count += tally.count;
                queued.last = queued.last.max(tally.last);
            })
            .or_insert(tally);
    }

    /// Queues an operation other than a read. A write is counted into the user's open
    /// run when it continues it; any other operation closes the run.
    fn add_other(&mut self, user: UserKey, id: AccessId, entry: Entry) {
        if entry.op == Operation::KeyWrite
            && let Some(&at) = self.open_runs.get(&user)
            && let Some((_, _, run)) = self.others.get_mut(at)
            && run.continues_with(&entry)
        {
            run.first_version = run.first_version.or(run.version);
            run.version = entry.version;
            run.count += 1;
            run.last = Some(micros_of(&id));
            return;
        }
        if entry.op == Operation::KeyWrite {
            self.open_runs.insert(user, self.others.len());
        } else {
            self.open_runs.remove(&user);
        }
        self.others.push((user, id, entry));
    }
}

/// When an access was queued, and how many identical ones since.
#[derive(Debug, Clone, Copy)]
struct Tally {
    id: AccessId,
    count: u64,
    last: u64,
}

fn micros_of(id: &AccessId) -> u64 {
    u64::from_be_bytes(id[..8].try_into().unwrap_or_default())
}

impl Entry {
    /// The short id a session is shown by.
    pub fn session_tag(session: &Pseudonym) -> [u8; 8] {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&session[..8]);
        tag
    }

    /// Whether `next`, a write, belongs to the run of writes this entry is.
    fn continues_with(&self, next: &Entry) -> bool {
        self.op == Operation::KeyWrite
            && self.session == next.session
            && self.address == next.address
            && self.credential == next.credential
    }

    /// The entry as a client sees it; `current` is the asking session's tag.
    pub fn to_wire(&self, id: &AccessId, current: &[u8; 8]) -> AccessEntry {
        let micros = micros_of(id);
        AccessEntry {
            id: hex::encode(id),
            time: crate::time::rfc3339_millis(micros / 1000),
            operation: self.op.as_str().to_owned(),
            session: self.session.map(hex::encode),
            current_session: self.session.as_ref() == Some(current),
            address: self.address.to_string(),
            credential: self.credential.clone(),
            version: self.version,
            first_version: self.first_version,
            count: self.count,
            until: self.last.map(|last| crate::time::rfc3339_millis(last / 1000)),
        }
    }
}

/// Entries waiting to be sealed and written.
pub struct Queue {
    entries: Mutex<Queued>,
    /// Random per process, so two nodes' ids at the same microsecond differ.
    node: [u8; 4],
    counter: std::sync::atomic::AtomicU32,
}

impl Queue {
    /// An empty queue.
    ///
    /// # Errors
    ///
    /// When the OS cannot supply random bytes.
    pub fn new() -> Result<Self, keyservice_client::protocol::RandomError> {
        let node = keyservice_client::protocol::random_bytes::<4>()?;
        Ok(Self { entries: Mutex::default(), node, counter: std::sync::atomic::AtomicU32::new(0) })
    }

    /// A new id for an entry made now: unique in this process, and across nodes but for
    /// a 2^-32 chance per microsecond.
    fn next_id(&self) -> AccessId {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut id = crate::store::access_id_floor(micros);
        id[8..12].copy_from_slice(&self.node);
        let count = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id[12..].copy_from_slice(&count.to_be_bytes());
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues an access of `user` (counted into an identical one already queued);
    /// returns true when the queue has grown past its bound and should be written now.
    pub fn push(&self, user: UserKey, entry: Entry) -> bool {
        let id = self.next_id();
        let mut queued = self.lock();
        if entry.op == Operation::KeyRead {
            queued.add_read(user, entry, Tally { id, count: 1, last: micros_of(&id) });
        } else {
            queued.add_other(user, id, entry);
        }
        queued.len() >= MAX_QUEUED
    }

    /// Everything queued, oldest first, each with its count, for writing.
    pub fn take(&self) -> Vec<(UserKey, AccessId, Entry)> {
        let Queued { reads, mut others, .. } = std::mem::take(&mut *self.lock());
        let mut taken: Vec<_> = reads
            .into_iter()
            .map(|((user, mut entry), tally)| {
                entry.count = tally.count;
                entry.last = (tally.count > 1).then_some(tally.last);
                (user, tally.id, entry)
            })
            .collect();
        taken.append(&mut others);
        taken.sort_by_key(|(_, id, _)| *id);
        taken
    }

    /// Drops every queued entry of `user` (who has just been erased).
    pub fn forget(&self, user: &UserKey) {
        let mut queued = self.lock();
        queued.reads.retain(|(owner, _), _| owner != user);
        queued.others.retain(|(owner, _, _)| owner != user);
        // Positions moved: runs start afresh.
        queued.open_runs.clear();
    }

    /// Puts back entries a failed write did not store, merged with what was queued
    /// since; beyond the bound, the oldest are dropped (and counted in the returned
    /// number).
    pub fn restore(&self, failed: Vec<(UserKey, AccessId, Entry)>) -> usize {
        let mut queued = self.lock();
        for (user, id, entry) in failed {
            if entry.op == Operation::KeyRead {
                let tally = Tally { id, count: entry.count, last: entry.last.unwrap_or_else(|| micros_of(&id)) };
                queued.add_read(user, entry, tally);
            } else {
                queued.others.push((user, id, entry));
            }
        }
        // What failed is older than what is queued: no run may continue into it, and
        // positions may move below.
        queued.open_runs.clear();
        let dropped = queued.len().saturating_sub(MAX_QUEUED * 10);
        if dropped > 0 {
            let mut ids: Vec<AccessId> =
                queued.reads.values().map(|tally| tally.id).chain(queued.others.iter().map(|(_, id, _)| *id)).collect();
            ids.sort_unstable();
            let keep_from = ids[dropped];
            queued.reads.retain(|_, tally| tally.id >= keep_from);
            queued.others.retain(|(_, id, _)| *id >= keep_from);
        }
        dropped
    }
}

/// `limit=N` (1 to [`MAX_PAGE`]) and `before=<32 hex digits>`, in any order, each at
/// most once; anything else is refused.
pub fn parse_query(query: Option<&str>) -> Option<(usize, Option<AccessId>)> {
    let mut limit = None;
    let mut before = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=')? {
            ("limit", digits) if limit.is_none() => {
                if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                limit = Some(digits.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n))?);
            }
            ("before", text) if before.is_none() => {
                let mut id = [0u8; 16];
                hex::decode_to_slice(text, &mut id).ok()?;
                before = Some(id);
            }
            _ => return None,
        }
    }
    Some((limit.unwrap_or(DEFAULT_PAGE), before))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_query(None), Some((DEFAULT_PAGE, None)));
        assert_eq!(parse_query(Some("limit=7")), Some((7, None)));
        let id = "000102030405060708090a0b0c0d0e0f";
        let want: AccessId = core::array::from_fn(|i| i as u8);
        assert_eq!(parse_query(Some(&format!("before={id}&limit=500"))), Some((500, Some(want))));
        for bad in [
            "limit=0",
            "limit=501",
            "limit=",
            "limit=+5",
            "limit=1&limit=2",
            "before=00",
            "before=zz0102030405060708090a0b0c0d0e0f",
            "version=1",
            "limit",
            "limit=99999999999999999999",
        ] {
            assert_eq!(parse_query(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let queue = Queue::new().unwrap();
        let ids: Vec<AccessId> = (0..1000).map(|_| queue.next_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.windows(2).all(|w| w[0][..8] <= w[1][..8]));
    }

    fn read(version: u64) -> Entry {
        Entry {
            op: Operation::KeyRead,
            session: Some([7; 8]),
            address: IpAddr::from([127, 0, 0, 1]),
            credential: None,
            version: Some(version),
            first_version: None,
            count: 1,
            last: None,
        }
    }

    #[test]
    fn identical_reads_share_one_entry_with_a_count_and_other_operations_do_not() {
        let queue = Queue::new().unwrap();
        let user = UserKey { namespace: [1; 32], user: [2; 32] };
        let delete = Entry { op: Operation::KeyDelete, version: None, ..read(1) };
        for _ in 0..5 {
            queue.push(user, read(1));
        }
        queue.push(user, delete.clone());
        queue.push(user, read(2));
        queue.push(user, delete);
        let taken = queue.take();
        let summary: Vec<_> = taken.iter().map(|(_, _, e)| (e.op, e.version, e.count, e.last.is_some())).collect();
        assert_eq!(
            summary,
            [
                (Operation::KeyRead, Some(1), 5, true),
                (Operation::KeyDelete, None, 1, false),
                (Operation::KeyRead, Some(2), 1, false),
                (Operation::KeyDelete, None, 1, false),
            ],
            "oldest first"
        );
        assert!(taken[0].2.last.unwrap() >= micros_of(&taken[0].1));
        assert!(queue.take().is_empty());
    }

    fn write(version: u64) -> Entry {
        Entry { op: Operation::KeyWrite, ..read(version) }
    }

    #[test]
    fn a_run_of_writes_by_one_session_is_one_entry_and_anything_else_ends_it() {
        let queue = Queue::new().unwrap();
        let user = UserKey { namespace: [1; 32], user: [2; 32] };
        let other_user = UserKey { user: [3; 32], ..user };
        let elsewhere = Entry { address: IpAddr::from([10, 0, 0, 9]), ..write(5) };
        let other_session = Entry { session: Some([8; 8]), ..write(7) };
        let logout = Entry { op: Operation::Logout, version: None, ..read(0) };
        for version in 1..=3 {
            queue.push(user, write(version));
            queue.push(other_user, write(version)); // Another user's writes do not end it,
            queue.push(user, read(version)); // nor do reads.
        }
        queue.push(user, write(4));
        queue.push(user, elsewhere); // Another address starts a run of its own,
        queue.push(user, write(6)); // and so does going back to the first.
        queue.push(user, other_session);
        queue.push(user, logout);
        queue.push(user, write(8)); // After another operation, a new run.
        queue.push(user, write(9));
        let taken = queue.take();
        let writes: Vec<_> = taken
            .iter()
            .filter(|(owner, _, e)| *owner == user && e.op == Operation::KeyWrite)
            .map(|(_, _, e)| (e.first_version, e.version, e.count, e.last.is_some()))
            .collect();
        assert_eq!(
            writes,
            [
                (Some(1), Some(4), 4, true),
                (None, Some(5), 1, false),
                (None, Some(6), 1, false),
                (None, Some(7), 1, false),
                (Some(8), Some(9), 2, true),
            ]
        );
        let others: Vec<_> =
            taken.iter().filter(|(owner, _, _)| *owner == other_user).map(|(_, _, e)| e.count).collect();
        assert_eq!(others, [3]);
        let run = &taken.iter().find(|(owner, _, e)| *owner == user && e.count == 4).unwrap();
        assert!(run.2.last.unwrap() > micros_of(&run.1), "until the last write");

        // A run does not reach across a write of the queue, nor into what a failed write
        // put back; a run that was open then starts again.
        queue.push(user, write(10));
        let failed = queue.take();
        queue.push(user, write(11));
        queue.restore(failed);
        queue.push(user, write(12));
        queue.push(user, write(13));
        let counts: Vec<_> = queue.take().iter().map(|(_, _, e)| (e.version, e.count)).collect();
        assert_eq!(counts, [(Some(10), 1), (Some(11), 1), (Some(13), 2)]);
    }

    #[test]
    fn a_failed_write_is_merged_back_and_the_queue_stays_bounded() {
        let queue = Queue::new().unwrap();
        let user = UserKey { namespace: [1; 32], user: [2; 32] };
        queue.push(user, read(1));
        queue.push(user, read(1));
        let failed = queue.take();
        queue.push(user, read(1));
        queue.push(user, read(2));
        assert_eq!(queue.restore(failed.clone()), 0);
        let taken = queue.take();
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].1, taken[0].2.count), (failed[0].1, 3), "the first time kept, the counts summed");
        let many: Vec<_> = (0..MAX_QUEUED * 10 + 5).map(|v| (user, queue.next_id(), read(v as u64))).collect();
        assert_eq!(queue.restore(many), 5);
        assert_eq!(queue.take().first().and_then(|(_, _, e)| e.version), Some(5));
    }
}
