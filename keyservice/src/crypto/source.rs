//! What the vault needs of a master key, wherever it is kept: [`MasterSource`].

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
