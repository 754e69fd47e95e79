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
//! with that device's nonce.
//!
//! Such a namespace also refuses an `/erase` without an ID token for the user issued for
//! that erasure: its `nonce` is [`erase_nonce`] of the namespace and user (which no login
//! token carries), it was issued (`iat`) within `erase_max_age_secs`, and it is accepted
//! once (its fingerprint is remembered in the store, shared by every node, until it can
//! no longer be fresh). A compromised Real Service therefore cannot destroy a user's keys,
//! nor the history of its own reads, without that user confirming at the provider. Verification is done by the `jsonwebtoken` crate; this
//! module only chooses what to require.
//!
//! The provider's keys come from a JWKS file (re-read on SIGHUP) or from its JWKS URL:
//! fetched at the first `/connect`, again when a token names a key not held (the
//! provider rotated its keys) and every [`REFRESH_EVERY`], but never more often than
//! every `refetch_secs` ([`MIN_REFETCH`] by default), so tokens with made-up key ids cannot make keyservice hammer
//! the provider. While the provider cannot be reached, the keys last fetched stay in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
pub use keyservice_client::protocol::wire::erase_nonce;

/// How often fetched keys are fetched again anyway.
pub const REFRESH_EVERY: Duration = Duration::from_secs(15 * 60);
/// The least time between two fetches, by default (`refetch_secs`).
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// How old an erasure's ID token may be, by default (`erase_max_age_secs`).
pub const ERASE_MAX_AGE: Duration = Duration::from_secs(600);
/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a namespace's identity provider keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A file (`jwks_file`).
    File(PathBuf),
    /// The provider's JWKS URL (`jwks_url`): https, or http to a loopback host.
    Url(String),
}

/// Algorithms an ID token may be signed with by default.
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A namespace's identity provider, as configured.
pub struct Oidc {
    /// The `iss` the tokens must carry.
    pub issuer: String,
    /// The `aud` they must carry (the client id the Real Service has at the provider).
    pub audience: String,
    /// The claim holding the user id the Real Service sends as `userId`.
    pub user_claim: String,
    /// Where the keys come from.
    pub source: JwksSource,
    /// Accepted signature algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The least time between two fetches of the provider's keys.
    pub refetch: Duration,
    /// How long after it was issued an ID token may authorise an erasure.
    pub erase_max_age: Duration,
    /// The keys held now, and when they were fetched (`None`: read from a file).
    keys: RwLock<(Arc<JwkSet>, Option<Instant>)>,
    /// When a fetch was last tried; serialises fetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// A provider whose keys are `keys` (from a file) or will be fetched (an empty set
    /// for a URL).
    #[allow(clippy::too_many_arguments)] // One per setting; called from the config only.
    pub fn new(
        issuer: String,
        audience: String,
        user_claim: String,
        source: JwksSource,
        keys: JwkSet,
        algorithms: Vec<Algorithm>,
        leeway_secs: u64,
        refetch: Duration,
        erase_max_age: Duration,
    ) -> Self {
        Self {
            issuer,
            audience,
            user_claim,
            source,
            algorithms,
            leeway_secs,
            refetch,
            erase_max_age,
            keys: RwLock::new((Arc::new(keys), None)),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    fn held(&self) -> (Arc<JwkSet>, Option<Instant>) {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (keys.0.clone(), keys.1)
    }

    /// The key `kid`, fetching the provider's keys again when it is not held or they
    /// are old (at most every [`MIN_REFETCH`]).
    async fn key(&self, kid: &str) -> Option<Jwk> {
        let JwksSource::Url(url) = &self.source else {
            return self.held().0.find(kid).cloned();
        };
        if let Some(key) = self.fresh_key(kid) {
            return Some(key);
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have fetched while this one waited.
            if let Some(key) = self.fresh_key(kid) {
                return Some(key);
            }
            if last.is_none_or(|at| at.elapsed() >= self.refetch) {
                *last = Some(Instant::now());
                match fetch_jwks(url).await {
                    Ok(keys) => {
                        tracing::info!(url = %url, keys = keys.keys.len(), "identity provider keys fetched");
                        *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            (Arc::new(keys), Some(Instant::now()));
                    }
                    Err(error) => tracing::warn!(url = %url, %error, "fetching the identity provider's keys failed"),
                }
            }
        }
        // Fetched now, or stale keys while the provider cannot be reached.
        self.held().0.find(kid).cloned()
    }

    /// The key `kid` if it is held and was fetched less than [`REFRESH_EVERY`] ago.
    fn fresh_key(&self, kid: &str) -> Option<Jwk> {
        let (keys, fetched) = self.held();
        let fresh = fetched.is_some_and(|at| at.elapsed() < REFRESH_EVERY);
        keys.find(kid).filter(|_| fresh).cloned()
    }
}

/// Fetches and checks a JWKS document.
async fn fetch_jwks(url: &str) -> Result<JwkSet, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: http::Uri = url.parse().map_err(|_| "the JWKS URL does not parse".to_owned())?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| "the identity provider did not answer in time".to_owned())?
        .map_err(|e| format!("cannot reach the identity provider: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("the identity provider answered {}", response.status()));
    }
    let body = tokio::time::timeout(FETCH_TIMEOUT, Limited::new(response.into_body(), MAX_JWKS_BYTES).collect())
        .await
        .map_err(|_| "the identity provider did not send its keys in time".to_owned())?
        .map_err(|_| "the JWKS document is too large or broke off".to_owned())?
        .to_bytes();
    let keys: JwkSet = serde_json::from_slice(&body).map_err(|_| "the document is not a JWKS".to_owned())?;
    let usable: Vec<Jwk> =
        keys.keys.into_iter().filter(|key| key.common.key_id.is_some() && DecodingKey::from_jwk(key).is_ok()).collect();
    if usable.is_empty() {
        return Err("the JWKS holds no usable key with a kid".to_owned());
    }
    Ok(JwkSet { keys: usable })
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
    #[error("this namespace requires an idToken from its identity provider for this user on /connect and /erase")]
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
    /// Its nonce is not this request's: the initTokenHash on `/connect`, the
    /// [`erase_nonce`] on `/erase`.
    #[error("the idToken's nonce is not this request's (the initTokenHash on /connect, the erase nonce on /erase)")]
    NonceMismatch,
    /// An erasure's token without `iat`, or issued longer ago than `erase_max_age_secs`.
    #[error("the idToken was not issued for this erasure recently enough; ask the identity provider for a new one")]
    TooOld,
    /// An erasure's token that already authorised an erasure.
    #[error("the idToken has already been used for an erasure; ask the identity provider for a new one")]
    Replayed,
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
            Self::TooOld => "id_token_too_old",
            Self::Replayed => "id_token_replayed",
            Self::UserMismatch => "id_token_user_mismatch",
        }
    }
}

