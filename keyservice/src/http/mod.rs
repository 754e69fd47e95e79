//! HTTP: one [`App::handle`] that routes `(method, path)` to one small handler per
//! endpoint, and wraps every answer in the same security headers.
//!
//! This layer knows the [`Store`] trait, never a storage engine.

mod body;
mod connect;
mod cors;
mod health;
mod identity;
mod init;
mod key;
mod response;
mod session;
mod signed;
mod subject;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use keyservice_client::protocol::Secret;

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::config::{Config, Namespace};
use crate::crypto::master::MasterKey;
use crate::error::{Error, RequestError};
use crate::escrow::{Escrow, Policy};
use crate::ledger::ErasureLedger;
use crate::limits::{Budgets, Limiter};
use crate::metrics::Metrics;
use crate::store::{Pseudonym, Store, StoreError};

pub use self::body::RequestBody;
pub(crate) use self::response::early_answer_headers;

/// The request handler, shared by every connection: cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) escrow: Escrow,
    auth: Authenticator,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Limiter,
    pub(crate) audit: AuditLog,
    /// The free-space reserve.
    pub(crate) disks: crate::disk::DiskGuard,
    /// One audit line per window for repeated refusals.
    denials: crate::audit::DenialDigest,
    /// `/metrics` is served on its own listener, not this one.
    metrics_listen_separately: bool,
    proxies: crate::proxy::ProxyTrust,
    cors: cors::Cors,
    /// The namespaces, replaced whole by [`App::reload_namespaces`].
    tenants: RwLock<Arc<Tenants>>,
    init_ttl: Duration,
    session_ttl: Duration,
    max_key_bytes: usize,
    body_read_timeout: Duration,
    /// This node's name, in every audit line.
    node_id: String,
}

/// The configured namespaces, as one snapshot: a request sees either the old set or the
/// new one, never a mix.
pub(crate) struct Tenants {
    pub(crate) namespaces: HashMap<String, Namespace>,
    /// Credential key id → (namespace, secret), for `/connect`.
    pub(crate) credentials: HashMap<String, (String, Secret)>,
    /// The namespaces' pseudonyms: a session whose namespace is not here is refused.
    pub(crate) pseudonyms: HashSet<Pseudonym>,
}

impl Tenants {
    fn new(namespaces: &BTreeMap<String, Namespace>, escrow: &Escrow) -> Self {
        let credentials = namespaces
            .iter()
            .flat_map(|(name, ns)| {
                ns.credentials.iter().map(move |c| (c.key_id.clone(), (name.clone(), c.secret.clone())))
            })
            .collect();
        Self {
            pseudonyms: namespaces.keys().map(|name| escrow.namespace(name)).collect(),
            namespaces: namespaces.clone().into_iter().collect(),
            credentials,
        }
    }
}

/// A path the server serves and the methods it takes there.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The exact path.
    pub path: &'static str,
    /// The methods, as the `Allow` header lists them.
    pub allow: &'static str,
}

/// Every route. The router consults this table first, so a path or method missing here
/// cannot be reached; `docs/openapi.yaml` is checked against it.
pub const ROUTES: &[Route] = &[
    Route { path: "/init", allow: "POST" },
    Route { path: "/connect", allow: "POST" },
    Route { path: "/key", allow: "GET, PUT, DELETE" },
    Route { path: "/key/history", allow: "GET" },
    Route { path: "/session", allow: "DELETE" },
    Route { path: "/erase", allow: "POST" },
    Route { path: "/export", allow: "POST" },
    Route { path: "/healthz", allow: "GET" },
    Route { path: "/readyz", allow: "GET" },
    Route { path: "/metrics", allow: "GET" },
];

/// What the server knows about a request besides its content.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The request id: the client's `X-Request-Id` when it is sane, else a new one.
    pub id: String,
    /// The client's address (see `client_ip`).
    pub client: IpAddr,
}

/// How long repeated refusals of one client network share one audit line.
const DENIAL_WINDOW: Duration = Duration::from_secs(60);

/// Largest `/connect` body accepted, in bytes.
const MAX_CONNECT_BODY: usize = 4096;

