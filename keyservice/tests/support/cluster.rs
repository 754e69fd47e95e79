//! A cluster of real keyservice processes on one real PostgreSQL, for the tests that
//! need several nodes (`cluster.rs`, `failover.rs`).
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyservice::MasterKey;
use keyservice_client::protocol::Secret;
use keyservice_client::{Client, Condition, Credential, Session};

use crate::binary::{Serving, serve};
use crate::pg;
use crate::support::*;

/// A cluster's shared files: the master key and the database password.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub database: pg::Database,
    /// The `[storage] url`: the database's own unless a test lists several hosts.
    pub url: String,
    /// Lines added to `[storage]`.
    pub storage: String,
}

impl Cluster {
    pub async fn new(server: &pg::Server) -> Self {
        let dir = tempfile::tempdir().unwrap();
        MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let database = server.database().await;
        let password = dir.path().join("db-password");
        std::fs::write(&password, database.password()).unwrap();
        let mut permissions = std::fs::metadata(&password).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
        std::fs::set_permissions(&password, permissions).unwrap();
        let url = database.url();
        Self { dir, database, url, storage: String::new() }
    }

    /// Writes node `name`'s config (its own audit log, ledger and admin socket; the
    /// shared master key and database), with `shop` settings added to the namespace.
    pub fn config(&self, name: &str, shop: &str) -> PathBuf {
        let node = self.dir.path().join(name);
        std::fs::create_dir_all(&node).unwrap();
        let path = |p: &Path| format!("{:?}", p.display().to_string());
        let text = format!(
            "listen = \"127.0.0.1:0\"\nnode_id = \"{name}\"\ndata_dir = {}\nmaster_key_file = {}\n\
             erasure_ledger_file = {}\nadmin_socket = {}\naudit_log_file = {}\nmax_key_versions = 1000000\n\
             {}{shop}\n[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = {}\n\
             pool_size = 8\nconnect_timeout_secs = 2\n{}\n",
            path(&node.join("data")),
            path(&self.dir.path().join("master.key")),
            path(&node.join("erasures.jsonl")),
            path(&node.join("admin.sock")),
            path(&node.join("audit.jsonl")),
            shop_toml("127.0.0.0/8"),
            self.url,
            path(&self.dir.path().join("db-password")),
            if self.storage.contains("statement_timeout_ms") {
                self.storage.clone()
            } else {
                format!("statement_timeout_ms = 3000\n{}", self.storage)
            },
        );
        let file = node.join("keyservice.toml");
        std::fs::write(&file, text).unwrap();
        file
    }

    pub fn start(&self, name: &str, extra: &str) -> Serving {
        let config = self.config(name, extra);
        serve(&["serve", "--config", config.to_str().unwrap()], &[])
    }

    pub fn audit_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name).join("audit.jsonl")).unwrap_or_default()
    }
}

pub fn url(node: &Serving) -> String {
    format!("http://{}", node.addr)
}

pub fn client(node: &Serving) -> Client {
    Client::builder(&url(node)).get_retries(0).timeout(Duration::from_secs(10)).build().unwrap()
}

pub fn real_service(node: &Serving) -> keyservice_client::RealService {
    client(node).real_service(Credential::new(KEY_ID, Secret::new(SECRET)))
}

/// A session for `user`: init at one node, connect through another.
pub async fn session(init_at: &Serving, connect_at: &Serving, user: &str) -> Session {
    let device = client(init_at);
    let init = device.init().await.unwrap();
    let grant = real_service(connect_at).connect(NAMESPACE, user, &init.hash()).await.unwrap();
    device.session(grant.session_token, &init)
}

/// [`session`], with its tokens for requests signed by hand.
pub async fn raw_session(init_at: &Serving, connect_at: &Serving, user: &str) -> (Session, Device) {
    let device = client(init_at);
    let init = device.init().await.unwrap();
    let grant = real_service(connect_at).connect(NAMESPACE, user, &init.hash()).await.unwrap();
    let raw =
        Device { addr: init_at.addr, session_token: grant.session_token.clone(), init_token: init.secret().clone() };
    (device.session(grant.session_token, &init), raw)
}

pub fn device_at(session: &Session, node: &Serving) -> Session {
    session.with_client(&client(node))
}

/// What each writer had acknowledged: version → bytes.
pub type Acked = Arc<Mutex<Vec<BTreeMap<u64, Vec<u8>>>>>;

/// Writers spread over `nodes` put as fast as they can until `stop`; returns what was
/// acknowledged. Network failures (a killed node) and 503s are tolerated; anything else
/// fails the test.
pub fn spawn_writers(
    sessions: &[Session],
    nodes: Vec<String>,
    acked: &Acked,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, usize)>> {
    let mut writers = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let acked = acked.clone();
        let stop = stop.clone();
        let nodes = nodes.clone();
        let session = session.clone();
        writers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let node = &nodes[(n as usize + i) % nodes.len()];
                let at = session.with_client(
                    &Client::builder(node).get_retries(0).timeout(Duration::from_secs(10)).build().unwrap(),
                );
                let bytes = format!("writer {i} write {n} via {node}").into_bytes();
                match at.put_key(&bytes, None, Condition::None).await {
                    Ok(version) => {
                        ok += 1;
                        let previous = acked.lock().unwrap()[i].insert(version, bytes);
                        assert!(previous.is_none(), "writer {i}: version {version} acknowledged twice");
                    }
                    Err(error) if error.is_network() || error.is_timeout() || error.status() == Some(503) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(error) => panic!("writer {i}: {error}"),
                }
            }
            (ok, failed)
        }));
    }
    writers
}

/// Reads every acknowledged version back through `node`: (checked, lost, corrupted).
pub async fn verify(sessions: &[Session], node: &Serving, acked: &Acked) -> (usize, usize, usize) {
    let acked = acked.lock().unwrap().clone();
    let (mut checked, mut lost, mut corrupted) = (0, 0, 0);
    for (i, versions) in acked.iter().enumerate() {
        let at = device_at(&sessions[i], node);
        for (version, bytes) in versions {
            checked += 1;
            match at.get_key_version(*version).await {
                Ok(key) if key.bytes() == bytes.as_slice() => {}
                Ok(_) => corrupted += 1,
                Err(error) => {
                    eprintln!("writer {i} version {version}: {error}");
                    lost += 1;
                }
            }
        }
    }
    (checked, lost, corrupted)
}

pub async fn ready(addr: SocketAddr) -> u16 {
    send(addr, "GET", "/readyz", &[], b"").await.status.as_u16()
}
