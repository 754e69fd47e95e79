//! The escrow's memory of opened sessions and keys: a map bounded by a byte budget
//! whose invalidations a racing load cannot undo.

use std::sync::Arc;

use super::{Key, Session};
use crate::store::{Pseudonym, UserKey};

/// What a node that owns its store keeps opened in memory, so that a GET need not read
/// and open the session and the user's key on every request. Bounded by a byte budget
/// (`cache_bytes`: a quarter for sessions, a quarter for user keys, half for the latest
/// keys; each kind starts again empty when its share is full), and invalidated by every operation that removes what it holds: logout,
/// `DELETE /key`, erasure. Keys are zeroized when dropped.
///
/// The latest version of each user's key is kept too, opened (zeroized when dropped):
/// the user's key that opens it is already held beside it, so keeping the result adds
/// nothing a reader of this memory would not have, and saves an AEAD opening per GET.
/// Every PUT, `DELETE /key` and erasure drops the user's entry once its store write has
/// returned (also when that failed, since it may have happened), and a read that raced
/// it is not kept.
pub(super) struct Cache {
    pub(super) sessions: Memo<Pseudonym, Session>,
    pub(super) deks: Memo<UserKey, Arc<crate::crypto::vault::UserDek>>,
    pub(super) latest: Memo<UserKey, Arc<Key>>,
}

impl Cache {
    pub(super) fn new(bytes: usize) -> Self {
        Self { sessions: Memo::new(bytes / 4), deks: Memo::new(bytes / 4), latest: Memo::new(bytes / 2) }
    }
}

/// What an entry holds in memory, near enough to budget by: its own size and what it
/// points to.
pub(super) trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Session {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.secret.len() + self.credential.as_ref().map_or(0, String::len)
    }
}

impl Weigh for Arc<crate::crypto::vault::UserDek> {
    fn weight(&self) -> usize {
        2 * std::mem::size_of::<usize>() + std::mem::size_of::<crate::crypto::vault::UserDek>() + self.wrapped().len()
    }
}

impl Weigh for Arc<Key> {
    fn weight(&self) -> usize {
        2 * std::mem::size_of::<usize>() + std::mem::size_of::<Key>() + self.content_type.len() + self.bytes.len()
    }
}

/// A map bounded by a byte budget whose invalidations cannot be undone by a load that
/// raced them: a value read from the store before an invalidation is not inserted after
/// it.
pub(super) struct Memo<K, V> {
    inner: std::sync::Mutex<MemoState<K, V>>,
    budget: usize,
}

