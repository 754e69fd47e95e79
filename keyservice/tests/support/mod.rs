//! Shared helpers for the integration tests: a server on an ephemeral loopback port, and
//! a small HTTP client that signs with ss1.
#![allow(dead_code)] // Each test binary uses a different subset.

pub mod proxy;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keyservice::config::{Credential, Namespace};
use keyservice::escrow::{Escrow, Policy};
use keyservice::{Clock, Config, ErasureLedger, MasterKey, ShiftedClock, SledStore, Store, SystemClock};
use keyservice_client::protocol::Secret;
use keyservice_client::protocol::ss1::{Authorization, Nonce, SignedRequest};
use keyservice_client::protocol::wire::{ConnectResponse, ErrorBody, InitResponse, init_token_hash};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const NAMESPACE: &str = "shop";
pub const KEY_ID: &str = "rs-1";
pub const SECRET: &str = "shop-secret-0123456789abcdef0123456789";
/// A namespace whose allowlist excludes loopback.
pub const FAR_NAMESPACE: &str = "far";
pub const FAR_KEY_ID: &str = "far-1";
pub const FAR_SECRET: &str = "far-secret-0123456789abcdef0123456789ab";

/// The test configuration: `shop` may connect from loopback, `far` only from TEST-NET-1.
/// The data lives in `data_dir`, the master key and the erasure ledger beside it.
pub fn config(data_dir: &Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.join("data"),
        master_key_file: data_dir.join("master.key"),
        erasure_ledger_file: data_dir.join("erasures.jsonl"),
        audit_log_file: data_dir.join("audit.jsonl"),
        ..Config::default()
    };
    config.namespaces.insert(
        NAMESPACE.into(),
        Namespace {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            credentials: vec![Credential { key_id: KEY_ID.into(), secret: Secret::new(SECRET) }],
            connect_budget: keyservice::config::default_connect_budget(),
            oidc: None,
        },
    );
    config.namespaces.insert(
        FAR_NAMESPACE.into(),
        Namespace {
            allow: vec!["192.0.2.0/24".parse().unwrap()],
            credentials: vec![Credential { key_id: FAR_KEY_ID.into(), secret: Secret::new(FAR_SECRET) }],
            connect_budget: keyservice::config::default_connect_budget(),
            oidc: None,
        },
    );
    config
}

/// The TOML of the `shop` namespace, allowing `allow` (a CIDR), for a config file.
pub fn shop_toml(allow: &str) -> String {
    format!(
        "[namespaces.{NAMESPACE}]\nallow = [\"{allow}\"]\ncredentials = [ {{ key_id = \"{KEY_ID}\", secret = \"{SECRET}\" }} ]\n"
    )
}

/// Trust for one appending proxy on 127.0.0.1 that writes `X-Forwarded-For`.
pub fn loopback_proxy() -> keyservice::proxy::ProxyTrust {
    keyservice::proxy::ProxyTrust {
        trusted: vec!["127.0.0.1/32".parse().unwrap()],
        header: Some(keyservice::proxy::ForwardedHeader::XForwardedFor),
        hops: 1,
    }
}

/// A running server, started as the binary starts one; stopped (gracefully) by
/// [`TestServer::stop`] or on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub config: Config,
    /// The server's clock: [`ShiftedClock::advance`] moves it instead of waiting.
    pub clock: Arc<ShiftedClock>,
    running: Option<keyservice::server::Running>,
}

impl TestServer {
    /// Starts `config` over `store`, on an ephemeral loopback port, with its admin
    /// socket beside the data directory.
    pub async fn start(mut config: Config, store: Arc<dyn Store>) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_socket = config.data_dir.with_extension("admin.sock");
        // After a graceful stop the replay floor is the last second served: requests
        // signed in that second are refused after a restart. The clients sign with the
        // system's clock, so a restart waits for that second to end.
        let floor = store.replay_floor().await.unwrap();
        while SystemClock.now() <= floor {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let clock = Arc::new(ShiftedClock::default());
        let running = keyservice::server::Server::new(config.clone())
            .with_store(store.clone())
            .with_clock(clock.clone())
            .start()
            .await
            .unwrap();
        Self { addr: running.addr(), store, config, clock, running: Some(running) }
    }

