//! Independent identity on `/connect`: an OpenID Connect ID token from the namespace's
//! own identity provider, for the same user, bound to the device's init.
//!
//! A namespace with `[namespaces.<name>.oidc]` refuses a `/connect` that does not carry
//! an `idToken` which
//! - is signed by a key of the provider's JWKS (found by its `kid`), with an allowed
//!   asymmetric algorithm (never `none`, never HMAC);
//! - was issued by the configured `issuer`, for the configured `audience`;
//! - has not expired and is already valid (`exp`, `nbf`, with `leeway_secs`);
//! - has a `nonce` equal to the request's `initTokenHash`, so the token was minted for
//!   this device's init and cannot be replayed for another;
//! - names the request's `userId` in the configured claim (`sub` by default).
//!
//! So a compromised Real Service alone cannot connect a user who has not just logged in
//! at the identity provider: it would need a token the provider signed for that user
//! with that device's nonce. Verification is done by the `jsonwebtoken` crate; this
//! module only chooses what to require.

use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Algorithms an ID token may be signed with by default.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A namespace's identity provider, as configured.
#[derive(Clone)]
pub struct Oidc {
    /// The `iss` the tokens must carry.
    pub issuer: String,
    /// The `aud` they must carry (the client id the Real Service has at the provider).
    pub audience: String,
    /// The claim holding the user id the Real Service sends as `userId`.
    pub user_claim: String,
    /// Where the provider's public keys were read from (reloaded on SIGHUP).
    pub jwks_file: PathBuf,
    /// The provider's public keys.
    pub jwks: JwkSet,
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .field("jwks_file", &self.jwks_file)
            .field("keys", &self.jwks.keys.len())
            .finish_non_exhaustive()
    }
}

/// Reads a JWKS file (`{"keys": [...]}`) and checks every key can verify.
///
/// # Errors
///
/// A sentence saying what is wrong with the file.
pub fn read_jwks(path: &Path) -> Result<JwkSet, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let jwks: JwkSet =
        serde_json::from_str(&text).map_err(|_| format!("{} is not a JWKS ({{\"keys\": [...]}})", path.display()))?;
    if jwks.keys.is_empty() {
        return Err(format!("{} holds no key", path.display()));
    }
    for key in &jwks.keys {
        if key.common.key_id.is_none() {
            return Err(format!("a key in {} has no \"kid\"", path.display()));
        }
        DecodingKey::from_jwk(key).map_err(|_| format!("a key in {} is not a usable public key", path.display()))?;
    }
    Ok(jwks)
}

/// Why an ID token was refused; each has its own error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// The namespace requires one and the request has none.
    #[error("this namespace requires an idToken from its identity provider on /connect")]
    Required,
    /// Not a JWT, or its header or claims do not parse.
    #[error("the idToken is not a well-formed JWT")]
    Malformed,
    /// Its `alg` is not one the namespace accepts.
    #[error("the idToken is signed with an algorithm this namespace does not accept")]
    AlgorithmNotAllowed,
    /// Its `kid` names no key of the provider's JWKS.
    #[error("the idToken is signed with a key the identity provider's JWKS does not hold")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the idToken's signature does not verify")]
    BadSignature,
    /// `exp` has passed.
    #[error("the idToken has expired")]
    Expired,
    /// `nbf` has not come.
    #[error("the idToken is not valid yet")]
    NotYetValid,
    /// Another issuer.
    #[error("the idToken was issued by another identity provider")]
    WrongIssuer,
    /// Another audience.
    #[error("the idToken was issued for another audience")]
    WrongAudience,
    /// Its nonce is not this request's initTokenHash.
    #[error("the idToken's nonce is not this request's initTokenHash")]
    NonceMismatch,
    /// It names another user.
    #[error("the idToken names another user than userId")]
    UserMismatch,
}

impl IdTokenError {
    /// The error code of the response body.
    pub fn code(self) -> &'static str {
        match self {
            Self::Required => "id_token_required",
            Self::Malformed => "id_token_malformed",
            Self::AlgorithmNotAllowed => "id_token_algorithm_not_allowed",
            Self::UnknownKey => "id_token_unknown_key",
            Self::BadSignature => "id_token_bad_signature",
            Self::Expired => "id_token_expired",
            Self::NotYetValid => "id_token_not_yet_valid",
            Self::WrongIssuer => "id_token_wrong_issuer",
            Self::WrongAudience => "id_token_wrong_audience",
            Self::NonceMismatch => "id_token_nonce_mismatch",
            Self::UserMismatch => "id_token_user_mismatch",
        }
    }
}

/// Checks `token` against the namespace's provider, for `user_id` and the device's
/// `init_token_hash`.
///
/// # Errors
///
/// The first [`IdTokenError`] found.
pub fn verify(oidc: &Oidc, token: Option<&str>, user_id: &str, init_token_hash: &str) -> Result<(), IdTokenError> {
    let token = token.ok_or(IdTokenError::Required)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !oidc.algorithms.contains(&header.alg) {
        return Err(IdTokenError::AlgorithmNotAllowed);
    }
    let jwk = header.kid.as_deref().and_then(|kid| oidc.jwks.find(kid)).ok_or(IdTokenError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&oidc.issuer]);
    validation.set_audience(&[&oidc.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = oidc.leeway_secs;
    let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
        .map_err(|error| {
            use jsonwebtoken::errors::ErrorKind as K;
            match error.kind() {
                K::InvalidSignature => IdTokenError::BadSignature,
                K::ExpiredSignature => IdTokenError::Expired,
                K::ImmatureSignature => IdTokenError::NotYetValid,
                K::InvalidIssuer => IdTokenError::WrongIssuer,
                K::InvalidAudience => IdTokenError::WrongAudience,
                K::InvalidAlgorithm => IdTokenError::AlgorithmNotAllowed,
                K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidEddsaKey | K::InvalidKeyFormat => {
                    IdTokenError::UnknownKey
                }
                _ => IdTokenError::Malformed,
            }
        })?
        .claims;
    // Compared whole; both are public values (the hash is sent in clear to the Real
    // Service), so no constant-time comparison is needed.
    if claims.get("nonce").and_then(|n| n.as_str()) != Some(init_token_hash) {
        return Err(IdTokenError::NonceMismatch);
    }
    if claims.get(&oidc.user_claim).and_then(|u| u.as_str()) != Some(user_id) {
        return Err(IdTokenError::UserMismatch);
    }
    Ok(())
}