impl App {
    /// The handler for `config`, over `store` sealed under `master`. Re-applies the
    /// erasure ledger before it returns.
    ///
    /// # Errors
    ///
    /// Fails when the master key does not match the store, or the store, ledger or replay
    /// memory cannot be read.
    pub async fn new(config: &Config, store: Arc<dyn Store>, master: &MasterKey) -> Result<Self, Error> {
        let ledger = ErasureLedger::open(&config.erasure_ledger_file).map_err(|e| Error::Ledger(e.to_string()))?;
        let escrow = Escrow::open(store.clone(), master, ledger, Policy::from(config)).await?;
        let auth =
            Authenticator::open(store, config.max_clock_skew, config.header_read_timeout + config.body_read_timeout)
                .await?;
        let audit = AuditLog::open_rotating(&config.audit_log_file, config.audit_fail_closed, config.audit_max_bytes)
            .map_err(Error::Audit)?;
        let limiter = Limiter::new(
            Budgets {
                init_per_minute: config.init_per_minute,
                auth_failures_per_minute: config.auth_failures_per_minute,
                max_pending_inits: config.max_pending_inits,
                client_prefix: config.client_prefix,
            },
            config.namespaces.iter().map(|(name, ns)| (name.clone(), ns.connect_budget)),
        );
        limiter.set_pending_inits(escrow.store().counts().await?.pending_inits, crate::time::now());
        let tenants = RwLock::new(Arc::new(Tenants::new(&config.namespaces, &escrow)));
        Ok(Self {
            inner: Arc::new(Inner {
                escrow,
                auth,
                metrics: Metrics::new(),
                limiter,
                audit,
                denials: crate::audit::DenialDigest::new(DENIAL_WINDOW),
                disks: crate::disk::DiskGuard::new(
                    matches!(config.storage, crate::config::Storage::Sled).then_some(config.data_dir.as_path()),
                    &config.audit_log_file,
                    &config.erasure_ledger_file,
                    config.min_free_bytes,
                ),
                metrics_listen_separately: config.metrics_listen.is_some(),
                proxies: config.proxies.clone(),
                cors: cors::Cors::new(config.cors_origins.clone()),
                tenants,
                init_ttl: config.init_ttl,
                session_ttl: config.session_ttl,
                max_key_bytes: config.max_key_bytes,
                body_read_timeout: config.body_read_timeout,
                node_id: config.node_id.clone(),
            }),
        })
    }

    /// The namespaces as they are now.
    pub(crate) fn tenants(&self) -> Arc<Tenants> {
        self.inner.tenants.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// What `client`'s failed authentications and open connections count against: its
    /// own address when some namespace allows it (a Real Service, which a neighbour in
    /// its network must not be able to lock out), else its network.
    pub fn client_key(&self, client: IpAddr) -> ipnet::IpNet {
        if self.tenants().namespaces.values().any(|ns| ns.allows(client)) {
            ipnet::IpNet::from(client.to_canonical())
        } else {
            self.inner.limiter.network_of(client)
        }
    }

    /// Replaces the namespaces (credentials, allowlists, budgets) with those of
    /// `config`, at once: requests already past authentication finish under the old
    /// set. A removed namespace's sessions and a removed credential stop working.
    pub fn reload_namespaces(&self, config: &Config) {
        let tenants = Arc::new(Tenants::new(&config.namespaces, &self.inner.escrow));
        self.inner.limiter.set_namespaces(config.namespaces.iter().map(|(name, ns)| (name.clone(), ns.connect_budget)));
        *self.inner.tenants.write().unwrap_or_else(std::sync::PoisonError::into_inner) = tenants;
    }

    /// Counts a connection closed at accept (`per_client`: over the per-client cap;
    /// `accept_failed`: the system refused, e.g. out of file descriptors).
    pub(crate) fn connection_refused(&self, reason: &'static str) {
        self.inner.metrics.connection_refused(reason);
    }

    /// Finishes serving: records the replay floor and flushes the store. Call once no
    /// more requests will be handled.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be written.
    pub async fn close(&self) -> Result<(), StoreError> {
        if let Err(error) = self.inner.escrow.flush_accesses().await {
            tracing::warn!(%error, "writing the last access history entries failed");
        }
        self.inner.auth.close().await?;
        self.audit_denial_summaries(true);
        self.sync_audit();
        self.inner.escrow.store().flush().await
    }

    /// Answers one request from `peer`. Never fails: errors become error responses.
    pub async fn handle<B: RequestBody>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.handle_on(request, peer, false).await
    }

