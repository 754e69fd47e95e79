//! The data subject's rights, exercised by the Real Service: `POST /erase` (the user
//! deleted their account) and `POST /export` (a subject-access request).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use keyservice_client::protocol::wire::UserRequest;

use super::{App, RequestBody, response, signed};
use crate::error::Error;
use crate::store::UserKey;

/// `POST /erase`: every key version, the user's key and every session, destroyed; the
/// receipt also when nothing was held.
pub async fn erase<B: RequestBody>(
    app: &App,
    request: Request<B>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Error> {
    let (credential, user) = subject(app, request, peer).await?;
    let receipt = app.inner.escrow.erase(&user, crate::time::now()).await?;
    tracing::info!(
        %credential,
        user = %receipt.user_id,
        versions = receipt.versions_destroyed,
        sessions = receipt.sessions_revoked,
        "user erased"
    );
    Ok(response::json(StatusCode::OK, &receipt))
}

/// `POST /export`: what is held for the user, never key bytes.
pub async fn export<B: RequestBody>(
    app: &App,
    request: Request<B>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Error> {
    let (_, user) = subject(app, request, peer).await?;
    let export = app.inner.escrow.export(&user, crate::time::now()).await?;
    Ok(response::json(StatusCode::OK, &export))
}

/// The signing credential's key id and the (pseudonymised) user a Real Service's
/// `{namespace, userId}` request names.
async fn subject<B: RequestBody>(app: &App, request: Request<B>, peer: SocketAddr) -> Result<(String, UserKey), Error> {
    let from = signed::real_service(app, request, peer).await?;
    let request: UserRequest = from.json()?;
    let user = app.inner.escrow.user(&request.namespace, &request.user_id);
    Ok((from.signed.key_id().to_owned(), user))
}
