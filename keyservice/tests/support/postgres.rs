//! A real PostgreSQL server for the tests.
//!
//! [`shared`] is the server `scripts/test.sh` started (`KEYSERVICE_TEST_POSTGRES_URL`),
//! or else one this test binary starts with `scripts/postgres.sh`, which stops it once
//! the binary exits. [`private`] starts one of the test's own, for tests that restart
//! or stop it. Every test works in a fresh database of its own.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use keyservice::config::PostgresConfig;
use keyservice_client::protocol::Secret;

/// A running server and how to reach it as its superuser.
pub struct Server {
    host: String,
    port: u16,
    password: String,
    /// The script's directory for a server this process started (and may restart).
    dir: Option<PathBuf>,
    _tmp: Option<tempfile::TempDir>,
}

/// One database on a [`Server`].
pub struct Database {
    /// Its name.
    pub name: String,
    host: String,
    port: u16,
    password: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh")
}

fn start(dir: &Path, watch: bool, tls: Option<&Path>) -> Server {
    let mut command = Command::new("bash");
    command.arg(script()).arg("start").arg(dir);
    if let Some(tls) = tls {
        command.env("PG_TLS_DIR", tls);
    }
    if watch {
        command.arg(std::process::id().to_string());
    }
    let output = command.output().expect("run scripts/postgres.sh");
    assert!(
        output.status.success(),
        "scripts/postgres.sh could not start PostgreSQL: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut server = parse(&url);
    server.dir = Some(dir.to_path_buf());
    server
}

/// `postgres://user:password@host:port/db` → a server.
fn parse(url: &str) -> Server {
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    Server {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        password: String::from_utf8(config.get_password().unwrap_or_default().to_vec()).unwrap(),
        dir: None,
        _tmp: None,
    }
}

/// The server all tests of this run share.
pub fn shared() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("KEYSERVICE_TEST_POSTGRES_URL") {
        Ok(url) => parse(&url),
        Err(_) => {
            let tmp = tempfile::tempdir().unwrap();
            let mut server = start(&tmp.path().join("pg"), true, None);
            // The watcher removes the directory once this process exits.
            let _ = tmp.keep();
            server.dir = None;
            server
        }
    })
}

/// A server of this test's own, stopped when dropped.
pub fn private() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = start(&tmp.path().join("pg"), true, None);
    server._tmp = Some(tmp);
    server
}

/// A server of this test's own that takes TLS connections only, with the certificate
/// and key in `tls` (`server.crt`, `server.key`).
pub fn private_tls(tls: &Path) -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = start(&tmp.path().join("pg"), true, Some(tls));
    server._tmp = Some(tmp);
    server
}

impl Drop for Server {
    fn drop(&mut self) {
        if let (Some(dir), Some(_)) = (&self.dir, &self._tmp) {
            let _ = Command::new("bash").arg(script()).arg("stop").arg(dir).output();
        }
    }
}

impl Server {
    fn url(&self, database: &str) -> String {
        format!("postgres://postgres:{}@{}:{}/{database}", self.password, self.host, self.port)
    }

