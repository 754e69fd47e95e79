//! The server's settings: a plain [`Config`], read from TOML and validated once at start.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data_dir = "./keyservice-data"
//!
//! [namespaces.my_cool_website]
//! allow = ["127.0.0.1/32", "::1/128"]
//! credentials = [ { key_id = "rs-1", secret_env = "KS_SECRET_RS1" } ]
//! ```
//!
//! Every other key is optional; each field of [`Config`] documents its default. Unknown
//! keys are errors, so a misspelt limit cannot silently fall back to its default.

pub mod changes;
mod describe;
mod oidc;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use keyservice_client::protocol::Secret;
use keyservice_client::protocol::ss1::{MAX_CLOCK_SKEW, MAX_KEY_ID_LEN};
use keyservice_client::protocol::wire::MAX_NAMESPACE_LEN;
use serde::Deserialize;

use self::oidc::FileOidc;
use crate::limits::{ClientPrefix, ConnectBudget};
use crate::proxy::{ForwardedHeader, ProxyTrust};
pub use crate::store::{PostgresConfig, Storage};
use crate::tls::TlsFiles;

/// The shortest credential secret accepted, in bytes. `keyservice gen-secret` makes 43.
pub const MIN_SECRET_LEN: usize = 32;
/// The namespace `serve --dev` creates.
pub const DEV_NAMESPACE: &str = "demo";
/// The key id of the credential `serve --dev` creates.
pub const DEV_KEY_ID: &str = "demo-1";

/// The validated settings of one server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Directory of the sled database. Default `./keyservice-data`.
    pub data_dir: PathBuf,
    /// The master key file (64 hex digits, mode 0600), created on first start when
    /// absent; `KEYSERVICE_MASTER_KEY` overrides it. Keep it off the data directory's
    /// disk and out of its backups. Default: beside the data directory,
    /// `<data_dir>.master.key`.
    pub master_key_file: PathBuf,
    /// The erasure ledger, re-applied at every start; keep it outside the data
    /// directory so restoring a backup cannot undo an erasure. Default
    /// `<data_dir>.erasures.jsonl`.
    pub erasure_ledger_file: PathBuf,
    /// Versions kept per user; a PUT beyond it deletes the oldest (`max_key_versions`).
    /// Default 10.
    pub max_key_versions: u64,
    /// Days an entry of a user's access history is kept (`access_history_days`).
    pub access_history_days: u64,
    /// `/init` calls per minute from one client address (`init_per_minute`). Default 60.
    pub init_per_minute: NonZeroU32,
    /// Failed authentications per minute from one client address before its signed
    /// requests are refused for a while (`auth_failures_per_minute`). Default 20.
    pub auth_failures_per_minute: NonZeroU32,
    /// Most init tokens pending at once (`max_pending_inits`). When full, a new `/init`
    /// takes the place of the oldest pending token of the network holding the most, and
    /// only that network itself is refused (503). Default 100,000.
    pub max_pending_inits: u64,
    /// The audit trail (`audit_log_file`): one hash-chained JSON line per security
    /// event. Default `<data_dir>.audit.jsonl`.
    pub audit_log_file: PathBuf,
    /// Size at which the audit log is moved aside to `<audit_log_file>.<next seq>` and a
    /// new file begun, the chain continuing (`audit_max_bytes`; 0: never). Default 256 MiB.
    pub audit_max_bytes: u64,
    /// Free space kept on the disks of the data directory, the audit log and the erasure
    /// ledger: below it, requests that grow the store get 507 (`min_free_bytes`; 0: no
    /// reserve). Default 64 MiB.
    pub min_free_bytes: u64,
    /// Whether a request fails (503) when its audit line cannot be written
    /// (`audit_fail_closed`). Default true.
    pub audit_fail_closed: bool,
    /// A separate address serving only `/metrics`, `/healthz` and `/readyz`
    /// (`metrics_listen`); when set, the main listener does not serve `/metrics`.
    /// Default: none (metrics on the main listener).
    pub metrics_listen: Option<SocketAddr>,
    /// Log format (`log_format`): `human` or `json`. Default `human`.
    pub log_format: LogFormat,
    /// Browser origins allowed to call `/init`, `/key` and `/session` (`cors_origins`,
    /// exact, e.g. `https://app.example.com`). Default: none.
    pub cors_origins: Vec<String>,
    /// Which peers are trusted proxies, which header they write and how many of them
    /// sit in front (`trusted_proxies`, CIDRs; `forwarded_header`, `x-forwarded-for` or
    /// `forwarded`, required with `trusted_proxies`; `trusted_hops`, default 1). Default:
    /// none; every peer is the client.
    pub proxies: ProxyTrust,
    /// The prefix lengths that count as one client for per-client budgets
    /// (`client_prefix_v4`, default 24; `client_prefix_v6`, default 64): one party
    /// rotating addresses inside its network cannot multiply its budget.
    pub client_prefix: ClientPrefix,
    /// The admin socket (mode 0600) through which `keyservice backup` and
    /// `keyservice rotate-master-key` reach a running server. Default
    /// `<data_dir>.admin.sock`.
    pub admin_socket: PathBuf,
    /// The Real Services allowed to `/connect`, by namespace name. Default: none.
    pub namespaces: BTreeMap<String, Namespace>,
    /// How long an init token stays redeemable (`init_ttl_secs`). Default 10 minutes.
    pub init_ttl: Duration,
    /// How long a session lasts from `/connect` (`session_ttl_secs`). Default 1 hour.
    pub session_ttl: Duration,
    /// How long a session may go unused before it is refused (`session_idle_secs`).
    /// Default 30 minutes.
    pub session_idle: Duration,
    /// Largest accepted difference between a request's date and the server clock
    /// (`max_clock_skew_secs`), at most ss1's 24 hours. Default 5 minutes.
    pub max_clock_skew: Duration,
    /// Largest key body a PUT may send, in bytes (`max_key_bytes`). Default 65,536.
    pub max_key_bytes: usize,
    /// Bytes of opened sessions, user keys and latest keys a node that owns its store
    /// keeps in memory (`cache_bytes`; 0: none). Default 64 MiB.
    pub cache_bytes: usize,
    /// Most connections served at once; more wait in the kernel's backlog
    /// (`max_connections`). Default 1,024.
    pub max_connections: usize,
    /// Most connections at once from one client network (`max_connections_per_client`;
    /// trusted proxies are exempt). Default 128.
    pub max_connections_per_client: usize,
    /// Time a connection has from its accept to send its first request's headers (TLS
    /// handshake and HTTP/2 preface included), and a request from its first byte to
    /// send its headers (`header_read_timeout_secs`). Default 10 seconds.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight
    /// (`keep_alive_timeout_secs`). Default 60 seconds.
    pub keep_alive_timeout: Duration,
    /// Time a client has to send a request's body (`body_read_timeout_secs`). Default 30
    /// seconds.
    pub body_read_timeout: Duration,
    /// Largest total size of a request's headers, in bytes (`max_header_bytes`, at least
    /// 8,192). Default 16,384.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM or SIGINT
    /// (`shutdown_grace_secs`). Default 10 seconds.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with these files (`[tls] cert_file`, `key_file`); reloaded on SIGHUP.
    /// Default: none (plain HTTP, for loopback or behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// How often expired inits, sessions and nonces are deleted (`sweep_interval_secs`).
    /// Default 60 seconds.
    pub sweep_interval: Duration,
    /// Where records are kept (`[storage]`): sled in `data_dir` (the default) or a
    /// PostgreSQL database shared by several nodes.
    pub storage: Storage,
    /// This node's name in audit lines and in what it records in a shared database
    /// (`node_id`; default: the host name).
    pub node_id: String,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A Real Service's namespace.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Networks `/connect` calls for this namespace may come from.
    pub allow: Vec<IpNet>,
    /// Credentials that sign for it; several at once allow rotation.
    pub credentials: Vec<Credential>,
    /// Its budgets (`connect_per_minute`, default 600; `connect_users_per_window`,
    /// default 10,000; `connect_window_secs`, default 3,600; `erase_per_minute`, default
    /// 600; `id_token_failures_per_minute`, default 30).
    pub connect_budget: ConnectBudget,
    /// Require an OpenID Connect ID token on `/connect` and `/erase`
    /// (`[namespaces.<name>.oidc]`).
    pub oidc: Option<std::sync::Arc<crate::oidc::Oidc>>,
}

