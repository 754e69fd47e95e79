//! Independent identity on /connect and /erase: a namespace configured with an identity
//! provider accepts only an ID token that provider signed for the same user and this
//! device's init (or, for an erasure, for this erasure, fresh, once); every way a token
//! can be wrong has its own error, a refusal spends nothing, and floods of refusals are
//! budgeted and share audit lines without locking the Real Service out.

#[path = "support/binary.rs"]
mod binary;
mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyservice_client::protocol::wire::{ConnectResponse, erase_nonce, init_token_hash};
use support::*;

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "shop-web";

/// A test identity provider: a P-256 key and its JWKS.
struct IdentityProvider {
    key: EncodingKey,
    jwk: serde_json::Value,
}

impl IdentityProvider {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        });
        Self { key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(), jwk }
    }

    fn token(&self, kid: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn claims(user: &str, nonce: &str) -> serde_json::Value {
    let now = unix_now();
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": user, "nonce": nonce,
        "iat": now, "nbf": now - 5, "exp": now + 300,
    })
}

fn with(mut claims: serde_json::Value, field: &str, value: serde_json::Value) -> serde_json::Value {
    claims[field] = value;
    claims
}

/// The test configuration with `shop` (allowing `allow`, plus `extra` namespace
/// settings) requiring ID tokens from `idp`.
fn oidc_config(dir: &std::path::Path, idp: &IdentityProvider, allow: &str, extra: &str) -> keyservice::Config {
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [idp.jwk] }).to_string()).unwrap();
    let text = format!(
        "{}{extra}[namespaces.{NAMESPACE}.oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = {:?}\n",
        shop_toml(allow),
        jwks.display().to_string()
    );
    let file_config = keyservice::Config::from_toml(&text, |_| None).unwrap();
    let mut config = config(dir);
    config.namespaces.insert(NAMESPACE.into(), file_config.namespaces[NAMESPACE].clone());
    config
}

async fn connect(addr: std::net::SocketAddr, user: &str, hash: &str, id_token: Option<&str>) -> Reply {
    let mut body = serde_json::json!({ "namespace": NAMESPACE, "userId": user, "initTokenHash": hash });
    if let Some(token) = id_token {
        body["idToken"] = token.into();
    }
    connect_raw(addr, body.to_string().as_bytes()).await
}

