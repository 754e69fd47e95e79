//! The master key in a PKCS#11 token (SoftHSM2, installed and given a throwaway token by
//! scripts/softhsm.sh), through the real binary: `master-key init`, serving and
//! restarting, rotation file → token → token online and offline, the starts that must
//! fail (exit 2, naming the setting), a token lost while serving, a backup and its
//! restore, two nodes of a PostgreSQL cluster on one token, and what a copy of the disk
//! and the configuration holds.

#[path = "support/binary.rs"]
mod binary;
#[path = "support/postgres.rs"]
mod pg;
#[path = "support/scan.rs"]
mod scan;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use binary::{Serving, serve, stop, write_config};
use support::*;

const PIN: &str = "user-pin-of-the-hsm-5c0ffee";
const CLINIC: &str = "clinic";
const CLINIC_KEY_ID: &str = "cl-1";
const CLINIC_SECRET: &str = "clinic-secret-0123456789abcdef01234567";

/// A token of its own, in `dir/hsm`: what `SOFTHSM2_CONF` must point at.
struct Token {
    conf: PathBuf,
    tokens: PathBuf,
    module: String,
}

fn softhsm(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/softhsm.sh");
    let out = Command::new("bash").arg(script).args(args).env("TOKEN_PIN", PIN).output().unwrap();
    assert!(out.status.success(), "softhsm.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn new_token(dir: &Path) -> Token {
    let conf = PathBuf::from(softhsm(&["token", dir.join("hsm").to_str().unwrap(), "ks-token"]));
    Token { tokens: dir.join("hsm/tokens"), conf, module: softhsm(&["module"]) }
}

impl Token {
    /// The `[master_key]` table for key `label` of this token; `source` "pkcs11" or "file".
    fn table(&self, source: &str, label: &str) -> String {
        format!(
            "[master_key]\nsource = {source:?}\nmodule = {:?}\ntoken_label = \"ks-token\"\nkey_label = {label:?}\npin_env = \"KS_PIN\"\n",
            self.module
        )
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![("SOFTHSM2_CONF", self.conf.to_str().unwrap()), ("KS_PIN", PIN)]
    }
}

fn namespaces() -> String {
    format!(
        "{}[namespaces.{CLINIC}]\nallow = [\"127.0.0.1/32\"]\ncredentials = [ {{ key_id = \"{CLINIC_KEY_ID}\", secret = \"{CLINIC_SECRET}\" }} ]\n",
        shop_toml("127.0.0.1/32")
    )
}

/// `dir/keyservice.toml` with both namespaces, then `extra`.
fn configure(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, &format!("{extra}{}", namespaces()))
}

fn run(token: &Token, args: &[&str]) -> (i32, String, String) {
    binary::run(args, &token.env())
}

fn start(token: &Token, config: &Path) -> Serving {
    serve(&["serve", "--config", config.to_str().unwrap()], &token.env())
}

/// The fingerprint a command printed first on its line.
fn fingerprint(printed: &str) -> String {
    let first = printed.split_whitespace().next().unwrap_or_default().to_owned();
    assert_eq!(first.len(), 16, "{printed}");
    first
}