/// What an ID token is presented for.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// `/connect`: its nonce must be the device's initTokenHash.
    Connect {
        /// The request's `initTokenHash`.
        init_token_hash: &'a str,
    },
    /// `/erase`: its nonce must be [`erase_nonce`] of the namespace and user, and it must
    /// have been issued at most `erase_max_age` before `now`.
    Erase {
        /// The namespace the erasure is in.
        namespace: &'a str,
        /// The time now (Unix seconds).
        now: u64,
    },
}

/// An ID token that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The last second (Unix) at which it could pass them again: how long a single-use
    /// token must be remembered.
    pub usable_until: u64,
}

/// Checks `token` against the namespace's provider, for `user_id` and `purpose`.
///
/// # Errors
///
/// The first [`IdTokenError`] found.
pub async fn verify(
    oidc: &Oidc,
    token: Option<&str>,
    user_id: &str,
    purpose: Purpose<'_>,
) -> Result<Accepted, IdTokenError> {
    let token = token.ok_or(IdTokenError::Required)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !oidc.algorithms.contains(&header.alg) {
        return Err(IdTokenError::AlgorithmNotAllowed);
    }
    let kid = header.kid.as_deref().ok_or(IdTokenError::UnknownKey)?;
    let jwk = oidc.key(kid).await.ok_or(IdTokenError::UnknownKey)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| IdTokenError::UnknownKey)?;
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
    let seconds = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
    // `exp` is required and checked above.
    let expires = seconds("exp").unwrap_or_default().saturating_add(oidc.leeway_secs);
    let (nonce, usable_until) = match purpose {
        Purpose::Connect { init_token_hash } => (init_token_hash.to_owned(), expires),
        Purpose::Erase { namespace, now } => {
            let issued = seconds("iat").ok_or(IdTokenError::TooOld)?;
            if issued > now.saturating_add(oidc.leeway_secs) {
                return Err(IdTokenError::NotYetValid);
            }
            let fresh_until = issued.saturating_add(oidc.erase_max_age.as_secs()).saturating_add(oidc.leeway_secs);
            if now > fresh_until {
                return Err(IdTokenError::TooOld);
            }
            (erase_nonce(namespace, user_id), fresh_until.min(expires))
        }
    };
    // Compared whole; both are public values (the hash is sent in clear to the Real
    // Service, the erase nonce is computed from the request), so no constant-time
    // comparison is needed.
    if claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce.as_str()) {
        return Err(IdTokenError::NonceMismatch);
    }
    if claims.get(&oidc.user_claim).and_then(|u| u.as_str()) != Some(user_id) {
        return Err(IdTokenError::UserMismatch);
    }
    Ok(Accepted { usable_until })
}
