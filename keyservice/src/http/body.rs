//! Reading request bodies within a size limit and a deadline.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, EXPECT};
use http_body_util::BodyExt;

use crate::error::RequestError;

/// A request body the server can read: hyper's `Incoming`, or any test body.
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

/// How much of a refused body is read and thrown away, at most, so that the client can
/// finish sending and read the answer rather than meet a closed connection.
pub const DRAIN_BYTES: u64 = 8 * 1024 * 1024;
/// How long a refused body is drained, at most.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the whole body, never buffering more than `limit` bytes.
///
/// A declared `Content-Length` over the limit is refused before any byte is read; a
/// chunked body is cut off as soon as it passes the limit. Either way the answer goes
/// out at once, while the rest of the body is drained in the background (at most
/// [`DRAIN_BYTES`] for [`DRAIN_TIME`]) so the client can read it: closing on a client
/// still sending would reset the connection and lose the answer. A client that asked
/// `Expect: 100-continue` is refused before it sends the body, and nothing is drained.
///
/// # Errors
///
/// [`RequestError::BodyTooLarge`], [`RequestError::BodyTimeout`] when the body has not
/// arrived after `timeout`, or [`RequestError::BodyUnreadable`].
pub async fn read<B: RequestBody>(
    mut body: B,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, RequestError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let expects_continue =
        headers.get(EXPECT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if declared.is_some_and(|len| len > limit as u64) {
        if !expects_continue {
            drain_later(body);
        }
        return Err(RequestError::BodyTooLarge { limit });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut collected = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(RequestError::BodyTimeout),
            Ok(None) => return Ok(collected.freeze()),
            Ok(Some(Err(_))) => return Err(RequestError::BodyUnreadable),
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else { continue };
                if collected.len() + data.len() > limit {
                    drain_later(body);
                    return Err(RequestError::BodyTooLarge { limit });
                }
                collected.extend_from_slice(&data);
            }
        }
    }
}

/// Reads and discards the rest of a refused body in the background, within bounds.
fn drain_later<B: RequestBody>(mut body: B) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut drained = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                if drained > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}
