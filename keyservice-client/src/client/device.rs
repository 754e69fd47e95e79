//! The device's side: init tokens, sessions, and the key itself.

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use http::{HeaderValue, Method};
use zeroize::Zeroizing;

use super::error::{Error, ErrorKind};
use super::transport::{Answer, Call, Client};
use crate::protocol::Secret;
use crate::protocol::wire::{AccessHistory, InitResponse, PutKeyResponse, init_token_hash};

/// A device's init token: its signing secret for the session the Real Service will
/// connect. Keep it on the device; hand over only [`InitToken::hash`].
#[derive(Debug, Clone)]
pub struct InitToken {
    token: Secret,
    expires_at: String,
}

impl InitToken {
    /// An init token the device already holds (e.g. read back from its own storage).
    pub fn from_secret(token: Secret) -> Self {
        Self { token, expires_at: String::new() }
    }

    /// The initTokenHash to give the Real Service: base64(SHA-512(token)).
    pub fn hash(&self) -> String {
        init_token_hash(&self.token)
    }

    /// The token itself, the device's signing secret.
    pub fn secret(&self) -> &Secret {
        &self.token
    }

    /// When the server stops accepting it for `/connect` (RFC 3339), if known.
    pub fn expires_at(&self) -> &str {
        &self.expires_at
    }
}

/// The write condition of a PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Always write a new version.
    None,
    /// Write only if the latest version is this one (`If-Match: "N"`): compare-and-swap,
    /// and safe to retry.
    IfMatch(u64),
    /// Write only if there is no key yet (`If-None-Match: *`).
    IfNoneMatch,
}

/// A key version read from the server. The bytes are wiped on drop and never printed.
pub struct Key {
    /// The version number (the `ETag`).
    pub version: u64,
    /// The Content-Type it was stored with.
    pub content_type: String,
    bytes: Zeroizing<Vec<u8>>,
}

impl Key {
    /// The key material.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("version", &self.version)
            .field("content_type", &self.content_type)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// A device's session: signs with the session token as key id and the init token as
/// secret, and reaches only the key of the user the Real Service connected it for.
#[derive(Debug, Clone)]
pub struct Session {
    client: Client,
    session_token: Secret,
    init_token: Secret,
}

impl Client {
    /// `POST /init`: a new init token.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Network`], [`ErrorKind::Timeout`], [`ErrorKind::Server`] or
    /// [`ErrorKind::InvalidResponse`].
    pub async fn init(&self) -> Result<InitToken, Error> {
        let call =
            Call { method: Method::POST, path: "/init".into(), body: Bytes::new(), headers: vec![], signer: None };
        let answer = self.send(call).await?;
        let response: InitResponse = json(&answer)?;
        Ok(InitToken { token: response.init_token, expires_at: response.expires_at })
    }

    /// A session from the session token the Real Service passed on and the device's own
    /// init token. Makes no request.
    pub fn session(&self, session_token: Secret, init_token: &InitToken) -> Session {
        Session { client: self.clone(), session_token, init_token: init_token.token.clone() }
    }
}

impl Session {
    /// The same session through another client: another address for the same service,
    /// or other settings. Makes no request.
    pub fn with_client(&self, client: &Client) -> Self {
        Self { client: client.clone(), session_token: self.session_token.clone(), init_token: self.init_token.clone() }
    }

