//! The PostgreSQL store: the records (keyring, user keys, pending inits, sessions, key versions, access history).

use async_trait::async_trait;

use super::writes::PutQuery;
use super::{
    PostgresStore, begin, int, key_of, session_of, sql_execute, sql_query, sql_query_one, sql_query_opt, uint,
};
use crate::store::record;
use crate::store::{
    AccessId, AccessRecord, Erased, InitRecord, KeyRecord, KeyWithDek, KeyringEntry, MakeSession, Precondition,
    Pseudonym, PutOutcome, Records, Redeemed, SealVersion, SessionRecord, StoreError, UnixTime, UserKey, Writer,
};

#[async_trait]
impl Records for PostgresStore {
    async fn keyring_get(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .reading(|client| async move {
                let row = sql_query_opt(&client, "SELECT value FROM ks_keyring WHERE name = $1", &[&name]).await?;
                Ok(row.map(|row| row.get(0)))
            })
            .await
    }

    async fn keyring_create(&self, name: &[u8], value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let value = &value;
        self.db
            .retrying(|client| async move {
                sql_execute(
                    &client,
                    "INSERT INTO ks_keyring (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&name, value],
                )
                .await?;
                let row = sql_query_one(&client, "SELECT value FROM ks_keyring WHERE name = $1", &[&name]).await?;
                Ok(row.get(0))
            })
            .await
    }

    async fn keyring_list(&self) -> Result<Vec<KeyringEntry>, StoreError> {
        self.db
            .reading(|client| async move {
                let rows = sql_query(&client, "SELECT name, value FROM ks_keyring ORDER BY name", &[]).await?;
                Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
            })
            .await
    }

    async fn keyring_replace(&self, entries: Vec<KeyringEntry>) -> Result<(), StoreError> {
        self.db
            .retrying(|mut client| {
                let entries = &entries;
                async move {
                    let transaction = begin(&mut client).await?;
                    for (name, value) in entries {
                        sql_execute(
                            &transaction,
                            "INSERT INTO ks_keyring (name, value) VALUES ($1, $2) \
                             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                            &[name, value],
                        )
                        .await?;
                    }
                    transaction.commit().await?;
                    Ok(())
                }
            })
            .await
    }

    async fn user_dek(&self, user: &UserKey) -> Result<Option<Vec<u8>>, StoreError> {
        self.batches.deks.ask(record::user_prefix(user).to_vec()).await
    }

    async fn create_user_dek(
        &self,
        user: &UserKey,
        wrapped: Vec<u8>,
        session: Option<&Pseudonym>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (key, wrapped, session) = (&record::user_prefix(user), &wrapped, &session.map(|id| id.to_vec()));
        self.db
            .retrying(|client| async move {
                // The session row is locked while the DEK is stored: an erasure, which
                // deletes the sessions first, either waits for this and then deletes the
                // DEK too, or has deleted them and nothing is stored.
                sql_execute(
                    &client,
                    "INSERT INTO ks_dek (user_key, wrapped) SELECT $1, $2 \
                     WHERE $3::bytea IS NULL OR EXISTS (SELECT 1 FROM ks_session WHERE id = $3 FOR SHARE) \
                     ON CONFLICT (user_key) DO NOTHING",
                    &[&key.as_slice(), wrapped, session],
                )
                .await?;
                let row = sql_query_opt(&client, "SELECT wrapped FROM ks_dek WHERE user_key = $1", &[&key.as_slice()])
                    .await?;
                Ok(row.map(|row| row.get(0)))
            })
            .await
    }

    async fn add_pending_init(&self, id: Pseudonym, init: InitRecord) -> Result<(), StoreError> {
        let init = &init;
        self.db
            .retrying(|client| async move {
                sql_execute(
                    &client,
                    "INSERT INTO ks_pending_init (id, expires_at, sealed) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, sealed = excluded.sealed",
                    &[&id.as_slice(), &int(init.expires_at), &init.sealed],
                )
                .await?;
                Ok(())
            })
            .await
    }

