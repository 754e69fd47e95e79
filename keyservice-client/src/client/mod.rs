//! The async client for both roles of the flow.
//!
//! - A device calls [`Client::init`], hands [`InitToken::hash`] to its Real Service, and
//!   with the session token it gets back opens a [`Session`] to put and get its key.
//! - A Real Service opens a [`RealService`] with its namespace credential and calls
//!   [`RealService::connect`].
//!
//! Every request is signed with a fresh ss1 nonce. When the server refuses a request
//! because of its date (`clock_skew`, or `stale_date` right after a server restart), the
//! client learns the server's clock from the answer's `Date` header and tries once
//! more: such a request was not accepted, so even a PUT is safe to repeat. A GET that
//! fails to connect is retried with backoff; a PUT never is, since the client cannot
//! know whether it landed. Make a PUT retryable with a [`Condition`]: repeating
//! `If-Match: "N"` either writes once or fails with 412.

mod device;
mod error;
mod real_service;
mod transport;

pub use self::device::{Condition, InitToken, Key, Session};
pub use self::error::{Error, ErrorKind};
pub use self::real_service::{Credential, RealService};
pub use self::transport::{Client, ClientBuilder};
