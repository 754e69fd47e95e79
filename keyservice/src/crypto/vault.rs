//! Data at rest: pseudonyms for every identifier, and sealed envelopes for every secret.
//!
//! Key hierarchy:
//!
//! ```text
//! master key (a MasterSource: a file, the environment or a PKCS#11 token; never stored)
//!  ├─ wraps the index key   → HMAC-SHA-256 pseudonyms of namespaces, users, tokens
//!  ├─ wraps the system key  → seals pending init tokens and session secrets
//!  └─ wraps one KEK per namespace
//!       └─ wraps one DEK per user → seals that user's key versions
//! ```
//!
//! The index, system, namespace and user keys are random and stored *wrapped*, so
//! rotating the master key re-wraps a handful of small values and never touches a
//! record, and pseudonyms stay stable. Erasing a user deletes their DEK together with
//! their records: a copy of a record that survived somewhere can no longer be opened.
//!
//! Every envelope (see `seal`) names the key that sealed it and takes associated data
//! naming the record's kind and identity (user, version, token id), so a record copied
//! under another identity fails to open instead of being served.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use keyservice_client::protocol::{RandomError, Secret, random_bytes};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::master::MasterKey;
pub use super::seal::envelope_key_id;
use super::seal::{SealError, SealingKey};
use super::source::MasterCalls;
use crate::store::{AccessId, Pseudonym, Records, StoreError, UserKey};

/// Why sealed data could not be opened or keys could not be loaded. Never contains key
/// material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The store was sealed under another master key.
    #[error("this store's keys were sealed by master key {stored}, not by the configured master key {configured}")]
    WrongMasterKey {
        /// Id of the key that sealed the store.
        stored: String,
        /// Id of the key given.
        configured: String,
    },
    /// A sealed record failed authentication: damaged, or moved under another identity.
    #[error("a stored {0} failed authentication: it is damaged or was moved under another identity")]
    Tampered(&'static str),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The master key is kept outside the process and cannot be reached now: nothing
    /// new can be sealed under it (a new namespace), what is unwrapped keeps working.
    #[error("the master key cannot be reached: {0}")]
    MasterKeyUnavailable(String),
}

impl From<SealError> for VaultError {
    fn from(error: SealError) -> Self {
        match error {
            SealError::Tampered(kind) => Self::Tampered(kind),
            SealError::Random(error) => Self::Random(error),
            SealError::Unavailable(why) => Self::MasterKeyUnavailable(why),
        }
    }
}

/// How long a request waits for the master key (the first use of a namespace since the
/// start) before it is refused with `503 master_key_unavailable`.
pub const MASTER_KEY_DEADLINE: Duration = Duration::from_secs(5);

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Keyring entry names.
const INDEX_KEY: &[u8] = b"system/index";
const SYSTEM_KEY: &[u8] = b"system/seal";

/// The name of a namespace's KEK in the keyring.
fn kek_name(namespace: &Pseudonym) -> Vec<u8> {
    [b"kek/".as_slice(), namespace].concat()
}

fn keyring_aad(name: &[u8]) -> Vec<u8> {
    [b"keyring\0".as_slice(), name].concat()
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Keyring entries re-wrapped under the new master key.
    pub rewrapped: u64,
    /// Entries that were under the new key already (a repeated or resumed rotation).
    pub already_current: u64,
}

/// Pseudonyms and sealing for one store, under one master key.
pub struct Vault {
    /// Swapped, whole, by [`Vault::rotate`].
    master: RwLock<MasterCalls>,
    /// How long a request waits for the master key ([`MASTER_KEY_DEADLINE`]).
    deadline: Duration,
    index: Zeroizing<[u8; 32]>,
    system: SealingKey,
    /// Unwrapped namespace KEKs, by namespace pseudonym.
    keks: Mutex<HashMap<Pseudonym, Arc<SealingKey>>>,
}

/// What [`Vault::user_dek`] does when the user has no DEK.
#[derive(Debug, Clone, Copy)]
pub enum IfAbsent<'a> {
    /// Nothing: there is none.
    None,
    /// Creates one for a write in this session (none: the operator's), unless the
    /// session no longer exists (its user erased meanwhile).
    Create(Option<&'a Pseudonym>),
}

/// A user's data-encryption key, unwrapped, with the wrapped form the store holds (a
/// write names it, so that it never lands under a DEK deleted meanwhile).
pub struct UserDek {
    key: SealingKey,
    wrapped: Vec<u8>,
}

