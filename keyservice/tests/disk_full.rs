//! A disk below the reserve, for real: the data directory, the audit log and the erasure
//! ledger each on a small tmpfs mounted for the test (the tests run as root, as CI
//! does), filled until writes are refused; every acknowledged write is read back
//! afterwards. And the same for a PostgreSQL database whose disk fills. A data disk
//! filled to the last byte: `full_disk_store.rs`.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/disks.rs"]
mod disks;
#[path = "support/postgres.rs"]
mod pg;
mod support;

use std::process::Command;
use std::time::Duration;

use disks::{Tmpfs, config_file, every_acknowledged_key_reads_back, restart, terminate};
use support::*;

/// Each request gets an answer within this, full disk or not.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

async fn timed<T>(what: &str, request: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(ANSWER_WITHIN, request).await.unwrap_or_else(|_| panic!("{what}: no answer in time"))
}

/// Writes 32 KiB keys, a new user each, until the server refuses; returns what it
/// acknowledged (device and bytes) and the refusal's status and code.
async fn fill_with_keys(addr: std::net::SocketAddr) -> (Vec<(Device, Vec<u8>)>, u16, String) {
    let mut acknowledged = Vec::new();
    for n in 0..1000u32 {
        let init = timed("init", send(addr, "POST", "/init", &[], b"")).await;
        if init.status != 200 {
            return (acknowledged, init.status.as_u16(), init.error());
        }
        let token = init.json::<keyservice_client::protocol::wire::InitResponse>().init_token;
        let connect = timed("connect", connect_raw(addr, &connect_body(NAMESPACE, &format!("user-{n}"), &token))).await;
        if connect.status != 200 {
            return (acknowledged, connect.status.as_u16(), connect.error());
        }
        let session_token = connect.json::<keyservice_client::protocol::wire::ConnectResponse>().session_token;
        let device = Device { addr, session_token, init_token: token };
        let key: Vec<u8> = (0..32 * 1024).map(|i| (i as u32 ^ n.wrapping_mul(2_654_435_761)) as u8).collect();
        let put = timed("put", device.put(&key, &[])).await;
        if !put.status.is_success() {
            return (acknowledged, put.status.as_u16(), put.error());
        }
        acknowledged.push((device, key));
    }
    panic!("the disk never filled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_data_disk_refuses_writes_clearly_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount("24m");
    let filler = disk.fill(10 * 1024 * 1024);
    // A reserve above the room the store keeps for itself (a few MiB at this size), so
    // the reserve is what refuses.
    let config = config_file(dir.path(), disk.path(), dir.path(), dir.path(), "min_free_bytes = 5242880");
    let mut server = binary::serve(&["serve", "--config", config.to_str().unwrap()], &[]);

    let (acknowledged, status, code) = fill_with_keys(server.addr).await;
    assert!(!acknowledged.is_empty(), "some keys fit before the reserve");
    assert_eq!((status, code.as_str()), (507, "insufficient_storage"));
    let ready = send(server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json::<serde_json::Value>()["disks"]["data"], "low");
    every_acknowledged_key_reads_back(&acknowledged, server.addr).await;
    assert!(server.logs.lock().unwrap().iter().any(|l| l.contains("below its free-space reserve")));

    // Space comes back: writes resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let (device, _) = &acknowledged[0];
    assert!(timed("put", device.put(b"after space returned", &[])).await.status.is_success());
    assert_eq!(send(server.addr, "GET", "/readyz", &[], b"").await.status, 200);
    let took = terminate(&mut server);
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A restart on a disk below the reserve, but with the room to open the store,
    // starts, serves reads, and refuses growth.
    let _filler = disk.fill(4 * 1024 * 1024);
    let server = restart(&config);
    every_acknowledged_key_reads_back(&acknowledged[1..], server.addr).await;
    let put = timed("put", Device { addr: server.addr, ..acknowledged[1].0.clone() }.put(b"more", &[])).await;
    put.expect(507, "insufficient_storage");
    assert!(put.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_audit_disk_stops_writes_then_reads_and_the_chain_survives() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Tmpfs::mount("1m");
    let config = config_file(dir.path(), dir.path(), audit.path(), dir.path(), "min_free_bytes = 65536");
    let server = binary::serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let device = device(server.addr, "audited").await;
    assert!(device.put(b"audited key", &[]).await.status.is_success());

    // Below the reserve: growth refused, reads go on into the reserve.
    let filler = audit.fill(32 * 1024);
    device.put(b"another", &[]).await.expect(507, "insufficient_storage");
    assert_eq!(
        send(server.addr, "GET", "/readyz", &[], b"").await.json::<serde_json::Value>()["disks"]["audit"],
        "low"
    );
    assert_eq!(device.get("/key").await.body.as_ref(), b"audited key");

    // Completely full: with the audit log failing closed, the key is not handed out.
    let _rest = {
        let rest = audit.path().join("rest");
        let free = keyservice::disk::free_bytes(audit.path()).unwrap();
        std::fs::write(&rest, vec![0u8; free as usize]).ok();
        rest
    };
    let mut refused = None;
    for _ in 0..200 {
        let reply = timed("get", device.get("/key")).await;
        if reply.status != 200 {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a full audit disk stops reads");
    refused.expect(503, "audit_unavailable");
    assert!(!refused.body.windows(11).any(|w| w == b"audited key"));
    assert_eq!(send(server.addr, "GET", "/readyz", &[], b"").await.status, 503);

    // Space back: reads and then writes resume, and the chain is whole.
    std::fs::remove_file(audit.path().join("rest")).unwrap();
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(timed("get", device.get("/key")).await.status, 200);
    assert!(timed("put", device.put(b"third", &[])).await.status.is_success());
    drop(server);
    let (code, out, err) = binary::run(&["audit", "verify", audit.path().join("audit.jsonl").to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_ledger_disk_refuses_erasure_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Tmpfs::mount("256k");
    let config = config_file(dir.path(), dir.path(), dir.path(), ledger.path(), "min_free_bytes = 0");
    let server = binary::serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let device = device(server.addr, "leaving").await;
    assert!(device.put(b"kept key", &[]).await.status.is_success());
    let filler = ledger.fill(0);
    let erase_body = serde_json::json!({ "namespace": NAMESPACE, "userId": "leaving" }).to_string();
    let json: Vec<(&'static str, String)> = vec![("content-type", "application/json".into())];
    let erase = || signed(server.addr, KEY_ID, SECRET, "POST", "/erase", erase_body.as_bytes(), &json);
    let refused = timed("erase", erase()).await;
    refused.expect(507, "insufficient_storage");
    assert_eq!(device.get("/key").await.body.as_ref(), b"kept key", "nothing was erased");
    let ledger_text = std::fs::read_to_string(ledger.path().join("erasures.jsonl")).unwrap_or_default();
    assert!(ledger_text.lines().all(|l| l.ends_with('}')), "no half line left: {ledger_text:?}");

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(timed("erase", erase()).await.status, 200);
    device.get("/key").await.expect(401, "unknown_session");
}

/// The database's disk fills: the key table lives in a tablespace on a small tmpfs.
/// Writes get 507 and change nothing, reads go on, `/readyz` says the store is full, and
/// once space is added writes resume with no restart; every acknowledged write is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_refuses_writes_and_resumes_when_space_returns() {
    let server = pg::private();
    let database = server.database().await;
    let store: std::sync::Arc<dyn keyservice::Store> =
        std::sync::Arc::new(keyservice::PostgresStore::open(&database.config(), "node-a").await.unwrap());
    let space = Tmpfs::mount("3m");
    let owner = server.owner();
    assert!(Command::new("chown").arg(&owner).arg(space.path()).status().unwrap().success());
    let db = database.connect().await;
    db.batch_execute(&format!("CREATE TABLESPACE small LOCATION '{}'", space.path().display())).await.unwrap();
    db.batch_execute("ALTER TABLE ks_key_version SET TABLESPACE small").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_key_versions = 1_000_000;
    let node = TestServer::start(config, store).await;
    let device = device(node.addr, "alice").await;
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..400u32 {
        // Random bytes do not compress: each version takes its full size in the table.
        let bytes: Vec<u8> = (0..32 * 1024).map(|_| rand::random::<u8>()).collect();
        let reply = device.put(&bytes, &[]).await;
        match reply.status.as_u16() {
            200 | 201 => acked.push((reply.header("etag").trim_matches('"').parse::<u64>().unwrap(), bytes)),
            _ => {
                refused = Some((n, reply));
                break;
            }
        }
    }
    let (n, reply) = refused.expect("the database never filled");
    reply.expect(507, "insufficient_storage");
    assert!(!reply.header("retry-after").is_empty());
    assert!(n > 5, "refused after only {n} writes");

    // Reads go on; readiness says why it is red.
    let latest = device.get("/key").await;
    latest.expect_status(200);
    assert_eq!(latest.body.as_ref(), acked.last().unwrap().1.as_slice());
    let ready = send(node.addr, "GET", "/readyz", &[], b"").await;
    ready.expect_status(503);
    assert_eq!(ready.json::<serde_json::Value>()["store"], "full");
    let metrics = String::from_utf8(send(node.addr, "GET", "/metrics", &[], b"").await.body.to_vec()).unwrap();
    assert!(metrics.contains("keyservice_insufficient_storage_total{disk=\"database\"}"), "{metrics}");

    // More space: the next write works, without a restart.
    assert!(Command::new("mount").args(["-o", "remount,size=16m"]).arg(space.path()).status().unwrap().success());
    device.put(b"after the disk grew", &[]).await.expect_status(200);
    for (version, bytes) in &acked {
        let reply = device.get(&format!("/key?version={version}")).await;
        reply.expect_status(200);
        assert_eq!(reply.body.as_ref(), bytes.as_slice(), "version {version}");
    }
    println!("full database: {} writes acknowledged before the first 507, all read back", acked.len());
    drop(node);
    db.batch_execute("DROP TABLE ks_key_version").await.unwrap();
    db.batch_execute("DROP TABLESPACE small").await.unwrap();
}
