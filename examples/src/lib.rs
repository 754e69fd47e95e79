//! Pieces the examples share: a toy **Real Service**, the other half of the keyservice
//! flow.
//!
//! It logs users in, connects their devices at keyservice (signing `/connect` with its
//! namespace credential), and stores their records. It only ever holds ciphertext: the
//! devices encrypt with keys that live at keyservice, which the Real Service cannot read.
//!
//! Its HTTP API (all JSON, loopback only, no TLS — it is a demo):
//! - `POST /login` with a user name → `{"session": "<token>"}`;
//! - `POST /keyservice-session` with `X-Session` and `{"initTokenHash": "…"}` → the
//!   keyservice session token for that user's device;
//! - `PUT /records/<name>` and `GET /records/<name>` with `X-Session`: the device's
//!   encrypted record, stored as opaque bytes;
//! - `POST /logout` and `POST /erase` with `X-Session`: end the login; erase the user at
//!   keyservice (their stored records stay, and become unreadable).
//!
//! Started with [`RealService::serve`] and a keyservice URL, it also serves the demo web
//! app (`demo/`): `GET /` the page, `GET /app.js` and `GET /app.css` its script and style, `GET /keyservice-client.js`
//! the JavaScript client (`clients/js`), `GET /config.json` where keyservice is, and, for
//! inspecting what it stores, `GET /admin/records` (a demo only: no real service would
//! expose this).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keyservice_client::RealService as KeyserviceConnector;
use keyservice_client::protocol::random_bytes;
use tokio::net::TcpListener;

/// Records as the Real Service stores them: (user, record name) → bytes.
pub type Records = Arc<Mutex<HashMap<(String, String), Vec<u8>>>>;

/// A running toy Real Service.
pub struct RealService {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Everything it has stored, to inspect.
    pub records: Records,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RealService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    keyservice: KeyserviceConnector,
    namespace: String,
    /// Where browsers reach keyservice; `None`: no web app is served.
    keyservice_url: Option<String>,
    /// Login session → user id.
    logins: Mutex<HashMap<String, String>>,
    records: Records,
}

impl RealService {
    /// Starts the service on a loopback port; it connects devices at keyservice through
    /// `keyservice`, for users of `namespace`.
    ///
    /// # Errors
    ///
    /// Fails when no loopback port can be bound.
    pub async fn start(keyservice: KeyserviceConnector, namespace: &str) -> std::io::Result<Self> {
        Self::serve(TcpListener::bind("127.0.0.1:0").await?, keyservice, namespace, None)
    }

