//! keyservice nodes on a real PostgreSQL primary with a real streaming standby (both
//! started by `scripts/postgres.sh`): a standby that stops confirming is a 503 within the
//! deadline, never a hang; a failover loses nothing acknowledged, and the nodes do not
//! hammer a standby that is not yet promoted; an old primary that comes back is never
//! written to, and one that rejoins as a standby can fail back.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/postgres.rs"]
mod pg;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binary::Serving;
use cluster::*;
use keyservice_client::{Condition, Session};
use support::*;

/// The deadline the nodes here run with (`statement_timeout_ms`).
const DEADLINE: Duration = Duration::from_millis(1000);
/// What an answer may take beyond the deadline: the HTTP round trip and the audit line.
const MARGIN: Duration = Duration::from_millis(1500);

async fn ready_within(node: &Serving, limit: Duration) -> u16 {
    let started = Instant::now();
    let status = send(node.addr, "GET", "/readyz", &[], b"").await.status.as_u16();
    assert!(started.elapsed() < limit, "/readyz took {:?}", started.elapsed());
    status
}

/// Polls until every node's `/readyz` says `status`.
async fn wait_ready(nodes: &[&Serving], status: u16, within: Duration) {
    let started = Instant::now();
    loop {
        let mut all = true;
        for node in nodes {
            all &= send(node.addr, "GET", "/readyz", &[], b"").await.status.as_u16() == status;
        }
        if all {
            return;
        }
        if started.elapsed() > within {
            for node in nodes {
                let body = send(node.addr, "GET", "/readyz", &[], b"").await;
                eprintln!("{}: {}", node.addr, String::from_utf8_lossy(&body.body));
                for line in node.logs.lock().unwrap().iter().rev().take(5) {
                    eprintln!("  {line}");
                }
            }
            panic!("/readyz did not turn {status} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// For each user, the writes its history accounts for against the versions that exist:
/// every version must be an acknowledged write's or an unconfirmed one's.
async fn history_explains_every_version(sessions: &[Session], acked: &Acked) -> (u64, u64) {
    let acked = acked.lock().unwrap().clone();
    let (mut versions, mut unconfirmed_total) = (0, 0);
    for (i, session) in sessions.iter().enumerate() {
        let latest = session.get_key().await.map(|key| key.version).unwrap_or(0);
        let mut written = std::collections::BTreeSet::new();
        let mut unconfirmed = 0;
        let mut before = None;
        loop {
            let page = session.access_history(Some(500), before.as_deref()).await.unwrap();
            for entry in &page.entries {
                match entry.operation.as_str() {
                    "key_write" => {
                        let last = entry.version.unwrap();
                        written.extend(entry.first_version.unwrap_or(last)..=last);
                    }
                    "key_write_unconfirmed" => unconfirmed += 1,
                    _ => {}
                }
            }
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        for version in acked[i].keys() {
            assert!(written.contains(version), "writer {i}: acknowledged version {version} has no history entry");
        }
        let unexplained = (1..=latest).filter(|v| !written.contains(v)).count() as u64;
        assert!(
            unexplained <= unconfirmed,
            "writer {i}: {unexplained} versions exist that nobody was told of, but only {unconfirmed} unconfirmed writes are in the history"
        );
        versions += latest;
        unconfirmed_total += unconfirmed;
    }
    (versions, unconfirmed_total)
}

/// A primary with a synchronous streaming standby, and a cluster on the primary's
/// database whose nodes run with [`DEADLINE`]; with `both_hosts`, the nodes' URL lists
/// the primary and then the standby.
async fn replicated(both_hosts: bool) -> (pg::Server, pg::Server, Cluster) {
    let primary = pg::private();
    let standby = primary.standby();
    primary.synchronous(true);
    let mut cluster = Cluster::new(&primary).await;
    if both_hosts {
        cluster.url = cluster.database.multi_host_url(&[primary.address(), standby.address()]);
    }
    cluster.storage = format!("statement_timeout_ms = {}\n", DEADLINE.as_millis());
    (primary, standby, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_synchronous_standby_is_a_503_within_the_deadline_and_a_red_readyz() {
    let (_primary, standby, cluster) = replicated(false).await;
    let node = cluster.start("node-a", "");
    let (first, raw) = raw_session(&node, &node, "writer-0").await;
    assert_eq!(first.put_key(b"before", None, Condition::None).await.unwrap(), 1);
    assert_eq!(ready_within(&node, DEADLINE + MARGIN).await, 200);
    let mut sessions = vec![first];
    for i in 1..4 {
        sessions.push(session(&node, &node, &format!("writer-{i}")).await);
    }
    let acked: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); sessions.len()]));
    acked.lock().unwrap()[0].insert(1, b"before".to_vec());
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&sessions, vec![url(&node)], &acked, &stop);
    // Real time: writes in flight when the standby stops.
    tokio::time::sleep(Duration::from_millis(500)).await;

    standby.freeze();
    // Every kind of request that commits gets its answer within the deadline: a 503
    // that says when to try again, never an acknowledgement.
    for _ in 0..3 {
        let started = Instant::now();
        let reply = raw.put(b"while the standby is stopped", &[]).await;
        assert!(started.elapsed() < DEADLINE * 2 + MARGIN, "a PUT took {:?}", started.elapsed());
        reply.expect(503, "store_unavailable");
        assert!(!reply.header("retry-after").is_empty());
    }
    let started = Instant::now();
    let reply = send(node.addr, "POST", "/init", &[], b"").await;
    assert!(started.elapsed() < DEADLINE + MARGIN, "/init took {:?}", started.elapsed());
    reply.expect(503, "store_unavailable");
    // /readyz turns red, and answers within the deadline too.
    assert_eq!(ready_within(&node, DEADLINE + MARGIN).await, 503);
    let body: serde_json::Value = send(node.addr, "GET", "/readyz", &[], b"").await.json();
    assert_eq!(body["store"], "failing", "{body}");

    standby.thaw();
    wait_ready(&[&node], 200, Duration::from_secs(15)).await;
    // Real time: load after the standby is back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for writer in writers {
        let (o, f) = writer.await.unwrap();
        ok += o;
        failed += f;
    }
    assert!(failed > 0, "no write was refused: the standby's stop did not reach them");
    let (checked, lost, corrupted) = verify(&sessions, &node, &acked).await;
    assert_eq!((lost, corrupted), (0, 0));
    // Let the node write its queued history.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (versions, unconfirmed) = history_explains_every_version(&sessions, &acked).await;
    println!(
        "stalled standby: {ok} writes acknowledged, {failed} refused, {checked} read back, {versions} versions exist, \
         {unconfirmed} unconfirmed writes in the history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_loses_nothing_acknowledged_and_the_nodes_back_off_until_the_promotion() {
    let (primary, standby, cluster) = replicated(true).await;
    let a = cluster.start("node-a", "");
    let b = cluster.start("node-b", "");
    let mut sessions = Vec::new();
    for i in 0..6 {
        sessions.push(session(&a, &b, &format!("writer-{i}")).await);
    }
    let acked: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); sessions.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&sessions, vec![url(&a), url(&b)], &acked, &stop);
    // Real time: load before the primary dies.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let sessions_on_standby = || async {
        let client = standby.connect("postgres").await;
        let row = client.query_one("SELECT sum(sessions)::bigint FROM pg_stat_database", &[]).await.unwrap();
        row.get::<_, i64>(0)
    };
    primary.kill();
    let before = sessions_on_standby().await;
    // Real time: the gap an orchestrator takes to promote, under load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tried = sessions_on_standby().await - before - 1;
    wait_ready(&[&a, &b], 503, Duration::from_secs(5)).await;
    standby.promote();
    wait_ready(&[&a, &b], 200, Duration::from_secs(15)).await;
    // Real time: load on the new primary.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for writer in writers {
        let (o, f) = writer.await.unwrap();
        ok += o;
        failed += f;
    }
    // Two nodes, 2 s, backing off from 50 ms to 2 s: a dozen tries each at most.
    assert!(tried <= 40, "the nodes opened {tried} connections to the standby in 2 s");
    for node in [&a, &b] {
        let (checked, lost, corrupted) = verify(&sessions, node, &acked).await;
        assert_eq!((lost, corrupted), (0, 0), "through {}", node.addr);
        println!("failover: {ok} writes acknowledged, {failed} refused, {checked} read back through {}", node.addr);
    }
    println!("failover: {tried} connections to the standby in the 2 s before its promotion");
    let after = device_at(&sessions[0], &b).put_key(b"after", None, Condition::None).await.unwrap();
    assert!(after > 1);
}

