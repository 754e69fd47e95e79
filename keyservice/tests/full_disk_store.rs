//! The embedded store on a disk that fills completely: with no reserve, when another
//! process takes the last byte, across SIGKILL, restarts on the full disk, restarts
//! after space is freed, and a copy of the data directory taken while it was full. Every
//! refusal comes within a second and is a 507 or a 503, never a 500; and every write
//! that was acknowledged reads back byte for byte at the end of each sequence.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/disks.rs"]
mod disks;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use disks::{Tmpfs, every_acknowledged_key_reads_back, restart as serve, terminate};
use keyservice_client::protocol::wire::{ConnectResponse, InitResponse};
use support::*;

/// Every answer on a full disk comes within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// A config with the data directory under `data` and everything else under `dir`.
fn config_file(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    disks::config_file(dir, data, dir, dir, extra)
}

/// Sends `request` and checks it is answered within [`ANSWER_WITHIN`], and that a
/// refusal is a 507 or a 503 with its JSON body.
async fn answered<F: std::future::Future<Output = Reply>>(what: &str, request: F) -> Reply {
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(15), request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in 15 s"));
    let took = started.elapsed();
    if !reply.status.is_success() {
        assert!(took < ANSWER_WITHIN, "{what}: refused after {took:?}");
        let code = reply.error();
        assert!(
            matches!(
                (reply.status.as_u16(), code.as_str()),
                (507, "insufficient_storage") | (503, "store_unavailable")
            ),
            "{what}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        assert!(!reply.json::<serde_json::Value>()["message"].as_str().unwrap().is_empty());
    }
    reply
}

/// A device's key, as acknowledged.
type Acknowledged = Vec<(Device, Vec<u8>)>;

/// Connects new users and writes a 32 KiB key for each until the server refuses;
/// returns what it acknowledged and the refusal.
async fn fill_with_keys(addr: SocketAddr, first: u32, acknowledged: &mut Acknowledged) -> Reply {
    for n in first..first + 2000 {
        let init = answered("init", send(addr, "POST", "/init", &[], b"")).await;
        if !init.status.is_success() {
            return init;
        }
        let token = init.json::<InitResponse>().init_token;
        let connect = answered("connect", connect_raw(addr, &connect_body(NAMESPACE, &format!("u{n}"), &token))).await;
        if !connect.status.is_success() {
            return connect;
        }
        let device = Device { addr, session_token: connect.json::<ConnectResponse>().session_token, init_token: token };
        let key: Vec<u8> = (0..32 * 1024).map(|i| (i as u32 ^ n.wrapping_mul(2_654_435_761)) as u8).collect();
        let put = answered("put", device.put(&key, &[])).await;
        if !put.status.is_success() {
            return put;
        }
        acknowledged.push((device, key));
    }
    panic!("the disk never filled");
}

async fn readiness(addr: SocketAddr) -> (u16, serde_json::Value) {
    let started = Instant::now();
    let ready = send(addr, "GET", "/readyz", &[], b"").await;
    assert!(started.elapsed() < ANSWER_WITHIN);
    (ready.status.as_u16(), ready.json())
}

/// Every file under `dir` with its bytes, to tell whether anything changed.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(contents(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

fn kill(server: &mut binary::Serving) {
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// A start on a disk without the room to open the store: exit 3, a message that says
/// what to do, and not a byte changed.
fn start_is_refused_and_changes_nothing(config: &Path, data: &Path) {
    let before = contents(data);
    let (code, _, err) = binary::run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bytes free") && err.contains("Free space on that disk"), "{err}");
    assert!(contents(data) == before, "a refused start changed the data directory");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_reserve_a_full_disk_refuses_at_once_and_no_restart_loses_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount("12m");
    let filler = disk.fill(5 * 1024 * 1024);
    let config = config_file(dir.path(), disk.path(), "min_free_bytes = 0");
    let data = disk.path().join("data");
    let mut server = serve(&config);
    let mut acknowledged = Vec::new();
    fill_with_keys(server.addr, 0, &mut acknowledged).await;
    assert!(acknowledged.len() > 10, "only {} keys fitted", acknowledged.len());
    // A 32 KiB key no longer fits; small writes may, until none does.
    for n in 0.. {
        let init = answered("init", send(server.addr, "POST", "/init", &[], b"")).await;
        if !init.status.is_success() {
            init.expect(507, "insufficient_storage");
            break;
        }
        assert!(n < 10_000, "small writes never filled the disk");
    }
    let (status, ready) = readiness(server.addr).await;
    assert_eq!((status, &ready["disks"]["data"], &ready["store"]), (503, &"full".into(), &"full".into()), "{ready}");

    // Another process takes every byte left: still answers within a second, no 500.
    let rest = disk.take_the_rest("rest");
    for (device, key) in acknowledged.iter().take(5) {
        // A read goes on while the replay floor it needs is already reserved; with not a
        // byte left it may be refused like a write.
        let got = answered("get", device.get("/key")).await;
        assert!(!got.status.is_success() || got.body.as_ref() == key.as_slice());
        answered("put", device.put(b"more", &[])).await.expect(507, "insufficient_storage");
    }
    answered("init", send(server.addr, "POST", "/init", &[], b"")).await.expect(507, "insufficient_storage");
    assert_eq!(readiness(server.addr).await.1["disks"]["data"], "full");

    // SIGKILL on the full disk, then two starts on it: refused, nothing touched.
    kill(&mut server);
    start_is_refused_and_changes_nothing(&config, &data);
    start_is_refused_and_changes_nothing(&config, &data);

    // A copy of the data directory taken while the disk was full opens elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    assert!(Command::new("cp").arg("-a").arg(&data).arg(elsewhere.path()).status().unwrap().success());
    let copy_config = config_file(dir.path(), elsewhere.path(), "min_free_bytes = 0");
    let mut copy = serve(&copy_config);
    every_acknowledged_key_reads_back(&acknowledged, copy.addr).await;
    terminate(&mut copy);

    // The other process's bytes freed: the store opens with every write, but is still
    // at its own limit, so growth is refused at once; a second restart the same.
    std::fs::remove_file(&rest).unwrap();
    let mut server = serve(&config);
    every_acknowledged_key_reads_back(&acknowledged, server.addr).await;
    let (device, _) = &acknowledged[0];
    let device = Device { addr: server.addr, ..device.clone() };
    answered("put", device.put(b"at the limit", &[])).await.expect(507, "insufficient_storage");
    terminate(&mut server);
    let mut server = serve(&config);
    every_acknowledged_key_reads_back(&acknowledged, server.addr).await;

    // Room freed: writes resume without a restart; filled to the limit again and killed
    // mid-load; everything is there after the restart.
    std::fs::remove_file(&filler).unwrap();
    let device = Device { addr: server.addr, ..device };
    let put = answered("put", device.put(b"room again", &[])).await;
    assert!(put.status.is_success(), "{}", String::from_utf8_lossy(&put.body));
    acknowledged[0].1 = b"room again".to_vec();
    assert_eq!(readiness(server.addr).await.0, 200);
    let before = acknowledged.len();
    fill_with_keys(server.addr, 10_000, &mut acknowledged).await;
    assert!(acknowledged.len() > before + 10);
    kill(&mut server);
    let mut server = serve(&config);
    every_acknowledged_key_reads_back(&acknowledged, server.addr).await;
    // Still at the limit, unless the open dropped what the kill cut short: either way
    // `/readyz` says what a write then meets.
    let (status, ready) = readiness(server.addr).await;
    let device = Device { addr: server.addr, ..acknowledged[0].0.clone() };
    let put = answered("put", device.put(b"after the kill", &[])).await;
    match ready["disks"]["data"].as_str() {
        Some("full") => assert_eq!((status, put.status.as_u16()), (503, 507), "{ready}"),
        _ => {
            assert_eq!((status, put.status.as_u16()), (200, 200), "{ready}");
            acknowledged[0].1 = b"after the kill".to_vec();
        }
    }

    // Restarted once more at that limit, and again: each open finds the room it needs,
    // and every acknowledged write reads back.
    for _ in 0..2 {
        terminate(&mut server);
        server = serve(&config);
        every_acknowledged_key_reads_back(&acknowledged, server.addr).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_process_taking_the_last_byte_past_the_default_reserve_costs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the default reserve (64 MiB) and a little more.
    let disk = Tmpfs::mount("80m");
    let _filler = disk.fill(70 * 1024 * 1024);
    let config = config_file(dir.path(), disk.path(), "");
    let mut server = serve(&config);
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let device = device(server.addr, &format!("v{n}")).await;
        let key = format!("key of v{n}").into_bytes();
        assert!(device.put(&key, &[]).await.status.is_success());
        acknowledged.push((device, key));
    }

    let rest = disk.take_the_rest("rest");
    for (device, key) in &acknowledged {
        answered("put", device.put(b"while full", &[])).await.expect(507, "insufficient_storage");
        let got = answered("get", device.get("/key")).await;
        assert!(!got.status.is_success() || got.body.as_ref() == key.as_slice());
    }
    answered("init", send(server.addr, "POST", "/init", &[], b"")).await.expect(507, "insufficient_storage");
    let (status, ready) = readiness(server.addr).await;
    assert_eq!((status, &ready["disks"]["data"]), (503, &"full".into()), "{ready}");
    let metrics = String::from_utf8(send(server.addr, "GET", "/metrics", &[], b"").await.body.to_vec()).unwrap();
    assert!(metrics.contains("keyservice_insufficient_storage_total{disk=\"data\"}"), "{metrics}");

    // Space back: ready again and writing, with no restart.
    std::fs::remove_file(&rest).unwrap();
    assert_eq!(readiness(server.addr).await.0, 200);
    let (device, _) = &acknowledged[0];
    assert!(device.put(b"space returned", &[]).await.status.is_success());
    acknowledged[0].1 = b"space returned".to_vec();
    every_acknowledged_key_reads_back(&acknowledged, server.addr).await;

    // SIGTERM on a full disk stops it; a start on it is refused; after freeing, all there.
    let rest = disk.take_the_rest("rest");
    terminate(&mut server);
    start_is_refused_and_changes_nothing(&config, &disk.path().join("data"));
    std::fs::remove_file(&rest).unwrap();
    let server = serve(&config);
    every_acknowledged_key_reads_back(&acknowledged, server.addr).await;
    assert_eq!(readiness(server.addr).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_written_snapshot_left_by_a_start_on_a_full_disk_is_removed_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), dir.path(), "");
    let mut server = serve(&config);
    let device = device(server.addr, "kept").await;
    assert!(device.put(b"the kept key", &[]).await.status.is_success());
    terminate(&mut server);
    // What sled leaves when the disk fills while it writes the snapshot of an open: a
    // newer, truncated snapshot, which it would read as the newest.
    let data = dir.path().join("data");
    std::fs::write(data.join("snap.7FFFFFFFFFFFFFFF.generating"), b"truncated by ENOSPC").unwrap();
    let server = serve(&config);
    assert!(!data.join("snap.7FFFFFFFFFFFFFFF.generating").exists());
    assert!(server.logs.lock().unwrap().iter().any(|l| l.contains("removed half-written snapshots")));
    let device = Device { addr: server.addr, ..device };
    assert_eq!(device.get("/key").await.body.as_ref(), b"the kept key");
}

/// What opening a store really takes from its disk, at three sizes, against what the
/// store requires before it opens (`docs/storage.md` quotes these figures). The store
/// is closed by dropping it and reopened, so that sled replays its log and writes a new
/// snapshot, as after a restart.
#[tokio::test(flavor = "multi_thread")]
async fn opening_a_store_takes_less_room_than_it_requires() {
    use keyservice::store::Records;
    use keyservice::store::{Precondition, UserKey, Writer};

    let disk = Tmpfs::mount("1g");
    let dir = disk.path().join("data");
    let mut users = 0u32;
    for target in [1_000u32, 20_000, 100_000] {
        let store = std::sync::Arc::new(keyservice::SledStore::open(&dir).unwrap());
        while users < target {
            let chunk: Vec<_> = (users..target.min(users + 512))
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut user = [0u8; 32];
                        user[..4].copy_from_slice(&n.to_be_bytes());
                        let user = UserKey { namespace: [7; 32], user };
                        let sealed = vec![n as u8; 72];
                        let dek = store.create_user_dek(&user, vec![1], None).await?.expect("made in no session");
                        store
                            .put_key(
                                &user,
                                Writer { dek: &dek, session: None },
                                &Precondition::None,
                                2,
                                1,
                                Box::new(move |_| Ok(sealed.clone())),
                            )
                            .await
                    })
                })
                .collect();
            for task in chunk {
                task.await.unwrap().unwrap();
            }
            users = target.min(users + 512);
        }
        drop(store);
        let required = keyservice::SledStore::room_to_open(&dir).unwrap();
        let db = std::fs::metadata(dir.join("db")).unwrap().len();
        let before = disk.free();
        let store = keyservice::SledStore::open(&dir).unwrap();
        let taken = before - disk.free();
        println!("{users} users: database file {db} bytes; required {required}; an open took {taken}");
        assert!(taken <= required, "an open took {taken} bytes, more than the {required} required");
        let kept = keyservice::SledStore::AN_OPEN_TAKES_AT_MOST;
        assert!(taken <= kept, "an open took {taken} bytes, more than the {kept} a running store keeps for it");
        drop(store);
    }
}
