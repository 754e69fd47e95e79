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
mod file;
mod master_key;
mod oidc;
mod secret;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use keyservice_client::protocol::Secret;
use serde::Deserialize;

use self::file::FileConfig;
pub use self::master_key::MasterKeySource;
use crate::crypto::token::TokenSettings;
use crate::limits::{ClientPrefix, ConnectBudget};
use crate::proxy::ProxyTrust;
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
    /// Where the master key is kept (`[master_key] source`): the file (default) or a
    /// PKCS#11 token.
    pub master_key_source: MasterKeySource,
    /// The token key `[master_key]` names: the master key with `source = "pkcs11"`, the
    /// target of `rotate-master-key --new-key-label` otherwise.
    pub master_key_token: Option<TokenSettings>,
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
            master_key_source: MasterKeySource::File,
            master_key_token: None,
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
        FileConfig::read(path, data_dir)?.validate(&|name: &str| std::env::var(name).ok())
    }

    /// [`Config::load_with_data_dir`] for the operator commands (backup, restore,
    /// rotation), which never use the namespaces: their credentials are not read, so
    /// secrets kept in the environment of `serve` alone need not be present.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first field that is wrong.
    pub fn load_for_operator(path: &Path, data_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        FileConfig::read(path, data_dir)?.without_namespaces().validate(&|name: &str| std::env::var(name).ok())
    }

    /// The built-in defaults, with the data (and the files beside it) in `data_dir`.
    pub fn for_data_dir(data_dir: PathBuf) -> Self {
        Self {
            master_key_file: beside(&data_dir, ".master.key"),
            master_key_source: MasterKeySource::File,
            master_key_token: None,
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
        FileConfig::parse(text)?.validate(&env)
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

/// A configuration error for `field`.
fn invalid(field: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_string(), reason: reason.into() }
}

/// A duration setting in whole seconds, 1 to `max`; `default` when not given.
fn seconds(value: Option<u64>, field: &str, default: Duration, max: Duration) -> Result<Duration, ConfigError> {
    let Some(secs) = value else { return Ok(default) };
    if secs == 0 || secs > max.as_secs() {
        return Err(invalid(field, format!("must be between 1 and {} seconds", max.as_secs())));
    }
    Ok(Duration::from_secs(secs))
}

fn loopback_v4() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8))
}

fn loopback_v6() -> IpNet {
    IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
}
