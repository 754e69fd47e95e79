//! The Real Service's side: connecting a device's session for a user.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method};

use super::device::json;
use super::error::Error;
use super::transport::{Call, Client};
use crate::protocol::Secret;
use crate::protocol::wire::{
    ConnectRequest, ConnectResponse, EraseRequest, ErasureReceipt, ExportResponse, UserRequest,
};

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
        self.connect_with_id_token(namespace, user_id, init_token_hash, None).await
    }

    /// [`RealService::connect`] for a namespace that requires independent identity: with
    /// the ID token the user's identity provider issued for this login, whose `nonce` is
    /// `init_token_hash`.
    ///
    /// # Errors
    ///
    /// As [`RealService::connect`]; a refused token is [`crate::ErrorKind::Unauthorized`]
    /// with its `id_token_…` code.
    pub async fn connect_with_id_token(
        &self,
        namespace: &str,
        user_id: &str,
        init_token_hash: &str,
        id_token: Option<&str>,
    ) -> Result<ConnectResponse, Error> {
        let request = ConnectRequest {
            namespace: namespace.to_owned(),
            user_id: user_id.to_owned(),
            init_token_hash: init_token_hash.to_owned(),
            id_token: id_token.map(str::to_owned),
        };
        // Serialising strings cannot fail.
        let body = serde_json::to_vec(&request).expect("a ConnectRequest serialises");
        self.post("/connect", body).await
    }

    /// `POST /erase`: destroys everything held for `user_id` (the user deleted their
    /// account). The receipt comes also when nothing was held; the erasure survives the
    /// restore of an older backup.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Forbidden`], [`crate::ErrorKind::RateLimited`] beyond the
    /// namespace's erase budget, and the transport errors.
    pub async fn erase(&self, namespace: &str, user_id: &str) -> Result<ErasureReceipt, Error> {
        self.erase_with_id_token(namespace, user_id, None).await
    }

    /// [`RealService::erase`] for a namespace that requires independent identity: with an
    /// ID token the user's identity provider issued for this erasure, whose `nonce` is
    /// [`crate::protocol::wire::erase_nonce`] of `namespace` and `user_id`, issued within
    /// the namespace's `erase_max_age_secs`. A token authorises one erasure.
    ///
    /// # Errors
    ///
    /// As [`RealService::erase`]; a refused token is [`crate::ErrorKind::Unauthorized`]
    /// with its `id_token_…` code (`id_token_replayed` for a token already used).
    pub async fn erase_with_id_token(
        &self,
        namespace: &str,
        user_id: &str,
        id_token: Option<&str>,
    ) -> Result<ErasureReceipt, Error> {
        let request = EraseRequest {
            namespace: namespace.to_owned(),
            user_id: user_id.to_owned(),
            id_token: id_token.map(str::to_owned),
        };
        // Serialising strings cannot fail.
        let body = serde_json::to_vec(&request).expect("an EraseRequest serialises");
        self.post("/erase", body).await
    }

    /// `POST /export`: what is held for `user_id` (versions, sizes, dates, sessions),
    /// never key bytes; for a subject-access request.
    ///
    /// # Errors
    ///
    /// [`crate::ErrorKind::Forbidden`], and the transport errors.
    pub async fn export(&self, namespace: &str, user_id: &str) -> Result<ExportResponse, Error> {
        self.post("/export", user_request(namespace, user_id)).await
    }

    async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: Vec<u8>) -> Result<T, Error> {
        let call = Call {
            method: Method::POST,
            path: path.into(),
            body: Bytes::from(body),
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            signer: Some((&self.credential.key_id, &self.credential.secret)),
        };
        let answer = self.client.send(call).await?;
        json(&answer)
    }
}

fn user_request(namespace: &str, user_id: &str) -> Vec<u8> {
    let request = UserRequest { namespace: namespace.to_owned(), user_id: user_id.to_owned() };
    // Serialising two strings cannot fail.
    serde_json::to_vec(&request).expect("a UserRequest serialises")
}
