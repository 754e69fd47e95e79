//! The HTTP API over real connections on an ephemeral loopback port: the whole flow and
//! every error path of /init, /connect and /key.

mod support;

use std::sync::Arc;
use std::time::Duration;

use keyservice_client::protocol::Secret;
use keyservice_client::protocol::wire::{InitResponse, PutKeyResponse};
use support::*;

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    (server, dir)
}

#[tokio::test]
async fn the_whole_flow_stores_and_reads_key_versions() {
    let (server, _dir) = server().await;
    let phone = device(server.addr, "347").await;

    let first = phone.put(b"\x00\x01key-one\xff", &[("content-type", "application/x-raw-key".into())]).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("etag"), "\"1\"");
    assert_eq!(first.json::<PutKeyResponse>(), PutKeyResponse { version: 1 });

    let second = phone.put(b"key-two", &[]).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("etag"), "\"2\"");

    let latest = phone.get("/key").await;
    assert_eq!(latest.status, 200);
    assert_eq!(&latest.body[..], b"key-two");
    assert_eq!(latest.header("content-type"), "application/octet-stream");
    assert_eq!(latest.header("etag"), "\"2\"");

    let old = phone.get("/key?version=1").await;
    assert_eq!(old.status, 200);
    assert_eq!(&old.body[..], b"\x00\x01key-one\xff");
    assert_eq!(old.header("content-type"), "application/x-raw-key");
    assert_eq!(old.header("etag"), "\"1\"");

    // A second device session of the same user reaches the same key.
    let laptop = device(server.addr, "347").await;
    assert_eq!(&laptop.get("/key").await.body[..], b"key-two");
}

#[tokio::test]
async fn init_issues_distinct_tokens_with_an_expiry() {
    let (server, _dir) = server().await;
    let a = send(server.addr, "POST", "/init", &[], b"ignored body").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), "application/json");
    let a: InitResponse = a.json();
    let b: InitResponse = send(server.addr, "POST", "/init", &[], b"").await.json();
    assert_eq!(a.init_token.len(), 43);
    assert_ne!(a.init_token, b.init_token);
    let expires = httpdate_from_rfc3339(&a.expires_at);
    assert!((unix_now() + 590..=unix_now() + 601).contains(&expires), "{}", a.expires_at);
}

fn httpdate_from_rfc3339(text: &str) -> u64 {
    humantime::parse_rfc3339(text).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "u").await;
    for reply in [
        send(server.addr, "POST", "/init", &[], b"").await,
        send(server.addr, "GET", "/nowhere", &[], b"").await,
        device.get("/key").await,
        device.put(b"k", &[]).await,
    ] {
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("content-security-policy"), "default-src 'none'; frame-ancestors 'none'");
    }
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods() {
    let (server, _dir) = server().await;
    send(server.addr, "GET", "/", &[], b"").await.expect(404, "not_found");
    send(server.addr, "GET", "/key/", &[], b"").await.expect(404, "not_found");
    send(server.addr, "GET", "//key", &[], b"").await.expect(404, "not_found");
    for (method, path, allow) in [
        ("GET", "/init", "POST"),
        ("GET", "/connect", "POST"),
        ("PATCH", "/key", "GET, PUT, DELETE"),
        ("POST", "/key", "GET, PUT, DELETE"),
        ("GET", "/session", "DELETE"),
        ("GET", "/erase", "POST"),
        ("GET", "/export", "POST"),
    ] {
        let reply = send(server.addr, method, path, &[], b"").await;
        reply.expect(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), allow);
    }
}