/// The default connect budget of a namespace.
pub fn default_connect_budget() -> ConnectBudget {
    ConnectBudget {
        calls_per_minute: NonZeroU32::new(600).expect("600 is not zero"),
        users_per_window: 10_000,
        window: Duration::from_secs(3600),
        erase_per_minute: NonZeroU32::new(600).expect("600 is not zero"),
        id_token_failures_per_minute: NonZeroU32::new(30).expect("30 is not zero"),
    }
}

fn per_minute(value: Option<u32>, field: &str, default: NonZeroU32) -> Result<NonZeroU32, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) => NonZeroU32::new(n).ok_or_else(|| invalid(field, "must be at least 1")),
    }
}

impl Namespace {
    /// Whether `ip` lies in one of the allowed networks (IPv4-mapped IPv6 addresses count
    /// as the IPv4 address they carry).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// A shared secret a Real Service signs `/connect` with.
#[derive(Debug, Clone)]
pub struct Credential {
    /// The ss1 key id it signs with.
    pub key_id: String,
    /// The shared secret.
    pub secret: Secret,
}

/// Why a configuration was refused. Each names the field and never shows a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config is not valid: {0}")]
    Syntax(String),
    /// A field has a value that cannot work.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `namespaces.shop.credentials[0].secret_env`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The config file at `path`, parsed but not validated, with `data_dir` (when given) in
/// place of its own.
fn read_file(path: &Path, data_dir: Option<PathBuf>) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let mut file: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Syntax(describe::describe(&text, &e)))?;
    if data_dir.is_some() {
        file.data_dir = data_dir;
    }
    Ok(file)
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./keyservice-data";

/// `<data_dir><suffix>`: a file beside the data directory, named after it, so two
/// servers with different data directories never share one.
fn beside(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    data_dir.with_file_name(name)
}

impl Default for Config {
    fn default() -> Self {
        let data_dir = PathBuf::from(DEFAULT_DATA_DIR);
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            master_key_file: beside(&data_dir, ".master.key"),
            erasure_ledger_file: beside(&data_dir, ".erasures.jsonl"),
            max_key_versions: 10,
            access_history_days: 90,
            admin_socket: beside(&data_dir, ".admin.sock"),
            proxies: ProxyTrust::default(),
            client_prefix: ClientPrefix::default(),
            cors_origins: Vec::new(),
            audit_log_file: beside(&data_dir, ".audit.jsonl"),
            data_dir,
            init_per_minute: NonZeroU32::new(60).expect("60 is not zero"),
            auth_failures_per_minute: NonZeroU32::new(20).expect("20 is not zero"),
            max_pending_inits: 100_000,
            audit_fail_closed: true,
            min_free_bytes: 64 * 1024 * 1024,
            audit_max_bytes: 256 * 1024 * 1024,
            metrics_listen: None,
            log_format: LogFormat::Human,
            namespaces: BTreeMap::new(),
            init_ttl: Duration::from_secs(10 * 60),
            session_ttl: Duration::from_secs(60 * 60),
            session_idle: Duration::from_secs(30 * 60),
            max_clock_skew: Duration::from_secs(5 * 60),
            max_key_bytes: 64 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_client: 128,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            sweep_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
            storage: Storage::Sled,
            node_id: default_node_id(),
        }
    }
}

