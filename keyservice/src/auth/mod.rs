//! Request authentication: the ss1 header checked against a clock, a secret and the
//! replay memory.
//!
//! Authentication owns claim → lookup → verify and returns a principal only it can
//! build ([`principal`]): a [`Device`] from [`Authenticator::device`], which looks the
//! session up itself, or a [`RealService`] from [`Authenticator::real_service`], after
//! [`Authenticator::claim`] (cheap: the header and date, no lookups) and the caller's
//! own checks of the credential, its address and the body. Both check the MAC in
//! constant time and then the replay memory. A failure to reach the store is never an
//! authentication error: each returns `Result<Result<principal, AuthError>, E>`, the
//! outer error being the store's.

mod principal;
mod replay;

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::header::{AUTHORIZATION, DATE};
use keyservice_client::protocol::Secret;
use keyservice_client::protocol::ss1::{self, Authorization, SignedRequest};

pub use self::principal::{Device, Found, RealService, Session, Sessions, is_live};
pub use self::replay::{Replay, ReplayGuard};

/// Seconds added to the replay retention beyond the window and the request timeouts,
/// for the store lookups between a request's last date check and its acceptance.
const ACCEPTANCE_MARGIN: u64 = 30;
use crate::store::{Coordination, Pseudonym, StoreError, UnixTime};
use crate::time::Clock;

/// Why a request's signature was refused. Each maps to a 401 with its own code; none
/// carries the header's content.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("the request has no Authorization header")]
    MissingAuthorization,
    /// The header is not a well-formed ss1 header.
    #[error("{0}")]
    Malformed(#[from] ss1::ParseError),
    /// No credential has the claimed key id.
    #[error("no credential has this key id")]
    UnknownKeyId,
    /// No session has the claimed token.
    #[error("no session has this token; connect again")]
    UnknownSession,
    /// The session's namespace is no longer configured.
    #[error("the session's namespace is no longer configured")]
    NamespaceRemoved,
    /// The session has expired, or was idle for too long.
    #[error("the session has expired or was idle for too long; connect again")]
    SessionExpired,
    /// The MAC does not match.
    #[error("the ss1 hash does not match the request")]
    BadSignature,
    /// Neither `Date` nor `X-Date` is present.
    #[error("the request has neither a Date nor an X-Date header")]
    MissingDate,
    /// The date header is not an HTTP date.
    #[error("the request date is not an HTTP date such as `Fri, 07 Oct 2011 21:33:17 GMT`")]
    BadDate,
    /// The date is further from the server clock than the allowed skew.
    #[error("the request date is too far from the server's clock; see the response's Date header")]
    ClockSkew,
    /// The date is at or before the replay floor left by an earlier run.
    #[error("the request is dated before the server's last restart; sign it again with the current time")]
    StaleDate {
        /// Seconds until requests dated now are past the floor.
        retry_after: u64,
    },
    /// The (key id, nonce) pair was already accepted.
    #[error("this nonce was already used; sign every request with a fresh nonce")]
    Replayed,
}

impl AuthError {
    /// The snake_case code of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthorization => "missing_authorization",
            Self::Malformed(_) => "malformed_authorization",
            Self::UnknownKeyId => "unknown_key_id",
            Self::UnknownSession => "unknown_session",
            Self::SessionExpired => "session_expired",
            Self::NamespaceRemoved => "namespace_removed",
            Self::BadSignature => "bad_signature",
            Self::MissingDate => "missing_date",
            Self::BadDate => "bad_date",
            Self::ClockSkew => "clock_skew",
            Self::StaleDate { .. } => "stale_date",
            Self::Replayed => "replayed_request",
        }
    }
}

/// A parsed header whose date is within the window; its MAC is not yet checked.
#[derive(Debug)]
pub struct Claim {
    authorization: Authorization,
    /// The date header exactly as sent: it enters the MAC.
    date_text: String,
    date: UnixTime,
}