impl UserDek {
    /// The DEK as the store holds it, wrapped.
    pub fn wrapped(&self) -> &[u8] {
        &self.wrapped
    }
}

impl Vault {
    /// Loads the store's index and system keys with `master`, creating them on first use.
    ///
    /// # Errors
    ///
    /// [`VaultError::WrongMasterKey`] when the store was sealed under another master key.
    pub async fn open(master: &MasterKey, store: &dyn Records) -> Result<Self, VaultError> {
        let master = MasterCalls::new(master.source());
        let index = load_or_create(&master, store, INDEX_KEY).await?;
        let system = load_or_create(&master, store, SYSTEM_KEY).await?;
        Ok(Self {
            master: RwLock::new(master),
            deadline: MASTER_KEY_DEADLINE,
            index,
            system: SealingKey::new(&system),
            keks: Mutex::default(),
        })
    }

    /// The pseudonym of a namespace.
    pub fn namespace(&self, namespace: &str) -> Pseudonym {
        hmac(&self.index[..], &[b"namespace\0", namespace.as_bytes()])
    }

    /// The pseudonyms of a user of a namespace.
    pub fn user(&self, namespace: &str, user_id: &str) -> UserKey {
        // Namespaces are at most 64 bytes, so the length fits a u16.
        let len = (namespace.len() as u16).to_be_bytes();
        UserKey {
            namespace: self.namespace(namespace),
            user: hmac(&self.index[..], &[b"user\0", &len, namespace.as_bytes(), user_id.as_bytes()]),
        }
    }

    /// The pseudonym of a pending init, from SHA-512 of its token.
    pub fn init_id(&self, digest: &[u8; 64]) -> Pseudonym {
        hmac(&self.index[..], &[b"init\0", digest])
    }

    /// The pseudonym of a session, from its token.
    pub fn session_id(&self, session_token: &str) -> Pseudonym {
        hmac(&self.index[..], &[b"session\0", session_token.as_bytes()])
    }

    /// Seals a pending init's token.
    ///
    /// # Errors
    ///
    /// Only when the OS cannot supply a nonce.
    pub fn seal_init(&self, id: &Pseudonym, token: &Secret) -> Result<Vec<u8>, VaultError> {
        Ok(self.system.seal(&[b"init\0".as_slice(), id].concat(), token.as_bytes())?)
    }

    /// Opens what [`Vault::seal_init`] sealed under the same id.
    ///
    /// # Errors
    ///
    /// [`VaultError::Tampered`].
    pub fn open_init(&self, id: &Pseudonym, sealed: &[u8]) -> Result<Secret, VaultError> {
        let plain = self.system.open(&[b"init\0".as_slice(), id].concat(), sealed, "init token")?;
        utf8_secret(&plain, "init token")
    }

    /// Seals a session's secret, bound to the session and its user.
    ///
    /// # Errors
    ///
    /// Only when the OS cannot supply a nonce.
    pub fn seal_session(&self, id: &Pseudonym, user: &UserKey, secret: &Secret) -> Result<Vec<u8>, VaultError> {
        Ok(self.system.seal(&session_aad(id, user), secret.as_bytes())?)
    }

    /// Opens what [`Vault::seal_session`] sealed for the same session and user.
    ///
    /// # Errors
    ///
    /// [`VaultError::Tampered`].
    pub fn open_session(&self, id: &Pseudonym, user: &UserKey, sealed: &[u8]) -> Result<Secret, VaultError> {
        let plain = self.system.open(&session_aad(id, user), sealed, "session")?;
        utf8_secret(&plain, "session")
    }

    /// Seals the key id of the namespace credential that connected a session, bound to
    /// the session and its user.
    ///
    /// # Errors
    ///
    /// Only when the OS cannot supply a nonce.
    pub fn seal_credential(&self, id: &Pseudonym, user: &UserKey, key_id: &str) -> Result<Vec<u8>, VaultError> {
        Ok(self.system.seal(&credential_aad(id, user), key_id.as_bytes())?)
    }

    /// Opens what [`Vault::seal_credential`] sealed for the same session and user.
    ///
    /// # Errors
    ///
    /// [`VaultError::Tampered`].
    pub fn open_credential(&self, id: &Pseudonym, user: &UserKey, sealed: &[u8]) -> Result<String, VaultError> {
        let plain = self.system.open(&credential_aad(id, user), sealed, "session credential")?;
        String::from_utf8(plain.to_vec()).map_err(|_| VaultError::Tampered("session credential"))
    }

