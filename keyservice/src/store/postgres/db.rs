//! The connection pool with its deadlines: every call the store makes goes through
//! [`Db::call`], which bounds it, retries a transaction that lost a race, and tells
//! [`Guard`] what it saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::error::SqlState;

use super::MAX_ATTEMPTS;
use super::guard::{self, Guard};
use crate::store::StoreError;

/// The pool and what the node knows of the database's state; cheap to clone.
#[derive(Clone)]
pub(super) struct Db {
    pub(super) pool: Pool,
    /// Deadlines, stalls and reconnect backoff.
    pub(super) guard: Arc<Guard>,
    /// When the database last refused a write for lack of space (Unix seconds; 0: never).
    pub(super) full_at: Arc<AtomicU64>,
}

impl Db {
    pub(super) fn new(pool: Pool, deadline: Duration) -> Self {
        Self { pool, guard: Arc::new(Guard::new(deadline)), full_at: Arc::new(AtomicU64::new(0)) }
    }

    /// A pooled connection: never one a call past its deadline may have left mid-commit,
    /// and none newly opened while reconnecting backs off.
    pub(super) async fn client(&self) -> Result<Object, StoreError> {
        loop {
            self.guard.may_connect(self.pool.status().available)?;
            let client = match self.pool.get().await {
                Ok(client) => client,
                Err(error) => {
                    if matches!(
                        error,
                        deadpool_postgres::PoolError::Backend(_)
                            | deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Create)
                            | deadpool_postgres::PoolError::PostCreateHook(_)
                    ) {
                        self.guard.connect_failed();
                    }
                    return Err(pool_error(error));
                }
            };
            self.guard.connected();
            if self.guard.usable(Object::metrics(&client).created) {
                return Ok(client);
            }
            // Closed, not returned: its answers may still queue behind an unconfirmed commit.
            drop(Object::take(client));
        }
    }

    /// What a failed call means, noting a full disk for `/readyz`.
    pub(super) fn failed(&self, error: tokio_postgres::Error) -> StoreError {
        self.noted(store_error(error))
    }

    fn noted(&self, error: StoreError) -> StoreError {
        if matches!(error, StoreError::Full(_)) {
            self.full_at.store(crate::time::now(), Ordering::Relaxed);
        }
        error
    }

    /// Runs one write until it does not lose a race, at most [`MAX_ATTEMPTS`] times, each
    /// within the deadline.
    pub(super) async fn retrying<T, F, Fut>(&self, step: F) -> Result<T, StoreError>
    where
        F: FnMut(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        self.call(true, step).await
    }

    /// Runs one read within the deadline.
    pub(super) async fn reading<T, F, Fut>(&self, step: F) -> Result<T, StoreError>
    where
        F: FnMut(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        self.call(false, step).await
    }

    pub(super) async fn call<T, F, Fut>(&self, write: bool, mut step: F) -> Result<T, StoreError>
    where
        F: FnMut(Object) -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        for attempt in 1..=MAX_ATTEMPTS {
            let client = self.client().await?;
            // Bound first, so that the step (and the connection it holds) is dropped here.
            let outcome = tokio::time::timeout(self.guard.deadline, step(client)).await;
            let Ok(outcome) = outcome else {
                let stalled_at = self.guard.stall();
                self.pool.retain(|_, metrics| metrics.created > stalled_at);
                tracing::warn!(
                    deadline_ms = self.guard.deadline.as_millis(),
                    write,
                    "a database call ran out of time; its connections are replaced"
                );
                return Err(guard::timed_out(self.guard.deadline));
            };
            match outcome {
                Ok(value) => {
                    if write {
                        self.guard.committed();
                    }
                    return Ok(value);
                }
                Err(Attempt::Fail(error)) => return Err(self.noted(error)),
                Err(Attempt::Retry) if attempt < MAX_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                }
                Err(Attempt::Retry) => break,
            }
        }
        Err(StoreError::Unavailable("a transaction kept losing races to other nodes".into()))
    }
}

/// One try of a transaction: lost a race (try again), or failed.
pub(super) enum Attempt {
    Retry,
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.code() {
            Some(code)
                if *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::UNIQUE_VIOLATION =>
            {
                Self::Retry
            }
            _ => Self::Fail(store_error(error)),
        }
    }
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Self::Fail(error)
    }
}

/// What a failed database call means to the caller.
pub(super) fn store_error(error: tokio_postgres::Error) -> StoreError {
    let Some(code) = error.code() else {
        // No SQL state: the connection failed or closed, so the outcome of what was in
        // flight is unknown. Not acknowledged; another try may work.
        return StoreError::Unavailable(Box::new(error));
    };
    let class = &code.code()[..2];
    if *code == SqlState::DISK_FULL {
        return StoreError::Full(Box::new(error));
    }
    match class {
        // connection exception, insufficient resources, operator intervention (admin
        // shutdown, statement timeout), system error
        "08" | "53" | "57" | "58" => StoreError::Unavailable(Box::new(error)),
        // read-only transaction (a standby after failover), transaction rollback
        "25" | "40" => StoreError::Unavailable(Box::new(error)),
        _ => StoreError::Backend(Box::new(error)),
    }
}

pub(super) fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => store_error(error),
        other => StoreError::Unavailable(Box::new(other)),
    }
}
