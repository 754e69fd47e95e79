//! What the vault needs of a master key, wherever it is kept ([`MasterSource`]), and
//! how the vault calls it ([`MasterCalls`]).

use std::sync::Arc;

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::seal::SealError;

/// What the vault needs of a master key, wherever the key is kept: to wrap and unwrap
/// the keyring's 256-bit keys (the index and system keys and each namespace's KEK). It
/// is called at start, when a namespace is first used and at a rotation, never per
/// request, and off the async workers (a call may block). Two sources exist: a file key
/// ([`super::master`]) and a PKCS#11 token ([`super::token`]: encrypt and decrypt with a
/// key that never leaves it, and a check value for the id). A cloud KMS would need the same calls:
/// Encrypt and Decrypt with the associated data as encryption context, the key's stable
/// identity (its ARN) hashed for the id, and a cheap call that proves it answers (a
/// DescribeKey) for [`MasterSource::check`].
pub trait MasterSource: Send + Sync {
    /// The 8-byte id that every envelope it makes carries, safe to store and show: it
    /// tells which key a store needs.
    fn id(&self) -> [u8; 8];

    /// `key` sealed for `aad`, as an envelope naming [`MasterSource::id`].
    ///
    /// # Errors
    ///
    /// When no envelope can be made (no randomness, or the key cannot be reached).
    fn wrap(&self, aad: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, SealError>;

    /// The key [`MasterSource::wrap`] sealed for the same `aad`; `kind` names the record
    /// for the error.
    ///
    /// # Errors
    ///
    /// [`SealError::Tampered`] for an envelope damaged, made by another key or for
    /// another `aad`.
    fn unwrap(&self, aad: &[u8], envelope: &[u8], kind: &'static str) -> Result<Zeroizing<[u8; 32]>, SealError>;

    /// Whether the key can be used now, as `/readyz` reports it: a key in memory always
    /// can; one outside the process answers only while it is reachable.
    ///
    /// # Errors
    ///
    /// [`SealError::Unavailable`], saying why.
    fn check(&self) -> Result<(), SealError> {
        Ok(())
    }
}

/// A master key as the vault calls it: on a blocking thread, since a token's or a KMS's
/// call may wait on a device or the network, and one call at a time. A token answers
/// one call at a time anyway; and a key that stops answering then holds one blocking
/// thread, however many requests wait for it (each waits only as long as it chooses to).
#[derive(Clone)]
pub(crate) struct MasterCalls {
    source: Arc<dyn MasterSource>,
    turn: Arc<Semaphore>,
}

impl MasterCalls {
    /// Calls to `source`, one at a time.
    pub(crate) fn new(source: Arc<dyn MasterSource>) -> Self {
        Self { source, turn: Arc::new(Semaphore::new(1)) }
    }

    /// Calls to `source` that take turns with these (a rotation's new key beside the
    /// current one).
    pub(crate) fn beside(&self, source: Arc<dyn MasterSource>) -> Self {
        Self { source, turn: self.turn.clone() }
    }

    /// [`MasterSource::id`]: held in memory, never a call.
    pub(crate) fn id(&self) -> [u8; 8] {
        self.source.id()
    }

    /// Runs `call` once its turn comes. The turn is held by the blocking thread, not by
    /// the waiter: a waiter that gives up does not let another call start beside one
    /// still running.
    async fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn MasterSource) -> Result<T, SealError> + Send + 'static,
    ) -> Result<T, SealError> {
        let unavailable = |why: String| SealError::Unavailable(why);
        let turn = self.turn.clone().acquire_owned().await.map_err(|e| unavailable(e.to_string()))?;
        let source = self.source.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            call(&*source)
        })
        .await;
        result.map_err(|e| unavailable(format!("the call to the master key failed: {e}")))?
    }

    /// [`MasterSource::wrap`], off the async workers.
    pub(crate) async fn wrap(&self, aad: Vec<u8>, key: Zeroizing<[u8; 32]>) -> Result<Vec<u8>, SealError> {
        self.call(move |source| source.wrap(&aad, &key)).await
    }

    /// [`MasterSource::unwrap`], off the async workers.
    pub(crate) async fn unwrap(
        &self,
        aad: Vec<u8>,
        envelope: Vec<u8>,
        kind: &'static str,
    ) -> Result<Zeroizing<[u8; 32]>, SealError> {
        self.call(move |source| source.unwrap(&aad, &envelope, kind)).await
    }

    /// [`MasterSource::check`], off the async workers.
    pub(crate) async fn check(&self) -> Result<(), SealError> {
        self.call(|source| source.check()).await
    }
}
