//! Abuse limits over HTTP: /init budgets and the pending cap, failed-authentication
//! budgets per client address, and a namespace's connect budget.

mod support;

use std::num::NonZeroU32;

use support::*;

async fn server_with(configure: impl FnOnce(&mut keyservice::Config)) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    configure(&mut config);
    (TestServer::start_sled(config).await, dir)
}

fn ip(text: &str) -> Option<std::net::IpAddr> {
    Some(text.parse().unwrap())
}

#[tokio::test]
async fn init_has_a_budget_per_client_network_through_an_appending_proxy() {
    let (server, _dir) = server_with(|config| {
        config.init_per_minute = NonZeroU32::new(3).unwrap();
        config.proxies = loopback_proxy();
    })
    .await;
    let proxy = proxy::start(server.addr, proxy::Mode::AppendXff).await;
    // The client rotates the forwarded value it sends, and its address in its /24: the
    // proxy appends its real address, which is what counts.
    for n in 0..3 {
        let forged = vec![("x-forwarded-for", format!("198.51.100.{n}"))];
        let source = ip(&format!("127.0.7.{}", n + 1));
        assert_eq!(send_from(source, proxy.addr, "POST", "/init", &forged, b"").await.status, 200);
    }
    let forged = vec![("x-forwarded-for", "198.51.100.99".to_owned())];
    let refused = send_from(ip("127.0.7.200"), proxy.addr, "POST", "/init", &forged, b"").await;
    refused.expect(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    let other = send_from(ip("127.0.8.1"), proxy.addr, "POST", "/init", &[], b"").await;
    assert_eq!(other.status, 200, "another network has its own budget");
    let metrics = String::from_utf8_lossy(&send(server.addr, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert!(metrics.contains("keyservice_rate_limited_total{limit=\"init\"} 1"), "{metrics}");
}

#[tokio::test]
async fn pending_inits_are_capped_without_evicting_live_ones() {
    let (server, _dir) = server_with(|config| config.max_pending_inits = 2).await;
    let first = init(server.addr).await;
    init(server.addr).await;
    let full = send(server.addr, "POST", "/init", &[], b"").await;
    full.expect(503, "too_many_pending_inits");
    assert!(full.headers.contains_key("retry-after"));
    // The live tokens still work; redeeming one frees a place.
    assert_eq!(connect_raw(server.addr, &connect_body(NAMESPACE, "u", &first)).await.status, 200);
    assert_eq!(send(server.addr, "POST", "/init", &[], b"").await.status, 200);
}

#[tokio::test]
async fn failed_authentications_block_that_client_network_for_a_while() {
    let (server, _dir) = server_with(|config| {
        config.auth_failures_per_minute = NonZeroU32::new(2).unwrap();
        config.proxies = loopback_proxy();
        // An allowlisted address is judged alone; the devices here are not allowlisted.
        config.namespaces.get_mut(NAMESPACE).unwrap().allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let proxy = proxy::start(server.addr, proxy::Mode::AppendXff).await;
    let device = device(proxy.addr, "u").await;
    let signed_from = |source: &str, secret: &str| {
        let headers = signed_headers(device.session_token.expose(), secret, "GET", "/key", b"", &http_date(0));
        let source = ip(source);
        let addr = proxy.addr;
        async move { send_from(source, addr, "GET", "/key", &headers, b"").await }
    };
    for n in 0..3 {
        signed_from(&format!("127.0.9.{n}"), "guess").await.expect(401, "bad_signature");
    }
    // Now even a correctly signed request from that network waits.
    let blocked = signed_from("127.0.9.77", device.init_token.expose()).await;
    blocked.expect(429, "rate_limited");
    assert!(blocked.headers.contains_key("retry-after"));
    // Everyone else is unaffected.
    device.get("/key").await.expect(404, "no_key");
}

#[tokio::test]
async fn a_namespace_cannot_harvest_user_after_user() {
    let (server, dir) = server_with(|config| {
        let shop = config.namespaces.get_mut(NAMESPACE).unwrap();
        shop.connect_budget.users_per_window = 2;
    })
    .await;
    device(server.addr, "alice").await;
    device(server.addr, "bob").await;
    device(server.addr, "alice").await; // A user already seen is fine.
    let token = init(server.addr).await;
    let refused = connect_raw(server.addr, &connect_body(NAMESPACE, "carol", &token)).await;
    refused.expect(429, "connect_budget_exceeded");
    assert!(refused.headers.contains_key("retry-after"));
    // The token was not consumed by the refusal.
    let metrics = String::from_utf8_lossy(&send(server.addr, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert!(metrics.contains("keyservice_connect_budget_exceeded_total 1"), "{metrics}");
    assert!(!metrics.contains(NAMESPACE), "namespace names stay off the main listener: {metrics}");
    server.stop().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"connect_budget_exceeded\""), "{audit}");
}

#[tokio::test]
async fn a_full_pending_cap_is_taken_from_the_network_holding_the_most() {
    let (server, _dir) = server_with(|config| config.max_pending_inits = 3).await;
    let init_from = |source: &str| {
        let source = ip(source);
        let addr = server.addr;
        async move { send_from(source, addr, "POST", "/init", &[], b"").await }
    };
    // One network rotating its addresses takes every place.
    let mut hoarded = Vec::new();
    for n in 1..=3 {
        let reply = init_from(&format!("127.0.7.{n}")).await;
        assert_eq!(reply.status, 200);
        hoarded.push(reply.json::<keyservice_client::protocol::wire::InitResponse>().init_token);
    }
    init_from("127.0.7.9").await.expect(503, "too_many_pending_inits");
    // Anyone else still gets a token, at the hoarder's expense (its oldest first).
    let fair = init_from("127.0.8.1").await;
    assert_eq!(fair.status, 200);
    let token = fair.json::<keyservice_client::protocol::wire::InitResponse>().init_token;
    connect_raw(server.addr, &connect_body(NAMESPACE, "u1", &hoarded[0])).await.expect(404, "unknown_init_token");
    assert_eq!(connect_raw(server.addr, &connect_body(NAMESPACE, "u2", &hoarded[1])).await.status, 200);
    assert_eq!(connect_raw(server.addr, &connect_body(NAMESPACE, "u3", &token)).await.status, 200);
}
