//! Abuse limits: per-client-address budgets for `/init` and for failed
//! authentications, a global cap on pending init tokens, and per-namespace connect
//! budgets against a compromised Real Service harvesting keys user after user.
//!
//! Rate limits use GCRA (the `governor` crate): a budget of N per minute allows a burst
//! of N and refills one every 60/N seconds. Per-address state is forgotten once a client
//! has been quiet long enough to be back at a full budget.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::store::Pseudonym;

/// Why a request was refused by a limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A per-address or per-namespace rate limit.
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

/// A namespace's connect budget, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectBudget {
    /// `/connect` calls per minute.
    pub calls_per_minute: NonZeroU32,
    /// Distinct users connected per window.
    pub users_per_window: u32,
    /// The window for distinct users.
    pub window: Duration,
}

struct NamespaceBudget {
    budget: ConnectBudget,
    calls: DefaultDirectRateLimiter,
    users: Mutex<UserWindow>,
}

struct UserWindow {
    started: Instant,
    users: HashSet<Pseudonym>,
}

/// The limits of one server.
pub struct Limiter {
    init: DefaultKeyedRateLimiter<IpAddr>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses that spent their failed-authentication budget, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    pending_inits: AtomicU64,
    max_pending_inits: u64,
    namespaces: HashMap<String, NamespaceBudget>,
}

fn retry_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl Limiter {
    /// Limits with these budgets.
    pub fn new(
        init_per_minute: NonZeroU32,
        auth_failures_per_minute: NonZeroU32,
        max_pending_inits: u64,
        namespaces: impl IntoIterator<Item = (String, ConnectBudget)>,
    ) -> Self {
        Self {
            init: RateLimiter::keyed(Quota::per_minute(init_per_minute)),
            auth_failures: RateLimiter::keyed(Quota::per_minute(auth_failures_per_minute)),
            blocked: Mutex::default(),
            pending_inits: AtomicU64::new(0),
            max_pending_inits,
            namespaces: namespaces
                .into_iter()
                .map(|(name, budget)| {
                    let calls = RateLimiter::direct(Quota::per_minute(budget.calls_per_minute));
                    let users = Mutex::new(UserWindow { started: Instant::now(), users: HashSet::new() });
                    (name, NamespaceBudget { budget, calls, users })
                })
                .collect(),
        }
    }

    /// Admits one `/init` from `client`, if its budget and the pending cap allow.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`] or [`Refusal::PendingInitsFull`].
    pub fn admit_init(&self, client: IpAddr) -> Result<(), Refusal> {
        if self.pending_inits.load(Ordering::Relaxed) >= self.max_pending_inits {
            return Err(Refusal::PendingInitsFull { retry_after: 60 });
        }
        self.init.check_key(&client).map_err(|not_until| Refusal::RateLimited {
            limit: "init",
            retry_after: retry_seconds(not_until.wait_time_from(DefaultClock::default().now())),
        })?;
        self.pending_inits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One pending init was redeemed (or found expired).
    pub fn init_consumed(&self) {
        let _ = self.pending_inits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// The true number of pending inits, from the store (after a sweep).
    pub fn set_pending_inits(&self, count: u64) {
        self.pending_inits.store(count, Ordering::Relaxed);
    }

    /// Refuses a signed request from `client` while it is over its failed-authentication
    /// budget.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`].
    pub fn admit_signed(&self, client: IpAddr) -> Result<(), Refusal> {
        let blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match blocked.get(&client) {
            Some(until) if *until > Instant::now() => Err(Refusal::RateLimited {
                limit: "auth_failures",
                retry_after: retry_seconds(until.duration_since(Instant::now())),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `client`.
    pub fn auth_failed(&self, client: IpAddr) {
        if let Err(not_until) = self.auth_failures.check_key(&client) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut blocked = self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            blocked.insert(client, Instant::now() + wait);
        }
    }

    /// Admits one `/connect` of `user` in `namespace`.
    ///
    /// # Errors
    ///
    /// [`Refusal::RateLimited`] beyond the calls per minute, [`Refusal::ConnectBudget`]
    /// for a new user beyond the distinct users of the window.
    pub fn admit_connect(&self, namespace: &str, user: &Pseudonym) -> Result<(), Refusal> {
        let Some(budget) = self.namespaces.get(namespace) else {
            return Ok(());
        };
        budget.calls.check().map_err(|not_until| Refusal::RateLimited {
            limit: "connect_calls",
            retry_after: retry_seconds(not_until.wait_time_from(DefaultClock::default().now())),
        })?;
        let mut window = budget.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// Forgets per-address state of clients back at a full budget.
    pub fn forget_quiet_clients(&self) {
        self.init.retain_recent();
        self.auth_failures.retain_recent();
        let now = Instant::now();
        self.blocked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn init_budgets_are_per_address_and_the_cap_is_global() {
        let limiter = Limiter::new(n(2), n(5), 3, []);
        assert!(limiter.admit_init(ip(1)).is_ok());
        assert!(limiter.admit_init(ip(1)).is_ok());
        let refused = limiter.admit_init(ip(1)).unwrap_err();
        assert_eq!(refused.limit(), "init");
        assert!(refused.retry_after() >= 1);
        assert!(limiter.admit_init(ip(2)).is_ok(), "another address has its own budget");
        assert_eq!(limiter.admit_init(ip(3)).unwrap_err().limit(), "pending_inits");
        limiter.init_consumed();
        assert!(limiter.admit_init(ip(3)).is_ok());
    }

    #[test]
    fn failed_authentications_block_an_address_after_its_budget() {
        let limiter = Limiter::new(n(10), n(2), 100, []);
        for _ in 0..2 {
            limiter.auth_failed(ip(1));
            assert!(limiter.admit_signed(ip(1)).is_ok());
        }
        limiter.auth_failed(ip(1));
        assert_eq!(limiter.admit_signed(ip(1)).unwrap_err().limit(), "auth_failures");
        assert!(limiter.admit_signed(ip(2)).is_ok());
    }

    #[test]
    fn connect_budgets_count_calls_and_distinct_users() {
        let budget = ConnectBudget { calls_per_minute: n(100), users_per_window: 2, window: Duration::from_secs(3600) };
        let limiter = Limiter::new(n(10), n(10), 100, [("shop".to_owned(), budget)]);
        assert!(limiter.admit_connect("shop", &[1; 32]).is_ok());
        assert!(limiter.admit_connect("shop", &[2; 32]).is_ok());
        assert!(limiter.admit_connect("shop", &[1; 32]).is_ok(), "a known user again is fine");
        assert_eq!(limiter.admit_connect("shop", &[3; 32]).unwrap_err().limit(), "connect_users");
        assert!(limiter.admit_connect("other", &[3; 32]).is_ok(), "unknown namespaces are not limited here");

        let calls = ConnectBudget { calls_per_minute: n(1), users_per_window: 100, window: Duration::from_secs(60) };
        let limiter = Limiter::new(n(10), n(10), 100, [("shop".to_owned(), calls)]);
        assert!(limiter.admit_connect("shop", &[1; 32]).is_ok());
        assert_eq!(limiter.admit_connect("shop", &[1; 32]).unwrap_err().limit(), "connect_calls");
    }
}
