//! The escrow's unit tests.

use super::history::ACCESS_CHUNK;
use super::*;
use crate::access::Entry;
use crate::store::Records;

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
    let device = Device::for_tests(Session {
        id: [0; 32],
        user,
        credential: None,
        secret: Secret::new("unused"),
        expires_at: UnixTime::MAX,
        last_used: 0,
    });
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
