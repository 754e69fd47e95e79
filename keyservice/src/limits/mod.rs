//! Abuse limits: per-client budgets for `/init` and for failed authentications and
//! refusals, a global cap on pending init tokens that degrades fairly, and per-namespace
//! connect and erase budgets against a compromised Real Service harvesting keys user
//! after user or flooding the erasure ledger.
//!
//! A client is a network, not an address: by default a /24 for IPv4 and a /64 for
//! IPv6 ([`ClientPrefix`]), so one party rotating addresses inside its own network (one
//! IPv6 customer holds 2^64) still has one budget.
//!
//! Rate limits use GCRA (the `governor` crate): a budget of N per minute allows a burst
//! of N and refills one every 60/N seconds. Per-address state is forgotten once a client
//! has been quiet long enough to be back at a full budget.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use ipnet::IpNet;

use crate::store::{Pseudonym, UnixTime};

/// Why a request was refused by a limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A per-client or per-namespace rate limit.
    #[error("too many requests; try again in {retry_after} seconds")]
    RateLimited {
        /// Which limit, for metrics.
        limit: &'static str,
        /// Seconds until the budget allows one more.
        retry_after: u64,
    },
    /// Too many init tokens are pending.
    #[error("too many init tokens are pending; try again in {retry_after} seconds")]
    PendingInitsFull {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The namespace connected too many distinct users in the current window.
    #[error("the namespace has connected too many distinct users in this window; try again in {retry_after} seconds")]
    ConnectBudget {
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

impl Refusal {
    /// Seconds for `Retry-After`.
    pub fn retry_after(&self) -> u64 {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::PendingInitsFull { retry_after }
            | Self::ConnectBudget { retry_after } => *retry_after,
        }
    }

    /// The limit's name, for metrics and the audit trail.
    pub fn limit(&self) -> &'static str {
        match self {
            Self::RateLimited { limit, .. } => limit,
            Self::PendingInitsFull { .. } => "pending_inits",
            Self::ConnectBudget { .. } => "connect_users",
        }
    }
}

/// A namespace's budgets, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectBudget {
    /// `/connect` calls per minute.
    pub calls_per_minute: NonZeroU32,
    /// Distinct users connected per window.
    pub users_per_window: u32,
    /// The window for distinct users.
    pub window: Duration,
    /// `/erase` calls per minute: each adds a line to the erasure ledger.
    pub erase_per_minute: NonZeroU32,
    /// Refused ID tokens per minute from one credential, from all its addresses
    /// together; past it, each further refusal blocks the address it came from at once.
    pub id_token_failures_per_minute: NonZeroU32,
}

/// How many bits of an address name one client for the per-client budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPrefix {
    /// IPv4 prefix length. Default 24.
    pub v4: u8,
    /// IPv6 prefix length. Default 64 (one customer's network).
    pub v6: u8,
}

impl Default for ClientPrefix {
    fn default() -> Self {
        Self { v4: 24, v6: 64 }
    }
}

impl ClientPrefix {
    /// The network `ip` is counted in.
    pub fn of(&self, ip: IpAddr) -> IpNet {
        let ip = ip.to_canonical();
        let len = if ip.is_ipv4() { self.v4 } else { self.v6 };
        // The lengths are validated to fit their family.
        IpNet::new(ip, len).map(|net| net.trunc()).unwrap_or_else(|_| IpNet::from(ip))
    }
}

struct NamespaceBudget {
    budget: ConnectBudget,
    calls: DefaultDirectRateLimiter,
    erasures: DefaultDirectRateLimiter,
    /// Refused ID tokens, by the credential (key id) that sent them.
    id_token_failures: DefaultKeyedRateLimiter<String>,
    users: Mutex<UserWindow>,
}

impl NamespaceBudget {
    fn new(budget: ConnectBudget) -> Self {
        Self {
            budget,
            calls: RateLimiter::direct(Quota::per_minute(budget.calls_per_minute)),
            erasures: RateLimiter::direct(Quota::per_minute(budget.erase_per_minute)),
            id_token_failures: RateLimiter::keyed(Quota::per_minute(budget.id_token_failures_per_minute)),
            users: Mutex::new(UserWindow { started: Instant::now(), users: HashSet::new() }),
        }
    }
}

