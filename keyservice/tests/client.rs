//! The `keyservice-client` library against the real server over HTTP and HTTPS: both
//! roles, conditional writes, clock correction, retries, and every error kind.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keyservice_client::protocol::Secret;
use keyservice_client::{Client, Condition, Credential, ErrorKind, Session};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    (server, dir)
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn shop() -> Credential {
    Credential::new(KEY_ID, Secret::new(SECRET))
}

/// The device's side and the Real Service's side of the flow, with `client`.
async fn connected(client: &Client, user: &str) -> Session {
    let init = client.init().await.unwrap();
    let grant = client.real_service(shop()).connect(NAMESPACE, user, &init.hash()).await.unwrap();
    client.session(grant.session_token, &init)
}

#[tokio::test]
async fn both_roles_run_the_flow() {
    let (server, _dir) = server().await;
    let client = Client::new(&url(server.addr)).unwrap();
    let session = connected(&client, "347").await;
    assert_eq!(session.put_key(b"first", Some("text/plain"), Condition::None).await.unwrap(), 1);
    assert_eq!(session.put_key(b"second", None, Condition::None).await.unwrap(), 2);
    let latest = session.get_key().await.unwrap();
    assert_eq!(
        (latest.version, latest.content_type.as_str(), latest.bytes()),
        (2, "application/octet-stream", &b"second"[..])
    );
    let first = session.get_key_version(1).await.unwrap();
    assert_eq!((first.version, first.content_type.as_str(), first.bytes()), (1, "text/plain", &b"first"[..]));
    assert!(!format!("{latest:?}").contains("second"), "Debug shows key bytes");
}

#[tokio::test]
async fn conditional_writes() {
    let (server, _dir) = server().await;
    let client = Client::new(&url(server.addr)).unwrap();
    let session = connected(&client, "u").await;
    assert_eq!(session.put_key(b"a", None, Condition::IfNoneMatch).await.unwrap(), 1);
    let error = session.put_key(b"b", None, Condition::IfNoneMatch).await.unwrap_err();
    assert!(error.is_precondition_failed());
    assert_eq!(session.put_key(b"b", None, Condition::IfMatch(1)).await.unwrap(), 2);
    // Repeating a conditional PUT (as after a lost answer) cannot write twice.
    let error = session.put_key(b"b", None, Condition::IfMatch(1)).await.unwrap_err();
    assert_eq!(
        (error.kind(), error.status(), error.code()),
        (ErrorKind::PreconditionFailed, Some(412), Some("precondition_failed"))
    );
    assert_eq!(session.get_key().await.unwrap().version, 2);
}

#[tokio::test]
async fn a_wrong_clock_is_corrected_from_the_servers_date() {
    let (server, _dir) = server().await;
    // Clocks an hour slow and two hours fast, far beyond the server's 5-minute skew.
    for offset in [-3600, 7200] {
        let real_service = Client::builder(&url(server.addr)).clock_offset_secs(offset).build().unwrap();
        let (token, init) = session_token_of(&real_service, &format!("user{offset}")).await;
        assert!(real_service.clock_offset_secs().abs() <= 2, "learned offset {}", real_service.clock_offset_secs());

        // The PUT is refused for its date, corrected and repeated: it lands exactly once.
        let device = Client::builder(&url(server.addr)).clock_offset_secs(offset).build().unwrap();
        let session = device.session(token, &init);
        assert_eq!(session.put_key(b"k", None, Condition::None).await.unwrap(), 1);
        assert_eq!(session.get_key().await.unwrap().version, 1);
    }
}

async fn session_token_of(client: &Client, user: &str) -> (Secret, keyservice_client::InitToken) {
    let init = client.init().await.unwrap();
    let grant = client.real_service(shop()).connect(NAMESPACE, user, &init.hash()).await.unwrap();
    (grant.session_token, init)
}