#[tokio::test]
async fn only_a_token_the_provider_signed_for_this_user_and_init_connects() {
    let dir = tempfile::tempdir().unwrap();
    let idp = IdentityProvider::new("idp-1");
    let server = TestServer::start_sled(oidc_config(dir.path(), &idp, "127.0.0.0/8", "")).await;

    let token = init(server.addr).await;
    let hash = init_token_hash(&token);
    let other_init = init_token_hash(&init(server.addr).await);
    let impostor = IdentityProvider::new("idp-1");
    let now = unix_now() as i64;
    let cases: Vec<(&str, Option<String>)> = vec![
        ("id_token_required", None),
        ("id_token_malformed", Some("not.a.jwt".to_owned())),
        ("id_token_unknown_key", Some(idp.token("idp-2", claims("alice", &hash)))),
        ("id_token_bad_signature", Some(impostor.token("idp-1", claims("alice", &hash)))),
        ("id_token_expired", Some(idp.token("idp-1", with(claims("alice", &hash), "exp", (now - 120).into())))),
        ("id_token_not_yet_valid", Some(idp.token("idp-1", with(claims("alice", &hash), "nbf", (now + 600).into())))),
        ("id_token_wrong_issuer", Some(idp.token("idp-1", with(claims("alice", &hash), "iss", "https://evil".into())))),
        ("id_token_wrong_audience", Some(idp.token("idp-1", with(claims("alice", &hash), "aud", "other".into())))),
        // A token minted for another init cannot be replayed for this one.
        ("id_token_nonce_mismatch", Some(idp.token("idp-1", claims("alice", &other_init)))),
        ("id_token_user_mismatch", Some(idp.token("idp-1", claims("mallory", &hash)))),
        // HMAC keyed with the provider's public key (the classic algorithm confusion).
        ("id_token_algorithm_not_allowed", Some(hmac_token(&idp, &hash))),
    ];
    for (code, id_token) in cases {
        let reply = connect(server.addr, "alice", &hash, id_token.as_deref()).await;
        reply.expect(401, code);
    }

    // Nothing was spent by the refusals: the right token connects this very init.
    let good = idp.token("idp-1", claims("alice", &hash));
    let reply = connect(server.addr, "alice", &hash, Some(&good)).await;
    reply.expect_status(200);
    // And the same token cannot connect another init (its nonce binds it).
    connect(server.addr, "alice", &other_init, Some(&good)).await.expect(401, "id_token_nonce_mismatch");

    // A Real Service scripted with keyservice-cli passes the token from a file (or
    // KEYSERVICE_ID_TOKEN), never on the command line.
    let cli_hash = init_token_hash(&init(server.addr).await);
    let token_file = dir.path().join("id-token");
    std::fs::write(&token_file, idp.token("idp-1", claims("alice", &cli_hash))).unwrap();
    let url = format!("http://{}", server.addr);
    let cli = |id_token: Option<std::path::PathBuf>| {
        let mut command = std::process::Command::new(binary::cli_bin());
        command.args(["--url", &url, "--allow-http", "connect", "--namespace", NAMESPACE, "--key-id", KEY_ID]);
        command.args(["--user-id", "alice", "--init-token-hash", &cli_hash]);
        if let Some(path) = id_token {
            command.arg("--id-token-file").arg(path);
        }
        command.env("KEYSERVICE_SECRET", SECRET).env_remove("KEYSERVICE_ID_TOKEN");
        // On a blocking thread: the server answers on this test's runtime.
        async move { tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap() }
    };
    let refused = cli(None).await;
    assert_eq!(refused.status.code(), Some(3), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("id_token_required"));
    let connected = cli(Some(token_file)).await;
    assert_eq!(connected.status.code(), Some(0), "{}", String::from_utf8_lossy(&connected.stderr));
    assert_eq!(String::from_utf8_lossy(&connected.stdout).trim().len(), 43, "a session token");

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("id_token_user_mismatch"), "refusals are audited");
    assert!(!audit.contains(&good), "a token reached the audit log");
}