/// Rows in the key-version table of `server`'s copy of the cluster's database.
async fn versions_on(server: &pg::Server, database: &str) -> i64 {
    let client = server.connect(database).await;
    client.query_one("SELECT count(*) FROM ks_key_version", &[]).await.unwrap().get(0)
}

/// `rounds` PUTs by each of `sessions`, one after another, noting the acknowledged ones.
async fn write_rounds(sessions: &[Session], acked: &Acked, rounds: usize) {
    for round in 0..rounds {
        for (i, session) in sessions.iter().enumerate() {
            let bytes = format!("writer {i} round {round}").into_bytes();
            if let Ok(version) = session.put_key(&bytes, None, Condition::None).await {
                acked.lock().unwrap()[i].insert(version, bytes);
            }
        }
    }
}

/// `count` writers with sessions made at `node`, and their acknowledged writes (none yet).
async fn writers(node: &Serving, count: usize) -> (Vec<Session>, Acked) {
    let mut sessions = Vec::new();
    for i in 0..count {
        sessions.push(session(node, node, &format!("writer-{i}")).await);
    }
    let acked = Arc::new(Mutex::new(vec![BTreeMap::new(); count]));
    (sessions, acked)
}

/// `primary` dies, `standby` is promoted, and `node` is ready again.
async fn fail_over(primary: &pg::Server, standby: &pg::Server, node: &Serving) {
    primary.kill();
    standby.promote();
    wait_ready(&[node], 200, Duration::from_secs(15)).await;
}