#[tokio::test]
async fn connect_refuses_each_bad_request_with_its_own_error() {
    let (server, _dir) = server().await;
    let addr = server.addr;
    let token = init(addr).await;
    let good = connect_body(NAMESPACE, "u1", &token);

    // Credential of another namespace whose allowlist excludes loopback.
    signed(addr, FAR_KEY_ID, FAR_SECRET, "POST", "/connect", &good, &[("content-type", "application/json".into())])
        .await
        .expect(403, "ip_not_allowed");
    // The body names a namespace the credential does not belong to.
    connect_raw(addr, &connect_body(FAR_NAMESPACE, "u1", &token)).await.expect(403, "wrong_namespace");
    // Not JSON.
    signed(addr, KEY_ID, SECRET, "POST", "/connect", &good, &[("content-type", "text/plain".into())])
        .await
        .expect(415, "unsupported_media_type");
    signed(addr, KEY_ID, SECRET, "POST", "/connect", &good, &[]).await.expect(415, "unsupported_media_type");
    // Malformed JSON and fields.
    connect_raw(addr, b"{\"namespace\":").await.expect(400, "bad_json");
    connect_raw(addr, br#"{"namespace":"shop","userId":7,"initTokenHash":"x"}"#).await.expect(400, "bad_json");
    connect_raw(addr, &connect_body(NAMESPACE, "", &token)).await.expect(400, "invalid_user_id");
    connect_raw(addr, &connect_body(NAMESPACE, &"u".repeat(257), &token)).await.expect(400, "invalid_user_id");
    let short_hash = serde_json::json!({"namespace": NAMESPACE, "userId": "u1", "initTokenHash": b64(&[7; 63])});
    connect_raw(addr, short_hash.to_string().as_bytes()).await.expect(400, "invalid_init_token_hash");
    let not_base64 = serde_json::json!({"namespace": NAMESPACE, "userId": "u1", "initTokenHash": "%%%"});
    connect_raw(addr, not_base64.to_string().as_bytes()).await.expect(400, "invalid_init_token_hash");
    // A hash no init token has.
    let unknown = serde_json::json!({"namespace": NAMESPACE, "userId": "u1", "initTokenHash": b64(&[7; 64])});
    connect_raw(addr, unknown.to_string().as_bytes()).await.expect(404, "unknown_init_token");
    // Too large.
    connect_raw(addr, &vec![b' '; 5000]).await.expect(413, "body_too_large");

    // None of that consumed the token: it still connects, once.
    assert_eq!(connect_raw(addr, &good).await.status, 200);
    connect_raw(addr, &good).await.expect(404, "unknown_init_token");
}

#[tokio::test]
async fn connect_refuses_bad_signatures_and_unknown_credentials() {
    let (server, _dir) = server().await;
    let token = init(server.addr).await;
    let body = connect_body(NAMESPACE, "u1", &token);
    let json = [("content-type", "application/json".to_owned())];
    let wrong_secret = "wrong-secret-0123456789abcdef0123456789";
    signed(server.addr, KEY_ID, wrong_secret, "POST", "/connect", &body, &json).await.expect(401, "bad_signature");
    signed(server.addr, "nobody", SECRET, "POST", "/connect", &body, &json).await.expect(401, "unknown_key_id");
    send(server.addr, "POST", "/connect", &json, &body).await.expect(401, "missing_authorization");
    // The signature covers the body: the same header over another body fails.
    let mut headers = signed_headers(KEY_ID, SECRET, "POST", "/connect", &body, &http_date(0));
    headers.extend(json.iter().cloned());
    let other = connect_body(NAMESPACE, "u2", &token);
    send(server.addr, "POST", "/connect", &headers, &other).await.expect(401, "bad_signature");
    // And nothing was consumed.
    assert_eq!(connect_raw(server.addr, &body).await.status, 200);
}

#[tokio::test]
async fn an_allowlist_that_excludes_every_namespace_refuses_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.namespaces.remove(NAMESPACE);
    let server = TestServer::start_sled(config).await;
    let token = init(server.addr).await;
    // Even an unsigned request gets the 403: loopback may not connect for any namespace.
    send(server.addr, "POST", "/connect", &[], b"").await.expect(403, "ip_not_allowed");
    connect_raw(server.addr, &connect_body(NAMESPACE, "u", &token)).await.expect(403, "ip_not_allowed");
}

