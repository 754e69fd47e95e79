//! The `keyservice` binary: its commands, exit codes and start-up.

#[path = "support/binary.rs"]
mod binary;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use binary::{run, serve, write_config};
use support::*;

#[test]
fn gen_secret_prints_a_fresh_43_character_secret() {
    let (code, a, _) = run(&["gen-secret"], &[]);
    let (_, b, _) = run(&["gen-secret"], &[]);
    assert_eq!(code, 0);
    assert_eq!(a.trim().len(), 43);
    assert_ne!(a, b);
}

#[test]
fn help_documents_every_flag_and_its_default() {
    let (code, help, _) = run(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    for flag in ["--config", "--listen", "--data-dir", "--dev", "127.0.0.1:8080", "./keyservice-data"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    let (code, help, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(help.contains("serve") && help.contains("gen-secret"));
}

#[test]
fn an_invalid_config_names_the_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyservice.toml");
    std::fs::write(
        &path,
        "[namespaces.shop]\nallow = [\"127.0.0.1/32\"]\ncredentials = [{ key_id = \"rs-1\", secret_env = \"KS_UNSET_SECRET\" }]\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("namespaces.shop.credentials[0].secret_env"), "{stderr}");

    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nmax_conections = 3\n").unwrap();
    let (code, _, stderr) = run(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");

    let (code, _, stderr) = run(&["serve", "--config", "/nonexistent/keyservice.toml"], &[]);
    assert_eq!(code, 2, "{stderr}");
}

/// A value written where another type belongs, or a URL where a table belongs, may be
/// a secret: the message names the key and the line, never the value (it goes to the
/// journal under systemd).
#[test]
fn config_errors_name_the_key_and_line_and_never_show_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyservice.toml");
    let cases = [
        (
            "[namespaces.shop]\nallow = [\"127.0.0.1/32\"]\ncredentials = \"Fj3kQx9SecretValue\"\n",
            "line 3, `namespaces.shop.credentials`",
        ),
        ("listen = \"127.0.0.1:0\"\nstorage = \"postgres://ks:Hunter2Password@db/ks\"\n", "line 2, `storage`"),
        ("min_free_bytes = \"Hunter2Password\"\n", "line 1, `min_free_bytes`"),
        (
            "[[namespaces.shop.credentials]]\nkey_id = \"rs-1\"\nsecret = 98765432109876543210\n",
            "`namespaces.shop.credentials[].secret`",
        ),
        ("listen = \"127.0.0.1:0\nsecret = 'Hunter2Password'\n", "line 1"),
    ];
    for (text, names) in cases {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = run(&["serve", "--config", path.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(names), "{err}");
        for value in ["Fj3kQx9", "Hunter2", "98765432109876543210"] {
            assert!(!err.contains(value) && !out.contains(value), "{err}");
        }
    }
}

#[test]
fn audit_verify_of_a_missing_file_says_it_cannot_read_it() {
    let (code, out, err) = run(&["audit", "verify", "/nonexistent/audit.jsonl"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("/nonexistent/audit.jsonl: cannot read it"), "{said}");
    assert!(!said.contains("line 0"), "{said}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = run(&["serve", "--no-such-flag"], &[]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["serve", "--dev", "--config", "x.toml"], &[]);
    assert_eq!(code, 2);
}

#[tokio::test]
async fn a_config_file_with_an_env_secret_serves_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = write_config(
        dir.path(),
        &format!(
            "[namespaces.{NAMESPACE}]\nallow = [\"127.0.0.1/32\", \"::1/128\"]\ncredentials = [ {{ key_id = \"{KEY_ID}\", secret_env = \"KS_SECRET_RS1\" }} ]\n"
        ),
    );
    // --listen overrides the file.
    let server =
        serve(&["serve", "--config", path.to_str().unwrap(), "--listen", "127.0.0.1:0"], &[("KS_SECRET_RS1", SECRET)]);
    let device = device(server.addr, "347").await;
    assert_eq!(device.put(b"key", &[]).await.status, 201);
    assert_eq!(&device.get("/key").await.body[..], b"key");
    assert!(data.join("db").exists(), "the file's data_dir is used");
}

#[tokio::test]
async fn dev_mode_prints_a_credential_that_works() {
    let server = serve(&["serve", "--dev", "--listen", "127.0.0.1:0"], &[]);
    let line = &server.stdout[0];
    let field = |name: &str| {
        line.split_whitespace().find_map(|part| part.strip_prefix(&format!("{name}="))).unwrap().to_owned()
    };
    assert_eq!(field("namespace"), "demo");
    let (key_id, secret) = (field("key_id"), field("secret"));
    assert_eq!(secret.len(), 43);

    let token = init(server.addr).await;
    let body = connect_body("demo", "u1", &token);
    let reply = signed(
        server.addr,
        &key_id,
        &secret,
        "POST",
        "/connect",
        &body,
        &[("content-type", "application/json".into())],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(server.stdout[1].contains("keyservice-dev-"), "{}", server.stdout[1]);

    // Stopped as an operator stops it, it leaves no directory (and no master key) behind.
    let data = std::path::PathBuf::from(server.stdout[1].rsplit(' ').next().unwrap());
    let temporary = data.parent().unwrap().to_path_buf();
    assert!(temporary.exists());
    drop(server);
    assert!(!temporary.exists(), "{} was left behind", temporary.display());
}

/// A taken port: the start fails saying what to do, and prints no credential (it used to
/// print one that nothing would ever accept, then the bare OS error).
#[test]
fn a_taken_port_says_what_to_do_and_prints_no_credential() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, out, err) = run(&["serve", "--dev", "--listen", &address], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("cannot listen on {address}")) && err.contains("--listen ADDR"), "{err}");
    assert!(!out.contains("secret="), "{out}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut server = serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every path under `path` (itself included) with group or other permission bits.
fn loose_permissions(path: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut loose = Vec::new();
    let metadata = std::fs::symlink_metadata(path).unwrap();
    if metadata.permissions().mode() & 0o077 != 0 {
        loose.push(format!("{} {:o}", path.display(), metadata.permissions().mode()));
    }
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            loose.extend(loose_permissions(&entry.unwrap().path()));
        }
    }
    loose
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_server_creates_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // A data directory left world-readable (by hand, or by an older version).
    let old = dir.path().join("data");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("stray"), "x").unwrap();
    std::process::Command::new("chmod").args(["-R", "go+rX", old.to_str().unwrap()]).status().unwrap();
    let namespace = shop_toml("127.0.0.1/32");
    let config = write_config(dir.path(), &namespace);
    let server = binary::serve_after("umask 022", &["serve", "--config", config.to_str().unwrap()], &[]);
    let device = device(server.addr, "private-user").await;
    assert_eq!(device.put(&vec![7u8; 60_000], &[]).await.status, 201);
    for name in ["data", "master.key", "audit.jsonl", "erasures.jsonl", "admin.sock"] {
        let loose = loose_permissions(&dir.path().join(name));
        assert!(loose.is_empty(), "{name}: {loose:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_namespaces_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let other_secret = "other-secret-0123456789abcdef0123456789";
    let new_secret = "shop-new-secret-0123456789abcdef01234567";
    let namespaces = |shop_credentials: &str, with_other: bool| {
        let mut text =
            format!("[namespaces.{NAMESPACE}]\nallow = [\"127.0.0.1/32\"]\ncredentials = [ {shop_credentials} ]\n");
        if with_other {
            text.push_str(&format!(
                "[namespaces.other]\nallow = [\"127.0.0.1/32\"]\ncredentials = [ {{ key_id = \"other-1\", secret = \"{other_secret}\" }} ]\n"
            ));
        }
        text
    };
    let old_credential = format!("{{ key_id = \"{KEY_ID}\", secret = \"{SECRET}\" }}");
    let new_credential = format!("{{ key_id = \"rs-2\", secret = \"{new_secret}\" }}");
    let config = write_config(dir.path(), &namespaces(&old_credential, true));
    let server = serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let hangup = || {
        Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    };
    let connect_as = |key_id: &'static str, secret: &'static str, namespace: &'static str, user: &'static str| {
        let addr = server.addr;
        async move {
            let token = init(addr).await;
            let body = connect_body(namespace, user, &token);
            let reply =
                signed(addr, key_id, secret, "POST", "/connect", &body, &[("content-type", "application/json".into())])
                    .await;
            (reply, token)
        }
    };
    let (reply, token) = connect_as("other-1", other_secret, "other", "olga").await;
    assert_eq!(reply.status, 200);
    let olga = Device {
        addr: server.addr,
        session_token: reply.json::<keyservice_client::protocol::wire::ConnectResponse>().session_token,
        init_token: token,
    };
    assert_eq!(olga.put(b"olga's key", &[]).await.status, 201);

    // A broken file changes nothing.
    std::fs::write(&config, "this is not toml [").unwrap();
    hangup();
    // Real time: the reload runs in the server process, which logs nothing for a file it refuses.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(olga.get("/key").await.status, 200, "the old namespaces stay");
    assert!(server.logs.lock().unwrap().iter().any(|l| l.contains("keeping the previous namespaces")));

    // `other` removed, `shop`'s credential rotated.
    write_config(dir.path(), &namespaces(&new_credential, false));
    hangup();
    let started = Instant::now();
    while !server.logs.lock().unwrap().iter().any(|l| l.contains("namespaces reloaded")) {
        assert!(started.elapsed() < Duration::from_secs(5), "no reload logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    olga.get("/key").await.expect(401, "namespace_removed");
    let (reply, _) = connect_as(KEY_ID, SECRET, NAMESPACE, "alice").await;
    reply.expect(401, "unknown_key_id");
    let (reply, _) = connect_as("rs-2", new_secret, NAMESPACE, "alice").await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert!(
        !server.logs.lock().unwrap().iter().any(|l| l.contains("only at a restart")),
        "namespaces alone changed: nothing to restart for"
    );

    // A setting that needs a restart is named, and so is a table's.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("max_key_versions = 3\nsession_ttl_secs = 600\n{text}")).unwrap();
    hangup();
    let started = Instant::now();
    let warned = loop {
        let logs = server.logs.lock().unwrap().clone();
        if let Some(line) = logs.iter().find(|l| l.contains("only at a restart")) {
            break line.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no warning about settings needing a restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(warned.contains("max_key_versions, session_ttl_secs"), "{warned}");
}

/// Runs the binary in `cwd`: (exit code, stdout, stderr).
fn run_in(cwd: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary::BIN).args(args).current_dir(cwd).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code().unwrap_or(-1), text(&output.stdout), text(&output.stderr))
}

#[test]
fn operator_commands_refuse_a_store_that_does_not_exist() {
    let cwd = tempfile::tempdir().unwrap();
    let (code, _, err) = run_in(cwd.path(), &["backup", "--out", "b.backup"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("there is no store in ./keyservice-data"), "{err}");
    let (code, _, err) =
        run_in(cwd.path(), &["rotate-master-key", "--new-key-file", "new.key", "--data-dir", "nowhere"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("there is no store in nowhere"), "{err}");
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "nothing was created: {left:?}");
}

#[test]
fn two_servers_in_one_directory_keep_their_own_files_and_one_store_has_one_server() {
    let cwd = tempfile::tempdir().unwrap();
    let start = |data_dir: &str| {
        let mut child = Command::new(binary::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir])
            .current_dir(cwd.path())
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("keyservice listening") || line.contains("error") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        (child, seen)
    };
    let (mut one, log_one) = start("one");
    let (mut two, log_two) = start("two");
    assert!(log_one.contains("listening") && log_two.contains("listening"), "{log_one}\n{log_two}");
    for name in ["one.master.key", "one.audit.jsonl", "one.erasures.jsonl", "two.master.key", "two.audit.jsonl"] {
        assert!(cwd.path().join(name).exists(), "{name}");
    }
    assert_ne!(
        std::fs::read(cwd.path().join("one.master.key")).unwrap(),
        std::fs::read(cwd.path().join("two.master.key")).unwrap()
    );
    // A second server on a store already served is refused, saying why.
    let (code, _, err) = run_in(cwd.path(), &["serve", "--listen", "127.0.0.1:0", "--data-dir", "one"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another") && err.contains("one"), "{err}");
    let _ = (one.kill(), two.kill(), one.wait(), two.wait());

    // A store whose master key went missing is never given a new one.
    std::fs::remove_file(cwd.path().join("one.master.key")).unwrap();
    let (code, _, err) = run_in(cwd.path(), &["serve", "--listen", "127.0.0.1:0", "--data-dir", "one"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("one.master.key") && !cwd.path().join("one.master.key").exists(), "{err}");
}

/// Sends SIGTERM and waits for a clean exit.
fn terminate(server: &mut binary::Serving) {
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let started = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_rotates_reopens_on_sighup_and_verifies_as_a_series() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("audit_max_bytes = 4096\n{}", shop_toml("127.0.0.1/32"));
    let config = write_config(dir.path(), &namespace);
    let mut server = serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let device = device(server.addr, "rotating-user").await;
    for _ in 0..30 {
        assert!(device.put(b"k", &[]).await.status.is_success());
    }
    // An external tool moves the log away, then asks for a reopen.
    std::fs::rename(dir.path().join("audit.jsonl"), dir.path().join("audit.jsonl.moved")).unwrap();
    Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    let started = Instant::now();
    while !server.logs.lock().unwrap().iter().any(|l| l.contains("audit log reopened")) {
        assert!(started.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        assert_eq!(device.get("/key").await.status, 200);
    }
    terminate(&mut server);

    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.contains("audit.jsonl") && !p.ends_with(".head"))
        .collect();
    assert!(files.len() >= 4, "rotated by size, and moved once: {files:?}");
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("chain intact (seq 0 to") && out.contains("head file agrees"), "{out}");

    // Lines cut off the end are reported, not passed.
    let live = dir.path().join("audit.jsonl");
    let text = std::fs::read_to_string(&live).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&live, lines[..lines.len() - 2].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("cut off the end"), "{err}");
}
