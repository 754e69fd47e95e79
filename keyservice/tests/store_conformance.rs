//! One suite of the `Store` contract, run against every backend.

use std::sync::Arc;

use keyservice::store::{EntityTags, NewKey, PendingInit, Precondition, PutOutcome, Redeemed, Store, UserRef};
use keyservice::{MemoryStore, SledStore};
use keyservice_client::protocol::Secret;
use zeroize::Zeroizing;

const NOW: u64 = 1_800_000_000;

fn user(id: &str) -> UserRef {
    UserRef { namespace: "ns".into(), user_id: id.into() }
}

fn key(bytes: &[u8]) -> NewKey {
    NewKey { content_type: "application/octet-stream".into(), bytes: Zeroizing::new(bytes.to_vec()), created_at: NOW }
}

async fn put(store: &dyn Store, who: &str, bytes: &[u8], precondition: Precondition) -> PutOutcome {
    store.put_key(&user(who), key(bytes), &precondition).await.unwrap()
}

/// Runs every check of the contract against a fresh store from `make`.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn an_init_is_redeemed_at_most_once() {
                let (store, _guard) = $make;
                redeem_once(store).await;
            }

            #[tokio::test]
            async fn expired_inits_are_consumed_without_a_session() {
                let (store, _guard) = $make;
                expired_init(&*store).await;
            }

            #[tokio::test]
            async fn key_versions_count_up_per_user() {
                let (store, _guard) = $make;
                versions(&*store).await;
            }

            #[tokio::test]
            async fn preconditions_are_atomic() {
                let (store, _guard) = $make;
                preconditions(store).await;
            }

            #[tokio::test]
            async fn user_ids_cannot_reach_a_neighbour() {
                let (store, _guard) = $make;
                neighbours(&*store).await;
            }

            #[tokio::test]
            async fn sweep_deletes_only_what_expired() {
                let (store, _guard) = $make;
                sweep(&*store).await;
            }

            #[tokio::test]
            async fn replay_floor_and_nonces() {
                let (store, _guard) = $make;
                replay_state(&*store).await;
            }
        }
    };
}

conformance!(memory, (Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()));
conformance!(sled, {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(SledStore::open(dir.path()).unwrap()) as Arc<dyn Store>, dir)
});

fn digest(n: u8) -> [u8; 64] {
    [n; 64]
}

async fn add_init(store: &dyn Store, n: u8, token: &str, expires_at: u64) {
    store.add_pending_init(digest(n), PendingInit { token: Secret::new(token), expires_at }).await.unwrap();
}

async fn redeem_once(store: Arc<dyn Store>) {
    add_init(&*store, 1, "init-token-1", NOW + 60).await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.redeem_init(&digest(1), NOW, [i; 32], user("u"), NOW + 3600).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| **o == Redeemed::Session).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == Redeemed::UnknownInit).count(), 15);
    let winner = (0..16u8).find(|i| outcomes[usize::from(*i)] == Redeemed::Session).unwrap();
    let session = store.session(&[winner; 32]).await.unwrap().unwrap();
    assert_eq!(session.secret.expose(), "init-token-1");
    assert_eq!(session.user, user("u"));
    assert_eq!(session.expires_at, NOW + 3600);
    assert!(store.session(&[winner.wrapping_add(1); 32]).await.unwrap().is_none());
}

async fn expired_init(store: &dyn Store) {
    add_init(store, 2, "old", NOW).await;
    assert_eq!(store.redeem_init(&digest(2), NOW, [1; 32], user("u"), NOW + 1).await.unwrap(), Redeemed::ExpiredInit);
    assert!(store.session(&[1; 32]).await.unwrap().is_none());
    assert_eq!(store.redeem_init(&digest(2), NOW, [1; 32], user("u"), NOW + 1).await.unwrap(), Redeemed::UnknownInit);
}

async fn versions(store: &dyn Store) {
    assert!(store.get_key(&user("a"), None).await.unwrap().is_none());
    for (i, bytes) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
        assert_eq!(put(store, "a", bytes, Precondition::None).await, PutOutcome::Stored { version: i as u64 + 1 });
    }
    let latest = store.get_key(&user("a"), None).await.unwrap().unwrap();
    assert_eq!((latest.version, &latest.bytes[..]), (3, &b"three"[..]));
    let first = store.get_key(&user("a"), Some(1)).await.unwrap().unwrap();
    assert_eq!((first.version, &first.bytes[..], first.created_at), (1, &b"one"[..], NOW));
    assert!(store.get_key(&user("a"), Some(4)).await.unwrap().is_none());
    // Versions beyond 255 sort numerically, not bytewise-by-accident.
    for _ in 3..300 {
        put(store, "b", b"x", Precondition::None).await;
    }
    assert_eq!(put(store, "b", b"last", Precondition::None).await, PutOutcome::Stored { version: 298 });
    assert_eq!(&store.get_key(&user("b"), None).await.unwrap().unwrap().bytes[..], b"last");
}

