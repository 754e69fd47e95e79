//! Reading request bodies within a size limit and a deadline.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};

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

/// Reads the whole body, never buffering more than `limit` bytes.
///
/// A declared `Content-Length` over the limit is refused before any byte is read; a
/// chunked body is cut off as soon as it passes the limit.
///
/// # Errors
///
/// [`RequestError::BodyTooLarge`], [`RequestError::BodyTimeout`] when the body has not
/// arrived after `timeout`, or [`RequestError::BodyUnreadable`].
pub async fn read<B: RequestBody>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, RequestError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(RequestError::BodyTooLarge { limit });
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(RequestError::BodyTimeout),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(RequestError::BodyTooLarge { limit })
        }
        Ok(Err(_)) => Err(RequestError::BodyUnreadable),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}
