//! Routing: one [`App::handle`] that sends `(method, path)` to one small handler per
//! endpoint, counts and audits refusals, and wraps every answer in the same security
//! headers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;

use super::app::{App, RequestInfo};
use super::audit::AuditSubject;
use super::body::RequestBody;
use super::routes::{ROUTES, route_name};
use super::{connect, health, init, key, response, session, signed, subject};
use crate::error::{Error, RequestError};

impl App {
    /// Answers one request from `peer`. Never fails: errors become error responses.
    pub async fn handle<B: RequestBody>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.handle_on(request, peer, false).await
    }

    /// Answers one request on the metrics listener: `/metrics`, `/healthz` and `/readyz`
    /// only.
    pub async fn handle_metrics<B: RequestBody>(&self, request: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.handle_on(request, peer, true).await
    }

    async fn handle_on<B: RequestBody>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        metrics_listener: bool,
    ) -> Response<Full<Bytes>> {
        let started = std::time::Instant::now();
        let client = self.inner.proxies.client_ip(peer.ip(), request.headers());
        // An unusable chain from a trusted proxy names nobody: the request is refused
        // below, and logged under the proxy's address.
        let info =
            RequestInfo { id: request_id(request.headers()), client: client.unwrap_or(peer.ip().to_canonical()) };
        let method = request.method().clone();
        // CORS works on the route name: only known routes have CORS rules, and unknown
        // paths all come out as "other" without a copy of the path.
        let route = route_name(request.uri().path());
        let origin = request.headers().get(http::header::ORIGIN).cloned();
        let probe = matches!(route, "/healthz" | "/readyz" | "/metrics");
        let result = if metrics_listener {
            self.route_metrics(&request).await
        } else if client.is_err() && !probe {
            Err(RequestError::UnusableForwardedChain.into())
        } else if method == Method::OPTIONS {
            self.inner.cors.preflight(route, request.headers())
        } else {
            match self.inner.cors.check(route, origin.as_ref()) {
                Ok(()) => self.route(request, &info).await,
                Err(error) => Err(error),
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let (status, code) = error.status_and_code();
                if status.is_server_error() {
                    tracing::error!(request_id = %info.id, error = %error, source = ?std::error::Error::source(&error), route, "request failed");
                }
                let denial = match &error {
                    _ if let Some(disk) = error.store_error().and_then(crate::store::StoreError::full_disk) => {
                        self.inner.metrics.insufficient_storage(disk);
                        None
                    }
                    Error::Auth(auth) => {
                        self.inner.metrics.auth_failure(auth.code());
                        self.inner.limiter.auth_failed(self.client_key(info.client));
                        Some("auth_failure")
                    }
                    Error::Limit(refusal) => {
                        self.inner.metrics.rate_limited(refusal.limit());
                        None
                    }
                    Error::Storage(refusal) => {
                        self.inner.metrics.insufficient_storage(refusal.disk);
                        None
                    }
                    Error::Request(RequestError::IpNotAllowed | RequestError::WrongNamespace) => {
                        // A refused caller spends the same budget as a bad signature, so
                        // hammering costs the caller a 429, not the server a write.
                        self.inner.limiter.auth_failed(self.client_key(info.client));
                        Some("access_denied")
                    }
                    _ => None,
                };
                if let Some(event) = denial
                    && self.inner.denials.admit((self.inner.limiter.network_of(info.client), event, code))
                {
                    // Best effort: the request is refused whether or not this is written.
                    let _ = self.audit(
                        &info,
                        event,
                        "denied",
                        AuditSubject { reason: Some(code), ..AuditSubject::default() },
                    );
                }
                response::error(&error, status, code)
            }
        };
        let mut response = response::secure(response);
        if method != Method::OPTIONS {
            self.inner.cors.decorate(route, origin.as_ref(), &mut response);
        }
        if let Ok(id) = http::HeaderValue::from_str(&info.id) {
            response.headers_mut().insert("x-request-id", id);
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        self.inner.metrics.request(route, status, elapsed.as_secs_f64());
        tracing::info!(target: "keyservice::request", request_id = %info.id, %method, route, status, latency_us = elapsed.as_micros() as u64, "request");
        response
    }

    async fn route_metrics<B>(&self, request: &Request<B>) -> Result<Response<Full<Bytes>>, Error> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => health::metrics(self, true),
            (&Method::GET, "/healthz") => Ok(health::healthz()),
            (&Method::GET, "/readyz") => Ok(health::readyz(self).await),
            _ => Err(RequestError::NotFound.into()),
        }
    }

    async fn route<B: RequestBody>(
        &self,
        request: Request<B>,
        info: &RequestInfo,
    ) -> Result<Response<Full<Bytes>>, Error> {
        let route = ROUTES.iter().find(|r| r.path == request.uri().path()).ok_or(RequestError::NotFound)?;
        if !route.allow.split(", ").any(|m| m == request.method().as_str()) {
            return Err(RequestError::MethodNotAllowed { allow: route.allow }.into());
        }
        // Each handler gets its principal from here: one authentication per kind of route.
        let method = request.method().clone();
        match (&method, route.path) {
            (&Method::POST, "/init") => init::handle(self, info).await,
            (&Method::POST, "/connect" | "/erase" | "/export") => {
                let from = signed::real_service(self, request, info.client).await?;
                match route.path {
                    "/connect" => connect::handle(self, from, info).await,
                    "/erase" => subject::erase(self, from, info).await,
                    _ => subject::export(self, from, info).await,
                }
            }
            (&Method::GET | &Method::PUT | &Method::DELETE, "/key" | "/key/history" | "/session") => {
                let from = signed::device(self, request, info.client).await?;
                match (&method, route.path) {
                    (&Method::PUT, "/key") => key::put(self, from, info).await,
                    (&Method::DELETE, "/key") => key::delete(self, from, info).await,
                    (&Method::GET, "/key") => key::get(self, from, info).await,
                    (&Method::GET, "/key/history") => key::history(self, from, info).await,
                    (&Method::DELETE, "/session") => session::delete(self, from, info).await,
                    _ => Err(RequestError::NotFound.into()),
                }
            }
            (&Method::GET, "/healthz") => Ok(health::healthz()),
            (&Method::GET, "/readyz") => Ok(health::readyz(self).await),
            (&Method::GET, "/metrics") => health::metrics(self, false),
            // A route listed in ROUTES without a handler: refuse rather than panic.
            _ => Err(RequestError::NotFound.into()),
        }
    }
}

/// The client's `X-Request-Id` when it is 1 to 64 letters, digits, `-`, `_` or `.`;
/// otherwise a new one: a random prefix per process and a counter, 32 hex digits (unique
/// across restarts and nodes without a system call per request).
fn request_id(headers: &http::HeaderMap) -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let given = headers.get("x-request-id").and_then(|v| v.to_str().ok()).filter(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    if let Some(id) = given {
        return id.to_owned();
    }
    let prefix = PREFIX.get_or_init(|| {
        // Without OS randomness the start time still separates processes.
        keyservice_client::protocol::random_bytes::<8>().map(u64::from_be_bytes).unwrap_or_else(|_| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        })
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix:016x}{n:016x}")
}
