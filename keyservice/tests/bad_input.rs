//! The bad-input matrix: malformed and hostile requests over raw TCP, each with the
//! status and error code it must get. Afterwards the server still serves and no state
//! changed.

mod support;

use std::time::Duration;

use keyservice_client::protocol::wire::ExportResponse;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One row: a name, the raw request, and the expected status and code (`None` for
/// answers hyper gives itself, without a JSON body; status 0 for "connection closed
/// without an answer").
struct Row {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    code: Option<&'static str>,
}

fn row(name: &'static str, request: Vec<u8>, status: u16, code: Option<&'static str>) -> Row {
    Row { name, request, status, code }
}

/// `METHOD target HTTP/1.1` with `headers` and `body` (Content-Length added unless a
/// header already frames the body).
fn request(method: &str, target: &str, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: keyservice\r\nconnection: close\r\n").into_bytes();
    let framed = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding"));
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !framed {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Headers of a request signed by `key_id`/`secret`, with `date` and `authorization`
/// overridable.
fn signed(key_id: &str, secret: &str, method: &str, target: &str, body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    signed_headers(key_id, secret, method, target, body, &http_date(0))
        .into_iter()
        .map(|(n, v)| (n, v.into_bytes()))
        .collect()
}

fn with(
    mut headers: Vec<(&'static str, Vec<u8>)>,
    name: &'static str,
    value: impl Into<Vec<u8>>,
) -> Vec<(&'static str, Vec<u8>)> {
    headers.retain(|(n, _)| *n != name);
    headers.push((name, value.into()));
    headers
}

fn without(mut headers: Vec<(&'static str, Vec<u8>)>, name: &str) -> Vec<(&'static str, Vec<u8>)> {
    headers.retain(|(n, _)| *n != name);
    headers
}

async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, Option<String>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let code = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v["error"].as_str().map(str::to_owned));
    (status, code)
}

#[tokio::test]
async fn the_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.header_read_timeout = Duration::from_secs(1);
    // The matrix fails authentication on purpose, far more often than the default
    // budget of one address allows (tests/limits.rs covers that budget).
    config.auth_failures_per_minute = std::num::NonZeroU32::new(1000).unwrap();
    let server = TestServer::start_sled(config).await;
    let addr = server.addr;
    let device = device(addr, "victim").await;
    assert_eq!(device.put(b"the one key", &[]).await.status, 201);
    let (sid, init) = (device.session_token.expose().to_owned(), device.init_token.expose().to_owned());
    let good_get = signed(&sid, &init, "GET", "/key", b"");
    let auth = String::from_utf8(good_get[0].1.clone()).unwrap();
    let token = keyservice_client::protocol::Secret::new("a-pending-token-the-matrix-never-redeems-00");
    let hash = keyservice_client::protocol::wire::init_token_hash(&token);
    let json = |value: &str| value.as_bytes().to_vec();
    let connect = |body: Vec<u8>| {
        let headers = with(signed(KEY_ID, SECRET, "POST", "/connect", &body), "content-type", "application/json");
        request("POST", "/connect", &headers, &body)
    };
    let deep = format!("{}{}", "[".repeat(1500), "]".repeat(1500));

    // A request accepted once, for the replay row.
    let replayed = request("GET", "/key", &good_get, b"");
    assert_eq!(exchange(addr, &replayed).await.0, 200);

    let mut rows = vec![
        // ss1 headers.
        row(
            "no Authorization",
            request("GET", "/key", &without(good_get.clone(), "authorization"), b""),
            401,
            Some("missing_authorization"),
        ),
        row(
            "another scheme",
            request("GET", "/key", &with(good_get.clone(), "authorization", "Basic dXNlcjpwYXNz"), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "empty Authorization",
            request("GET", "/key", &with(good_get.clone(), "authorization", ""), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "missing nonce",
            request(
                "GET",
                "/key",
                &with(good_get.clone(), "authorization", auth.split(", nonce=").next().unwrap()),
                b"",
            ),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "duplicate hash",
            request(
                "GET",
                "/key",
                &with(
                    good_get.clone(),
                    "authorization",
                    auth.replace(", nonce=", &format!(", hash={}, nonce=", "0".repeat(128))),
                ),
                b"",
            ),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "non-hex nonce",
            request("GET", "/key", &with(good_get.clone(), "authorization", auth.replace("nonce=", "nonce=zz")), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "short nonce",
            request("GET", "/key", &with(good_get.clone(), "authorization", &auth[..auth.len() - 2]), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "long hash",
            request("GET", "/key", &with(good_get.clone(), "authorization", auth.replace("hash=", "hash=00")), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "upper-case hex",
            request("GET", "/key", &with(good_get.clone(), "authorization", upper_case_hex(&auth)), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "huge keyid",
            request(
                "GET",
                "/key",
                &with(good_get.clone(), "authorization", auth.replace(&sid, &"k".repeat(5000))),
                b"",
            ),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "unknown field",
            request("GET", "/key", &with(good_get.clone(), "authorization", format!("{auth}, realm=x")), b""),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "non-UTF-8 Authorization",
            request(
                "GET",
                "/key",
                &with(good_get.clone(), "authorization", b"ss1 keyid=\xff\xfe, hash=00".to_vec()),
                b"",
            ),
            401,
            Some("malformed_authorization"),
        ),
        row(
            "unknown session",
            request("GET", "/key", &signed("no-such-session", &init, "GET", "/key", b""), b""),
            401,
            Some("unknown_session"),
        ),
        row(
            "wrong secret",
            request("GET", "/key", &signed(&sid, "not-the-init-token", "GET", "/key", b""), b""),
            401,
            Some("bad_signature"),
        ),
        row("unknown credential", connect_with_key("nobody", &hash), 401, Some("unknown_key_id")),
        // Dates.
        row("no date", request("GET", "/key", &without(good_get.clone(), "date"), b""), 401, Some("missing_date")),
        row(
            "garbage date",
            request("GET", "/key", &with(good_get.clone(), "date", "next tuesday"), b""),
            401,
            Some("bad_date"),
        ),
        row(
            "non-UTF-8 date",
            request("GET", "/key", &with(good_get.clone(), "date", b"Sun, 22 Nov \xff".to_vec()), b""),
            401,
            Some("bad_date"),
        ),
        row(
            "date far past",
            request("GET", "/key", &signed_at(&sid, &init, "/key", -3600), b""),
            401,
            Some("clock_skew"),
        ),
        row(
            "date far future",
            request("GET", "/key", &signed_at(&sid, &init, "/key", 3600), b""),
            401,
            Some("clock_skew"),
        ),
        row("replay", replayed, 401, Some("replayed_request")),
        // Methods and paths.
        row("PATCH /key", request("PATCH", "/key", &[], b""), 405, Some("method_not_allowed")),
        row("DELETE /init", request("DELETE", "/init", &[], b""), 405, Some("method_not_allowed")),
        row("GET /connect", request("GET", "/connect", &[], b""), 405, Some("method_not_allowed")),
        row("//key", request("GET", "//key", &[], b""), 404, Some("not_found")),
        row("/key/", request("GET", "/key/", &[], b""), 404, Some("not_found")),
        row("/%6Bey", request("GET", "/%6Bey", &[], b""), 404, Some("not_found")),
        row("/KEY", request("GET", "/KEY", &[], b""), 404, Some("not_found")),
        row(
            "version not a number",
            request("GET", "/key?version=abc", &signed(&sid, &init, "GET", "/key?version=abc", b""), b""),
            400,
            Some("bad_query"),
        ),
        row(
            "version twice",
            request(
                "GET",
                "/key?version=1&version=2",
                &signed(&sid, &init, "GET", "/key?version=1&version=2", b""),
                b"",
            ),
            400,
            Some("bad_query"),
        ),
        row(
            "version overflow",
            request(
                "GET",
                "/key?version=99999999999999999999",
                &signed(&sid, &init, "GET", "/key?version=99999999999999999999", b""),
                b"",
            ),
            400,
            Some("bad_query"),
        ),
        row(
            "query on PUT",
            request("PUT", "/key?x", &signed(&sid, &init, "PUT", "/key?x", b"k"), b"k"),
            400,
            Some("bad_query"),
        ),
        // Bodies.
        row(
            "declared body too large",
            request("PUT", "/key", &with(signed(&sid, &init, "PUT", "/key", b""), "content-length", "70000"), b""),
            413,
            Some("body_too_large"),
        ),
        row(
            "chunked body too large",
            chunked("/key", &signed(&sid, &init, "PUT", "/key", b""), 70_000),
            413,
            Some("body_too_large"),
        ),
        row("empty key", request("PUT", "/key", &signed(&sid, &init, "PUT", "/key", b""), b""), 400, Some("empty_key")),
        row(
            "bad If-Match",
            request("PUT", "/key", &with(signed(&sid, &init, "PUT", "/key", b"k"), "if-match", "yesterday"), b"k"),
            400,
            Some("bad_precondition"),
        ),
        row("connect body too large", connect(vec![b' '; 5000]), 413, Some("body_too_large")),
        row(
            "connect without JSON type",
            request("POST", "/connect", &signed(KEY_ID, SECRET, "POST", "/connect", b"{}"), b"{}"),
            415,
            Some("unsupported_media_type"),
        ),
        row("connect empty body", connect(Vec::new()), 400, Some("bad_json")),
        row("deeply nested JSON", connect(deep.into_bytes()), 400, Some("bad_json")),
        row(
            "wrong JSON types",
            connect(json(r#"{"namespace":"shop","userId":["u"],"initTokenHash":"x"}"#)),
            400,
            Some("bad_json"),
        ),
        row(
            "duplicate JSON keys",
            connect(json(&format!(r#"{{"namespace":"shop","userId":"u","userId":"v","initTokenHash":"{hash}"}}"#))),
            400,
            Some("bad_json"),
        ),
        row(
            "huge JSON number",
            connect(json(&format!(r#"{{"namespace":"shop","userId":1e999999,"initTokenHash":"{hash}"}}"#))),
            400,
            Some("bad_json"),
        ),
        row(
            "invalid base64 hash",
            connect(json(r#"{"namespace":"shop","userId":"u","initTokenHash":"!!!not base64!!!"}"#)),
            400,
            Some("invalid_init_token_hash"),
        ),
        row(
            "unknown namespace",
            connect(json(&format!(r#"{{"namespace":"nope","userId":"u","initTokenHash":"{hash}"}}"#))),
            403,
            Some("wrong_namespace"),
        ),
        row(
            "over-long userId",
            connect(json(&format!(
                r#"{{"namespace":"shop","userId":"{}","initTokenHash":"{hash}"}}"#,
                "u".repeat(300)
            ))),
            400,
            Some("invalid_user_id"),
        ),
        row(
            "unknown init token",
            connect(json(&format!(r#"{{"namespace":"shop","userId":"u","initTokenHash":"{hash}"}}"#))),
            404,
            Some("unknown_init_token"),
        ),
        row(
            "browser calling /connect",
            request(
                "OPTIONS",
                "/connect",
                &[("origin", b"https://evil.example".to_vec()), ("access-control-request-method", b"POST".to_vec())],
                b"",
            ),
            403,
            Some("cors_not_allowed"),
        ),
        // Headers.
        row(
            "header flood",
            request("GET", "/key", &(0..200).map(|_| ("x-flood", b"1".to_vec())).collect::<Vec<_>>(), b""),
            431,
            None,
        ),
        row("huge header", request("GET", "/key", &[("x-huge", vec![b'a'; 20_000])], b""), 431, None),
        row("control character in a header", request("GET", "/key", &[("x-bad", b"a\x01b".to_vec())], b""), 400, None),
    ];
    // A slow client: headers that never finish. The server hangs up after its timeout.
    rows.push(row("slow headers", b"GET /key HTTP/1.1\r\nhost: keyservice\r\nx-slow: ".to_vec(), 0, None));
    assert!(rows.len() >= 40, "{} rows", rows.len());

    let mut failures = Vec::new();
    for row in &rows {
        let (status, code) = exchange(addr, &row.request).await;
        let expected_status = if row.status == 0 { [0, 408] } else { [row.status, row.status] };
        if !expected_status.contains(&status) || code.as_deref() != row.code {
            failures.push(format!("{}: got {status} {code:?}, expected {} {:?}", row.name, row.status, row.code));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));

    // The server still serves, and nothing changed: one version, one session.
    assert_eq!(device.get("/key").await.header("etag"), "\"1\"");
    let body = serde_json::json!({ "namespace": NAMESPACE, "userId": "victim" }).to_string();
    let export: ExportResponse = support::signed(
        addr,
        KEY_ID,
        SECRET,
        "POST",
        "/export",
        body.as_bytes(),
        &[("content-type", "application/json".into())],
    )
    .await
    .json();
    assert_eq!((export.key_versions.len(), export.sessions.len()), (1, 1));
    assert_eq!(init_after(addr).await, 200);

    fn connect_with_key(key_id: &str, hash: &str) -> Vec<u8> {
        let body = format!(r#"{{"namespace":"shop","userId":"u","initTokenHash":"{hash}"}}"#).into_bytes();
        let headers = with(signed(key_id, SECRET, "POST", "/connect", &body), "content-type", "application/json");
        request("POST", "/connect", &headers, &body)
    }

    fn signed_at(key_id: &str, secret: &str, target: &str, offset: i64) -> Vec<(&'static str, Vec<u8>)> {
        signed_headers(key_id, secret, "GET", target, b"", &http_date(offset))
            .into_iter()
            .map(|(n, v)| (n, v.into_bytes()))
            .collect()
    }

    fn chunked(target: &str, headers: &[(&'static str, Vec<u8>)], size: usize) -> Vec<u8> {
        let headers = with(headers.to_vec(), "transfer-encoding", "chunked");
        let mut out = request("PUT", target, &headers, b"");
        for chunk in vec![b'x'; size].chunks(8192) {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }
}

/// The header with its hash and nonce in upper-case hex (ss1 says lower case).
fn upper_case_hex(authorization: &str) -> String {
    authorization
        .split(", ")
        .map(|part| match part.split_once('=') {
            Some((name @ ("hash" | "nonce"), value)) => format!("{name}={}", value.to_uppercase()),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn init_after(addr: std::net::SocketAddr) -> u16 {
    send(addr, "POST", "/init", &[], b"").await.status.as_u16()
}

/// Every rejecting ss1 vector of `spec/ss1/reject.json` (one per class of malformed
/// header, the same file the clients' tests read), sent as a device's `GET /key` with a
/// fresh date: 401 `malformed_authorization`, and the answer never repeats the header.
#[tokio::test]
async fn every_rejecting_ss1_vector_is_a_malformed_authorization() {
    let vectors: serde_json::Value = serde_json::from_str(include_str!("../../spec/ss1/reject.json")).unwrap();
    let headers = vectors["headers"].as_array().unwrap();
    assert!(headers.len() >= 20, "the vector file lost cases");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.auth_failures_per_minute = std::num::NonZeroU32::new(1000).unwrap();
    let server = TestServer::start_sled(config).await;
    for vector in headers {
        let name = vector["name"].as_str().unwrap();
        let value = match (vector["header"].as_str(), vector["header_hex"].as_str()) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(hex_text)) => hex::decode(hex_text).unwrap(),
            _ => panic!("{name}: neither header nor header_hex"),
        };
        let date = http_date(0).into_bytes();
        let raw = request("GET", "/key", &[("date", date), ("authorization", value.clone())], b"");
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(&raw).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 401"), "{name}: {text}");
        let body: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"], "malformed_authorization", "{name}");
        if value.len() > 8 {
            assert!(!answer.windows(value.len()).any(|w| w == value.as_slice()), "{name}: the header came back");
        }
    }
    assert_eq!(init_after(server.addr).await, 200, "the server still serves");
    server.stop().await;
}
