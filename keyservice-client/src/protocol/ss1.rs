//! The Sessionist `ss1` Authorization header, version 1.
//!
//! ```text
//! Authorization: ss1 keyid=<keyid>, hash=<hash>, nonce=<nonce>
//! ```
//!
//! - `nonce`: 64 random bytes as 128 lowercase hex digits, new for every request.
//! - `hash`: lowercase hex of HMAC-SHA-512, keyed with the UTF-8 bytes of the secret, over
//!   `nonce (64 raw bytes) ‖ METHOD ‖ path-and-query as sent ‖ body bytes ‖ date string`.
//! - The date string is the request's `Date` header, or `X-Date` where a browser may not
//!   set `Date`, exactly as sent.
//!
//! Fields may come in any order, each exactly once; a value runs to the next comma (so a
//! key id may contain spaces but no comma) and whitespace after a comma is optional. This
//! matches the reference Sessionist implementation, whose vectors the tests check.
//!
//! This module knows nothing of clocks, key lookup or replays: the server's `auth` module
//! adds those. Verification here is only "does this MAC match", in constant time.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

use super::secret::{RandomError, random_bytes};

/// The scheme word that starts the header value.
pub const SCHEME: &str = "ss1";
/// Raw length of a nonce in bytes (128 hex digits on the wire).
pub const NONCE_LEN: usize = 64;
/// Raw length of the HMAC-SHA-512 tag in bytes (128 hex digits on the wire).
pub const HASH_LEN: usize = 64;
/// The longest key id accepted, in bytes. Session tokens are 43 bytes; credential key ids
/// are chosen by operators.
pub const MAX_KEY_ID_LEN: usize = 256;
/// The largest clock skew ss1 allows between a request's date and the verifier's clock.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
/// The header a browser sends the date in when it may not set `Date`.
pub const X_DATE: &str = "x-date";

type HmacSha512 = Hmac<Sha512>;

/// A request nonce: 64 bytes, fresh from the OS CSPRNG for every request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// A new nonce from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// Returns [`RandomError`] when the operating system cannot supply randomness.
    pub fn random() -> Result<Self, RandomError> {
        random_bytes().map(Self)
    }

    /// A nonce with the given bytes: for known-answer tests and for parsing.
    pub const fn from_bytes(bytes: [u8; NONCE_LEN]) -> Self {
        Self(bytes)
    }

    /// The nonce's raw bytes, as they enter the MAC.
    pub fn as_bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.0))
    }
}

/// The parts of a request that the MAC covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// The HTTP method; it is upper-cased before it enters the MAC.
    pub method: &'a str,
    /// The request target's path and query string, exactly as sent (e.g. `/key?version=2`).
    pub path_and_query: &'a str,
    /// The raw body bytes; empty for no body.
    pub body: &'a [u8],
    /// The `Date` (or `X-Date`) header value, exactly as sent.
    pub date: &'a str,
}

