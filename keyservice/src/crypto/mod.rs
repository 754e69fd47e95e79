//! Every cryptographic operation of the server, in one place: token generation,
//! digests, replay fingerprints ([this module](self)), the master key ([`master`], in a
//! file or a PKCS#11 token: [`token`]), the
//! envelope secrets are sealed in (`seal`) and the pseudonyms and key hierarchy of data
//! at rest ([`vault`]).
//!
//! MAC verification itself is the protocol's ([`keyservice_client::protocol::ss1`]), so
//! server and clients share one implementation.

pub mod master;
pub mod seal;
pub mod source;
pub mod token;
pub mod vault;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use keyservice_client::protocol::ss1::Nonce;
use keyservice_client::protocol::{RandomError, Secret, random_bytes};
use sha2::{Digest, Sha256, Sha512};

/// Bytes of randomness in an init token, a session token and a generated secret.
pub const TOKEN_BYTES: usize = 32;

/// A new token: 32 bytes from the OS CSPRNG, base64url without padding (43 characters).
///
/// # Errors
///
/// Fails only when the operating system cannot supply randomness.
pub fn new_token() -> Result<Secret, RandomError> {
    let bytes = zeroize::Zeroizing::new(random_bytes::<TOKEN_BYTES>()?);
    Ok(Secret::new(URL_SAFE_NO_PAD.encode(*bytes)))
}

/// SHA-512 of an init token's UTF-8 bytes, as its initTokenHash carries it.
pub fn init_digest(init_token: &Secret) -> [u8; 64] {
    Sha512::digest(init_token.as_bytes()).into()
}

/// Decodes an `initTokenHash` (standard, padded base64 of 64 bytes).
pub fn decode_init_token_hash(text: &str) -> Option<[u8; 64]> {
    let bytes = STANDARD.decode(text).ok()?;
    bytes.try_into().ok()
}

/// The 64-bit replay fingerprint of a (key id, nonce) pair: the first 8 bytes of
/// SHA-256(len(keyid) u16 ‖ keyid ‖ nonce).
///
/// Eight bytes keep the replay memory small. A fresh request is wrongly refused only
/// when its fingerprint equals one of the n others remembered for its date bucket,
/// probability n / 2⁶⁴ (10⁻¹² at ten million). Choosing a nonce to collide with someone
/// else's needs that nonce, which is random and unseen until sent, and then ~2⁶⁴ work.
pub fn replay_fingerprint(key_id: &str, nonce: &Nonce) -> u64 {
    let mut hasher = Sha256::new();
    // Key ids are at most 256 bytes (ss1 parsing enforces it).
    hasher.update((key_id.len() as u16).to_be_bytes());
    hasher.update(key_id.as_bytes());
    hasher.update(nonce.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The 64-bit fingerprint under which a single-use ID token is remembered once spent,
/// beside the replay fingerprints of signed requests. Those hash a two-byte key id
/// length (at most 256) first; this hashes a label whose first two bytes read as a
/// larger number, so the two can never be fingerprints of the same input.
pub fn id_token_fingerprint(token: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(b"keyservice id token\0");
    hasher.update(token.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyservice_client::protocol::wire::init_token_hash;

    #[test]
    fn tokens_are_43_base64url_chars_and_unique() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn init_token_hash_decodes_to_the_digest() {
        let token = new_token().unwrap();
        assert_eq!(decode_init_token_hash(&init_token_hash(&token)), Some(init_digest(&token)));
        assert_eq!(decode_init_token_hash("not base64!"), None);
        assert_eq!(decode_init_token_hash(&STANDARD.encode([0u8; 63])), None);
        // Unpadded is refused: the protocol says padded.
        let padded = init_token_hash(&token);
        assert_eq!(decode_init_token_hash(padded.trim_end_matches('=')), None);
    }

    #[test]
    fn fingerprints_separate_key_ids_and_nonces() {
        let n1 = Nonce::from_bytes([1; 64]);
        let n2 = Nonce::from_bytes([2; 64]);
        assert_eq!(replay_fingerprint("a", &n1), replay_fingerprint("a", &n1));
        assert_ne!(replay_fingerprint("a", &n1), replay_fingerprint("b", &n1));
        assert_ne!(replay_fingerprint("a", &n1), replay_fingerprint("a", &n2));
    }
}