    /// `PUT /key`: stores `bytes` as a new version of the key and returns its number.
    /// `content_type` defaults to `application/octet-stream` on the server.
    ///
    /// Never retried on a connection error (the write may have landed); use
    /// [`Condition::IfMatch`] to make a retry safe.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PreconditionFailed`] when `condition` does not hold,
    /// [`ErrorKind::TooLarge`], [`ErrorKind::Unauthorized`] for an expired session, and
    /// the transport errors.
    pub async fn put_key(&self, bytes: &[u8], content_type: Option<&str>, condition: Condition) -> Result<u64, Error> {
        let mut headers = Vec::new();
        if let Some(content_type) = content_type {
            let value = HeaderValue::from_str(content_type).map_err(|_| {
                Error::new(ErrorKind::BadRequest).with_message("the content type is not a valid header value")
            })?;
            headers.push((CONTENT_TYPE, value));
        }
        match condition {
            Condition::None => {}
            Condition::IfMatch(version) => headers.push((IF_MATCH, etag(version))),
            Condition::IfNoneMatch => headers.push((IF_NONE_MATCH, HeaderValue::from_static("*"))),
        }
        let call = Call {
            method: Method::PUT,
            path: "/key".into(),
            body: Bytes::copy_from_slice(bytes),
            headers,
            signer: Some((self.session_token.expose(), &self.init_token)),
        };
        let answer = self.client.send(call).await?;
        let response: PutKeyResponse = json(&answer)?;
        Ok(response.version)
    }

    /// `GET /key`: the latest version.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] (code `no_key`) when there is none, and the transport
    /// errors.
    pub async fn get_key(&self) -> Result<Key, Error> {
        self.get("/key".into()).await
    }

    /// `GET /key?version=N`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] (code `no_such_version`), and the transport errors.
    pub async fn get_key_version(&self, version: u64) -> Result<Key, Error> {
        self.get(format!("/key?version={version}")).await
    }

    /// `DELETE /key`: destroys every version of the key (the session stays).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`] (code `no_key`) when there is none, and the transport
    /// errors.
    pub async fn delete_key(&self) -> Result<(), Error> {
        self.empty(Method::DELETE, "/key").await
    }

    /// `DELETE /session`: ends this session at once (log out). The session is unusable
    /// afterwards.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unauthorized`] when it had already ended, and the transport errors.
    pub async fn logout(&self) -> Result<(), Error> {
        self.empty(Method::DELETE, "/session").await
    }

    /// `GET /key/history`: a page of who used this user's key and sessions, newest
    /// first: at most `limit` entries (the server's default when `None`), older than the
    /// entry `before` (a previous page's `next`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::BadRequest`] (code `bad_query`) for a limit out of range or a
    /// malformed cursor, and the transport errors.
    pub async fn access_history(&self, limit: Option<usize>, before: Option<&str>) -> Result<AccessHistory, Error> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(before) = before {
            if !before.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::new(ErrorKind::BadRequest).with_message("the cursor is not hexadecimal"));
            }
            query.push(format!("before={before}"));
        }
        let path =
            if query.is_empty() { "/key/history".to_owned() } else { format!("/key/history?{}", query.join("&")) };
        json(&self.client.send(self.signed(Method::GET, path)).await?)
    }

    /// A request without a body, signed with this session.
    fn signed(&self, method: Method, path: String) -> Call<'_> {
        Call {
            method,
            path,
            body: Bytes::new(),
            headers: vec![],
            signer: Some((self.session_token.expose(), &self.init_token)),
        }
    }

    async fn empty(&self, method: Method, path: &str) -> Result<(), Error> {
        self.client.send(self.signed(method, path.into())).await.map(drop)
    }

    async fn get(&self, path: String) -> Result<Key, Error> {
        let answer = self.client.send(self.signed(Method::GET, path)).await?;
        let version = answer
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix('"')?.strip_suffix('"')?.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidResponse).with_message("the key has no ETag version"))?;
        let content_type = answer
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(crate::protocol::wire::DEFAULT_KEY_CONTENT_TYPE)
            .to_owned();
        Ok(Key { version, content_type, bytes: Zeroizing::new(answer.body.to_vec()) })
    }
}

fn etag(version: u64) -> HeaderValue {
    // A quoted decimal number is always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).expect("a quoted number is a valid header value")
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, Error> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        Error::new(ErrorKind::InvalidResponse)
            .with_message(format!("the {} answer is not the expected JSON", answer.status))
            .with_source(e)
    })
}
