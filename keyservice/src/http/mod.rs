//! HTTP: one [`App::handle`] that routes `(method, path)` to one small handler per
//! endpoint, and wraps every answer in the same security headers.
//!
//! This layer knows the [`Store`] trait, never a storage engine.

mod body;
mod connect;
mod init;
mod key;
mod response;

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
use crate::error::{Error, RequestError};
use crate::store::{Store, StoreError};

pub use self::body::RequestBody;

/// The request handler, shared by every connection: cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
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
    Route { path: "/key", allow: "GET, PUT" },
];

/// Largest `/connect` body accepted, in bytes.
const MAX_CONNECT_BODY: usize = 4096;

impl App {
    /// The handler for `config`, over `store`.
    ///
    /// # Errors
    ///
    /// Fails when the replay memory cannot be loaded from the store.
    pub async fn new(config: &Config, store: Arc<dyn Store>) -> Result<Self, StoreError> {
        let auth = Authenticator::open(store.clone(), config.max_clock_skew).await?;
        let credentials = config
            .namespaces
            .iter()
            .flat_map(|(name, ns)| {
                ns.credentials.iter().map(move |c| (c.key_id.clone(), (name.clone(), c.secret.clone())))
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
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
        self.inner.store.flush().await
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
        match (request.method(), request.uri().path()) {
            (&Method::POST, "/init") => init::handle(self).await,
            (_, "/init") => Err(RequestError::MethodNotAllowed { allow: "POST" }.into()),
            (&Method::POST, "/connect") => connect::handle(self, request, peer).await,
            (_, "/connect") => Err(RequestError::MethodNotAllowed { allow: "POST" }.into()),
            (&Method::GET | &Method::PUT, "/key") => key::handle(self, request).await,
            (_, "/key") => Err(RequestError::MethodNotAllowed { allow: "GET, PUT" }.into()),
            _ => Err(RequestError::NotFound.into()),
        }
    }

    /// Deletes expired inits, sessions and remembered nonces every `interval`, forever.
    pub async fn sweep_forever(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = crate::time::now();
            let forget = self.inner.auth.forget_nonces_before(now);
            match self.inner.store.sweep(now, forget).await {
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