/// The machine's host name, or `keyservice` when it has none.
fn default_node_id() -> String {
    #[cfg(unix)]
    {
        let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
        if valid_node_id(&name) {
            return name;
        }
    }
    "keyservice".to_owned()
}

fn valid_node_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Config {
    /// Reads and validates a TOML config file; secrets named by `secret_env` come from
    /// the process environment.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field that is wrong.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_data_dir(path, None)
    }

    /// [`Config::load`], with `data_dir` (when given) in place of the file's: the files
    /// kept beside the data directory by default follow it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field that is wrong.
    pub fn load_with_data_dir(path: &Path, data_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        read_file(path, data_dir)?.validate(&|name: &str| std::env::var(name).ok())
    }

    /// [`Config::load_with_data_dir`] for the operator commands (backup, restore,
    /// rotation), which never use the namespaces: their credentials are not read, so
    /// secrets kept in the environment of `serve` alone need not be present.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field that is wrong.
    pub fn load_for_operator(path: &Path, data_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        let mut file = read_file(path, data_dir)?;
        file.namespaces.clear();
        file.validate(&|name: &str| std::env::var(name).ok())
    }

    /// The built-in defaults, with the data (and the files beside it) in `data_dir`.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        Self {
            master_key_file: beside(&data_dir, ".master.key"),
            erasure_ledger_file: beside(&data_dir, ".erasures.jsonl"),
            admin_socket: beside(&data_dir, ".admin.sock"),
            audit_log_file: beside(&data_dir, ".audit.jsonl"),
            data_dir,
            ..Self::default()
        }
    }

    /// Parses and validates TOML text; `env` looks up `secret_env` variables.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field that is wrong.
    pub fn from_toml(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax(describe::describe(text, &e)))?;
        file.validate(&env)
    }

    /// The settings of `serve --dev`: a `demo` namespace that loopback may connect to,
    /// with one fresh credential, whose secret is returned to be shown once. The master
    /// key and the erasure ledger sit beside `data_dir` (`<data_dir>.master.key`,
    /// `<data_dir>.erasures.jsonl`), and so does the admin socket.
    ///
    /// # Errors
    ///
    /// Fails only when the operating system cannot supply randomness.
    pub fn dev(data_dir: PathBuf) -> Result<(Self, Secret), keyservice_client::protocol::RandomError> {
        let secret = crate::crypto::new_token()?;
        let namespace = Namespace {
            allow: vec![loopback_v4(), loopback_v6()],
            credentials: vec![Credential { key_id: DEV_KEY_ID.to_owned(), secret: secret.clone() }],
            connect_budget: default_connect_budget(),
            oidc: None,
        };
        let config = Self {
            namespaces: BTreeMap::from([(DEV_NAMESPACE.to_owned(), namespace)]),
            ..Self::for_data_dir(data_dir)
        };
        Ok((config, secret))
    }
}

fn loopback_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8))
}