async fn preconditions(store: Arc<dyn Store>) {
    let any = || Precondition::IfMatch(EntityTags::Any);
    assert_eq!(put(&*store, "p", b"x", any()).await, PutOutcome::PreconditionFailed);
    let first = Precondition::IfNoneMatch(EntityTags::Any);
    assert_eq!(put(&*store, "p", b"1", first.clone()).await, PutOutcome::Stored { version: 1 });
    assert_eq!(put(&*store, "p", b"x", first).await, PutOutcome::PreconditionFailed);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            put(&*store, "p", &[i], Precondition::IfMatch(EntityTags::Versions(vec![1]))).await
        }));
    }
    let mut stored = 0;
    for task in tasks {
        if let PutOutcome::Stored { version } = task.await.unwrap() {
            assert_eq!(version, 2);
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(put(&*store, "p", b"3", any()).await, PutOutcome::Stored { version: 3 });
}

async fn neighbours(store: &dyn Store) {
    // Without length prefixes these pairs would share storage keys.
    let a = UserRef { namespace: "a".into(), user_id: "bc".into() };
    let b = UserRef { namespace: "ab".into(), user_id: "c".into() };
    store.put_key(&a, key(b"a"), &Precondition::None).await.unwrap();
    assert!(store.get_key(&b, None).await.unwrap().is_none());
    put(store, "1", b"short", Precondition::None).await;
    assert!(store.get_key(&user("10"), None).await.unwrap().is_none());
    assert!(store.get_key(&user(""), None).await.unwrap().is_none());
}

async fn sweep(store: &dyn Store) {
    add_init(store, 1, "expired", NOW - 1).await;
    add_init(store, 2, "live", NOW + 60).await;
    add_init(store, 3, "to-session", NOW + 60).await;
    add_init(store, 4, "to-old-session", NOW + 60).await;
    store.redeem_init(&digest(3), NOW, [3; 32], user("u"), NOW + 60).await.unwrap();
    store.redeem_init(&digest(4), NOW - 10, [4; 32], user("u"), NOW - 5).await.unwrap();
    store.remember_nonce(1, NOW - 1000).await.unwrap();
    store.remember_nonce(2, NOW).await.unwrap();
    let swept = store.sweep(NOW, NOW - 500).await.unwrap();
    assert_eq!((swept.inits, swept.sessions, swept.nonces), (1, 1, 1));
    assert_eq!(store.redeem_init(&digest(1), NOW - 100, [9; 32], user("u"), NOW).await.unwrap(), Redeemed::UnknownInit);
    assert!(store.session(&[3; 32]).await.unwrap().is_some());
    assert!(store.session(&[4; 32]).await.unwrap().is_none());
    assert_eq!(store.redeem_init(&digest(2), NOW, [2; 32], user("u"), NOW + 1).await.unwrap(), Redeemed::Session);
    assert_eq!(store.remembered_nonces(0).await.unwrap(), vec![(2, NOW)]);
}

async fn replay_state(store: &dyn Store) {
    assert_eq!(store.replay_floor().await.unwrap(), 0);
    store.set_replay_floor(NOW).await.unwrap();
    assert_eq!(store.replay_floor().await.unwrap(), NOW);
    store.remember_nonce(7, NOW + 100).await.unwrap();
    store.remember_nonce(8, NOW + 10).await.unwrap();
    let mut nonces = store.remembered_nonces(NOW + 50).await.unwrap();
    nonces.sort();
    assert_eq!(nonces, vec![(7, NOW + 100)]);
    store.flush().await.unwrap();
}

#[tokio::test]
async fn sled_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        add_init(&store, 1, "pending", NOW + 60).await;
        add_init(&store, 2, "redeemed", NOW + 60).await;
        store.redeem_init(&digest(2), NOW, [2; 32], user("u"), NOW + 60).await.unwrap();
        // Nodes larger than a quarter segment (128 KiB) go to blob files, which sled
        // itself never fsyncs; enough large versions make sure some exist.
        for i in 0..24u8 {
            store.put_key(&user("big"), key(&vec![i; 64 * 1024]), &Precondition::None).await.unwrap();
        }
        store.set_replay_floor(NOW).await.unwrap();
        store.remember_nonce(5, NOW + 9).await.unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
    assert!(blobs > 0, "the blob path was not exercised");
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.redeem_init(&digest(1), NOW, [1; 32], user("v"), NOW + 60).await.unwrap(), Redeemed::Session);
    assert_eq!(store.session(&[2; 32]).await.unwrap().unwrap().secret.expose(), "redeemed");
    for i in 0..24u8 {
        let version = store.get_key(&user("big"), Some(u64::from(i) + 1)).await.unwrap().unwrap();
        assert_eq!(&version.bytes[..], &vec![i; 64 * 1024][..]);
    }
    assert_eq!(store.replay_floor().await.unwrap(), NOW);
    assert_eq!(store.remembered_nonces(0).await.unwrap(), vec![(5, NOW + 9)]);
}

#[tokio::test]
async fn sled_refuses_a_directory_another_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    assert!(SledStore::open(dir.path()).is_err());
}
