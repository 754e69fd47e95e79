//! A reverse proxy on loopback for the proxy-trust tests: it forwards every request to
//! the server from 127.0.0.1 and writes the client's address into one forwarding header,
//! appending to what the client sent (a default nginx) or replacing it. Every other
//! header passes through untouched, as with a default proxy.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// How the proxy writes the client's address.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `X-Forwarded-For: <what came>, <client>`.
    AppendXff,
    /// `X-Forwarded-For: <client>`, whatever came.
    OverwriteXff,
    /// `Forwarded: <what came>, for=<client>`.
    AppendForwarded,
    /// `Forwarded: for=<client>`, whatever came.
    OverwriteForwarded,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn node(peer: SocketAddr) -> String {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    }
}

/// Starts a proxy in front of `upstream`.
pub async fn start(upstream: SocketAddr, mode: Mode) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| forward(upstream, peer, mode, request));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Proxy { addr, task }
}

async fn forward(
    upstream: SocketAddr,
    peer: SocketAddr,
    mode: Mode,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let (name, value) = match mode {
        Mode::AppendXff | Mode::OverwriteXff => ("x-forwarded-for", peer.ip().to_string()),
        Mode::AppendForwarded | Mode::OverwriteForwarded => ("forwarded", format!("for={}", node(peer))),
    };
    let appending = matches!(mode, Mode::AppendXff | Mode::AppendForwarded);
    let came: Vec<String> =
        parts.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let written = if appending && !came.is_empty() { format!("{}, {value}", came.join(", ")) } else { value };
    parts.headers.insert(name, HeaderValue::from_str(&written).unwrap());
    let stream = TcpStream::connect(upstream).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(Request::from_parts(parts, Full::new(body))).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