fn loopback_v6() -> IpNet {
    IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
    erasure_ledger_file: Option<PathBuf>,
    max_key_versions: Option<u64>,
    access_history_days: Option<u64>,
    admin_socket: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    forwarded_header: Option<ForwardedHeader>,
    trusted_hops: Option<usize>,
    client_prefix_v4: Option<u8>,
    client_prefix_v6: Option<u8>,
    #[serde(default)]
    cors_origins: Vec<String>,
    audit_log_file: Option<PathBuf>,
    audit_fail_closed: Option<bool>,
    audit_max_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    init_per_minute: Option<u32>,
    auth_failures_per_minute: Option<u32>,
    max_pending_inits: Option<u64>,
    metrics_listen: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    namespaces: BTreeMap<String, FileNamespace>,
    init_ttl_secs: Option<u64>,
    session_ttl_secs: Option<u64>,
    session_idle_secs: Option<u64>,
    max_clock_skew_secs: Option<u64>,
    max_key_bytes: Option<usize>,
    cache_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    keep_alive_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    max_header_bytes: Option<usize>,
    sweep_interval_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    tls: Option<FileTls>,
    storage: Option<FileStorage>,
    node_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStorage {
    backend: Backend,
    url: Option<String>,
    password_env: Option<String>,
    password_file: Option<PathBuf>,
    pool_size: Option<usize>,
    statement_timeout_ms: Option<u64>,
    connect_timeout_secs: Option<u64>,
    ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Sled,
    Postgres,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: PathBuf,
    key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNamespace {
    allow: Vec<String>,
    credentials: Vec<FileCredential>,
    connect_per_minute: Option<u32>,
    connect_users_per_window: Option<u32>,
    connect_window_secs: Option<u64>,
    erase_per_minute: Option<u32>,
    id_token_failures_per_minute: Option<u32>,
    oidc: Option<FileOidc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCredential {
    key_id: String,
    secret: Option<Secret>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
}

fn invalid(field: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), reason: reason.into() }
}

fn seconds(value: Option<u64>, field: &str, default: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let Some(secs) = value else { return Ok(default) };
    if secs == 0 || secs > max.as_secs() {
        return Err(invalid(field, format!("must be between 1 and {} seconds", max.as_secs())));
    }
    Ok(Duration::from_secs(secs))
}

fn count(value: Option<usize>, field: &str, default: usize, min: usize, max: usize) -> Result<usize, ConfigError> {
    let Some(n) = value else { return Ok(default) };
    if !(min..=max).contains(&n) {
        return Err(invalid(field, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl FileConfig {
    fn validate(self, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let defaults = Config::for_data_dir(self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)));
        let listen = match self.listen {
            Some(text) => text.parse().map_err(|_| {
                invalid("listen", "must be an IP address and port, such as 127.0.0.1:8080 or [::]:8443")
            })?,
            None => defaults.listen,
        };
        let mut key_ids = HashSet::new();
        let mut namespaces = BTreeMap::new();
        for (name, namespace) in self.namespaces {
            let field = format!("namespaces.{name}");
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAMESPACE_LEN
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !valid_name {
                return Err(invalid(
                    &field,
                    format!("a namespace name is 1 to {MAX_NAMESPACE_LEN} letters, digits, '_', '-' or '.'"),
                ));
            }
            let namespace = namespace.validate(&field, env, &mut key_ids)?;
            namespaces.insert(name, namespace);
        }
        Ok(Config {
            listen,
            data_dir: self.data_dir.unwrap_or(defaults.data_dir),
            master_key_file: self.master_key_file.unwrap_or(defaults.master_key_file),
            erasure_ledger_file: self.erasure_ledger_file.unwrap_or(defaults.erasure_ledger_file),
            admin_socket: self.admin_socket.unwrap_or(defaults.admin_socket),
            proxies: proxy_trust(&self.trusted_proxies, self.forwarded_header, self.trusted_hops)?,
            client_prefix: ClientPrefix {
                v4: prefix_len(self.client_prefix_v4, "client_prefix_v4", ClientPrefix::default().v4, 8, 32)?,
                v6: prefix_len(self.client_prefix_v6, "client_prefix_v6", ClientPrefix::default().v6, 32, 128)?,
            },
            cors_origins: origins(self.cors_origins)?,
            audit_log_file: self.audit_log_file.unwrap_or(defaults.audit_log_file),
            init_per_minute: per_minute(self.init_per_minute, "init_per_minute", defaults.init_per_minute)?,
            auth_failures_per_minute: per_minute(
                self.auth_failures_per_minute,
                "auth_failures_per_minute",
                defaults.auth_failures_per_minute,
            )?,
            max_pending_inits: count(
                self.max_pending_inits.map(|v| v as usize),
                "max_pending_inits",
                100_000,
                1,
                usize::MAX,
            )? as u64,
            audit_fail_closed: self.audit_fail_closed.unwrap_or(defaults.audit_fail_closed),
            min_free_bytes: self.min_free_bytes.unwrap_or(defaults.min_free_bytes),
            audit_max_bytes: match self.audit_max_bytes {
                Some(n) if n != 0 && n < 4096 => {
                    return Err(invalid("audit_max_bytes", "must be 0 (never rotate) or at least 4096"));
                }
                Some(n) => n,
                None => defaults.audit_max_bytes,
            },
            metrics_listen: match self.metrics_listen {
                Some(text) => Some(text.parse().map_err(|_| {
                    invalid("metrics_listen", "must be an IP address and port, such as 127.0.0.1:9090")
                })?),
                None => None,
            },
            log_format: self.log_format.unwrap_or(defaults.log_format),
            max_key_versions: count(self.max_key_versions.map(|v| v as usize), "max_key_versions", 10, 1, 1_000_000)?
                as u64,
            access_history_days: count(
                self.access_history_days.map(|v| usize::try_from(v).unwrap_or(usize::MAX)),
                "access_history_days",
                90,
                1,
                3650,
            )? as u64,
            namespaces,
            init_ttl: seconds(self.init_ttl_secs, "init_ttl_secs", defaults.init_ttl, DAY)?,
            session_ttl: seconds(self.session_ttl_secs, "session_ttl_secs", defaults.session_ttl, 30 * DAY)?,
            session_idle: seconds(self.session_idle_secs, "session_idle_secs", defaults.session_idle, 30 * DAY)?,
            max_clock_skew: seconds(
                self.max_clock_skew_secs,
                "max_clock_skew_secs",
                defaults.max_clock_skew,
                MAX_CLOCK_SKEW,
            )?,
            max_key_bytes: count(self.max_key_bytes, "max_key_bytes", defaults.max_key_bytes, 1, 16 * 1024 * 1024)?,
            cache_bytes: count(self.cache_bytes, "cache_bytes", defaults.cache_bytes, 0, usize::MAX)?,
            max_connections: count(self.max_connections, "max_connections", defaults.max_connections, 1, 1_000_000)?,
            max_connections_per_client: count(
                self.max_connections_per_client,
                "max_connections_per_client",
                defaults.max_connections_per_client,
                1,
                1_000_000,
            )?,
            keep_alive_timeout: seconds(
                self.keep_alive_timeout_secs,
                "keep_alive_timeout_secs",
                defaults.keep_alive_timeout,
                Duration::from_secs(3600),
            )?,
            header_read_timeout: seconds(
                self.header_read_timeout_secs,
                "header_read_timeout_secs",
                defaults.header_read_timeout,
                Duration::from_secs(600),
            )?,
            body_read_timeout: seconds(
                self.body_read_timeout_secs,
                "body_read_timeout_secs",
                defaults.body_read_timeout,
                Duration::from_secs(600),
            )?,
            max_header_bytes: count(
                self.max_header_bytes,
                "max_header_bytes",
                defaults.max_header_bytes,
                8192,
                1024 * 1024,
            )?,
            sweep_interval: seconds(self.sweep_interval_secs, "sweep_interval_secs", defaults.sweep_interval, DAY)?,
            shutdown_grace: seconds(
                self.shutdown_grace_secs,
                "shutdown_grace_secs",
                defaults.shutdown_grace,
                Duration::from_secs(3600),
            )?,
            tls: self.tls.map(|tls| TlsFiles { cert_file: tls.cert_file, key_file: tls.key_file }),
            storage: match self.storage {
                Some(storage) => storage.validate(env)?,
                None => Storage::Sled,
            },
            node_id: match self.node_id {
                Some(name) if valid_node_id(&name) => name,
                Some(_) => return Err(invalid("node_id", "must be 1 to 64 letters, digits, '_', '-' or '.'")),
                None => defaults.node_id,
            },
        })
    }
}

impl FileStorage {
    fn validate(self, env: &impl Fn(&str) -> Option<String>) -> Result<Storage, ConfigError> {
        if self.backend == Backend::Sled {
            let stray = [
                ("url", self.url.is_some()),
                ("password_env", self.password_env.is_some()),
                ("password_file", self.password_file.is_some()),
                ("pool_size", self.pool_size.is_some()),
                ("statement_timeout_ms", self.statement_timeout_ms.is_some()),
                ("connect_timeout_secs", self.connect_timeout_secs.is_some()),
                ("ca_file", self.ca_file.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(invalid(format!("storage.{name}"), "applies only to backend = \"postgres\""));
            }
            return Ok(Storage::Sled);
        }
        let url = self.url.ok_or_else(|| invalid("storage.url", "is required for backend = \"postgres\""))?;
        let parsed: tokio_postgres::Config = url.parse().map_err(|_| {
            invalid("storage.url", "must be a URL such as postgres://keyservice@db.internal:5432/keyservice")
        })?;
        if parsed.get_password().is_some() {
            return Err(invalid(
                "storage.url",
                "must not carry the password (it would show in process lists and logs); use password_env or password_file",
            ));
        }
        if parsed.get_hosts().is_empty() || parsed.get_dbname().is_none() || parsed.get_user().is_none() {
            return Err(invalid("storage.url", "must name the user, the host and the database"));
        }
        let password =
            read_secret("storage", "password", None, self.password_env.as_ref(), self.password_file.as_ref(), env)?
                .map(|(_, password)| password);
        if let Some(ca_file) = &self.ca_file
            && !ca_file.is_file()
        {
            return Err(invalid("storage.ca_file", format!("{} is not a readable file", ca_file.display())));
        }
        Ok(Storage::Postgres(PostgresConfig {
            url,
            password,
            pool_size: count(self.pool_size, "storage.pool_size", 16, 1, 1024)?,
            statement_timeout: match self.statement_timeout_ms {
                None => Duration::from_secs(5),
                Some(ms) if (10..=600_000).contains(&ms) => Duration::from_millis(ms),
                Some(_) => return Err(invalid("storage.statement_timeout_ms", "must be between 10 and 600000")),
            },
            connect_timeout: seconds(
                self.connect_timeout_secs,
                "storage.connect_timeout_secs",
                Duration::from_secs(5),
                Duration::from_secs(300),
            )?,
            ca_file: self.ca_file,
        }))
    }
}

fn proxy_trust(
    trusted: &[String],
    header: Option<ForwardedHeader>,
    hops: Option<usize>,
) -> Result<ProxyTrust, ConfigError> {
    let trusted = networks(trusted, "trusted_proxies")?;
    if trusted.is_empty() {
        if header.is_some() || hops.is_some() {
            return Err(invalid(
                if header.is_some() { "forwarded_header" } else { "trusted_hops" },
                "has no effect without trusted_proxies; list the proxies' networks or remove it",
            ));
        }
        return Ok(ProxyTrust::default());
    }
    let Some(header) = header else {
        return Err(invalid(
            "forwarded_header",
            "must name the one header the trusted proxies write: \"x-forwarded-for\" or \"forwarded\"",
        ));
    };
    let hops = hops.unwrap_or(1);
    if !(1..=16).contains(&hops) {
        return Err(invalid("trusted_hops", "must be between 1 and 16"));
    }
    Ok(ProxyTrust { trusted, header: Some(header), hops })
}

fn prefix_len(value: Option<u8>, field: &str, default: u8, min: u8, max: u8) -> Result<u8, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(invalid(field, format!("must be a prefix length between {min} and {max}"))),
    }
}

/// Origins as browsers send them: `scheme://host[:port]`, no path.
fn origins(texts: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for (i, text) in texts.iter().enumerate() {
        let valid = text.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/')
        });
        if !valid {
            return Err(invalid(
                format!("cors_origins[{i}]"),
                "must be an origin such as https://app.example.com (no path)",
            ));
        }
    }
    Ok(texts)
}

