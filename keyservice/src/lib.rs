//! keyservice: a key-escrow server. Devices keep their data keys here, signed with
//! Sessionist ss1; the Real Service that stores their data never holds a key.
//!
//! A request flows one way: `http` routes it and picks its principal,
//! `auth` (claim, session lookup, verify) returns a `Device` or `RealService` only it
//! can build, [`escrow`] takes that principal, and [`store`] keeps the sealed records.
//!
//! - `server`: [`server::Server::new`]`(config).start()` (store, master key, listeners,
//!   admin socket, metrics, signals), the accept loop, connection limit, graceful stop.
//! - `http`: the handler's state (`app`), routing (`router`, `routes`), one handler per
//!   endpoint, audit helpers (`audit`) and background work (`tasks`).
//! - `auth`: ss1 claims, the session lookup, MAC, date and replay checks; the principals.
//! - `escrow`: every operation on inits, sessions and keys, sealed and pseudonymised; its
//!   cache, the access history's batches (`history`) and upkeep.
//! - `store`: the contract in three parts ([`store::Records`], [`store::Coordination`],
//!   [`store::Maintenance`]; [`Store`] is all three) and the memory, sled and PostgreSQL
//!   backends, each part in its own file.
//! - `config`: the validated settings (`mod`), the file and its validation (`file`),
//!   secrets (`secret`), from TOML or `--dev`.
//! - `access`: each user's access history, queued and merged.
//! - `admin`: backup, restore and master-key rotation, online or offline.
//! - `audit`: the chained audit log, its rotation, verification and refusal digests.
//! - `ledger`: the erasure ledger that survives restores.
//! - `limits`: rate limits, caps and connect budgets.
//! - `proxy`: which client address to believe behind trusted proxies.
//! - `crypto`: tokens, digests, the master key and the vault that seals data at rest.
//! - `time`: the [`Clock`] every handler reads, and date formats.
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
mod files;
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
