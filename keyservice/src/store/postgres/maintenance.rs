//! The PostgreSQL store: maintenance (sweep, history purge, counts, snapshot, health, flush).

use async_trait::async_trait;

use super::{
    BUDGET_RETENTION_SECS, FULL_FOR_SECS, PostgresStore, int, key_of, pseudonym, session_of, sql_execute, sql_query,
    sql_query_one, uint, user_of,
};
use crate::store::record;
use crate::store::{AccessId, Counts, InitRecord, Maintenance, SnapshotEntry, StoreError, Swept, UnixTime};

#[async_trait]
impl Maintenance for PostgresStore {
    async fn sweep(
        &self,
        now: UnixTime,
        idle_before: UnixTime,
        forget_nonces_before: UnixTime,
    ) -> Result<Swept, StoreError> {
        let old = int(now.saturating_sub(BUDGET_RETENTION_SECS));
        self.db
            .retrying(|client| async move {
                let inits =
                    sql_execute(&client, "DELETE FROM ks_pending_init WHERE expires_at <= $1", &[&int(now)]).await?;
                let sessions = sql_execute(
                    &client,
                    "DELETE FROM ks_session WHERE expires_at <= $1 OR last_used < $2",
                    &[&int(now), &int(idle_before)],
                )
                .await?;
                let nonces =
                    sql_execute(&client, "DELETE FROM ks_nonce WHERE dated < $1", &[&int(forget_nonces_before)])
                        .await?;
                sql_execute(&client, "DELETE FROM ks_connect_calls WHERE minute < $1", &[&int(now / 60 - 2)]).await?;
                sql_execute(&client, "DELETE FROM ks_connect_users WHERE window_start < $1", &[&old]).await?;
                sql_execute(&client, "DELETE FROM ks_connect_windows WHERE window_start < $1", &[&old]).await?;
                Ok(Swept { inits, sessions, nonces })
            })
            .await
    }

    async fn purge_accesses(&self, before: AccessId) -> Result<u64, StoreError> {
        self.db
            .retrying(|client| async move {
                Ok(sql_execute(&client, "DELETE FROM ks_access WHERE id < $1", &[&before.as_slice()]).await?)
            })
            .await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.db
            .reading(|client| async move {
                let row = sql_query_one(
                    &client,
                    "SELECT (SELECT count(*) FROM ks_pending_init), (SELECT count(*) FROM ks_session), \
                     (SELECT count(*) FROM ks_key_version)",
                    &[],
                )
                .await?;
                Ok(Counts {
                    pending_inits: uint(row.get(0)),
                    sessions: uint(row.get(1)),
                    key_versions: uint(row.get(2)),
                })
            })
            .await
    }

    async fn snapshot(&self) -> Result<Vec<SnapshotEntry>, StoreError> {
        let mut client = self.db.client().await?;
        let transaction = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.db.failed(e))?;
        let mut entries = Vec::new();
        let mut push = |table: &str, key: Vec<u8>, value: Vec<u8>| entries.push((table.to_owned(), key, value));
        for row in
            sql_query(&transaction, "SELECT name, value FROM ks_keyring", &[]).await.map_err(|e| self.db.failed(e))?
        {
            push("keyring", row.get(0), row.get(1));
        }
        for row in
            sql_query(&transaction, "SELECT user_key, wrapped FROM ks_dek", &[]).await.map_err(|e| self.db.failed(e))?
        {
            push("dek", row.get(0), row.get(1));
        }
        for row in sql_query(&transaction, "SELECT id, expires_at, sealed FROM ks_pending_init", &[])
            .await
            .map_err(|e| self.db.failed(e))?
        {
            let init = InitRecord { expires_at: uint(row.get(1)), sealed: row.get(2) };
            push("pending_init", row.get(0), record::encode_init(&init));
        }
        for row in sql_query(
            &transaction,
            "SELECT id, user_key, expires_at, last_used, sealed, credential FROM ks_session",
            &[],
        )
        .await
        .map_err(|e| self.db.failed(e))?
        {
            let id = pseudonym(&row, "id", "session")?;
            let session = session_of(&row)?;
            push("user_session", record::user_session_key(&session.user, &id), Vec::new());
            push("session", id.to_vec(), record::encode_session(&session));
        }
        for row in sql_query(&transaction, "SELECT user_key, version, created_at, sealed FROM ks_key_version", &[])
            .await
            .map_err(|e| self.db.failed(e))?
        {
            let user = user_of(&row)?;
            let key = key_of(&row)?;
            push("key", record::key_version_key(&user, key.version), record::encode_key(key.created_at, &key.sealed));
        }
        for row in sql_query(&transaction, "SELECT fingerprint, dated FROM ks_nonce", &[])
            .await
            .map_err(|e| self.db.failed(e))?
        {
            push("nonce", uint(row.get(0)).to_be_bytes().to_vec(), uint(row.get(1)).to_be_bytes().to_vec());
        }
        for row in sql_query(&transaction, "SELECT user_key, id, sealed FROM ks_access", &[])
            .await
            .map_err(|e| self.db.failed(e))?
        {
            let user = user_of(&row)?;
            let id: &[u8] = row.get(1);
            let id: AccessId = id.try_into().map_err(|_| StoreError::Corrupt { kind: "access entry" })?;
            let sealed: &[u8] = row.get(2);
            push("access", record::access_key(&user, &id), record::encode_access(sealed));
        }
        let own_mark = self.ledger_mark_name();
        for row in
            sql_query(&transaction, "SELECT name, value FROM ks_meta", &[]).await.map_err(|e| self.db.failed(e))?
        {
            let name: String = row.get(0);
            // A backup carries this node's ledger mark under the name a single node
            // uses; other nodes' marks belong to their ledgers.
            if name == own_mark {
                push("meta", b"ledger_mark".to_vec(), row.get(1));
            } else if name == "replay_floor" {
                push("meta", name.into_bytes(), row.get(1));
            }
        }
        transaction.commit().await.map_err(|e| self.db.failed(e))?;
        Ok(entries)
    }

    async fn health(&self) -> Result<(), StoreError> {
        let full_at = self.db.full_at.load(std::sync::atomic::Ordering::Relaxed);
        if full_at != 0 && crate::time::now().saturating_sub(full_at) < FULL_FOR_SECS {
            return Err(StoreError::Full("the database refused a write for lack of space".into()));
        }
        if self.db.guard.stalled() {
            return Err(StoreError::Unavailable(
                "a database call ran out of time and no write has committed since".into(),
            ));
        }
        // A write, not a read: a server that answers but cannot commit (a synchronous
        // standby that stopped) is not ready. One row per node, rewritten.
        let name = &self.heartbeat_name();
        self.db.retrying(|client| async move {
            sql_execute(
                &client,
                "INSERT INTO ks_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[name, &crate::time::now().to_be_bytes().as_slice()],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged write was committed with synchronous_commit on.
        Ok(())
    }
}
