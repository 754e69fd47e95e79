//! A [`Store`](super::Store) in a PostgreSQL database that several nodes share.
//!
//! Every node keeps nothing of its own but caches it can lose: pending inits, sessions,
//! key versions, the keyring, the replay nonces and the connect budgets all live in the
//! database, so any node can serve any request and a node that dies loses nothing
//! acknowledged.
//!
//! Layout (see `docs/storage.md`): the same pseudonymous keys and sealed envelopes as
//! sled's, split into columns where the database must index or compare them.
//!
//! | table              | key                          | other columns                               |
//! |--------------------|------------------------------|---------------------------------------------|
//! | `ks_keyring`       | `name`                       | `value` (wrapped key)                       |
//! | `ks_dek`           | `user_key` (64-byte prefix)  | `wrapped`                                   |
//! | `ks_pending_init`  | `id`                         | `expires_at`, `sealed`                      |
//! | `ks_session`       | `id`                         | `user_key`, `expires_at`, `last_used`, `sealed`, `credential` |
//! | `ks_access`        | `user_key`, `id`             | `sealed`                                    |
//! | `ks_key_head`      | `user_key`                   | `latest` (the row a PUT locks)              |
//! | `ks_key_version`   | `user_key`, `version`        | `created_at`, `sealed`                      |
//! | `ks_nonce`         | `fingerprint`                | `dated`                                     |
//! | `ks_meta`          | `name`                       | `value`                                     |
//! | `ks_connect_calls` | `namespace`, `minute`        | `calls`                                     |
//! | `ks_connect_users` | `namespace`, `window_start`, `user_id` |                                   |
//! | `ks_connect_windows` | `namespace`, `window_start` | `users`                                    |
//!
//! **SQL subset.** Only what CockroachDB and YugabyteDB also accept: `BYTEA`, `BIGINT`,
//! `BOOLEAN` and `TEXT` columns; primary keys and plain secondary indexes; `INSERT … ON
//! CONFLICT … DO NOTHING / DO UPDATE`, `DELETE … RETURNING`, `SELECT … FOR UPDATE`;
//! explicit transactions at the database's default isolation (READ COMMITTED on
//! PostgreSQL, SERIALIZABLE on CockroachDB), retried on serialization failure (40001),
//! deadlock (40P01) and a lost insert race (23505). No advisory locks, no stored
//! procedures, no triggers, no sequences.
//!
//! **Calls made together** ([`batch`], [`writes`]): the calls every signed request makes
//! (its session, its nonce, the user's DEK and latest key, a PUT) go to per-kind queues,
//! and each queue's driver asks for everything queued in one statement (a PUT batch: one
//! transaction), one statement of a kind at a time. The answers are the same as one call
//! at a time would give; the database does one statement and one commit for many.
//!
//! **Durable** means committed: every connection runs with `synchronous_commit = on`
//! whatever the server's default, and the store refuses to open on a server running
//! with `fsync = off`. A call whose commit cannot be confirmed (the connection dropped,
//! the statement timed out) fails as [`StoreError::Unavailable`]: not acknowledged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use keyservice_client::protocol::Secret;
use tokio_postgres::{GenericClient, Row};

mod batch;
mod coordination;
mod db;
mod fence;
mod guard;
mod maintenance;
mod records;
mod writes;

use self::db::{Attempt, Db};
use super::{KeyRecord, Pseudonym, SessionRecord, StoreError, UserKey};