#[tokio::test]
async fn every_error_kind() {
    let (server, _dir) = server().await;
    let client = Client::new(&url(server.addr)).unwrap();
    let init = client.init().await.unwrap();

    let wrong = client.real_service(Credential::new(KEY_ID, Secret::new("not-the-secret-0123456789abcdef012345")));
    let error = wrong.connect(NAMESPACE, "u", &init.hash()).await.unwrap_err();
    assert!(error.is_unauthorized());
    assert_eq!(error.code(), Some("bad_signature"));
    assert!(!error.to_string().contains("not-the-secret"));

    let error = client.real_service(shop()).connect(FAR_NAMESPACE, "u", &init.hash()).await.unwrap_err();
    assert!(error.is_forbidden());
    assert_eq!(error.code(), Some("wrong_namespace"));

    let error = client.real_service(shop()).connect(NAMESPACE, "", &init.hash()).await.unwrap_err();
    assert_eq!((error.kind(), error.code()), (ErrorKind::BadRequest, Some("invalid_user_id")));

    let error = client.real_service(shop()).connect(NAMESPACE, "u", &b64(&[1; 64])).await.unwrap_err();
    assert!(error.is_not_found());
    assert_eq!(error.code(), Some("unknown_init_token"));

    let session = connected(&client, "u").await;
    let error = session.get_key().await.unwrap_err();
    assert_eq!((error.is_not_found(), error.code()), (true, Some("no_key")));
    let error = session.put_key(&vec![0; 64 * 1024 + 1], None, Condition::None).await.unwrap_err();
    assert!(error.is_too_large());

    let stranger = client.session(Secret::new("no-such-session"), &init);
    let error = stranger.get_key().await.unwrap_err();
    assert_eq!((error.is_unauthorized(), error.code()), (true, Some("unknown_session")));
}

#[tokio::test]
async fn network_errors_and_timeouts() {
    // Nothing listens on a port just released.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let client = Client::builder(&url(closed)).get_retries(0).build().unwrap();
    let error = client.init().await.unwrap_err();
    assert!(error.is_network(), "{error:?}");
    assert!(std::error::Error::source(&error).is_some());

    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let client = Client::builder(&url(addr)).timeout(Duration::from_millis(300)).build().unwrap();
    assert!(client.init().await.unwrap_err().is_timeout());
}

#[tokio::test]
async fn server_errors_and_invalid_answers() {
    for (answer, kind) in [
        ("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", ErrorKind::Server),
        ("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", ErrorKind::InvalidResponse),
    ] {
        let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = fake.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = fake.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        let error = Client::new(&url(addr)).unwrap().init().await.unwrap_err();
        assert_eq!(error.kind(), kind, "{error}");
    }
}

/// A proxy in front of `target` that drops the first `drop_first` connections.
async fn flaky_proxy(target: SocketAddr, drop_first: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            if counter.fetch_add(1, Ordering::SeqCst) < drop_first {
                drop(inbound);
                continue;
            }
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn gets_retry_after_connection_errors_but_puts_never_do() {
    let (server, _dir) = server().await;
    let direct = Client::new(&url(server.addr)).unwrap();
    let (token, init) = session_token_of(&direct, "u").await;
    direct.session(token.clone(), &init).put_key(b"k", None, Condition::None).await.unwrap();

    let (proxy, seen) = flaky_proxy(server.addr, 2).await;
    let client = Client::new(&url(proxy)).unwrap();
    let session = client.session(token.clone(), &init);
    assert_eq!(session.get_key().await.unwrap().bytes(), b"k");
    assert_eq!(seen.load(Ordering::SeqCst), 3, "two dropped connections, then success");

    let (proxy, seen) = flaky_proxy(server.addr, 1).await;
    let client = Client::new(&url(proxy)).unwrap();
    let error = client.session(token, &init).put_key(b"k2", None, Condition::None).await.unwrap_err();
    assert!(error.is_network(), "{error:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 1, "a PUT is never retried blindly");
}

/// A TLS terminator for `target` with a fresh self-signed certificate for `localhost`;
/// returns its port and the certificate's PEM.
async fn tls_front(target: SocketAddr) -> (u16, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(inbound).await else { return };
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
            });
        }
    });
    (port, cert_pem)
}

