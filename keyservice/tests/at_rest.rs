//! What a copy of the data directory reveals: nothing. Every identifier is a keyed hash,
//! every secret sealed; a record moved under another user fails to open; the store
//! refuses a master key that did not seal it.

#[path = "support/postgres.rs"]
mod pg;
#[path = "support/scan.rs"]
mod scan;
mod support;

use std::sync::Arc;

use keyservice::{App, MasterKey, PostgresStore, SledStore, Store};
use keyservice_client::protocol::wire::init_token_hash;
use scan::{scan, scan_bytes};
use support::*;

/// Stores two users' keys (and leaves an init pending) through `server`, then returns
/// what must not be found at rest.
async fn populate(server: &TestServer) -> Vec<(&'static str, Vec<u8>)> {
    let user_id = "user-4711-Åsa-Öberg";
    let device = device(server.addr, user_id).await;
    let key: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    device.put(&key, &[("content-type", "application/x-very-distinct-type".into())]).await;
    device.put(b"second-version-of-the-recognisable-key", &[]).await;
    let pending = init(server.addr).await; // Left pending on purpose.
    let other_ns_user = "someone-else-entirely";
    let _other = device_in(server, other_ns_user).await;
    let digest = init_digest(&device.init_token);
    vec![
        ("userId", user_id.as_bytes().to_vec()),
        ("other userId", other_ns_user.as_bytes().to_vec()),
        ("namespace", NAMESPACE.as_bytes().to_vec()),
        ("key bytes", key.clone()),
        ("second key", b"second-version-of-the-recognisable-key".to_vec()),
        ("content type", b"x-very-distinct-type".to_vec()),
        ("init token", device.init_token.expose().as_bytes().to_vec()),
        ("pending init token", pending.expose().as_bytes().to_vec()),
        ("session token", device.session_token.expose().as_bytes().to_vec()),
        ("initTokenHash", init_token_hash(&device.init_token).into_bytes()),
        ("init digest", digest.to_vec()),
        ("credential secret", SECRET.as_bytes().to_vec()),
    ]
}

#[tokio::test]
async fn the_data_directory_reveals_no_identifier_token_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let needles = populate(&server).await;
    server.stop().await;

    let found = scan(&dir.path().join("data"), &[], &needles);
    assert!(found.is_empty(), "the data directory reveals: {found:?}");
    // The scan itself works: the master key file is outside the data directory and holds
    // its key in hex, which the scanner finds.
    let master = std::fs::read_to_string(dir.path().join("master.key")).unwrap();
    let master_bytes = hex::decode(master.trim()).unwrap();
    assert!(!scan(dir.path(), &[], &[("master key", master_bytes)]).is_empty());
}

#[tokio::test]
async fn a_dump_of_the_database_reveals_no_identifier_token_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let database = pg::shared().database().await;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&database.config(), "node-a").await.unwrap());
    let server = TestServer::start(config(dir.path()), store).await;
    let needles = populate(&server).await;
    let pseudonym = server.escrow().await.user(NAMESPACE, "user-4711-Åsa-Öberg").user;
    server.stop().await;

    let dump = database.dump();
    let found = scan_bytes(&dump, "the pg_dump", &needles);
    assert!(found.is_empty(), "the database reveals: {found:?}");
    // The scan itself works: the dump holds the user's pseudonym (bytea, dumped as hex),
    // which the scanner finds.
    let text = String::from_utf8_lossy(&dump);
    assert!(text.contains("INSERT INTO public.ks_key_version"), "the dump holds no key versions");
    assert!(!scan_bytes(&dump, "the pg_dump", &[("pseudonym", pseudonym.to_vec())]).is_empty());
}

async fn device_in(server: &TestServer, user: &str) -> Device {
    device(server.addr, user).await
}

#[tokio::test]
async fn a_record_moved_under_another_user_fails_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let alice = device(server.addr, "alice").await;
    let bob = device(server.addr, "bob").await;
    alice.put(b"alice's key", &[]).await;
    bob.put(b"bob's key", &[]).await;
    server.stop().await;

    // A curious operator swaps the two users' version-1 records.
    {
        let db = sled::open(dir.path().join("data")).unwrap();
        let keys = db.open_tree("key").unwrap();
        let entries: Vec<_> = keys.iter().map(|e| e.unwrap()).collect();
        assert_eq!(entries.len(), 2);
        keys.insert(&entries[0].0, entries[1].1.clone()).unwrap();
        keys.insert(&entries[1].0, entries[0].1.clone()).unwrap();
        db.flush().unwrap();
    }

    let server = TestServer::start_sled(config(dir.path())).await;
    for device in [&alice, &bob] {
        let device = Device { addr: server.addr, ..device.clone() };
        let reply = device.get("/key").await;
        reply.expect(500, "internal_error");
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains("alice's key") && !text.contains("bob's key"));
    }
}

#[tokio::test]
async fn another_master_key_cannot_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = TestServer::start_sled(config.clone()).await;
    device(server.addr, "u").await.put(b"k", &[]).await;
    server.stop().await;

    let store = std::sync::Arc::new(SledStore::open(&config.data_dir).unwrap());
    let other = MasterKey::generate().unwrap();
    let error = App::new(&config, store, &other).await.err().expect("the wrong master key must be refused");
    let text = error.to_string();
    assert!(text.contains("master key"), "{text}");
}