/// CIDR networks or single addresses; `field[i]` names a bad one.
fn networks(texts: &[String], field: &str) -> Result<Vec<IpNet>, ConfigError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                invalid(format!("{field}[{i}]"), "must be a CIDR network such as 10.0.0.0/8, or an IP address")
            })
        })
        .collect()
}

impl FileNamespace {
    fn validate(
        self,
        field: &str,
        env: &impl Fn(&str) -> Option<String>,
        key_ids: &mut HashSet<String>,
    ) -> Result<Namespace, ConfigError> {
        if self.allow.is_empty() {
            return Err(invalid(
                format!("{field}.allow"),
                "must name at least one network, or no /connect could ever succeed",
            ));
        }
        let allow = networks(&self.allow, &format!("{field}.allow"))?;
        if self.credentials.is_empty() {
            return Err(invalid(format!("{field}.credentials"), "must hold at least one credential"));
        }
        let mut credentials = Vec::with_capacity(self.credentials.len());
        for (i, credential) in self.credentials.into_iter().enumerate() {
            let field = format!("{field}.credentials[{i}]");
            let key_id = credential.key_id.clone();
            let valid_key_id = !key_id.is_empty()
                && key_id.len() <= MAX_KEY_ID_LEN
                && key_id.trim() == key_id
                && !key_id.contains(',')
                && !key_id.chars().any(char::is_control);
            if !valid_key_id {
                return Err(invalid(
                    format!("{field}.key_id"),
                    format!(
                        "must be 1 to {MAX_KEY_ID_LEN} bytes without commas, control characters, or leading or trailing spaces"
                    ),
                ));
            }
            if !key_ids.insert(key_id.clone()) {
                return Err(invalid(
                    format!("{field}.key_id"),
                    "is used by another credential; key ids must be unique",
                ));
            }
            let secret = credential.secret(&field, env)?;
            credentials.push(Credential { key_id, secret });
        }
        let defaults = default_connect_budget();
        let connect_budget = ConnectBudget {
            calls_per_minute: per_minute(
                self.connect_per_minute,
                &format!("{field}.connect_per_minute"),
                defaults.calls_per_minute,
            )?,
            users_per_window: match self.connect_users_per_window {
                Some(0) => return Err(invalid(format!("{field}.connect_users_per_window"), "must be at least 1")),
                Some(n) => n,
                None => defaults.users_per_window,
            },
            window: seconds(self.connect_window_secs, &format!("{field}.connect_window_secs"), defaults.window, DAY)?,
            erase_per_minute: per_minute(
                self.erase_per_minute,
                &format!("{field}.erase_per_minute"),
                defaults.erase_per_minute,
            )?,
            id_token_failures_per_minute: per_minute(
                self.id_token_failures_per_minute,
                &format!("{field}.id_token_failures_per_minute"),
                defaults.id_token_failures_per_minute,
            )?,
        };
        let oidc = match self.oidc {
            Some(oidc) => Some(std::sync::Arc::new(oidc.validate(&format!("{field}.oidc"))?)),
            None => None,
        };
        Ok(Namespace { allow, credentials, connect_budget, oidc })
    }
}

