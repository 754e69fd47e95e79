//! Key writes made together: one transaction, one commit, for every PUT in flight.
//!
//! A PUT alone is a transaction of its own: lock the user's head row, insert the new
//! version, move the head, prune old versions, commit. The database's cost is mostly
//! the transaction and its commit (the WAL flush), not the rows. Here the PUTs queued
//! at one moment share them:
//!
//! 1. `BEGIN`;
//! 2. one upsert locks (creating where missing) the head row of every user in the batch,
//!    in key order, so that two nodes' batches take their locks in the same order and
//!    cannot deadlock, and returns each user's latest version;
//! 3. one read of the users' DEKs and of the PUTs' sessions, sent together: a PUT whose
//!    DEK is no longer the user's (deleted or erased since it was read, which takes the
//!    head lock first), or whose session is gone (its user erased), writes nothing;
//! 4. the node then goes through the PUTs in the order they arrived: each one's
//!    precondition is checked against the latest version *including the earlier PUTs of
//!    the batch*, exactly as if they had come one after another, and each admitted one
//!    is sealed for its version number;
//! 5. three statements sent together: insert the versions, move the heads, prune;
//! 6. `COMMIT`: one WAL flush for the batch.
//!
//! A PUT is acknowledged only after that commit. A batch that fails (the commit not
//! confirmed) fails every PUT in it, none acknowledged; one lost to a race with another
//! node is retried whole, each PUT's precondition checked afresh.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::db::{Attempt, Db};
use super::{begin, int, sql_execute, sql_query, uint};
use crate::store::{Precondition, PutOutcome, SealVersion, StoreError, UnixTime};

/// One PUT waiting for its batch.
pub(super) struct PutQuery {
    /// The user's 64-byte prefix.
    pub(super) user: Vec<u8>,
    /// The wrapped DEK `seal` seals under.
    pub(super) dek: Vec<u8>,
    /// The session the PUT is made in, which must still exist (none: the operator's).
    pub(super) session: Option<Vec<u8>>,
    pub(super) precondition: Precondition,
    /// Versions kept (`max_key_versions`).
    pub(super) keep: u64,
    pub(super) created_at: UnixTime,
    pub(super) seal: SealVersion,
}

/// What each PUT of the batch did; a PUT whose sealing failed fails alone.
pub(super) async fn write_keys(db: Db, puts: Vec<PutQuery>) -> Result<Vec<Result<PutOutcome, StoreError>>, StoreError> {
    let puts = &puts;
    let mut users: Vec<&[u8]> = puts.iter().map(|put| put.user.as_slice()).collect();
    users.sort_unstable();
    users.dedup();
    let users = &users;
    let sessions: Vec<&[u8]> = puts.iter().filter_map(|put| put.session.as_deref()).collect();
    let sessions = &sessions;
    db.retrying(|mut client| async move {
        let transaction = begin(&mut client).await?;
        let rows = sql_query(
            &transaction,
            "INSERT INTO ks_key_head (user_key, latest) SELECT u, 0 FROM unnest($1::bytea[]) AS u ORDER BY u \
             ON CONFLICT (user_key) DO UPDATE SET latest = ks_key_head.latest RETURNING user_key, latest",
            &[users],
        )
        .await?;
        let mut latest: HashMap<Vec<u8>, u64> =
            rows.iter().map(|row| (row.get::<_, Vec<u8>>(0), uint(row.get(1)))).collect();
        // Read under the head locks: a deletion or an erasure takes the head first, so
        // none can remove a DEK or (erasing) a session between these reads and the
        // commit. Sent together, answered together.
        let (of_users, of_sessions): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) = ([users], [sessions]);
        let (deks, live) = tokio::join!(
            sql_query(&transaction, "SELECT user_key, wrapped FROM ks_dek WHERE user_key = ANY($1)", &of_users),
            sql_query(&transaction, "SELECT id FROM ks_session WHERE id = ANY($1)", &of_sessions),
        );
        let deks: HashMap<Vec<u8>, Vec<u8>> = deks?.iter().map(|row| (row.get(0), row.get(1))).collect();
        let live: std::collections::HashSet<Vec<u8>> = live?.iter().map(|row| row.get(0)).collect();
        let mut outcomes = Vec::with_capacity(puts.len());
        let (mut keys, mut versions, mut created, mut sealed) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for put in puts {
            let Some(head) = latest.get_mut(&put.user) else {
                return Err(Attempt::Fail(StoreError::Corrupt { kind: "key head" }));
            };
            if deks.get(&put.user) != Some(&put.dek) {
                outcomes.push(Ok(PutOutcome::DekChanged));
                continue;
            }
            if put.session.as_ref().is_some_and(|id| !live.contains(id)) {
                outcomes.push(Ok(PutOutcome::SessionGone));
                continue;
            }
            let current = (*head > 0).then_some(*head);
            if !put.precondition.admits(current) {
                outcomes.push(Ok(PutOutcome::PreconditionFailed));
                continue;
            }
            let version = *head + 1;
            match (put.seal)(version) {
                Ok(bytes) => {
                    *head = version;
                    keys.push(put.user.as_slice());
                    versions.push(int(version));
                    created.push(int(put.created_at));
                    sealed.push(bytes);
                    outcomes.push(Ok(PutOutcome::Stored { version }));
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }
        if !keys.is_empty() {
            let written: std::collections::HashSet<&[u8]> = keys.iter().copied().collect();
            let moved: Vec<&[u8]> = users.iter().copied().filter(|user| written.contains(user)).collect();
            let heads: Vec<i64> = moved.iter().map(|user| int(latest[*user])).collect();
            // Each user's versions up to its new latest minus what is kept (the same
            // `keep` for every PUT of a server).
            let cutoffs: Vec<i64> = moved
                .iter()
                .map(|user| {
                    let keep = puts.iter().find(|put| put.user.as_slice() == *user).map_or(1, |put| put.keep.max(1));
                    int(latest[*user].saturating_sub(keep))
                })
                .collect();
            let insert: [&(dyn ToSql + Sync); 4] = [&keys, &versions, &created, &sealed];
            let head: [&(dyn ToSql + Sync); 2] = [&moved, &heads];
            let prune: [&(dyn ToSql + Sync); 2] = [&moved, &cutoffs];
            // Sent together, answered together: one round trip for the three. All three are
            // awaited and the first failure *in statement order* is the one reported: after
            // the insert fails (a full disk), the next two only say the transaction is
            // aborted, and `try_join!` may poll them first.
            let (inserted, moved, pruned) = tokio::join!(
                sql_execute(
                    &transaction,
                    "INSERT INTO ks_key_version (user_key, version, created_at, sealed) \
                     SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::bigint[], $4::bytea[])",
                    &insert,
                ),
                sql_execute(
                    &transaction,
                    "UPDATE ks_key_head AS h SET latest = c.latest \
                     FROM unnest($1::bytea[], $2::bigint[]) AS c(user_key, latest) WHERE h.user_key = c.user_key",
                    &head,
                ),
                sql_execute(
                    &transaction,
                    "DELETE FROM ks_key_version AS v USING unnest($1::bytea[], $2::bigint[]) AS c(user_key, cutoff) \
                     WHERE v.user_key = c.user_key AND v.version <= c.cutoff",
                    &prune,
                ),
            );
            inserted?;
            moved?;
            pruned?;
        }
        transaction.commit().await?;
        Ok(outcomes)
    })
    .await
}
