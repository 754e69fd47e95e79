//! One suite of the `Store` contract, run against every backend: memory, sled, and a
//! real PostgreSQL (see `support/postgres.rs`).

#[path = "support/postgres.rs"]
mod pg;

use std::sync::Arc;

use keyservice::store::{
    AccessId, AccessRecord, Coordination, EntityTags, Erased, InitRecord, Precondition, Pseudonym, PutOutcome, Records,
    Redeemed, SessionRecord, Store, UserKey, Writer,
};
use keyservice::{MemoryStore, PostgresStore, SledStore};

const NOW: u64 = 1_800_000_000;
const KEEP_ALL: u64 = u64::MAX;

fn user(n: u8) -> UserKey {
    UserKey { namespace: [0xaa; 32], user: [n; 32] }
}

async fn put(store: &dyn Store, who: u8, bytes: &[u8], precondition: Precondition) -> PutOutcome {
    put_keep(store, who, bytes, precondition, KEEP_ALL).await
}

async fn put_keep(store: &dyn Store, who: u8, bytes: &[u8], precondition: Precondition, keep: u64) -> PutOutcome {
    let sealed = bytes.to_vec();
    let dek = dek(store, who).await;
    store
        .put_key(&user(who), by_operator(&dek), &precondition, keep, NOW, Box::new(move |_| Ok(sealed.clone())))
        .await
        .unwrap()
}

/// The operator's writer (in no session) of a version sealed under `dek`.
fn by_operator(dek: &[u8]) -> Writer<'_> {
    Writer { dek, session: None }
}

/// The user's wrapped DEK, made (as `[who]`) when they have none.
async fn dek(store: &dyn Store, who: u8) -> Vec<u8> {
    store.create_user_dek(&user(who), vec![who], None).await.unwrap().unwrap()
}

async fn add_init(store: &dyn Store, n: u8, expires_at: u64) {
    store.add_pending_init([n; 32], InitRecord { sealed: vec![n; 40], expires_at }).await.unwrap();
}

/// Redeems init `n` for a session `sid` of `who`, whose sealed secret is the init's.
async fn redeem(store: &dyn Store, n: u8, now: u64, sid: Pseudonym, who: u8, expires_at: u64) -> Redeemed {
    let make = Box::new(move |init: &InitRecord| {
        // Odd inits make sessions with a credential, even ones without.
        let credential = (n % 2 == 1).then(|| vec![n; 30]);
        Ok(SessionRecord { user: user(who), sealed: init.sealed.clone(), credential, expires_at, last_used: now })
    });
    store.redeem_init(&[n; 32], now, sid, make).await.unwrap()
}

/// Runs every check of the contract against a fresh store from `make`.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn keyring_entries_are_created_once() {
                let (store, _guard) = $make;
                keyring(&*store).await;
            }

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
            async fn retention_prunes_the_oldest() {
                let (store, _guard) = $make;
                retention(&*store).await;
            }

            #[tokio::test]
            async fn preconditions_are_atomic() {
                let (store, _guard) = $make;
                preconditions(store).await;
            }

            #[tokio::test]
            async fn deleting_and_erasing_remove_exactly_one_user() {
                let (store, _guard) = $make;
                erasure(&*store).await;
            }

            #[tokio::test]
            async fn sessions_can_be_listed_and_revoked() {
                let (store, _guard) = $make;
                sessions(&*store).await;
            }

            #[tokio::test]
            async fn sweep_deletes_only_what_expired() {
                let (store, _guard) = $make;
                sweep(&*store).await;
            }

            #[tokio::test]
            async fn access_history_pages_newest_first_and_is_erased_and_purged() {
                let (store, _guard) = $make;
                access_history(&*store).await;
            }

            #[tokio::test]
            async fn replay_floor_and_nonces() {
                let (store, _guard) = $make;
                replay_state(&*store).await;
            }

            #[tokio::test]
            async fn concurrent_calls_each_get_their_own_answer() {
                let (store, _guard) = $make;
                concurrent(store).await;
            }
        }
    };
}

conformance!(memory, (Arc::new(MemoryStore::new()) as Arc<dyn Store>, ()));
conformance!(sled, {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(SledStore::open(dir.path()).unwrap()) as Arc<dyn Store>, dir)
});
conformance!(postgres, {
    let database = crate::pg::shared().database().await;
    (Arc::new(PostgresStore::open(&database.config(), "node-a").await.unwrap()) as Arc<dyn Store>, database)
});