#[tokio::test]
async fn https_with_a_given_ca_bundle() {
    let (server, _dir) = server().await;
    let (port, ca) = tls_front(server.addr).await;
    let https = format!("https://localhost:{port}");
    let client = Client::builder(&https).ca_certificates_pem(ca.into_bytes()).build().unwrap();
    let session = connected(&client, "tls-user").await;
    assert_eq!(session.put_key(b"over tls", None, Condition::None).await.unwrap(), 1);
    assert_eq!(session.get_key().await.unwrap().bytes(), b"over tls");

    // A certificate no trusted CA signed is refused.
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap().cert.pem();
    let untrusting = Client::builder(&https).ca_certificates_pem(other_ca.into_bytes()).build().unwrap();
    assert!(untrusting.init().await.unwrap_err().is_network());
}

#[tokio::test]
async fn rate_limits_come_with_when_to_try_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.init_per_minute = std::num::NonZeroU32::new(1).unwrap();
    let server = TestServer::start_sled(config).await;
    let client = Client::new(&url(server.addr)).unwrap();
    client.init().await.unwrap();
    let error = client.init().await.unwrap_err();
    assert!(error.is_rate_limited(), "{error:?}");
    assert_eq!(error.code(), Some("rate_limited"));
    let wait = error.retry_after().expect("a Retry-After");
    assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(60), "{wait:?}");
}

/// Every operation of `page`'s entries as (operation, is-the-asking-session, version).
fn operations(page: &[keyservice_client::protocol::wire::AccessEntry]) -> Vec<(&str, bool, Option<u64>)> {
    page.iter().map(|e| (e.operation.as_str(), e.current_session, e.version)).collect()
}

#[tokio::test]
async fn a_device_writing_in_a_loop_is_one_history_entry_for_each_run() {
    let (server, _dir) = server().await;
    let client = Client::new(&url(server.addr)).unwrap();
    let phone = connected(&client, "cy").await;
    let laptop = connected(&client, "cy").await;
    for version in 1..=5 {
        assert_eq!(phone.put_key(b"k", None, Condition::None).await.unwrap(), version);
        phone.get_key().await.unwrap(); // Reads between writes do not end a run.
    }
    assert_eq!(laptop.put_key(b"k", None, Condition::None).await.unwrap(), 6);
    for _ in 0..2 {
        phone.put_key(b"k", None, Condition::None).await.unwrap();
    }

    let history = phone.access_history(None, None).await.unwrap();
    // Oldest first, as (this session, versions, count). The queue is written once a
    // second and a run does not reach across a write, so one run may come in two parts.
    let mut writes: Vec<_> = history
        .entries
        .iter()
        .rev()
        .filter(|e| e.operation == "key_write")
        .map(|e| {
            let last = e.version.unwrap();
            assert_eq!(e.until.is_some(), e.count > 1, "{e:?}");
            (e.current_session, e.first_version.unwrap_or(last)..=last, e.count)
        })
        .collect();
    assert!(writes.iter().all(|(_, versions, count)| versions.clone().count() as u64 == *count), "{writes:?}");
    assert!(writes.len() <= 4, "one entry for each run, or two where a write of the queue cut it: {writes:?}");
    writes.dedup_by(|later, earlier| {
        let joins = later.0 == earlier.0 && *later.1.start() == earlier.1.end() + 1;
        if joins {
            earlier.1 = *earlier.1.start()..=*later.1.end();
        }
        joins
    });
    let runs: Vec<_> = writes.into_iter().map(|(mine, versions, _)| (mine, versions)).collect();
    assert_eq!(runs, [(true, 1..=5), (false, 6..=6), (true, 7..=8)], "another session's write ends a run");
    let reads: u64 = history.entries.iter().filter(|e| e.operation == "key_read").map(|e| e.count).sum();
    assert_eq!(reads, 5, "every read is still counted");
}

