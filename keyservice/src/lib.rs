//! keyservice: a key-escrow server. Devices keep their data keys here, signed with
//! Sessionist ss1; the Real Service that stores their data never holds a key.
//!
//! - `config`: the validated settings, from TOML or `--dev`.
//! - `access`: each user's access history, queued and written in batches.
//! - `admin`: backup, restore and master-key rotation, online or offline.
//! - `server`: the accept loop, connection limit and graceful shutdown.
//! - `http`: routing and one handler per endpoint.
//! - `auth`: ss1 verification against the clock, a secret and the replay memory.
//! - `escrow`: every operation on inits, sessions and keys, sealed and pseudonymised.
//! - `ledger`: the erasure ledger that survives restores.
//! - `proxy`: which client address to believe behind trusted proxies.
//! - `store`: the [`Store`] trait and its backends (memory, sled).
//! - `crypto`: tokens, digests, the master key and the vault that seals data at rest.
//! - `disk`: the free-space reserve on the disks the server writes to.
//! - `error`: the crate's errors and their HTTP statuses.
//! - `logwriter`: the request log's batching writer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod audit;
mod auth;
pub mod config;
pub mod crypto;
pub mod disk;
mod error;
pub mod escrow;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod ledger;
pub mod limits;
pub mod logwriter;
pub mod metrics;
pub mod oidc;
pub mod proxy;
pub mod server;
pub mod store;
mod time;
pub mod tls;

pub use crate::config::{Config, ConfigError};
pub use crate::crypto::master::MasterKey;
pub use crate::crypto::new_token;
pub use crate::error::{Error, RequestError};
pub use crate::http::{App, ROUTES, Route};
pub use crate::ledger::ErasureLedger;
pub use crate::server::{Limits, run};
pub use crate::store::{MemoryStore, PostgresStore, SledStore, Store, StoreError};
pub use crate::time::{Clock, ShiftedClock, SystemClock};
