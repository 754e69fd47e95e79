//! Operator commands through the real binary: backup while serving, restore into a
//! wiped directory, and master-key rotation online and offline.

#[path = "support/binary.rs"]
mod binary;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use binary::{Serving, run, serve, stop, write_config};
use support::*;

fn namespace_config() -> String {
    shop_toml("127.0.0.1/32")
}

fn start(config: &Path) -> Serving {
    serve(&["serve", "--config", config.to_str().unwrap()], &[])
}

fn keyservice(args: &[&str]) -> (i32, String, String) {
    run(args, &[])
}

/// `keyservice rotate-master-key --new-key-file NEW_KEY --config CONFIG`.
fn rotate(new_key: &Path, config: &Path) -> (i32, String, String) {
    keyservice(&[
        "rotate-master-key",
        "--new-key-file",
        new_key.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ])
}

/// `keyservice restore --from BACKUP --data-dir DIR --config CONFIG`.
fn restore(backup: &str, data_dir: &str, config: &str) -> (i32, String, String) {
    keyservice(&["restore", "--from", backup, "--data-dir", data_dir, "--config", config])
}

/// Stores keys for a few users; returns their devices and key bytes.
async fn populate(addr: std::net::SocketAddr) -> Vec<(Device, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..4u8 {
        let device = device(addr, &format!("user-{i}")).await;
        let key: Vec<u8> = (0..200).map(|j: u8| j.wrapping_mul(i + 3)).collect();
        device.put(b"old version", &[]).await;
        assert_eq!(device.put(&key, &[("content-type", format!("application/x-k{i}"))]).await.status, 200);
        out.push((device, key));
    }
    out
}

/// A server's data with a few users' keys, the server stopped: (dir, config, devices).
async fn populated_and_stopped() -> (tempfile::TempDir, std::path::PathBuf, Vec<(Device, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &namespace_config());
    let server = start(&config);
    let devices = populate(server.addr).await;
    stop(server);
    (dir, config, devices)
}