/// Why an `Authorization` header value is not a well-formed ss1 header.
///
/// The messages name the problem, never the header's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The value does not start with `ss1 `.
    WrongScheme,
    /// A part has no `=`.
    NotKeyValue,
    /// A field other than `keyid`, `hash` and `nonce`.
    UnknownField,
    /// A field appears twice.
    DuplicateField(&'static str),
    /// A required field is absent.
    MissingField(&'static str),
    /// The key id is empty or longer than [`MAX_KEY_ID_LEN`].
    BadKeyId,
    /// The hash is not 128 lowercase hex digits.
    BadHash,
    /// The nonce is not 128 lowercase hex digits.
    BadNonce,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongScheme => f.write_str("the Authorization header does not use the ss1 scheme"),
            Self::NotKeyValue => f.write_str("an ss1 header part is not of the form name=value"),
            Self::UnknownField => f.write_str("the ss1 header has a field other than keyid, hash and nonce"),
            Self::DuplicateField(name) => write!(f, "the ss1 header has the field {name} more than once"),
            Self::MissingField(name) => write!(f, "the ss1 header lacks the field {name}"),
            Self::BadKeyId => write!(f, "the ss1 keyid is empty or longer than {MAX_KEY_ID_LEN} bytes"),
            Self::BadHash => f.write_str("the ss1 hash is not 128 lowercase hexadecimal digits"),
            Self::BadNonce => f.write_str("the ss1 nonce is not 128 lowercase hexadecimal digits"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed (or freshly signed) ss1 Authorization header.
///
/// Holding one proves nothing: call [`Authorization::verify`] with the key id's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    key_id: String,
    hash: [u8; HASH_LEN],
    nonce: Nonce,
}

impl Authorization {
    /// Signs `request` for `key_id` with `secret` and the given nonce.
    ///
    /// Use a fresh [`Nonce::random`] for every request: the server refuses a nonce it has
    /// already seen from the same key id.
    pub fn sign(key_id: &str, secret: &[u8], nonce: Nonce, request: &SignedRequest<'_>) -> Self {
        Self { key_id: key_id.to_owned(), hash: mac(secret, &nonce, request), nonce }
    }

    /// Parses an `Authorization` header value.
    ///
    /// # Errors
    ///
    /// Returns the first [`ParseError`] found; it never contains the header's text.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let rest = value
            .strip_prefix(SCHEME)
            .filter(|rest| rest.starts_with(' '))
            .ok_or(ParseError::WrongScheme)?
            .trim_start_matches(' ');

        let (mut key_id, mut hash, mut nonce) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim_start_matches([' ', '\t']);
            let (name, field_value) = part.split_once('=').ok_or(ParseError::NotKeyValue)?;
            let (slot, field) = match name {
                "keyid" => (&mut key_id, "keyid"),
                "hash" => (&mut hash, "hash"),
                "nonce" => (&mut nonce, "nonce"),
                _ => return Err(ParseError::UnknownField),
            };
            if slot.replace(field_value).is_some() {
                return Err(ParseError::DuplicateField(field));
            }
        }

        let key_id = key_id.ok_or(ParseError::MissingField("keyid"))?;
        if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
            return Err(ParseError::BadKeyId);
        }
        let hash = decode_lower_hex(hash.ok_or(ParseError::MissingField("hash"))?).ok_or(ParseError::BadHash)?;
        let nonce = decode_lower_hex(nonce.ok_or(ParseError::MissingField("nonce"))?).ok_or(ParseError::BadNonce)?;
        Ok(Self { key_id: key_id.to_owned(), hash, nonce: Nonce(nonce) })
    }

    /// Whether the header's hash is the MAC of `request` under `secret`.
    ///
    /// The comparison takes the same time wherever the first differing byte is.
    pub fn verify(&self, secret: &[u8], request: &SignedRequest<'_>) -> bool {
        mac_state(secret, &self.nonce, request).verify_slice(&self.hash).is_ok()
    }

    /// The key id: a credential's id, or a session token.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The request's nonce.
    pub fn nonce(&self) -> &Nonce {
        &self.nonce
    }

    /// The MAC the header carries.
    pub fn hash(&self) -> &[u8; HASH_LEN] {
        &self.hash
    }
}

/// Formats the header value: `ss1 keyid=…, hash=…, nonce=…`.
impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME} keyid={}, hash={}, nonce={}",
            self.key_id,
            hex::encode(self.hash),
            hex::encode(self.nonce.0)
        )
    }
}

/// The key id may be a session token, so `Debug` leaves it out.
impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorization")
            .field("key_id", &format_args!("<{} bytes>", self.key_id.len()))
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

/// The ss1 MAC of `request`: HMAC-SHA-512 under `secret`.
pub fn mac(secret: &[u8], nonce: &Nonce, request: &SignedRequest<'_>) -> [u8; HASH_LEN] {
    mac_state(secret, nonce, request).finalize().into_bytes().into()
}

fn mac_state(secret: &[u8], nonce: &Nonce, request: &SignedRequest<'_>) -> HmacSha512 {
    // HMAC takes keys of any length (long ones are hashed first), so this cannot fail.
    let mut state = <HmacSha512 as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of every length");
    state.update(&nonce.0);
    if request.method.bytes().any(|b| b.is_ascii_lowercase()) {
        state.update(request.method.to_ascii_uppercase().as_bytes());
    } else {
        state.update(request.method.as_bytes());
    }
    state.update(request.path_and_query.as_bytes());
    state.update(request.body);
    state.update(request.date.as_bytes());
    state
}