    async fn redeem_init(
        &self,
        id: &Pseudonym,
        now: UnixTime,
        session_id: Pseudonym,
        make_session: MakeSession,
    ) -> Result<Redeemed, StoreError> {
        let make_session = &make_session;
        self.db
            .retrying(|mut client| async move {
                let transaction = begin(&mut client).await?;
                // Deleting is the claim: of several nodes racing for one token, exactly one
                // gets the row back.
                let Some(row) = sql_query_opt(
                    &transaction,
                    "DELETE FROM ks_pending_init WHERE id = $1 RETURNING expires_at, sealed",
                    &[&id.as_slice()],
                )
                .await?
                else {
                    return Ok(Redeemed::UnknownInit);
                };
                let init = InitRecord { expires_at: uint(row.get(0)), sealed: row.get(1) };
                if init.expires_at <= now {
                    transaction.commit().await?;
                    return Ok(Redeemed::ExpiredInit);
                }
                let session = make_session(&init)?;
                sql_execute(
                    &transaction,
                    "INSERT INTO ks_session (id, user_key, expires_at, last_used, sealed, credential) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &session_id.as_slice(),
                        &record::user_prefix(&session.user).as_slice(),
                        &int(session.expires_at),
                        &int(session.last_used),
                        &session.sealed,
                        &session.credential,
                    ],
                )
                .await?;
                transaction.commit().await?;
                Ok(Redeemed::Session)
            })
            .await
    }

    async fn session(&self, id: &Pseudonym) -> Result<Option<SessionRecord>, StoreError> {
        self.batches.sessions.ask(*id).await
    }

    async fn delete_session(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        self.db
            .retrying(|client| async move {
                Ok(sql_execute(&client, "DELETE FROM ks_session WHERE id = $1", &[&id.as_slice()]).await? > 0)
            })
            .await
    }

    async fn touch_session(&self, id: &Pseudonym, now: UnixTime) -> Result<(), StoreError> {
        self.db
            .retrying(|client| async move {
                sql_execute(
                    &client,
                    "UPDATE ks_session SET last_used = $2 WHERE id = $1 AND last_used < $2",
                    &[&id.as_slice(), &int(now)],
                )
                .await?;
                Ok(())
            })
            .await
    }

    async fn user_sessions(&self, user: &UserKey) -> Result<Vec<SessionRecord>, StoreError> {
        self.user_rows(
            user,
            "SELECT user_key, expires_at, last_used, sealed, credential FROM ks_session WHERE user_key = $1 ORDER BY id",
            session_of,
        )
        .await
    }

    async fn put_key(
        &self,
        user: &UserKey,
        writer: Writer<'_>,
        precondition: &Precondition,
        keep: u64,
        created_at: UnixTime,
        seal: SealVersion,
    ) -> Result<PutOutcome, StoreError> {
        let put = PutQuery {
            user: record::user_prefix(user).to_vec(),
            dek: writer.dek.to_vec(),
            session: writer.session.map(|id| id.to_vec()),
            precondition: precondition.clone(),
            keep,
            created_at,
            seal,
        };
        self.batches.writes.ask(put).await?
    }

    async fn get_key(&self, user: &UserKey, version: Option<u64>) -> Result<Option<KeyRecord>, StoreError> {
        let key = &record::user_prefix(user);
        let Some(version) = version else {
            return Ok(self.batches.latest.ask(key.to_vec()).await?.0);
        };
        self.db
            .reading(|client| async move {
                let row = sql_query_opt(
                    &client,
                    "SELECT version, created_at, sealed FROM ks_key_version WHERE user_key = $1 AND version = $2",
                    &[&key.as_slice(), &int(version)],
                )
                .await?;
                Ok(row.as_ref().map(key_of).transpose()?)
            })
            .await
    }

    async fn key_with_dek(&self, user: &UserKey, version: Option<u64>) -> Result<KeyWithDek, StoreError> {
        // The latest with its DEK is one statement; another version, two reads.
        match version {
            None => self.batches.latest.ask(record::user_prefix(user).to_vec()).await,
            Some(_) => crate::store::contract::key_and_dek_apart(self, user, version).await,
        }
    }

    async fn list_keys(&self, user: &UserKey) -> Result<Vec<KeyRecord>, StoreError> {
        self.user_rows(
            user,
            "SELECT version, created_at, sealed FROM ks_key_version WHERE user_key = $1 ORDER BY version",
            key_of,
        )
        .await
    }

    async fn delete_keys(&self, user: &UserKey) -> Result<u64, StoreError> {
        let key = record::user_prefix(user);
        self.db
            .retrying(|mut client| async move {
                let key = key.as_slice();
                let transaction = begin(&mut client).await?;
                // Locks the head first, as a PUT does, so the two take turns.
                sql_execute(&transaction, "DELETE FROM ks_key_head WHERE user_key = $1", &[&key]).await?;
                let versions =
                    sql_execute(&transaction, "DELETE FROM ks_key_version WHERE user_key = $1", &[&key]).await?;
                sql_execute(&transaction, "DELETE FROM ks_dek WHERE user_key = $1", &[&key]).await?;
                transaction.commit().await?;
                Ok(versions)
            })
            .await
    }

    async fn erase_user(&self, user: &UserKey) -> Result<Erased, StoreError> {
        let key = record::user_prefix(user);
        self.db
            .retrying(|mut client| async move {
                let key = key.as_slice();
                let transaction = begin(&mut client).await?;
                // Sessions first: a DEK being created for one of them waits for this, or
                // is stored before it and deleted below (see `create_user_dek`).
                let sessions = sql_execute(&transaction, "DELETE FROM ks_session WHERE user_key = $1", &[&key]).await?;
                sql_execute(&transaction, "DELETE FROM ks_key_head WHERE user_key = $1", &[&key]).await?;
                let versions =
                    sql_execute(&transaction, "DELETE FROM ks_key_version WHERE user_key = $1", &[&key]).await?;
                sql_execute(&transaction, "DELETE FROM ks_dek WHERE user_key = $1", &[&key]).await?;
                let accesses = sql_execute(&transaction, "DELETE FROM ks_access WHERE user_key = $1", &[&key]).await?;
                transaction.commit().await?;
                Ok(Erased { versions, sessions, accesses })
            })
            .await
    }

    async fn delete_pending_init(&self, id: &Pseudonym) -> Result<bool, StoreError> {
        self.db
            .retrying(|client| async move {
                Ok(sql_execute(&client, "DELETE FROM ks_pending_init WHERE id = $1", &[&id.as_slice()]).await? > 0)
            })
            .await
    }

    async fn append_accesses(&self, entries: Vec<(UserKey, AccessRecord)>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let users: Vec<Vec<u8>> = entries.iter().map(|(user, _)| record::user_prefix(user).to_vec()).collect();
        let ids: Vec<&[u8]> = entries.iter().map(|(_, entry)| entry.id.as_slice()).collect();
        let sealed: Vec<&[u8]> = entries.iter().map(|(_, entry)| entry.sealed.as_slice()).collect();
        let (users, ids, sealed) = (&users, &ids, &sealed);
        self.db
            .retrying(|client| async move {
                // One statement for the whole batch, whatever its size.
                sql_execute(
                    &client,
                    "INSERT INTO ks_access (user_key, id, sealed) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[]) ON CONFLICT DO NOTHING",
                    &[users, ids, sealed],
                )
                .await?;
                Ok(())
            })
            .await
    }

    async fn accesses(
        &self,
        user: &UserKey,
        before: Option<AccessId>,
        limit: usize,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let before = &before.unwrap_or([0xff; 16]);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let key = &record::user_prefix(user);
        self.db
            .reading(|client| async move {
                let rows = sql_query(
                    &client,
                    "SELECT id, sealed FROM ks_access WHERE user_key = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                    &[&key.as_slice(), &before.as_slice(), &limit],
                )
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let id: &[u8] = row.get(0);
                        let id = id.try_into().map_err(|_| StoreError::Corrupt { kind: "access entry" })?;
                        Ok(AccessRecord { id, sealed: row.get(1) })
                    })
                    .collect::<Result<_, StoreError>>()?)
            })
            .await
    }
}

impl PostgresStore {
    /// Every row `sql` selects for `user` (its `$1`), decoded.
    async fn user_rows<T>(
        &self,
        user: &UserKey,
        sql: &'static str,
        decode: fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let key = &record::user_prefix(user);
        self.db
            .reading(|client| async move {
                let rows = sql_query(&client, sql, &[&key.as_slice()]).await?;
                Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
            })
            .await
    }
}
