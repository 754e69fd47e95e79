//! The whole point of keyservice in one process: a device encrypts a personal record with
//! a key that lives at keyservice, the Real Service stores only the ciphertext, and a
//! second device session of the same user reads the key back and decrypts.
//!
//! Run it with:
//!
//! ```sh
//! cargo run -p keyservice-examples --example end_to_end
//! ```
//!
//! It starts keyservice (on a temporary sled store) and a toy Real Service on loopback
//! ports, prints one line per step, and exits non-zero if the Real Service's storage
//! holds any plaintext or the decrypted record differs from the original.

use std::net::SocketAddr;
use std::process::ExitCode;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use keyservice::config::{Credential as ServerCredential, Namespace};
use keyservice::server::Server;
use keyservice::{Config, MasterKey};
use keyservice_client::protocol::{Secret, random_bytes};
use keyservice_client::{Client, Condition, Credential, Session};
use keyservice_examples::RealService;
use zeroize::Zeroizing;

const NAMESPACE: &str = "my_cool_website";
const USER: &str = "347";
const RECORD: &str = r#"{"name":"Åsa Öberg","diagnosis":"seasonal allergy","born":"1984-03-07"}"#;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("end_to_end failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the whole flow; an error is any step failing or any check not holding.
pub async fn run() -> Result<(), Failure> {
    // keyservice, hosted at one provider. The Real Service's credential is shared once,
    // out of band.
    let data = tempfile::tempdir()?;
    let credential_secret = keyservice::new_token()?;
    let keyservice_addr = start_keyservice(data.path(), &credential_secret).await?;
    let keyservice_url = format!("http://{keyservice_addr}");
    println!("keyservice: listening on {keyservice_url}");

    // The Real Service, hosted at another provider.
    let connector = Client::new(&keyservice_url)?.real_service(Credential::new("rs-1", credential_secret));
    let real_service = RealService::start(connector, NAMESPACE).await?;
    println!("real service: listening on http://{}", real_service.addr);

    // The first device: log in, get a keyservice session, make and escrow a data key.
    let (phone, phone_login) = device_session(&keyservice_url, real_service.addr, "phone").await?;
    let data_key = Zeroizing::new(random_bytes::<32>()?);
    let version = phone.put_key(&data_key[..], None, Condition::IfNoneMatch).await?;
    println!("phone: stored a new 256-bit data key at keyservice as version {version}");

    // Encrypt the record and store only the ciphertext at the Real Service.
    let ciphertext = encrypt(&data_key[..], RECORD.as_bytes())?;
    http(real_service.addr, "PUT", "/records/profile", Some(&phone_login), &ciphertext).await?;
    println!("phone: stored the record at the Real Service, encrypted ({} bytes)", ciphertext.len());

    // A second device of the same user: a fresh session, the key from keyservice, the
    // ciphertext from the Real Service.
    let (laptop, laptop_login) = device_session(&keyservice_url, real_service.addr, "laptop").await?;
    let key = laptop.get_key().await?;
    println!("laptop: fetched data key version {} from keyservice", key.version);
    let stored = http(real_service.addr, "GET", "/records/profile", Some(&laptop_login), b"").await?;
    let record = decrypt(key.bytes(), &stored)?;
    if record != RECORD.as_bytes() {
        return Err("the decrypted record differs from the original".into());
    }
    println!("laptop: decrypted the record: it equals the original");

    // The Real Service's storage holds no plaintext: not the record, not a field of it,
    // not the key.
    let records = real_service.records.lock().map_err(|_| "the Real Service's storage lock is poisoned")?;
    for bytes in records.values() {
        for needle in [RECORD.as_bytes(), b"seasonal allergy", "Öberg".as_bytes(), &data_key[..]] {
            if contains(bytes, needle) {
                return Err("the Real Service's storage holds plaintext".into());
            }
        }
    }
    println!("check: the Real Service holds {} record(s), none of them readable", records.len());
    Ok(())
}

async fn start_keyservice(dir: &std::path::Path, secret: &Secret) -> Result<SocketAddr, Failure> {
    let mut config = Config {
        data_dir: dir.join("data"),
        erasure_ledger_file: dir.join("erasures.jsonl"),
        audit_log_file: dir.join("audit.jsonl"),
        admin_socket: dir.join("admin.sock"),
        ..Config::default()
    };
    config.namespaces.insert(
        NAMESPACE.into(),
        Namespace {
            allow: vec!["127.0.0.0/8".parse()?],
            credentials: vec![ServerCredential { key_id: "rs-1".into(), secret: secret.clone() }],
            connect_budget: keyservice::config::default_connect_budget(),
            oidc: None,
        },
    );
    // A real deployment keeps the master key in a file off the data disk (see
    // docs/operations.md); this one holds one in memory.
    let master = MasterKey::generate()?;
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let running = Server::new(config).with_master_key(master).start().await?;
    let addr = running.addr();
    // Serves until the process ends.
    tokio::spawn(running.finished());
    Ok(addr)
}

/// Logs a device in at the Real Service and has the Real Service connect it at
/// keyservice; the device's init token never leaves it, only its hash does.
/// Returns the keyservice session and the Real Service login.
async fn device_session(
    keyservice_url: &str,
    real_service: SocketAddr,
    name: &str,
) -> Result<(Session, String), Failure> {
    let keyservice = Client::new(keyservice_url)?;
    let login = login(real_service).await?;
    println!("{name}: logged in at the Real Service as user {USER}");
    let init = keyservice.init().await?;
    let body = serde_json::json!({ "initTokenHash": init.hash() }).to_string();
    let answer = http(real_service, "POST", "/keyservice-session", Some(&login), body.as_bytes()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    let token = answer["sessionToken"].as_str().ok_or("the Real Service sent no session token")?;
    println!("{name}: got an init token, gave the Real Service only its hash, received a keyservice session");
    Ok((keyservice.session(Secret::new(token), &init), login))
}

async fn login(real_service: SocketAddr) -> Result<String, Failure> {
    let answer = http(real_service, "POST", "/login", None, USER.as_bytes()).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["session"].as_str().ok_or("no login session")?.to_owned())
}

/// XChaCha20-Poly1305 under the data key, bound to the user; the random 24-byte nonce is
/// prepended.
fn encrypt(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Failure> {
    let cipher = cipher(key)?;
    let nonce = random_bytes::<24>()?;
    let mut out = nonce.to_vec();
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: USER.as_bytes() })
        .map_err(|_| "encryption failed")?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn decrypt(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Failure> {
    if sealed.len() < 24 {
        return Err("the stored record is too short".into());
    }
    let (nonce, ciphertext) = sealed.split_at(24);
    Ok(cipher(key)?
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: USER.as_bytes() })
        .map_err(|_| "the record does not decrypt under the key")?)
}

fn cipher(key: &[u8]) -> Result<XChaCha20Poly1305, Failure> {
    Ok(XChaCha20Poly1305::new_from_slice(key).map_err(|_| "the data key is not 256 bits")?)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// One plain HTTP/1.1 request to the Real Service.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    login: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Failure> {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(login) = login {
        request = request.header("x-session", login);
    }
    let response = sender.send_request(request.body(Full::new(bytes::Bytes::copy_from_slice(body)))?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes().to_vec();
    if !status.is_success() {
        return Err(format!("the Real Service answered {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(body)
}
