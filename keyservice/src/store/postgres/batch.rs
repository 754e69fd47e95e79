//! The calls every signed request makes, made together for the requests in flight.
//!
//! A GET asks the database three things: the session (read, or confirmed when the node
//! remembers it, in the same moment as the next), whether its nonce is new (a committed
//! insert), and the latest key version with the user's DEK. Asked one by one, each is a
//! round trip, a statement and (for the nonce) a commit of its own, and the database
//! spends far more on those than on the lookups. Here each kind of call goes
//! to a queue; a driver takes whatever is queued (up to [`MAX_BATCH`]) and asks for all
//! of it in one statement, one statement of a kind at a time. One request alone waits
//! for one statement, as before; sixty-four at once share a handful.
//!
//! Nothing about what a request sees changes: every answer still comes from the
//! database, read or committed after the request arrived; a nonce is acknowledged only
//! once the insert that claimed it has committed (one commit for the batch, with
//! `synchronous_commit = on`). A batch that fails fails every request in it, which then
//! fails as it would have alone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::db::{Attempt, Db};
use super::writes::{PutQuery, write_keys};
use super::{int, key_of, session_of, sql_query};
use crate::store::{KeyWithDek, Pseudonym, PutOutcome, SessionRecord, StoreError};

/// Calls asked in one statement at most.
const MAX_BATCH: usize = 256;

/// The queues of one store.
pub(super) struct Batches {
    /// (fingerprint, date) → whether this claim inserted it.
    pub(super) nonces: Batcher<(u64, u64), bool>,
    /// Session id → its record.
    pub(super) sessions: Batcher<Pseudonym, Option<SessionRecord>>,
    /// User prefix → its wrapped DEK.
    pub(super) deks: Batcher<Vec<u8>, Option<Vec<u8>>>,
    /// User prefix → its latest key version and its wrapped DEK.
    pub(super) latest: Batcher<Vec<u8>, KeyWithDek>,
    /// A PUT → what it did ([`super::writes`]).
    pub(super) writes: Batcher<PutQuery, Result<PutOutcome, StoreError>>,
}

impl Batches {
    /// Starts the drivers; they end when the store is dropped. One statement of a kind
    /// is in flight at a time: the next batch is whatever arrives meanwhile (more in
    /// flight only split the queue into smaller batches: measured in
    /// `docs/benchmarks.md`).
    pub(super) fn start(db: &Db) -> Self {
        let in_flight = 1;
        Self {
            nonces: Batcher::start(db.clone(), in_flight, claim_nonces),
            sessions: Batcher::start(db.clone(), in_flight, read_sessions),
            deks: Batcher::start(db.clone(), in_flight, read_deks),
            latest: Batcher::start(db.clone(), in_flight, read_latest),
            writes: Batcher::start(db.clone(), in_flight, write_keys),
        }
    }
}

struct Pending<Q, A> {
    query: Q,
    answer: oneshot::Sender<Result<A, StoreError>>,
}

/// One kind of call, queued and asked together.
pub(super) struct Batcher<Q, A> {
    queue: mpsc::UnboundedSender<Pending<Q, A>>,
    db: Db,
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    fn start<F, Fut>(db: Db, in_flight: usize, run: F) -> Self
    where
        F: Fn(Db, Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, StoreError>> + Send + 'static,
    {
        let (queue, mut queued) = mpsc::unbounded_channel::<Pending<Q, A>>();
        let permits = Arc::new(Semaphore::new(in_flight));
        let run = Arc::new(run);
        let driver_db = db.clone();
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                // Waiting for a free slot lets the next batch fill up.
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queued.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                let (queries, answers): (Vec<Q>, Vec<_>) = batch.into_iter().map(|p| (p.query, p.answer)).unzip();
                let (run, db) = (run.clone(), driver_db.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let asked = queries.len();
                    match run(db, queries).await {
                        Ok(results) if results.len() == asked => {
                            for (answer, result) in answers.into_iter().zip(results) {
                                let _ = answer.send(Ok(result));
                            }
                        }
                        Ok(_) => {
                            for answer in answers {
                                let _ = answer.send(Err(StoreError::Corrupt { kind: "batch answer" }));
                            }
                        }
                        Err(error) => {
                            for answer in answers {
                                let _ = answer.send(Err(copy(&error)));
                            }
                        }
                    }
                });
            }
        });
        Self { queue, db }
    }

    /// Queues `query` and waits for its answer, at most the deadline.
    pub(super) async fn ask(&self, query: Q) -> Result<A, StoreError> {
        let (answer, reply) = oneshot::channel();
        self.queue.send(Pending { query, answer }).map_err(|_| stopped())?;
        match tokio::time::timeout(self.db.guard.deadline, reply).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(super::guard::timed_out(self.db.guard.deadline)),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the store is shutting down".into())
}

