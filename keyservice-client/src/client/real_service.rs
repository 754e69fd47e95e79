//! The Real Service's side: connecting a device's session for a user.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method};

use super::device::json;
use super::error::Error;
use super::transport::{Call, Client};
use crate::protocol::Secret;
use crate::protocol::wire::{ConnectRequest, ConnectResponse};

/// A namespace credential: the ss1 key id and shared secret a Real Service signs with.
#[derive(Debug, Clone)]
pub struct Credential {
    key_id: String,
    secret: Secret,
}

impl Credential {
    /// A credential from the operator's configuration.
    pub fn new(key_id: impl Into<String>, secret: Secret) -> Self {
        Self { key_id: key_id.into(), secret }
    }
}

/// A Real Service's handle: connects device sessions for users of its namespace.
#[derive(Debug, Clone)]
pub struct RealService {
    client: Client,
    credential: Credential,
}

impl Client {
    /// Acts as a Real Service signing with `credential`. Makes no request.
    pub fn real_service(&self, credential: Credential) -> RealService {
        RealService { client: self.clone(), credential }
    }
}

impl RealService {
    /// `POST /connect`: redeems the device's init token (by its hash) for a session of
    /// `user_id` in `namespace`. Hand the returned session token to the device.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Forbidden`] (`ip_not_allowed`, `wrong_namespace`),
    /// [`crate::ErrorKind::NotFound`] (`unknown_init_token`, `init_token_expired`),
    /// [`crate::ErrorKind::BadRequest`] for a malformed user id or hash,
    /// [`crate::ErrorKind::Unauthorized`] for a wrong credential, and the transport
    /// errors.
    pub async fn connect(
        &self,
        namespace: &str,
        user_id: &str,
        init_token_hash: &str,
    ) -> Result<ConnectResponse, Error> {
        let request = ConnectRequest {
            namespace: namespace.to_owned(),
            user_id: user_id.to_owned(),
            init_token_hash: init_token_hash.to_owned(),
        };
        // Serialising three strings cannot fail.
        let body = serde_json::to_vec(&request).expect("a ConnectRequest serialises");
        let call = Call {
            method: Method::POST,
            path: "/connect".into(),
            body: Bytes::from(body),
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            signer: Some((&self.credential.key_id, &self.credential.secret)),
        };
        let answer = self.client.send(call).await?;
        json(&answer)
    }
}
