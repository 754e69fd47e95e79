//! The keyservice protocol, shared by the server and its clients.
//!
//! - [`protocol::ss1`]: the Sessionist `ss1` Authorization header: parsing, signing and
//!   constant-time verification of its HMAC-SHA-512.
//! - [`protocol::wire`]: the JSON bodies of every endpoint and the error body.
//! - [`protocol::Secret`]: a string that zeroizes on drop and never prints.
//!
//! Both roles of the flow sign with the same header: a Real Service signs `POST /connect`
//! with its namespace credential, a device signs `GET`/`PUT /key` with its session token as
//! the key id and its init token as the secret.
//!
//! ```
//! use keyservice_client::protocol::ss1::{Authorization, Nonce, SignedRequest};
//!
//! let request = SignedRequest {
//!     method: "GET",
//!     path_and_query: "/key",
//!     body: b"",
//!     date: "Sun, 22 Nov 2026 06:00:00 GMT",
//! };
//! let header = Authorization::sign("session-token", b"init-token", Nonce::random()?, &request);
//! let parsed = Authorization::parse(&header.to_string())?;
//! assert!(parsed.verify(b"init-token", &request));
//! assert!(!parsed.verify(b"another secret", &request));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "client")]
mod client;
pub mod protocol;

#[cfg(feature = "client")]
pub use client::{
    Client, ClientBuilder, Condition, Credential, Error, ErrorKind, InitToken, Key, RealService, Session,
};
