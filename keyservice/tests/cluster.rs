//! Several real keyservice processes on one real PostgreSQL: any node serves any
//! request, every guarantee holds across nodes, and nothing acknowledged is lost when a
//! node is killed or the database restarts.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/postgres.rs"]
mod pg;
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binary::{Serving, serve};
use cluster::*;
use keyservice::store::postgres::SCHEMA_VERSION;
use keyservice_client::Condition;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_guarantee_holds_across_nodes() {
    let cluster = Cluster::new(pg::shared()).await;
    let a = cluster.start("node-a", "");
    let b = cluster.start("node-b", "");

    // An init token is redeemed once, however the nodes race for it.
    for round in 0..8 {
        let device = client(&a);
        let init = device.init().await.unwrap();
        let hash = init.hash();
        let (ra, rb) = (real_service(&a), real_service(&b));
        let user = format!("racer-{round}");
        let (first, second) = tokio::join!(ra.connect(NAMESPACE, &user, &hash), rb.connect(NAMESPACE, &user, &hash));
        let wins = [first.is_ok(), second.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(wins, 1, "round {round}: {first:?} / {second:?}");
        let loser = first.err().or(second.err()).unwrap();
        assert_eq!(loser.code(), Some("unknown_init_token"));
    }

    // A signed request replayed to the other node is refused.
    let (alice, device) = raw_session(&a, &b, "alice").await;
    device_at(&alice, &a).put_key(b"alice v1", None, Condition::None).await.unwrap();
    let headers =
        signed_headers(device.session_token.expose(), device.init_token.expose(), "GET", "/key", b"", &http_date(0));
    let first = send(a.addr, "GET", "/key", &headers, b"").await;
    first.expect_status(200);
    send(b.addr, "GET", "/key", &headers, b"").await.expect(401, "replayed_request");
    send(a.addr, "GET", "/key", &headers, b"").await.expect(401, "replayed_request");

    // Compare-and-swap is exact across nodes: of two writers holding version 1, one wins.
    for round in 0..6u64 {
        let current = device_at(&alice, &a).get_key().await.unwrap().version;
        let condition = || Condition::IfMatch(current);
        let (at_a, at_b) = (device_at(&alice, &a), device_at(&alice, &b));
        let (x, y) =
            tokio::join!(at_a.put_key(b"from a", None, condition()), at_b.put_key(b"from b", None, condition()));
        let stored: Vec<u64> = [&x, &y].iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(stored, vec![current + 1], "round {round}: {x:?} / {y:?}");
        assert!([x, y].iter().any(|r| r.as_ref().is_err_and(|e| e.is_precondition_failed())));
    }

    // Logout at one node takes effect at the other before it returns.
    let bob = session(&b, &a, "bob").await;
    device_at(&bob, &b).put_key(b"bob's key", None, Condition::None).await.unwrap();
    device_at(&bob, &a).logout().await.unwrap();
    let refused = device_at(&bob, &b).get_key().await.unwrap_err();
    assert_eq!(refused.code(), Some("unknown_session"));

    // DELETE /key at one node: the other finds no key.
    let carol = session(&a, &a, "carol").await;
    device_at(&carol, &a).put_key(b"carol's key", None, Condition::None).await.unwrap();
    device_at(&carol, &b).delete_key().await.unwrap();
    assert_eq!(device_at(&carol, &a).get_key().await.unwrap_err().code(), Some("no_key"));

    // Erasure at one node: the other refuses the user's session and holds no key.
    let dave = session(&a, &b, "dave").await;
    device_at(&dave, &a).put_key(b"dave's key", None, Condition::None).await.unwrap();
    let receipt = real_service(&a).erase(NAMESPACE, "dave").await.unwrap();
    assert_eq!((receipt.versions_destroyed, receipt.sessions_revoked), (1, 1));
    assert_eq!(device_at(&dave, &b).get_key().await.unwrap_err().code(), Some("unknown_session"));

    // Each node writes its own audit log, naming itself in every line.
    for name in ["node-a", "node-b"] {
        let log = cluster.audit_log(name);
        assert!(log.lines().count() > 3, "{name} wrote {} lines", log.lines().count());
        for line in log.lines() {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["event"]["node"], name, "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_access_history_gathers_every_nodes_accesses() {
    let cluster = Cluster::new(pg::shared()).await;
    let a = cluster.start("node-a", "");
    let b = cluster.start("node-b", "");
    let at_a = session(&a, &a, "eve").await;
    at_a.put_key(b"k", None, Condition::None).await.unwrap();
    let at_b = device_at(&at_a, &b);
    at_b.get_key().await.unwrap();
    // Node b writes its queued entries within its flush interval (a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let history = at_a.access_history(None, None).await.unwrap();
        let operations: Vec<&str> = history.entries.iter().map(|e| e.operation.as_str()).collect();
        if operations == ["key_read", "key_write", "connect"] {
            break;
        }
        assert!(Instant::now() < deadline, "node b's read never showed at node a: {operations:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Erasing at one node removes what both wrote.
    let receipt = real_service(&b).erase(NAMESPACE, "eve").await.unwrap();
    assert_eq!(receipt.access_records_destroyed, 3);
}

/// A node remembers the sessions used at it and confirms each use with the database in
/// the same moment as the request's nonce: a use at another node keeps the session alive
/// here, and a logout or an erasure there holds here at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_remembered_at_one_node_follows_what_the_others_did() {
    let server = pg::private();
    let database = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for name in ["node-a", "node-b"] {
        let store: Arc<dyn keyservice::Store> =
            Arc::new(keyservice::PostgresStore::open(&database.config(), name).await.unwrap());
        std::fs::create_dir(dir.path().join(name)).unwrap();
        let mut config = config(&dir.path().join(name));
        config.master_key_file = dir.path().join("master.key");
        config.session_idle = Duration::from_secs(10);
        nodes.push(TestServer::start(config, store).await);
    }
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let advance = |secs| nodes.iter().for_each(|node| node.clock.advance(Duration::from_secs(secs)));

    let alice = device(a, "alice").await;
    alice.put(b"alice's key", &[]).await.expect_status(201);
    alice.at(b).get("/key").await.expect_status(200);
    advance(7);
    alice.get("/key").await.expect_status(200);
    advance(7);
    // Idle for 14 s as node b last saw it, but used at node a 7 s ago.
    alice.at(b).get("/key").await.expect_status(200);
    advance(11);
    alice.at(b).get("/key").await.expect(401, "session_expired");

    let bob = device(a, "bob").await;
    bob.at(b).get("/key").await.expect(404, "no_key");
    assert_eq!(bob.request("DELETE", "/session", b"", &[]).await.status, 204);
    bob.at(b).get("/key").await.expect(401, "unknown_session");

    let carol = device(a, "carol").await;
    carol.at(b).get("/key").await.expect(404, "no_key");
    as_real_service(a, "/erase", NAMESPACE, "carol").await.expect_status(200);
    carol.at(b).get("/key").await.expect(401, "unknown_session");
}

/// Runs `race` against one node on a private PostgreSQL, with budgets that let it connect
/// many users and see racing PUTs refused.
async fn on_one_node(race: impl AsyncFnOnce(std::net::SocketAddr, &pg::Database)) {
    let server = pg::private();
    let database = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn keyservice::Store> =
        Arc::new(keyservice::PostgresStore::open(&database.config(), "node-a").await.unwrap());
    let mut config = config(dir.path());
    config.init_per_minute = 100_000.try_into().unwrap();
    config.auth_failures_per_minute = 100_000.try_into().unwrap();
    let node = TestServer::start(config, store).await;
    race(node.addr, &database).await;
}

/// A PUT made together with a `DELETE /key` (which a node batches with other calls) is
/// readable afterwards or gone, never stored under the DEK the deletion removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_delete_key_is_readable_or_gone() {
    on_one_node(async |addr, _| put_racing_delete(&device(addr, "racer").await, 100).await).await;
}

/// A PUT made together with the erasure of its user leaves no key behind: erased with
/// the rest, or refused because its session is gone; nor a DEK (every user of the run
/// was erased).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_an_erasure_leaves_no_key() {
    on_one_node(async |addr, database| {
        put_racing_erasure(addr, 100).await;
        let client = database.connect().await;
        let deks: i64 = client.query_one("SELECT count(*) FROM ks_dek", &[]).await.unwrap().get(0);
        assert_eq!(deks, 0, "a DEK outlived the erasure of its user");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_connect_budget_is_the_clusters() {
    let cluster = Cluster::new(pg::shared()).await;
    // 3 distinct users per hour, 5 calls a minute, for the whole cluster.
    let budget = "connect_users_per_window = 3\nconnect_per_minute = 5\n";
    let a = cluster.start("node-a", budget);
    let b = cluster.start("node-b", budget);
    // The calls are counted per calendar minute: start early in one.
    let into_minute = unix_now() % 60;
    if into_minute > 45 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }

    session(&a, &a, "u1").await;
    session(&b, &b, "u2").await;
    session(&a, &b, "u3").await;
    // A fourth user is over the window's budget whichever node is asked.
    for node in [&a, &b] {
        let init = client(node).init().await.unwrap();
        let refused = real_service(node).connect(NAMESPACE, "u4", &init.hash()).await.unwrap_err();
        assert_eq!(refused.code(), Some("connect_budget_exceeded"), "{refused}");
    }
    // Five calls this minute across both nodes (the two refused ones count too): more
    // are refused, whichever node is asked.
    let mut refused_calls = 0;
    for i in 0..4 {
        let node = if i % 2 == 0 { &a } else { &b };
        let init = client(node).init().await.unwrap();
        let answer = real_service(node).connect(NAMESPACE, "u1", &init.hash()).await;
        if answer.is_err_and(|error| error.code() == Some("rate_limited")) {
            refused_calls += 1;
        }
    }
    assert!(refused_calls >= 1, "the cluster never refused a call over 5 a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_load_loses_nothing_acknowledged() {
    let cluster = Cluster::new(pg::shared()).await;
    let mut nodes = vec![cluster.start("node-a", ""), cluster.start("node-b", ""), cluster.start("node-c", "")];
    let mut sessions = Vec::new();
    for i in 0..12 {
        let (x, y) = (&nodes[i % 3], &nodes[(i + 1) % 3]);
        sessions.push(session(x, y, &format!("writer-{i}")).await);
    }
    let acked: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); sessions.len()]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = spawn_writers(&sessions, nodes.iter().map(url).collect(), &acked, &stop);
    // Real time: writers load every node before one is killed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = nodes.remove(0);
    let before_kill: usize = acked.lock().unwrap().iter().map(BTreeMap::len).sum();
    std::process::Command::new("kill").args(["-KILL", &victim.child.id().to_string()]).status().unwrap();
    // Real time: the survivors take writes after the kill.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut failed = 0;
    for writer in writers {
        failed += writer.await.unwrap().1;
    }
    drop(victim);
    let total: usize = acked.lock().unwrap().iter().map(BTreeMap::len).sum();
    assert!(total > before_kill, "the survivors took no writes after the kill");
    for survivor in &nodes {
        let (checked, lost, corrupted) = verify(&sessions, survivor, &acked).await;
        println!(
            "cluster kill: {checked} acknowledged writes read back via {}, {failed} refused or cut",
            survivor.addr
        );
        assert_eq!((lost, corrupted), (0, 0));
        assert_eq!(checked, total);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_going_away_is_a_503_and_its_return_needs_no_restart() {
    let server = pg::private();
    let cluster = Cluster::new(&server).await;
    let a = cluster.start("node-a", "");
    let b = cluster.start("node-b", "");
    let (first, first_raw) = raw_session(&a, &b, "writer-0").await;
    let mut sessions = vec![first];
    for i in 1..6 {
        sessions.push(session(&a, &b, &format!("writer-{i}")).await);
    }
    let acked: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); sessions.len()]));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = spawn_writers(&sessions, vec![url(&a), url(&b)], &acked, &stop);
    // Real time: load before the database restarts.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Restarted mid-load: writes in flight fail (not acknowledged), later ones work.
    server.restart();
    // Real time: load across the restart.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Down for a while: every node says so, and refuses writes with 503.
    server.pause();
    let reply = first_raw.put(b"while the database is down", &[]).await;
    reply.expect(503, "store_unavailable");
    assert!(!reply.header("retry-after").is_empty());
    assert_eq!(ready(a.addr).await, 503);
    assert_eq!(ready(b.addr).await, 503);
    server.resume();

    // Back by itself, on both nodes, with no restart.
    let started = Instant::now();
    while ready(a.addr).await != 200 || ready(b.addr).await != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "the nodes did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Real time: load after the recovery.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for writer in writers {
        let Ok((o, f)) = writer.await else {
            for node in [&a, &b] {
                for line in node.logs.lock().unwrap().iter().filter(|l| l.contains("failed")) {
                    eprintln!("{line}");
                }
            }
            panic!("a writer failed");
        };
        ok += o;
        failed += f;
    }
    assert!(failed > 0, "the restart cut nothing: the test did not test it");
    let after = device_at(&sessions[0], &b).put_key(b"after", None, Condition::None).await.unwrap();
    assert!(after > 1);
    let (checked, lost, corrupted) = verify(&sessions, &a, &acked).await;
    println!("database restart: {ok} writes acknowledged, {failed} refused or cut, {checked} read back");
    assert_eq!((lost, corrupted), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_started_together_migrate_once_and_a_newer_schema_is_refused() {
    let cluster = Cluster::new(pg::shared()).await;
    let configs: Vec<PathBuf> = ["node-a", "node-b", "node-c"].iter().map(|n| cluster.config(n, "")).collect();
    let starts: Vec<_> = configs
        .iter()
        .map(|config| {
            let config = config.clone();
            std::thread::spawn(move || serve(&["serve", "--config", config.to_str().unwrap()], &[]))
        })
        .collect();
    let nodes: Vec<Serving> = starts.into_iter().map(|s| s.join().unwrap()).collect();
    let alice = session(&nodes[0], &nodes[2], "alice").await;
    device_at(&alice, &nodes[1]).put_key(b"k", None, Condition::None).await.unwrap();
    let db = cluster.database.connect().await;
    assert_eq!(keyservice::store::postgres::schema_version(&db).await.unwrap(), SCHEMA_VERSION);
    drop(nodes);

    // A binary older than the schema refuses to touch it.
    db.execute("UPDATE ks_schema SET version = 99", &[]).await.unwrap();
    let (code, _, stderr) = binary::run(&["serve", "--config", configs[0].to_str().unwrap()], &[("RUST_LOG", "error")]);
    assert_eq!(code, 2, "{stderr}");
    let known = format!("schema is version 99, newer than this keyservice knows ({SCHEMA_VERSION})");
    assert!(stderr.contains(&known), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_schema_is_migrated_by_a_new_binary() {
    let cluster = Cluster::new(pg::shared()).await;
    // What a first start interrupted before its first step leaves: the version table only.
    let db = cluster.database.connect().await;
    db.batch_execute(
        "CREATE TABLE ks_schema (singleton BOOLEAN PRIMARY KEY CHECK (singleton), version INT NOT NULL); \
         INSERT INTO ks_schema VALUES (TRUE, 0)",
    )
    .await
    .unwrap();
    let node = cluster.start("node-a", "");
    assert_eq!(keyservice::store::postgres::schema_version(&db).await.unwrap(), SCHEMA_VERSION);
    let alice = session(&node, &node, "alice").await;
    alice.put_key(b"k", None, Condition::None).await.unwrap();
    drop(node);

    // A database as version 1 left it (no access history, no session credentials), with
    // its data and a live session: the next start adds both and keeps the rest.
    db.batch_execute(
        "DROP TABLE ks_access; ALTER TABLE ks_session DROP COLUMN credential; UPDATE ks_schema SET version = 1",
    )
    .await
    .unwrap();
    let node = cluster.start("node-a", "");
    assert_eq!(keyservice::store::postgres::schema_version(&db).await.unwrap(), SCHEMA_VERSION);
    let alice = device_at(&alice, &node);
    assert_eq!(alice.get_key().await.unwrap().bytes(), b"k");
    let history = alice.access_history(None, None).await.unwrap();
    assert_eq!(history.entries.iter().map(|e| e.operation.as_str()).collect::<Vec<_>>(), ["key_read"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_survives_restoring_an_older_database_backup() {
    let cluster = Cluster::new(pg::shared()).await;
    let a = cluster.start("node-a", "");
    let alice = session(&a, &a, "alice").await;
    device_at(&alice, &a).put_key(b"alice's key", None, Condition::None).await.unwrap();

    // A backup with the database's own tool, taken while alice still had her key.
    let backup = cluster.database.dump();
    real_service(&a).erase(NAMESPACE, "alice").await.unwrap();
    drop(a);

    // The older backup is restored over the database.
    let db = cluster.database.connect().await;
    db.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public").await.unwrap();
    cluster.database.restore(&backup);
    let rows: i64 = db.query_one("SELECT count(*) FROM ks_key_version", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1, "the backup holds alice's key");

    // The node re-applies its erasure ledger at start: alice stays erased.
    let a = cluster.start("node-a", "");
    let rows: i64 = db.query_one("SELECT count(*) FROM ks_key_version", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0);
    assert_eq!(device_at(&alice, &a).get_key().await.unwrap_err().code(), Some("unknown_session"));
}

/// Two live nodes never run under one `node_id` (three nodes started on one host with
/// the default, the host name, all ran as one): the second start is refused, naming the
/// id and what to do (exit 2: the configuration must change); once the first is gone,
/// the id is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_in_use_by_a_live_node_is_refused() {
    let cluster = Cluster::new(pg::shared()).await;
    let mut first = cluster.start("node-a", "");
    let twin = cluster.config("twin", "");
    let text = std::fs::read_to_string(&twin).unwrap().replace("node_id = \"twin\"", "node_id = \"node-a\"");
    std::fs::write(&twin, text).unwrap();
    let (code, _, err) = binary::run(&["serve", "--config", twin.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node_id \"node-a\"") && err.contains("give each node its own node_id"), "{err}");

    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let twin = loop {
        // The database notices the dead session's connection close almost at once.
        let attempt = std::panic::catch_unwind(|| serve(&["serve", "--config", twin.to_str().unwrap()], &[]));
        match attempt {
            Ok(node) => break node,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    };
    assert_eq!(send(twin.addr, "GET", "/readyz", &[], b"").await.status, 200);
}
