//! `keyservice-cli` end to end, as a script would drive it: init → hash-token → connect
//! → put → get against a real server, and the exit code of each failure class.

#[path = "../../keyservice/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use support::*;

const CLI: &str = env!("CARGO_BIN_EXE_keyservice-cli");

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap().trim_end().to_owned()
    }
}

/// Runs the CLI with `args`, `env` and `stdin`, on a blocking thread.
async fn cli(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(CLI)
            .args(&args)
            .env_remove("KEYSERVICE_URL")
            .env_remove("KEYSERVICE_SECRET")
            .env_remove("KEYSERVICE_INIT_TOKEN")
            .env_remove("KEYSERVICE_SESSION_TOKEN")
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let output = child.wait_with_output().unwrap();
        Run {
            code: output.status.code().unwrap(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

async fn server() -> (TestServer, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let url = format!("http://{}", server.addr);
    (server, dir, url)
}

/// Runs init, hash-token and connect through the CLI; returns (init token, session token).
async fn connect(url: &str, user: &str) -> (String, String) {
    let init = cli(&["--url", url, "init", "--json"], &[], b"").await;
    assert_eq!(init.code, 0, "{}", init.stderr);
    let init: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    let token = init["initToken"].as_str().unwrap().to_owned();

    let hash = cli(&["hash-token"], &[("KEYSERVICE_INIT_TOKEN", &token)], b"").await;
    assert_eq!(hash.code, 0, "{}", hash.stderr);
    assert_eq!(hash.text(), init["initTokenHash"].as_str().unwrap());
    let piped = cli(&["hash-token"], &[], format!("{token}\n").as_bytes()).await;
    assert_eq!(piped.text(), hash.text(), "the token can be piped in");

    let session = cli(
        &[
            "--url",
            url,
            "connect",
            "--namespace",
            NAMESPACE,
            "--user-id",
            user,
            "--init-token-hash",
            &hash.text(),
            "--key-id",
            KEY_ID,
        ],
        &[("KEYSERVICE_SECRET", SECRET)],
        b"",
    )
    .await;
    assert_eq!(session.code, 0, "{}", session.stderr);
    (token, session.text())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_runs_the_whole_flow() {
    let (_server, dir, url) = server().await;
    let (init, session) = connect(&url, "347").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];

    let key_file = dir.path().join("key.bin");
    std::fs::write(&key_file, b"\x00first key\xff").unwrap();
    let put =
        cli(&["--url", &url, "put", key_file.to_str().unwrap(), "--content-type", "application/x-key"], &device, b"")
            .await;
    assert_eq!((put.code, put.text().as_str()), (0, "1"), "{}", put.stderr);
    let put = cli(&["--url", &url, "put", "-", "--if-match", "1", "--json"], &device, b"second key").await;
    assert_eq!(put.code, 0, "{}", put.stderr);
    assert_eq!(put.text(), r#"{"version":2}"#);

    let get = cli(&["--url", &url, "get"], &device, b"").await;
    assert_eq!((get.code, &get.stdout[..]), (0, &b"second key"[..]));
    let out = dir.path().join("out.bin");
    let get = cli(&["--url", &url, "get", "--version", "1", "-o", out.to_str().unwrap()], &device, b"").await;
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), b"\x00first key\xff");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let get = cli(&["--url", &url, "get", "--version", "1", "--json"], &device, b"").await;
    let value: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["contentType"], "application/x-key");
    assert_eq!(value["key"], b64(b"\x00first key\xff"));

    // Secrets from files work as well as from the environment.
    let init_file = dir.path().join("init");
    let session_file = dir.path().join("session");
    std::fs::write(&init_file, format!("{init}\n")).unwrap();
    std::fs::write(&session_file, &session).unwrap();
    let get = cli(
        &[
            "--url",
            &url,
            "get",
            "--init-token-file",
            init_file.to_str().unwrap(),
            "--session-token-file",
            session_file.to_str().unwrap(),
        ],
        &[],
        b"",
    )
    .await;
    assert_eq!((get.code, &get.stdout[..]), (0, &b"second key"[..]), "{}", get.stderr);
}

fn assert_fails(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "stderr: {}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "one line on stderr: {}", run.stderr);
    assert!(run.stderr.contains(needle), "{needle} not in: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_failure_class_has_its_exit_code() {
    let (_server, _dir, url) = server().await;
    let (init, session) = connect(&url, "u1").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];

    // 2: usage.
    assert_eq!(cli(&["init", "--bogus"], &[], b"").await.code, 2);
    assert_fails(&cli(&["init"], &[], b"").await, 2, "--url");
    assert_fails(&cli(&["--url", &url, "get"], &[], b"").await, 2, "KEYSERVICE_SESSION_TOKEN");
    let hash = cli(&["hash-token"], &[], b"").await;
    assert_fails(&hash, 2, "init token");
    assert_fails(&cli(&["--url", "http://keys.example.com", "init"], &[], b"").await, 2, "http://");

    // 3: authentication refused; the secret is not echoed.
    let wrong = "wrong-secret-0123456789abcdef0123456789";
    let hash = cli(&["hash-token"], &[("KEYSERVICE_INIT_TOKEN", &init)], b"").await.text();
    let refused = cli(
        &[
            "--url",
            &url,
            "connect",
            "--namespace",
            NAMESPACE,
            "--user-id",
            "u",
            "--init-token-hash",
            &hash,
            "--key-id",
            KEY_ID,
        ],
        &[("KEYSERVICE_SECRET", wrong)],
        b"",
    )
    .await;
    assert_fails(&refused, 3, "bad_signature");
    assert!(!refused.stderr.contains(wrong));

    // 4: not found.
    assert_fails(&cli(&["--url", &url, "get"], &device, b"").await, 4, "no_key");

    // 6: precondition failed.
    assert_eq!(cli(&["--url", &url, "put", "--if-none-match"], &device, b"k").await.code, 0);
    assert_fails(&cli(&["--url", &url, "put", "--if-none-match"], &device, b"k").await, 6, "precondition_failed");

    // 5: network.
    let closed: SocketAddr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    assert_fails(&cli(&["--url", &format!("http://{closed}"), "init"], &[], b"").await, 5, "network");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_put_under_a_passphrase_is_held_wrapped_and_read_back_with_it() {
    let (_server, dir, url) = server().await;
    let (init, session) = connect(&url, "pat").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, "tidal  basin\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "tidal basin\n").unwrap();
    let key: Vec<u8> = (0..32).collect();
    let pass = passphrase.to_str().unwrap();

    let put = cli(&["--url", &url, "put", "--passphrase-file", pass], &device, &key).await;
    assert_eq!((put.code, put.text().as_str()), (0, "1"), "{}", put.stderr);
    // Without the passphrase the wrapped bytes are not handed out as if they were the
    // key (the JavaScript client refuses the same way); --raw gives them on purpose.
    let refused = cli(&["--url", &url, "get"], &device, b"").await;
    assert_fails(&refused, 3, "user_factor_required");
    assert!(refused.stdout.is_empty());
    // What keyservice holds is the wrapped key, under its own content type.
    let held = cli(&["--url", &url, "get", "--json", "--raw"], &device, b"").await;
    let held: serde_json::Value = serde_json::from_slice(&held.stdout).unwrap();
    assert_eq!(held["contentType"], keyservice_client::wrap::CONTENT_TYPE);
    let wrapped =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, held["key"].as_str().unwrap()).unwrap();
    assert!(!wrapped.windows(key.len()).any(|w| w == key), "keyservice holds the key in clear");
    assert!(matches!(
        keyservice_client::wrap::describe(&wrapped),
        Ok(keyservice_client::wrap::Wrapping::Passphrase { .. })
    ));

    let got = cli(&["--url", &url, "get", "--passphrase-file", pass], &device, b"").await;
    assert_eq!((got.code, got.stdout.as_slice()), (0, key.as_slice()), "{}", got.stderr);
    let refused = cli(&["--url", &url, "get", "--passphrase-file", wrong.to_str().unwrap()], &device, b"").await;
    assert_fails(&refused, 3, "wrong_user_factor: the passphrase or passkey does not open this key");
    assert!(refused.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_shows_a_run_of_writes_as_one_line_with_its_versions() {
    let (_server, _dir, url) = server().await;
    // The server writes its history queue once a second, which can cut a run in two; a
    // fresh user is tried again then.
    let mut seen = Vec::new();
    for attempt in 0..3 {
        let (init, session) = connect(&url, &format!("writer-{attempt}")).await;
        let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];
        for content in [b"v1", b"v2", b"v3"] {
            assert_eq!(cli(&["--url", &url, "put"], &device, content).await.code, 0);
        }
        let history = cli(&["--url", &url, "history"], &device, b"").await;
        assert_eq!(history.code, 0, "{}", history.stderr);
        let writes: Vec<String> =
            history.text().lines().filter(|line| line.contains("key_write")).map(str::to_owned).collect();
        if writes.len() == 1 {
            assert!(writes[0].ends_with("  1-3  ×3"), "{}", writes[0]);
            return;
        }
        seen.push(writes);
    }
    panic!("three writes in a row were never one line: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_deletes_logs_out_exports_and_erases() {
    let (_server, dir, url) = server().await;
    let (init, session) = connect(&url, "leaver").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];
    let rs = [("KEYSERVICE_SECRET", SECRET)];
    let user = ["--namespace", NAMESPACE, "--user-id", "leaver", "--key-id", KEY_ID];

    assert_eq!(cli(&["--url", &url, "put"], &device, b"v1").await.code, 0);
    let delete = cli(&["--url", &url, "delete-key", "--json"], &device, b"").await;
    assert_eq!((delete.code, delete.text().as_str()), (0, r#"{"deleted":true}"#), "{}", delete.stderr);
    assert_eq!(cli(&["--url", &url, "delete-key"], &device, b"").await.code, 0, "deleting is idempotent");
    assert_eq!(cli(&["--url", &url, "put"], &device, b"v2").await.code, 0);

    let mut export_args = vec!["--url", url.as_str(), "export"];
    export_args.extend(user);
    let export = cli(&export_args, &rs, b"").await;
    assert_eq!(export.code, 0, "{}", export.stderr);
    let value: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(value["keyVersions"].as_array().unwrap().len(), 1);
    assert_eq!(value["sessions"].as_array().unwrap().len(), 1);
    assert!(!export.text().contains("v2"), "never key bytes");

    // The user's own view of it all: every access, newest first, one line each.
    let history = cli(&["--url", &url, "history"], &device, b"").await;
    assert_eq!(history.code, 0, "{}", history.stderr);
    let text = history.text();
    let operations: Vec<&str> = text.lines().map(|line| line.split_whitespace().nth(1).unwrap_or("")).collect();
    assert_eq!(operations, ["export", "key_write", "key_delete", "key_delete", "key_write", "connect"], "{text}");
    let lines = text.lines().count();
    assert!(history.text().lines().nth(1).unwrap().contains("(this session)"), "{}", history.text());
    let page = cli(&["--url", &url, "history", "--limit", "2", "--json"], &device, b"").await;
    let page: serde_json::Value = serde_json::from_slice(&page.stdout).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest = cli(&["--url", &url, "history", "--before", next], &device, b"").await;
    assert_eq!(rest.text().lines().count(), lines - 2, "{}", rest.text());
    assert_fails(&cli(&["--url", &url, "history", "--limit", "0"], &device, b"").await, 1, "bad_query");

    let logout = cli(&["--url", &url, "logout"], &device, b"").await;
    assert_eq!((logout.code, logout.text().as_str()), (0, "logged out"), "{}", logout.stderr);
    assert_fails(&cli(&["--url", &url, "get"], &device, b"").await, 3, "unknown_session");

    let mut erase_args = vec!["--url", url.as_str(), "erase", "--json"];
    erase_args.extend(user);
    let erase = cli(&erase_args, &rs, b"").await;
    assert_eq!(erase.code, 0, "{}", erase.stderr);
    let receipt: serde_json::Value = serde_json::from_slice(&erase.stdout).unwrap();
    assert_eq!(receipt["versionsDestroyed"], 1);
    let export = cli(&export_args, &rs, b"").await;
    let value: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert!(value["keyVersions"].as_array().unwrap().is_empty(), "erased");

    // A wrong credential is refused with the auth exit code.
    let refused = cli(&erase_args, &[("KEYSERVICE_SECRET", "wrong-secret-0123456789abcdef0123456789")], b"").await;
    assert_fails(&refused, 3, "bad_signature");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_output_is_private_even_over_an_existing_file() {
    let (_server, dir, url) = server().await;
    let (init, session) = connect(&url, "overwriter").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];
    let key = dir.path().join("key.bin");
    std::fs::write(&key, b"the key").unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    assert_eq!(cli(&["--url", &url, "put", key.to_str().unwrap()], &device, b"").await.code, 0);
    let get = cli(&["--url", &url, "get", "-o", key.to_str().unwrap()], &device, b"").await;
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert_eq!(std::fs::read(&key).unwrap(), b"the key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

/// `-o` at what is not a regular file: a device and a FIFO are written in place and stay
/// what they were (replacing `/dev/null` as root broke the machine); a symbolic link,
/// dangling or not, is refused and nothing is written through it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn get_output_writes_devices_and_fifos_in_place_and_refuses_links() {
    use std::os::unix::fs::FileTypeExt;
    let (_server, dir, url) = server().await;
    let (init, session) = connect(&url, "special-files").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];
    let key = dir.path().join("key.bin");
    std::fs::write(&key, b"special key").unwrap();
    assert_eq!(cli(&["--url", &url, "put", key.to_str().unwrap()], &device, b"").await.code, 0);
    let get_to = |path: std::path::PathBuf| {
        let url = url.clone();
        let device = device.map(|(k, v)| (k, v.to_owned()));
        async move {
            let env: Vec<(&str, &str)> = device.iter().map(|(k, v)| (*k, v.as_str())).collect();
            cli(&["--url", &url, "get", "-o", path.to_str().unwrap()], &env, b"").await
        }
    };

    // A character device of its own (the tests run as root): the null device's numbers.
    let null = dir.path().join("null");
    assert!(Command::new("mknod").arg(&null).args(["c", "1", "3"]).status().unwrap().success());
    let run = get_to(null.clone()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(std::fs::symlink_metadata(&null).unwrap().file_type().is_char_device(), "the device was replaced");

    // A FIFO: the key goes to whoever reads it, and the FIFO stays one.
    let fifo = dir.path().join("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let run = get_to(fifo.clone()).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(reader.join().unwrap(), b"special key");
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // Symbolic links, to a file and to nowhere: refused, nothing written through them.
    let target = dir.path().join("target");
    std::fs::write(&target, b"somebody else's file").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    for path in [&link, &dangling] {
        let run = get_to(path.clone()).await;
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("is a symbolic link"), "{}", run.stderr);
        assert!(std::fs::symlink_metadata(path).unwrap().file_type().is_symlink());
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"somebody else's file");
    assert!(!dir.path().join("nowhere").exists());

    // A directory: refused.
    let run = get_to(dir.path().to_path_buf()).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_failure_says_why() {
    // A TLS server whose certificate is self-signed and used as its own CA: rustls
    // refuses such a certificate (it is a CA certificate used as an end entity).
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let files = keyservice::tls::TlsFiles { cert_file: dir.path().join("c.pem"), key_file: dir.path().join("k.pem") };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&files.key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut config = config(dir.path());
    config.tls = Some(files.clone());
    let server = TestServer::start_sled(config).await;
    let url = format!("https://localhost:{}", server.addr.port());
    let run = cli(&["--url", &url, "--ca-file", files.cert_file.to_str().unwrap(), "init"], &[], b"").await;
    assert_fails(&run, 5, "network");
    assert!(run.stderr.contains("CaUsedAsEndEntity"), "the cause is printed: {}", run.stderr);
    assert!(run.stderr.contains("a CA certificate"), "and what it means: {}", run.stderr);
}

/// Pointed at the wrong thing, the CLI says what to check, and a wrong URL has an exit
/// code of its own, so a script can tell it from a user with no key (4).
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_url_or_scheme_says_what_to_check() {
    let (_server, _dir, url) = server().await;
    let (init, session) = connect(&url, "misdirected").await;
    let device = [("KEYSERVICE_INIT_TOKEN", init.as_str()), ("KEYSERVICE_SESSION_TOKEN", session.as_str())];
    assert_fails(&cli(&["--url", &url, "get"], &device, b"").await, 4, "no_key");
    let prefixed = cli(&["--url", &format!("{url}/keyservice"), "get"], &device, b"").await;
    assert_fails(&prefixed, 7, "not an answer of keyservice's API");
    let prefixed = cli(&["--url", &format!("{url}/keyservice"), "init"], &[], b"").await;
    assert_fails(&prefixed, 7, "without a path");

    // https:// to a plain HTTP port.
    let https = url.replace("http://", "https://");
    assert_fails(&cli(&["--url", &https, "init"], &[], b"").await, 5, "use an http:// URL");

    // http:// to a TLS port.
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let files = keyservice::tls::TlsFiles { cert_file: dir.path().join("c.pem"), key_file: dir.path().join("k.pem") };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&files.key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut config = config(dir.path());
    config.tls = Some(files);
    let tls = TestServer::start_sled(config).await;
    let plain = format!("http://localhost:{}", tls.addr.port());
    assert_fails(&cli(&["--url", &plain, "--allow-http", "init"], &[], b"").await, 5, "use an https:// URL");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_certificate_recipe_works() {
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-certificates.sh");
    let made = Command::new("bash").arg(script).arg(dir.path()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut config = config(dir.path());
    config.tls = Some(keyservice::tls::TlsFiles {
        cert_file: dir.path().join("server.crt"),
        key_file: dir.path().join("server.key"),
    });
    let server = TestServer::start_sled(config).await;
    let ca = dir.path().join("ca.crt");
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}", server.addr.port());
        let run = cli(&["--url", &url, "--ca-file", ca.to_str().unwrap(), "init"], &[], b"").await;
        assert_eq!(run.code, 0, "{host}: {}", run.stderr);
    }
}
