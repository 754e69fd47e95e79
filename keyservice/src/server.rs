//! The accept loop: TLS (optional), HTTP/1.1 and HTTP/2, connection limits (overall and
//! per client network), deadlines from accept (see `guard`), and graceful shutdown. The
//! metrics listener runs the same loop with its own small cap.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::http::{App, HSTS};
use crate::store::StoreError;
use crate::tls::Tls;

mod guard;
pub mod signals;
mod start;

pub use self::start::{Running, Server, StartError, load_master_key, master_key_source};

/// How the server treats connections; taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections served at once; the rest wait in the listen backlog.
    pub max_connections: usize,
    /// Most connections served at once from one client network (trusted proxies are
    /// exempt); more are closed as soon as they are accepted.
    pub max_connections_per_client: usize,
    /// Time a connection has, from its accept, to finish the TLS handshake (and the
    /// HTTP/2 preface) and send its first request's headers; and a request, from its
    /// first byte, to send its headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub keep_alive_timeout: Duration,
    /// Largest total size of a request's headers.
    pub max_header_bytes: usize,
    /// How often expired records are swept.
    pub sweep_interval: Duration,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// Who counts as one client, and which peers are proxies, for the per-client cap.
    pub client_prefix: crate::limits::ClientPrefix,
    /// Peers exempt from the per-client cap.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            header_read_timeout: config.header_read_timeout,
            keep_alive_timeout: config.keep_alive_timeout,
            max_header_bytes: config.max_header_bytes,
            sweep_interval: config.sweep_interval,
            shutdown_grace: config.shutdown_grace,
            client_prefix: config.client_prefix,
            trusted_proxies: config.proxies.trusted.clone(),
        }
    }
}

/// Most connections the metrics listener serves at once: it is for a scraper and a
/// health checker, not for clients.
const MAX_METRICS_CONNECTIONS: usize = 32;

/// Which handler a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Main,
    Metrics,
}

/// Open connections per client network, for the per-client cap.
#[derive(Default)]
struct PerClient {
    open: std::sync::Mutex<std::collections::HashMap<ipnet::IpNet, usize>>,
}

/// One connection of a client network; releases its place when dropped.
struct ClientSlot {
    counter: Arc<PerClient>,
    network: Option<ipnet::IpNet>,
}

impl PerClient {
    fn admit(self: &Arc<Self>, network: Option<ipnet::IpNet>, max: usize) -> Option<ClientSlot> {
        if let Some(network) = network {
            let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = open.entry(network).or_insert(0);
            if *count >= max {
                return None;
            }
            *count += 1;
        }
        Some(ClientSlot { counter: self.clone(), network })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(network) = self.network {
            let mut open = self.counter.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = open.get_mut(&network) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&network);
                }
            }
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on their own listener until the task is
/// dropped, under the same deadlines as the main listener and a small connection cap.
pub async fn serve_metrics(listener: TcpListener, app: App, limits: Limits) {
    let limits = Limits { max_connections: limits.max_connections.min(MAX_METRICS_CONNECTIONS), ..limits };
    let (_stopping, stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    accept_loop(&listener, &app, &limits, None, Role::Metrics, &stop, &mut tasks, std::future::pending()).await;
}

/// Serves `app` over plain HTTP on `listener` until `shutdown` completes; see [`run_tls`].
///
/// # Errors
///
/// Only the final flush can fail; accept errors are logged and retried.
pub async fn run(
    listener: TcpListener,
    app: App,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    run_tls(listener, app, limits, None, shutdown).await
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes,
/// then lets in-flight requests finish (within [`Limits::shutdown_grace`]) and closes the
/// app (see [`App::close`]).
///
/// # Errors
///
/// Only the final flush can fail; accept errors are logged and retried.
pub async fn run_tls(
    listener: TcpListener,
    app: App,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StoreError> {
    // Flips to true when shutdown begins: each connection then finishes its in-flight
    // request and closes.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let sweeper = tokio::spawn(app.clone().sweep_forever(limits.sweep_interval));
    let access_writer = tokio::spawn(app.clone().write_accesses_until(stop.clone()));
    let audit_syncer = tokio::spawn({
        let app = app.clone();
        async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                app.tick_audit().await;
            }
        }
    });

    accept_loop(&listener, &app, &limits, tls, Role::Main, &stop, &mut tasks, shutdown).await;

    drop(listener);
    sweeper.abort();
    audit_syncer.abort();
    let _ = stopping.send(true);
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
            tasks.abort_all();
        }
    }
    // A store stuck on a failing disk must not keep the process alive past its grace.
    let close = async {
        // It stopped at the signal above, once any write under way had finished.
        let _ = access_writer.await;
        app.close().await
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, close).await {
        Ok(result) => result,
        Err(_) => {
            tracing::error!("flushing the store at shutdown did not finish in time; stopping anyway");
            Err(StoreError::Unavailable("the final flush did not finish in time".into()))
        }
    }
}

/// Longest the final flush may take once the connections are closed.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Each connection's `guard::Watch` times the headers (from the accept, and from
        // the first byte after an idle keep-alive); hyper's own timer would also cut
        // every idle keep-alive at the header timeout.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(None);
    builder
}

/// Accepts connections until `shutdown` completes, each served in `tasks`.
#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: &TcpListener,
    app: &App,
    limits: &Limits,
    tls: Option<Arc<Tls>>,
    role: Role,
    stop: &tokio::sync::watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = Arc::new(PerClient::default());
    let builder = Arc::new(builder(limits));
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // The semaphore is never closed; stop if it ever is.
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning. Nothing else is
                    // affected: running out of descriptors is transient.
                    tracing::warn!(%error, "accepting a connection failed");
                    app.connection_refused("accept_failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::time::Instant::now();
        let ip = peer.ip().to_canonical();
        // An allowlisted Real Service counts alone, as its failed authentications do: a
        // neighbour holding its network's slots must not lock it out.
        let network = (!limits.trusted_proxies.iter().any(|net| net.contains(&ip))).then(|| app.client_key(ip));
        let Some(slot) = per_client.admit(network, limits.max_connections_per_client) else {
            app.connection_refused("per_client");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watch = guard::Watch::new(accepted, limits.header_read_timeout, limits.keep_alive_timeout);
        let (app, builder, stop, tls) = (app.clone(), builder.clone(), stop.clone(), tls.clone());
        let deadline = accepted + limits.header_read_timeout;
        tasks.spawn(async move {
            match tls {
                None => serve_connection(stream, peer, app, &builder, stop, watch, role, false).await,
                Some(tls) => match tokio::time::timeout_at(deadline, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer, app, &builder, stop, watch, role, true).await,
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            drop((permit, slot));
        });
    }
}

/// Completes once shutdown begins (never, if the sender is gone without starting it).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: App,
    builder: &auto::Builder<TokioExecutor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    watch: Arc<guard::Watch>,
    role: Role,
    secure: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn({
        let watch = watch.clone();
        move |request| {
            let app = app.clone();
            let in_flight = watch.request();
            async move {
                let mut response: Response<Full<Bytes>> = match role {
                    Role::Main => app.handle(request, peer).await,
                    Role::Metrics => app.handle_metrics(request, peer).await,
                };
                if secure {
                    response
                        .headers_mut()
                        .insert(http::header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
                }
                drop(in_flight);
                Ok::<_, std::convert::Infallible>(response)
            }
        }
    });
    let extra = crate::http::early_answer_headers(secure);
    let io = guard::Guarded::new(stream, watch.clone(), extra);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = watch.expired() => {
            tracing::debug!(%peer, "closing a connection idle past its deadline");
            return;
        }
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}
