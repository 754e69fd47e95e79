//! A factor only the user holds: the device wraps the key it escrows with a key derived
//! from the user's passphrase (Argon2id) or, in a browser, from a passkey's WebAuthn PRF
//! output. keyservice then holds only the wrapped key, so neither keyservice nor the Real
//! Service (nor both together) can read it without the user.
//!
//! The format, version 1 (every integer big-endian; the JavaScript client reads and
//! writes the same bytes, checked by `spec/wrap/vectors.json` at the repository root):
//!
//! ```text
//! 0      version          1 byte   1
//! 1      kdf              1 byte   1 = Argon2id (passphrase), 2 = WebAuthn PRF
//! kdf 1: memory (KiB)     4 bytes
//!        iterations       4 bytes
//!        parallelism      1 byte
//!        salt            16 bytes
//! kdf 2: PRF salt        32 bytes  the input the authenticator's PRF was evaluated on
//!        credential id    2-byte length (1 to 1023), then the id
//! then:  nonce           12 bytes
//!        AES-256-GCM ciphertext of the key, then its 16-byte tag;
//!        associated data: every byte before the ciphertext
//! ```
//!
//! The wrapping key is Argon2id (version 0x13, 32 bytes) of the passphrase in Unicode
//! NFC, or HKDF-SHA-256 of the 32-byte PRF output with an empty salt and the info
//! `keyservice-wrap v1 webauthn-prf`. Binding the header as associated data means no
//! parameter can be changed without the unwrap failing.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::protocol::random_bytes;

/// The Content-Type a wrapped key is stored under at keyservice.
pub const CONTENT_TYPE: &str = "application/vnd.keyservice.wrapped-v1";

/// The only format version so far.
pub const VERSION: u8 = 1;
const KDF_ARGON2ID: u8 = 1;
const KDF_PRF: u8 = 2;
const SALT_LEN: usize = 16;
/// Length of the input a passkey's PRF is evaluated on.
pub const PRF_SALT_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_CREDENTIAL_ID_LEN: usize = 1023;
const PRF_INFO: &[u8] = b"keyservice-wrap v1 webauthn-prf";

/// Argon2id's cost, stored with the wrapped key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u8,
}

impl Argon2Params {
    /// The least a new wrap may use: OWASP's minimum for Argon2id (19 MiB, 2 passes).
    pub const MINIMUM: Self = Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 };
    /// The most a wrapped key may ask of the device that opens it (2 GiB, 64 passes, 16
    /// lanes): a key wrapped beyond it is refused rather than left to exhaust memory.
    pub const MAXIMUM: Self = Self { memory_kib: 2 * 1024 * 1024, iterations: 64, parallelism: 16 };

    fn within(self, low: Self, high: Self) -> bool {
        (low.memory_kib..=high.memory_kib).contains(&self.memory_kib)
            && (low.iterations..=high.iterations).contains(&self.iterations)
            && (low.parallelism..=high.parallelism).contains(&self.parallelism)
    }
}

impl Default for Argon2Params {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation, with the one lane a
    /// browser's JavaScript has).
    fn default() -> Self {
        Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 }
    }
}

/// What a wrapped key says about itself before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrapping {
    /// Wrapped under a passphrase.
    Passphrase {
        /// Its cost.
        params: Argon2Params,
    },
    /// Wrapped under a passkey's PRF output.
    Prf {
        /// The passkey's credential id, to ask the authenticator for.
        credential_id: Vec<u8>,
        /// The input to evaluate its PRF on.
        prf_salt: [u8; PRF_SALT_LEN],
    },
}