struct MemoState<K, V> {
    epoch: u64,
    entries: std::collections::HashMap<K, V>,
    /// The summed weight of `entries`.
    bytes: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone + Weigh> Memo<K, V> {
    pub(super) fn new(budget: usize) -> Self {
        let state = MemoState { epoch: 0, entries: std::collections::HashMap::new(), bytes: 0 };
        Self { inner: std::sync::Mutex::new(state), budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoState<K, V>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn weight(value: &V) -> usize {
        std::mem::size_of::<K>() + value.weight()
    }

    /// The value, and the epoch to pass to [`Memo::insert`] after a load.
    pub(super) fn get(&self, key: &K) -> (Option<V>, u64) {
        let inner = self.lock();
        (inner.entries.get(key).cloned(), inner.epoch)
    }

    /// Keeps a value loaded since `epoch`, unless something was invalidated meanwhile.
    /// When the budget is spent the memo starts again empty; a value heavier than the
    /// whole budget is not kept.
    pub(super) fn insert(&self, epoch: u64, key: K, value: V) {
        let weight = Self::weight(&value);
        let mut inner = self.lock();
        if inner.epoch != epoch || weight > self.budget {
            return;
        }
        if let Some(old) = inner.entries.remove(&key) {
            inner.bytes -= Self::weight(&old);
        }
        if inner.bytes + weight > self.budget {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += weight;
        inner.entries.insert(key, value);
    }

    /// Drops every entry `doomed` picks, and refuses loads that started before.
    pub(super) fn invalidate(&self, doomed: impl Fn(&K, &V) -> bool) {
        let mut inner = self.lock();
        let MemoState { epoch, entries, bytes } = &mut *inner;
        *epoch += 1;
        entries.retain(|key, value| {
            let keep = !doomed(key, value);
            if !keep {
                *bytes -= Self::weight(value);
            }
            keep
        });
    }

    /// Drops the entry for `key`, and refuses loads that started before.
    pub(super) fn forget(&self, key: &K) {
        let mut inner = self.lock();
        inner.epoch += 1;
        if let Some(old) = inner.entries.remove(key) {
            inner.bytes -= Self::weight(&old);
        }
    }

    /// Changes a held value in place; `change` must not change its weight.
    pub(super) fn update(&self, key: &K, change: impl FnOnce(&mut V)) {
        if let Some(value) = self.lock().entries.get_mut(key) {
            change(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    impl Weigh for &'static str {
        fn weight(&self) -> usize {
            std::mem::size_of::<Self>()
        }
    }

    impl Weigh for Vec<u8> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    /// What the memo says it holds is what it holds.
    fn assert_counted(memo: &Memo<usize, Vec<u8>>) {
        let inner = memo.lock();
        let held: usize = inner.entries.values().map(Memo::<usize, Vec<u8>>::weight).sum();
        assert_eq!(inner.bytes, held);
        assert!(inner.bytes <= memo.budget);
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_kept() {
        let memo: Memo<u8, &str> = Memo::new(1024);
        let (missing, epoch) = memo.get(&1);
        assert_eq!(missing, None);
        // A logout lands between the load's store read and its insert.
        memo.invalidate(|key, _| *key == 1);
        memo.insert(epoch, 1, "stale");
        assert_eq!(memo.get(&1).0, None, "a revoked entry came back");
        let (_, epoch) = memo.get(&1);
        memo.insert(epoch, 1, "fresh");
        assert_eq!(memo.get(&1).0, Some("fresh"));
        memo.update(&1, |value| *value = "touched");
        assert_eq!(memo.get(&1).0, Some("touched"));
        memo.invalidate(|_, value| *value == "touched");
        assert_eq!(memo.get(&1).0, None);
        // Forgetting one key (a PUT, a logout) refuses a raced load the same way.
        let (_, epoch) = memo.get(&2);
        memo.forget(&2);
        memo.insert(epoch, 2, "stale");
        assert_eq!(memo.get(&2).0, None, "a forgotten entry came back");
    }

    #[test]
    fn the_memo_holds_at_most_its_byte_budget() {
        let entry = std::mem::size_of::<usize>() + 1000;
        let memo: Memo<usize, Vec<u8>> = Memo::new(10 * entry);
        for key in 0..25 {
            let (_, epoch) = memo.get(&key);
            memo.insert(epoch, key, vec![key as u8; 1000]);
            assert_counted(&memo);
        }
        // Past the budget it started again: the newest is held, and never more than ten.
        assert_eq!(memo.get(&24).0, Some(vec![24; 1000]));
        assert_eq!(memo.lock().entries.len(), 5);
        // Replacing an entry counts the new weight, not both.
        let (_, epoch) = memo.get(&24);
        memo.insert(epoch, 24, vec![1; 10]);
        assert_counted(&memo);
        assert_eq!(memo.lock().entries.len(), 5);
        // What is dropped is no longer counted.
        memo.forget(&24);
        memo.invalidate(|key, _| *key == 23);
        assert_counted(&memo);
        assert_eq!(memo.lock().entries.len(), 3);
        // A value heavier than the whole budget is not kept, and evicts nothing.
        let (_, epoch) = memo.get(&99);
        memo.insert(epoch, 99, vec![0; 10 * entry]);
        assert_eq!(memo.get(&99).0, None);
        assert_eq!(memo.lock().entries.len(), 3);
        assert_counted(&memo);
    }

    #[test]
    fn an_opened_key_weighs_what_it_holds() {
        let key = |bytes: usize| {
            Arc::new(Key {
                version: 1,
                content_type: "application/octet-stream".into(),
                bytes: Zeroizing::new(vec![7; bytes]),
            })
        };
        assert_eq!(key(64 * 1024).weight() - key(0).weight(), 64 * 1024);
        // So a budget holds as many of the largest keys as it has room for, not 16 384.
        let memo: Memo<UserKey, Arc<Key>> = Memo::new(1024 * 1024);
        for n in 0..100u8 {
            let user = UserKey { namespace: [n; 32], user: [n; 32] };
            let (_, epoch) = memo.get(&user);
            memo.insert(epoch, user, key(64 * 1024));
        }
        assert!(memo.lock().entries.len() < 16);
        assert!(memo.lock().bytes <= 1024 * 1024);
    }
}
