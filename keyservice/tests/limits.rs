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

fn from(client: &str) -> Vec<(&'static str, String)> {
    vec![("x-forwarded-for", client.to_owned())]
}

#[tokio::test]
async fn init_has_a_budget_per_client_address() {
    let (server, _dir) = server_with(|config| {
        config.init_per_minute = NonZeroU32::new(3).unwrap();
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for _ in 0..3 {
        assert_eq!(send(server.addr, "POST", "/init", &from("198.51.100.1"), b"").await.status, 200);
    }
    let refused = send(server.addr, "POST", "/init", &from("198.51.100.1"), b"").await;
    refused.expect(429, "rate_limited");
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(send(server.addr, "POST", "/init", &from("198.51.100.2"), b"").await.status, 200, "another client");
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
async fn failed_authentications_block_that_client_for_a_while() {
    let (server, _dir) = server_with(|config| {
        config.auth_failures_per_minute = NonZeroU32::new(2).unwrap();
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let device = device(server.addr, "u").await;
    let attacker = from("203.0.113.66");
    for _ in 0..3 {
        signed(server.addr, device.session_token.expose(), "guess", "GET", "/key", b"", &attacker)
            .await
            .expect(401, "bad_signature");
    }
    // Now even a correctly signed request from that address waits.
    let blocked =
        signed(server.addr, device.session_token.expose(), device.init_token.expose(), "GET", "/key", b"", &attacker)
            .await;
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
    assert!(metrics.contains("keyservice_connect_budget_exceeded_total{namespace=\"shop\"} 1"), "{metrics}");
    server.stop().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"connect_budget_exceeded\""), "{audit}");
}
