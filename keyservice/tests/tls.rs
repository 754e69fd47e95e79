//! HTTPS: a full flow over TLS, HTTP/2 by ALPN, HSTS, and certificates reloaded on
//! SIGHUP without a restart.

#[path = "support/binary.rs"]
mod binary;
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyservice::tls::TlsFiles;
use keyservice_client::protocol::Secret;
use keyservice_client::{Client, Condition, Credential};
use support::*;

/// Writes a fresh self-signed certificate for `localhost` to `dir/<name>.crt/.key`;
/// returns the files and the certificate's PEM (the CA to trust).
fn certificate(dir: &Path, name: &str) -> (TlsFiles, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles { cert_file: dir.join(format!("{name}.crt")), key_file: dir.join(format!("{name}.key")) };
    std::fs::write(&files.cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&files.key_file, certified.signing_key.serialize_pem()).unwrap();
    private(&files.key_file);
    (files, certified.cert.pem())
}

/// A raw TLS connection to `port` trusting `ca`, offering `alpn`.
async fn tls_connect(
    port: u16,
    ca: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    connector.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await
}

#[tokio::test]
async fn a_full_flow_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = certificate(dir.path(), "server");
    let mut config = config(dir.path());
    config.tls = Some(files);
    let server = TestServer::start_sled(config).await;
    let url = format!("https://localhost:{}", server.addr.port());
    let client = Client::builder(&url).ca_certificates_pem(ca.into_bytes()).build().unwrap();
    let init = client.init().await.unwrap();
    let grant = client
        .real_service(Credential::new(KEY_ID, Secret::new(SECRET)))
        .connect(NAMESPACE, "u", &init.hash())
        .await
        .unwrap();
    let session = client.session(grant.session_token, &init);
    assert_eq!(session.put_key(b"over https", None, Condition::None).await.unwrap(), 1);
    assert_eq!(session.get_key().await.unwrap().bytes(), b"over https");

    // Plain HTTP to a TLS port gets no answer.
    let plain = raw(server.addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", Duration::from_secs(2)).await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
}

#[tokio::test]
async fn http2_by_alpn_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = certificate(dir.path(), "server");
    let mut config = config(dir.path());
    config.tls = Some(files);
    let server = TestServer::start_sled(config).await;

    let stream = tls_connect(server.addr.port(), &ca, &[b"h2"]).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = http::Request::builder()
            .uri(format!("https://localhost:{}/healthz", server.addr.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["strict-transport-security"], "max-age=31536000");
        response.into_body().collect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (files, first_ca) = certificate(dir.path(), "server");
    let extra = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        files.cert_file.display().to_string(),
        files.key_file.display().to_string()
    );
    let config = binary::write_config(dir.path(), &extra);
    let mut server = binary::serve(&["serve", "--config", config.to_str().unwrap()], &[]);
    let port = server.addr.port();
    let kept = tls_connect(port, &first_ca, &[b"http/1.1"]).await.expect("the first certificate is served");

    // New files in place of the old, then SIGHUP.
    let (next, next_ca) = certificate(dir.path(), "next");
    std::fs::rename(&next.cert_file, &files.cert_file).unwrap();
    std::fs::rename(&next.key_file, &files.key_file).unwrap();
    Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tls_connect(port, &next_ca, &[b"http/1.1"]).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tls_connect(port, &first_ca, &[b"http/1.1"]).await.is_err(), "the old certificate is gone");
    assert!(server.child.try_wait().unwrap().is_none(), "the server kept running");

    // A connection made before the reload still works.
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(kept)).await.unwrap();
    tokio::spawn(connection);
    let request =
        http::Request::builder().uri("/healthz").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);

    // A broken file on the next SIGHUP keeps the current certificate.
    std::fs::write(&files.key_file, "not a key").unwrap();
    Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().unwrap();
    // Real time: the reload runs in the server process, which logs its refusal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tls_connect(port, &next_ca, &[b"http/1.1"]).await.is_ok());
}

/// Runs `serve` on a config in `dir` with `files` as its TLS files, to its end.
fn start_with(dir: &Path, files: &TlsFiles) -> (i32, String, String) {
    let extra = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        files.cert_file.display().to_string(),
        files.key_file.display().to_string()
    );
    let config = binary::write_config(dir, &extra);
    binary::run(&["serve", "--config", config.to_str().unwrap()], &[])
}

/// Mode 0600, as a private key must be.
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn unusable_tls_files_stop_the_start_with_their_name_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n").unwrap();
    let extra = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        dir.path().join("missing.crt").display().to_string(),
        key.display().to_string()
    );
    let config = binary::write_config(dir.path(), &extra);
    let (code, _, err) = binary::run(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "a TLS file is configuration: {err}");
    assert!(err.contains("tls.cert_file (") && err.contains("missing.crt"), "{err}");

    let (files, _) = certificate(dir.path(), "ok");
    std::fs::copy(&key, &files.key_file).unwrap();
    private(&files.key_file);
    let (code, _, err) = start_with(dir.path(), &files);
    assert_eq!(code, 2, "a TLS file is configuration: {err}");
    assert!(err.contains("ok.key") && !err.contains("not base64"), "{err}");
    assert!(err.contains("tls.key_file ("), "the message names the setting: {err}");

    // A private key others can read is refused, naming the setting and the fix.
    let (files, _) = certificate(dir.path(), "open");
    std::fs::set_permissions(&files.key_file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, err) = start_with(dir.path(), &files);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tls.key_file (") && err.contains("open.key") && err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn an_idle_tls_connection_is_closed_before_and_after_its_handshake() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = certificate(dir.path(), "server");
    let mut config = config(dir.path());
    config.tls = Some(files);
    config.header_read_timeout = Duration::from_secs(1);
    let server = TestServer::start_sled(config).await;
    let port = server.addr.port();
    // No handshake at all.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed without a handshake");
    // A finished handshake, either ALPN, then nothing.
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let mut stream = tls_connect(port, &ca, &[alpn]).await.unwrap();
        let started = std::time::Instant::now();
        // The server may speak first (HTTP/2 SETTINGS); read until it hangs up.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "closed after the handshake ({})", String::from_utf8_lossy(alpn));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
