//! `POST /connect`: a Real Service redeems a device's init token for a session.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::{ConnectRequest, ConnectResponse};

use super::{App, RequestBody, response, signed};
use crate::crypto;
use crate::error::{Error, RequestError};
use crate::store::Redeemed;

pub async fn handle<B: RequestBody>(
    app: &App,
    request: Request<B>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Error> {
    let from = signed::real_service(app, request, peer).await?;
    let request: ConnectRequest = from.json()?;
    let digest = crypto::decode_init_token_hash(&request.init_token_hash).ok_or(RequestError::InvalidInitTokenHash)?;

    let escrow = &app.inner.escrow;
    let now = crate::time::now();
    let session_token = crypto::new_token()?;
    let expires_at = now + app.inner.session_ttl.as_secs();
    let user = escrow.user(&request.namespace, &request.user_id);
    match escrow.connect(&digest, user, &session_token, now, expires_at).await? {
        Redeemed::Session => {
            tracing::info!(credential = from.signed.key_id(), namespace = %from.namespace, "session created");
            let body = ConnectResponse { session_token, expires_at: crate::time::rfc3339(expires_at) };
            Ok(response::json(StatusCode::OK, &body))
        }
        Redeemed::UnknownInit => Err(RequestError::UnknownInitToken.into()),
        Redeemed::ExpiredInit => Err(RequestError::InitTokenExpired.into()),
    }
}