struct UserWindow {
    started: Instant,
    users: HashSet<Pseudonym>,
}

/// The per-client and global budgets of one server.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// `/init` calls per minute from one client network.
    pub init_per_minute: NonZeroU32,
    /// Failed authentications or refusals per minute from one client network.
    pub auth_failures_per_minute: NonZeroU32,
    /// Most init tokens pending at once.
    pub max_pending_inits: u64,
    /// What counts as one client.
    pub client_prefix: ClientPrefix,
}

/// Pending init tokens by the client network that asked for them, so that a full cap
/// takes its room from the network holding the most rather than refusing everyone.
#[derive(Default)]
struct PendingByClient {
    /// Network → its pending inits, oldest first, with their expiry and issue number.
    by_network: HashMap<IpNet, VecDeque<(Pseudonym, UnixTime, u64)>>,
    /// Inits issued so far: orders them across networks.
    issued: u64,
    /// Init → the network that holds it.
    owner: HashMap<Pseudonym, IpNet>,
}

impl PendingByClient {
    fn remove(&mut self, id: &Pseudonym) {
        let Some(network) = self.owner.remove(id) else { return };
        if let Some(queue) = self.by_network.get_mut(&network) {
            queue.retain(|(held, _, _)| held != id);
            if queue.is_empty() {
                self.by_network.remove(&network);
            }
        }
    }

    /// The oldest init of the network holding the most, unless that is `asking` itself
    /// (ties go to the network whose oldest init is oldest).
    fn eviction_candidate(&self, asking: &IpNet) -> Option<Pseudonym> {
        let asking_holds = self.by_network.get(asking).map_or(0, VecDeque::len);
        let (network, queue) = self.by_network.iter().max_by(|(_, a), (_, b)| {
            a.len().cmp(&b.len()).then_with(|| b.front().map(|e| e.2).cmp(&a.front().map(|e| e.2)))
        })?;
        if network == asking || queue.len() <= asking_holds {
            return None;
        }
        queue.front().map(|(id, _, _)| *id)
    }

    fn forget_expired(&mut self, now: UnixTime) {
        let owner = &mut self.owner;
        self.by_network.retain(|_, queue| {
            queue.retain(|(id, expires, _)| {
                let live = *expires > now;
                if !live {
                    owner.remove(id);
                }
                live
            });
            !queue.is_empty()
        });
    }
}

/// What `/init` may do once admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitAdmission {
    /// The network the new init counts against.
    pub network: IpNet,
    /// A pending init to delete first, to make room under a full cap.
    pub evict: Option<Pseudonym>,
}

/// The limits of one server.
pub struct Limiter {
    budgets: Budgets,
    init: DefaultKeyedRateLimiter<IpNet>,
    auth_failures: DefaultKeyedRateLimiter<IpNet>,
    /// Networks that spent their failed-authentication budget, until when.
    blocked: Mutex<HashMap<IpNet, Instant>>,
    pending_inits: AtomicU64,
    pending_by_client: Mutex<PendingByClient>,
    namespaces: RwLock<HashMap<String, Arc<NamespaceBudget>>>,
    /// Where connect budgets are counted when several nodes share them (a shared
    /// store); `None`, or a store that does not share them: counted here.
    shared_counts: Option<Arc<dyn crate::store::Coordination>>,
}