/// Lower-case hex of exactly `N` bytes, checked and decoded in one pass (this runs on
/// every request, twice).
fn decode_lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    /// Each byte's value as a lower-case hex digit, or `INVALID`.
    const INVALID: u8 = 0xff;
    const NIBBLES: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut digit = 0;
        while digit < 16 {
            table[b"0123456789abcdef"[digit] as usize] = digit as u8;
            digit += 1;
        }
        table
    };
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    // No branch per digit: invalid digits are collected and checked once at the end.
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
        invalid |= (high | low) & 0xf0;
        *byte = (high << 4) | (low & 0x0f);
    }
    (invalid == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE_HEX: &str = "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a804973475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049";
    const HASH_HEX: &str = "5ccb276c2f40e9c7bd95077ef5ff56f68e3ea30146bce4ee76cf443cf67f2f7d33546d4fe18d0f2a93bd8d353d7a45062baf6c4a8cffa0b95b90cb98aca9f379";

    #[test]
    fn hex_decoding_takes_exactly_the_lower_case_digits() {
        for c in (0u8..128).map(char::from).chain(['é', 'ﬀ']) {
            let expected = c.is_ascii_digit() || ('a'..='f').contains(&c);
            for text in [format!("{c}0"), format!("0{c}")] {
                let decoded = decode_lower_hex::<1>(&text);
                assert_eq!(decoded.is_some(), expected && text.len() == 2, "{text:?}");
                if let Some([byte]) = decoded {
                    assert_eq!(format!("{byte:02x}"), text);
                }
            }
        }
        assert_eq!(decode_lower_hex::<2>("00ff"), Some([0, 255]));
        assert_eq!(decode_lower_hex::<2>("00f"), None);
    }

    fn header(parts: &[&str]) -> String {
        format!("ss1 {}", parts.join(", "))
    }

    #[test]
    fn parses_fields_in_any_order_with_optional_space() {
        let keyid = "keyid=my key id";
        let hash = format!("hash={HASH_HEX}");
        let nonce = format!("nonce={NONCE_HEX}");
        for value in [
            header(&[keyid, &hash, &nonce]),
            header(&[&nonce, &hash, keyid]),
            format!("ss1 {keyid},{hash},{nonce}"),
            format!("ss1   {keyid},   {hash},{nonce}"),
        ] {
            let parsed = Authorization::parse(&value).unwrap();
            assert_eq!(parsed.key_id(), "my key id");
            assert_eq!(hex::encode(parsed.hash()), HASH_HEX);
            assert_eq!(hex::encode(parsed.nonce().as_bytes()), NONCE_HEX);
        }
    }

    #[test]
    fn display_round_trips() {
        let value = header(&["keyid=my key id", &format!("hash={HASH_HEX}"), &format!("nonce={NONCE_HEX}")]);
        assert_eq!(Authorization::parse(&value).unwrap().to_string(), value);
    }

    #[test]
    fn rejects_malformed_headers() {
        let hash = format!("hash={HASH_HEX}");
        let nonce = format!("nonce={NONCE_HEX}");
        let upper_hash = format!("hash={}", HASH_HEX.to_uppercase());
        let short_nonce = format!("nonce={}", &NONCE_HEX[2..]);
        let long_key = format!("keyid={}", "k".repeat(MAX_KEY_ID_LEN + 1));
        let cases: Vec<(String, ParseError)> = vec![
            (String::new(), ParseError::WrongScheme),
            (format!("Bearer {hash}"), ParseError::WrongScheme),
            (format!("ss1keyid=a, {hash}, {nonce}"), ParseError::WrongScheme),
            (format!("SS1 keyid=a, {hash}, {nonce}"), ParseError::WrongScheme),
            (header(&["keyid=a", &hash]), ParseError::MissingField("nonce")),
            (header(&["keyid=a", &nonce]), ParseError::MissingField("hash")),
            (header(&[&hash, &nonce]), ParseError::MissingField("keyid")),
            (header(&["keyid=a", "keyid=b", &hash, &nonce]), ParseError::DuplicateField("keyid")),
            (header(&["keyid=a", "realm=x", &hash, &nonce]), ParseError::UnknownField),
            (header(&["keyid=a", "garbage", &hash, &nonce]), ParseError::NotKeyValue),
            (header(&["keyid=", &hash, &nonce]), ParseError::BadKeyId),
            (header(&[&long_key, &hash, &nonce]), ParseError::BadKeyId),
            (header(&["keyid=a", &upper_hash, &nonce]), ParseError::BadHash),
            (header(&["keyid=a", "hash=zz", &nonce]), ParseError::BadHash),
            (header(&["keyid=a", &hash, &short_nonce]), ParseError::BadNonce),
            (header(&["keyid=a", &hash, &nonce, ""]), ParseError::NotKeyValue),
        ];
        for (value, expected) in cases {
            assert_eq!(Authorization::parse(&value), Err(expected), "{value}");
        }
    }

    #[test]
    fn verify_detects_every_changed_part() {
        let request = SignedRequest {
            method: "PUT",
            path_and_query: "/key",
            body: b"key bytes",
            date: "Sun, 22 Nov 2026 06:00:00 GMT",
        };
        let nonce = Nonce::random().unwrap();
        let auth = Authorization::sign("sess", b"init", nonce, &request);
        assert!(auth.verify(b"init", &request));
        assert!(!auth.verify(b"init2", &request));
        assert!(!auth.verify(b"init", &SignedRequest { method: "POST", ..request }));
        assert!(!auth.verify(b"init", &SignedRequest { path_and_query: "/key?", ..request }));
        assert!(!auth.verify(b"init", &SignedRequest { body: b"key byteS", ..request }));
        assert!(!auth.verify(b"init", &SignedRequest { date: "Sun, 22 Nov 2026 06:00:01 GMT", ..request }));
        // The method is upper-cased before signing.
        assert!(auth.verify(b"init", &SignedRequest { method: "put", ..request }));
    }

    #[test]
    fn debug_hides_the_key_id() {
        let auth = Authorization::sign(
            "session-token-value",
            b"s",
            Nonce::from_bytes([0; NONCE_LEN]),
            &SignedRequest { method: "GET", path_and_query: "/", body: b"", date: "" },
        );
        assert!(!format!("{auth:?}").contains("session-token-value"));
    }
}
