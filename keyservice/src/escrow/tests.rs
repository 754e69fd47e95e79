//! The escrow's unit tests.

use super::history::ACCESS_CHUNK;
use super::keys::MAX_PUT_ATTEMPTS;
use super::*;
use crate::access::Entry;
use crate::store::Records;
use crate::store::{Precondition, PutOutcome};

/// A device of `user` in a session `id` that never expires (the store need not hold it).
fn device_of(user: UserKey, id: Pseudonym) -> Device {
    Device::for_tests(Session {
        id,
        user,
        credential: None,
        secret: Secret::new("unused"),
        expires_at: UnixTime::MAX,
        last_used: 0,
    })
}

#[tokio::test]
async fn a_chunk_the_store_refuses_leaves_what_was_written_and_requeues_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
    let ledger = ErasureLedger::open(&dir.path().join("ledger")).unwrap();
    let memory = Arc::new(crate::store::MemoryStore::new());
    let policy = Policy { max_key_versions: 5, session_idle_secs: 3600, access_history_days: 30, cache_bytes: 1 << 20 };
    let escrow = Escrow::open(memory.clone(), &master, ledger, policy).await.unwrap();
    let user = UserKey { namespace: [1; 32], user: [2; 32] };
    let total = 2 * ACCESS_CHUNK + 7;
    for version in 0..total as u64 {
        // Each from another session, so that no two are one run of writes.
        let entry = Entry {
            op: access::Operation::KeyWrite,
            session: Some(version.to_be_bytes()),
            address: std::net::IpAddr::from([127, 0, 0, 1]),
            credential: None,
            version: Some(version),
            first_version: None,
            count: 1,
            last: None,
        };
        escrow.record_access(user, entry).await.unwrap();
    }
    let stored = || async { memory.accesses(&user, None, usize::MAX).await.unwrap().len() };

    memory.refuse_appends_after(Some(1));
    assert!(escrow.flush_accesses().await.is_err());
    assert_eq!(stored().await, ACCESS_CHUNK, "the first chunk stays written");
    memory.refuse_appends_after(None);
    escrow.flush_accesses().await.unwrap();
    assert_eq!(stored().await, total, "the rest was queued again, and nothing twice");
    let device = device_of(user, [0; 32]);
    let versions: std::collections::BTreeSet<_> = escrow
        .access_history(&device, None, access::MAX_PAGE)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions.len(), total);
}

/// A master key that counts how often it is asked, around one held in memory.
struct Counting {
    inner: Arc<dyn crate::crypto::master::MasterSource>,
    calls: std::sync::atomic::AtomicUsize,
}

impl crate::crypto::master::MasterSource for Counting {
    fn id(&self) -> [u8; 8] {
        self.inner.id()
    }

    fn wrap(&self, aad: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, crate::crypto::seal::SealError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.wrap(aad, key)
    }

    fn unwrap(
        &self,
        aad: &[u8],
        envelope: &[u8],
        kind: &'static str,
    ) -> Result<Zeroizing<[u8; 32]>, crate::crypto::seal::SealError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.unwrap(aad, envelope, kind)
    }
}

/// The master key (which may be a token's or a KMS's, slow and far away) wraps the
/// keyring only: it is asked at start and when a namespace is first used, never per
/// request, even with no memory of opened keys.
#[tokio::test]
async fn the_master_key_is_asked_at_start_and_per_new_namespace_never_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(Counting {
        inner: MasterKey::from_bytes([7; 32]).source(),
        calls: std::sync::atomic::AtomicUsize::new(0),
    });
    let calls = || counting.calls.load(std::sync::atomic::Ordering::Relaxed);
    let master = MasterKey::from_source(counting.clone());
    let ledger = ErasureLedger::open(&dir.path().join("ledger")).unwrap();
    let policy = Policy { max_key_versions: 5, session_idle_secs: 3600, access_history_days: 30, cache_bytes: 0 };
    let escrow = Escrow::open(Arc::new(crate::store::MemoryStore::new()), &master, ledger, policy).await.unwrap();
    let at_start = calls();
    assert!(at_start > 0, "the index and system keys are the master key's");

    let device =
        |namespace: u8, user: u8| device_of(UserKey { namespace: [namespace; 32], user: [user; 32] }, [user; 32]);
    let write_and_read = |device: Device| {
        let escrow = &escrow;
        async move {
            let bytes = Zeroizing::new(b"key".to_vec());
            escrow.store_key(device.user(), "text/plain".into(), bytes, &Precondition::None, 1).await.unwrap();
            assert_eq!(&escrow.get_key(&device, None).await.unwrap().unwrap().bytes[..], b"key");
        }
    };
    write_and_read(device(1, 1)).await;
    let first_namespace = calls();
    assert!(first_namespace > at_start, "a namespace's KEK is wrapped by the master key");
    for user in 2..20 {
        write_and_read(device(1, user)).await;
    }
    assert_eq!(calls(), first_namespace, "users and requests of a known namespace never ask it");
    write_and_read(device(2, 1)).await;
    assert!(calls() > first_namespace, "a second namespace asks it again");
}

/// A write whose user's keys are deleted after it read their DEK is sealed again under
/// the new DEK; one that loses that race every time gives up after
/// [`MAX_PUT_ATTEMPTS`], having written nothing.
#[tokio::test]
async fn a_put_racing_deletions_seals_again_and_gives_up_having_written_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::from_bytes([7; 32]);
    let ledger = ErasureLedger::open(&dir.path().join("ledger")).unwrap();
    let memory = Arc::new(crate::store::MemoryStore::new());
    let policy = Policy { max_key_versions: 5, session_idle_secs: 3600, access_history_days: 30, cache_bytes: 1 << 20 };
    let escrow = Escrow::open(memory.clone(), &master, ledger, policy).await.unwrap();
    let user = UserKey { namespace: [1; 32], user: [2; 32] };
    let put = |bytes: &'static [u8]| {
        escrow.store_key(&user, "text/plain".into(), Zeroizing::new(bytes.to_vec()), &Precondition::None, 1)
    };
    let device = device_of(user, [0; 32]);
    assert_eq!(put(b"first").await.unwrap(), PutOutcome::Stored { version: 1 });

    // Deleted before every attempt but the last: sealed again each time, then stored
    // under the DEK the user has now, and readable.
    memory.delete_before_puts(MAX_PUT_ATTEMPTS as usize - 1);
    assert_eq!(put(b"second").await.unwrap(), PutOutcome::Stored { version: 1 });
    assert_eq!(&escrow.get_key(&device, None).await.unwrap().unwrap().bytes[..], b"second");

    // Deleted before every attempt: nothing is written, and the caller is told.
    memory.delete_before_puts(MAX_PUT_ATTEMPTS as usize);
    assert_eq!(put(b"third").await.unwrap(), PutOutcome::DekChanged);
    assert!(memory.list_keys(&user).await.unwrap().is_empty(), "a version was written");
    assert!(escrow.get_key(&device, None).await.unwrap().is_none());
    memory.delete_before_puts(0);
    assert_eq!(put(b"fourth").await.unwrap(), PutOutcome::Stored { version: 1 });
}
