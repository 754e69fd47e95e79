//! The crate's error, and the one place that maps every error to an HTTP status.

use http::StatusCode;
use keyservice_client::protocol::RandomError;

use crate::auth::AuthError;
use crate::crypto::vault::VaultError;
use crate::store::StoreError;

/// A request the client got wrong. Each variant is one error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No route has this path.
    #[error("there is no resource at this path")]
    NotFound,
    /// The path exists, but not with this method.
    #[error("this resource does not support the method; see the Allow header")]
    MethodNotAllowed {
        /// The methods it does support, for the `Allow` header.
        allow: &'static str,
    },
    /// The body is not JSON where JSON is required.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body did not arrive in time.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The body could not be read (the client broke off or sent a malformed chunk).
    #[error("the request body could not be read")]
    BodyUnreadable,
    /// A PUT without key bytes.
    #[error("the key must be at least one byte long")]
    EmptyKey,
    /// The JSON body does not parse as this endpoint's request.
    #[error("the request body is not valid JSON for this endpoint: {0}")]
    BadJson(String),
    /// `userId` is empty or too long.
    #[error("userId must be between 1 and {max} bytes long")]
    InvalidUserId {
        /// The longest accepted.
        max: usize,
    },
    /// `initTokenHash` is not padded base64 of 64 bytes.
    #[error("initTokenHash must be the padded standard base64 of a 64-byte SHA-512 digest")]
    InvalidInitTokenHash,
    /// A PUT's Content-Type is not a printable ASCII media type of at most 255 bytes.
    #[error("the Content-Type must be a printable ASCII media type of at most 255 bytes")]
    InvalidContentType,
    /// The query string has something this endpoint does not take.
    #[error("the query string is not understood; {takes}")]
    BadQuery {
        /// What the endpoint takes, as a sentence naming it.
        takes: &'static str,
    },
    /// `If-Match` / `If-None-Match` is not `*` or a list of quoted versions.
    #[error("If-Match and If-None-Match take * or quoted versions such as \"3\"")]
    BadPrecondition,
    /// Both `If-Match` and `If-None-Match` were sent.
    #[error("send If-Match or If-None-Match, not both")]
    ConflictingPreconditions,
    /// A cross-origin request this server does not allow.
    #[error("this cross-origin request is not allowed: the route is not for browsers, or the origin is not configured")]
    CorsNotAllowed,
    /// A trusted proxy's forwarding header names no usable client.
    #[error("the request came through a trusted proxy whose forwarding header names no usable client address")]
    UnusableForwardedChain,
    /// The caller's address is not in the namespace's allowlist.
    #[error("this address may not connect for the namespace")]
    IpNotAllowed,
    /// The namespace requires an ID token from its identity provider, and this one was
    /// missing or refused.
    #[error(transparent)]
    IdToken(#[from] crate::oidc::IdTokenError),
    /// The credential does not belong to the namespace in the body.
    #[error("the signing credential does not belong to this namespace")]
    WrongNamespace,
    /// No pending init has this hash.
    #[error("no pending init token has this hash; it was never issued, or was already used or swept")]
    UnknownInitToken,
    /// The init token expired before it was redeemed.
    #[error("the init token has expired; the device must call /init again")]
    InitTokenExpired,
    /// The PUT's precondition does not hold.
    #[error("the key's current version does not satisfy the request's precondition")]
    PreconditionFailed,
    /// The user has no key.
    #[error("there is no key for this user")]
    NoKey,
    /// The user's key has no such version.
    #[error("the key has no such version")]
    NoSuchVersion,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The signature was refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is wrong.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Storage failed.
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    /// The OS random generator failed.
    #[error("randomness unavailable")]
    Random(#[from] RandomError),
    /// Sealed data did not open, or keys could not be loaded.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A rate limit or cap refused the request.
    #[error(transparent)]
    Limit(#[from] crate::limits::Refusal),
    /// The audit line could not be written, so the request may not happen.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The erasure ledger could not be read or written.
    #[error("the erasure ledger failed: {0}")]
    Ledger(String),
    /// A disk is below its free-space reserve.
    #[error(transparent)]
    Storage(#[from] crate::disk::InsufficientStorage),
}

impl Error {
    /// The HTTP status, and the snake_case code of the error body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use RequestError as R;
        match self {
            Self::Audit(_) => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            Self::Storage(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            Self::Limit(refusal) => match refusal {
                crate::limits::Refusal::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                crate::limits::Refusal::ConnectBudget { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, "connect_budget_exceeded")
                }
                crate::limits::Refusal::PendingInitsFull { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "too_many_pending_inits")
                }
            },
            Self::Vault(VaultError::MasterKeyUnavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "master_key_unavailable")
            }
            _ if matches!(self.store_error(), Some(StoreError::Full(_))) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            _ if self.store_error().is_some_and(StoreError::is_transient) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            Self::Store(_) | Self::Random(_) | Self::Vault(_) | Self::Ledger(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            Self::Auth(auth) => (StatusCode::UNAUTHORIZED, auth.code()),
            Self::Request(request) => match request {
                R::NotFound => (StatusCode::NOT_FOUND, "not_found"),
                R::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
                R::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
                R::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                R::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
                R::BodyUnreadable => (StatusCode::BAD_REQUEST, "body_unreadable"),
                R::EmptyKey => (StatusCode::BAD_REQUEST, "empty_key"),
                R::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
                R::InvalidUserId { .. } => (StatusCode::BAD_REQUEST, "invalid_user_id"),
                R::InvalidInitTokenHash => (StatusCode::BAD_REQUEST, "invalid_init_token_hash"),
                R::InvalidContentType => (StatusCode::BAD_REQUEST, "invalid_content_type"),
                R::BadQuery { .. } => (StatusCode::BAD_REQUEST, "bad_query"),
                R::BadPrecondition => (StatusCode::BAD_REQUEST, "bad_precondition"),
                R::ConflictingPreconditions => (StatusCode::BAD_REQUEST, "conflicting_preconditions"),
                R::IpNotAllowed => (StatusCode::FORBIDDEN, "ip_not_allowed"),
                R::IdToken(error) => (StatusCode::UNAUTHORIZED, error.code()),
                R::UnusableForwardedChain => (StatusCode::BAD_REQUEST, "unusable_forwarded_chain"),
                R::CorsNotAllowed => (StatusCode::FORBIDDEN, "cors_not_allowed"),
                R::WrongNamespace => (StatusCode::FORBIDDEN, "wrong_namespace"),
                R::UnknownInitToken => (StatusCode::NOT_FOUND, "unknown_init_token"),
                R::InitTokenExpired => (StatusCode::GONE, "init_token_expired"),
                R::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
                R::NoKey => (StatusCode::NOT_FOUND, "no_key"),
                R::NoSuchVersion => (StatusCode::NOT_FOUND, "no_such_version"),
            },
        }
    }

    /// The storage failure behind this error, wherever it surfaced.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Self::Store(store) | Self::Vault(VaultError::Store(store)) => Some(store),
            _ => None,
        }
    }

    /// The sentence of the error body. Server-side failures get a generic sentence; their
    /// detail goes to the log only.
    pub fn public_message(&self) -> String {
        match self.status_and_code().0 {
            StatusCode::INTERNAL_SERVER_ERROR => {
                "The server could not complete the request; it has been logged.".to_owned()
            }
            StatusCode::INSUFFICIENT_STORAGE if self.store_error().is_some() => {
                "The store's disk has no space left for this change, so it was not applied; retry once space is freed."
                    .to_owned()
            }
            StatusCode::SERVICE_UNAVAILABLE if self.store_error().is_some() => {
                "The store cannot make changes durable right now, so this one was not acknowledged and may or may not have been applied; retry later (a PUT with If-Match or If-None-Match is safe to retry).".to_owned()
            }
            _ if matches!(self, Self::Vault(VaultError::MasterKeyUnavailable(_))) => {
                "The master key cannot be reached right now, so nothing new can be sealed under it; retry later.".to_owned()
            }
            _ if matches!(self, Self::Audit(_)) => {
                "The server cannot record this request in its audit trail, so it did not carry it out.".to_owned()
            }
            _ => sentence(&self.to_string()),
        }
    }
}

/// Capitalised, with a full stop: the error body's `message` is one sentence.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.next().map(|c| c.to_uppercase().collect()).unwrap_or_default();
    out.push_str(chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}