fn init_key(token: &Token, config: &Path) -> String {
    let (code, out, err) = run(token, &["master-key", "init", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    fingerprint(&out)
}

async fn populate(addr: std::net::SocketAddr) -> Vec<(Device, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..3u8 {
        let device = device(addr, &format!("user-{i}")).await;
        let key: Vec<u8> = (0..64).map(|j: u8| j.wrapping_mul(i + 7)).collect();
        assert_eq!(device.put(&key, &[]).await.status, 201);
        out.push((device, key));
    }
    out
}

async fn assert_keys(addr: std::net::SocketAddr, devices: &[(Device, Vec<u8>)]) {
    for (device, key) in devices {
        let reply = Device { addr, ..device.clone() }.get("/key").await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(&reply.body[..], &key[..]);
    }
}

/// A device of the `clinic` namespace: its first PUT needs the namespace's key, sealed
/// under the master key.
async fn clinic_device(addr: std::net::SocketAddr, user: &str) -> Device {
    device_in(addr, (CLINIC, CLINIC_KEY_ID, CLINIC_SECRET), user).await
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let reply = send(addr, "GET", "/readyz", &[], b"").await;
    (reply.status.as_u16(), reply.json())
}

/// Init, a second init refused, serving, a restart; the start names the key; a backup
/// says which key it needs and restores with the token; no key file exists, the disk
/// and the configuration hold no key, token, user id or PIN, and a copy of them with
/// another token's key opens nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_key_is_made_once_serves_restarts_and_is_needed_to_restore() {
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(dir.path());
    let config = configure(dir.path(), &token.table("pkcs11", "master"));

    let created = init_key(&token, &config);
    let (code, _, err) = run(&token, &["master-key", "init", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already holds a key with this label") && err.contains(&created), "{err}");
    let (code, out, err) = run(&token, &["master-key", "fingerprint", "--config", config.to_str().unwrap()]);
    assert_eq!((code, fingerprint(&out)), (0, created.clone()), "{err}");

    let server = start(&token, &config);
    let loaded = server.logs.lock().unwrap().iter().any(|l| l.contains("master key loaded") && l.contains(&created));
    assert!(loaded, "the start names the token key's fingerprint");
    let devices = populate(server.addr).await;
    let backup = dir.path().join("backup.ksb");
    let (code, out, err) =
        run(&token, &["backup", "--out", backup.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("sealed under master key {created}; a restore needs that key")), "{out}");
    stop(server);

    let server = start(&token, &config);
    assert_keys(server.addr, &devices).await;
    stop(server);
    assert!(!dir.path().join("master.key").exists(), "no key file is written with a token key");

    // At rest, beside the token: no key, token, user id or PIN, in any encoding.
    let mut needles = vec![("PIN", PIN.as_bytes().to_vec())];
    for (device, key) in &devices {
        needles.push(("key bytes", key.clone()));
        needles.push(("init token", device.init_token.expose().as_bytes().to_vec()));
        needles.push(("session token", device.session_token.expose().as_bytes().to_vec()));
    }
    needles.extend((0..3).map(|i| ("user id", format!("user-{i}").into_bytes())));
    let token_dir = dir.path().join("hsm");
    let found = scan::scan(dir.path(), &[&token_dir], &needles);
    assert!(found.is_empty(), "the disk and configuration reveal: {found:?}");
    // The scan itself works: the configuration holds the namespace's credential secret.
    let secret = [("credential secret", CLINIC_SECRET.as_bytes().to_vec())];
    assert!(!scan::scan(dir.path(), &[&token_dir], &secret).is_empty());

    // The backup restores with the token key, into a new directory.
    let restored = dir.path().join("restored");
    let (code, out, err) = run(
        &token,
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");

    // A copy of the disk and the configuration, where a token holds another key under the
    // same label: nothing opens, and the refusal names both keys.
    let copy = tempfile::tempdir().unwrap();
    let other = new_token(copy.path());
    let copied = configure(copy.path(), &other.table("pkcs11", "master"));
    let foreign = init_key(&other, &copied);
    assert_ne!(foreign, created);
    assert!(Command::new("cp").arg("-a").arg(dir.path().join("data")).arg(copy.path()).status().unwrap().success());
    let (code, _, err) = run(&other, &["serve", "--config", copied.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("sealed by master key {created}")) && err.contains(&foreign), "{err}");
    let (code, _, err) = run(
        &other,
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            copy.path().join("r").to_str().unwrap(),
            "--config",
            copied.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&created) && err.contains(&foreign), "{err}");
}

/// Every start that cannot work exits 2 and names the setting to change.
#[test]
fn a_wrong_pin_a_missing_key_token_or_module_an_unfit_key_or_a_locked_pin_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(dir.path());
    let config = configure(dir.path(), &token.table("pkcs11", "master"));
    let refused = |config: &Path, env: &[(&str, &str)], says: &[&str]| {
        let (code, _, err) = binary::run(&["serve", "--config", config.to_str().unwrap()], env);
        assert_eq!(code, 2, "{err}");
        for part in says {
            assert!(err.contains(part), "{part:?} not in: {err}");
        }
        assert!(!err.contains(PIN), "the PIN leaked: {err}");
    };
    refused(
        &config,
        &token.env(),
        &["master_key.key_label (\"master\")", "no secret key with this label", "master-key init"],
    );
    init_key(&token, &config);
    let conf = token.conf.to_str().unwrap();
    refused(&config, &[("SOFTHSM2_CONF", conf), ("KS_PIN", "0000")], &["master_key.pin_env", "refused the PIN"]);
    refused(&config, &[("SOFTHSM2_CONF", conf)], &["master_key.pin_env", "KS_PIN is not set"]);
    refused(
        &config,
        &[("SOFTHSM2_CONF", conf), ("KS_PIN", PIN), ("KEYSERVICE_MASTER_KEY", &"ab".repeat(32))],
        &["unset KEYSERVICE_MASTER_KEY"],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let elsewhere = dir.path().join("elsewhere.toml");
    std::fs::write(&elsewhere, text.replace("token_label = \"ks-token\"", "token_label = \"absent\"")).unwrap();
    refused(&elsewhere, &token.env(), &["master_key.token_label (\"absent\")", "no such token"]);
    std::fs::write(&elsewhere, text.replace(&token.module, "/nonexistent/libpkcs11.so")).unwrap();
    refused(&elsewhere, &token.env(), &["master_key.module (/nonexistent/libpkcs11.so)"]);
    std::fs::write(&elsewhere, text.replace("pin_env = \"KS_PIN\"", &format!("pin = {PIN:?}"))).unwrap();
    refused(&elsewhere, &token.env(), &["master_key.pin", "never written in the config file"]);

    // A key whose bytes can leave the token is no master key.
    std::fs::write(&elsewhere, text.replace("key_label = \"master\"", "key_label = \"exportable\"")).unwrap();
    make_key(&token, "exportable", true);
    refused(
        &elsewhere,
        &token.env(),
        &["master_key.key_label (\"exportable\")", "CKA_EXTRACTABLE is true", "not sensitive"],
    );
    // Two fit keys under one label: which one sealed the store cannot be guessed.
    std::fs::write(&elsewhere, text.replace("key_label = \"master\"", "key_label = \"twin\"")).unwrap();
    make_key(&token, "twin", false);
    make_key(&token, "twin", false);
    refused(&elsewhere, &token.env(), &["master_key.key_label (\"twin\")", "2 secret keys with this label"]);

    // A token that locked its user PIN after too many wrong ones: the start says so
    // without trying the PIN (which on a real HSM could use up a security officer's
    // tries). SoftHSM2 counts no tries, so the flag is set in its token file, as a token
    // that counts them sets it.
    lock_user_pin(&token);
    refused(&config, &token.env(), &["master_key.token_label (\"ks-token\")", "user PIN is locked"]);
}

/// Sets `CKF_USER_PIN_LOCKED` in the flags SoftHSM2 keeps in its token file (attribute
/// `CKA_OS_TOKENFLAGS`, 0x8000534b, an unsigned long: type, kind 2, value, each 8 bytes
/// big-endian).
fn lock_user_pin(token: &Token) {
    const FLAGS_ATTRIBUTE: [u8; 16] = [0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2];
    const CKF_USER_PIN_LOCKED: u64 = 0x0004_0000;
    let dir = std::fs::read_dir(&token.tokens).unwrap().next().unwrap().unwrap().path();
    let file = dir.join("token.object");
    let mut bytes = std::fs::read(&file).unwrap();
    let at: Vec<usize> =
        bytes.windows(16).enumerate().filter(|(_, w)| *w == FLAGS_ATTRIBUTE).map(|(i, _)| i + 16).collect();
    assert_eq!(at.len(), 1, "SoftHSM2's token file is not laid out as expected");
    let value = &mut bytes[at[0]..at[0] + 8];
    let flags = u64::from_be_bytes(value.try_into().unwrap()) | CKF_USER_PIN_LOCKED;
    value.copy_from_slice(&flags.to_be_bytes());
    std::fs::write(&file, bytes).unwrap();
}

/// An AES-256 key labelled `label` in the token: fit for a master key, or made as a
/// careless tool would (`exportable`: extractable, not sensitive).
fn make_key(token: &Token, label: &str, exportable: bool) {
    // SoftHSM2 reads its configuration once, when first initialised in a process.
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "make_key_in_a_child", "--nocapture", "--ignored"])
        .env("SOFTHSM2_CONF", &token.conf)
        .env("KS_TEST_MODULE", &token.module)
        .env("KS_TEST_LABEL", label)
        .env("KS_TEST_EXPORTABLE", exportable.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "run by make_key in a process of its own"]
fn make_key_in_a_child() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let pkcs11 = Pkcs11::new(std::env::var("KS_TEST_MODULE").unwrap()).unwrap();
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = pkcs11.get_slots_with_token().unwrap()[0];
    let session = pkcs11.open_rw_session(slot).unwrap();
    session.login(UserType::User, Some(&AuthPin::from(PIN.to_owned()))).unwrap();
    let label = std::env::var("KS_TEST_LABEL").unwrap().into_bytes();
    let exportable = std::env::var("KS_TEST_EXPORTABLE").unwrap() == "true";
    let template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(!exportable),
        Attribute::Extractable(exportable),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::ValueLen(32.into()),
        Attribute::Label(label),
    ];
    session.generate_key(&Mechanism::AesKeyGen, &template).unwrap();
}