/// After a first failover under writes (timeline 2 on the standby), with the URL listing
/// the old primary first.
struct FailedOver {
    primary: pg::Server,
    standby: pg::Server,
    cluster: Cluster,
    database: String,
    node: Serving,
    sessions: Vec<Session>,
    acked: Acked,
}

/// Three writers at one node write 5 rounds, the primary dies and the standby is
/// promoted, and they write 5 more.
async fn failed_over() -> FailedOver {
    let (primary, standby, cluster) = replicated(true).await;
    let database = cluster.database.name.clone();
    let node = cluster.start("node-a", "");
    let (sessions, acked) = writers(&node, 3).await;
    write_rounds(&sessions, &acked, 5).await;
    fail_over(&primary, &standby, &node).await;
    write_rounds(&sessions, &acked, 5).await;
    FailedOver { primary, standby, cluster, database, node, sessions, acked }
}

fn acknowledged(acked: &Acked) -> usize {
    acked.lock().unwrap().iter().map(BTreeMap::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_primary_that_comes_back_is_never_written_to() {
    // The old primary is listed first: `target_session_attrs` alone would pick it.
    let FailedOver { primary, standby, cluster, database, node: _a, sessions, acked } = failed_over().await;
    let write_some = |rounds| write_rounds(&sessions, &acked, rounds);

    // The old primary comes back as a primary, on timeline 1, first in the URL.
    primary.start_stopped();
    let on_old = versions_on(&primary, &database).await;
    // A node starting now learns timeline 2 from the other host and refuses the old one.
    let config = cluster.config("node-b", "");
    let mut child = std::process::Command::new(binary::BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("a node started with the old primary first in its URL and kept running");
        }
        // Real time: a separate process deciding.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a node started on the old primary");
    assert!(said.contains("timeline 1") && said.contains("timeline 2") && said.contains("old primary"), "{said}");
    // The running node writes to the new primary only: through the connections it has,
    // and with 503s once it would need a new one (which would reach the old primary).
    write_some(5).await;
    assert_eq!(versions_on(&primary, &database).await, on_old, "a write reached the old primary");
    let acknowledged = acknowledged(&acked);
    let on_new = versions_on(&standby, &database).await;
    assert!(on_new >= acknowledged as i64, "{acknowledged} writes acknowledged, {on_new} on the new primary");
    println!("split brain refused: {acknowledged} acknowledged writes on the new primary, none on the old one");
}

/// Failing back: the old primary rejoins as a standby of the promoted one (`pg_rewind`),
/// becomes its synchronous standby, and takes over again when that one dies. The nodes
/// follow both failovers with no restart and lose nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_primary_rejoins_as_a_standby_and_a_second_failover_loses_nothing() {
    let FailedOver { primary, standby, cluster: _cluster, database, node: a, sessions, acked } = failed_over().await;
    let write_some = |rounds| write_rounds(&sessions, &acked, rounds);
    let after_first = acknowledged(&acked);

    // The old primary rewinds to where the timelines parted and follows the new one,
    // which then waits for it to confirm every commit.
    primary.rejoin(&standby);
    standby.synchronous(true);
    write_some(5).await;
    let confirmed = acknowledged(&acked);
    assert!(confirmed > after_first, "no write was acknowledged with the old primary as the standby");
    assert!(versions_on(&primary, &database).await > 0, "the rejoined server has nothing");

    // Second failover: the old primary is promoted again (timeline 3), first in the URL.
    fail_over(&standby, &primary, &a).await;
    write_some(5).await;
    let total = acknowledged(&acked);
    assert!(total > confirmed, "no write was acknowledged after the second failover");
    let (checked, lost, corrupted) = verify(&sessions, &a, &acked).await;
    assert_eq!((lost, corrupted), (0, 0));
    println!(
        "failback: {total} writes acknowledged ({after_first} by the first failover, {confirmed} once the old primary \
         had rejoined), {checked} read back after the second failover"
    );
}

/// What an asynchronous standby loses: with no `synchronous_standby_names` a write is
/// acknowledged once the primary has it, so the commits the standby had not received
/// when the primary died are gone after its promotion, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_asynchronous_standby_loses_exactly_what_it_had_not_received() {
    let (primary, standby, cluster) = replicated(true).await;
    primary.synchronous(false);
    let database = cluster.database.name.clone();
    let a = cluster.start("node-a", "");
    let (sessions, received) = writers(&a, 3).await;
    write_rounds(&sessions, &received, 3).await;
    let on_primary = versions_on(&primary, &database).await;
    let started = Instant::now();
    while versions_on(&standby, &database).await < on_primary {
        assert!(started.elapsed() < Duration::from_secs(10), "the standby did not catch up");
        // Real time: the standby replaying what streams to it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The standby is down: the primary goes on acknowledging on its own.
    standby.pause();
    let unsent: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); sessions.len()]));
    write_rounds(&sessions, &unsent, 3).await;
    let acknowledged_alone = acknowledged(&unsent);
    assert_eq!(acknowledged_alone, 9, "an asynchronous primary acknowledges without its standby");

    primary.kill();
    standby.resume();
    standby.promote();
    wait_ready(&[&a], 200, Duration::from_secs(15)).await;
    let (checked, lost, corrupted) = verify(&sessions, &a, &received).await;
    assert_eq!((checked, lost, corrupted), (9, 0, 0), "what the standby had received survives");
    let (_, lost, _) = verify(&sessions, &a, &unsent).await;
    assert_eq!(lost, acknowledged_alone, "what it had not received is gone");
    println!("asynchronous standby: {checked} writes it had received kept, {lost} acknowledged writes it had not lost");
}
