//! The accept loop: TLS (optional), HTTP/1.1 and HTTP/2, a connection limit, header
//! timeouts, and graceful shutdown.

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
use crate::http::App;
use crate::store::StoreError;
use crate::tls::Tls;

/// How the server treats connections; taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections served at once; the rest wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (and to finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// Largest total size of a request's headers.
    pub max_header_bytes: usize,
    /// How often expired records are swept.
    pub sweep_interval: Duration,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
            sweep_interval: config.sweep_interval,
            shutdown_grace: config.shutdown_grace,
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on their own listener, until the task is
/// dropped.
pub async fn serve_metrics(listener: TcpListener, app: App) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(app.handle_metrics(request, peer).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
        });
    }
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
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Flips to true when shutdown begins: each connection then finishes its in-flight
    // request and closes.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let sweeper = tokio::spawn(app.clone().sweep_forever(limits.sweep_interval));
    let audit_syncer = tokio::spawn({
        let app = app.clone();
        async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticker.tick().await;
                app.sync_audit();
            }
        }
    });

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
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, stop, tls) = (app.clone(), builder.clone(), stop.clone(), tls.clone());
        let handshake_timeout = limits.header_read_timeout;
        tasks.spawn(async move {
            match tls {
                None => serve_connection(stream, peer, app, &builder, stop, false).await,
                Some(tls) => match tokio::time::timeout(handshake_timeout, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer, app, &builder, stop, true).await,
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            drop(permit);
        });
    }

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
    app.close().await
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

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: App,
    builder: &auto::Builder<TokioExecutor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    secure: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let app = app.clone();
        async move {
            let mut response: Response<Full<Bytes>> = app.handle(request, peer).await;
            if secure {
                response
                    .headers_mut()
                    .insert(http::header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}