/// Why a key could not be wrapped or unwrapped. Never carries the passphrase or a key.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum WrapError {
    /// The bytes are not a wrapped key of a known format.
    #[error("not a wrapped key: {0}")]
    Malformed(&'static str),
    /// The passphrase or passkey is not the one the key was wrapped under (or the
    /// wrapped key was altered).
    #[error("the passphrase or passkey does not open this key")]
    WrongSecret,
    /// A passphrase was given for a passkey-wrapped key, or the reverse.
    #[error("the key is wrapped under a {0}")]
    OtherFactor(&'static str),
    /// The cost is below [`Argon2Params::MINIMUM`] (wrapping) or above
    /// [`Argon2Params::MAXIMUM`] (either).
    #[error("Argon2id parameters out of bounds: {0}")]
    Parameters(&'static str),
    /// The OS random generator failed.
    #[error("randomness unavailable")]
    Random,
}

/// Wraps `key` under `passphrase` with `params`, fresh salt and nonce.
///
/// # Errors
///
/// [`WrapError::Parameters`] below the minimum or above the maximum, an empty key, and
/// [`WrapError::Random`].
pub fn wrap_with_passphrase(key: &[u8], passphrase: &str, params: Argon2Params) -> Result<Vec<u8>, WrapError> {
    if !params.within(Argon2Params::MINIMUM, Argon2Params::MAXIMUM) {
        return Err(WrapError::Parameters("below the minimum (19 MiB, 2 passes, 1 lane) or above the maximum"));
    }
    let salt = random_bytes::<SALT_LEN>().map_err(|_| WrapError::Random)?;
    let nonce = random_bytes::<NONCE_LEN>().map_err(|_| WrapError::Random)?;
    wrap_with_passphrase_using(key, passphrase, params, &salt, &nonce)
}

/// [`wrap_with_passphrase`] with a given salt and nonce: for known-answer tests only,
/// never for a real key (a repeated nonce under one passphrase and salt breaks GCM).
#[doc(hidden)]
pub fn wrap_with_passphrase_using(
    key: &[u8],
    passphrase: &str,
    params: Argon2Params,
    salt: &[u8; SALT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, WrapError> {
    let mut header = vec![VERSION, KDF_ARGON2ID];
    header.extend_from_slice(&params.memory_kib.to_be_bytes());
    header.extend_from_slice(&params.iterations.to_be_bytes());
    header.push(params.parallelism);
    header.extend_from_slice(salt);
    let kek = argon2id(passphrase, params, salt)?;
    seal(&kek, header, nonce, key)
}

/// Opens a key [`wrap_with_passphrase`] wrapped.
///
/// # Errors
///
/// [`WrapError::WrongSecret`], [`WrapError::OtherFactor`] for a passkey-wrapped key,
/// [`WrapError::Malformed`], and [`WrapError::Parameters`] for a cost above the maximum.
pub fn unwrap_with_passphrase(wrapped: &[u8], passphrase: &str) -> Result<Zeroizing<Vec<u8>>, WrapError> {
    let parsed = parse(wrapped)?;
    let Wrapping::Passphrase { params } = parsed.wrapping else {
        return Err(WrapError::OtherFactor("passkey"));
    };
    let salt: &[u8; SALT_LEN] =
        wrapped[11..11 + SALT_LEN].try_into().map_err(|_| WrapError::Malformed("short header"))?;
    let kek = argon2id(passphrase, params, salt)?;
    open(&kek, wrapped, parsed.header_len)
}

/// Wraps `key` under a passkey's PRF output, evaluated on `prf_salt`, for the passkey
/// `credential_id`, with a fresh nonce.
///
/// # Errors
///
/// [`WrapError::Malformed`] for a credential id of 0 or more than 1023 bytes or an
/// empty key, and [`WrapError::Random`].
pub fn wrap_with_prf(
    key: &[u8],
    prf_output: &[u8; 32],
    credential_id: &[u8],
    prf_salt: &[u8; PRF_SALT_LEN],
) -> Result<Vec<u8>, WrapError> {
    let nonce = random_bytes::<NONCE_LEN>().map_err(|_| WrapError::Random)?;
    wrap_with_prf_using(key, prf_output, credential_id, prf_salt, &nonce)
}

/// [`wrap_with_prf`] with a given nonce: for known-answer tests only.
#[doc(hidden)]
pub fn wrap_with_prf_using(
    key: &[u8],
    prf_output: &[u8; 32],
    credential_id: &[u8],
    prf_salt: &[u8; PRF_SALT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u8>, WrapError> {
    let id_len = u16::try_from(credential_id.len())
        .ok()
        .filter(|len| (1..=MAX_CREDENTIAL_ID_LEN as u16).contains(len))
        .ok_or(WrapError::Malformed("a credential id is 1 to 1023 bytes"))?;
    let mut header = vec![VERSION, KDF_PRF];
    header.extend_from_slice(prf_salt);
    header.extend_from_slice(&id_len.to_be_bytes());
    header.extend_from_slice(credential_id);
    seal(&prf_kek(prf_output), header, nonce, key)
}

/// Opens a key [`wrap_with_prf`] wrapped, with the PRF output of its passkey on its
/// PRF salt (see [`describe`]).
///
/// # Errors
///
/// [`WrapError::WrongSecret`], [`WrapError::OtherFactor`] for a passphrase-wrapped key,
/// and [`WrapError::Malformed`].
pub fn unwrap_with_prf(wrapped: &[u8], prf_output: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, WrapError> {
    let parsed = parse(wrapped)?;
    if !matches!(parsed.wrapping, Wrapping::Prf { .. }) {
        return Err(WrapError::OtherFactor("passphrase"));
    }
    open(&prf_kek(prf_output), wrapped, parsed.header_len)
}

/// What a wrapped key needs to be opened, read from its header.
///
/// # Errors
///
/// [`WrapError::Malformed`], and [`WrapError::Parameters`] for a cost above the maximum.
pub fn describe(wrapped: &[u8]) -> Result<Wrapping, WrapError> {
    parse(wrapped).map(|parsed| parsed.wrapping)
}

struct Parsed {
    wrapping: Wrapping,
    /// Bytes up to and including the nonce.
    header_len: usize,
}

fn parse(wrapped: &[u8]) -> Result<Parsed, WrapError> {
    let short = WrapError::Malformed("too short");
    match wrapped {
        [VERSION, KDF_ARGON2ID, rest @ ..] => {
            let fixed = rest.get(..9 + SALT_LEN).ok_or(short)?;
            let params = Argon2Params {
                memory_kib: u32::from_be_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]),
                iterations: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
                parallelism: fixed[8],
            };
            let floor = Argon2Params { memory_kib: 8, iterations: 1, parallelism: 1 };
            if !params.within(floor, Argon2Params::MAXIMUM) || params.memory_kib < 8 * u32::from(params.parallelism) {
                return Err(WrapError::Parameters("the wrapped key asks for a cost outside what is allowed"));
            }
            checked(
                Parsed { wrapping: Wrapping::Passphrase { params }, header_len: 2 + 9 + SALT_LEN + NONCE_LEN },
                wrapped,
            )
        }
        [VERSION, KDF_PRF, rest @ ..] => {
            let prf_salt: [u8; PRF_SALT_LEN] = rest.get(..PRF_SALT_LEN).and_then(|s| s.try_into().ok()).ok_or(short)?;
            let len = rest.get(PRF_SALT_LEN..PRF_SALT_LEN + 2).ok_or(short)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if !(1..=MAX_CREDENTIAL_ID_LEN).contains(&len) {
                return Err(WrapError::Malformed("a credential id is 1 to 1023 bytes"));
            }
            let start = 2 + PRF_SALT_LEN + 2;
            let credential_id = wrapped.get(start..start + len).ok_or(short)?.to_vec();
            checked(
                Parsed { wrapping: Wrapping::Prf { credential_id, prf_salt }, header_len: start + len + NONCE_LEN },
                wrapped,
            )
        }
        [VERSION, _, ..] => Err(WrapError::Malformed("unknown key derivation")),
        [_, ..] => Err(WrapError::Malformed("unknown format version")),
        [] => Err(short),
    }
}

/// At least one byte of key after the header, and the tag.
fn checked(parsed: Parsed, wrapped: &[u8]) -> Result<Parsed, WrapError> {
    if wrapped.len() <= parsed.header_len + TAG_LEN {
        return Err(WrapError::Malformed("too short"));
    }
    Ok(parsed)
}

fn argon2id(passphrase: &str, params: Argon2Params, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, WrapError> {
    let cost = argon2::Params::new(params.memory_kib, params.iterations, u32::from(params.parallelism), Some(32))
        .map_err(|_| WrapError::Parameters("rejected by Argon2"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, cost);
    let normalized = Zeroizing::new(passphrase.nfc().collect::<String>());
    let mut kek = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(normalized.as_bytes(), salt, kek.as_mut())
        .map_err(|_| WrapError::Parameters("rejected by Argon2"))?;
    Ok(kek)
}

fn prf_kek(prf_output: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut kek = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA-256's limit of 8160, so expanding cannot fail.
    let _ = hkdf::Hkdf::<sha2::Sha256>::new(None, prf_output).expand(PRF_INFO, kek.as_mut());
    kek
}

fn seal(kek: &[u8; 32], mut header: Vec<u8>, nonce: &[u8; NONCE_LEN], key: &[u8]) -> Result<Vec<u8>, WrapError> {
    if key.is_empty() {
        return Err(WrapError::Malformed("an empty key"));
    }
    header.extend_from_slice(nonce);
    let cipher = Aes256Gcm::new(kek.into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(nonce), Payload { msg: key, aad: &header })
        .map_err(|_| WrapError::Malformed("the key is too long"))?;
    header.extend_from_slice(&sealed);
    Ok(header)
}

fn open(kek: &[u8; 32], wrapped: &[u8], header_len: usize) -> Result<Zeroizing<Vec<u8>>, WrapError> {
    let (header, sealed) = wrapped.split_at(header_len);
    let nonce = &header[header_len - NONCE_LEN..];
    let cipher = Aes256Gcm::new(kek.into());
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: header })
        .map(Zeroizing::new)
        .map_err(|_| WrapError::WrongSecret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_wrapped_keys_are_refused_without_panicking() {
        let good = wrap_with_prf_using(b"key", &[1; 32], b"cred", &[2; 32], &[3; 12]).unwrap();
        for cut in 0..good.len() {
            assert!(unwrap_with_prf(&good[..cut], &[1; 32]).is_err(), "cut at {cut}");
        }
        assert_eq!(unwrap_with_prf(&good, &[1; 32]).unwrap().as_slice(), b"key");
        let mut version = good.clone();
        version[0] = 2;
        assert_eq!(describe(&version), Err(WrapError::Malformed("unknown format version")));
        let mut kdf = good.clone();
        kdf[1] = 9;
        assert_eq!(describe(&kdf), Err(WrapError::Malformed("unknown key derivation")));
        for byte in 2..good.len() {
            let mut altered = good.clone();
            altered[byte] ^= 1;
            assert!(unwrap_with_prf(&altered, &[1; 32]).is_err(), "altering byte {byte} went unnoticed");
        }
    }

    #[test]
    fn costs_out_of_bounds_are_refused_both_ways() {
        let weak = Argon2Params { memory_kib: 1024, iterations: 2, parallelism: 1 };
        assert!(matches!(wrap_with_passphrase(b"k", "p", weak), Err(WrapError::Parameters(_))));
        // A stored key asking for 4 GiB is refused before any memory is taken.
        let mut huge = vec![VERSION, KDF_ARGON2ID];
        huge.extend_from_slice(&(4 * 1024 * 1024u32).to_be_bytes());
        huge.extend_from_slice(&3u32.to_be_bytes());
        huge.push(1);
        huge.extend_from_slice(&[0; SALT_LEN + NONCE_LEN + TAG_LEN + 1]);
        assert!(matches!(unwrap_with_passphrase(&huge, "p"), Err(WrapError::Parameters(_))));
    }

    #[test]
    fn each_factor_opens_only_its_own_kind() {
        let prf = wrap_with_prf(b"key", &[1; 32], b"cred", &[2; 32]).unwrap();
        assert_eq!(unwrap_with_passphrase(&prf, "p"), Err(WrapError::OtherFactor("passkey")));
        assert_eq!(unwrap_with_prf(&prf, &[9; 32]), Err(WrapError::WrongSecret));
        assert_eq!(describe(&prf).unwrap(), Wrapping::Prf { credential_id: b"cred".to_vec(), prf_salt: [2; 32] });
        assert_eq!(
            wrap_with_prf(b"key", &[1; 32], b"", &[2; 32]),
            Err(WrapError::Malformed("a credential id is 1 to 1023 bytes"))
        );
        assert_eq!(wrap_with_prf(b"", &[1; 32], b"c", &[2; 32]), Err(WrapError::Malformed("an empty key")));
    }
}
