//! The byte layout of stored records, shared by every key-value backend.
//!
//! Keys are fixed-size pseudonyms; values carry the clear metadata a store needs to
//! sweep and route (expiry times, pseudonyms) followed by the sealed envelope, which
//! the store never interprets. Every value starts with a format byte ([`FORMAT_V1`]).
//! Integers are big-endian, so version numbers sort as bytes. Decoding never panics: a
//! short or foreign record is [`StoreError::Corrupt`].

use super::{AccessId, AccessRecord, InitRecord, KeyRecord, Pseudonym, SessionRecord, StoreError, UnixTime, UserKey};

/// The record format of every record, and of sessions without a credential.
pub const FORMAT_V1: u8 = 1;
/// A session with the sealed credential that connected it.
pub const FORMAT_V2: u8 = 2;

/// The 64-byte key prefix of a user's records: namespace pseudonym ‖ user pseudonym.
pub fn user_prefix(user: &UserKey) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&user.namespace);
    out[32..].copy_from_slice(&user.user);
    out
}

/// The key of one version of a user's key: the user's prefix ‖ version u64.
pub fn key_version_key(user: &UserKey, version: u64) -> Vec<u8> {
    let mut out = user_prefix(user).to_vec();
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// The key of a user's session index entry: the user's prefix ‖ session id.
pub fn user_session_key(user: &UserKey, session: &Pseudonym) -> Vec<u8> {
    let mut out = user_prefix(user).to_vec();
    out.extend_from_slice(session);
    out
}

/// The session id at the end of a key made by [`user_session_key`].
pub fn session_of_index_key(key: &[u8]) -> Result<Pseudonym, StoreError> {
    key.get(64..96).and_then(|s| s.try_into().ok()).ok_or(StoreError::Corrupt { kind: "session index" })
}

/// The version number at the end of a key made by [`key_version_key`].
pub fn version_of_key(key: &[u8]) -> Result<u64, StoreError> {
    key.get(64..72)
        .filter(|_| key.len() == 72)
        .and_then(|v| v.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StoreError::Corrupt { kind: "key index" })
}

/// `FORMAT_V1 ‖ expires u64 ‖ sealed`.
pub fn encode_init(init: &InitRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + init.sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&init.expires_at.to_be_bytes());
    out.extend_from_slice(&init.sealed);
    out
}

/// Inverse of [`encode_init`].
pub fn decode_init(bytes: &[u8]) -> Result<InitRecord, StoreError> {
    let mut r = Reader::new(bytes, "pending init")?;
    Ok(InitRecord { expires_at: r.u64()?, sealed: r.rest() })
}

/// `FORMAT_V1 ‖ expires u64 ‖ last used u64 ‖ namespace pseudonym ‖ user pseudonym ‖ sealed`,
/// or with a credential `FORMAT_V2 ‖ … ‖ user pseudonym ‖ credential length u16 ‖
/// credential ‖ sealed`.
pub fn encode_session(session: &SessionRecord) -> Vec<u8> {
    let credential = session.credential.as_deref().filter(|c| c.len() <= usize::from(u16::MAX));
    let mut out = Vec::with_capacity(83 + session.sealed.len() + credential.map_or(0, <[u8]>::len));
    out.push(if credential.is_some() { FORMAT_V2 } else { FORMAT_V1 });
    out.extend_from_slice(&session.expires_at.to_be_bytes());
    out.extend_from_slice(&session.last_used.to_be_bytes());
    out.extend_from_slice(&user_prefix(&session.user));
    if let Some(credential) = credential {
        // At most u16::MAX by the filter above.
        out.extend_from_slice(&(credential.len() as u16).to_be_bytes());
        out.extend_from_slice(credential);
    }
    out.extend_from_slice(&session.sealed);
    out
}

/// Inverse of [`encode_session`].
pub fn decode_session(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    let (format, mut r) = Reader::versioned(bytes, "session", &[FORMAT_V1, FORMAT_V2])?;
    let expires_at = r.u64()?;
    let last_used = r.u64()?;
    let user = UserKey { namespace: r.pseudonym()?, user: r.pseudonym()? };
    let credential = if format == FORMAT_V2 {
        let len = r.take(2)?;
        Some(r.take(usize::from(u16::from_be_bytes([len[0], len[1]])))?.to_vec())
    } else {
        None
    };
    Ok(SessionRecord { user, sealed: r.rest(), credential, expires_at, last_used })
}