    /// Seals an entry of a user's access history, bound to the user and its place.
    ///
    /// # Errors
    ///
    /// Only when the OS cannot supply a nonce.
    pub fn seal_access(&self, user: &UserKey, id: &AccessId, plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        Ok(self.system.seal(&access_aad(user, id), plain)?)
    }

    /// Opens what [`Vault::seal_access`] sealed for the same user and place.
    ///
    /// # Errors
    ///
    /// [`VaultError::Tampered`], for an entry damaged or moved under another user.
    pub fn open_access(&self, user: &UserKey, id: &AccessId, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        Ok(self.system.open(&access_aad(user, id), sealed, "access entry")?)
    }

    /// The user's DEK; when there is none, created (durably, with the namespace's KEK if
    /// need be) as `if_absent` says. `None` when there is none and none was created.
    ///
    /// # Errors
    ///
    /// Storage failures, or [`VaultError::Tampered`] for a damaged wrapped key.
    pub async fn user_dek(
        &self,
        store: &dyn Records,
        user: &UserKey,
        if_absent: IfAbsent<'_>,
    ) -> Result<Option<UserDek>, VaultError> {
        let wrapped = match (store.user_dek(user).await?, if_absent) {
            (Some(wrapped), _) => wrapped,
            (None, IfAbsent::Create(session)) => {
                let kek = self.kek(store, &user.namespace).await?;
                let fresh = Zeroizing::new(random_bytes::<32>()?);
                match store.create_user_dek(user, kek.wrap(&dek_aad(user), &fresh)?, session).await? {
                    Some(wrapped) => wrapped,
                    None => return Ok(None),
                }
            }
            (None, IfAbsent::None) => return Ok(None),
        };
        self.open_user_dek(store, user, &wrapped).await.map(Some)
    }

    /// Unwraps the user's DEK as the store holds it (`wrapped`).
    ///
    /// # Errors
    ///
    /// Storage failures (loading the namespace's KEK), or [`VaultError::Tampered`] for a
    /// damaged wrapped key.
    pub async fn open_user_dek(
        &self,
        store: &dyn Records,
        user: &UserKey,
        wrapped: &[u8],
    ) -> Result<UserDek, VaultError> {
        let aad = dek_aad(user);
        let kek = self.kek(store, &user.namespace).await?;
        Ok(UserDek { key: kek.unwrap_key(&aad, wrapped, "user key")?, wrapped: wrapped.to_vec() })
    }

    async fn kek(&self, store: &dyn Records, namespace: &Pseudonym) -> Result<Arc<SealingKey>, VaultError> {
        if let Some(kek) = self.keks.lock().unwrap_or_else(PoisonError::into_inner).get(namespace) {
            return Ok(kek.clone());
        }
        let name = kek_name(namespace);
        let master = self.master.read().unwrap_or_else(PoisonError::into_inner).clone();
        let bytes = tokio::time::timeout(self.deadline, load_or_create(&master, store, &name))
            .await
            .map_err(|_| VaultError::MasterKeyUnavailable(format!("it did not answer within {:?}", self.deadline)))??;
        let kek = Arc::new(SealingKey::new(&bytes));
        self.keks.lock().unwrap_or_else(PoisonError::into_inner).insert(*namespace, kek.clone());
        Ok(kek)
    }

    /// Seals a key version (its content type and bytes) for `user` and `version`.
    ///
    /// # Errors
    ///
    /// Only when the OS cannot supply a nonce.
    pub fn seal_key(
        dek: &UserDek,
        user: &UserKey,
        version: u64,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let mut plain = Zeroizing::new(Vec::with_capacity(2 + content_type.len() + bytes.len()));
        // Content types are validated to at most 255 bytes.
        plain.extend_from_slice(&(content_type.len() as u16).to_be_bytes());
        plain.extend_from_slice(content_type.as_bytes());
        plain.extend_from_slice(bytes);
        Ok(dek.key.seal(&key_aad(user, version), &plain)?)
    }