async fn assert_keys(addr: std::net::SocketAddr, devices: &[(Device, Vec<u8>)]) {
    for (device, key) in devices {
        let device = Device { addr, ..device.clone() };
        let latest = device.get("/key").await;
        assert_eq!(latest.status, 200, "{}", String::from_utf8_lossy(&latest.body));
        assert_eq!(&latest.body[..], &key[..]);
        assert_eq!(&device.get("/key?version=1").await.body[..], b"old version");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_while_serving_then_wipe_and_restore_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &namespace_config());
    let server = start(&config);
    let devices = populate(server.addr).await;

    let backup = dir.path().join("keys.backup");
    let (code, out, err) =
        keyservice(&["backup", "--out", backup.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote"), "{out}");
    // Writes after the backup are not in it.
    devices[0].0.clone().put(b"after the backup", &[]).await;
    stop(server);

    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let (code, out, err) =
        restore(backup.to_str().unwrap(), dir.path().join("data").to_str().unwrap(), config.to_str().unwrap());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored"), "{out}");
    // A restore refuses requests signed before it (the replay floor moves to its time).
    std::thread::sleep(Duration::from_millis(1100));

    let server = start(&config);
    assert_keys(server.addr, &devices).await;
    stop(server);

    // Restoring over existing data is refused.
    let (code, _, err) =
        restore(backup.to_str().unwrap(), dir.path().join("data").to_str().unwrap(), config.to_str().unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
}

/// The backup file is written by whoever runs `keyservice backup`, where they can write:
/// not by the server's process, which runs as another user (and, under the shipped
/// unit, cannot write outside its state directories). And the command reads only what
/// it uses: a namespace secret kept in the server's environment alone is not needed.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_is_written_by_the_caller_and_needs_no_namespace_secret() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let namespaces = format!(
        "[namespaces.{NAMESPACE}]\nallow = [\"127.0.0.1/32\"]\ncredentials = [{{ key_id = \"{KEY_ID}\", secret_env = \"KS_TEST_SHOP_SECRET\" }}]\n"
    );
    let config = write_config(dir.path(), &namespaces);
    assert!(Command::new("chown").args(["-R", "65534:65534"]).arg(dir.path()).status().unwrap().success());
    let server =
        binary::serve_as_nobody(&["serve", "--config", config.to_str().unwrap()], &[("KS_TEST_SHOP_SECRET", SECRET)]);
    let devices = populate(server.addr).await;

    // A directory only the caller (root) may write in: the server could not.
    let mine = tempfile::tempdir().unwrap();
    let out = mine.path().join("keys.backup");
    let (code, stdout, err) =
        keyservice(&["backup", "--out", out.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("wrote") && stdout.contains("records"), "{stdout}");
    let metadata = std::fs::metadata(&out).unwrap();
    assert_eq!((metadata.uid(), metadata.mode() & 0o777), (0, 0o600), "the caller's own private file");
    assert!(keyservice::store::backup::read(&out).unwrap().len() >= devices.len());
    stop(server);

    // Stopped: KEYSERVICE_DATA_DIR names the store, as it does for serve.
    let offline = mine.path().join("offline.backup");
    let (code, stdout, err) = run(
        &["backup", "--out", offline.to_str().unwrap()],
        &[("KEYSERVICE_DATA_DIR", dir.path().join("data").to_str().unwrap())],
    );
    assert_eq!(code, 0, "{stdout}{err}");
    let online = keyservice::store::backup::read(&out).unwrap();
    let offline = keyservice::store::backup::read(&offline).unwrap();
    let keys = |entries: &[(String, Vec<u8>, Vec<u8>)]| entries.iter().filter(|(t, _, _)| t == "key").count();
    assert_eq!(keys(&offline), keys(&online), "the same keys, from the same store");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_with_another_master_key_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &namespace_config());
    let server = start(&config);
    populate(server.addr).await;
    let backup = dir.path().join("keys.backup");
    let (code, _, err) =
        keyservice(&["backup", "--out", backup.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    stop(server);

    let elsewhere = tempfile::tempdir().unwrap();
    let other_config = write_config(elsewhere.path(), &namespace_config());
    // Without any master key there, the restore refuses rather than make one up.
    let (code, _, err) = restore(
        backup.to_str().unwrap(),
        elsewhere.path().join("data").to_str().unwrap(),
        other_config.to_str().unwrap(),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist") && !elsewhere.path().join("master.key").exists(), "{err}");
    keyservice::MasterKey::load_or_create(&elsewhere.path().join("master.key")).unwrap();
    let (code, _, err) = restore(
        backup.to_str().unwrap(),
        elsewhere.path().join("data").to_str().unwrap(),
        other_config.to_str().unwrap(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("master key"), "{err}");
    assert!(!elsewhere.path().join("data").join("db").exists(), "nothing was restored");

    // A damaged backup is refused too.
    let mut bytes = std::fs::read(&backup).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&backup, bytes).unwrap();
    let (code, _, err) =
        restore(backup.to_str().unwrap(), dir.path().join("fresh").to_str().unwrap(), config.to_str().unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("not a complete keyservice backup"), "{err}");
}

/// Points the config's master_key_file at `key`.
fn use_master_key(dir: &Path, key: &Path) -> std::path::PathBuf {
    let config = write_config(dir, &namespace_config());
    let text = std::fs::read_to_string(&config).unwrap();
    let old = format!("master_key_file = {:?}", dir.join("master.key").display().to_string());
    let new = format!("master_key_file = {:?}", key.display().to_string());
    std::fs::write(&config, text.replace(&old, &new)).unwrap();
    config
}

/// The first start says it created a master key, where, and its fingerprint, which
/// `keyservice master-key fingerprint` prints too; a rotation run by root for a server
/// that runs as its own user leaves the new key to that user, so the next start can read
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn master_keys_are_announced_fingerprinted_and_owned_by_the_server_user() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &namespace_config());
    let server = start(&config);
    let (code, printed, err) = keyservice(&["master-key", "fingerprint", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let fingerprint = printed.split_whitespace().next().unwrap().to_owned();
    assert!(printed.contains("master.key"), "{printed}");
    let logs = server.logs.lock().unwrap().clone();
    let created = logs.iter().find(|l| l.contains("created a new master key")).expect("the creation is announced");
    assert!(created.contains(&fingerprint) && created.contains("master.key") && created.contains("back this file up"));
    assert!(!printed.contains(&std::fs::read_to_string(dir.path().join("master.key")).unwrap().trim().to_owned()));
    stop(server);

    // The key belongs to the server's user (here nobody); root rotates offline.
    assert!(Command::new("chown").arg("65534:65534").arg(dir.path().join("master.key")).status().unwrap().success());
    let new_key = dir.path().join("new-master.key");
    let (code, out, err) = rotate(&new_key, &config);
    assert_eq!(code, 0, "{out}{err}");
    let metadata = std::fs::metadata(&new_key).unwrap();
    assert_eq!((metadata.uid(), metadata.gid(), metadata.mode() & 0o777), (65534, 65534, 0o600));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_offline_is_idempotent_and_the_old_key_stops_working() {
    let (dir, config, devices) = populated_and_stopped().await;

    let new_key = dir.path().join("new-master.key");
    let rotate = || rotate(&new_key, &config);
    let (code, out, err) = rotate();
    assert_eq!(code, 0, "{err}");
    // The index and system keys and the one namespace key.
    assert!(out.contains("re-wrapped 3 keyring entries"), "{out}");
    assert!(out.contains("records moved: 0"), "{out}");
    let (code, out, _) = rotate();
    assert_eq!(code, 0);
    assert!(out.contains("re-wrapped 0 keyring entries") && out.contains("3 already under the new key"), "{out}");

    // The old key no longer opens the store: a start says which key to point at and how
    // to tell which file that is (exit 2: the configuration must change, so the unit
    // does not restart it); the new one opens everything.
    assert!(out.contains("new key "), "the rotation names both fingerprints: {out}");
    let (code, fingerprint, err) = keyservice(&["master-key", "fingerprint", new_key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let fingerprint = fingerprint.split_whitespace().next().unwrap().to_owned();
    assert_eq!(fingerprint.len(), 16);
    assert!(out.contains(&format!("new key {fingerprint}")), "{out}");
    let (code, _, err) = run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("Point master_key_file ({}", dir.path().join("master.key").display())), "{err}");
    assert!(err.contains(&format!("the key with fingerprint {fingerprint}")), "{err}");
    assert!(err.contains("keyservice master-key fingerprint"), "{err}");
    let rotated = use_master_key(dir.path(), &new_key);
    let server = start(&rotated);
    assert_keys(server.addr, &devices).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_a_running_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &namespace_config());
    let server = start(&config);
    let devices = populate(server.addr).await;

    let new_key = dir.path().join("new-master.key");
    let (code, out, err) = rotate(&new_key, &config);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-wrapped 3 keyring entries"), "{out}");
    // Where the server wrote the new key, and why there.
    assert!(
        out.contains(&format!("is at {} on the server's file system, created by the server", new_key.display())),
        "{out}"
    );
    assert_keys(server.addr, &devices).await;
    // New users (and their keys) keep working after the rotation, too.
    let late = device(server.addr, "late-user").await;
    assert_eq!(late.put(b"late key", &[]).await.status, 201);
    stop(server);

    let rotated = use_master_key(dir.path(), &new_key);
    let server = start(&rotated);
    assert_keys(server.addr, &devices).await;
    assert_eq!(&Device { addr: server.addr, ..late }.get("/key").await.body[..], b"late key");
}

#[test]
fn a_master_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let key = dir.path().join("master.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Exit 2: the file must change before a start can work.
    let (code, _, err) = run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("accessible to group or others"), "{err}");
    assert!(!err.contains(&"ab".repeat(32)), "the key leaked into the error");

    // From the environment instead, no file is needed; a malformed one is refused
    // without being echoed.
    let (code, _, err) =
        run(&["serve", "--config", config.to_str().unwrap()], &[("KEYSERVICE_MASTER_KEY", "not-a-key-at-all")]);
    assert_eq!(code, 2);
    assert!(err.contains("KEYSERVICE_MASTER_KEY") && !err.contains("not-a-key-at-all"), "{err}");
}

/// `master-key init` with a key file: creates it (mode 0600) and prints the fingerprint
/// `master-key fingerprint` prints; never replaces it; and has nothing to do when the
/// key comes from the environment.
#[test]
fn master_key_init_creates_a_file_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let config_arg = config.to_str().unwrap();
    let key_file = dir.path().join("master.key");
    let (code, out, err) = run(&["master-key", "init", "--config", config_arg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("written to {}", key_file.display())), "{out}");
    let created = out.split_whitespace().next().unwrap().to_owned();
    assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    let (_, printed, _) = run(&["master-key", "fingerprint", "--config", config_arg], &[]);
    assert!(printed.starts_with(&created), "{printed}");
    let key = std::fs::read_to_string(&key_file).unwrap();

    let (code, _, err) = run(&["master-key", "init", "--config", config_arg], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never overwritten") && err.contains(&created), "{err}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key, "the key file changed");
    assert!(!err.contains(key.trim()), "the key leaked into the error");

    // An existing file that holds no key is not replaced either.
    std::fs::write(&key_file, "").unwrap();
    let (code, _, err) = run(&["master-key", "init", "--config", config_arg], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never overwritten") && err.contains("is empty"), "{err}");
    assert_eq!(std::fs::metadata(&key_file).unwrap().len(), 0);

    let (code, _, err) =
        run(&["master-key", "init", "--config", config_arg], &[("KEYSERVICE_MASTER_KEY", &"ab".repeat(32))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("KEYSERVICE_MASTER_KEY") && err.contains("nothing to create"), "{err}");
}

#[test]
fn a_missing_master_key_file_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut server = serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let _ = server.child.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_killed_at_any_moment_resumes_and_loses_nothing() {
    let (dir, config, devices) = populated_and_stopped().await;

    // Kill the rotation at moments spread over its run: before it opens the store,
    // while it works, and after it has written.
    let new_key = dir.path().join("new-master.key");
    let args = ["rotate-master-key", "--new-key-file", new_key.to_str().unwrap(), "--config", config.to_str().unwrap()];
    for delay_ms in [0u64, 2, 5, 10, 20, 40, 80] {
        let mut child = Command::new(binary::BIN)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    // Whatever state that left, running it once more finishes the rotation.
    let (code, out, err) = keyservice(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("keyring entries"), "{out}");
    let rotated = use_master_key(dir.path(), &new_key);
    let server = start(&rotated);
    assert_keys(server.addr, &devices).await;
}

/// The operator erases a user the Real Service cannot (on a namespace with `oidc`, one
/// whose account at the identity provider is gone): through the running server, audited
/// and in the ledger, and directly on a stopped one; other users keep their keys.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_erases_a_user_online_and_offline() {
    let (dir, config, devices) = populated_and_stopped().await;
    let config_arg = config.to_str().unwrap();
    let erase =
        |user: &str| keyservice(&["erase", "--namespace", NAMESPACE, "--user-id", user, "--config", config_arg]);

    let server = start(&config);
    let (code, out, err) = erase("user-0");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 key versions destroyed, 1 sessions revoked"), "{out}");
    Device { addr: server.addr, ..devices[0].0.clone() }.get("/key").await.expect(401, "unknown_session");
    let (code, _, err) =
        keyservice(&["erase", "--namespace", "nowhere", "--user-id", "user-1", "--config", config_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("no namespace \"nowhere\""), "{err}");
    let too_long = "u".repeat(257);
    let (code, _, err) =
        keyservice(&["erase", "--namespace", NAMESPACE, "--user-id", &too_long, "--config", config_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("1 to 256 bytes"), "{err}");
    assert_keys(server.addr, &devices[1..]).await;
    stop(server);

    let (code, _, err) = erase("");
    assert_eq!(code, 1);
    assert!(err.contains("1 to 256 bytes"), "{err}");
    let (code, out, err) = erase("user-1");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 key versions destroyed"), "{out}");

    let server = start(&config);
    Device { addr: server.addr, ..devices[1].0.clone() }.get("/key").await.expect(401, "unknown_session");
    assert_keys(server.addr, &devices[2..]).await;
    stop(server);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"erase\",\"outcome\":\"allowed\"") && audit.contains("\"reason\":\"operator\""));
    assert!(!audit.contains("user-0"), "a user id reached the audit log");
    let ledger = std::fs::read_to_string(dir.path().join("erasures.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 2, "{ledger}");
}
