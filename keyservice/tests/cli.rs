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