    /// Serves on `listener`; with `keyservice_url` (as browsers reach it), the demo web
    /// app too.
    ///
    /// # Errors
    ///
    /// Fails when the listener has no local address.
    pub fn serve(
        listener: TcpListener,
        keyservice: KeyserviceConnector,
        namespace: &str,
        keyservice_url: Option<String>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let records = Records::default();
        let state = Arc::new(State {
            keyservice,
            keyservice_url,
            namespace: namespace.to_owned(),
            logins: Mutex::default(),
            records: records.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Self { addr, records, task })
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let user = parts
        .headers
        .get("x-session")
        .and_then(|v| v.to_str().ok())
        .and_then(|session| state.logins.lock().unwrap_or_else(PoisonError::into_inner).get(session).cloned());
    let path = parts.uri.path();
    if let (&Method::GET, Some(keyservice_url)) = (&parts.method, &state.keyservice_url)
        && let Some(response) = web_app(state, path, keyservice_url)
    {
        return response;
    }
    match (&parts.method, path, user) {
        (&Method::POST, "/login", _) => {
            let Ok(name) = std::str::from_utf8(&body) else {
                return reply(StatusCode::BAD_REQUEST, "the user name must be UTF-8");
            };
            let Ok(token) = random_bytes::<16>() else {
                return reply(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
            };
            let session = token.iter().map(|b| format!("{b:02x}")).collect::<String>();
            state.logins.lock().unwrap_or_else(PoisonError::into_inner).insert(session.clone(), name.to_owned());
            json(&serde_json::json!({ "session": session }))
        }
        (&Method::POST, "/keyservice-session", Some(user)) => {
            let Some(hash) = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("initTokenHash")?.as_str().map(str::to_owned))
            else {
                return reply(StatusCode::BAD_REQUEST, "expected {\"initTokenHash\": \"…\"}");
            };
            match state.keyservice.connect(&state.namespace, &user, &hash).await {
                Ok(grant) => json(&serde_json::json!({ "sessionToken": grant.session_token.expose() })),
                Err(error) => reply(StatusCode::BAD_GATEWAY, &error.to_string()),
            }
        }
        (method, path, Some(user)) if path.starts_with("/records/") => {
            let key = (user, path["/records/".len()..].to_owned());
            let mut records = state.records.lock().unwrap_or_else(PoisonError::into_inner);
            match *method {
                Method::PUT => {
                    records.insert(key, body.to_vec());
                    reply(StatusCode::NO_CONTENT, "")
                }
                Method::GET => match records.get(&key) {
                    Some(bytes) => Response::new(Full::new(Bytes::copy_from_slice(bytes))),
                    None => reply(StatusCode::NOT_FOUND, "no such record"),
                },
                _ => reply(StatusCode::METHOD_NOT_ALLOWED, "PUT or GET"),
            }
        }
        (&Method::POST, "/logout", Some(_)) => {
            if let Some(session) = parts.headers.get("x-session").and_then(|v| v.to_str().ok()) {
                state.logins.lock().unwrap_or_else(PoisonError::into_inner).remove(session);
            }
            reply(StatusCode::NO_CONTENT, "")
        }
        (&Method::POST, "/erase", Some(user)) => match state.keyservice.erase(&state.namespace, &user).await {
            Ok(receipt) => {
                // Every login of the user ends; the records stay, now unreadable.
                state.logins.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, name| *name != user);
                json(&serde_json::json!({ "versionsDestroyed": receipt.versions_destroyed }))
            }
            Err(error) => reply(StatusCode::BAD_GATEWAY, &error.to_string()),
        },
        (_, _, None) if path != "/login" => reply(StatusCode::UNAUTHORIZED, "log in first"),
        _ => reply(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// The demo web app's files, `/config.json` and `/admin/records`; `None` for other paths.
fn web_app(state: &State, path: &str, keyservice_url: &str) -> Option<Response<Full<Bytes>>> {
    let (content_type, body): (&'static str, Bytes) = match path {
        "/" => ("text/html; charset=utf-8", Bytes::from_static(include_str!("../demo/index.html").as_bytes())),
        "/app.js" => ("text/javascript", Bytes::from_static(include_str!("../demo/app.js").as_bytes())),
        "/app.css" => ("text/css", Bytes::from_static(include_str!("../demo/app.css").as_bytes())),
        "/keyservice-client.js" => {
            ("text/javascript", Bytes::from_static(include_str!("../../clients/js/dist/keyservice.js").as_bytes()))
        }
        "/config.json" => {
            ("application/json", Bytes::from(serde_json::json!({ "keyserviceUrl": keyservice_url }).to_string()))
        }
        "/admin/records" => {
            use base64::Engine;
            let records = state.records.lock().unwrap_or_else(PoisonError::into_inner);
            let listed: Vec<serde_json::Value> = records
                .iter()
                .map(|((user, name), bytes)| {
                    serde_json::json!({
                        "user": user,
                        "name": name,
                        "base64": base64::engine::general_purpose::STANDARD.encode(bytes),
                    })
                })
                .collect();
            ("application/json", Bytes::from(serde_json::json!({ "records": listed }).to_string()))
        }
        _ => return None,
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    // The page may talk to itself and to keyservice only, and runs no inline script.
    if let Ok(policy) = http::HeaderValue::from_str(&format!(
        "default-src 'self'; connect-src 'self' {keyservice_url}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )) {
        headers.insert(http::header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    Some(response)
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
