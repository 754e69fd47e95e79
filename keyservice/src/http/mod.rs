//! HTTP: one [`App::handle`] that routes `(method, path)` to one small handler per
//! endpoint, and wraps every answer in the same security headers.
//!
//! This layer knows the [`Store`] trait, never a storage engine.

mod body;
mod connect;
mod init;
mod key;
mod response;
mod session;
mod signed;
mod subject;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use keyservice_client::protocol::Secret;

use crate::auth::Authenticator;
use crate::config::{Config, Namespace};
use crate::crypto::master::MasterKey;
use crate::error::{Error, RequestError};
use crate::escrow::{Escrow, Policy};
use crate::ledger::ErasureLedger;
use crate::store::{Store, StoreError};

pub use self::body::RequestBody;

/// The request handler, shared by every connection: cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) escrow: Escrow,
    auth: Authenticator,
    namespaces: HashMap<String, Namespace>,
    /// Credential key id → (namespace, secret), for `/connect`.
    credentials: HashMap<String, (String, Secret)>,
    init_ttl: Duration,
    session_ttl: Duration,
    max_key_bytes: usize,
    body_read_timeout: Duration,
}

/// A path the server serves and the methods it takes there.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The exact path.
    pub path: &'static str,
    /// The methods, as the `Allow` header lists them.
    pub allow: &'static str,
}

/// Every route. The router consults this table first, so a path or method missing here
/// cannot be reached; `docs/openapi.yaml` is checked against it.
pub const ROUTES: &[Route] = &[
    Route { path: "/init", allow: "POST" },
    Route { path: "/connect", allow: "POST" },
    Route { path: "/key", allow: "GET, PUT, DELETE" },
    Route { path: "/session", allow: "DELETE" },
    Route { path: "/erase", allow: "POST" },
    Route { path: "/export", allow: "POST" },
];

/// Largest `/connect` body accepted, in bytes.
const MAX_CONNECT_BODY: usize = 4096;

impl App {
    /// The handler for `config`, over `store` sealed under `master`. Re-applies the
    /// erasure ledger before it returns.
    ///
    /// # Errors
    ///
    /// Fails when the master key does not match the store, or the store, ledger or replay
    /// memory cannot be read.
    pub async fn new(config: &Config, store: Arc<dyn Store>, master: &MasterKey) -> Result<Self, Error> {
        let ledger = ErasureLedger::open(&config.erasure_ledger_file).map_err(|e| Error::Ledger(e.to_string()))?;
        let policy =
            Policy { max_key_versions: config.max_key_versions, session_idle_secs: config.session_idle.as_secs() };
        let escrow = Escrow::open(store.clone(), master, ledger, policy).await?;
        let auth = Authenticator::open(store, config.max_clock_skew).await?;
        let credentials = config
            .namespaces
            .iter()
            .flat_map(|(name, ns)| {
                ns.credentials.iter().map(move |c| (c.key_id.clone(), (name.clone(), c.secret.clone())))
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                escrow,
                auth,
                namespaces: config.namespaces.clone().into_iter().collect(),
                credentials,
                init_ttl: config.init_ttl,
                session_ttl: config.session_ttl,
                max_key_bytes: config.max_key_bytes,
                body_read_timeout: config.body_read_timeout,
            }),
        })
    }

    /// Finishes serving: records the replay floor and flushes the store. Call once no
    /// more requests will be handled.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be written.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.inner.auth.close().await?;
        self.inner.escrow.store().flush().await
    }

    /// Answers one request from `peer`. Never fails: errors become error responses.
    pub async fn handle<B: RequestBody>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let started = std::time::Instant::now();
        let method = request.method().clone();
        let route = route_name(request.uri().path());
        let response = match self.route(request, peer).await {
            Ok(response) => response,
            Err(error) => {
                let (status, code) = error.status_and_code();
                if status.is_server_error() {
                    tracing::error!(error = %error, source = ?std::error::Error::source(&error), %route, "request failed");
                }
                response::error(&error, status, code)
            }
        };
        let response = response::secure(response);
        tracing::debug!(%method, %route, status = response.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
        response
    }

    async fn route<B: RequestBody>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
    ) -> Result<Response<Full<Bytes>>, Error> {
        let route = ROUTES.iter().find(|r| r.path == request.uri().path()).ok_or(RequestError::NotFound)?;
        if !route.allow.split(", ").any(|m| m == request.method().as_str()) {
            return Err(RequestError::MethodNotAllowed { allow: route.allow }.into());
        }
        match (request.method(), route.path) {
            (&Method::POST, "/init") => init::handle(self).await,
            (&Method::POST, "/connect") => connect::handle(self, request, peer).await,
            (&Method::GET | &Method::PUT | &Method::DELETE, "/key") => key::handle(self, request).await,
            (&Method::DELETE, "/session") => session::delete(self, request).await,
            (&Method::POST, "/erase") => subject::erase(self, request, peer).await,
            (&Method::POST, "/export") => subject::export(self, request, peer).await,
            // A route listed in ROUTES without a handler: refuse rather than panic.
            _ => Err(RequestError::NotFound.into()),
        }
    }

    /// Deletes expired inits, sessions and remembered nonces every `interval`, forever,
    /// starting one interval after the call.
    pub async fn sweep_forever(self, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = crate::time::now();
            let forget = self.inner.auth.forget_nonces_before(now);
            let idle_before = self.inner.escrow.idle_before(now);
            match self.inner.escrow.store().sweep(now, idle_before, forget).await {
                Ok(swept) => tracing::debug!(
                    inits = swept.inits,
                    sessions = swept.sessions,
                    nonces = swept.nonces,
                    "swept expired records"
                ),
                Err(error) => tracing::warn!(%error, "sweeping expired records failed"),
            }
        }
    }
}

/// A fixed label for logs: never the raw path, which a client controls.
fn route_name(path: &str) -> &'static str {
    ROUTES.iter().find(|r| r.path == path).map_or("other", |r| r.path)
}