/// From a file key to a token key while serving, then from that token key to another
/// with the server stopped (run twice: a resumed rotation finishes), every key readable
/// after each restart; the old token key no longer opens the store.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_goes_from_a_file_to_a_token_key_and_on_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(dir.path());
    let on_file = configure(dir.path(), &token.table("file", "first"));
    let server = start(&token, &on_file);
    let devices = populate(server.addr).await;
    let (code, out, err) =
        run(&token, &["rotate-master-key", "--new-key-label", "first", "--config", on_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("re-wrapped 3 keyring entries") && out.contains("generated in the token now"), "{out}");
    assert!(out.contains("set [master_key] source = \"pkcs11\" and key_label = \"first\""), "{out}");
    assert_keys(server.addr, &devices).await;
    let late = device(server.addr, "late").await;
    assert_eq!(late.put(b"after the rotation", &[]).await.status, 201);
    stop(server);

    let first = configure(dir.path(), &token.table("pkcs11", "first"));
    let (_, out, _) = run(&token, &["master-key", "fingerprint", "--config", first.to_str().unwrap()]);
    let first_id = fingerprint(&out);
    let server = start(&token, &first);
    assert_keys(server.addr, &devices).await;
    stop(server);

    for (round, expected) in [(0, "re-wrapped 3 keyring entries"), (1, "3 already under the new key")] {
        let (code, out, err) =
            run(&token, &["rotate-master-key", "--new-key-label", "second", "--config", first.to_str().unwrap()]);
        assert_eq!(code, 0, "round {round}: {err}");
        assert!(out.contains(expected), "round {round}: {out}");
    }
    let (code, _, err) = run(&token, &["serve", "--config", first.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("not by the configured master key {first_id}")), "{err}");
    let second = configure(dir.path(), &token.table("pkcs11", "second"));
    let server = start(&token, &second);
    assert_keys(server.addr, &devices).await;
    assert_eq!(&Device { addr: server.addr, ..late }.get("/key").await.body[..], b"after the rotation");
}