#[tokio::test]
async fn the_access_history_shows_the_user_every_use_of_their_key() {
    let (server, _dir) = server().await;
    let client = Client::new(&url(server.addr)).unwrap();
    let phone = connected(&client, "ada").await;
    assert_eq!(phone.put_key(b"k1", None, Condition::None).await.unwrap(), 1);
    phone.get_key().await.unwrap();
    // Someone holding the Real Service's credential connects Ada and reads her key.
    let other = connected(&client, "ada").await;
    other.get_key_version(1).await.unwrap();
    client.real_service(shop()).export(NAMESPACE, "ada").await.unwrap();
    // Another user's activity never shows.
    let bob = connected(&client, "bob").await;
    bob.put_key(b"b", None, Condition::None).await.unwrap();

    let history = phone.access_history(None, None).await.unwrap();
    assert_eq!(history.next, None);
    assert_eq!(
        operations(&history.entries),
        [
            ("export", false, None),
            ("key_read", false, Some(1)),
            ("connect", false, None),
            ("key_read", true, Some(1)),
            ("key_write", true, Some(1)),
            ("connect", true, None),
        ]
    );
    for entry in &history.entries {
        assert_eq!(entry.address, "127.0.0.1");
        assert_eq!(entry.credential.as_deref(), Some(KEY_ID), "{entry:?}");
        assert!(entry.time.ends_with('Z') && entry.time.starts_with("20"), "{}", entry.time);
    }
    let sessions: Vec<_> = history.entries.iter().map(|e| e.session.clone()).collect();
    assert_eq!(sessions[0], None, "export is the Real Service's own call");
    assert_eq!(sessions[1], sessions[2]);
    assert_eq!(sessions[3], sessions[5]);
    assert_ne!(sessions[1], sessions[3], "two sessions are told apart");
    assert!(sessions[1].as_ref().is_some_and(|s| s.len() == 16), "{sessions:?}");

    // The other session sees the same history, marked from its side.
    let seen_by_other = other.access_history(None, None).await.unwrap();
    assert_eq!(seen_by_other.entries.iter().filter(|e| e.current_session).count(), 2);

    // Pages of two, followed to the end, give the same entries.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = phone.access_history(Some(2), before.as_deref()).await.unwrap();
        assert!(page.entries.len() <= 2);
        paged.extend(page.entries);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, history.entries);

    // Bob's history is Bob's alone.
    let bobs = bob.access_history(None, None).await.unwrap();
    assert_eq!(operations(&bobs.entries), [("key_write", true, Some(1)), ("connect", true, None)]);

    // Logging out and deleting the key are on record too.
    other.logout().await.unwrap();
    phone.delete_key().await.unwrap();
    let latest = phone.access_history(Some(2), None).await.unwrap();
    assert_eq!(operations(&latest.entries), [("key_delete", true, None), ("logout", false, None)]);

    // Erasure destroys the history with everything else.
    let receipt = client.real_service(shop()).erase(NAMESPACE, "ada").await.unwrap();
    assert_eq!(receipt.access_records_destroyed, 8);
    let again = connected(&client, "ada").await;
    let fresh = again.access_history(None, None).await.unwrap();
    assert_eq!(operations(&fresh.entries), [("connect", true, None)]);
    server.stop().await;
}

