//! The PostgreSQL store: the coordination state (erasure-ledger mark, replay floor and nonces, connect budgets).

use async_trait::async_trait;

use super::{PostgresStore, begin, int, sql_execute, sql_query, sql_query_one, uint};
use crate::store::record;
use crate::store::{ConnectCount, Coordination, Pseudonym, SharedBudget, StoreError, UnixTime};

#[async_trait]
impl Coordination for PostgresStore {
    async fn ledger_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.meta_get(&self.ledger_mark_name()).await
    }

    async fn set_ledger_mark(&self, mark: Vec<u8>) -> Result<(), StoreError> {
        self.meta_set(&self.ledger_mark_name(), &mark).await
    }

    async fn replay_floor(&self) -> Result<UnixTime, StoreError> {
        match self.meta_get("replay_floor").await? {
            Some(bytes) => record::decode_u64(&bytes, "replay floor"),
            None => Ok(0),
        }
    }

    async fn set_replay_floor(&self, floor: UnixTime) -> Result<(), StoreError> {
        self.meta_set("replay_floor", &floor.to_be_bytes()).await
    }

    async fn remember_nonce(&self, fingerprint: u64, date: UnixTime) -> Result<bool, StoreError> {
        self.batches.nonces.ask((fingerprint, date)).await
    }

    async fn remembered_nonces(&self, since: UnixTime) -> Result<Vec<(u64, UnixTime)>, StoreError> {
        self.db
            .reading(|client| async move {
                let rows =
                    sql_query(&client, "SELECT fingerprint, dated FROM ks_nonce WHERE dated >= $1", &[&int(since)])
                        .await?;
                Ok(rows.into_iter().map(|row| (uint(row.get(0)), uint(row.get(1)))).collect())
            })
            .await
    }

    fn shared(&self) -> bool {
        true
    }

    async fn count_connect(
        &self,
        namespace: &Pseudonym,
        user: &Pseudonym,
        now: UnixTime,
        budget: SharedBudget,
    ) -> Result<Option<ConnectCount>, StoreError> {
        let minute = now / 60;
        let window = budget.window_secs.max(1);
        let window_start = now - now % window;
        let outcome = self
            .db
            .retrying(|mut client| async move {
                let transaction = begin(&mut client).await?;
                let calls: i64 = sql_query_one(&transaction,
                        "INSERT INTO ks_connect_calls (namespace, minute, calls) VALUES ($1, $2, 1) \
                         ON CONFLICT (namespace, minute) DO UPDATE SET calls = ks_connect_calls.calls + 1 \
                         RETURNING calls",
                        &[&namespace.as_slice(), &int(minute)],
                    )
                    .await?
                    .get(0);
                if uint(calls) > u64::from(budget.calls_per_minute) {
                    // A refused call is not counted: dropping the transaction rolls it back.
                    return Ok(ConnectCount::TooManyCalls { retry_after: 60 - now % 60 });
                }
                let new_user = sql_execute(&transaction,
                        "INSERT INTO ks_connect_users (namespace, window_start, user_id) VALUES ($1, $2, $3) \
                         ON CONFLICT (namespace, window_start, user_id) DO NOTHING",
                        &[&namespace.as_slice(), &int(window_start), &user.as_slice()],
                    )
                    .await?
                    == 1;
                if new_user {
                    let users: i64 = sql_query_one(&transaction,
                            "INSERT INTO ks_connect_windows (namespace, window_start, users) VALUES ($1, $2, 1) \
                             ON CONFLICT (namespace, window_start) DO UPDATE SET users = ks_connect_windows.users + 1 \
                             RETURNING users",
                            &[&namespace.as_slice(), &int(window_start)],
                        )
                        .await?
                        .get(0);
                    if uint(users) > u64::from(budget.users_per_window) {
                        // The user is not let in, but the call counts.
                        sql_execute(&transaction,
                                "DELETE FROM ks_connect_users WHERE namespace = $1 AND window_start = $2 AND user_id = $3",
                                &[&namespace.as_slice(), &int(window_start), &user.as_slice()],
                            )
                            .await?;
                        sql_execute(&transaction,
                                "UPDATE ks_connect_windows SET users = users - 1 WHERE namespace = $1 AND window_start = $2",
                                &[&namespace.as_slice(), &int(window_start)],
                            )
                            .await?;
                        transaction.commit().await?;
                        return Ok(ConnectCount::TooManyUsers { retry_after: window_start + window - now });
                    }
                }
                transaction.commit().await?;
                Ok(ConnectCount::Admitted)
            })
            .await?;
        Ok(Some(outcome))
    }
}