/// The token goes away while serving: namespaces already in use go on, a new one is
/// refused with 503 and changes nothing, `/readyz` says the master key is unreachable;
/// with the token back, a restart serves every namespace again.
#[tokio::test(flavor = "multi_thread")]
async fn losing_the_token_refuses_new_namespaces_and_turns_readyz_red() {
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(dir.path());
    let config = configure(dir.path(), &token.table("pkcs11", "master"));
    init_key(&token, &config);
    let server = start(&token, &config);
    let devices = populate(server.addr).await;
    assert_eq!(readyz(server.addr).await.1["masterKey"], "ok");

    let away = dir.path().join("tokens-away");
    std::fs::rename(&token.tokens, &away).unwrap();
    let (status, body) = readyz(server.addr).await;
    assert_eq!(
        (status, &body["masterKey"], &body["status"]),
        (503, &"unreachable".into(), &"unavailable".into()),
        "{body}"
    );
    assert_keys(server.addr, &devices).await;
    let newcomer = device(server.addr, "newcomer").await;
    assert_eq!(newcomer.put(b"still fine", &[]).await.status, 201);
    let clinic = clinic_device(server.addr, "patient").await;
    let refused = clinic.put(b"patient key", &[]).await;
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    let error: serde_json::Value = refused.json();
    assert_eq!(error["error"], "master_key_unavailable", "{error}");
    assert_eq!(clinic.get("/key").await.status, 404, "nothing was written");

    // Back in place: SoftHSM2 fixes its slot list when the process loads it, so this node
    // reconnects only after a restart (a network HSM's module finds its token again).
    std::fs::rename(&away, &token.tokens).unwrap();
    stop(server);
    let server = start(&token, &config);
    assert_eq!(readyz(server.addr).await.0, 200);
    let clinic = Device { addr: server.addr, ..clinic };
    assert_eq!(clinic.put(b"patient key", &[]).await.status, 201);
    assert_eq!(&clinic.get("/key").await.body[..], b"patient key");
    assert_keys(server.addr, &devices).await;
}

/// Two nodes of one PostgreSQL store on the same token key serve each other's keys; a
/// node given another key refuses to start and names both.
#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_token_key_and_a_third_with_another_is_refused() {
    let database = pg::shared().database().await;
    let dir = tempfile::tempdir().unwrap();
    let token = new_token(dir.path());
    let password = dir.path().join("pg.password");
    std::fs::write(&password, database.password()).unwrap();
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let node = |name: &str, label: &str| {
        let node_dir = dir.path().join(name);
        std::fs::create_dir(&node_dir).unwrap();
        let storage = format!(
            "node_id = {name:?}\n[storage]\nbackend = \"postgres\"\nurl = {:?}\npassword_file = {:?}\n{}",
            database.url(),
            password.display().to_string(),
            token.table("pkcs11", label)
        );
        configure(&node_dir, &storage)
    };
    let (a, b, c) = (node("a", "shared"), node("b", "shared"), node("c", "other"));
    let shared = init_key(&token, &a);
    let other = init_key(&token, &c);
    let first = start(&token, &a);
    let second = start(&token, &b);
    let devices = populate(first.addr).await;
    assert_keys(second.addr, &devices).await;
    let (code, _, err) = run(&token, &["serve", "--config", c.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("sealed by master key {shared}, not by the configured master key {other}")), "{err}");
}