impl Claim {
    /// The key id the request claims to be signed by.
    pub fn key_id(&self) -> &str {
        self.authorization.key_id()
    }
}

/// The parts of a request its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The path with its query string, as sent.
    pub path_and_query: &'a str,
    /// The body.
    pub body: &'a [u8],
}

/// Checks ss1 headers for one server.
pub struct Authenticator {
    max_skew: u64,
    replay: ReplayGuard,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// An authenticator allowing `max_skew` between request dates and the clock.
    /// `delay` is the longest a request can take between its first check and its
    /// acceptance (the header and body timeouts): replay entries are kept that much
    /// longer than the window, so no entry is gone while a request it guards against
    /// can still be accepted.
    ///
    /// # Errors
    ///
    /// Fails when the replay memory cannot be loaded from the store.
    pub async fn open(
        store: Arc<dyn Coordination>,
        max_skew: Duration,
        delay: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let max_skew = max_skew.as_secs();
        let retention = max_skew + delay.as_secs() + ACCEPTANCE_MARGIN;
        let replay = ReplayGuard::open(store, max_skew, retention, clock.now()).await?;
        Ok(Self { max_skew, replay, clock })
    }

    /// Parses the `Authorization` header and checks the request's date against the clock.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] for a missing or malformed header, or a missing, unparseable or
    /// skewed date.
    pub fn claim(&self, headers: &HeaderMap, now: UnixTime) -> Result<Claim, AuthError> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::MissingAuthorization)?;
        let value = value.to_str().map_err(|_| ss1::ParseError::WrongScheme)?;
        let authorization = Authorization::parse(value)?;

        // Browsers may not set Date, so X-Date stands in only when Date is absent.
        let date_header = headers.get(DATE).or_else(|| headers.get(ss1::X_DATE)).ok_or(AuthError::MissingDate)?;
        let date_text = date_header.to_str().map_err(|_| AuthError::BadDate)?;
        let date = crate::time::parse_http_date(date_text).ok_or(AuthError::BadDate)?;
        self.recheck(Claim { authorization, date_text: date_text.to_owned(), date }, now)
    }

    /// Checks the claim's date against the clock again, at the moment the request is
    /// accepted (after its body arrived and its signer was looked up).
    ///
    /// # Errors
    ///
    /// [`AuthError::ClockSkew`].
    pub fn recheck(&self, claim: Claim, now: UnixTime) -> Result<Claim, AuthError> {
        if claim.date.abs_diff(now) > self.max_skew {
            return Err(AuthError::ClockSkew);
        }
        Ok(claim)
    }

    /// Authenticates a device: the header and date, the session it claims (through
    /// `sessions`: live, and of a namespace `configured` still knows), the date again,
    /// then the MAC with the session's secret and the replay memory (for a session found
    /// unconfirmed, together with its confirmation); records the use.
    ///
    /// # Errors
    ///
    /// Inside: the [`AuthError`]s (`unknown_session`, `session_expired`, …). Outside:
    /// the session or the replay memory could not be reached.
    pub async fn device<S: Sessions + Sync>(
        &self,
        sessions: &S,
        headers: &HeaderMap,
        request: Signed<'_>,
        configured: impl Fn(&Pseudonym) -> bool,
    ) -> Result<Result<Device, AuthError>, S::Error> {
        let claim = match self.claim(headers, self.clock.now()) {
            Ok(claim) => claim,
            Err(refused) => return Ok(Err(refused)),
        };
        let Some(Found { mut session, unconfirmed }) = sessions.find(claim.key_id()).await? else {
            return Ok(Err(AuthError::UnknownSession));
        };
        // The session lookup awaited the store: judge freshness at acceptance. A session
        // remembered on a shared store may have been used at other nodes since: only its
        // end is judged now, its idleness once the store has confirmed it.
        let now = self.clock.now();
        let live = if unconfirmed { session.expires_at > now } else { sessions.is_live(&session, now) };
        if !live {
            return Ok(Err(AuthError::SessionExpired));
        }
        if !configured(&session.user.namespace) {
            return Ok(Err(AuthError::NamespaceRemoved));
        }
        let claim = match self.recheck(claim, now) {
            Ok(claim) => claim,
            Err(refused) => return Ok(Err(refused)),
        };
        if !signed_by(&claim, &session.secret, &request) {
            return Ok(Err(AuthError::BadSignature));
        }
        let accepted = if unconfirmed {
            let (accepted, stored) = tokio::join!(self.accept(&claim, now), sessions.confirm(&session));
            let Some(last_used) = stored? else {
                return Ok(Err(AuthError::UnknownSession));
            };
            session.last_used = session.last_used.max(last_used);
            if !sessions.is_live(&session, now) {
                return Ok(Err(AuthError::SessionExpired));
            }
            accepted?
        } else {
            self.accept(&claim, now).await?
        };
        if let Err(refused) = accepted {
            return Ok(Err(refused));
        }
        // Best effort: a use that cannot be recorded (a full disk, say) must not stop the
        // device reading its key; the session may then look idle a little early.
        if let Err(error) = sessions.touch(&session, now).await {
            tracing::warn!(%error, "recording a session's use failed");
        }
        Ok(Ok(Device::new(session)))
    }

    /// Authenticates a Real Service whose `claim` named a credential of `namespace`
    /// with `secret` (the caller looked it up, and checked its address and body): the
    /// date again, then the MAC and the replay memory.
    ///
    /// # Errors
    ///
    /// Inside: [`AuthError::ClockSkew`], [`AuthError::BadSignature`],
    /// [`AuthError::StaleDate`], [`AuthError::Replayed`]. Outside: the replay memory
    /// could not be made durable.
    pub async fn real_service(
        &self,
        claim: Claim,
        namespace: &str,
        secret: &Secret,
        request: Signed<'_>,
    ) -> Result<Result<RealService, AuthError>, StoreError> {
        // Freshness is judged when the request is accepted, not when it began to arrive: a
        // body held back until the date's replay entry is gone must find the date stale.
        let now = self.clock.now();
        let claim = match self.recheck(claim, now) {
            Ok(claim) => claim,
            Err(refused) => return Ok(Err(refused)),
        };
        if !signed_by(&claim, secret, &request) {
            return Ok(Err(AuthError::BadSignature));
        }
        let credential = claim.key_id().to_owned();
        Ok(self.accept(&claim, now).await?.map(|()| RealService::new(namespace.to_owned(), credential)))
    }

    /// Records the claim's nonce in the replay memory: refused when seen before, or dated
    /// too early for the memory to tell.
    async fn accept(&self, claim: &Claim, now: UnixTime) -> Result<Result<(), AuthError>, StoreError> {
        let fingerprint = crate::crypto::replay_fingerprint(claim.key_id(), claim.authorization.nonce());
        Ok(match self.replay.accept(fingerprint, claim.date, now).await? {
            Ok(()) => Ok(()),
            Err(Replay::Stale) => {
                Err(AuthError::StaleDate { retry_after: self.replay.startup_floor().saturating_sub(now) + 1 })
            }
            Err(Replay::Seen) => Err(AuthError::Replayed),
        })
    }

    /// Records the replay floor for the next run; call once no request will be accepted.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be written.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.replay.close().await
    }

    /// Remembered nonces dated before this may be swept from the store.
    pub fn forget_nonces_before(&self, now: UnixTime) -> UnixTime {
        self.replay.forget_before(now)
    }
}

/// Whether the claim's MAC over the request is right for `secret` (compared in constant
/// time).
fn signed_by(claim: &Claim, secret: &Secret, request: &Signed<'_>) -> bool {
    let signed = SignedRequest {
        method: request.method,
        path_and_query: request.path_and_query,
        body: request.body,
        date: &claim.date_text,
    };
    claim.authorization.verify(secret.as_bytes(), &signed)
}