    /// An escrow over the server's store and master key, to set up states the API
    /// cannot reach directly (expired tokens and sessions).
    pub async fn escrow(&self) -> Escrow {
        let master = MasterKey::load_or_create(&self.config.master_key_file).unwrap();
        let ledger = ErasureLedger::open(&self.config.erasure_ledger_file).unwrap();
        Escrow::open(self.store.clone(), &master, ledger, Policy::from(&self.config)).await.unwrap()
    }

    /// A server on a sled store in the config's data directory.
    pub async fn start_sled(config: Config) -> Self {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.data_dir).unwrap());
        Self::start(config, store).await
    }

    /// Stops the server, waits for it to flush, and releases the store.
    pub async fn stop(mut self) {
        self.running.take().unwrap().stop().await.unwrap();
        // The store (and with it sled's file lock) goes when the last handle does.
        assert_eq!(Arc::strong_count(&self.store), 1, "the server still holds the store");
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code; also checks the error body's shape and content type.
    pub fn error(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/json");
        let body: ErrorBody = self.json();
        assert!(body.message.ends_with('.') && !body.message.is_empty(), "{}", body.message);
        body.error
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
    }

    #[track_caller]
    pub fn expect_status(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", String::from_utf8_lossy(&self.body));
    }

    #[track_caller]
    pub fn expect(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status.as_u16(), self.error().as_str()),
            (status, code),
            "{}",
            String::from_utf8_lossy(&self.body)
        );
    }
}

/// Sends one request on a fresh connection.
pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Reply {
    send_from(None, addr, method, path, headers, body).await
}