fn retry_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves its map consistent, so a poisoned lock is usable.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Limiter {
    /// Limits with these budgets.
    pub fn new(budgets: Budgets, namespaces: impl IntoIterator<Item = (String, ConnectBudget)>) -> Self {
        let limiter = Self {
            budgets,
            init: RateLimiter::keyed(Quota::per_minute(budgets.init_per_minute)),
            auth_failures: RateLimiter::keyed(Quota::per_minute(budgets.auth_failures_per_minute)),
            blocked: Mutex::default(),
            pending_inits: AtomicU64::new(0),
            pending_by_client: Mutex::default(),
            namespaces: RwLock::default(),
            shared_counts: None,
        };
        limiter.set_namespaces(namespaces);
        limiter
    }

    /// Counts connect budgets in `store` when it shares them between nodes.
    #[must_use]
    pub fn counting_connects_in(mut self, store: Arc<dyn crate::store::Coordination>) -> Self {
        self.shared_counts = Some(store);
        self
    }

    /// Replaces the namespaces' budgets (after a reload): a namespace whose budget did
    /// not change keeps its state, a changed one starts afresh, a removed one is gone.
    pub fn set_namespaces(&self, namespaces: impl IntoIterator<Item = (String, ConnectBudget)>) {
        let mut current = self.namespaces.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = namespaces
            .into_iter()
            .map(|(name, budget)| {
                let kept = current.get(&name).filter(|old| old.budget == budget).cloned();
                (name, kept.unwrap_or_else(|| Arc::new(NamespaceBudget::new(budget))))
            })
            .collect();
        *current = next;
    }

    fn namespace(&self, name: &str) -> Option<Arc<NamespaceBudget>> {
        self.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// The network `client` is counted in.
    pub fn network_of(&self, client: IpAddr) -> IpNet {
        self.budgets.client_prefix.of(client)
    }

    /// Admits one `/init` from `client`, if its network's budget allows. When the
    /// pending cap is reached, room is made by evicting the oldest pending init of the
    /// network holding the most, unless that is the asking network.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`] or [`Refusal::PendingInitsFull`].
    pub fn admit_init(&self, client: IpAddr) -> Result<InitAdmission, Refusal> {
        let network = self.network_of(client);
        self.init.check_key(&network).map_err(|not_until| Refusal::RateLimited {
            limit: "init",
            retry_after: retry_seconds(not_until.wait_time_from(DefaultClock::default().now())),
        })?;
        let mut evict = None;
        if self.pending_inits.load(Ordering::Relaxed) >= self.budgets.max_pending_inits {
            let mut pending = lock(&self.pending_by_client);
            let candidate =
                pending.eviction_candidate(&network).ok_or(Refusal::PendingInitsFull { retry_after: 60 })?;
            pending.remove(&candidate);
            evict = Some(candidate);
        } else {
            self.pending_inits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(InitAdmission { network, evict })
    }

    /// The admitted init was stored as `id`, pending until `expires_at`.
    pub fn init_issued(&self, admission: &InitAdmission, id: Pseudonym, expires_at: UnixTime) {
        let mut pending = lock(&self.pending_by_client);
        pending.issued += 1;
        let number = pending.issued;
        pending.by_network.entry(admission.network).or_default().push_back((id, expires_at, number));
        pending.owner.insert(id, admission.network);
    }

    /// The admitted init could not be stored.
    pub fn init_failed(&self, admission: &InitAdmission) {
        if admission.evict.is_none() {
            self.init_consumed(None);
        }
    }

    /// One pending init was redeemed (or found expired).
    pub fn init_consumed(&self, id: Option<&Pseudonym>) {
        let _ = self.pending_inits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        if let Some(id) = id {
            lock(&self.pending_by_client).remove(id);
        }
    }

    /// The true number of pending inits, from the store (after a sweep at `now`).
    pub fn set_pending_inits(&self, count: u64, now: UnixTime) {
        self.pending_inits.store(count, Ordering::Relaxed);
        lock(&self.pending_by_client).forget_expired(now);
    }

    /// Refuses a signed request from `client` (a network, see [`Limiter::network_of`],
    /// or a single address) while it is over its failed-authentication budget.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`].
    pub fn admit_signed(&self, client: IpNet) -> Result<(), Refusal> {
        let network = client;
        let blocked = lock(&self.blocked);
        match blocked.get(&network) {
            Some(until) if *until > Instant::now() => Err(Refusal::RateLimited {
                limit: "auth_failures",
                retry_after: retry_seconds(until.duration_since(Instant::now())),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication, or a refused caller, from `client`.
    pub fn auth_failed(&self, client: IpNet) {
        let network = client;
        if let Err(not_until) = self.auth_failures.check_key(&network) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            lock(&self.blocked).insert(network, Instant::now() + wait);
        }
    }

    /// Counts a refused ID token sent by `credential` of `namespace` from `client`: one
    /// failed authentication of `client` and one refusal of the credential.
    ///
    /// Within the credential's budget that is all; a client's own budget
    /// (`auth_failures_per_minute`) then blocks it like any failed signature. Past the
    /// credential's budget, spreading refusals over many addresses buys nothing: each
    /// refusal blocks its address for the time it takes the credential's budget to
    /// refill one, and is answered 429. Tokens that verify are never refused by either,
    /// so the legitimate traffic of the same credential from an address that sends none
    /// keeps connecting.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`] (`id_token_failures`) past the credential's budget.
    pub fn id_token_refused(&self, namespace: &str, credential: &str, client: IpNet) -> Result<(), Refusal> {
        self.auth_failed(client);
        let Some(budget) = self.namespace(namespace) else {
            return Ok(());
        };
        let Err(not_until) = budget.id_token_failures.check_key(&credential.to_owned()) else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let until = Instant::now() + wait;
        let mut blocked = lock(&self.blocked);
        let entry = blocked.entry(client).or_insert(until);
        *entry = (*entry).max(until);
        Err(Refusal::RateLimited { limit: "id_token_failures", retry_after: retry_seconds(wait).max(1) })
    }

    /// Admits one `/connect` of `user` in `namespace`: counted by `store` when several
    /// nodes share it (so the budget is the cluster's), else by this node.
    ///
    /// # Errors
    ///
    /// The outer `Err` when a shared store could not count; the inner one as
    /// [`Limiter::admit_connect`].
    pub async fn admit_connect_counted(
        &self,
        namespace: &str,
        user: &crate::store::UserKey,
        now: UnixTime,
    ) -> Result<Result<(), Refusal>, crate::store::StoreError> {
        use crate::store::{ConnectCount, SharedBudget};
        let Some(budget) = self.namespace(namespace) else {
            return Ok(Ok(()));
        };
        let shared = SharedBudget {
            calls_per_minute: budget.budget.calls_per_minute.get(),
            users_per_window: budget.budget.users_per_window,
            window_secs: budget.budget.window.as_secs(),
        };
        let Some(store) = &self.shared_counts else {
            return Ok(self.admit_connect(namespace, &user.user));
        };
        Ok(match store.count_connect(&user.namespace, &user.user, now, shared).await? {
            None => self.admit_connect(namespace, &user.user),
            Some(ConnectCount::Admitted) => Ok(()),
            Some(ConnectCount::TooManyCalls { retry_after }) => {
                Err(Refusal::RateLimited { limit: "connect_calls", retry_after: retry_after.max(1) })
            }
            Some(ConnectCount::TooManyUsers { retry_after }) => {
                Err(Refusal::ConnectBudget { retry_after: retry_after.max(1) })
            }
        })
    }

    /// Admits one `/connect` of `user` in `namespace`.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`] beyond the calls per minute, [`Refusal::ConnectBudget`]
    /// for a new user beyond the distinct users of the window.
    pub fn admit_connect(&self, namespace: &str, user: &Pseudonym) -> Result<(), Refusal> {
        let Some(budget) = self.namespace(namespace) else {
            return Ok(());
        };
        budget.calls.check().map_err(|not_until| Refusal::RateLimited {
            limit: "connect_calls",
            retry_after: retry_seconds(not_until.wait_time_from(DefaultClock::default().now())),
        })?;
        let mut window = lock(&budget.users);
        let now = Instant::now();
        if now.duration_since(window.started) >= budget.budget.window {
            window.started = now;
            window.users.clear();
        }
        if window.users.contains(user) {
            return Ok(());
        }
        if window.users.len() >= budget.budget.users_per_window as usize {
            let ends = window.started + budget.budget.window;
            return Err(Refusal::ConnectBudget { retry_after: retry_seconds(ends.duration_since(now)) });
        }
        window.users.insert(*user);
        Ok(())
    }

    /// Admits one `/erase` in `namespace`.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`] beyond the namespace's erasures per minute.
    pub fn admit_erase(&self, namespace: &str) -> Result<(), Refusal> {
        let Some(budget) = self.namespace(namespace) else {
            return Ok(());
        };
        budget.erasures.check().map_err(|not_until| Refusal::RateLimited {
            limit: "erase_calls",
            retry_after: retry_seconds(not_until.wait_time_from(DefaultClock::default().now())),
        })
    }

    /// Forgets per-network state of clients back at a full budget.
    pub fn forget_quiet_clients(&self) {
        self.init.retain_recent();
        self.auth_failures.retain_recent();
        for budget in self.namespaces.read().unwrap_or_else(std::sync::PoisonError::into_inner).values() {
            budget.id_token_failures.retain_recent();
        }
        let now = Instant::now();
        lock(&self.blocked).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests;
