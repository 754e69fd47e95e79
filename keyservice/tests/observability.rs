//! What operators see: request ids, metrics, health, the audit trail (chained, fail
//! closed, free of secrets), logs free of secrets, and client addresses behind proxies.

#[path = "support/binary.rs"]
mod binary;
mod support;

use std::time::Duration;

use binary::{serve, write_config};
use support::*;

async fn server_with(configure: impl FnOnce(&mut keyservice::Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    configure(&mut config);
    (TestServer::start_sled(config).await, dir)
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let (server, _dir) = server_with(|_| {}).await;
    let given = send(server.addr, "POST", "/init", &[("x-request-id", "trace-42.a_b".into())], b"").await;
    assert_eq!(given.header("x-request-id"), "trace-42.a_b");
    let generated = send(server.addr, "POST", "/init", &[], b"").await;
    assert_eq!(generated.header("x-request-id").len(), 32);
    let hostile = send(server.addr, "GET", "/nowhere", &[("x-request-id", "a b;<script>".into())], b"").await;
    assert_ne!(hostile.header("x-request-id"), "a b;<script>");
}

#[tokio::test]
async fn health_and_metrics_after_a_flow() {
    let (server, _dir) = server_with(|_| {}).await;
    assert_eq!(send(server.addr, "GET", "/healthz", &[], b"").await.status, 200);
    let ready = send(server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json::<serde_json::Value>()["status"], "ready");

    let device = device(server.addr, "u1").await;
    device.put(b"k", &[]).await;
    device.get("/key").await;
    signed(server.addr, device.session_token.expose(), "wrong", "GET", "/key", b"", &[]).await;

    let metrics = send(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").starts_with("application/openmetrics-text"));
    let text = String::from_utf8_lossy(&metrics.body);
    for needle in [
        "keyservice_requests_total{route=\"/key\",status=\"201\"} 1",
        "keyservice_requests_total{route=\"/connect\",status=\"200\"} 1",
        "keyservice_request_duration_seconds_count{route=\"/key\"}",
        "keyservice_auth_failures_total{reason=\"bad_signature\"} 1",
        "keyservice_sessions",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("u1") && !text.contains(device.session_token.expose()));
}

#[tokio::test]
async fn metrics_can_live_on_their_own_listener() {
    let (server, _dir) = server_with(|config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    send(server.addr, "GET", "/metrics", &[], b"").await.expect(404, "not_found");
    // The app serves the metrics listener the binary would bind.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let master = keyservice::MasterKey::load_or_create(&server.config.master_key_file).unwrap();
    let mut config = server.config.clone();
    config.audit_log_file = config.audit_log_file.with_extension("metrics.jsonl");
    let app = keyservice::App::new(&config, server.store.clone(), &master).await.unwrap();
    let limits =
        keyservice::Limits { header_read_timeout: Duration::from_secs(1), ..keyservice::Limits::from(&config) };
    tokio::spawn(keyservice::server::serve_metrics(listener, app, limits));
    // Silent sockets beyond its small cap are closed by their deadline, not kept forever.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(metrics_addr).await.unwrap());
    }
    let started = std::time::Instant::now();
    let ready = tokio::time::timeout(Duration::from_secs(6), send(metrics_addr, "GET", "/healthz", &[], b"")).await;
    assert_eq!(ready.expect("served once the idle sockets were closed").status, 200);
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    let metrics = send(metrics_addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(send(metrics_addr, "GET", "/healthz", &[], b"").await.status, 200);
    let ready = send(metrics_addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 200, "readyz is served where the docs list it");
    assert_eq!(ready.json::<serde_json::Value>()["status"], "ready");
    assert_eq!(send(metrics_addr, "POST", "/init", &[], b"").await.status, 404, "only metrics and health there");
}

#[tokio::test]
async fn the_audit_trail_records_each_event_chained_and_without_secrets() {
    let (server, dir) = server_with(|_| {}).await;
    let user = "audited-user-5150";
    let device = device(server.addr, user).await;
    device.put(b"secret key bytes", &[]).await;
    device.get("/key").await;
    signed(server.addr, device.session_token.expose(), "wrong", "GET", "/key", b"", &[]).await;
    device.request("DELETE", "/session", b"", &[]).await;
    server.stop().await;

    let path = dir.path().join("audit.jsonl");
    let lines = keyservice::audit::verify(&path).expect("the chain is intact");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines as usize, text.lines().count());
    let events: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["event"]["event"].as_str().unwrap().to_owned(), v["event"]["outcome"].as_str().unwrap().to_owned()))
        .collect();
    for expected in [
        ("init", "ok"),
        ("connect", "allowed"),
        ("key_write", "allowed"),
        ("key_read", "ok"),
        ("auth_failure", "denied"),
        ("session_revoke", "allowed"),
    ] {
        assert!(events.iter().any(|(e, o)| (e.as_str(), o.as_str()) == expected), "{expected:?} missing: {events:?}");
    }
    let first: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(first["event"]["namespace"], NAMESPACE);
    assert_eq!(first["event"]["clientIp"], "127.0.0.1");
    assert_eq!(first["event"]["user"].as_str().unwrap().len(), 64);
    for secret in [user, device.session_token.expose(), device.init_token.expose(), "secret key bytes", SECRET] {
        assert!(!text.contains(secret), "the audit log holds {secret}");
    }

    // Tampering is found, at its line.
    let mut altered: Vec<String> = text.lines().map(str::to_owned).collect();
    altered[2] = altered[2].replace("\"allowed\"", "\"denied\"");
    std::fs::write(&path, altered.join("\n") + "\n").unwrap();
    assert_eq!(keyservice::audit::verify(&path).unwrap_err().line, 3);
    let (code, _, err) = binary::run(&["audit", "verify", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("line 3"), "{err}");
}

#[tokio::test]
async fn an_unwritable_audit_log_stops_requests_unless_told_otherwise() {
    let (server, _dir) = server_with(|config| config.audit_log_file = "/dev/full".into()).await;
    send(server.addr, "POST", "/init", &[], b"").await.expect(503, "audit_unavailable");
    let ready = send(server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json::<serde_json::Value>()["audit"], "failing");
    drop(server);

    let (server, _dir) = server_with(|config| {
        config.audit_log_file = "/dev/full".into();
        config.audit_fail_closed = false;
    })
    .await;
    let device = device(server.addr, "u").await;
    assert_eq!(device.put(b"k", &[]).await.status, 201, "fail-open keeps serving");
}

#[tokio::test]
async fn a_key_is_not_written_or_read_when_its_audit_line_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit-link");
    std::os::unix::fs::symlink(dir.path().join("audit.jsonl"), &audit).unwrap();
    let mut config = config(dir.path());
    config.audit_log_file = audit.clone();
    let server = TestServer::start_sled(config.clone()).await;
    let device = device(server.addr, "u").await;
    assert_eq!(device.put(b"first", &[]).await.status, 201);
    server.stop().await;

    // Same store, audit now failing: the PUT is refused before it happens.
    config.audit_log_file = "/dev/full".into();
    let server = TestServer::start_sled(config).await;
    let device = Device { addr: server.addr, ..device };
    device.put(b"second", &[]).await.expect(503, "audit_unavailable");
    device.get("/key").await.expect(503, "audit_unavailable");
    let body = serde_json::json!({ "namespace": NAMESPACE, "userId": "u" }).to_string();
    let json = [("content-type", "application/json".to_owned())];
    signed(server.addr, KEY_ID, SECRET, "POST", "/export", body.as_bytes(), &json)
        .await
        .expect(503, "audit_unavailable");
    server.stop().await;
    let server = TestServer::start_sled(config_with_audit(dir.path(), audit)).await;
    let device = Device { addr: server.addr, ..device };
    assert_eq!(device.get("/key").await.header("etag"), "\"1\"", "the refused PUT wrote nothing");
}