    /// Answers one request on the metrics listener: `/metrics`, `/healthz` and `/readyz`
    /// only.
    pub async fn handle_metrics<B: RequestBody>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.handle_on(request, peer, true).await
    }

    async fn handle_on<B: RequestBody>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        metrics_listener: bool,
    ) -> Response<Full<Bytes>> {
        let started = std::time::Instant::now();
        let client = self.inner.proxies.client_ip(peer.ip(), request.headers());
        // An unusable chain from a trusted proxy names nobody: the request is refused
        // below, and logged under the proxy's address.
        let info =
            RequestInfo { id: request_id(request.headers()), client: client.unwrap_or(peer.ip().to_canonical()) };
        let method = request.method().clone();
        // CORS works on the route name: only known routes have CORS rules, and unknown
        // paths all come out as "other" without a copy of the path.
        let route = route_name(request.uri().path());
        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let probe = matches!(route, "/healthz" | "/readyz" | "/metrics");
        let result = if metrics_listener {
            self.route_metrics(&request).await
        } else if client.is_err() && !probe {
            Err(RequestError::UnusableForwardedChain.into())
        } else if method == Method::OPTIONS {
            self.inner.cors.preflight(route, request.headers())
        } else {
            match self.inner.cors.check(route, origin.as_ref()) {
                Ok(()) => self.route(request, &info).await,
                Err(error) => Err(error),
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let (status, code) = error.status_and_code();
                if status.is_server_error() {
                    tracing::error!(request_id = %info.id, error = %error, source = ?std::error::Error::source(&error), route, "request failed");
                }
                let denial = match &error {
                    _ if let Some(disk) = error.store_error().and_then(crate::store::StoreError::full_disk) => {
                        self.inner.metrics.insufficient_storage(disk);
                        None
                    }
                    // The store failing is not the caller's fault: no auth failure counted.
                    Error::Auth(crate::auth::AuthError::Store(_)) => None,
                    Error::Auth(auth) => {
                        self.inner.metrics.auth_failure(auth.code());
                        self.inner.limiter.auth_failed(self.client_key(info.client));
                        Some("auth_failure")
                    }
                    Error::Limit(refusal) => {
                        self.inner.metrics.rate_limited(refusal.limit());
                        None
                    }
                    Error::Storage(refusal) => {
                        self.inner.metrics.insufficient_storage(refusal.disk);
                        None
                    }
                    Error::Request(RequestError::IpNotAllowed | RequestError::WrongNamespace) => {
                        // A refused caller spends the same budget as a bad signature, so
                        // hammering costs the caller a 429, not the server a write.
                        self.inner.limiter.auth_failed(self.client_key(info.client));
                        Some("access_denied")
                    }
                    _ => None,
                };
                if let Some(event) = denial
                    && self.inner.denials.admit((self.inner.limiter.network_of(info.client), event, code))
                {
                    // Best effort: the request is refused whether or not this is written.
                    let _ = self.audit(
                        &info,
                        event,
                        "denied",
                        AuditSubject { reason: Some(code), ..AuditSubject::default() },
                    );
                }
                response::error(&error, status, code)
            }
        };
        let mut response = response::secure(response);
        if method != Method::OPTIONS {
            self.inner.cors.decorate(route, origin.as_ref(), &mut response);
        }
        if let Ok(id) = http::HeaderValue::from_str(&info.id) {
            response.headers_mut().insert("x-request-id", id);
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        self.inner.metrics.request(route, status, elapsed.as_secs_f64());
        tracing::info!(target: "keyservice::request", request_id = %info.id, %method, route, status, latency_us = elapsed.as_micros() as u64, "request");
        response
    }

    async fn route_metrics<B>(&self, request: &Request<B>) -> Result<Response<Full<Bytes>>, Error> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => health::metrics(self, true),
            (&Method::GET, "/healthz") => Ok(health::healthz()),
            (&Method::GET, "/readyz") => Ok(health::readyz(self).await),
            _ => Err(RequestError::NotFound.into()),
        }
    }

    async fn route<B: RequestBody>(
        &self,
        request: Request<B>,
        info: &RequestInfo,
    ) -> Result<Response<Full<Bytes>>, Error> {
        let route = ROUTES.iter().find(|r| r.path == request.uri().path()).ok_or(RequestError::NotFound)?;
        if !route.allow.split(", ").any(|m| m == request.method().as_str()) {
            return Err(RequestError::MethodNotAllowed { allow: route.allow }.into());
        }
        match (request.method(), route.path) {
            (&Method::POST, "/init") => init::handle(self, info).await,
            (&Method::POST, "/connect") => connect::handle(self, request, info).await,
            (&Method::GET | &Method::PUT | &Method::DELETE, "/key") => key::handle(self, request, info).await,
            (&Method::GET, "/key/history") => key::history(self, request, info).await,
            (&Method::DELETE, "/session") => session::delete(self, request, info).await,
            (&Method::POST, "/erase") => subject::erase(self, request, info).await,
            (&Method::POST, "/export") => subject::export(self, request, info).await,
            (&Method::GET, "/healthz") => Ok(health::healthz()),
            (&Method::GET, "/readyz") => Ok(health::readyz(self).await),
            (&Method::GET, "/metrics") => health::metrics(self, false),
            // A route listed in ROUTES without a handler: refuse rather than panic.
            _ => Err(RequestError::NotFound.into()),
        }
    }

    /// Puts an operation on the user's access history. A history that cannot be written
    /// now stays queued (and the store's failure shows elsewhere), so this never fails
    /// the request.
    pub(crate) async fn record_access(
        &self,
        user: crate::store::UserKey,
        op: crate::access::Operation,
        session: Option<&crate::store::Pseudonym>,
        credential: Option<&str>,
        client: IpAddr,
        version: Option<u64>,
    ) {
        let entry = crate::access::Entry {
            op,
            session: session.map(crate::access::Entry::session_tag),
            address: client,
            credential: credential.map(str::to_owned),
            version,
            first_version: None,
            count: 1,
            last: None,
        };
        if let Err(error) = self.inner.escrow.record_access(user, entry).await {
            tracing::warn!(%error, "writing access history entries failed; they stay queued");
        }
    }

    /// Puts an operation done with `session` on its user's access history.
    pub(crate) async fn record_session_access(
        &self,
        session: &crate::escrow::Session,
        op: crate::access::Operation,
        client: IpAddr,
        version: Option<u64>,
    ) {
        self.record_access(session.user, op, Some(&session.id), session.credential.as_deref(), client, version).await;
    }

    /// Writes queued access history entries every [`crate::access::FLUSH_INTERVAL`]
    /// until `stop` turns true. A write under way finishes first, so stopping loses
    /// nothing; [`App::close`] writes what is queued after.
    pub async fn write_accesses_until(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(crate::access::FLUSH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stop.borrow() {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(error) = self.inner.escrow.flush_accesses().await {
                tracing::warn!(%error, "writing access history entries failed; they stay queued");
            }
        }
    }

    /// Deletes expired inits, sessions and remembered nonces every `interval`, forever,
    /// starting one interval after the call; access history past its retention, hourly.
    pub async fn sweep_forever(self, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            ticker.tick().await;
            let now = crate::time::now();
            if last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                last_purge = Some(tokio::time::Instant::now());
                match self.inner.escrow.purge_accesses(now).await {
                    Ok(purged) => tracing::debug!(purged, "purged access history past its retention"),
                    Err(error) => tracing::warn!(%error, "purging old access history failed"),
                }
            }
            let forget = self.inner.auth.forget_nonces_before(now);
            let idle_before = self.inner.escrow.idle_before(now);
            self.inner.limiter.forget_quiet_clients();
            match self.inner.escrow.store().counts().await {
                Ok(counts) => {
                    self.inner.metrics.set_counts(counts.pending_inits, counts.sessions, counts.key_versions);
                    self.inner.limiter.set_pending_inits(counts.pending_inits, now);
                }
                Err(error) => tracing::warn!(%error, "counting stored records failed"),
            }
            match self.inner.escrow.store().sweep(now, idle_before, forget).await {
                Ok(swept) => tracing::debug!(
                    inits = swept.inits,
                    sessions = swept.sessions,
                    nonces = swept.nonces,
                    "swept expired records"
                ),
                Err(error) => tracing::warn!(%error, "sweeping expired records failed"),
            }
        }
    }
}

