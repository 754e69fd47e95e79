//! Proxy trust over real sockets: a reverse proxy on loopback in front of the server,
//! appending or overwriting the one header it is configured to write. The Real Service
//! sits at 127.0.0.9, the only address its namespace allows; the attacker elsewhere.

mod support;

use std::net::IpAddr;
use std::num::NonZeroU32;

use keyservice::proxy::{ForwardedHeader, ProxyTrust};
use support::proxy::Mode;
use support::*;

const REAL_SERVICE: &str = "127.0.0.9";
const ATTACKER: &str = "127.0.5.66";

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

async fn behind(header: ForwardedHeader, hops: usize) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.proxies = ProxyTrust { trusted: vec!["127.0.0.1/32".parse().unwrap()], header: Some(header), hops };
    config.auth_failures_per_minute = NonZeroU32::new(3).unwrap();
    let shop = config.namespaces.get_mut(NAMESPACE).unwrap();
    // The proxy's own address is allowed too: a chain that fell back to it would pass.
    shop.allow = vec![format!("{REAL_SERVICE}/32").parse().unwrap(), "127.0.0.1/32".parse().unwrap()];
    (TestServer::start_sled(config).await, dir)
}

/// A signed /connect for a fresh init, from `source` through `addr`, with `extra` headers.
async fn connect_from(
    server: &TestServer,
    addr: std::net::SocketAddr,
    source: &str,
    secret: &str,
    extra: &[(&'static str, String)],
) -> Reply {
    // The device asks for its init directly, from an address no proxy is trusted at.
    let reply = send_from(ip("127.0.0.2"), server.addr, "POST", "/init", &[], b"").await;
    let token = reply.json::<keyservice_client::protocol::wire::InitResponse>().init_token;
    let body = connect_body(NAMESPACE, "alice", &token);
    let mut headers = signed_headers(KEY_ID, secret, "POST", "/connect", &body, &http_date(0));
    headers.push(("content-type", "application/json".to_owned()));
    headers.extend(extra.iter().cloned());
    send_from(ip(source), addr, "POST", "/connect", &headers, &body).await
}

/// Every header a client might forge to claim the Real Service's address.
fn forged() -> Vec<(&'static str, String)> {
    vec![
        ("forwarded", format!("for={REAL_SERVICE}")),
        ("x-forwarded-for", REAL_SERVICE.to_owned()),
        ("x-real-ip", REAL_SERVICE.to_owned()),
    ]
}

async fn a_forged_address_is_never_believed(header: ForwardedHeader, mode: Mode) {
    let (server, dir) = behind(header, 1).await;
    let proxy = proxy::start(server.addr, mode).await;
    // With the stolen credential, the attacker's forged headers do not pass the allowlist.
    connect_from(&server, proxy.addr, ATTACKER, SECRET, &forged()).await.expect(403, "ip_not_allowed");
    // Bad signatures "from" the Real Service's address count against the attacker.
    for _ in 0..5 {
        let reply = connect_from(&server, proxy.addr, ATTACKER, "not-the-secret-0123456789abcdef01", &forged()).await;
        assert!(matches!(reply.status.as_u16(), 401 | 403 | 429), "{:?}", reply.status);
    }
    // The Real Service is served, not locked out.
    let real = connect_from(&server, proxy.addr, REAL_SERVICE, SECRET, &[]).await;
    assert_eq!(real.status, 200, "{}", String::from_utf8_lossy(&real.body));
    server.stop().await;
    // The audit trail names the address the proxy saw (or, on a summary of repeated
    // refusals, its network), never the forged one.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let denied: Vec<&str> = audit.lines().filter(|l| l.contains("\"outcome\":\"denied\"")).collect();
    assert!(!denied.is_empty());
    for line in denied {
        let network = "\"clientIp\":\"127.0.5.0/24\"";
        assert!(line.contains(&format!("\"clientIp\":\"{ATTACKER}\"")) || line.contains(network), "{line}");
    }
}

#[tokio::test]
async fn an_appending_xff_proxy_ignores_forged_headers() {
    a_forged_address_is_never_believed(ForwardedHeader::XForwardedFor, Mode::AppendXff).await;
}

#[tokio::test]
async fn an_overwriting_xff_proxy_ignores_forged_headers() {
    a_forged_address_is_never_believed(ForwardedHeader::XForwardedFor, Mode::OverwriteXff).await;
}

#[tokio::test]
async fn an_appending_forwarded_proxy_ignores_forged_headers() {
    a_forged_address_is_never_believed(ForwardedHeader::Forwarded, Mode::AppendForwarded).await;
}

#[tokio::test]
async fn an_overwriting_forwarded_proxy_ignores_forged_headers() {
    a_forged_address_is_never_believed(ForwardedHeader::Forwarded, Mode::OverwriteForwarded).await;
}

#[tokio::test]
async fn an_unusable_chain_from_the_proxy_never_counts_as_the_proxy() {
    let (server, _dir) = behind(ForwardedHeader::XForwardedFor, 1).await;
    // Straight from the trusted peer (127.0.0.1, which the namespace allows), with
    // chains that name nobody: refused before any check, never admitted as the proxy.
    for chain in [None, Some(""), Some("garbage"), Some("unknown"), Some("_hidden"), Some("127.0.0.9, ")] {
        let extra: Vec<(&'static str, String)> = chain.map(|c| ("x-forwarded-for", c.to_owned())).into_iter().collect();
        let reply = connect_from(&server, server.addr, "127.0.0.1", SECRET, &extra).await;
        reply.expect(400, "unusable_forwarded_chain");
    }
    // The header the proxies do not write is ignored, even when it is the only one.
    let other = vec![("forwarded", format!("for={REAL_SERVICE}"))];
    connect_from(&server, server.addr, "127.0.0.1", SECRET, &other).await.expect(400, "unusable_forwarded_chain");
    // Health checks from the proxy itself carry no chain and still work.
    assert_eq!(send(server.addr, "GET", "/healthz", &[], b"").await.status, 200);
    assert_eq!(send(server.addr, "GET", "/readyz", &[], b"").await.status, 200);
}

#[tokio::test]
async fn two_trusted_hops_take_the_address_the_outer_proxy_saw() {
    let (server, _dir) = behind(ForwardedHeader::XForwardedFor, 2).await;
    let inner = proxy::start(server.addr, Mode::AppendXff).await;
    let outer = proxy::start(inner.addr, Mode::AppendXff).await;
    // Through both: the client is the hop the outer proxy appended.
    connect_from(&server, outer.addr, ATTACKER, SECRET, &forged()).await.expect(403, "ip_not_allowed");
    let real = connect_from(&server, outer.addr, REAL_SERVICE, SECRET, &[]).await;
    assert_eq!(real.status, 200, "{}", String::from_utf8_lossy(&real.body));
    // Through the inner one only, the chain is one hop short: nobody.
    connect_from(&server, inner.addr, REAL_SERVICE, SECRET, &[]).await.expect(400, "unusable_forwarded_chain");
}

#[tokio::test]
async fn an_untrusted_peer_is_the_client_whatever_it_sends() {
    let (server, _dir) = behind(ForwardedHeader::XForwardedFor, 1).await;
    // Not through the proxy, not from 127.0.0.1: the headers mean nothing.
    connect_from(&server, server.addr, ATTACKER, SECRET, &forged()).await.expect(403, "ip_not_allowed");
    let real = connect_from(&server, server.addr, REAL_SERVICE, SECRET, &forged()).await;
    assert_eq!(real.status, 200, "{}", String::from_utf8_lossy(&real.body));
}
