//! The envelopes every secret at rest is sealed in, and the key that seals them.
//!
//! Every envelope sealed in the process is `1 ‖ key id (8) ‖ nonce (24) ‖
//! XChaCha20-Poly1305 ciphertext ‖ tag`; one sealed by a PKCS#11 token is `2 ‖ key id
//! (8) ‖ IV (12) ‖ AES-256-GCM ciphertext ‖ tag`. Both take associated data naming the
//! record's kind and identity, so a record copied under another identity fails to open
//! instead of being served.

use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, KeyInit, Mac};
use keyservice_client::protocol::{RandomError, random_bytes};
use zeroize::Zeroizing;

const ENVELOPE_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 8 + 24;
const TAG_LEN: usize = 16;
/// The envelope a token's AES-GCM makes.
const ENVELOPE_TOKEN: u8 = 2;
const TOKEN_HEADER_LEN: usize = 1 + 8 + 12;

/// Why an envelope could not be made or opened. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The envelope failed authentication: damaged, or moved under another identity.
    #[error("a stored {0} failed authentication: it is damaged or was moved under another identity")]
    Tampered(&'static str),
    /// No randomness for a nonce.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The key is kept outside the process (a PKCS#11 token) and cannot be reached now.
    #[error("the master key cannot be reached: {0}")]
    Unavailable(String),
}

/// The 8-byte id of a 256-bit key: a keyed hash of a fixed label, safe to store and show.
/// Envelopes carry the id of the key that sealed them; a master key's id is the same.
pub(crate) fn key_id(key: &[u8; 32]) -> [u8; 8] {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"keyservice key id v1");
    let mut id = [0u8; 8];
    id.copy_from_slice(&mac.finalize().into_bytes()[..8]);
    id
}

/// A 256-bit AEAD key and its id.
pub(crate) struct SealingKey {
    cipher: XChaCha20Poly1305,
    pub(crate) id: [u8; 8],
}

impl SealingKey {
    pub(crate) fn new(bytes: &[u8; 32]) -> Self {
        Self { cipher: XChaCha20Poly1305::new(bytes.into()), id: key_id(bytes) }
    }

    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; 24] = random_bytes()?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            // XChaCha20-Poly1305 fails only for plaintexts beyond 256 GiB.
            .expect("sealing a record of bounded size cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.push(ENVELOPE_V1);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub(crate) fn open(
        &self,
        aad: &[u8],
        envelope: &[u8],
        kind: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if envelope.len() < HEADER_LEN + TAG_LEN || envelope[0] != ENVELOPE_V1 || envelope[1..9] != self.id {
            return Err(SealError::Tampered(kind));
        }
        let nonce = XNonce::from_slice(&envelope[9..HEADER_LEN]);
        self.cipher
            .decrypt(nonce, Payload { msg: &envelope[HEADER_LEN..], aad })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered(kind))
    }

    pub(crate) fn wrap(&self, aad: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, SealError> {
        self.seal(aad, key)
    }

    pub(crate) fn unwrap_key(&self, aad: &[u8], wrapped: &[u8], kind: &'static str) -> Result<SealingKey, SealError> {
        Ok(SealingKey::new(&*self.unwrap_bytes(aad, wrapped, kind)?))
    }

    /// Opens a wrapped 256-bit key.
    pub(crate) fn unwrap_bytes(
        &self,
        aad: &[u8],
        wrapped: &[u8],
        kind: &'static str,
    ) -> Result<Zeroizing<[u8; 32]>, SealError> {
        let bytes = self.open(aad, wrapped, kind)?;
        let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SealError::Tampered(kind))?;
        Ok(Zeroizing::new(array))
    }
}

/// The id under which an envelope was sealed, or `None` for a malformed one.
pub fn envelope_key_id(envelope: &[u8]) -> Option<[u8; 8]> {
    let header = match envelope.first() {
        Some(&ENVELOPE_V1) => HEADER_LEN,
        Some(&ENVELOPE_TOKEN) => TOKEN_HEADER_LEN,
        _ => return None,
    };
    (envelope.len() >= header).then(|| envelope[1..9].try_into().ok()).flatten()
}

/// The envelope of what a token sealed with key `id` and `iv` (ciphertext and tag).
pub(crate) fn token_envelope(id: &[u8; 8], iv: &[u8; 12], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOKEN_HEADER_LEN + sealed.len());
    out.push(ENVELOPE_TOKEN);
    out.extend_from_slice(id);
    out.extend_from_slice(iv);
    out.extend_from_slice(sealed);
    out
}

/// The IV and the ciphertext with its tag of a token envelope sealed by key `id`;
/// `None` for any other envelope.
pub(crate) fn open_token_envelope<'a>(envelope: &'a [u8], id: &[u8; 8]) -> Option<([u8; 12], &'a [u8])> {
    if envelope.len() < TOKEN_HEADER_LEN + TAG_LEN || envelope[0] != ENVELOPE_TOKEN || envelope[1..9] != *id {
        return None;
    }
    let iv = envelope[9..TOKEN_HEADER_LEN].try_into().ok()?;
    Some((iv, &envelope[TOKEN_HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_envelopes_name_their_key_and_a_token_envelope_opens_only_for_its_key() {
        let key = SealingKey::new(&[7; 32]);
        let sealed = key.seal(b"aad", b"secret").unwrap();
        assert_eq!(envelope_key_id(&sealed), Some(key.id));

        let id = [9; 8];
        let token = token_envelope(&id, &[1; 12], &[2; 48]);
        assert_eq!(envelope_key_id(&token), Some(id));
        assert_eq!(open_token_envelope(&token, &id), Some(([1; 12], &[2u8; 48][..])));
        assert_eq!(open_token_envelope(&token, &[8; 8]), None, "another key's envelope");
        assert_eq!(open_token_envelope(&sealed, &key.id), None, "not a token envelope");
        assert_eq!(open_token_envelope(&token[..TOKEN_HEADER_LEN + TAG_LEN - 1], &id), None, "cut short");
        assert_eq!(envelope_key_id(&token[..TOKEN_HEADER_LEN - 1]), None);
        assert_eq!(envelope_key_id(&[3; 40]), None, "an unknown version");
    }
}
