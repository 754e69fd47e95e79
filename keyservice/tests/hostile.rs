//! Hostile clients over real sockets: idle and trickling connections, connection
//! floods, held-back bodies, refusal floods, erasure floods, and hyper's own answers.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server_with(configure: impl FnOnce(&mut keyservice::Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.header_read_timeout = Duration::from_secs(1);
    config.keep_alive_timeout = Duration::from_secs(2);
    configure(&mut config);
    (TestServer::start_sled(config).await, dir)
}

/// How long until the server closes `stream` (reads and discards until EOF), or `None`
/// if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut sink)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_from_its_accept() {
    let (server, _dir) = server_with(|_| {}).await;
    // HTTP/1.1 that never sends a byte.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(5)).await.expect("closed");
    assert!(closed >= Duration::from_millis(900), "{closed:?}");
    // h2c: the preface, then nothing (no SETTINGS).
    let mut preface_only = TcpStream::connect(server.addr).await.unwrap();
    preface_only.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    assert!(closed_within(&mut preface_only, Duration::from_secs(5)).await.is_some());
    // A request line trickled a byte at a time never completes its headers.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
        if trickle.write_all(&[*byte]).await.is_err() || started.elapsed() > Duration::from_secs(6) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(6), "the trickle was cut off");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (server, _dir) = server_with(|_| {}).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let closed = closed_within(&mut stream, Duration::from_secs(6)).await.expect("closed after keep-alive");
    assert!(closed >= Duration::from_millis(1500), "{closed:?}");
}