async fn keyring(store: &dyn Store) {
    assert_eq!(store.keyring_get(b"system/index").await.unwrap(), None);
    assert_eq!(store.keyring_create(b"system/index", vec![1]).await.unwrap(), vec![1]);
    assert_eq!(store.keyring_create(b"system/index", vec![2]).await.unwrap(), vec![1], "the first one stays");
    store.keyring_create(b"kek/x", vec![3]).await.unwrap();
    store.keyring_replace(vec![(b"system/index".to_vec(), vec![4]), (b"kek/x".to_vec(), vec![5])]).await.unwrap();
    let mut entries = store.keyring_list().await.unwrap();
    entries.sort();
    assert_eq!(entries, vec![(b"kek/x".to_vec(), vec![5]), (b"system/index".to_vec(), vec![4])]);

    assert_eq!(store.user_dek(&user(1)).await.unwrap(), None);
    assert_eq!(store.create_user_dek(&user(1), vec![7], None).await.unwrap(), Some(vec![7]));
    assert_eq!(store.create_user_dek(&user(1), vec![8], None).await.unwrap(), Some(vec![7]));
    assert_eq!(store.user_dek(&user(2)).await.unwrap(), None);
}

async fn redeem_once(store: Arc<dyn Store>) {
    add_init(&*store, 1, NOW + 60).await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { redeem(&*store, 1, NOW, [i; 32], 9, NOW + 3600).await }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| **o == Redeemed::Session).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == Redeemed::UnknownInit).count(), 15);
    let winner = (0..16u8).find(|i| outcomes[usize::from(*i)] == Redeemed::Session).unwrap();
    let session = store.session(&[winner; 32]).await.unwrap().unwrap();
    let want = SessionRecord {
        user: user(9),
        sealed: vec![1; 40],
        credential: Some(vec![1; 30]),
        expires_at: NOW + 3600,
        last_used: NOW,
    };
    assert_eq!(session, want, "the session, its credential included, is kept exactly");
    assert!(store.session(&[winner.wrapping_add(1); 32]).await.unwrap().is_none());
}

async fn expired_init(store: &dyn Store) {
    add_init(store, 2, NOW).await;
    assert_eq!(redeem(store, 2, NOW, [1; 32], 1, NOW + 1).await, Redeemed::ExpiredInit);
    assert!(store.session(&[1; 32]).await.unwrap().is_none());
    assert_eq!(redeem(store, 2, NOW, [1; 32], 1, NOW + 1).await, Redeemed::UnknownInit);
}