fn config_with_audit(dir: &std::path::Path, audit: std::path::PathBuf) -> keyservice::Config {
    let mut config = config(dir);
    config.audit_log_file = audit;
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn the_logs_of_a_full_flow_hold_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = format!("log_format = \"json\"\n{}", shop_toml("127.0.0.1/32"));
    let config = write_config(dir.path(), &namespace);
    let server = serve(&["serve", "--config", config.to_str().unwrap()], &[("RUST_LOG", "debug")]);
    let user = "logged-user-8086";
    let device = device(server.addr, user).await;
    let key = b"log-me-never-key-bytes";
    device.put(key, &[]).await;
    device.get("/key").await;
    signed(server.addr, device.session_token.expose(), "wrong", "GET", "/key", b"", &[]).await;
    let erase = serde_json::json!({ "namespace": NAMESPACE, "userId": user }).to_string();
    signed(
        server.addr,
        KEY_ID,
        SECRET,
        "POST",
        "/erase",
        erase.as_bytes(),
        &[("content-type", "application/json".into())],
    )
    .await;
    // Real time: the request log's writer is a thread of its own.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = server.logs.lock().unwrap().join("\n");
    assert!(logs.contains("request"), "no request lines:\n{logs}");
    for line in server.logs.lock().unwrap().iter() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    let hash = keyservice_client::protocol::wire::init_token_hash(&device.init_token);
    for secret in [
        user,
        device.session_token.expose(),
        device.init_token.expose(),
        hash.as_str(),
        SECRET,
        std::str::from_utf8(key).unwrap(),
    ] {
        assert!(!logs.contains(secret), "the logs hold {secret}:\n{logs}");
    }
}