/// `FORMAT_V1 ‖ created u64 ‖ sealed`.
pub fn encode_key(created_at: UnixTime, sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&created_at.to_be_bytes());
    out.extend_from_slice(sealed);
    out
}

/// Inverse of [`encode_key`]; `version` comes from the record's key.
pub fn decode_key(version: u64, bytes: &[u8]) -> Result<KeyRecord, StoreError> {
    let mut r = Reader::new(bytes, "key version")?;
    Ok(KeyRecord { version, created_at: r.u64()?, sealed: r.rest() })
}

/// The key of one entry of a user's access history: the user's prefix ‖ access id.
pub fn access_key(user: &UserKey, id: &AccessId) -> Vec<u8> {
    let mut out = user_prefix(user).to_vec();
    out.extend_from_slice(id);
    out
}

/// The access id at the end of a key made by [`access_key`].
pub fn access_id_of_key(key: &[u8]) -> Result<AccessId, StoreError> {
    key.get(64..80)
        .filter(|_| key.len() == 80)
        .and_then(|id| id.try_into().ok())
        .ok_or(StoreError::Corrupt { kind: "access index" })
}

/// `FORMAT_V1 ‖ sealed`.
pub fn encode_access(sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + sealed.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(sealed);
    out
}

/// Inverse of [`encode_access`]; `id` comes from the record's key.
pub fn decode_access(id: AccessId, bytes: &[u8]) -> Result<AccessRecord, StoreError> {
    Ok(AccessRecord { id, sealed: Reader::new(bytes, "access entry")?.rest() })
}

/// A u64, big-endian.
pub fn decode_u64(bytes: &[u8], kind: &'static str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt { kind })?;
    Ok(u64::from_be_bytes(array))
}

struct Reader<'a> {
    bytes: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], kind: &'static str) -> Result<Self, StoreError> {
        Self::versioned(bytes, kind, &[FORMAT_V1]).map(|(_, reader)| reader)
    }

    /// A reader past the format byte, which must be one of `formats`.
    fn versioned(bytes: &'a [u8], kind: &'static str, formats: &[u8]) -> Result<(u8, Self), StoreError> {
        match bytes.split_first() {
            Some((format, rest)) if formats.contains(format) => Ok((*format, Self { bytes: rest, kind })),
            _ => Err(StoreError::Corrupt { kind }),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(StoreError::Corrupt { kind: self.kind });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        decode_u64(self.take(8)?, self.kind)
    }

    fn pseudonym(&mut self) -> Result<Pseudonym, StoreError> {
        self.take(32)?.try_into().map_err(|_| StoreError::Corrupt { kind: self.kind })
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: UserKey = UserKey { namespace: [1; 32], user: [2; 32] };

    #[test]
    fn records_round_trip() {
        let init = InitRecord { sealed: vec![9; 40], expires_at: 42 };
        assert_eq!(decode_init(&encode_init(&init)).unwrap(), init);
        let session = SessionRecord { user: USER, sealed: vec![7; 50], credential: None, expires_at: 7, last_used: 3 };
        assert_eq!(encode_session(&session)[0], FORMAT_V1, "a binary that knows no credential reads it");
        assert_eq!(decode_session(&encode_session(&session)).unwrap(), session);
        let with = SessionRecord { credential: Some(vec![8; 40]), ..session };
        assert_eq!(decode_session(&encode_session(&with)).unwrap(), with);
        let key = KeyRecord { version: 3, created_at: 9, sealed: vec![5; 60] };
        assert_eq!(decode_key(3, &encode_key(9, &key.sealed)).unwrap(), key);
        assert_eq!(version_of_key(&key_version_key(&USER, 300)).unwrap(), 300);
        assert_eq!(session_of_index_key(&user_session_key(&USER, &[4; 32])).unwrap(), [4; 32]);
    }

    #[test]
    fn short_or_foreign_records_are_corrupt_not_panics() {
        let good = encode_session(&SessionRecord {
            user: USER,
            sealed: vec![1],
            credential: Some(vec![2; 9]),
            expires_at: 1,
            last_used: 1,
        });
        for len in 0..92 {
            assert!(decode_session(&good[..len]).is_err(), "{len}");
        }
        assert!(decode_init(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode_key(1, &[]).is_err());
        assert!(version_of_key(&[1, 2]).is_err());
        assert!(session_of_index_key(&[0; 70]).is_err());
    }
}