async fn versions(store: &dyn Store) {
    assert!(store.get_key(&user(1), None).await.unwrap().is_none());
    for (i, bytes) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
        assert_eq!(put(store, 1, bytes, Precondition::None).await, PutOutcome::Stored { version: i as u64 + 1 });
    }
    let latest = store.get_key(&user(1), None).await.unwrap().unwrap();
    assert_eq!((latest.version, &latest.sealed[..]), (3, &b"three"[..]));
    let first = store.get_key(&user(1), Some(1)).await.unwrap().unwrap();
    assert_eq!((first.version, &first.sealed[..], first.created_at), (1, &b"one"[..], NOW));
    assert!(store.get_key(&user(1), Some(4)).await.unwrap().is_none());
    assert!(store.get_key(&user(2), None).await.unwrap().is_none(), "another user has nothing");
    // The sealing step learns the version number it seals for.
    let outcome = store
        .put_key(
            &user(1),
            by_operator(&dek(store, 1).await),
            &Precondition::None,
            KEEP_ALL,
            NOW,
            Box::new(|v| Ok(format!("v{v}").into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Stored { version: 4 });
    assert_eq!(store.get_key(&user(1), Some(4)).await.unwrap().unwrap().sealed, b"v4");
    // Versions beyond 255 sort numerically.
    for _ in 0..299 {
        put(store, 3, b"x", Precondition::None).await;
    }
    assert_eq!(put(store, 3, b"last", Precondition::None).await, PutOutcome::Stored { version: 300 });
    assert_eq!(&store.get_key(&user(3), None).await.unwrap().unwrap().sealed[..], b"last");
    assert_eq!(store.list_keys(&user(3)).await.unwrap().len(), 300);
}

async fn retention(store: &dyn Store) {
    for i in 1..=5u8 {
        put_keep(store, 1, &[i], Precondition::None, 3).await;
    }
    let kept: Vec<u64> = store.list_keys(&user(1)).await.unwrap().iter().map(|k| k.version).collect();
    assert_eq!(kept, vec![3, 4, 5]);
    assert!(store.get_key(&user(1), Some(2)).await.unwrap().is_none());
    assert_eq!(put_keep(store, 1, b"6", Precondition::None, 1).await, PutOutcome::Stored { version: 6 });
    assert_eq!(store.list_keys(&user(1)).await.unwrap().len(), 1);
}

async fn preconditions(store: Arc<dyn Store>) {
    let any = || Precondition::IfMatch(EntityTags::Any);
    assert_eq!(put(&*store, 1, b"x", any()).await, PutOutcome::PreconditionFailed);
    let first = Precondition::IfNoneMatch(EntityTags::Any);
    assert_eq!(put(&*store, 1, b"1", first.clone()).await, PutOutcome::Stored { version: 1 });
    assert_eq!(put(&*store, 1, b"x", first).await, PutOutcome::PreconditionFailed);
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            put(&*store, 1, &[i], Precondition::IfMatch(EntityTags::Versions(vec![1]))).await
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
    assert_eq!(put(&*store, 1, b"3", any()).await, PutOutcome::Stored { version: 3 });
    assert_eq!(store.list_keys(&user(1)).await.unwrap().len(), 3, "failed preconditions wrote nothing");
}

async fn erasure(store: &dyn Store) {
    for who in [1, 2] {
        put(store, who, b"k1", Precondition::None).await;
        put(store, who, b"k2", Precondition::None).await;
        store.create_user_dek(&user(who), vec![who], None).await.unwrap();
        add_init(store, who, NOW + 60).await;
        redeem(store, who, NOW, [who; 32], who, NOW + 60).await;
        add_init(store, who + 10, NOW + 60).await;
        redeem(store, who + 10, NOW, [who + 10; 32], who, NOW + 60).await;
    }

    // A key read with its DEK: one snapshot of both, by version or the latest.
    let (latest, dek) = store.key_with_dek(&user(1), None).await.unwrap();
    assert_eq!((latest.map(|k| (k.version, k.sealed)), dek), (Some((2, b"k2".to_vec())), Some(vec![1])));
    let (first, dek) = store.key_with_dek(&user(2), Some(1)).await.unwrap();
    assert_eq!((first.map(|k| (k.version, k.sealed)), dek), (Some((1, b"k1".to_vec())), Some(vec![2])));
    assert_eq!(store.key_with_dek(&user(9), None).await.unwrap(), (None, None), "a user with nothing");

    // DELETE /key: versions and the DEK go, sessions stay.
    assert_eq!(store.delete_keys(&user(1)).await.unwrap(), 2);
    assert_eq!(store.key_with_dek(&user(1), None).await.unwrap(), (None, None));
    // A PUT sealed under the DEK that was just deleted writes nothing, even once the user
    // has a new one: its version could never be opened.
    let stale = |bytes: &'static [u8]| Box::new(move |_| Ok(bytes.to_vec())) as keyservice::store::SealVersion;
    let put_under = |dek: Vec<u8>, bytes| async move {
        store.put_key(&user(1), by_operator(&dek), &Precondition::None, KEEP_ALL, NOW, stale(bytes)).await.unwrap()
    };
    assert_eq!(put_under(vec![1], b"late").await, PutOutcome::DekChanged);
    store.create_user_dek(&user(1), vec![21], None).await.unwrap();
    assert_eq!(put_under(vec![1], b"late").await, PutOutcome::DekChanged);
    assert!(store.list_keys(&user(1)).await.unwrap().is_empty(), "a refused PUT wrote nothing");
    assert_eq!(put_under(vec![21], b"fresh").await, PutOutcome::Stored { version: 1 });
    assert_eq!(store.delete_keys(&user(1)).await.unwrap(), 1);
    assert!(store.list_keys(&user(1)).await.unwrap().is_empty());
    assert_eq!(store.user_dek(&user(1)).await.unwrap(), None);
    assert!(store.session(&[1; 32]).await.unwrap().is_some());
    assert_eq!(put(store, 1, b"again", Precondition::None).await, PutOutcome::Stored { version: 1 });
    // A PUT in a session is made while the session exists.
    let in_session = |dek: Vec<u8>, bytes| async move {
        let writer = Writer { dek: &dek, session: Some(&[1; 32]) };
        store.put_key(&user(1), writer, &Precondition::None, KEEP_ALL, NOW, stale(bytes)).await.unwrap()
    };
    assert_eq!(in_session(vec![1], b"in session").await, PutOutcome::Stored { version: 2 });

    // Erasure: versions, DEK, every session and the access history of that user go; the
    // other user keeps all.
    let entries = (1..=3).map(|t| (user(1), access(t, 1))).chain([(user(2), access(1, 2))]).collect();
    store.append_accesses(entries).await.unwrap();
    assert_eq!(store.erase_user(&user(1)).await.unwrap(), Erased { versions: 2, sessions: 2, accesses: 3 });
    assert!(store.accesses(&user(1), None, 10).await.unwrap().is_empty());
    assert_eq!(store.accesses(&user(2), None, 10).await.unwrap().len(), 1);
    assert!(store.session(&[1; 32]).await.unwrap().is_none());
    assert!(store.session(&[11; 32]).await.unwrap().is_none());
    assert!(store.get_key(&user(1), None).await.unwrap().is_none());
    assert_eq!(store.erase_user(&user(1)).await.unwrap(), Erased::default(), "erasing twice is harmless");
    // No DEK is made for a write in a session the erasure ended: it would outlive it.
    assert_eq!(store.create_user_dek(&user(1), vec![30], Some(&[1; 32])).await.unwrap(), None);
    assert_eq!(store.user_dek(&user(1)).await.unwrap(), None, "a DEK outlived the erasure of its user");
    // A live session's write gets the DEK the user has.
    assert_eq!(store.create_user_dek(&user(2), vec![32], Some(&[2; 32])).await.unwrap(), Some(vec![2]));
    // A PUT in a session the erasure ended is not made, even under a DEK made after the
    // erasure (as the operator may make one): it would outlive the erasure.
    store.create_user_dek(&user(1), vec![31], None).await.unwrap();
    assert_eq!(in_session(vec![31], b"after").await, PutOutcome::SessionGone);
    assert!(store.list_keys(&user(1)).await.unwrap().is_empty(), "a PUT outlived the erasure of its user");
    assert_eq!(store.list_keys(&user(2)).await.unwrap().len(), 2);
    assert_eq!(store.user_dek(&user(2)).await.unwrap(), Some(vec![2]));
    assert!(store.session(&[2; 32]).await.unwrap().is_some());
    assert_eq!(expiries(store, 2).await.len(), 2);
}

/// An access entry at microsecond `micros`, told apart by `tag`.
fn access(micros: u64, tag: u8) -> AccessRecord {
    let mut id: AccessId = keyservice::store::access_id_floor(micros);
    id[15] = tag;
    AccessRecord { id, sealed: vec![tag; 20 + micros as usize] }
}

async fn access_history(store: &dyn Store) {
    assert!(store.accesses(&user(1), None, 10).await.unwrap().is_empty());
    store.append_accesses(Vec::new()).await.unwrap();
    // Out of order, across two batches, and one id twice: the first one stays.
    let first: Vec<_> = [5, 1, 3].iter().map(|&t| (user(1), access(t, 1))).collect();
    store.append_accesses(first).await.unwrap();
    let mut again = access(3, 1);
    again.sealed = b"other".to_vec();
    store.append_accesses(vec![(user(1), access(4, 1)), (user(1), again), (user(2), access(2, 2))]).await.unwrap();

    let all = store.accesses(&user(1), None, 10).await.unwrap();
    assert_eq!(all, [access(5, 1), access(4, 1), access(3, 1), access(1, 1)], "newest first, bytes kept");
    let page = store.accesses(&user(1), None, 2).await.unwrap();
    assert_eq!(page, [access(5, 1), access(4, 1)]);
    let next = store.accesses(&user(1), Some(page[1].id), 2).await.unwrap();
    assert_eq!(next, [access(3, 1), access(1, 1)], "the page after, without the cursor's own entry");
    assert!(store.accesses(&user(1), Some(access(1, 1).id), 2).await.unwrap().is_empty());
    assert_eq!(store.accesses(&user(2), None, 10).await.unwrap(), [access(2, 2)], "users never mix");
    assert!(store.accesses(&user(3), None, 10).await.unwrap().is_empty());

    // Purging by time reaches every user and nothing newer.
    assert_eq!(store.purge_accesses(keyservice::store::access_id_floor(4)).await.unwrap(), 3);
    assert_eq!(store.accesses(&user(1), None, 10).await.unwrap(), [access(5, 1), access(4, 1)]);
    assert!(store.accesses(&user(2), None, 10).await.unwrap().is_empty());
    assert_eq!(store.purge_accesses(keyservice::store::access_id_floor(4)).await.unwrap(), 0);
}

async fn sessions(store: &dyn Store) {
    add_init(store, 1, NOW + 60).await;
    add_init(store, 2, NOW + 60).await;
    redeem(store, 1, NOW, [1; 32], 5, NOW + 100).await;
    redeem(store, 2, NOW, [2; 32], 5, NOW + 200).await;
    assert_eq!(expiries(store, 5).await, vec![NOW + 100, NOW + 200]);
    // A session with a sealed credential and one without (as an older node makes) both keep.
    assert_eq!(store.session(&[1; 32]).await.unwrap().unwrap().credential, Some(vec![1; 30]));
    assert_eq!(store.session(&[2; 32]).await.unwrap().unwrap().credential, None);
    assert!(store.delete_session(&[1; 32]).await.unwrap());
    assert!(!store.delete_session(&[1; 32]).await.unwrap());
    assert!(store.session(&[1; 32]).await.unwrap().is_none());
    assert_eq!(expiries(store, 5).await, vec![NOW + 200]);

    // A touch moves last use forward only.
    store.touch_session(&[2; 32], NOW + 50).await.unwrap();
    store.touch_session(&[2; 32], NOW + 10).await.unwrap();
    store.touch_session(&[9; 32], NOW + 50).await.unwrap(); // no such session: nothing
    assert_eq!(store.session(&[2; 32]).await.unwrap().unwrap().last_used, NOW + 50);
    assert!(store.session(&[9; 32]).await.unwrap().is_none());

    // Idle sessions are swept: one used at NOW + 50, one never since NOW.
    add_init(store, 3, NOW + 60).await;
    redeem(store, 3, NOW, [3; 32], 5, NOW + 300).await;
    let swept = store.sweep(NOW + 60, NOW + 40, 0).await.unwrap();
    assert_eq!(swept.sessions, 1);
    assert!(store.session(&[2; 32]).await.unwrap().is_some());
    assert!(store.session(&[3; 32]).await.unwrap().is_none());
}

async fn expiries(store: &dyn Store, who: u8) -> Vec<u64> {
    let mut out: Vec<u64> = store.user_sessions(&user(who)).await.unwrap().iter().map(|s| s.expires_at).collect();
    out.sort_unstable();
    out
}

async fn sweep(store: &dyn Store) {
    add_init(store, 1, NOW - 1).await;
    add_init(store, 2, NOW + 60).await;
    add_init(store, 3, NOW + 60).await;
    add_init(store, 4, NOW + 60).await;
    redeem(store, 3, NOW, [3; 32], 1, NOW + 60).await;
    redeem(store, 4, NOW - 10, [4; 32], 1, NOW - 5).await;
    store.remember_nonce(1, NOW - 1000).await.unwrap();
    store.remember_nonce(2, NOW).await.unwrap();
    let swept = store.sweep(NOW, 0, NOW - 500).await.unwrap();
    assert_eq!((swept.inits, swept.sessions, swept.nonces), (1, 1, 1));
    assert_eq!(redeem(store, 1, NOW - 100, [9; 32], 1, NOW).await, Redeemed::UnknownInit);
    assert!(store.session(&[3; 32]).await.unwrap().is_some());
    assert!(store.session(&[4; 32]).await.unwrap().is_none());
    assert_eq!(expiries(store, 1).await, vec![NOW + 60]);
    assert_eq!(redeem(store, 2, NOW, [2; 32], 1, NOW + 1).await, Redeemed::Session);
    assert_eq!(store.remembered_nonces(0).await.unwrap(), vec![(2, NOW)]);
}

async fn replay_state(store: &dyn Store) {
    assert_eq!(store.replay_floor().await.unwrap(), 0);
    store.set_replay_floor(NOW).await.unwrap();
    assert_eq!(store.replay_floor().await.unwrap(), NOW);
    assert!(store.remember_nonce(7, NOW + 100).await.unwrap());
    assert!(store.remember_nonce(8, NOW + 10).await.unwrap());
    assert!(!store.remember_nonce(7, NOW + 100).await.unwrap(), "a nonce is claimed once");
    // Fingerprints use all 64 bits.
    assert!(store.remember_nonce(u64::MAX - 1, NOW + 60).await.unwrap());
    let mut nonces = store.remembered_nonces(NOW + 50).await.unwrap();
    nonces.sort();
    assert_eq!(nonces, vec![(7, NOW + 100), (u64::MAX - 1, NOW + 60)]);
    store.flush().await.unwrap();
}

#[tokio::test]
async fn sled_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        add_init(&store, 1, NOW + 60).await;
        add_init(&store, 2, NOW + 60).await;
        redeem(&store, 2, NOW, [2; 32], 1, NOW + 60).await;
        store.keyring_create(b"system/index", vec![42]).await.unwrap();
        store.create_user_dek(&user(1), vec![43], None).await.unwrap();
        // Nodes larger than a quarter segment (128 KiB) go to blob files, which sled
        // itself never fsyncs; enough large versions make sure some exist.
        for i in 0..24u8 {
            put(&store, 1, &vec![i; 64 * 1024], Precondition::None).await;
        }
        store.set_replay_floor(NOW).await.unwrap();
        store.remember_nonce(5, NOW + 9).await.unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
    assert!(blobs > 0, "the blob path was not exercised");
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(redeem(&store, 1, NOW, [1; 32], 1, NOW + 60).await, Redeemed::Session);
    assert_eq!(store.session(&[2; 32]).await.unwrap().unwrap().sealed, vec![2; 40]);
    assert_eq!(store.keyring_get(b"system/index").await.unwrap(), Some(vec![42]));
    assert_eq!(store.user_dek(&user(1)).await.unwrap(), Some(vec![43]));
    for i in 0..24u8 {
        let version = store.get_key(&user(1), Some(u64::from(i) + 1)).await.unwrap().unwrap();
        assert_eq!(&version.sealed[..], &vec![i; 64 * 1024][..]);
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

/// TLS to the database: verified against the configured CA, refused against another,
/// and a server that takes TLS only cannot be reached without it.
#[tokio::test]
async fn postgres_over_tls_is_verified_against_the_configured_ca() {
    let make = |dir: &std::path::Path| {
        let status = std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-certificates.sh"))
            .arg(dir)
            .arg("127.0.0.1")
            .status()
            .unwrap();
        assert!(status.success());
    };
    let certificates = tempfile::tempdir().unwrap();
    make(certificates.path());
    let server = pg::private_tls(certificates.path());
    let database = server.database_over_tls();

    let mut config = database.config();
    config.ca_file = Some(certificates.path().join("ca.crt"));
    let store = PostgresStore::open(&config, "node-a").await.unwrap();
    assert!(store.remember_nonce(1, NOW).await.unwrap(), "a write over TLS");

    let other = tempfile::tempdir().unwrap();
    make(other.path());
    config.ca_file = Some(other.path().join("ca.crt"));
    let refused = PostgresStore::open(&config, "node-a").await.err().expect("another CA was trusted");
    assert!(refused.to_string().contains("cannot reach the database"), "{refused}");

    config.ca_file = None;
    let plain = PostgresStore::open(&config, "node-a").await.err().expect("plain TCP was let in");
    assert!(plain.to_string().contains("cannot reach the database"), "{plain}");
}

/// A server that does not make commits durable is refused, as a configuration error.
#[tokio::test]
async fn postgres_without_fsync_is_refused() {
    let server = pg::private();
    let database = server.database().await;
    let admin = server.connect("postgres").await;
    admin.batch_execute("ALTER SYSTEM SET fsync = off").await.unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let refused = PostgresStore::open(&database.config(), "node-a").await.err().expect("fsync = off was accepted");
    assert!(refused.is_configuration());
    assert!(refused.to_string().contains("fsync = off"), "{refused}");
}

/// A statement the database cancels for taking too long fails as transient (503), and
/// changes nothing: here a PUT waits on the user's row, locked by another session.
#[tokio::test]
async fn postgres_statement_timeout_is_transient_and_changes_nothing() {
    let database = pg::shared().database().await;
    let mut config = database.config();
    config.statement_timeout = std::time::Duration::from_millis(200);
    let store = PostgresStore::open(&config, "node-a").await.unwrap();
    assert_eq!(put(&store, 1, b"v1", Precondition::None).await, PutOutcome::Stored { version: 1 });

    let mut other = database.connect().await;
    let holding = other.transaction().await.unwrap();
    holding.batch_execute("SELECT latest FROM ks_key_head FOR UPDATE").await.unwrap();
    let seal = Box::new(|_| Ok(b"v2".to_vec()));
    let refused =
        store.put_key(&user(1), by_operator(&[1]), &Precondition::None, KEEP_ALL, NOW, seal).await.unwrap_err();
    assert!(refused.is_transient(), "{refused:?}");
    holding.rollback().await.unwrap();
    assert_eq!(store.list_keys(&user(1)).await.unwrap().len(), 1, "the timed-out PUT wrote something");
}

/// Many calls at once (which a shared store answers in batches): each gets the answer it
/// would have had alone, in some order of arrival.
async fn concurrent(store: Arc<dyn Store>) {
    // One nonce claimed by 32 at once: one claim is new.
    let claims: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.remember_nonce(42, NOW).await.unwrap() })
        })
        .collect();
    let mut new = 0;
    for claim in claims {
        new += usize::from(claim.await.unwrap());
    }
    assert_eq!(new, 1, "a nonce claimed at once by many is new once");
    // 32 nonces at once: each is new.
    let claims: Vec<_> = (0..32u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.remember_nonce(1000 + i, NOW).await.unwrap() })
        })
        .collect();
    for claim in claims {
        assert!(claim.await.unwrap());
    }

    // Six writers for each of four users at once, and one whose sealing fails.
    let mut writes = Vec::new();
    for i in 0..24u8 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            let who = 10 + i % 4;
            let dek = dek(&*store, who).await;
            let outcome = store
                .put_key(
                    &user(who),
                    by_operator(&dek),
                    &Precondition::None,
                    KEEP_ALL,
                    NOW,
                    Box::new(move |v| Ok(vec![i, v as u8])),
                )
                .await
                .unwrap();
            (who, i, outcome)
        }));
    }
    let failing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .put_key(
                    &user(10),
                    by_operator(&dek(&*store, 10).await),
                    &Precondition::None,
                    KEEP_ALL,
                    NOW,
                    Box::new(|_| Err(keyservice::store::StoreError::Seal("refused".into()))),
                )
                .await
        })
    };
    let mut written = std::collections::BTreeMap::new();
    for write in writes {
        let (who, i, outcome) = write.await.unwrap();
        let PutOutcome::Stored { version } = outcome else { panic!("{outcome:?}") };
        assert!(written.insert((who, version), i).is_none(), "user {who} version {version} given twice");
    }
    assert!(failing.await.unwrap().is_err(), "the write whose sealing failed fails");
    for who in 10..14u8 {
        let versions = store.list_keys(&user(who)).await.unwrap();
        assert_eq!(versions.iter().map(|k| k.version).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
        for key in versions {
            let writer = written[&(who, key.version)];
            assert_eq!(key.sealed, vec![writer, key.version as u8], "user {who} version {}", key.version);
        }
    }

    // Reads of many users at once: each gets its own.
    for who in 20..40u8 {
        store.create_user_dek(&user(who), vec![who; 8], None).await.unwrap();
        put(&*store, who, &[who], Precondition::None).await;
    }
    let reads: Vec<_> = (20..40u8)
        .map(|who| {
            let store = store.clone();
            tokio::spawn(async move {
                let user = user(who);
                let (dek, key) = tokio::join!(store.user_dek(&user), store.get_key(&user, None));
                (who, dek.unwrap(), key.unwrap())
            })
        })
        .collect();
    for read in reads {
        let (who, dek, key) = read.await.unwrap();
        assert_eq!(dek, Some(vec![who; 8]));
        assert_eq!(key.map(|k| k.sealed), Some(vec![who]));
    }
    assert_eq!(store.user_dek(&user(99)).await.unwrap(), None);
    assert!(store.get_key(&user(99), None).await.unwrap().is_none());
}
