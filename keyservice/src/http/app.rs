//! The request handler's state: the escrow, authentication, limits, audit log and
//! namespaces every request is served with, and how they are built and reloaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyservice_client::protocol::Secret;

use super::cors;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::config::{Config, Namespace};
use crate::crypto::master::MasterKey;
use crate::error::Error;
use crate::escrow::{Escrow, Policy};
use crate::ledger::ErasureLedger;
use crate::limits::{Budgets, Limiter};
use crate::metrics::Metrics;
use crate::store::{Pseudonym, Store};
use crate::time::{Clock, SystemClock};

/// The request handler, shared by every connection: cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The time of day every handler and background task reads.
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) escrow: Escrow,
    pub(super) auth: Authenticator,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Limiter,
    pub(crate) audit: AuditLog,
    /// The free-space reserve.
    pub(crate) disks: crate::disk::DiskGuard,
    /// One audit line per window for repeated refusals.
    pub(super) denials: crate::audit::DenialDigest,
    /// `/metrics` is served on its own listener, not this one.
    pub(super) metrics_listen_separately: bool,
    pub(super) proxies: crate::proxy::ProxyTrust,
    pub(super) cors: cors::Cors,
    /// The namespaces, replaced whole by [`App::reload_namespaces`].
    tenants: RwLock<Arc<Tenants>>,
    pub(super) init_ttl: Duration,
    pub(super) session_ttl: Duration,
    pub(super) max_key_bytes: usize,
    pub(super) body_read_timeout: Duration,
    /// This node's name, in every audit line.
    pub(super) node_id: String,
    /// The token `[master_key]` names, where an online rotation to a token key goes.
    pub(crate) master_key_token: Option<crate::crypto::token::TokenSettings>,
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

impl App {
    /// The handler for `config`, over `store` sealed under `master`. Re-applies the
    /// erasure ledger before it returns.
    ///
    /// # Errors
    ///
    /// Fails when the master key does not match the store, or the store, ledger or replay
    /// memory cannot be read.
    pub async fn new(config: &Config, store: Arc<dyn Store>, master: &MasterKey) -> Result<Self, Error> {
        Self::with_clock(config, store, master, Arc::new(SystemClock)).await
    }

    /// [`App::new`] reading the time of day from `clock`.
    ///
    /// # Errors
    ///
    /// As [`App::new`].
    pub async fn with_clock(
        config: &Config,
        store: Arc<dyn Store>,
        master: &MasterKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let ledger = ErasureLedger::open(&config.erasure_ledger_file).map_err(|e| Error::Ledger(e.to_string()))?;
        let escrow = Escrow::open(store.clone(), master, ledger, Policy::from(config)).await?.with_clock(clock.clone());
        let auth = Authenticator::open(
            store.clone(),
            config.max_clock_skew,
            config.header_read_timeout + config.body_read_timeout,
            clock.clone(),
        )
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
        )
        .counting_connects_in(store);
        limiter.set_pending_inits(escrow.counts().await?.pending_inits, clock.now());
        let tenants = RwLock::new(Arc::new(Tenants::new(&config.namespaces, &escrow)));
        Ok(Self {
            inner: Arc::new(Inner {
                clock,
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
                master_key_token: config.master_key_token.clone(),
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
}
