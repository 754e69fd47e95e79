//! The byte layout of stored records, shared by every key-value backend.
//!
//! Every record starts with a format byte ([`FORMAT_V1`]) so the layout can evolve.
//! Integers are big-endian (so version numbers sort as bytes), strings and byte strings
//! are length-prefixed. Decoding never panics: a short, long or malformed record is
//! [`StoreError::Corrupt`].

use keyservice_client::protocol::Secret;
use zeroize::Zeroizing;

use super::{KeyVersion, PendingInit, Session, StoreError, UnixTime, UserRef};

/// The only record format so far.
pub const FORMAT_V1: u8 = 1;

/// The key prefix of a user's records: `len(ns) u16 ‖ ns ‖ len(uid) u16 ‖ uid`.
///
/// Both parts are length-prefixed, so no (namespace, user id) pair's prefix is a prefix
/// of another's: a user id cannot reach into a neighbour's records.
pub fn user_prefix(user: &UserRef) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + user.namespace.len() + user.user_id.len());
    put_bytes16(&mut out, user.namespace.as_bytes());
    put_bytes16(&mut out, user.user_id.as_bytes());
    out
}

/// The key of one version of a user's key: the user's prefix ‖ version u64.
pub fn key_version_key(user: &UserRef, version: u64) -> Vec<u8> {
    let mut out = user_prefix(user);
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// The version number at the end of a key made by [`key_version_key`].
pub fn version_of_key(key: &[u8]) -> Result<u64, StoreError> {
    let tail = key.len().checked_sub(8).ok_or(StoreError::Corrupt { kind: "key index" })?;
    Ok(u64::from_be_bytes(key[tail..].try_into().map_err(|_| StoreError::Corrupt { kind: "key index" })?))
}

/// `FORMAT_V1 ‖ expires u64 ‖ token`.
pub fn encode_pending_init(init: &PendingInit) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(9 + init.token.len()));
    out.push(FORMAT_V1);
    out.extend_from_slice(&init.expires_at.to_be_bytes());
    out.extend_from_slice(init.token.as_bytes());
    out
}

/// Inverse of [`encode_pending_init`].
pub fn decode_pending_init(bytes: &[u8]) -> Result<PendingInit, StoreError> {
    const KIND: &str = "pending init";
    let mut r = Reader::new(bytes, KIND);
    r.format()?;
    let expires_at = r.u64()?;
    let token = r.rest_str()?;
    Ok(PendingInit { token: Secret::new(token), expires_at })
}

/// `FORMAT_V1 ‖ expires u64 ‖ ns (u16-prefixed) ‖ uid (u16-prefixed) ‖ secret`.
pub fn encode_session(session: &Session) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    out.push(FORMAT_V1);
    out.extend_from_slice(&session.expires_at.to_be_bytes());
    out.extend_from_slice(&user_prefix(&session.user));
    out.extend_from_slice(session.secret.as_bytes());
    out
}

/// Inverse of [`encode_session`].
pub fn decode_session(bytes: &[u8]) -> Result<Session, StoreError> {
    const KIND: &str = "session";
    let mut r = Reader::new(bytes, KIND);
    r.format()?;
    let expires_at = r.u64()?;
    let namespace = r.str16()?;
    let user_id = r.str16()?;
    let secret = Secret::new(r.rest_str()?);
    Ok(Session { user: UserRef { namespace, user_id }, secret, expires_at })
}

/// `FORMAT_V1 ‖ created u64 ‖ content type (u16-prefixed) ‖ key bytes`.
pub fn encode_key_version(created_at: UnixTime, content_type: &str, bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(11 + content_type.len() + bytes.len()));
    out.push(FORMAT_V1);
    out.extend_from_slice(&created_at.to_be_bytes());
    put_bytes16(&mut out, content_type.as_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Inverse of [`encode_key_version`]; `version` comes from the record's key.
pub fn decode_key_version(version: u64, bytes: &[u8]) -> Result<KeyVersion, StoreError> {
    const KIND: &str = "key version";
    let mut r = Reader::new(bytes, KIND);
    r.format()?;
    let created_at = r.u64()?;
    let content_type = r.str16()?;
    let bytes = Zeroizing::new(r.rest().to_vec());
    Ok(KeyVersion { version, content_type, created_at, bytes })
}

/// A u64, big-endian.
pub fn decode_u64(bytes: &[u8], kind: &'static str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt { kind })?;
    Ok(u64::from_be_bytes(array))
}

fn put_bytes16(out: &mut Vec<u8>, bytes: &[u8]) {
    // Namespaces, user ids and content types are validated to far fewer than 65,535 bytes
    // before they reach the store.
    let len = u16::try_from(bytes.len()).expect("length-prefixed fields are validated to fit u16");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], kind: &'static str) -> Self {
        Self { bytes, kind }
    }

    fn corrupt(&self) -> StoreError {
        StoreError::Corrupt { kind: self.kind }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn format(&mut self) -> Result<(), StoreError> {
        match self.take(1)? {
            [FORMAT_V1] => Ok(()),
            _ => Err(self.corrupt()),
        }
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        decode_u64(self.take(8)?, self.kind)
    }

    fn str16(&mut self) -> Result<String, StoreError> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt())
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn rest_str(&mut self) -> Result<String, StoreError> {
        let rest = self.rest();
        String::from_utf8(rest.to_vec()).map_err(|_| self.corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(ns: &str, uid: &str) -> UserRef {
        UserRef { namespace: ns.into(), user_id: uid.into() }
    }

    #[test]
    fn records_round_trip() {
        let init = PendingInit { token: Secret::new("tok"), expires_at: 42 };
        let back = decode_pending_init(&encode_pending_init(&init)).unwrap();
        assert_eq!((back.token.expose(), back.expires_at), ("tok", 42));

        let session = Session { user: user("ns", "ü"), secret: Secret::new("s"), expires_at: 7 };
        let back = decode_session(&encode_session(&session)).unwrap();
        assert_eq!((back.user, back.secret.expose(), back.expires_at), (user("ns", "ü"), "s", 7));

        let back = decode_key_version(3, &encode_key_version(9, "text/plain", b"\0key")).unwrap();
        assert_eq!(
            (back.version, back.created_at, back.content_type.as_str(), &back.bytes[..]),
            (3, 9, "text/plain", &b"\0key"[..])
        );
    }

    #[test]
    fn user_prefixes_are_prefix_free() {
        // Without length prefixes ("a", "bc") and ("ab", "c") would collide.
        let a = user_prefix(&user("a", "bc"));
        let b = user_prefix(&user("ab", "c"));
        assert!(!a.starts_with(&b) && !b.starts_with(&a));
        let short = user_prefix(&user("ns", "1"));
        let long = key_version_key(&user("ns", "10"), 1);
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn truncated_or_foreign_records_are_corrupt_not_panics() {
        let good = encode_session(&Session { user: user("ns", "u"), secret: Secret::new("s"), expires_at: 1 });
        for len in 0..good.len() - 1 {
            // Every strict prefix that cuts into the fixed part or a length-prefixed
            // string fails; cutting only the trailing secret still decodes.
            let _ = decode_session(&good[..len]);
        }
        assert!(decode_session(&good[..5]).is_err());
        assert!(decode_session(&[2, 0, 0]).is_err());
        assert!(decode_key_version(1, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]).is_err());
        assert!(decode_pending_init(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]).is_err());
        assert!(version_of_key(&[1, 2]).is_err());
    }
}
