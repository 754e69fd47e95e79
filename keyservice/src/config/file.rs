//! The configuration file as TOML gives it, and its validation into a [`Config`](super::Config).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use keyservice_client::protocol::Secret;
use keyservice_client::protocol::ss1::{MAX_CLOCK_SKEW, MAX_KEY_ID_LEN};
use keyservice_client::protocol::wire::MAX_NAMESPACE_LEN;
use serde::Deserialize;

use super::describe;
use super::master_key::FileMasterKey;
use super::oidc::FileOidc;
use super::secret::read_secret;
use super::{
    Config, ConfigError, Credential, DEFAULT_DATA_DIR, LogFormat, MIN_SECRET_LEN, Namespace, PostgresConfig, Storage,
    default_connect_budget, invalid, per_minute, seconds, valid_node_id,
};
use crate::limits::{ClientPrefix, ConnectBudget};
use crate::proxy::{ForwardedHeader, ProxyTrust};
use crate::tls::TlsFiles;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
    master_key: Option<FileMasterKey>,
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

fn count(value: Option<usize>, field: &str, default: usize, min: usize, max: usize) -> Result<usize, ConfigError> {
    let Some(n) = value else { return Ok(default) };
    if !(min..=max).contains(&n) {
        return Err(invalid(field, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl FileConfig {
    /// The config file at `path`, parsed but not validated, with `data_dir` (when
    /// given) in place of its own.
    pub(super) fn read(path: &Path, data_dir: Option<PathBuf>) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut file = Self::parse(&text)?;
        if data_dir.is_some() {
            file.data_dir = data_dir;
        }
        Ok(file)
    }

    /// TOML text, parsed but not validated; a syntax error names line and key, never a value.
    pub(super) fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(describe::describe(text, &e)))
    }

    /// The same file without its namespaces, whose credentials are then never read.
    pub(super) fn without_namespaces(mut self) -> Self {
        self.namespaces.clear();
        self
    }

    pub(super) fn validate(self, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
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
        let (master_key_source, master_key_token) = match self.master_key {
            Some(table) => table.validate(env)?,
            None => (defaults.master_key_source, None),
        };
        Ok(Config {
            listen,
            data_dir: self.data_dir.unwrap_or(defaults.data_dir),
            master_key_file: self.master_key_file.unwrap_or(defaults.master_key_file),
            master_key_source,
            master_key_token,
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
    pub(super) fn validate(self, env: &impl Fn(&str) -> Option<String>) -> Result<Storage, ConfigError> {
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