/// How to reach the shared database (`[storage] backend = "postgres"`).
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/database`, without a password.
    pub url: String,
    /// The password, from `password_env` or `password_file`; `None` for none.
    pub password: Option<Secret>,
    /// Connections this node keeps open at most (`pool_size`, default 16).
    pub pool_size: usize,
    /// Longest any statement may run before the database cancels it
    /// (`statement_timeout_ms`, default 5,000).
    pub statement_timeout: Duration,
    /// Longest to wait for a connection to the database (`connect_timeout_secs`,
    /// default 5).
    pub connect_timeout: Duration,
    /// Verify the database over TLS against this CA file (`ca_file`); `None`: plain TCP,
    /// for a database on loopback or a private link only.
    pub ca_file: Option<PathBuf>,
}

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i32 = 2;

/// The statements that take a schema from version `n` to `n + 1`, at index `n`.
const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE ks_keyring (name BYTEA PRIMARY KEY, value BYTEA NOT NULL)",
        "CREATE TABLE ks_dek (user_key BYTEA PRIMARY KEY, wrapped BYTEA NOT NULL)",
        "CREATE TABLE ks_pending_init (id BYTEA PRIMARY KEY, expires_at BIGINT NOT NULL, sealed BYTEA NOT NULL)",
        "CREATE INDEX ks_pending_init_expiry ON ks_pending_init (expires_at)",
        "CREATE TABLE ks_session (id BYTEA PRIMARY KEY, user_key BYTEA NOT NULL, expires_at BIGINT NOT NULL, \
     last_used BIGINT NOT NULL, sealed BYTEA NOT NULL)",
        "CREATE INDEX ks_session_user ON ks_session (user_key)",
        "CREATE INDEX ks_session_expiry ON ks_session (expires_at)",
        "CREATE INDEX ks_session_last_used ON ks_session (last_used)",
        "CREATE TABLE ks_key_head (user_key BYTEA PRIMARY KEY, latest BIGINT NOT NULL)",
        "CREATE TABLE ks_key_version (user_key BYTEA NOT NULL, version BIGINT NOT NULL, created_at BIGINT NOT NULL, \
     sealed BYTEA NOT NULL, PRIMARY KEY (user_key, version))",
        "CREATE TABLE ks_nonce (fingerprint BIGINT PRIMARY KEY, dated BIGINT NOT NULL)",
        "CREATE INDEX ks_nonce_dated ON ks_nonce (dated)",
        "CREATE TABLE ks_meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
        "CREATE TABLE ks_connect_calls (namespace BYTEA NOT NULL, minute BIGINT NOT NULL, calls BIGINT NOT NULL, \
     PRIMARY KEY (namespace, minute))",
        "CREATE TABLE ks_connect_users (namespace BYTEA NOT NULL, window_start BIGINT NOT NULL, user_id BYTEA NOT NULL, \
     PRIMARY KEY (namespace, window_start, user_id))",
        "CREATE TABLE ks_connect_windows (namespace BYTEA NOT NULL, window_start BIGINT NOT NULL, users BIGINT NOT NULL, \
     PRIMARY KEY (namespace, window_start))",
    ],
    &[
        "CREATE TABLE ks_access (user_key BYTEA NOT NULL, id BYTEA NOT NULL, sealed BYTEA NOT NULL, \
     PRIMARY KEY (user_key, id))",
        "CREATE INDEX ks_access_id ON ks_access (id)",
        // Apart from `sealed`, so that nodes of the previous version still read the session.
        "ALTER TABLE ks_session ADD COLUMN credential BYTEA",
    ],
];

/// Attempts of one transaction that lost a race before the call fails.
const MAX_ATTEMPTS: u32 = 8;
/// Connect-budget rows are kept this long past their window (the longest window).
const BUDGET_RETENTION_SECS: u64 = 24 * 60 * 60;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database could not be reached, or refused us.
    #[error("cannot reach the database: {0}")]
    Connect(String),
    /// The database's schema is newer than this binary knows.
    #[error(
        "the database schema is version {found}, newer than this keyservice knows ({known}); run a keyservice at least as new as the one that migrated it"
    )]
    NewerSchema {
        /// Its version.
        found: i32,
        /// Ours.
        known: i32,
    },
    /// The server does not make commits durable.
    #[error("the database runs with fsync = off, so a committed write could be lost; keyservice refuses to use it")]
    NotDurable,
    /// Migrating failed.
    #[error("migrating the database schema failed: {0}")]
    Migrate(String),
    /// The TLS settings could not be loaded.
    #[error("cannot set up TLS to the database: {0}")]
    Tls(String),
    /// Another live node on this database has the same `node_id`.
    #[error(
        "another live node on this database already runs as node_id \"{0}\" (its connections are named keyservice/{0}); give each node its own node_id (it defaults to the host name, so several nodes on one host need one each)"
    )]
    NodeIdTaken(String),
}

/// A node's claim on its `node_id` ([`PostgresStore::claim_node_id`]); released when
/// dropped.
pub struct NodeClaim {
    _client: deadpool_postgres::ClientWrapper,
}

impl OpenError {
    /// Whether the operator must change something before a restart can work (exit 2).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::NewerSchema { .. } | Self::NotDurable | Self::Tls(_) | Self::NodeIdTaken(_))
    }
}

/// How long after the database last refused a write for lack of space `/readyz` stays
/// red.
const FULL_FOR_SECS: u64 = 30;

/// A [`Store`](super::Store) on a shared PostgreSQL database.
pub struct PostgresStore {
    db: Db,
    /// This node's name: its erasure-ledger mark is its own.
    node_id: String,
    /// The calls that concurrent requests make together.
    batches: batch::Batches,
}

fn int(value: u64) -> i64 {
    // Times, versions and counts stay far below 2^63; a fingerprint is 64 random bits
    // stored as their two's-complement.
    value as i64
}

fn uint(value: i64) -> u64 {
    value as u64
}

fn pseudonym(row: &Row, column: &str, kind: &'static str) -> Result<Pseudonym, StoreError> {
    let bytes: &[u8] = row.try_get(column).map_err(|_| StoreError::Corrupt { kind })?;
    bytes.try_into().map_err(|_| StoreError::Corrupt { kind })
}

fn user_of(row: &Row) -> Result<UserKey, StoreError> {
    let bytes: &[u8] = row.try_get("user_key").map_err(|_| StoreError::Corrupt { kind: "session" })?;
    if bytes.len() != 64 {
        return Err(StoreError::Corrupt { kind: "session" });
    }
    let (namespace, user) = bytes.split_at(32);
    Ok(UserKey {
        namespace: namespace.try_into().map_err(|_| StoreError::Corrupt { kind: "session" })?,
        user: user.try_into().map_err(|_| StoreError::Corrupt { kind: "session" })?,
    })
}

fn session_of(row: &Row) -> Result<SessionRecord, StoreError> {
    let corrupt = |_| StoreError::Corrupt { kind: "session" };
    Ok(SessionRecord {
        user: user_of(row)?,
        sealed: row.try_get("sealed").map_err(corrupt)?,
        credential: row.try_get("credential").map_err(corrupt)?,
        expires_at: uint(row.try_get("expires_at").map_err(corrupt)?),
        last_used: uint(row.try_get("last_used").map_err(corrupt)?),
    })
}

fn key_of(row: &Row) -> Result<KeyRecord, StoreError> {
    let corrupt = |_| StoreError::Corrupt { kind: "key version" };
    Ok(KeyRecord {
        version: uint(row.try_get("version").map_err(corrupt)?),
        created_at: uint(row.try_get("created_at").map_err(corrupt)?),
        sealed: row.try_get("sealed").map_err(corrupt)?,
    })
}

impl PostgresStore {
    /// Claims this store's `node_id` for as long as the returned claim lives: a session
    /// advisory lock on a connection taken out of the pool, which the database releases
    /// when that session ends (the process exits or dies, or the connection breaks). Two
    /// live nodes with one id would share a ledger mark and sign audit lines alike.
    ///
    /// # Errors
    ///
    /// [`OpenError::NodeIdTaken`] when another live session holds it; connection errors.
    pub async fn claim_node_id(&self) -> Result<NodeClaim, OpenError> {
        let client = self.db.pool.get().await.map_err(|e| OpenError::Connect(describe_pool_error(&e)))?;
        let held: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('keyservice node ' || $1::text, 0))",
                &[&self.node_id],
            )
            .await
            .map_err(|e| OpenError::Connect(describe(&e)))?
            .get(0);
        if !held {
            return Err(OpenError::NodeIdTaken(self.node_id.clone()));
        }
        // Out of the pool: it is never recycled or handed to a request.
        Ok(NodeClaim { _client: deadpool_postgres::Object::take(client) })
    }

    /// Connects, checks the server keeps commits durable, and brings the schema to
    /// [`SCHEMA_VERSION`] (safe when several nodes start at once).
    ///
    /// # Errors
    ///
    /// [`OpenError`]: unreachable database, a schema newer than this binary, a server
    /// without fsync, or a failed migration.
    pub async fn open(config: &PostgresConfig, node_id: &str) -> Result<Self, OpenError> {
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|_| OpenError::Connect("the storage URL does not parse".to_owned()))?;
        if let Some(password) = &config.password {
            pg.password(password.expose());
        }
        pg.connect_timeout(config.connect_timeout);
        pg.application_name(format!("keyservice/{node_id}"));
        pg.options(format!(
            "-c synchronous_commit=on -c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            config.statement_timeout.as_millis(),
            (config.statement_timeout * 2).as_millis()
        ));
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let fence = Arc::new(fence::Fence::default());
        let manager = match &config.ca_file {
            Some(ca_file) => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                let tls = tls_connector(ca_file)?;
                fence.learn(&pg, config.connect_timeout, tls.clone()).await;
                Manager::from_config(pg, tls, manager_config)
            }
            None => {
                fence.learn(&pg, config.connect_timeout, tokio_postgres::NoTls).await;
                Manager::from_config(pg, tokio_postgres::NoTls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let fence = fence.clone();
                Box::pin(async move {
                    let (timeline, server) =
                        fence::timeline(&**client).await.map_err(deadpool_postgres::HookError::Backend)?;
                    fence.admit(&server, timeline).map_err(|refusal| {
                        tracing::error!("{refusal}");
                        deadpool_postgres::HookError::message(refusal)
                    })
                })
            }))
            .build()
            .map_err(|e| OpenError::Connect(e.to_string()))?;
        let db = Db::new(pool, config.statement_timeout);
        let batches = batch::Batches::start(&db);
        let store = Self { db, node_id: node_id.to_owned(), batches };
        let client = store.db.pool.get().await.map_err(|e| OpenError::Connect(describe_pool_error(&e)))?;
        let fsync: String =
            client.query_one("SHOW fsync", &[]).await.map_err(|e| OpenError::Connect(describe(&e)))?.get(0);
        if fsync != "on" {
            return Err(OpenError::NotDurable);
        }
        migrate(&client).await?;
        Ok(store)
    }

    fn ledger_mark_name(&self) -> String {
        format!("ledger_mark/{}", self.node_id)
    }

    /// The row `/readyz` rewrites to see that commits complete.
    fn heartbeat_name(&self) -> String {
        format!("heartbeat/{}", self.node_id)
    }
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let cause = std::error::Error::source(error).map(|s| format!(": {s}")).unwrap_or_default();
            format!("{error}{cause}")
        }
    }
}

fn describe_pool_error(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(error) => describe(error),
        other => other.to_string(),
    }
}

fn tls_connector(ca_file: &std::path::Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, OpenError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certificates = rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| OpenError::Tls(format!("cannot read {}: {e}", ca_file.display())))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| OpenError::Tls(format!("{}: {e}", ca_file.display())))?;
        roots.add(certificate).map_err(|e| OpenError::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(OpenError::Tls(format!("{} holds no certificate", ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OpenError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Brings the schema to [`SCHEMA_VERSION`]. Each step runs in a transaction holding the
/// version row's lock, so nodes starting together take turns and the later ones find
/// the work done; no advisory lock is needed.
async fn migrate(client: &Object) -> Result<(), OpenError> {
    let migrate_error = |e: tokio_postgres::Error| OpenError::Migrate(describe(&e));
    for attempt in 0.. {
        // Two sessions creating the same table at once can collide in the catalog; the
        // loser finds the table there on its next try.
        let created = client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS ks_schema (singleton BOOLEAN PRIMARY KEY CHECK (singleton), version INT NOT NULL); \
                 INSERT INTO ks_schema (singleton, version) VALUES (TRUE, 0) ON CONFLICT (singleton) DO NOTHING",
            )
            .await;
        match created {
            Ok(()) => break,
            Err(e) if attempt < 10 && e.code().is_some_and(|c| c.code().starts_with("23") || c.code() == "42P07") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(migrate_error(e)),
        }
    }
    loop {
        client.batch_execute("BEGIN").await.map_err(migrate_error)?;
        let result = async {
            let version: i32 = client
                .query_one("SELECT version FROM ks_schema WHERE singleton FOR UPDATE", &[])
                .await
                .map_err(migrate_error)?
                .get(0);
            if version > SCHEMA_VERSION {
                return Err(OpenError::NewerSchema { found: version, known: SCHEMA_VERSION });
            }
            if version == SCHEMA_VERSION {
                return Ok(true);
            }
            let step = usize::try_from(version).map_err(|_| OpenError::Migrate(format!("schema version {version}")))?;
            for statement in MIGRATIONS[step] {
                client.batch_execute(statement).await.map_err(migrate_error)?;
            }
            client
                .execute("UPDATE ks_schema SET version = $1 WHERE singleton", &[&(version + 1)])
                .await
                .map_err(migrate_error)?;
            tracing::info!(from = version, to = version + 1, "database schema migrated");
            Ok(false)
        }
        .await;
        match result {
            Ok(done) => {
                client.batch_execute("COMMIT").await.map_err(migrate_error)?;
                if done {
                    return Ok(());
                }
            }
            Err(error) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(error);
            }
        }
    }
}

/// The schema version of the database, without changing it (for tests and `doctor`
/// tools): 0 when keyservice never ran on it.
///
/// # Errors
///
/// When the database cannot be read.
pub async fn schema_version(client: &impl GenericClient) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = client.query_one("SELECT to_regclass('ks_schema') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(0);
    }
    Ok(client.query_one("SELECT version FROM ks_schema WHERE singleton", &[]).await?.get(0))
}

/// A transaction on a pooled connection, rolled back unless committed.
async fn begin(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>, Attempt> {
    Ok(client.transaction().await?)
}

/// Runs `sql` as a statement prepared once per connection: one round trip per call
/// instead of a parse and an execute.
async fn sql_query<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query(&statement, params).await
}

async fn sql_query_opt<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<Row>, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_opt(&statement, params).await
}

async fn sql_query_one<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Row, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.query_one(&statement, params).await
}

async fn sql_execute<C: deadpool_postgres::GenericClient + Sync>(
    client: &C,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    client.execute(&statement, params).await
}

impl PostgresStore {
    async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .reading(|client| async move {
                let row = sql_query_opt(&client, "SELECT value FROM ks_meta WHERE name = $1", &[&name]).await?;
                Ok(row.map(|row| row.get(0)))
            })
            .await
    }

    async fn meta_set(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db.retrying(|client| async move {
            sql_execute(
                &client,
                "INSERT INTO ks_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&name, &value],
            )
            .await?;
            Ok(())
        })
        .await
    }
}
