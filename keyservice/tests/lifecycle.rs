//! Keys over their life, through the HTTP API: deletion, logout, erasure with receipts,
//! subject-access export, retention, and erasure surviving a restore.

mod support;

use keyservice_client::protocol::wire::{ErasureReceipt, ExportResponse};
use support::*;

async fn server_with(configure: impl FnOnce(&mut keyservice::Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    configure(&mut config);
    (TestServer::start_sled(config).await, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_delete_key_is_readable_or_gone() {
    let (server, _dir) = server_with(|_| {}).await;
    put_racing_delete(&device(server.addr, "racer").await, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_an_erasure_leaves_no_key() {
    let (server, _dir) = server_with(|config| {
        config.init_per_minute = 100_000.try_into().unwrap();
        config.auth_failures_per_minute = 100_000.try_into().unwrap();
    })
    .await;
    put_racing_erasure(server.addr, 100).await;
}

#[tokio::test]
async fn delete_key_erases_every_version_and_a_new_key_starts_over() {
    let (server, _dir) = server_with(|_| {}).await;
    let device = device(server.addr, "u1").await;
    device.put(b"one", &[]).await;
    device.put(b"two", &[]).await;
    let reply = device.request("DELETE", "/key", b"", &[]).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    device.get("/key").await.expect(404, "no_key");
    device.get("/key?version=1").await.expect(404, "no_such_version");
    assert_eq!(device.request("DELETE", "/key", b"", &[]).await.status, 204, "deleting nothing is fine");
    let again = device.put(b"three", &[]).await;
    assert_eq!((again.status.as_u16(), again.header("etag")), (201, "\"1\""));
    assert_eq!(&device.get("/key").await.body[..], b"three");
}

#[tokio::test]
async fn logout_ends_only_that_session() {
    let (server, _dir) = server_with(|_| {}).await;
    let phone = device(server.addr, "u1").await;
    let laptop = device(server.addr, "u1").await;
    phone.put(b"k", &[]).await;
    assert_eq!(phone.request("DELETE", "/session", b"", &[]).await.status, 204);
    phone.get("/key").await.expect(401, "unknown_session");
    phone.request("DELETE", "/session", b"", &[]).await.expect(401, "unknown_session");
    assert_eq!(&laptop.get("/key").await.body[..], b"k");
}

#[tokio::test]
async fn erase_destroys_keys_and_sessions_and_answers_a_receipt() {
    let (server, _dir) = server_with(|_| {}).await;
    let phone = device(server.addr, "alice").await;
    let laptop = device(server.addr, "alice").await;
    let bob = device(server.addr, "bob").await;
    phone.put(b"a1", &[]).await;
    phone.put(b"a2", &[]).await;
    bob.put(b"b1", &[]).await;

    let reply = as_real_service(server.addr, "/erase", NAMESPACE, "alice").await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let receipt: ErasureReceipt = reply.json();
    assert_eq!((receipt.versions_destroyed, receipt.sessions_revoked), (2, 2));
    assert_eq!(receipt.user_id.len(), 64, "a pseudonym, not the user id");
    assert!(!String::from_utf8_lossy(&reply.body).contains("alice"));
    phone.get("/key").await.expect(401, "unknown_session");
    laptop.get("/key").await.expect(401, "unknown_session");
    assert_eq!(&bob.get("/key").await.body[..], b"b1", "another user is untouched");

    // Erasing again, or a user never seen, still answers a receipt.
    let again: ErasureReceipt = as_real_service(server.addr, "/erase", NAMESPACE, "alice").await.json();
    assert_eq!((again.versions_destroyed, again.sessions_revoked, again.user_id), (0, 0, receipt.user_id));
    assert_eq!(as_real_service(server.addr, "/erase", NAMESPACE, "nobody").await.status, 200);

    // A new session for the same user starts from nothing.
    let fresh = device(server.addr, "alice").await;
    fresh.get("/key").await.expect(404, "no_key");
}

#[tokio::test]
async fn erase_and_export_are_refused_like_connect() {
    let (server, _dir) = server_with(|_| {}).await;
    for path in ["/erase", "/export"] {
        as_real_service(server.addr, path, FAR_NAMESPACE, "u").await.expect(403, "wrong_namespace");
        as_real_service(server.addr, path, NAMESPACE, "").await.expect(400, "invalid_user_id");
        let body = serde_json::json!({ "namespace": FAR_NAMESPACE, "userId": "u" }).to_string();
        let json = [("content-type", "application/json".to_owned())];
        signed(server.addr, FAR_KEY_ID, FAR_SECRET, "POST", path, body.as_bytes(), &json)
            .await
            .expect(403, "ip_not_allowed");
        signed(server.addr, KEY_ID, "wrong-secret-0123456789abcdef0123456789", "POST", path, body.as_bytes(), &json)
            .await
            .expect(401, "bad_signature");
        let body = br#"{"namespace":"shop","userId":"u","extra":true}"#;
        signed(server.addr, KEY_ID, SECRET, "POST", path, body, &json).await.expect(400, "bad_json");
    }
}

#[tokio::test]
async fn export_tells_what_is_held_but_never_the_key() {
    let (server, _dir) = server_with(|_| {}).await;
    let phone = device(server.addr, "carol").await;
    let _laptop = device(server.addr, "carol").await;
    let key = b"carol's-very-recognisable-key-bytes";
    phone.put(key, &[("content-type", "application/x-raw-key".into())]).await;
    phone.put(b"short", &[]).await;

    let reply = as_real_service(server.addr, "/export", NAMESPACE, "carol").await;
    assert_eq!(reply.status, 200);
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    assert!(!text.contains("recognisable") && !text.contains(&b64(key)), "{text}");
    let export: ExportResponse = reply.json();
    let versions: Vec<_> = export.key_versions.iter().map(|v| (v.version, v.size, v.content_type.as_str())).collect();
    assert_eq!(versions, vec![(1, key.len() as u64, "application/x-raw-key"), (2, 5, "application/octet-stream")]);
    assert!(export.key_versions.iter().all(|v| v.created_at.ends_with('Z')));
    assert_eq!(export.sessions.len(), 2);

    let nobody: ExportResponse = as_real_service(server.addr, "/export", NAMESPACE, "nobody").await.json();
    assert!(nobody.key_versions.is_empty() && nobody.sessions.is_empty());
}

#[tokio::test]
async fn retention_keeps_the_newest_versions() {
    let (server, _dir) = server_with(|config| config.max_key_versions = 3).await;
    let device = device(server.addr, "u1").await;
    for i in 1..=5u8 {
        device.put(&[i], &[]).await;
    }
    device.get("/key?version=2").await.expect(404, "no_such_version");
    assert_eq!(&device.get("/key?version=3").await.body[..], &[3]);
    assert_eq!(device.get("/key").await.header("etag"), "\"5\"");
    let export: ExportResponse = as_real_service(server.addr, "/export", NAMESPACE, "u1").await.json();
    assert_eq!(export.key_versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![3, 4, 5]);
}

#[tokio::test]
async fn an_erasure_survives_restoring_an_older_copy_of_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let device = device(server.addr, "dave").await;
    device.put(b"dave's key", &[]).await;
    server.stop().await;

    // An operator's copy of the data directory, taken before the erasure.
    let data = dir.path().join("data");
    let copy = dir.path().join("copy");
    copy_dir(&data, &copy);

    let server = TestServer::start_sled(config(dir.path())).await;
    let erased: ErasureReceipt = as_real_service(server.addr, "/erase", NAMESPACE, "dave").await.json();
    assert_eq!(erased.versions_destroyed, 1);
    server.stop().await;

    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&copy, &data).unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let device = Device { addr: server.addr, ..device };
    // The restored data had dave's key and session; the ledger erased them again.
    device.get("/key").await.expect(401, "unknown_session");
    let export: ExportResponse = as_real_service(server.addr, "/export", NAMESPACE, "dave").await.json();
    assert!(export.key_versions.is_empty() && export.sessions.is_empty());
}

/// A user erased and back (the same account id signed up again, or erasure used as a
/// reset) keeps what they stored after the erasure: a restart re-applies only erasures
/// the store has not applied yet.
#[tokio::test]
async fn a_user_who_comes_back_after_an_erasure_keeps_their_new_key_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    device(server.addr, "erin").await.put(b"erin's first key", &[]).await.expect_status(201);
    let erased: ErasureReceipt = as_real_service(server.addr, "/erase", NAMESPACE, "erin").await.json();
    assert_eq!(erased.versions_destroyed, 1);
    let back = device(server.addr, "erin").await;
    back.put(b"erin's new key", &[]).await.expect_status(201);
    server.stop().await;

    for _ in 0..2 {
        let server = TestServer::start_sled(config(dir.path())).await;
        let back = Device { addr: server.addr, ..back.clone() };
        let reply = back.get("/key").await;
        reply.expect_status(200);
        assert_eq!(&reply.body[..], b"erin's new key");
        server.stop().await;
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn an_idle_session_expires() {
    let (server, _dir) = server_with(|config| config.session_idle = std::time::Duration::from_secs(1)).await;
    let device = device(server.addr, "u1").await;
    device.get("/key").await.expect(404, "no_key");
    server.clock.advance(std::time::Duration::from_secs(3));
    device.get("/key").await.expect(401, "session_expired");
}

#[tokio::test]
async fn every_memory_budget_serves_the_same_answers() {
    // None kept, room for about one key at a time, and the default.
    for budget in [0, 3 * 1024, keyservice::Config::for_data_dir("unused".into()).cache_bytes] {
        let (server, _dir) = server_with(|config| config.cache_bytes = budget).await;
        let mut users = Vec::new();
        for name in ["ann", "ben", "cat"] {
            users.push(device(server.addr, name).await);
        }
        for (round, size) in [(1u8, 700), (2, 900), (3, 1100)] {
            for (n, user) in users.iter().enumerate() {
                let key = vec![round.wrapping_mul(n as u8 + 1); size];
                let expected = if round == 1 { 201 } else { 200 };
                assert_eq!(user.put(&key, &[]).await.status, expected, "budget {budget}");
                assert_eq!(&user.get("/key").await.body[..], &key[..], "budget {budget}");
            }
        }
        for user in &users {
            assert_eq!(user.get("/key").await.header("etag"), "\"3\"", "budget {budget}");
        }
        assert_eq!(users[0].request("DELETE", "/session", b"", &[]).await.status, 204);
        users[0].get("/key").await.expect(401, "unknown_session");
        assert_eq!(users[1].request("DELETE", "/key", b"", &[]).await.status, 204);
        users[1].get("/key").await.expect(404, "no_key");
        assert_eq!(as_real_service(server.addr, "/erase", NAMESPACE, "cat").await.status, 200);
        users[2].get("/key").await.expect(401, "unknown_session");
    }
}