#[tokio::test]
async fn access_history_queries_are_checked() {
    let (server, _dir) = server().await;
    let client = Client::new(&url(server.addr)).unwrap();
    let session = connected(&client, "q").await;
    for (limit, before) in [(Some(0), None), (Some(501), None), (None, Some("abcd")), (None, Some("x"))] {
        let error = session.access_history(limit, before).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::BadRequest, "{limit:?} {before:?}");
    }
    let error = session.access_history(Some(0), None).await.unwrap_err();
    assert_eq!(error.code(), Some("bad_query"));
    // Reads in a loop are counted, not listed one by one: every read is in a count.
    session.put_key(b"k", None, Condition::None).await.unwrap();
    for _ in 0..20 {
        session.get_key().await.unwrap();
    }
    let page = session.access_history(None, None).await.unwrap();
    let reads: Vec<_> = page.entries.iter().filter(|e| e.operation == "key_read").collect();
    assert_eq!(reads.iter().map(|e| e.count).sum::<u64>(), 20);
    assert!(reads.len() < 20, "each read got its own entry");
    assert!(reads.iter().all(|e| (e.count > 1) == e.until.is_some()), "{reads:?}");
    // An unsigned request, or one with a wrong secret, learns nothing.
    let reply = send(server.addr, "GET", "/key/history", &[], b"").await;
    reply.expect(401, "missing_authorization");
    assert!(session.access_history(Some(500), None).await.unwrap().entries.len() >= 3);
    server.stop().await;
}

#[tokio::test]
async fn what_the_server_keeps_opened_never_outlives_a_logout_a_delete_or_an_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let client = Client::new(&url(server.addr)).unwrap();
    let session = connected(&client, "cache").await;
    session.put_key(b"first", None, Condition::None).await.unwrap();
    session.get_key().await.unwrap();
    // The latest version is kept after a read; a PUT must replace it at once.
    session.put_key(b"first, rewritten", None, Condition::None).await.unwrap();
    let latest = session.get_key().await.unwrap();
    assert_eq!((latest.bytes(), latest.version), (&b"first, rewritten"[..], 2));
    // DELETE /key, then a new key: it must be sealed under a new user key that is on
    // disk, not under the one the server had opened before the deletion.
    session.delete_key().await.unwrap();
    assert_eq!(session.get_key().await.unwrap_err().code(), Some("no_key"));
    session.put_key(b"second", None, Condition::None).await.unwrap();
    assert_eq!(session.get_key().await.unwrap().bytes(), b"second");
    // A second session of the same user, used (so opened and kept), then erased.
    let other = connected(&client, "cache").await;
    other.get_key().await.unwrap();
    session.logout().await.unwrap();
    assert_eq!(session.get_key().await.unwrap_err().kind(), ErrorKind::Unauthorized);
    other.get_key().await.unwrap();
    let third = connected(&client, "cache").await;
    third.put_key(b"third", None, Condition::None).await.unwrap();
    server.stop().await;

    // After a restart nothing is held in memory: what was written reads back from disk.
    let server = TestServer::start_sled(config(dir.path())).await;
    let client = Client::new(&url(server.addr)).unwrap();
    let after = connected(&client, "cache").await;
    assert_eq!(after.get_key().await.unwrap().bytes(), b"third");
    client.real_service(shop()).erase(NAMESPACE, "cache").await.unwrap();
    assert_eq!(after.get_key().await.unwrap_err().kind(), ErrorKind::Unauthorized);
    let reborn = connected(&client, "cache").await;
    assert_eq!(reborn.get_key().await.unwrap_err().code(), Some("no_key"), "an erased key was still served");
    server.stop().await;
}

#[tokio::test]
async fn accesses_queued_when_the_server_stops_are_written_before_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    let client = Client::new(&url(server.addr)).unwrap();
    let session = connected(&client, "stopper").await;
    session.put_key(b"k", None, Condition::None).await.unwrap();
    session.get_key().await.unwrap();
    // Well within the one-second flush interval: these are still queued.
    server.stop().await;

    let server = TestServer::start_sled(config(dir.path())).await;
    let client = Client::new(&url(server.addr)).unwrap();
    let again = connected(&client, "stopper").await;
    let history = again.access_history(None, None).await.unwrap();
    let operations: Vec<&str> = history.entries.iter().map(|e| e.operation.as_str()).collect();
    assert_eq!(operations, ["connect", "key_read", "key_write", "connect"]);
    server.stop().await;
}