/// The same failure for each request of a failed batch (the source, as text).
fn copy(error: &StoreError) -> StoreError {
    let text = |source: &(dyn std::error::Error + Send + Sync)| -> Box<dyn std::error::Error + Send + Sync> {
        source.to_string().into()
    };
    match error {
        StoreError::Backend(source) => StoreError::Backend(text(source.as_ref())),
        StoreError::Corrupt { kind } => StoreError::Corrupt { kind },
        StoreError::Seal(source) => StoreError::Seal(text(source.as_ref())),
        StoreError::Poisoned => StoreError::Poisoned,
        StoreError::Unavailable(source) => StoreError::Unavailable(text(source.as_ref())),
        StoreError::Full(source) => StoreError::Full(text(source.as_ref())),
    }
}

/// One insert for every claim; a claim is new when its row was inserted by it. Rows go
/// in in fingerprint order, so two nodes claiming overlapping sets take their locks in
/// the same order and cannot deadlock. Of two equal claims in one batch, the first is
/// new.
async fn claim_nonces(db: Db, claims: Vec<(u64, u64)>) -> Result<Vec<bool>, StoreError> {
    let mut order: Vec<usize> = (0..claims.len()).collect();
    order.sort_by_key(|&i| claims[i].0);
    order.dedup_by_key(|i| claims[*i].0);
    let fingerprints: Vec<i64> = order.iter().map(|&i| int(claims[i].0)).collect();
    let dates: Vec<i64> = order.iter().map(|&i| int(claims[i].1)).collect();
    let (fingerprints, dates) = (&fingerprints, &dates);
    let inserted: std::collections::HashSet<i64> = db
        .retrying(|client| async move {
            let rows = sql_query(
                &client,
                "INSERT INTO ks_nonce (fingerprint, dated) SELECT * FROM unnest($1::bigint[], $2::bigint[]) \
                 ON CONFLICT (fingerprint) DO NOTHING RETURNING fingerprint",
                &[fingerprints, dates],
            )
            .await?;
            Ok(rows.iter().map(|row| row.get::<_, i64>(0)).collect())
        })
        .await?;
    let mut first = std::collections::HashSet::new();
    Ok(claims
        .iter()
        .map(|(fingerprint, _)| inserted.contains(&int(*fingerprint)) && first.insert(*fingerprint))
        .collect())
}

async fn read_sessions(db: Db, ids: Vec<Pseudonym>) -> Result<Vec<Option<SessionRecord>>, StoreError> {
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_slice()).collect();
    let keys = &keys;
    let found: HashMap<Vec<u8>, SessionRecord> = db
        .reading(|client| async move {
            let rows = sql_query(
                &client,
                "SELECT id, user_key, expires_at, last_used, sealed, credential FROM ks_session WHERE id = ANY($1)",
                &[keys],
            )
            .await?;
            rows.iter()
                .map(|row| Ok((row.get::<_, Vec<u8>>("id"), session_of(row)?)))
                .collect::<Result<_, StoreError>>()
                .map_err(Attempt::from)
        })
        .await?;
    Ok(ids.iter().map(|id| found.get(id.as_slice()).cloned()).collect())
}

async fn read_deks(db: Db, users: Vec<Vec<u8>>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let users_ref = &users;
    let found: HashMap<Vec<u8>, Vec<u8>> = db
        .reading(|client| async move {
            let rows =
                sql_query(&client, "SELECT user_key, wrapped FROM ks_dek WHERE user_key = ANY($1)", &[users_ref])
                    .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await?;
    Ok(users.iter().map(|user| found.get(user).cloned()).collect())
}

async fn read_latest(db: Db, users: Vec<Vec<u8>>) -> Result<Vec<KeyWithDek>, StoreError> {
    let users_ref = &users;
    let mut found: HashMap<Vec<u8>, KeyWithDek> = db
        .reading(|client| async move {
            // One index probe per user for the newest version under its prefix, one for its
            // DEK: both from one snapshot.
            let rows = sql_query(
                &client,
                "SELECT u.user_key, k.version, k.created_at, k.sealed, d.wrapped FROM unnest($1::bytea[]) AS u(user_key) \
                 LEFT JOIN LATERAL (SELECT version, created_at, sealed FROM ks_key_version v \
                 WHERE v.user_key = u.user_key ORDER BY version DESC LIMIT 1) k ON true \
                 LEFT JOIN ks_dek d ON d.user_key = u.user_key",
                &[users_ref],
            )
            .await?;
            rows.iter()
                .map(|row| {
                    let version: Option<i64> = row.get("version");
                    let key = version.map(|_| key_of(row)).transpose()?;
                    Ok((row.get::<_, Vec<u8>>(0), (key, row.get::<_, Option<Vec<u8>>>("wrapped"))))
                })
                .collect::<Result<_, StoreError>>()
                .map_err(Attempt::from)
        })
        .await?;
    Ok(users.iter().map(|user| found.remove(user).unwrap_or((None, None))).collect())
}