/// For the fuzzing entry points.
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    signed::describe_json_error(error)
}

/// For the fuzzing entry points.
pub(crate) fn precondition_of(headers: &http::HeaderMap) -> Result<crate::store::Precondition, RequestError> {
    key::precondition(headers)
}

/// Who an audit line is about.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct AuditSubject<'a> {
    pub namespace: Option<&'a str>,
    pub user: Option<&'a crate::store::UserKey>,
    pub reason: Option<&'a str>,
}

impl App {
    /// Appends an audit line for this request.
    ///
    /// # Errors
    ///
    /// [`Error::Audit`] when the line cannot be written and the log fails closed: the
    /// request must not go on.
    pub(crate) fn audit(
        &self,
        info: &RequestInfo,
        event: &str,
        outcome: &str,
        subject: AuditSubject<'_>,
    ) -> Result<(), Error> {
        let ticket = self.queue_audit(info, event, outcome, subject);
        Ok(self.inner.audit.settle(ticket)?)
    }

    /// [`App::audit`] for the busiest events (key reads and writes): the line is queued,
    /// the task lets the other requests ready on its thread queue theirs, and then all
    /// of them are written with one system call. Still fail-closed, and still written
    /// before this returns.
    ///
    /// # Errors
    ///
    /// As [`App::audit`].
    pub(crate) async fn audit_batched(
        &self,
        info: &RequestInfo,
        event: &str,
        outcome: &str,
        subject: AuditSubject<'_>,
    ) -> Result<(), Error> {
        let ticket = self.queue_audit(info, event, outcome, subject);
        tokio::task::yield_now().await;
        Ok(self.inner.audit.settle(ticket)?)
    }