#[tokio::test]
async fn an_expired_init_token_cannot_connect() {
    let (server, _dir) = server().await;
    let token = Secret::new("expired-init-token-000000000000000000000000");
    server.escrow().await.add_init(&token, unix_now() - 1).await.unwrap();
    connect_raw(server.addr, &connect_body(NAMESPACE, "u", &token)).await.expect(410, "init_token_expired");
    // Expired tokens are consumed too.
    connect_raw(server.addr, &connect_body(NAMESPACE, "u", &token)).await.expect(404, "unknown_init_token");
}

#[tokio::test]
async fn key_errors() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "u1").await;
    device.get("/key").await.expect(404, "no_key");
    device.put(b"", &[]).await.expect(400, "empty_key");
    device.put(b"k", &[("content-type", "x".repeat(256))]).await.expect(400, "invalid_content_type");
    device.request("PUT", "/key?version=2", b"k", &[]).await.expect(400, "bad_query");
    assert_eq!(device.put(b"k1", &[]).await.status, 201);
    device.get("/key?version=2").await.expect(404, "no_such_version");
    device.get("/key?version=0").await.expect(400, "bad_query");
    device.get("/key?v=1").await.expect(400, "bad_query");
    device.get("/key?version=1&x=1").await.expect(400, "bad_query");
    // Each endpoint says what it takes.
    let message = |reply: Reply| reply.json::<serde_json::Value>()["message"].as_str().unwrap().to_owned();
    let said = message(device.get("/key?v=1").await);
    assert!(said.contains("GET /key takes only version=N"), "{said}");
    let said = message(device.get("/key/history?limit=501").await);
    assert!(said.contains("GET /key/history takes only limit=N (1 to 500)"), "{said}");
    let said = message(device.request("PUT", "/key?version=2", b"k", &[]).await);
    assert!(said.contains("PUT /key takes no query string"), "{said}");
    let said = message(device.request("DELETE", "/key?all=1", b"", &[]).await);
    assert!(said.contains("DELETE /key takes no query string"), "{said}");

    // Size limit: declared and streamed.
    let big = vec![7u8; 64 * 1024 + 1];
    device.put(&big, &[]).await.expect(413, "body_too_large");
    assert_eq!(device.put(&big[1..], &[]).await.status, 200, "exactly the limit is fine");
    let (status, code) = chunked_put(&device, &big).await;
    assert_eq!((status, code.as_str()), (413, "body_too_large"));

    // Nothing above wrote except the two good PUTs.
    assert_eq!(device.get("/key").await.header("etag"), "\"2\"");
}