    /// A superuser connection to `database`.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(connection);
        client
    }

    /// A new, empty database.
    pub async fn database(&self) -> Database {
        let name = format!("ks_{}", hex::encode(rand::random::<[u8; 8]>()));
        let admin = self.connect("postgres").await;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create a test database");
        Database { name, host: self.host.clone(), port: self.port, password: self.password.clone() }
    }

    /// A database on a server that takes TLS only, made through psql (libpq's own TLS).
    pub fn database_over_tls(&self) -> Database {
        let name = format!("ks_{}", hex::encode(rand::random::<[u8; 8]>()));
        let status = Command::new("psql")
            .args(["-h", &self.host, "-p", &self.port.to_string(), "-U", "postgres", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .arg("postgres")
            .env("PGPASSWORD", &self.password)
            .env("PGSSLMODE", "require")
            .status()
            .expect("run psql");
        assert!(status.success(), "creating a database over TLS failed");
        Database { name, host: self.host.clone(), port: self.port, password: self.password.clone() }
    }

    /// Restarts the server (a fast shutdown: open connections are cut).
    pub fn restart(&self) {
        self.script("restart");
    }

    /// The system user the server runs as (owner of its files).
    pub fn owner(&self) -> String {
        let dir = self.dir.as_ref().expect("only a private server's owner is known");
        let home = std::fs::read_to_string(dir.join("home")).unwrap();
        let owner = Command::new("stat").args(["-c", "%U", &format!("{}/data", home.trim())]).output().unwrap();
        String::from_utf8_lossy(&owner.stdout).trim().to_owned()
    }

    /// Stops the server until [`Server::resume`].
    pub fn pause(&self) {
        self.script("pause");
    }

    /// Starts a paused server again.
    pub fn resume(&self) {
        self.script("resume");
    }

    /// A streaming standby of this (private) server, of the test's own.
    pub fn standby(&self) -> Server {
        let primary = self.dir.as_ref().expect("only a private server gets a standby");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pg");
        let output = Command::new("bash")
            .arg(script())
            .arg("standby")
            .arg(primary)
            .arg(&dir)
            .arg(std::process::id().to_string())
            .output()
            .expect("run scripts/postgres.sh");
        assert!(
            output.status.success(),
            "scripts/postgres.sh could not start a standby: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut server = parse(String::from_utf8(output.stdout).unwrap().trim());
        server.dir = Some(dir);
        server._tmp = Some(tmp);
        server
    }

    /// This old primary (killed or stopped) becomes a streaming standby of `primary`, the
    /// standby promoted in its place: `pg_rewind`, then started as a standby.
    pub fn rejoin(&self, primary: &Server) {
        let new_primary = primary.dir.as_ref().expect("only a private server is followed");
        self.script_with("rejoin", &[new_primary.to_str().unwrap()]);
    }

    /// Whether this primary's commits wait for its standby.
    pub fn synchronous(&self, on: bool) {
        self.script_with("synchronous", &[if on { "on" } else { "off" }]);
    }

    /// This standby becomes a primary.
    pub fn promote(&self) {
        self.script("promote");
    }

    /// SIGKILL to the server and its processes.
    pub fn kill(&self) {
        self.script("kill");
    }

    /// SIGSTOP to every process of the server, until [`Server::thaw`].
    pub fn freeze(&self) {
        self.script("freeze");
    }

    /// SIGCONT to every process of the server.
    pub fn thaw(&self) {
        self.script("thaw");
    }

    /// Starts a killed server as it was: an old primary comes back as a primary.
    pub fn start_stopped(&self) {
        self.script("start-stopped");
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn script(&self, action: &str) {
        self.script_with(action, &[]);
    }

    fn script_with(&self, action: &str, args: &[&str]) {
        let dir = self.dir.as_ref().expect("only a private server is restarted or stopped");
        let status = Command::new("bash").arg(script()).arg(action).arg(dir).args(args).status().unwrap();
        assert!(status.success(), "postgres.sh {action} failed");
    }
}

impl Database {
    /// The URL keyservice is configured with: no password in it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:{}/{}", self.host, self.port, self.name)
    }

    /// The URL listing `hosts` (`host:port`) in order, for the one that takes writes.
    pub fn multi_host_url(&self, hosts: &[String]) -> String {
        format!("postgres://postgres@{}/{}?target_session_attrs=read-write", hosts.join(","), self.name)
    }

    /// The password, to put in a `password_file`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The store settings for this database.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: self.url(),
            password: Some(Secret::new(self.password.clone())),
            pool_size: 8,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            ca_file: None,
        }
    }

    /// A superuser connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let url = format!("postgres://postgres:{}@{}:{}/{}", self.password, self.host, self.port, self.name);
        let (client, connection) =
            tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// Runs a `pg_dump` script with `psql`, stopping at the first error.
    pub fn restore(&self, dump: &[u8]) {
        use std::io::Write;
        let mut child = Command::new("psql")
            .args(["-h", &self.host, "-p", &self.port.to_string(), "-U", "postgres", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg(&self.name)
            .env("PGPASSWORD", &self.password)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run psql");
        child.stdin.take().unwrap().write_all(dump).unwrap();
        assert!(child.wait().unwrap().success(), "psql could not restore the dump");
    }

    /// Everything the database holds, as `pg_dump` writes it (data as INSERTs).
    pub fn dump(&self) -> Vec<u8> {
        let output = Command::new("pg_dump")
            .args(["-h", &self.host, "-p", &self.port.to_string(), "-U", "postgres", "--inserts", &self.name])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("run pg_dump");
        assert!(output.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }
}
