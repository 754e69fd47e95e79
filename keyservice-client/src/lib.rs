//! The keyservice protocol, shared by the server and its clients, and a client for
//! both roles of the flow.
//!
//! - [`protocol::ss1`]: the Sessionist `ss1` Authorization header: parsing, signing and
//!   constant-time verification of its HMAC-SHA-512.
//! - [`protocol::wire`]: the JSON bodies of every endpoint and the error body.
//! - [`protocol::Secret`]: a string that zeroizes on drop and never prints.
//!
//! With the `client` feature (on by default), [`Client`] speaks for both roles of the flow,
//! and the `cli` feature builds the `keyservice-cli` binary.
//!
//! ```
//! use keyservice_client::{Client, Condition, Credential};
//! # use keyservice_client::protocol::Secret;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let (config, secret) = keyservice::Config::dev(dir.path().join("data"))?;
//! # let store = std::sync::Arc::new(keyservice::SledStore::open(&config.data_dir)?);
//! # let master = keyservice::MasterKey::generate()?;
//! # let app = keyservice::App::new(&config, store, &master).await?;
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let url = format!("http://{}", listener.local_addr()?);
//! # tokio::spawn(keyservice::run(listener, app, keyservice::Limits::from(&config), std::future::pending()));
//! let keyservice = Client::new(&url)?;
//!
//! // The device gets an init token and gives the Real Service only its hash.
//! let init = keyservice.init().await?;
//! let init_token_hash = init.hash();
//!
//! // The Real Service, which knows the user, connects the device's session.
//! let real_service = keyservice.real_service(Credential::new("demo-1", secret));
//! let grant = real_service.connect("demo", "user-347", &init_token_hash).await?;
//!
//! // The device escrows its data key, and reads it back from any later session.
//! let session = keyservice.session(grant.session_token, &init);
//! let version = session.put_key(&[42u8; 32], None, Condition::IfNoneMatch).await?;
//! let key = session.get_key().await?;
//! assert_eq!((key.version, key.bytes()), (version, &[42u8; 32][..]));
//! # Ok(())
//! # }
//! ```
//!
//! The protocol alone, e.g. to sign requests with another HTTP stack:
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
pub mod wrap;

#[cfg(feature = "client")]
pub use client::{
    Client, ClientBuilder, Condition, Credential, Error, ErrorKind, InitToken, Key, RealService, Session,
};
