//! CORS: browsers may call the device's routes from configured origins only, and never
//! the Real Service's.

mod support;

use support::*;

const APP: &str = "https://app.example.com";

async fn server() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.cors_origins = vec![APP.to_owned()];
    (TestServer::start_sled(config).await, dir)
}

fn preflight(origin: &str, method: &str) -> Vec<(&'static str, String)> {
    vec![
        ("origin", origin.to_owned()),
        ("access-control-request-method", method.to_owned()),
        ("access-control-request-headers", "authorization, x-date, content-type, if-match".to_owned()),
    ]
}

#[tokio::test]
async fn preflights_for_device_routes_from_configured_origins() {
    let (server, _dir) = server().await;
    for (path, method) in [("/init", "POST"), ("/key", "PUT"), ("/key", "GET"), ("/session", "DELETE")] {
        let reply = send(server.addr, "OPTIONS", path, &preflight(APP, method), b"").await;
        assert_eq!(reply.status, 204, "{path} {method}");
        assert_eq!(reply.header("access-control-allow-origin"), APP);
        let headers = reply.header("access-control-allow-headers").to_ascii_lowercase();
        for needed in ["authorization", "x-date", "content-type", "if-match", "if-none-match"] {
            assert!(headers.contains(needed), "{needed} in {headers}");
        }
        assert!(reply.header("access-control-allow-methods").contains(method));
    }
}

#[tokio::test]
async fn other_origins_and_real_service_routes_are_refused() {
    let (server, _dir) = server().await;
    send(server.addr, "OPTIONS", "/key", &preflight("https://evil.example", "GET"), b"")
        .await
        .expect(403, "cors_not_allowed");
    for path in ["/connect", "/erase", "/export"] {
        let reply = send(server.addr, "OPTIONS", path, &preflight(APP, "POST"), b"").await;
        reply.expect(403, "cors_not_allowed");
        assert!(!reply.headers.contains_key("access-control-allow-origin"));
    }
    send(server.addr, "OPTIONS", "/key", &preflight(APP, "PATCH"), b"").await.expect(403, "cors_not_allowed");
    // An actual browser call to /connect is refused too, signed or not.
    let token = init(server.addr).await;
    let body = connect_body(NAMESPACE, "u", &token);
    let headers = [("content-type", "application/json".to_owned()), ("origin", APP.to_owned())];
    signed(server.addr, KEY_ID, SECRET, "POST", "/connect", &body, &headers).await.expect(403, "cors_not_allowed");
}

#[tokio::test]
async fn device_answers_expose_what_a_browser_client_needs() {
    let (server, _dir) = server().await;
    let reply = send(server.addr, "POST", "/init", &[("origin", APP.to_owned())], b"").await;
    assert_eq!(reply.header("access-control-allow-origin"), APP);
    let exposed = reply.header("access-control-expose-headers");
    assert!(exposed.contains("ETag") && exposed.contains("Date"), "{exposed}");
    let device = device(server.addr, "u").await;
    // A browser signs with X-Date; the answer carries the CORS headers.
    let reply = device.request("PUT", "/key", b"k", &[("origin", APP.to_owned())]).await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("access-control-allow-origin"), APP);
    let stranger = send(server.addr, "POST", "/init", &[("origin", "https://evil.example".to_owned())], b"").await;
    assert!(!stranger.headers.contains_key("access-control-allow-origin"));
}

/// A page on any site can make its visitor's browser send a "simple" `POST /init` (no
/// preflight; the browser only hides the answer). From an origin not configured it is
/// refused before it issues a token or spends the visitor network's `/init` budget;
/// clients that are not browsers send no `Origin` and are served as before.
#[tokio::test]
async fn a_simple_request_from_an_origin_not_configured_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.cors_origins = vec![APP.to_owned()];
    config.init_per_minute = std::num::NonZeroU32::new(2).unwrap();
    let server = TestServer::start_sled(config).await;
    let simple = [("origin", "https://evil.example".to_owned()), ("content-type", "text/plain".to_owned())];
    for _ in 0..5 {
        let reply = send(server.addr, "POST", "/init", &simple, b"").await;
        reply.expect(403, "cors_not_allowed");
        assert!(!reply.headers.contains_key("access-control-allow-origin"));
    }
    assert_eq!(server.store.counts().await.unwrap().pending_inits, 0, "no init was issued");
    // The budget of 2 is whole: the configured origin and a non-browser client each get one.
    let reply = send(server.addr, "POST", "/init", &[("origin", APP.to_owned())], b"").await;
    reply.expect_status(200);
    assert_eq!(reply.header("access-control-allow-origin"), APP);
    send(server.addr, "POST", "/init", &[], b"").await.expect_status(200);
    send(server.addr, "POST", "/init", &[], b"").await.expect(429, "rate_limited");
}
