//! How a node keeps answering when the database does not.
//!
//! - **Every call has a deadline** (`statement_timeout_ms`). PostgreSQL's own
//!   `statement_timeout` does not cover a commit waiting for a synchronous standby, nor a
//!   server that stopped answering, so the node keeps its own clock. A call past it fails
//!   as [`StoreError::Unavailable`]: never acknowledged.
//! - **A call past its deadline may have left its connection mid-commit.** Answers on a
//!   connection come in order, so whoever used it next would wait for that commit too.
//!   Every connection made before the stall is therefore dropped instead of reused, and
//!   the node reports the stall (`/readyz` red) until a write commits again.
//! - **Reconnecting backs off.** While no server accepts a connection (the primary is
//!   gone and the standby not yet promoted, so `target_session_attrs=read-write` refuses
//!   it), a node tries again after 50 ms, then 100, … up to 2 s (each ±25 %), and
//!   requests in between fail at once instead of each opening a connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::StoreError;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The node's view of whether the database answers and commits.
pub(super) struct Guard {
    /// The longest one call may take.
    pub(super) deadline: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections made before this may hold a commit the database never confirmed.
    poisoned_before: Option<Instant>,
    /// A call ran out of time and no write has committed since.
    stalled: bool,
    /// Connecting failed this many times in a row.
    failures: u32,
    /// No new connection is tried before this.
    retry_at: Option<Instant>,
}

/// A call that ran out of time: what the caller is told.
pub(super) fn timed_out(deadline: Duration) -> StoreError {
    StoreError::Unavailable(
        format!("the database did not answer within {} ms; the outcome is unknown", deadline.as_millis()).into(),
    )
}

impl Guard {
    pub(super) fn new(deadline: Duration) -> Self {
        Self { deadline, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is a single assignment: a poisoned lock holds a usable state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a connection made at `created` may be handed out.
    pub(super) fn usable(&self, created: Instant) -> bool {
        self.state().poisoned_before.is_none_or(|before| created > before)
    }

    /// A call ran out of time: every connection made until now is suspect.
    pub(super) fn stall(&self) -> Instant {
        let now = Instant::now();
        let mut state = self.state();
        state.poisoned_before = Some(now);
        state.stalled = true;
        now
    }

    /// A write committed: the database confirms commits again.
    pub(super) fn committed(&self) {
        let mut state = self.state();
        if state.stalled {
            state.stalled = false;
            drop(state);
            tracing::info!("the database confirms commits again");
        }
    }

    /// Whether a call ran out of time since the last write that committed.
    pub(super) fn stalled(&self) -> bool {
        self.state().stalled
    }

    /// `Err` while reconnecting is backing off and `idle` connections are none.
    pub(super) fn may_connect(&self, idle: usize) -> Result<(), StoreError> {
        let state = self.state();
        match state.retry_at {
            Some(at) if idle == 0 && Instant::now() < at => Err(StoreError::Unavailable(
                format!(
                    "the database refused the last {} connection attempts; the next is due in {} ms",
                    state.failures,
                    at.saturating_duration_since(Instant::now()).as_millis()
                )
                .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Connecting failed: wait longer before the next try.
    pub(super) fn connect_failed(&self) {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        let base = FIRST_BACKOFF.saturating_mul(1 << state.failures.saturating_sub(1).min(10)).min(MAX_BACKOFF);
        // ±25 %, so that the nodes of a cluster do not all knock at once.
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        state.retry_at = Some(Instant::now() + base.mul_f64(jitter));
    }

    /// A connection was had.
    pub(super) fn connected(&self) {
        let mut state = self.state();
        if state.failures > 0 {
            let failures = state.failures;
            state.failures = 0;
            state.retry_at = None;
            drop(state);
            tracing::info!(failed_attempts = failures, "connected to the database again");
        }
    }

    /// Tries of connecting that failed in a row.
    #[cfg(test)]
    fn failures(&self) -> u32 {
        self.state().failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_made_before_a_stall_are_not_handed_out_again() {
        let guard = Guard::new(Duration::from_secs(1));
        let before = Instant::now();
        assert!(guard.usable(before));
        let stalled_at = guard.stall();
        assert!(guard.stalled());
        assert!(!guard.usable(before));
        assert!(!guard.usable(stalled_at));
        assert!(guard.usable(stalled_at + Duration::from_nanos(1)));
        guard.committed();
        assert!(!guard.stalled());
        // A commit does not make an old connection safe: its answer may still be queued.
        assert!(!guard.usable(before));
    }

    #[test]
    fn reconnecting_backs_off_and_a_connection_resets_it() {
        let guard = Guard::new(Duration::from_secs(1));
        assert!(guard.may_connect(0).is_ok());
        guard.connect_failed();
        assert!(guard.may_connect(0).is_err(), "no second try within the first backoff");
        assert!(guard.may_connect(3).is_ok(), "idle connections may still be tried");
        for _ in 0..20 {
            guard.connect_failed();
        }
        assert_eq!(guard.failures(), 21);
        let wait = guard.state().retry_at.unwrap().saturating_duration_since(Instant::now());
        assert!(wait <= MAX_BACKOFF.mul_f64(1.25), "{wait:?}");
        assert!(wait >= MAX_BACKOFF.mul_f64(0.7), "{wait:?}");
        guard.connected();
        assert!(guard.may_connect(0).is_ok());
        assert_eq!(guard.failures(), 0);
    }
}