impl FileCredential {
    fn secret(&self, field: &str, env: &impl Fn(&str) -> Option<String>) -> Result<Secret, ConfigError> {
        let (source, secret) = read_secret(
            field,
            "secret",
            self.secret.as_ref(),
            self.secret_env.as_ref(),
            self.secret_file.as_ref(),
            env,
        )?
        .ok_or_else(|| invalid(field, "needs one of secret, secret_env or secret_file"))?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(invalid(
                format!("{field}.{source}"),
                format!("the secret must be at least {MIN_SECRET_LEN} bytes; make one with `keyservice gen-secret`"),
            ));
        }
        Ok(secret)
    }
}

/// A secret given at most one way: inline as `<name>`, from the environment variable
/// `<name>_env` names, or from the file `<name>_file` names (readable by its owner
/// only); with the field it came from. `None` when it is not given at all.
fn read_secret(
    field: &str,
    name: &str,
    inline: Option<&Secret>,
    env_name: Option<&String>,
    file: Option<&PathBuf>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, Secret)>, ConfigError> {
    let given: Vec<String> = [
        (inline.is_some(), name.to_owned()),
        (env_name.is_some(), format!("{name}_env")),
        (file.is_some(), format!("{name}_file")),
    ]
    .into_iter()
    .filter_map(|(set, key)| set.then_some(key))
    .collect();
    if given.len() > 1 {
        return Err(invalid(field, format!("gives the {name} more than one way ({}); keep one", given.join(", "))));
    }
    let read = match (inline, env_name, file) {
        (Some(secret), _, _) => (name.to_owned(), secret.clone()),
        (None, Some(variable), _) => {
            let value = env(variable).ok_or_else(|| {
                invalid(format!("{field}.{name}_env"), format!("environment variable {variable} is not set"))
            })?;
            (format!("{name}_env"), Secret::new(value))
        }
        (None, None, Some(path)) => {
            #[cfg(unix)]
            if let Ok(metadata) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(invalid(
                        format!("{field}.{name}_file"),
                        format!(
                            "{} has mode {mode:o}: a secret file must be readable by its owner only (chmod 600)",
                            path.display()
                        ),
                    ));
                }
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("{field}.{name}_file"), format!("cannot read {}: {e}", path.display())))?;
            (format!("{name}_file"), Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        (None, None, None) => return Ok(None),
    };
    Ok(Some(read))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

    fn env(name: &str) -> Option<String> {
        (name == "KS_SECRET_RS1").then(|| SECRET.to_owned())
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, env)
    }

    fn field_of(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { field, .. }) => field,
            Err(other) => panic!("expected an invalid field, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn the_documented_shape_works() {
        let config = parse(
            r#"
            listen = "127.0.0.1:8080"
            data_dir = "./keyservice-data"
            [namespaces.my_cool_website]
            allow = ["127.0.0.1/32", "::1/128"]
            credentials = [ { key_id = "rs-1", secret_env = "KS_SECRET_RS1" } ]
            "#,
        )
        .unwrap();
        let ns = &config.namespaces["my_cool_website"];
        assert_eq!(ns.credentials[0].key_id, "rs-1");
        assert_eq!(ns.credentials[0].secret.expose(), SECRET);
        assert!(ns.allows("127.0.0.1".parse().unwrap()));
        assert!(ns.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!ns.allows("127.0.0.2".parse().unwrap()));
        assert_eq!(config.max_clock_skew, Duration::from_secs(300));
    }

    #[test]
    fn the_memory_budget_is_read_and_checked() {
        assert_eq!(parse("").unwrap().cache_bytes, 64 * 1024 * 1024);
        assert_eq!(parse("cache_bytes = 0").unwrap().cache_bytes, 0);
        assert_eq!(parse("cache_bytes = 1048576").unwrap().cache_bytes, 1 << 20);
        // Not a count of bytes: refused, naming the line.
        for bad in ["cache_bytes = -1", "cache_bytes = \"64MiB\""] {
            let error = parse(&format!("\n{bad}")).unwrap_err().to_string();
            assert!(error.contains("line 2"), "{error}");
        }
    }

    #[test]
    fn storage_settings_are_checked() {
        let storage = |body: &str| parse(&format!("[storage]\n{body}"));
        let config = storage(
            "backend = \"postgres\"\nurl = \"postgres://ks@db.internal:5432/keyservice\"\n\
             password_env = \"KS_SECRET_RS1\"\npool_size = 4\nstatement_timeout_ms = 250",
        )
        .unwrap();
        let Storage::Postgres(database) = &config.storage else { panic!("not postgres") };
        assert_eq!((database.pool_size, database.statement_timeout), (4, Duration::from_millis(250)));
        assert_eq!(database.password.as_ref().unwrap().expose(), SECRET);
        assert!(!format!("{config:?}").contains(SECRET), "the password shows in Debug");
        assert!(matches!(parse("").unwrap().storage, Storage::Sled));

        let with_password = storage("backend = \"postgres\"\nurl = \"postgres://ks:hunter2@db/keyservice\"");
        let error = with_password.err().unwrap().to_string();
        assert!(error.contains("storage.url") && error.contains("password_env"), "{error}");
        assert!(!error.contains("hunter2"), "the error shows the password: {error}");
        assert_eq!(field_of(storage("backend = \"postgres\"")), "storage.url");
        assert_eq!(field_of(storage("backend = \"postgres\"\nurl = \"mysql://x\"")), "storage.url");
        assert_eq!(field_of(storage("backend = \"postgres\"\nurl = \"postgres://db\"")), "storage.url");
        assert_eq!(field_of(storage("backend = \"sled\"\npool_size = 3")), "storage.pool_size");
        assert_eq!(
            field_of(storage("backend = \"postgres\"\nurl = \"postgres://ks@db/k\"\npassword_env = \"UNSET\"")),
            "storage.password_env"
        );
        assert_eq!(
            field_of(storage("backend = \"postgres\"\nurl = \"postgres://ks@db/k\"\nstatement_timeout_ms = 1")),
            "storage.statement_timeout_ms"
        );
        assert!(matches!(storage("backend = \"mongo\""), Err(ConfigError::Syntax(_))));
        let twice = storage(
            "backend = \"postgres\"\nurl = \"postgres://ks@db/k\"\npassword_env = \"KS_SECRET_RS1\"\npassword_file = \"/p\"",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(twice.contains("`storage`") && twice.contains("password_env, password_file"), "{twice}");
        assert_eq!(field_of(parse("node_id = \"a b\"")), "node_id");
        assert_eq!(parse("node_id = \"ks-1\"").unwrap().node_id, "ks-1");
    }

    #[test]
    fn errors_name_the_field() {
        let ns = |body: &str| format!("[namespaces.shop]\n{body}");
        let good_cred = format!(r#"credentials = [{{ key_id = "k", secret = "{SECRET}" }}]"#);
        assert_eq!(field_of(parse("listen = \"nope\"")), "listen");
        assert_eq!(field_of(parse("max_clock_skew_secs = 90000")), "max_clock_skew_secs");
        assert_eq!(field_of(parse("init_ttl_secs = 0")), "init_ttl_secs");
        assert_eq!(field_of(parse("max_header_bytes = 100")), "max_header_bytes");
        assert_eq!(field_of(parse("metrics_listen = \"everywhere\"")), "metrics_listen");
        assert_eq!(field_of(parse("trusted_proxies = [\"10.0.0.0/99\"]")), "trusted_proxies[0]");
        assert_eq!(field_of(parse("trusted_proxies = [\"10.0.0.0/8\"]")), "forwarded_header");
        assert_eq!(field_of(parse("forwarded_header = \"forwarded\"")), "forwarded_header");
        assert_eq!(
            field_of(parse("trusted_proxies = [\"10.0.0.1\"]\nforwarded_header = \"forwarded\"\ntrusted_hops = 0")),
            "trusted_hops"
        );
        assert_eq!(field_of(parse("client_prefix_v4 = 33")), "client_prefix_v4");
        assert_eq!(field_of(parse("client_prefix_v6 = 8")), "client_prefix_v6");
        assert_eq!(field_of(parse("cors_origins = [\"https://app.example.com/path\"]")), "cors_origins[0]");
        assert_eq!(field_of(parse("init_per_minute = 0")), "init_per_minute");
        assert_eq!(field_of(parse("shutdown_grace_secs = 0")), "shutdown_grace_secs");
        assert_eq!(field_of(parse(&ns(&format!("allow = []\n{good_cred}")))), "namespaces.shop.allow");
        assert_eq!(
            field_of(parse(&ns(&format!("allow = [\"10.0.0.0/33\"]\n{good_cred}")))),
            "namespaces.shop.allow[0]"
        );
        assert_eq!(field_of(parse(&ns("allow = [\"::1\"]\ncredentials = []"))), "namespaces.shop.credentials");
        assert_eq!(
            field_of(parse(&ns("allow = [\"::1\"]\ncredentials = [{ key_id = \"k\" }]"))),
            "namespaces.shop.credentials[0]"
        );
        let both = format!(
            r#"allow = ["::1"]
credentials = [{{ key_id = "k", secret = "{SECRET}", secret_env = "KS_SECRET_RS1" }}]"#
        );
        let error = parse(&ns(&both)).err().unwrap().to_string();
        assert!(error.contains("credentials[0]") && error.contains("secret, secret_env"), "{error}");
        assert!(!error.contains(SECRET), "the error shows the secret: {error}");
        assert_eq!(
            field_of(parse(&ns("allow = [\"::1\"]\ncredentials = [{ key_id = \"k\", secret_env = \"MISSING\" }]"))),
            "namespaces.shop.credentials[0].secret_env"
        );
        assert_eq!(
            field_of(parse(&ns("allow = [\"::1\"]\ncredentials = [{ key_id = \"k\", secret = \"short\" }]"))),
            "namespaces.shop.credentials[0].secret"
        );
        assert_eq!(
            field_of(parse(&ns(&format!(
                "allow = [\"::1\"]\ncredentials = [{{ key_id = \"a,b\", secret = \"{SECRET}\" }}]"
            )))),
            "namespaces.shop.credentials[0].key_id"
        );
        assert_eq!(
            field_of(parse(&ns(&format!(
                "allow = [\"::1\"]\ncredentials = [{{ key_id = \"k\", secret = \"{SECRET}\", secret_env = \"KS_SECRET_RS1\" }}]"
            )))),
            "namespaces.shop.credentials[0]"
        );
        let twice =
            format!("[namespaces.a]\nallow = [\"::1\"]\n{good_cred}\n[namespaces.b]\nallow = [\"::1\"]\n{good_cred}");
        assert_eq!(field_of(parse(&twice)), "namespaces.b.credentials[0].key_id");
        assert_eq!(
            field_of(parse(&format!("[namespaces.\"bad name\"]\nallow = [\"::1\"]\n{good_cred}"))),
            "namespaces.bad name"
        );
    }

    #[test]
    fn syntax_errors_name_unknown_fields_and_hide_values() {
        let err = parse("max_conections = 5").unwrap_err().to_string();
        assert!(err.contains("max_conections"), "{err}");
        let err = parse(
            "[namespaces.shop]\nallow = [\"::1\"]\ncredentials = [{ key_id = \"k\", secret = 12345678901234567890 }]",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("12345678901234567890"), "{err}");
    }

    #[test]
    fn secret_file_is_read_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).unwrap();
        let text = format!(
            "[namespaces.shop]\nallow = [\"::1\"]\ncredentials = [{{ key_id = \"k\", secret_file = {:?} }}]",
            path.display().to_string()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let refused = parse(&text).unwrap_err().to_string();
            assert!(
                refused.contains("secret_file") && refused.contains("644") && !refused.contains(SECRET),
                "{refused}"
            );
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let config = parse(&format!(
            "[namespaces.shop]\nallow = [\"::1\"]\ncredentials = [{{ key_id = \"k\", secret_file = {:?} }}]",
            path.display().to_string()
        ))
        .unwrap();
        assert_eq!(config.namespaces["shop"].credentials[0].secret.expose(), SECRET);
    }

    #[test]
    fn the_deployment_example_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("rs-1");
        std::fs::write(&secret, SECRET).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let text = include_str!("../../deploy/keyservice.toml")
            .replace("/etc/keyservice/secrets/rs-1", secret.to_str().unwrap());
        let config = parse(&text).unwrap();
        assert!(config.tls.is_some());
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.namespaces["my_cool_website"].connect_budget.users_per_window, 10_000);
    }

    #[test]
    fn files_default_to_beside_the_data_directory() {
        let config = parse("data_dir = \"/srv/ks/one\"\naudit_log_file = \"/var/log/ks.jsonl\"").unwrap();
        assert_eq!(config.master_key_file, PathBuf::from("/srv/ks/one.master.key"));
        assert_eq!(config.erasure_ledger_file, PathBuf::from("/srv/ks/one.erasures.jsonl"));
        assert_eq!(config.admin_socket, PathBuf::from("/srv/ks/one.admin.sock"));
        assert_eq!(config.audit_log_file, PathBuf::from("/var/log/ks.jsonl"), "a configured path stays");
        let two = Config::for_data_dir(PathBuf::from("/srv/ks/two"));
        assert_ne!(two.master_key_file, config.master_key_file);
        assert_eq!(Config::default().master_key_file, PathBuf::from("./keyservice-data.master.key"));
    }

    #[test]
    fn dev_config_allows_loopback_only() {
        let (config, secret) = Config::dev(PathBuf::from("/tmp/x")).unwrap();
        let ns = &config.namespaces[DEV_NAMESPACE];
        assert_eq!(ns.credentials[0].secret, secret);
        assert!(ns.allows("127.0.0.1".parse().unwrap()));
        assert!(ns.allows("::1".parse().unwrap()));
        assert!(!ns.allows("192.0.2.1".parse().unwrap()));
    }
}