fn hmac_token(idp: &IdentityProvider, hash: &str) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("idp-1".to_owned());
    let secret = idp.jwk.to_string();
    jsonwebtoken::encode(&header, &claims("alice", hash), &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[test]
fn oidc_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::json!({ "keys": [IdentityProvider::new("k").jwk] }).to_string()).unwrap();
    let parse = |oidc: &str| {
        let text = format!("{}[namespaces.{NAMESPACE}.oidc]\n{oidc}", shop_toml("127.0.0.0/8"));
        keyservice::Config::from_toml(&text, |_| None).err().map(|e| e.to_string())
    };
    let base =
        format!("issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = {:?}\n", jwks.display().to_string());
    assert_eq!(parse(&base), None);
    let hmac = parse(&format!("{base}algorithms = [\"HS256\"]\n")).unwrap();
    assert!(hmac.contains("algorithms") && hmac.contains("HMAC"), "{hmac}");
    std::fs::write(&jwks, "{\"keys\": []}").unwrap();
    assert!(parse(&base).unwrap().contains("holds no key"));
    std::fs::write(&jwks, "not json").unwrap();
    assert!(parse(&base).unwrap().contains("is not a JWKS"));
    let missing = parse(&format!("issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n")).unwrap();
    assert!(missing.contains("jwks_file or jwks_url"), "{missing}");
    let plain =
        parse(&format!("issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"http://idp.example/jwks\"\n"));
    assert!(plain.unwrap().contains("https://"), "plain http to a remote provider was accepted");
    std::fs::write(&jwks, serde_json::json!({ "keys": [IdentityProvider::new("k").jwk] }).to_string()).unwrap();
    let max_age = parse(&format!("{base}erase_max_age_secs = 7200\n")).unwrap();
    assert!(max_age.contains("erase_max_age_secs") && max_age.contains("3600"), "{max_age}");
    let budget = format!("{}id_token_failures_per_minute = 0\n", shop_toml("127.0.0.0/8"));
    let zero = keyservice::Config::from_toml(&budget, |_| None).unwrap_err().to_string();
    assert!(zero.contains("id_token_failures_per_minute"), "{zero}");
}

/// A JWKS endpoint on loopback: serves whatever it is set to, counts its fetches.
struct JwksEndpoint {
    url: String,
    document: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksEndpoint {
    async fn start(document: String) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let document = std::sync::Arc::new(std::sync::Mutex::new(document));
        let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counted) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = served.lock().unwrap().clone();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            }
        });
        Self { url, document, fetches, task }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn keys_fetched_from_the_provider_follow_its_rotation_without_hammering_it() {
    let first = IdentityProvider::new("k1");
    let second = IdentityProvider::new("k2");
    let endpoint = JwksEndpoint::start(serde_json::json!({ "keys": [first.jwk] }).to_string()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[namespaces.{NAMESPACE}.oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{}\"\nrefetch_secs = 2\n",
        shop_toml("127.0.0.0/8"),
        endpoint.url
    );
    let file_config = keyservice::Config::from_toml(&text, |_| None).unwrap();
    let mut config = config(dir.path());
    config.namespaces.insert(NAMESPACE.into(), file_config.namespaces[NAMESPACE].clone());
    let server = TestServer::start_sled(config).await;
    let connect_as = |idp: &IdentityProvider, kid: &str, hash: &str| idp.token(kid, claims("alice", hash));

    // Fetched at the first /connect.
    let hash = init_token_hash(&init(server.addr).await);
    connect(server.addr, "alice", &hash, Some(&connect_as(&first, "k1", &hash))).await.expect_status(200);
    assert_eq!(endpoint.fetches(), 1);

    // Made-up key ids do not make keyservice fetch again and again.
    for n in 0..10 {
        let hash = init_token_hash(&init(server.addr).await);
        let token = connect_as(&first, &format!("forged-{n}"), &hash);
        connect(server.addr, "alice", &hash, Some(&token)).await.expect(401, "id_token_unknown_key");
    }
    assert!(endpoint.fetches() <= 2, "{} fetches for 10 unknown key ids", endpoint.fetches());

    // The provider rotates to a new key: once the refetch interval has passed, a token
    // signed with it works, and the old key is gone.
    *endpoint.document.lock().unwrap() = serde_json::json!({ "keys": [second.jwk] }).to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let hash = init_token_hash(&init(server.addr).await);
    connect(server.addr, "alice", &hash, Some(&connect_as(&second, "k2", &hash))).await.expect_status(200);
    let hash = init_token_hash(&init(server.addr).await);
    connect(server.addr, "alice", &hash, Some(&connect_as(&first, "k1", &hash)))
        .await
        .expect(401, "id_token_unknown_key");

    // The provider goes away: the keys last fetched stay in use.
    endpoint.task.abort();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let hash = init_token_hash(&init(server.addr).await);
    connect(server.addr, "alice", &hash, Some(&connect_as(&second, "k2", &hash))).await.expect_status(200);
}

/// `POST /erase` as the `shop` Real Service, with `id_token` when given.
async fn erase(addr: std::net::SocketAddr, user: &str, id_token: Option<&str>) -> Reply {
    let mut body = serde_json::json!({ "namespace": NAMESPACE, "userId": user });
    if let Some(token) = id_token {
        body["idToken"] = token.into();
    }
    let body = body.to_string();
    signed(addr, KEY_ID, SECRET, "POST", "/erase", body.as_bytes(), &[("content-type", "application/json".into())])
        .await
}

/// A device of `user` connected with a login token from `idp`, holding one key version.
async fn device_with_key(addr: std::net::SocketAddr, idp: &IdentityProvider, user: &str) -> Device {
    let init_token = init(addr).await;
    let hash = init_token_hash(&init_token);
    let reply = connect(addr, user, &hash, Some(&idp.token("idp-1", claims(user, &hash)))).await;
    reply.expect_status(200);
    let device = Device { addr, session_token: reply.json::<ConnectResponse>().session_token, init_token };
    device.put(b"the user's data key", &[]).await.expect_status(201);
    device
}

#[tokio::test]
async fn an_erasure_needs_the_users_fresh_single_use_consent_at_the_identity_provider() {
    let dir = tempfile::tempdir().unwrap();
    let idp = IdentityProvider::new("idp-1");
    let config = oidc_config(dir.path(), &idp, "127.0.0.0/8", "");
    let server = TestServer::start_sled(config.clone()).await;
    let alice = device_with_key(server.addr, &idp, "alice").await;
    let nonce = erase_nonce(NAMESPACE, "alice");
    let now = unix_now() as i64;
    let login_hash = init_token_hash(&alice.init_token);

    // The stolen credential alone, or with any token not minted for this erasure, erases
    // nothing.
    let refused: Vec<(&str, Option<String>)> = vec![
        ("id_token_required", None),
        // A token from the user's login (its nonce is the initTokenHash) is not consent
        // to erase.
        ("id_token_nonce_mismatch", Some(idp.token("idp-1", claims("alice", &login_hash)))),
        ("id_token_nonce_mismatch", Some(idp.token("idp-1", claims("alice", &erase_nonce("other", "alice"))))),
        ("id_token_nonce_mismatch", Some(idp.token("idp-1", claims("alice", &erase_nonce(NAMESPACE, "bob"))))),
        ("id_token_user_mismatch", Some(idp.token("idp-1", claims("mallory", &nonce)))),
        ("id_token_too_old", Some(idp.token("idp-1", with(claims("alice", &nonce), "iat", (now - 3600).into())))),
        ("id_token_too_old", Some(idp.token("idp-1", without(claims("alice", &nonce), "iat")))),
        ("id_token_not_yet_valid", Some(idp.token("idp-1", with(claims("alice", &nonce), "iat", (now + 600).into())))),
        ("id_token_bad_signature", Some(IdentityProvider::new("idp-1").token("idp-1", claims("alice", &nonce)))),
        ("id_token_expired", Some(idp.token("idp-1", with(claims("alice", &nonce), "exp", (now - 120).into())))),
    ];
    for (code, token) in refused {
        erase(server.addr, "alice", token.as_deref()).await.expect(401, code);
    }
    alice.get("/key").await.expect_status(200);

    // The user's consent erases, once.
    let consent = idp.token("idp-1", claims("alice", &nonce));
    let reply = erase(server.addr, "alice", Some(&consent)).await;
    reply.expect_status(200);
    assert_eq!(reply.json::<serde_json::Value>()["versionsDestroyed"], 1);
    alice.get("/key").await.expect(401, "unknown_session");
    let again = device_with_key(server.addr, &idp, "alice").await;
    erase(server.addr, "alice", Some(&consent)).await.expect(401, "id_token_replayed");
    again.get("/key").await.expect_status(200);

    // Spent is spent across a restart too.
    server.stop().await;
    let server = TestServer::start_sled(config).await;
    erase(server.addr, "alice", Some(&consent)).await.expect(401, "id_token_replayed");
    let again = Device { addr: server.addr, ..again };
    again.get("/key").await.expect_status(200);

    // keyservice-cli: `erase-nonce` prints the nonce to ask for, `erase` reads the token
    // from a file.
    let url = format!("http://{}", server.addr);
    let cli = |args: Vec<String>| {
        let mut command = std::process::Command::new(binary::cli_bin());
        command.args(["--url", &url, "--allow-http"]).args(args);
        command.env("KEYSERVICE_SECRET", SECRET).env_remove("KEYSERVICE_ID_TOKEN");
        async move { tokio::task::spawn_blocking(move || command.output().unwrap()).await.unwrap() }
    };
    let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let printed = cli(args(&["erase-nonce", "--namespace", NAMESPACE, "--user-id", "alice"])).await;
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), nonce);
    let token_file = dir.path().join("erase-token");
    std::fs::write(&token_file, idp.token("idp-1", claims("alice", &nonce))).unwrap();
    let erase_args = args(&[
        "erase",
        "--namespace",
        NAMESPACE,
        "--key-id",
        KEY_ID,
        "--user-id",
        "alice",
        "--id-token-file",
        token_file.to_str().unwrap(),
    ]);
    let erased = cli(erase_args.clone()).await;
    assert_eq!(erased.status.code(), Some(0), "{}", String::from_utf8_lossy(&erased.stderr));
    assert!(String::from_utf8_lossy(&erased.stdout).contains("1 key versions destroyed"));
    again.get("/key").await.expect(401, "unknown_session");
    let replayed = cli(erase_args).await;
    assert_eq!(replayed.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&replayed.stderr).contains("id_token_replayed"));

    server.stop().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"event\":\"erase\",\"outcome\":\"denied\"") && audit.contains("id_token_replayed"));
    assert!(!audit.contains(&consent), "a token reached the audit log");
}

