//! The client's error: one opaque type, with a kind to branch on.

use std::fmt;

use http::StatusCode;

use crate::protocol::wire::ErrorBody;

/// What went wrong, coarsely; the server's own code is [`Error::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server could not be reached, or the connection broke.
    Network,
    /// The server did not answer within the configured timeout.
    Timeout,
    /// 401: the signature, date, nonce, credential or session was refused.
    Unauthorized,
    /// 403: the caller's address or namespace may not do this.
    Forbidden,
    /// 404 or 410: no such key, version or init token.
    NotFound,
    /// 412: a conditional PUT's condition did not hold; nothing was written.
    PreconditionFailed,
    /// 413: the body was larger than the server accepts.
    TooLarge,
    /// 429: a rate limit or budget; [`Error::retry_after`] says when to try again.
    RateLimited,
    /// Another 4xx: the request was malformed.
    BadRequest,
    /// 5xx: the server failed.
    Server,
    /// The server's answer was not what the protocol promises.
    InvalidResponse,
    /// The client was set up wrong (bad URL, insecure scheme, unreadable CA bundle).
    Config,
}

/// An error from a keyservice call.
///
/// It never contains a secret: not the init token, session token, credential secret or
/// key bytes. The server's error code and sentence, when there was an answer, are in
/// [`Error::code`] and the `Display` text; lower-level causes are in `source()`.
pub struct Error {
    kind: ErrorKind,
    status: Option<StatusCode>,
    code: Option<String>,
    message: Option<String>,
    retry_after: Option<std::time::Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Self { kind, status: None, code: None, message: None, retry_after: None, source: None }
    }

    pub(crate) fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config).with_message(message)
    }

    /// The error for a non-success answer with this status and body.
    pub(crate) fn from_response(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let kind = match status.as_u16() {
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 | 410 => ErrorKind::NotFound,
            412 => ErrorKind::PreconditionFailed,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimited,
            400..=499 => ErrorKind::BadRequest,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::InvalidResponse,
        };
        let mut error = Self::new(kind);
        error.status = Some(status);
        error.retry_after = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(body) {
            error.code = Some(body.error);
            error.message = Some(body.message);
        }
        error
    }

    /// The coarse kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.status.map(|s| s.as_u16())
    }

    /// The server's snake_case error code (e.g. `bad_signature`, `clock_skew`,
    /// `no_key`), when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The server could not be reached, or the connection broke.
    pub fn is_network(&self) -> bool {
        self.kind == ErrorKind::Network
    }

    /// No answer in time.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// 401; [`Error::code`] says why.
    pub fn is_unauthorized(&self) -> bool {
        self.kind == ErrorKind::Unauthorized
    }

    /// 403.
    pub fn is_forbidden(&self) -> bool {
        self.kind == ErrorKind::Forbidden
    }

    /// 404 or 410.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// 412.
    pub fn is_precondition_failed(&self) -> bool {
        self.kind == ErrorKind::PreconditionFailed
    }

    /// 413.
    pub fn is_too_large(&self) -> bool {
        self.kind == ErrorKind::TooLarge
    }

    /// 429: a rate limit or budget.
    pub fn is_rate_limited(&self) -> bool {
        self.kind == ErrorKind::RateLimited
    }

    /// How long the server asked to wait before trying again (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    /// 5xx.
    pub fn is_server(&self) -> bool {
        self.kind == ErrorKind::Server
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::Network => "network error",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not found",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::TooLarge => "too large",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::BadRequest => "bad request",
            ErrorKind::Server => "server error",
            ErrorKind::InvalidResponse => "invalid response",
            ErrorKind::Config => "client configuration error",
        };
        f.write_str(what)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if let Some(message) = &self.message {
            write!(f, ": {message}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("retry_after", &self.retry_after)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_and_small() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
        assert!(std::mem::size_of::<Error>() <= 96, "{}", std::mem::size_of::<Error>());
    }

    #[test]
    fn statuses_map_to_kinds_and_keep_the_code() {
        let body = br#"{"error":"clock_skew","message":"The request date is too far from the server's clock."}"#;
        let error = Error::from_response(StatusCode::UNAUTHORIZED, &http::HeaderMap::new(), body);
        assert!(error.is_unauthorized());
        assert_eq!(error.code(), Some("clock_skew"));
        assert_eq!(
            error.to_string(),
            "unauthorized (clock_skew): The request date is too far from the server's clock."
        );
        for (status, kind) in [
            (403, ErrorKind::Forbidden),
            (404, ErrorKind::NotFound),
            (410, ErrorKind::NotFound),
            (412, ErrorKind::PreconditionFailed),
            (413, ErrorKind::TooLarge),
            (429, ErrorKind::RateLimited),
            (415, ErrorKind::BadRequest),
            (503, ErrorKind::Server),
        ] {
            let error =
                Error::from_response(StatusCode::from_u16(status).unwrap(), &http::HeaderMap::new(), b"not json");
            assert_eq!(error.kind(), kind);
        }
    }
}