    fn queue_audit(
        &self,
        info: &RequestInfo,
        event: &str,
        outcome: &str,
        subject: AuditSubject<'_>,
    ) -> crate::audit::Ticket {
        let event = crate::audit::Event {
            time: crate::time::rfc3339_now(),
            node: &self.inner.node_id,
            event,
            outcome,
            request_id: &info.id,
            client_ip: info.client.to_string(),
            namespace: subject.namespace,
            user: subject.user.map(|u| crate::audit::pseudonym_hex(&u.user)),
            reason: subject.reason,
            repeated: None,
        };
        self.inner.audit.queue(&event)
    }

    /// Writes a summary line for each refusal window that ended with refusals it
    /// counted without a line.
    fn audit_denial_summaries(&self, all: bool) {
        for ((network, event, reason), repeated) in self.inner.denials.due(all) {
            let event = crate::audit::Event {
                time: crate::time::rfc3339_now(),
                node: &self.inner.node_id,
                event,
                outcome: "denied",
                request_id: "summary",
                client_ip: network.to_string(),
                namespace: None,
                user: None,
                reason: Some(reason),
                repeated: Some(repeated),
            };
            let _ = self.inner.audit.record(&event);
        }
    }

    /// Opens the audit log's file again (after an external rotation moved it away).
    ///
    /// # Errors
    ///
    /// When the file cannot be opened; the old one stays in use.
    pub fn reopen_audit(&self) -> Result<(), crate::audit::AuditError> {
        self.inner.audit.reopen()
    }

    /// Writes the summaries of ended refusal windows, then flushes the audit log to
    /// disk; the server calls it every second.
    pub fn tick_audit(&self) {
        self.audit_denial_summaries(false);
        self.sync_audit();
    }

    /// Flushes the audit log to disk.
    pub fn sync_audit(&self) {
        if let Err(error) = self.inner.audit.sync() {
            tracing::error!(%error, "syncing the audit log failed");
        }
    }
}

/// Passes `result` through; a failure of an action already audited as `allowed` also
/// gets a `failed` line (best effort: the request fails either way).
pub(crate) fn audit_failure<T>(
    app: &App,
    info: &RequestInfo,
    event: &str,
    subject: AuditSubject<'_>,
    result: Result<T, Error>,
) -> Result<T, Error> {
    if let Err(error) = &result {
        let _ = app.audit(info, event, "failed", AuditSubject { reason: Some(error.status_and_code().1), ..subject });
    }
    result
}

/// The client's `X-Request-Id` when it is 1 to 64 letters, digits, `-`, `_` or `.`;
/// otherwise a new one: a random prefix per process and a counter, 32 hex digits (unique
/// across restarts and nodes without a system call per request).
fn request_id(headers: &http::HeaderMap) -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let given = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if let Some(id) = given {
        return id.to_owned();
    }
    let prefix = PREFIX.get_or_init(|| {
        // Without OS randomness the start time still separates processes.
        keyservice_client::protocol::random_bytes::<8>().map(u64::from_be_bytes).unwrap_or_else(|_| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        })
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}

/// A fixed label for logs: never the raw path, which a client controls.
fn route_name(path: &str) -> &'static str {
    ROUTES.iter().find(|r| r.path == path).map_or("other", |r| r.path)
}
