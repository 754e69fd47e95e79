//! The JSON bodies of every endpoint, and the error body.
//!
//! Field names are camelCase on the wire. Request bodies refuse unknown fields, so a
//! misspelt field is an error rather than silently ignored.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::Secret;

/// The longest `userId` accepted, in bytes of UTF-8.
pub const MAX_USER_ID_LEN: usize = 256;
/// The longest namespace name accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;
/// The Content-Type a key version gets when the PUT names none.
pub const DEFAULT_KEY_CONTENT_TYPE: &str = "application/octet-stream";

/// `POST /init` → 200.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitResponse {
    /// 32 random bytes, base64url without padding. The device keeps it as its signing
    /// secret and sends only [`init_token_hash`] of it to the Real Service.
    pub init_token: Secret,
    /// When the pending token stops being redeemable (RFC 3339, UTC).
    pub expires_at: String,
}

/// `POST /connect` request body, sent by the Real Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectRequest {
    /// The Real Service's namespace; must be the namespace of the signing credential.
    pub namespace: String,
    /// The Real Service's id for the logged-in user (1 to [`MAX_USER_ID_LEN`] bytes).
    pub user_id: String,
    /// [`init_token_hash`] of the device's init token.
    pub init_token_hash: String,
    /// An OpenID Connect ID token from the namespace's identity provider for this user,
    /// whose `nonce` is `init_token_hash`; required by namespaces configured with
    /// `oidc`, ignored by others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// `POST /connect` → 200.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectResponse {
    /// 32 random bytes, base64url without padding: the device's ss1 key id.
    pub session_token: Secret,
    /// When the session ends (RFC 3339, UTC).
    pub expires_at: String,
}

/// `PUT /key` → 201 (first version) or 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutKeyResponse {
    /// The version just stored; also sent as `ETag: "N"`.
    pub version: u64,
}

/// `POST /export` request body, sent by the Real Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserRequest {
    /// The Real Service's namespace; must be the namespace of the signing credential.
    pub namespace: String,
    /// The user (1 to [`MAX_USER_ID_LEN`] bytes).
    pub user_id: String,
}

/// `POST /erase` request body, sent by the Real Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EraseRequest {
    /// The Real Service's namespace; must be the namespace of the signing credential.
    pub namespace: String,
    /// The user (1 to [`MAX_USER_ID_LEN`] bytes).
    pub user_id: String,
    /// An OpenID Connect ID token from the namespace's identity provider for this user,
    /// issued for this erasure: its `nonce` is [`erase_nonce`] of the namespace and
    /// user, and it was issued within the namespace's `erase_max_age_secs`. Accepted
    /// once. Required by namespaces configured with `oidc`, ignored by others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// `POST /erase` → 200: what was destroyed, also when nothing was held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureReceipt {
    /// The user's pseudonym (hex), as keyservice stores and logs it.
    pub user_id: String,
    /// When the erasure happened (RFC 3339, UTC).
    pub erased_at: String,
    /// Key versions destroyed.
    pub versions_destroyed: u64,
    /// Sessions revoked.
    pub sessions_revoked: u64,
    /// Entries of the user's access history destroyed (0 from servers that keep none).
    #[serde(default)]
    pub access_records_destroyed: u64,
}

/// `GET /key/history` → 200: one page of the access history of the caller's key,
/// newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessHistory {
    /// The entries of this page.
    pub entries: Vec<AccessEntry>,
    /// Pass as `before` for the next (older) page; `None` on the last page.
    pub next: Option<String>,
}

/// One access to a user's key or session, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessEntry {
    /// The entry's id (hex); the history is ordered by it.
    pub id: String,
    /// When (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// `connect`, `key_read`, `key_write`, `key_write_unconfirmed` (a write answered 503
    /// that the store may have made all the same), `key_delete`, `logout` or `export`.
    pub operation: String,
    /// The session it was done with (a short hex id), or `None` for the Real Service's
    /// own calls (`export`).
    pub session: Option<String>,
    /// Whether that session is the one asking.
    pub current_session: bool,
    /// The client address keyservice saw: the device's, or for `connect` and `export`
    /// the Real Service's.
    pub address: String,
    /// The Real Service credential (key id) that connected the session, or made the call.
    pub credential: Option<String>,
    /// The key version read or written; for a run of writes, the last one.
    pub version: Option<u64>,
    /// For a run of writes (`count` > 1), the first version written; `None` otherwise
    /// and from servers before it.
    #[serde(default)]
    pub first_version: Option<u64>,
    /// How many accesses within about a second this entry stands for: identical reads
    /// (same session, address and version), or a run of writes by one session from one
    /// address with nothing else done to the user's key or sessions between them; 1 for
    /// every other operation.
    pub count: u64,
    /// When the last of them happened, if more than one.
    pub until: Option<String>,
}