#[tokio::test]
async fn idle_sockets_cannot_lock_everyone_out() {
    let (server, _dir) = server_with(|config| config.max_connections = 4).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Every slot is taken by a silent socket; within a header timeout they are gone.
    let started = Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(8), send(server.addr, "GET", "/healthz", &[], b""))
        .await
        .expect("served once the idle sockets were closed");
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn one_client_network_holds_only_its_share_of_connections() {
    let (server, _dir) = server_with(|config| {
        config.max_connections_per_client = 2;
        config.header_read_timeout = Duration::from_secs(10);
        // Only the Real Service's own address is allowlisted (an allowlisted one counts alone).
        config.namespaces.get_mut(NAMESPACE).unwrap().allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let _held = [connect_from("127.0.3.1", server.addr).await, connect_from("127.0.3.2", server.addr).await];
    // Real time: the server accepts the held connections before the third comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect_from("127.0.3.3", server.addr).await;
    let closed = closed_within(&mut third, Duration::from_secs(2)).await.expect("closed at once");
    assert!(closed < Duration::from_secs(1), "{closed:?}");
    let elsewhere =
        send_from(Some("127.0.4.1".parse::<IpAddr>().unwrap()), server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(elsewhere.status, 200, "another network is served");
    let metrics = String::from_utf8_lossy(&send(server.addr, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert!(metrics.contains("keyservice_connections_refused_total{reason=\"per_client\"} 1"), "{metrics}");
}

/// A neighbour holding every connection slot of the Real Service's network does not
/// lock the allowlisted Real Service out: its own address counts alone, as its failed
/// authentications already did.
#[tokio::test]
async fn a_neighbour_holding_its_networks_connections_does_not_lock_out_the_real_service() {
    let (server, _dir) = server_with(|config| {
        config.max_connections_per_client = 2;
        config.header_read_timeout = Duration::from_secs(10);
        config.namespaces.get_mut(NAMESPACE).unwrap().allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let _held = [connect_from("127.0.0.66", server.addr).await, connect_from("127.0.0.67", server.addr).await];
    // Real time: the server accepts the held connections before the third comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = connect_from("127.0.0.68", server.addr).await;
    assert!(closed_within(&mut third, Duration::from_secs(2)).await.is_some(), "the neighbours' share is full");
    // The Real Service at 127.0.0.1 (same /24) still connects its users.
    let device = device(server.addr, "alice").await;
    assert_eq!(device.put(b"alice's key", &[]).await.status, 201);
}

#[tokio::test]
async fn hypers_own_answers_carry_the_security_headers() {
    let (server, _dir) = server_with(|_| {}).await;
    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    for (request, status) in [
        (b"NOT A REQUEST\r\n\r\n".to_vec(), "400"),
        (b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), "400"),
        (big.into_bytes(), "431"),
    ] {
        let answer = raw(server.addr, &request, Duration::from_secs(3)).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
        let head = answer.to_ascii_lowercase();
        for header in [
            "x-content-type-options: nosniff",
            "cache-control: no-store",
            "content-security-policy:",
            "referrer-policy:",
        ] {
            assert!(head.contains(header), "{header} missing from {answer}");
        }
    }
}

#[tokio::test]
async fn a_held_back_body_is_judged_when_it_arrives() {
    let (server, _dir) = server_with(|config| {
        config.max_clock_skew = Duration::from_secs(2);
        config.body_read_timeout = Duration::from_secs(30);
    })
    .await;
    let token = init(server.addr).await;
    let body = connect_body(NAMESPACE, "alice", &token);
    let mut headers = signed_headers(KEY_ID, SECRET, "POST", "/connect", &body, &http_date(0));
    headers.push(("content-type", "application/json".to_owned()));
    let mut head = format!("POST /connect HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The date was fresh when the headers came; the body comes after the window.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stream.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("\"clock_skew\""), "{answer}");
    // The init token was not spent by the refused request.
    assert_eq!(connect_raw(server.addr, &body).await.status, 200);
}

#[tokio::test]
async fn a_flood_of_refusals_costs_one_audit_line_per_window() {
    let (server, dir) = server_with(|config| config.auth_failures_per_minute = NonZeroU32::new(5).unwrap()).await;
    // `far` allows only 192.0.2.0/24: loopback is refused, again and again.
    let body = br#"{"namespace":"far","userId":"u","initTokenHash":"x"}"#;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let reply = signed(
            server.addr,
            FAR_KEY_ID,
            FAR_SECRET,
            "POST",
            "/connect",
            body,
            &[("content-type", "application/json".into())],
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert!(statuses.iter().all(|s| matches!(s, 403 | 429)), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 50, "throttled after the budget: {statuses:?}");
    server.stop().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let denied: Vec<&str> = audit.lines().filter(|l| l.contains("\"access_denied\"")).collect();
    assert_eq!(denied.len(), 2, "one line, then one summary at stop: {denied:#?}");
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert!(denied[1].contains(&format!("\"repeated\":{}", refused - 1)), "{refused} refused: {}", denied[1]);
}

#[tokio::test]
async fn erasures_have_a_budget_per_namespace() {
    let (server, _dir) = server_with(|config| {
        config.namespaces.get_mut(NAMESPACE).unwrap().connect_budget.erase_per_minute = NonZeroU32::new(3).unwrap();
    })
    .await;
    let erase = |user: String| {
        let body = serde_json::json!({ "namespace": NAMESPACE, "userId": user }).to_string();
        let addr = server.addr;
        async move {
            signed(
                addr,
                KEY_ID,
                SECRET,
                "POST",
                "/erase",
                body.as_bytes(),
                &[("content-type", "application/json".into())],
            )
            .await
        }
    };
    for n in 0..3 {
        assert_eq!(erase(format!("never-seen-{n}")).await.status, 200);
    }
    let refused = erase("never-seen-4".into()).await;
    refused.expect(429, "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));
    let ledger = std::fs::read_to_string(&server.config.erasure_ledger_file).unwrap();
    assert_eq!(ledger.lines().count(), 3, "a refused erasure adds no ledger line");
}

#[path = "support/binary.rs"]
mod binary;

/// Sends `request` on an open connection and reads one answer (headers and a body of
/// the given Content-Length).
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> String {
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

fn signed_request(device: &Device, method: &str, body: &[u8]) -> Vec<u8> {
    let headers =
        signed_headers(device.session_token.expose(), device.init_token.expose(), method, "/key", body, &http_date(0));
    let mut head = format!("{method} /key HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut request = format!("{head}\r\n").into_bytes();
    request.extend_from_slice(body);
    request
}

#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_descriptors_passes() {
    let dir = tempfile::tempdir().unwrap();
    let namespace =
        format!("header_read_timeout_secs = 60\nmax_connections_per_client = 10000\n{}", shop_toml("127.0.0.0/8"));
    let config = binary::write_config(dir.path(), &namespace);
    let server = binary::serve_after("ulimit -n 64", &["serve", "--config", config.to_str().unwrap()], &[]);
    let device = device(server.addr, "fd-user").await;
    device.put(b"first key", &[]).await.expect_status(201);
    // A connection accepted before the descriptors run out.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    assert!(exchange(&mut kept, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.starts_with("HTTP/1.1 200"));
    // Exhaust them with idle connections.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Real time: the server accepts the idle connections before the kept one asks.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = exchange(&mut kept, &signed_request(&device, "PUT", b"second key")).await;
    let status: u16 = during[9..12].parse().unwrap();
    assert!(matches!(status, 200 | 201 | 503), "transient, never a 500: {during}");
    if status == 503 {
        assert!(
            during.contains("store_unavailable") && during.to_ascii_lowercase().contains("retry-after"),
            "{during}"
        );
    }
    // Descriptors come back: everything works again, without a restart.
    drop(idle);
    let started = Instant::now();
    loop {
        let reply = device.put(b"third key", &[]).await;
        if reply.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", String::from_utf8_lossy(&reply.body));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(device.get("/key").await.body.as_ref(), b"third key");
    let ready = send(server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    let metrics = String::from_utf8_lossy(&send(server.addr, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert!(metrics.contains("keyservice_connections_refused_total{reason=\"accept_failed\"}"), "{metrics}");
    println!("PUT while out of descriptors: {status}");
}

#[tokio::test]
async fn a_start_reapplies_only_the_erasures_after_the_stores_mark() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let erase = |addr: SocketAddr, user: &'static str| async move {
        let body = serde_json::json!({ "namespace": NAMESPACE, "userId": user }).to_string();
        signed(addr, KEY_ID, SECRET, "POST", "/erase", body.as_bytes(), &[("content-type", "application/json".into())])
            .await
            .expect_status(200);
    };
    let server = TestServer::start_sled(config.clone()).await;
    for user in ["gone-1", "gone-2", "gone-3"] {
        erase(server.addr, user).await;
    }
    server.stop().await;
    // This start applies the three and marks the ledger's end in the store.
    TestServer::start_sled(config.clone()).await.stop().await;

    // The first line rots; a start that read the whole ledger would refuse it.
    let ledger = std::fs::read_to_string(&config.erasure_ledger_file).unwrap();
    let first = ledger.lines().next().unwrap().len();
    let rotted = format!("{}{}", "x".repeat(first), &ledger[first..]);
    std::fs::write(&config.erasure_ledger_file, &rotted).unwrap();
    let server = TestServer::start_sled(config.clone()).await;
    erase(server.addr, "gone-4").await;
    assert_eq!(send(server.addr, "GET", "/readyz", &[], b"").await.status, 200);
    server.stop().await;

    // A store with no mark (a new data directory) does read the whole ledger.
    let mut fresh = config.clone();
    fresh.data_dir = dir.path().join("fresh-data");
    let store: std::sync::Arc<dyn keyservice::Store> =
        std::sync::Arc::new(keyservice::SledStore::open(&fresh.data_dir).unwrap());
    let master = keyservice::MasterKey::load_or_create(&fresh.master_key_file).unwrap();
    let refused = keyservice::App::new(&fresh, store, &master).await.err().expect("the rotten line is read");
    assert!(refused.to_string().contains("line 1"), "{refused}");
}

/// Writes all of `request` (failing the test on a reset or broken pipe), then reads
/// the answer's status line.
async fn send_all_then_read(addr: SocketAddr, request: &[u8]) -> String {
    // A small send buffer, as on a real network: the body cannot all sit in the kernel
    // before the server answers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(32 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request).await.expect("the whole body could be sent");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().expect("an answer");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_oversized_body_gets_its_413_however_it_is_sent() {
    let (server, _dir) = server_with(|_| {}).await;
    let body = vec![b'k'; 1024 * 1024];
    for _ in 0..5 {
        let mut request =
            format!("PUT /key HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        request.extend_from_slice(&body);
        let answer = send_all_then_read(server.addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    // Chunked, so the size shows only as it arrives.
    let mut chunked = b"PUT /key HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert!(send_all_then_read(server.addr, &chunked).await.starts_with("HTTP/1.1 413"));
    // A client that asks first is told at once, before it sends a byte of the body.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head =
        format!("PUT /key HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "no 100 Continue, a refusal: {answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}
