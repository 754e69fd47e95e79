//! `DELETE /session`: the device logs out; its session stops working at once.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use super::{App, RequestBody, response, signed};
use crate::error::{Error, RequestError};

pub async fn delete<B: RequestBody>(app: &App, request: Request<B>) -> Result<Response<Full<Bytes>>, Error> {
    let from = signed::device(app, request).await?;
    if from.parts.uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(RequestError::BadQuery.into());
    }
    app.inner.escrow.revoke_session(from.signed.key_id()).await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}
