//! The escrow's key operations: a device's key versions written, read and deleted,
//! each sealed under its user's DEK, which is kept opened when the cache allows.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Escrow, Key, seal_error};
use crate::auth::Device;
use crate::crypto::vault::{IfAbsent, UserDek, Vault, VaultError};
use crate::error::Error;
use crate::store::{Precondition, Pseudonym, PutOutcome, UnixTime, UserKey, Writer};

/// Tries of a PUT whose user's keys are deleted while it is made, each under the DEK
/// the user has then.
pub(super) const MAX_PUT_ATTEMPTS: u32 = 4;

impl Escrow {
    /// The user's DEK, from the cache when held; when there is none, created as
    /// `if_absent` says. `None` when there is none and none was created.
    pub(super) async fn user_dek(
        &self,
        user: &UserKey,
        if_absent: IfAbsent<'_>,
    ) -> Result<Option<Arc<UserDek>>, Error> {
        let epoch = match self.held_dek(user) {
            Ok(dek) => return Ok(Some(dek)),
            Err(epoch) => epoch,
        };
        let Some(dek) = self.vault.user_dek(self.store.as_ref(), user, if_absent).await? else {
            return Ok(None);
        };
        let dek = Arc::new(dek);
        self.keep_dek(epoch, user, &dek);
        Ok(Some(dek))
    }

    /// The user's DEK if this node holds it opened; else the cache's epoch to keep one
    /// read now under (`None`: nothing is kept).
    fn held_dek(&self, user: &UserKey) -> Result<Arc<UserDek>, Option<u64>> {
        match &self.cache {
            Some(cache) => match cache.deks.get(user) {
                (Some(dek), _) => Ok(dek),
                (None, epoch) => Err(Some(epoch)),
            },
            None => Err(None),
        }
    }

    /// Keeps a DEK read under `epoch` (see [`Escrow::held_dek`]).
    fn keep_dek(&self, epoch: Option<u64>, user: &UserKey, dek: &Arc<UserDek>) {
        if let (Some(cache), Some(epoch)) = (&self.cache, epoch) {
            cache.deks.insert(epoch, *user, dek.clone());
        }
    }

    /// Stores a new version of the device's user's key, pruning beyond the retention
    /// limit; [`PutOutcome::SessionGone`], writing nothing, when the device's session
    /// ended meanwhile (its user erased).
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn put_key(
        &self,
        device: &Device,
        content_type: String,
        bytes: Zeroizing<Vec<u8>>,
        precondition: &Precondition,
        now: UnixTime,
    ) -> Result<PutOutcome, Error> {
        self.write_key(device.user(), Some(&device.session().id), content_type, bytes, precondition, now).await
    }

    /// [`Escrow::put_key`] for `user` without a request: the operator's way to load
    /// keys (the benchmark seeds its users with it). Requests go through `put_key`.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn store_key(
        &self,
        user: &UserKey,
        content_type: String,
        bytes: Zeroizing<Vec<u8>>,
        precondition: &Precondition,
        now: UnixTime,
    ) -> Result<PutOutcome, Error> {
        self.write_key(user, None, content_type, bytes, precondition, now).await
    }

    /// Writes a version of `user`'s key in `session` (none: the operator's), sealed
    /// again under the user's new DEK when a deletion removed the one it was sealed under.
    async fn write_key(
        &self,
        user: &UserKey,
        session: Option<&Pseudonym>,
        content_type: String,
        bytes: Zeroizing<Vec<u8>>,
        precondition: &Precondition,
        now: UnixTime,
    ) -> Result<PutOutcome, Error> {
        let payload = Arc::new((content_type, bytes));
        let mut attempts = 0;
        loop {
            attempts += 1;
            // No DEK is made for a session its user's erasure ended meanwhile.
            let Some(dek) = self.user_dek(user, IfAbsent::Create(session)).await? else {
                return Ok(PutOutcome::SessionGone);
            };
            let (sealing_dek, sealing_user, payload) = (dek.clone(), *user, payload.clone());
            let seal = Box::new(move |version: u64| {
                let (content_type, bytes) = &*payload;
                Vault::seal_key(&sealing_dek, &sealing_user, version, content_type, bytes).map_err(seal_error)
            });
            let writer = Writer { dek: dek.wrapped(), session };
            let outcome = self.store.put_key(user, writer, precondition, self.policy.max_key_versions, now, seal).await;
            if let Some(cache) = &self.cache {
                cache.latest.forget(user);
            }
            // The user's keys were deleted (or erased) after their DEK was read: nothing
            // was written; seal under the DEK they have now.
            if matches!(outcome, Ok(PutOutcome::DekChanged)) && attempts < MAX_PUT_ATTEMPTS {
                if let Some(cache) = &self.cache {
                    cache.deks.forget(user);
                }
                continue;
            }
            return Ok(outcome?);
        }
    }

    /// The given version of the user's key (the latest for `None`, from the cache when
    /// held), opened.
    ///
    /// # Errors
    ///
    /// Storage failures, or a record that fails to open (damaged, or moved under another
    /// user: never returned).
    pub async fn get_key(&self, device: &Device, version: Option<u64>) -> Result<Option<Arc<Key>>, Error> {
        let user = device.user();
        let epoch = match (&self.cache, version) {
            (Some(cache), None) => match cache.latest.get(user) {
                (Some(key), _) => return Ok(Some(key)),
                (None, epoch) => Some(epoch),
            },
            _ => None,
        };
        let (record, dek) = match self.held_dek(user) {
            Ok(dek) => (self.store.get_key(user, version).await?, dek),
            // The key and its DEK in one look at the store: on a shared one, one round trip
            // and one statement.
            Err(dek_epoch) => {
                let (record, wrapped) = self.store.key_with_dek(user, version).await?;
                let Some(record) = record else {
                    return Ok(None);
                };
                let wrapped = wrapped.ok_or_else(missing_dek)?;
                let dek = Arc::new(self.vault.open_user_dek(self.store.as_ref(), user, &wrapped).await?);
                self.keep_dek(dek_epoch, user, &dek);
                (Some(record), dek)
            }
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let (content_type, bytes) = Vault::open_key(&dek, user, record.version, &record.sealed)?;
        let key = Arc::new(Key { version: record.version, content_type, bytes });
        if let (Some(cache), Some(epoch)) = (&self.cache, epoch) {
            cache.latest.insert(epoch, *user, key.clone());
        }
        Ok(Some(key))
    }

    /// Deletes every version of the device's user's key, and their DEK.
    ///
    /// # Errors
    ///
    /// Storage failures.
    pub async fn delete_keys(&self, device: &Device) -> Result<u64, Error> {
        let user = device.user();
        let deleted = self.store.delete_keys(user).await;
        self.forget(user, false);
        Ok(deleted?)
    }
}

/// Key versions exist but their DEK does not: the two are only ever deleted together.
pub(super) fn missing_dek() -> Error {
    Error::Vault(VaultError::Tampered("user key"))
}