/// Sends one request on a fresh connection from the loopback address `source` (any of
/// 127.0.0.0/8 works on Linux), or the system's choice.
pub async fn send_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let stream = match source {
        None => TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(path);
    for (name, value) in headers {
        request =
            request.header(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    let request = request.header("host", addr.to_string()).body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// The current time as an HTTP date, shifted by `offset_secs`.
pub fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let at = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

/// The headers of a request signed with ss1 and dated `date` (sent as `Date`).
pub fn signed_headers(
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    date: &str,
) -> Vec<(&'static str, String)> {
    let request = SignedRequest { method, path_and_query: path, body, date };
    let authorization = Authorization::sign(key_id, secret.as_bytes(), Nonce::random().unwrap(), &request);
    vec![("authorization", authorization.to_string()), ("date", date.to_owned())]
}

/// Sends a request signed now with ss1, plus `extra` headers.
pub async fn signed(
    addr: SocketAddr,
    key_id: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: &[u8],
    extra: &[(&'static str, String)],
) -> Reply {
    let mut headers = signed_headers(key_id, secret, method, path, body, &http_date(0));
    headers.extend(extra.iter().cloned());
    send(addr, method, path, &headers, body).await
}

/// `POST /init` → the init token.
pub async fn init(addr: SocketAddr) -> Secret {
    let reply = send(addr, "POST", "/init", &[], b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json::<InitResponse>().init_token
}

/// The `/connect` body for `user_id` and an init token.
pub fn connect_body(namespace: &str, user_id: &str, init_token: &Secret) -> Vec<u8> {
    serde_json::json!({ "namespace": namespace, "userId": user_id, "initTokenHash": init_token_hash(init_token) })
        .to_string()
        .into_bytes()
}

/// `POST /connect` as the `shop` Real Service.
pub async fn connect_raw(addr: SocketAddr, body: &[u8]) -> Reply {
    signed(addr, KEY_ID, SECRET, "POST", "/connect", body, &[("content-type", "application/json".into())]).await
}

/// A device with a session for `user_id` in `shop`.
/// `POST path` as the `shop` Real Service with `{namespace, userId}`.
pub async fn as_real_service(addr: SocketAddr, path: &str, namespace: &str, user: &str) -> Reply {
    let body = serde_json::json!({ "namespace": namespace, "userId": user }).to_string();
    signed(addr, KEY_ID, SECRET, "POST", path, body.as_bytes(), &[("content-type", "application/json".into())]).await
}

/// `rounds` PUTs each racing a `DELETE /key` of the same user: after each, the key reads
/// back as the racing PUT wrote it or is gone, never as an acknowledged write that
/// cannot be opened (a version sealed under the DEK the deletion removed).
pub async fn put_racing_delete(device: &Device, rounds: usize) {
    for round in 0..rounds {
        assert!(device.put(b"first", &[]).await.status.is_success());
        let (put, deleted) = tokio::join!(device.put(b"racing", &[]), device.request("DELETE", "/key", b"", &[]));
        assert!(put.status.is_success(), "round {round}: {}", String::from_utf8_lossy(&put.body));
        assert_eq!(deleted.status, StatusCode::NO_CONTENT, "round {round}");
        let read = device.get("/key").await;
        match read.status.as_u16() {
            200 => assert_eq!(read.body.as_ref(), b"racing", "round {round}"),
            404 => {}
            status => panic!("round {round}: the key reads as {status}: {}", String::from_utf8_lossy(&read.body)),
        }
    }
}

/// `rounds` PUTs each racing the erasure of their user: after each, a new session of
/// that user finds no key. A PUT acknowledged before the erasure was erased with the
/// rest; one made after it is refused (`401 unknown_session`): its session is gone.
pub async fn put_racing_erasure(addr: SocketAddr, rounds: usize) {
    let mut refused = 0;
    for round in 0..rounds {
        let user = format!("erased-{round}");
        let device = device(addr, &user).await;
        assert!(device.put(b"first", &[]).await.status.is_success());
        // The PUT starts up to 2 ms after the erasure, spread over the rounds, so that
        // some land while the erasure runs.
        let delay = Duration::from_micros(200 * (round % 11) as u64);
        let late_put = async {
            tokio::time::sleep(delay).await;
            device.put(b"racing", &[]).await
        };
        let (put, erased) = tokio::join!(late_put, as_real_service(addr, "/erase", NAMESPACE, &user));
        erased.expect_status(200);
        match put.status.as_u16() {
            200 | 201 => {}
            401 => {
                put.expect(401, "unknown_session");
                refused += 1;
            }
            status => panic!("round {round}: the PUT got {status}: {}", String::from_utf8_lossy(&put.body)),
        }
        let after = self::device(addr, &user).await.get("/key").await;
        assert_eq!(
            after.status,
            404,
            "round {round}: a key outlived its erasure: {}",
            String::from_utf8_lossy(&after.body)
        );
    }
    eprintln!("{refused} of {rounds} racing PUTs were refused");
}

#[derive(Clone)]
pub struct Device {
    pub addr: SocketAddr,
    pub session_token: Secret,
    pub init_token: Secret,
}

pub async fn device(addr: SocketAddr, user_id: &str) -> Device {
    device_in(addr, (NAMESPACE, KEY_ID, SECRET), user_id).await
}

/// A device with a session for `user_id` in the namespace `(name, key id, secret)` names.
pub async fn device_in(addr: SocketAddr, (namespace, key_id, secret): (&str, &str, &str), user_id: &str) -> Device {
    let init_token = init(addr).await;
    let body = connect_body(namespace, user_id, &init_token);
    let reply =
        signed(addr, key_id, secret, "POST", "/connect", &body, &[("content-type", "application/json".into())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let session_token = reply.json::<ConnectResponse>().session_token;
    Device { addr, session_token, init_token }
}

impl Device {
    /// The same session, signing its requests to `addr` (another node).
    pub fn at(&self, addr: SocketAddr) -> Device {
        Device { addr, session_token: self.session_token.clone(), init_token: self.init_token.clone() }
    }

    pub async fn request(&self, method: &str, path: &str, body: &[u8], extra: &[(&'static str, String)]) -> Reply {
        signed(self.addr, self.session_token.expose(), self.init_token.expose(), method, path, body, extra).await
    }

    pub async fn put(&self, body: &[u8], extra: &[(&'static str, String)]) -> Reply {
        self.request("PUT", "/key", body, extra).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, b"", &[]).await
    }
}

/// The store's index of a pending init: SHA-512 of the token, decoded from its
/// `initTokenHash` as the server decodes it.
pub fn init_digest(token: &Secret) -> [u8; 64] {
    base64::engine::general_purpose::STANDARD.decode(init_token_hash(token)).unwrap().try_into().unwrap()
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Standard padded base64 of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes raw bytes to the server and reads until it closes or `wait` passes.
pub async fn raw(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