    /// Opens a key version: its content type and bytes.
    ///
    /// # Errors
    ///
    /// [`VaultError::Tampered`] when it was not sealed for this user and version.
    pub fn open_key(
        dek: &UserDek,
        user: &UserKey,
        version: u64,
        sealed: &[u8],
    ) -> Result<(String, Zeroizing<Vec<u8>>), VaultError> {
        const KIND: &str = "key version";
        let plain = dek.key.open(&key_aad(user, version), sealed, KIND)?;
        let len = usize::from(u16::from_be_bytes([
            *plain.first().ok_or(VaultError::Tampered(KIND))?,
            *plain.get(1).ok_or(VaultError::Tampered(KIND))?,
        ]));
        let content_type = plain.get(2..2 + len).ok_or(VaultError::Tampered(KIND))?;
        let content_type = String::from_utf8(content_type.to_vec()).map_err(|_| VaultError::Tampered(KIND))?;
        Ok((content_type, Zeroizing::new(plain[2 + len..].to_vec())))
    }

    /// Re-wraps every keyring entry (the index and system keys and every namespace's
    /// KEK) from the current master key to `new`, in one atomic write, and seals with
    /// `new` from then on. Records and user keys are not touched: they hang below.
    /// Entries already under `new` are left as they are, so repeating a rotation, or
    /// running it again after a crash, finishes the job.
    ///
    /// # Errors
    ///
    /// [`VaultError::Tampered`] for an entry under neither key; storage failures.
    pub async fn rotate(&self, store: &dyn Records, new: &MasterKey) -> Result<Rotation, VaultError> {
        let current = self.master.read().unwrap_or_else(PoisonError::into_inner).clone();
        let new = current.beside(new.source());
        let mut rewrapped = Vec::new();
        let mut already_current = 0;
        for (name, wrapped) in store.keyring_list().await? {
            let aad = keyring_aad(&name);
            match envelope_key_id(&wrapped) {
                Some(id) if id == new.id() => already_current += 1,
                Some(id) if id == current.id() => {
                    let key = current.unwrap(aad.clone(), wrapped, "keyring entry").await?;
                    rewrapped.push((name, new.wrap(aad, key).await?));
                }
                _ => return Err(VaultError::Tampered("keyring entry")),
            }
        }
        let count = rewrapped.len() as u64;
        store.keyring_replace(rewrapped).await?;
        *self.master.write().unwrap_or_else(PoisonError::into_inner) = new;
        Ok(Rotation { rewrapped: count, already_current })
    }

    /// Whether the master key can be used now (what `/readyz` reports as `masterKey`).
    ///
    /// # Errors
    ///
    /// [`VaultError::MasterKeyUnavailable`].
    pub async fn master_key_health(&self) -> Result<(), VaultError> {
        let master = self.master.read().unwrap_or_else(PoisonError::into_inner).clone();
        Ok(master.check().await?)
    }
}

async fn load_or_create(
    master: &MasterCalls,
    store: &dyn Records,
    name: &[u8],
) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let aad = keyring_aad(name);
    let wrapped = match store.keyring_get(name).await? {
        Some(wrapped) => wrapped,
        None => {
            let fresh = Zeroizing::new(random_bytes::<32>()?);
            let wrapped = master.wrap(aad.clone(), fresh).await?;
            store.keyring_create(name, wrapped).await?
        }
    };
    if let Some(stored) = envelope_key_id(&wrapped).filter(|id| *id != master.id()) {
        return Err(VaultError::WrongMasterKey { stored: hex::encode(stored), configured: hex::encode(master.id()) });
    }
    Ok(master.unwrap(aad, wrapped, "keyring entry").await?)
}

fn session_aad(id: &Pseudonym, user: &UserKey) -> Vec<u8> {
    [b"session\0".as_slice(), id, &user.namespace, &user.user].concat()
}

fn credential_aad(id: &Pseudonym, user: &UserKey) -> Vec<u8> {
    [b"session-credential\0".as_slice(), id, &user.namespace, &user.user].concat()
}

fn access_aad(user: &UserKey, id: &AccessId) -> Vec<u8> {
    [b"access\0".as_slice(), &user.namespace, &user.user, id].concat()
}

fn key_aad(user: &UserKey, version: u64) -> Vec<u8> {
    [b"key\0".as_slice(), &user.namespace, &user.user, &version.to_be_bytes()].concat()
}

fn utf8_secret(plain: &[u8], kind: &'static str) -> Result<Secret, VaultError> {
    std::str::from_utf8(plain).map(Secret::new).map_err(|_| VaultError::Tampered(kind))
}

/// What a user's wrapped DEK is bound to: its user.
fn dek_aad(user: &UserKey) -> Vec<u8> {
    [b"dek\0".as_slice(), &user.namespace, &user.user].concat()
}

#[cfg(test)]
mod tests;