/// `POST /export` → 200: what keyservice holds for a user, never the key bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportResponse {
    /// The user's pseudonym (hex).
    pub user_id: String,
    /// Every stored version of the user's key, oldest first.
    pub key_versions: Vec<KeyVersionInfo>,
    /// The user's sessions that have not expired.
    pub sessions: Vec<SessionInfo>,
}

/// One stored key version, described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionInfo {
    /// The version number.
    pub version: u64,
    /// Size of the key in bytes.
    pub size: u64,
    /// The Content-Type it was stored with.
    pub content_type: String,
    /// When it was stored (RFC 3339, UTC).
    pub created_at: String,
}

/// One active session, described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// When it ends (RFC 3339, UTC).
    pub expires_at: String,
}

/// Every error response: `{"error": "<snake_case code>", "message": "<sentence>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable snake_case code for programs.
    pub error: String,
    /// One sentence for people; never contains a secret.
    pub message: String,
}

/// The initTokenHash of an init token: standard base64 (padded) of SHA-512 of its UTF-8
/// bytes. This is all the Real Service ever sees of the token.
pub fn init_token_hash(init_token: &Secret) -> String {
    STANDARD.encode(Sha512::digest(init_token.as_bytes()))
}

/// The `nonce` an ID token must carry to authorise the erasure of `user_id` in
/// `namespace`: `erase:` and the base64url (unpadded) SHA-256 of
/// `"keyservice erase\n" + namespace + "\n" + userId`. The Real Service asks the identity
/// provider for a token with this nonce when the user confirms the deletion of their
/// account; no token minted for a login (whose nonce is an initTokenHash) can match it.
pub fn erase_nonce(namespace: &str, user_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"keyservice erase\n");
    hasher.update(namespace.as_bytes());
    hasher.update(b"\n");
    hasher.update(user_id.as_bytes());
    format!("erase:{}", URL_SAFE_NO_PAD.encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erase_nonce_binds_namespace_and_user() {
        // python3 -c "import hashlib,base64;print('erase:'+base64.urlsafe_b64encode(hashlib.sha256(b'keyservice erase\nnotes\nalice').digest()).decode().rstrip('='))"
        assert_eq!(erase_nonce("notes", "alice"), "erase:s3cQUEap7p_L_Rfiyx1KFAwn-p8a25qiH0ZHWsL-2pU");
        assert_ne!(erase_nonce("notes", "alice"), erase_nonce("notes", "bob"));
        assert_ne!(erase_nonce("notes", "alice"), erase_nonce("photos", "alice"));
    }

    #[test]
    fn init_token_hash_is_padded_base64_of_sha512() {
        // python3 -c "import hashlib,base64;print(base64.b64encode(hashlib.sha512(b'abc').digest()).decode())"
        assert_eq!(
            init_token_hash(&Secret::new("abc")),
            "3a81oZNherrMQXNJriBBMRLm+k6JqX6iCp7u5ktV05ohkpkqJ0/BqDa6PCOj/uu9RU1EI2Q86A4qmslPpUyknw=="
        );
    }

    #[test]
    fn connect_request_refuses_unknown_and_duplicate_fields() {
        let ok = r#"{"namespace":"n","userId":"u","initTokenHash":"h"}"#;
        assert!(serde_json::from_str::<ConnectRequest>(ok).is_ok());
        let unknown = r#"{"namespace":"n","userId":"u","initTokenHash":"h","x":1}"#;
        assert!(serde_json::from_str::<ConnectRequest>(unknown).is_err());
        let duplicate = r#"{"namespace":"n","userId":"u","userId":"v","initTokenHash":"h"}"#;
        assert!(serde_json::from_str::<ConnectRequest>(duplicate).is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let response = InitResponse { init_token: Secret::new("tok-123"), expires_at: "x".into() };
        assert!(!format!("{response:?}").contains("tok-123"));
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(json, r#"{"initToken":"tok-123","expiresAt":"x"}"#);
    }
}
