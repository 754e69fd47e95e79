//! Server behaviour beyond single requests: restarts, connection limits and timeouts.

mod support;

use std::time::{Duration, Instant};

use keyservice_client::protocol::wire::ConnectResponse;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn inits_sessions_and_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let addr = server.addr;
    let device = device(addr, "347").await;
    assert_eq!(device.put(b"version one", &[]).await.status, 201);
    assert_eq!(device.put(b"version two", &[("content-type", "text/plain".into())]).await.status, 200);
    let pending = init(addr).await;
    // A request captured before the restart...
    let captured =
        signed_headers(device.session_token.expose(), device.init_token.expose(), "GET", "/key", b"", &http_date(0));
    assert_eq!(send(addr, "GET", "/key", &captured, b"").await.status, 200);
    server.stop().await;

    let server = TestServer::start_sled(config(dir.path())).await;
    let device = Device { addr: server.addr, ..device };
    let latest = device.get("/key").await;
    assert_eq!(latest.status, 200);
    assert_eq!(&latest.body[..], b"version two");
    assert_eq!(latest.header("content-type"), "text/plain");
    assert_eq!(&device.get("/key?version=1").await.body[..], b"version one");

    // ...cannot be replayed after it; the answer says when fresh requests pass.
    let stale = send(server.addr, "GET", "/key", &captured, b"").await;
    stale.expect(401, "stale_date");
    let retry: u64 = stale.header("retry-after").parse().unwrap();
    assert!((1..=7).contains(&retry), "{retry}");

    // The init token issued before the restart still connects, once.
    let reply = connect_raw(server.addr, &connect_body(NAMESPACE, "348", &pending)).await;
    assert_eq!(reply.status, 200);
    let _: ConnectResponse = reply.json();
    connect_raw(server.addr, &connect_body(NAMESPACE, "348", &pending)).await.expect(404, "unknown_init_token");
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let request = format!("POST /init HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n", "a".repeat(20_000));
    let answer = raw(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The server still serves.
    init(server.addr).await;
}

#[tokio::test]
async fn a_slow_client_cannot_hold_a_connection_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.header_read_timeout = Duration::from_secs(1);
    let server = TestServer::start_sled(config).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"POST /init HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    // The server answers 408 or just closes; either way the read ends well before 10 s.
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_connections = 1;
    let server = TestServer::start_sled(config).await;

    // The one slot: a keep-alive connection that has been served and stays open.
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(b"POST /init HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let second = tokio::spawn(init(server.addr));
    // Real time: how long the second connection is seen to wait (it must not be served).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "a second connection was served beyond the limit");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_sweeper_deletes_expired_init_tokens() {
    use keyservice_client::protocol::Secret;

    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.sweep_interval = Duration::from_secs(1);
    let server = TestServer::start_sled(config).await;
    let escrow = server.escrow().await;
    let token = Secret::new("an-init-token-that-expired-a-second-ago-000");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        escrow.add_init(&token, unix_now() - 1).await.unwrap();
        // Give the sweeper (every second) a chance; then the token is gone (404) rather
        // than merely expired (410, which consumes it too, so it is added again).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = connect_raw(server.addr, &connect_body(NAMESPACE, "u", &token)).await;
        if reply.status == 404 {
            reply.expect(404, "unknown_init_token");
            break;
        }
        assert!(Instant::now() < deadline, "never swept: {}", reply.error());
    }
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let addr = server.addr;
    let device = device(addr, "u").await;

    // A PUT whose body is still arriving when the shutdown begins.
    let body = b"a key that arrives slowly";
    let headers =
        signed_headers(device.session_token.expose(), device.init_token.expose(), "PUT", "/key", body, &http_date(0));
    let mut head = format!("PUT /key HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..5]).await.unwrap();
    // Real time: the server reads the first bytes before the stop begins.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stopping = tokio::spawn(server.stop());
    // Real time: how long the stop is seen to wait for the request in flight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "the server stopped with a request in flight");
    stream.write_all(&body[5..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopping).await.unwrap().unwrap();

    // It was stored, and new connections are refused.
    assert!(TcpStream::connect(addr).await.is_err());
    let server = TestServer::start_sled(config(dir.path())).await;
    let device = Device { addr: server.addr, ..device };
    assert_eq!(&device.get("/key").await.body[..], body);
}