fn without(mut claims: serde_json::Value, field: &str) -> serde_json::Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

/// `/connect` from the loopback address `from`.
async fn connect_from(from: &str, addr: std::net::SocketAddr, user: &str, hash: &str, token: &str) -> Reply {
    let body = serde_json::json!({ "namespace": NAMESPACE, "userId": user, "initTokenHash": hash, "idToken": token })
        .to_string();
    let mut headers = signed_headers(KEY_ID, SECRET, "POST", "/connect", body.as_bytes(), &http_date(0));
    headers.push(("content-type", "application/json".into()));
    send_from(Some(from.parse().unwrap()), addr, "POST", "/connect", &headers, body.as_bytes()).await
}

#[tokio::test]
async fn a_flood_of_refused_id_tokens_is_budgeted_and_summarised_and_leaves_the_real_service_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let idp = IdentityProvider::new("idp-1");
    let forger = IdentityProvider::new("idp-1");
    let extra = "connect_per_minute = 30\nid_token_failures_per_minute = 10\n";
    let server = TestServer::start_sled(oidc_config(dir.path(), &idp, "127.0.0.0/24", extra)).await;
    let hash = init_token_hash(&init(server.addr).await);

    // A breached Real Service's credential, from an allowed neighbour of the real one:
    // 60 forged tokens. The credential's budget (10) is spent first, then every request
    // from that address is refused before its token is even looked at.
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let forged = forger.token("idp-1", claims("alice", &hash));
        let reply = connect_from("127.0.0.66", server.addr, "alice", &hash, &forged).await;
        statuses.push(reply.status.as_u16());
        if reply.status == 429 {
            assert!(reply.headers.contains_key("retry-after"));
        }
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(unauthorized, 10, "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");

    // Spreading over more addresses buys nothing once the credential is over budget:
    // each further refusal is a 429 that blocks its address.
    for last in 100..110 {
        let forged = forger.token("idp-1", claims("alice", &hash));
        let reply = connect_from(&format!("127.0.0.{last}"), server.addr, "alice", &hash, &forged).await;
        reply.expect(429, "rate_limited");
        let blocked = connect_from(&format!("127.0.0.{last}"), server.addr, "alice", &hash, "x.y.z").await;
        assert_eq!(blocked.status, 429);
    }

    // The real Real Service, at its own address, connects its users all along: a token
    // that verifies is never refused by these budgets.
    for user in ["alice", "bob", "carol"] {
        let user_hash = init_token_hash(&init(server.addr).await);
        let token = idp.token("idp-1", claims(user, &user_hash));
        let reply = connect_from("127.0.0.2", server.addr, user, &user_hash, &token).await;
        reply.expect_status(200);
    }

    server.stop().await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let refusals: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["event"].clone())
        .filter(|event| event["reason"] == "id_token_bad_signature")
        .collect();
    // One line for the first refusal of the minute (naming the namespace and user), one
    // summary at the stop counting the other 20 (10 more from the first address, one from each
    // of the others, all in one /24): not 21 lines.
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    assert_eq!(refusals[0]["namespace"], NAMESPACE);
    assert!(refusals[0]["user"].is_string());
    assert_eq!(refusals[1]["repeated"], 20, "{refusals:#?}");
}
