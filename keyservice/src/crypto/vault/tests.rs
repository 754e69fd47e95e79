//! The vault's unit tests: a master key that stops answering.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::*;
use crate::crypto::master::MasterSource;
use crate::store::MemoryStore;

/// A master key whose calls wait while its gate is closed, as a token that stops
/// answering does; it counts the calls that reach it.
struct Stalling {
    inner: Arc<dyn MasterSource>,
    closed: Mutex<bool>,
    opened: Condvar,
    in_flight: AtomicUsize,
    most_at_once: AtomicUsize,
    reached: AtomicUsize,
}

impl Stalling {
    fn new() -> Self {
        Self {
            inner: MasterKey::from_bytes([7; 32]).source(),
            closed: Mutex::new(false),
            opened: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            reached: AtomicUsize::new(0),
        }
    }

    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }

    fn through<T>(&self, call: impl FnOnce(&dyn MasterSource) -> T) -> T {
        self.reached.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let closed = self.closed.lock().unwrap();
        drop(self.opened.wait_while(closed, |closed| *closed).unwrap());
        let result = call(&*self.inner);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
}

impl MasterSource for Stalling {
    fn id(&self) -> [u8; 8] {
        self.inner.id()
    }

    fn wrap(&self, aad: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, SealError> {
        self.through(|inner| inner.wrap(aad, key))
    }

    fn unwrap(&self, aad: &[u8], envelope: &[u8], kind: &'static str) -> Result<Zeroizing<[u8; 32]>, SealError> {
        self.through(|inner| inner.unwrap(aad, envelope, kind))
    }
}

/// Requests that need the master key while it does not answer (a namespace's first use)
/// each wait until the deadline and are refused; one call at a time reaches the key, so
/// one blocking thread waits on it, however many requests come; namespaces already open
/// keep working; and once the key answers again, the new namespace opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_key_that_stops_answering_holds_one_thread_and_refuses_only_new_namespaces() {
    let stalling = Arc::new(Stalling::new());
    let store = Arc::new(MemoryStore::new());
    let mut vault = Vault::open(&MasterKey::from_source(stalling.clone()), &*store).await.unwrap();
    vault.deadline = Duration::from_millis(300);
    let vault = Arc::new(vault);
    let user = |namespace: u8, user: u8| UserKey { namespace: [namespace; 32], user: [user; 32] };
    vault.user_dek(&*store, &user(1, 1), IfAbsent::Create(None)).await.unwrap().unwrap();

    stalling.set_closed(true);
    let reached_before = stalling.reached.load(Ordering::SeqCst);
    let waiting: Vec<_> = (0..16)
        .map(|i| {
            let (vault, store) = (vault.clone(), store.clone());
            tokio::spawn(async move { vault.user_dek(&*store, &user(2, i), IfAbsent::Create(None)).await })
        })
        .collect();
    let mut refusals = Vec::new();
    for request in waiting {
        refusals.push(request.await.unwrap().err());
    }
    let (reached, most_at_once) =
        (stalling.reached.load(Ordering::SeqCst) - reached_before, stalling.most_at_once.load(Ordering::SeqCst));
    // Answering again before asserting: a failed assertion must not leave blocking
    // threads waiting forever, which the runtime would wait for.
    stalling.set_closed(false);
    for refused in refusals {
        assert!(matches!(refused, Some(VaultError::MasterKeyUnavailable(_))), "{refused:?}");
    }
    assert_eq!(reached, 1, "one call reached the stalled key");
    assert_eq!(most_at_once, 1);
    // A namespace already open does not need the master key.
    vault.user_dek(&*store, &user(1, 2), IfAbsent::Create(None)).await.unwrap().unwrap();

    vault.user_dek(&*store, &user(2, 1), IfAbsent::Create(None)).await.unwrap().unwrap();
}
