//! What every connection is held to, whichever protocol it speaks: deadlines from the
//! moment it is accepted, and hyper's own early answers made as safe as ours.
//!
//! hyper's header timeout starts at a request's first byte, so a socket that never sends
//! one (plain, after a TLS handshake, or after the HTTP/2 preface) would hold a
//! connection slot forever. [`Watch`] closes a connection that is not working on a
//! request when:
//! - its first request has not arrived within the header timeout of the accept (this
//!   covers the TLS handshake, the HTTP/2 preface and SETTINGS, and the headers);
//! - it has been idle between requests for the keep-alive timeout, extended by one
//!   header timeout when a next request has begun to arrive (so pings or a trickle of
//!   bytes cannot extend it further).
//!
//! hyper answers requests it cannot parse (400, 414, 431) itself, bypassing the app;
//! [`Guarded`] adds the security headers to those answers as they are written.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The timing state of one connection, shared by its I/O, its service and its watchdog.
pub struct Watch {
    accepted: Instant,
    /// Requests being answered now.
    in_flight: AtomicUsize,
    /// Whether any request has been dispatched yet.
    served: AtomicUsize,
    /// Milliseconds after `accepted` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `accepted` of the first byte read since it became idle, plus
    /// one (0: none yet).
    first_byte_ms: AtomicU64,
    header_timeout: Duration,
    keep_alive: Duration,
}

impl Watch {
    /// The state of a connection accepted at `accepted`.
    pub fn new(accepted: Instant, header_timeout: Duration, keep_alive: Duration) -> Arc<Self> {
        Arc::new(Self {
            accepted,
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            first_byte_ms: AtomicU64::new(0),
            header_timeout,
            keep_alive,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request was dispatched; the returned guard marks its end when dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.first_byte_ms.load(Ordering::Relaxed) == 0 {
            let _ = self.first_byte_ms.compare_exchange(0, self.now_ms() + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// When the connection must be closed if nothing changes, or `None` while a
    /// request is in flight (its own timeouts bound it).
    fn deadline(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = Duration::from_millis;
        if self.served.load(Ordering::Relaxed) == 0 {
            return Some(self.accepted + self.header_timeout);
        }
        let idle_since = self.accepted + ms(self.idle_since_ms.load(Ordering::Acquire));
        let mut deadline = idle_since + self.keep_alive;
        let first_byte = self.first_byte_ms.load(Ordering::Acquire);
        if first_byte > 0 {
            deadline = deadline.max(self.accepted + ms(first_byte - 1) + self.header_timeout);
        }
        Some(deadline)
    }

    /// Completes when the connection has been idle past its deadline.
    pub async fn expired(&self) {
        loop {
            match self.deadline() {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Busy: look again later (a request's end moves the deadline forward).
                None => tokio::time::sleep(self.header_timeout.min(self.keep_alive)).await,
            }
        }
    }
}

/// One request in flight; its drop makes the connection idle again when it was the last.
pub struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let watch = &self.0;
        watch.idle_since_ms.store(watch.now_ms(), Ordering::Release);
        watch.first_byte_ms.store(0, Ordering::Release);
        watch.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream: reads feed the [`Watch`], and hyper's own early error
/// answers get the security headers.
pub struct Guarded<S> {
    inner: S,
    watch: Arc<Watch>,
    /// The extra header lines for hyper's own answers.
    extra: &'static [u8],
    /// Rewritten bytes not yet passed on to `inner`.
    pending: Vec<u8>,
}

impl<S> Guarded<S> {
    /// Wraps `inner`; `extra` are header lines (`name: value\r\n`…) for hyper's answers.
    pub fn new(inner: S, watch: Arc<Watch>, extra: &'static [u8]) -> Self {
        Self { inner, watch, extra, pending: Vec::new() }
    }
}

/// hyper's own answers: a status line of its error statuses, written as one head that
/// lacks the headers every answer of the app carries.
fn is_bare_error_head(buf: &[u8]) -> Option<usize> {
    const HEADS: [&[u8]; 3] = [b"HTTP/1.1 400 ", b"HTTP/1.1 414 ", b"HTTP/1.1 431 "];
    if !HEADS.iter().any(|head| buf.starts_with(head)) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = &buf[..end];
    let ours = head.windows(23).any(|w| w.eq_ignore_ascii_case(b"x-content-type-options:"));
    (!ours).then_some(end)
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            let written = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watch.bytes_read();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        if let Some(end) = is_bare_error_head(buf) {
            // Take the whole head now, with the headers inserted before its end; it is
            // passed on by this and later calls.
            this.pending.extend_from_slice(&buf[..end + 2]);
            this.pending.extend_from_slice(this.extra);
            this.pending.extend_from_slice(b"\r\n");
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(end + 4));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // Vectored writes stay off: every head then arrives in one `poll_write`.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_error_heads_are_rewritten() {
        assert_eq!(is_bare_error_head(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"), Some(43));
        assert_eq!(is_bare_error_head(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"), Some(44));
        assert!(is_bare_error_head(b"HTTP/1.1 400 Bad Request\r\nx-content-type-options: nosniff\r\n\r\n").is_none());
        assert!(is_bare_error_head(b"HTTP/1.1 200 OK\r\n\r\n").is_none());
        assert!(is_bare_error_head(b"{\"error\":\"HTTP/1.1 400 \"}").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_run_from_accept_then_from_each_idle_moment() {
        let header = Duration::from_secs(10);
        let keep_alive = Duration::from_secs(60);
        let start = Instant::now();
        let watch = Watch::new(start, header, keep_alive);
        assert_eq!(watch.deadline(), Some(start + header), "the first request is due within the header timeout");
        let request = watch.request();
        assert_eq!(watch.deadline(), None, "a request in flight has its own timeouts");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(request);
        assert_eq!(watch.deadline(), Some(start + Duration::from_secs(5) + keep_alive));
        // A next request begins near the end of the keep-alive: it gets one header timeout.
        tokio::time::advance(Duration::from_secs(58)).await;
        watch.bytes_read();
        assert_eq!(watch.deadline(), Some(start + Duration::from_secs(63) + header));
        // More bytes do not extend it.
        tokio::time::advance(Duration::from_secs(5)).await;
        watch.bytes_read();
        assert_eq!(watch.deadline(), Some(start + Duration::from_secs(63) + header));
    }
}