/// A PUT whose body is sent chunked, without Content-Length.
async fn chunked_put(device: &Device, body: &[u8]) -> (u16, String) {
    let date = http_date(0);
    let headers = signed_headers(device.session_token.expose(), device.init_token.expose(), "PUT", "/key", body, &date);
    let mut request =
        String::from("PUT /key HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    for chunk in body.chunks(8192) {
        bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        bytes.extend_from_slice(chunk);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(device.addr, &bytes, Duration::from_secs(5)).await;
    let status = answer[9..12].parse().unwrap();
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    (status, error["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn conditional_puts() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "u1").await;
    device.put(b"k", &[("if-match", "*".into())]).await.expect(412, "precondition_failed");
    device.put(b"k", &[("if-match", "\"1\"".into())]).await.expect(412, "precondition_failed");
    assert_eq!(device.put(b"k1", &[("if-none-match", "*".into())]).await.status, 201);
    device.put(b"k", &[("if-none-match", "*".into())]).await.expect(412, "precondition_failed");
    assert_eq!(device.put(b"k2", &[("if-match", "\"1\"".into())]).await.status, 200);
    device.put(b"k", &[("if-match", "\"1\"".into())]).await.expect(412, "precondition_failed");
    device.put(b"k", &[("if-none-match", "\"2\"".into())]).await.expect(412, "precondition_failed");
    assert_eq!(device.put(b"k3", &[("if-match", "\"1\", \"2\"".into())]).await.status, 200);
    device.put(b"k", &[("if-match", "2".into())]).await.expect(400, "bad_precondition");
    device
        .put(b"k", &[("if-match", "\"3\"".into()), ("if-none-match", "*".into())])
        .await
        .expect(400, "conflicting_preconditions");
    let latest = device.get("/key").await;
    assert_eq!((&latest.body[..], latest.header("etag")), (&b"k3"[..], "\"3\""));
}

#[tokio::test]
async fn concurrent_if_match_puts_have_exactly_one_winner() {
    let (server, _dir) = server().await;
    let device = Arc::new(device(server.addr, "u1").await);
    assert_eq!(device.put(b"v1", &[]).await.status, 201);
    let mut tasks = Vec::new();
    for i in 0..24u8 {
        let device = device.clone();
        tasks.push(tokio::spawn(async move { device.put(&[i; 16], &[("if-match", "\"1\"".into())]).await }));
    }
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        match reply.status.as_u16() {
            200 => winners.push(i as u8),
            412 => assert_eq!(reply.error(), "precondition_failed"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let latest = device.get("/key").await;
    assert_eq!(latest.header("etag"), "\"2\"");
    assert_eq!(&latest.body[..], &[winners[0]; 16]);
}

#[tokio::test]
async fn users_are_isolated() {
    let (server, _dir) = server().await;
    let alice = device(server.addr, "alice").await;
    let bob = device(server.addr, "bob").await;
    assert_eq!(alice.put(b"alice-key", &[]).await.status, 201);
    bob.get("/key").await.expect(404, "no_key");
    bob.get("/key?version=1").await.expect(404, "no_such_version");
    assert_eq!(bob.put(b"bob-key", &[]).await.status, 201, "bob's first version is his own version 1");
    assert_eq!(&alice.get("/key").await.body[..], b"alice-key");
    assert_eq!(&bob.get("/key").await.body[..], b"bob-key");
    // A device cannot borrow another's session: alice's token with bob's secret fails.
    signed(server.addr, alice.session_token.expose(), bob.init_token.expose(), "GET", "/key", b"", &[])
        .await
        .expect(401, "bad_signature");
}

#[tokio::test]
async fn sessions_must_exist_and_be_current() {
    let (server, _dir) = server().await;
    let escrow = server.escrow().await;
    let init_token = Secret::new("init-token-for-an-expired-session-000000000");
    let session_token = Secret::new("expired-session-token-0000000000000000000000");
    escrow.add_init(&init_token, unix_now() + 60).await.unwrap();
    let user = escrow.user(NAMESPACE, "u");
    let redeemed =
        escrow.connect(&init_digest(&init_token), user, "rs", &session_token, unix_now(), unix_now() - 1).await;
    assert_eq!(redeemed.unwrap(), keyservice::store::Redeemed::Session);
    signed(server.addr, session_token.expose(), init_token.expose(), "GET", "/key", b"", &[])
        .await
        .expect(401, "session_expired");
    signed(server.addr, "no-such-session", init_token.expose(), "GET", "/key", b"", &[])
        .await
        .expect(401, "unknown_session");
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "u1").await;
    let headers =
        signed_headers(device.session_token.expose(), device.init_token.expose(), "PUT", "/key", b"key", &http_date(0));
    assert_eq!(send(server.addr, "PUT", "/key", &headers, b"key").await.status, 201);
    send(server.addr, "PUT", "/key", &headers, b"key").await.expect(401, "replayed_request");
    // The same for /connect: a captured connect cannot be replayed either.
    let token = init(server.addr).await;
    let body = connect_body(NAMESPACE, "u2", &token);
    let mut headers = signed_headers(KEY_ID, SECRET, "POST", "/connect", &body, &http_date(0));
    headers.push(("content-type", "application/json".into()));
    assert_eq!(send(server.addr, "POST", "/connect", &headers, &body).await.status, 200);
    send(server.addr, "POST", "/connect", &headers, &body).await.expect(401, "replayed_request");
    // Only one version was written.
    assert_eq!(device.get("/key").await.header("etag"), "\"1\"");
}

#[tokio::test]
async fn dates_are_checked_and_a_401_tells_the_server_time() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "u1").await;
    let (key_id, secret) = (device.session_token.expose(), device.init_token.expose());

    for offset in [-301, 301, -86_400] {
        let headers = signed_headers(key_id, secret, "GET", "/key", b"", &http_date(offset));
        let reply = send(server.addr, "GET", "/key", &headers, b"").await;
        reply.expect(401, "clock_skew");
        let server_date = httpdate::parse_http_date(reply.header("date")).unwrap();
        let drift = server_date.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().abs_diff(unix_now());
        assert!(drift <= 2, "the Date header is the server's clock");
    }
    // Within the window either way is fine.
    for offset in [-250, 250] {
        let headers = signed_headers(key_id, secret, "GET", "/key", b"", &http_date(offset));
        send(server.addr, "GET", "/key", &headers, b"").await.expect(404, "no_key");
    }

    // No date at all.
    let mut headers = signed_headers(key_id, secret, "GET", "/key", b"", &http_date(0));
    headers.retain(|(name, _)| *name != "date");
    send(server.addr, "GET", "/key", &headers, b"").await.expect(401, "missing_date");
    // Not a date.
    let headers = signed_headers(key_id, secret, "GET", "/key", b"", "yesterday at noon");
    send(server.addr, "GET", "/key", &headers, b"").await.expect(401, "bad_date");

    // X-Date stands in for Date (browsers), and is what the MAC covers then.
    let date = http_date(0);
    let mut headers = signed_headers(key_id, secret, "GET", "/key", b"", &date);
    headers.retain(|(name, _)| *name != "date");
    headers.push(("x-date", date));
    send(server.addr, "GET", "/key", &headers, b"").await.expect(404, "no_key");

    // With both, Date wins: an X-Date the MAC does not cover changes nothing.
    let mut headers = signed_headers(key_id, secret, "GET", "/key", b"", &http_date(0));
    headers.push(("x-date", http_date(-100)));
    send(server.addr, "GET", "/key", &headers, b"").await.expect(404, "no_key");
}

#[tokio::test]
async fn malformed_authorization_headers() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "u1").await;
    let good =
        signed_headers(device.session_token.expose(), device.init_token.expose(), "GET", "/key", b"", &http_date(0));
    let authorization = good[0].1.clone();
    let date = good[1].1.clone();
    for bad in [
        "Bearer abc".to_owned(),
        "ss1".to_owned(),
        authorization.replace("nonce=", "nonce=zz"),
        authorization.replace("hash=", "hash=0"),
        authorization.replace(", nonce=", ", salt=1, nonce="),
        format!("{authorization}, keyid=again"),
    ] {
        send(server.addr, "GET", "/key", &[("authorization", bad), ("date", date.clone())], b"")
            .await
            .expect(401, "malformed_authorization");
    }
}

#[tokio::test]
async fn error_bodies_never_contain_secrets() {
    let (server, _dir) = server().await;
    let device = device(server.addr, "user-4711").await;
    let replies = [
        signed(server.addr, device.session_token.expose(), "wrong-secret", "GET", "/key", b"", &[]).await,
        device.get("/key?version=5").await,
        device.put(b"k", &[("if-match", "\"9\"".into())]).await,
        connect_raw(server.addr, &connect_body(NAMESPACE, "user-4711", &device.init_token)).await,
    ];
    for reply in replies {
        let text = String::from_utf8_lossy(&reply.body);
        assert!(reply.status.is_client_error());
        for secret in [device.session_token.expose(), device.init_token.expose(), SECRET, "user-4711"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
