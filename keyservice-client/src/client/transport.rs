//! Sending signed requests: TLS, timeouts, retries and clock correction.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{AUTHORIZATION, DATE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::{Error, ErrorKind};
use crate::protocol::Secret;
use crate::protocol::ss1::{Authorization, Nonce, SignedRequest};

/// Longest wait for a server's replay floor after a `stale_date` answer.
const MAX_STALE_WAIT_SECS: u64 = 15;

/// Largest response body read, in bytes (keys are at most 16 MiB by server config).
const MAX_RESPONSE_BYTES: usize = 17 * 1024 * 1024;

/// A connection to one keyservice. Cheap to clone; clones share connections and the
/// learned clock offset.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://authority`, no trailing slash.
    origin: String,
    /// A path prefix, e.g. `/keyservice`, or empty.
    base_path: String,
    host: HeaderValue,
    timeout: Duration,
    get_retries: u32,
    /// Seconds to add to the local clock to get the server's.
    clock_offset: AtomicI64,
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    allow_http: bool,
    ca_pem: Option<Vec<u8>>,
    timeout: Duration,
    connect_timeout: Duration,
    get_retries: u32,
    clock_offset: i64,
}

impl ClientBuilder {
    /// Allows `http://` to a host that is not loopback. Only for a network you trust
    /// completely: without TLS, anyone on the path sees the key bytes.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Trusts exactly the CA certificates in this PEM bundle, instead of the platform's.
    pub fn ca_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Gives up on a request (each attempt) after this long. Default 30 seconds.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives up connecting after this long. Default 10 seconds.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often a GET is retried after a connection error, with backoff starting at
    /// 100 ms. Default 2.
    pub fn get_retries(mut self, retries: u32) -> Self {
        self.get_retries = retries;
        self
    }

    /// Starts with this correction, in seconds, added to the local clock when dating
    /// requests (the client corrects it itself after a `clock_skew` answer). Default 0.
    pub fn clock_offset_secs(mut self, offset: i64) -> Self {
        self.clock_offset = offset;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] for a URL that is not `http(s)://host[:port][/path]`, for
    /// `http://` to a non-loopback host without [`Self::allow_insecure_http`], or for a
    /// CA bundle without a usable certificate.
    pub fn build(self) -> Result<Client, Error> {
        let uri: Uri = self.url.parse().map_err(|_| Error::config("the URL is not a valid absolute URL"))?;
        let scheme = uri.scheme_str().ok_or_else(|| Error::config("the URL needs a scheme, http:// or https://"))?;
        let authority = uri.authority().ok_or_else(|| Error::config("the URL needs a host"))?.clone();
        if uri.query().is_some() {
            return Err(Error::config("the URL must not have a query string"));
        }
        match scheme {
            "https" => {}
            "http" if self.allow_http || is_loopback(authority.host()) => {}
            "http" => {
                return Err(Error::config(
                    "http:// is allowed only to a loopback host or when insecure HTTP is explicitly allowed",
                ));
            }
            _ => return Err(Error::config("the URL scheme must be http or https")),
        }

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_nodelay(true);
        let tls = tls_config(self.ca_pem.as_deref(), scheme == "https")?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new()).build(connector);
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|_| Error::config("the URL's host is not valid"))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http: client,
                origin: format!("{scheme}://{authority}"),
                base_path: uri.path().trim_end_matches('/').to_owned(),
                host,
                timeout: self.timeout,
                get_retries: self.get_retries,
                clock_offset: AtomicI64::new(self.clock_offset),
            }),
        })
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn tls_config(ca_pem: Option<&[u8]>, https: bool) -> Result<rustls::ClientConfig, Error> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::config("the CA bundle is not valid PEM").with_source(e))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::config("the CA bundle holds an unusable certificate").with_source(e))?;
            }
            if roots.is_empty() {
                return Err(Error::config("the CA bundle holds no certificate"));
            }
        }
        // The platform's store is read only when it will be used.
        None if https => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::config("no CA certificates found on this platform; give a CA bundle"));
            }
        }
        None => {}
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("TLS setup failed").with_source(e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A request to sign and send.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// Path and query below the base URL, e.g. `/key?version=2`.
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The ss1 key id and secret, or `None` for `/init`.
    pub signer: Option<(&'a str, &'a Secret)>,
}

/// A successful (2xx) answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Client {
    /// A client for the keyservice at `url` (e.g. `https://keys.example.com`), with the
    /// defaults of [`ClientBuilder`].
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub fn new(url: &str) -> Result<Self, Error> {
        Self::builder(url).build()
    }

    /// A builder for a client of the keyservice at `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            allow_http: false,
            ca_pem: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            get_retries: 2,
            clock_offset: 0,
        }
    }

    /// The correction, in seconds, currently added to the local clock.
    pub fn clock_offset_secs(&self) -> i64 {
        self.inner.clock_offset.load(Ordering::Relaxed)
    }

    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Answer, Error> {
        let idempotent = call.method == Method::GET;
        let mut connection_retries = 0;
        let mut corrected_clock = false;
        loop {
            let request = self.build_request(&call)?;
            let response = match tokio::time::timeout(self.inner.timeout, self.exchange(request)).await {
                Err(_) => return Err(Error::new(ErrorKind::Timeout)),
                Ok(Err(error)) if error.is_network() && idempotent && connection_retries < self.inner.get_retries => {
                    tokio::time::sleep(Duration::from_millis(100 << connection_retries)).await;
                    connection_retries += 1;
                    continue;
                }
                Ok(result) => result?,
            };
            if response.status.is_success() {
                return Ok(response);
            }
            let error = Error::from_response(response.status, &response.headers, &response.body);
            let date_refused = matches!(error.code(), Some("clock_skew" | "stale_date"));
            if error.is_unauthorized() && date_refused && !corrected_clock && call.signer.is_some() {
                // The request was refused before anything happened, so repeating it is
                // safe for every method.
                corrected_clock = true;
                self.learn_clock(&response.headers);
                if error.code() == Some("stale_date") {
                    // The server says when requests dated now pass its replay floor
                    // (seconds after a restart); without that, the next second does.
                    let wait = response
                        .headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map_or(Duration::from_millis(1100), |secs| Duration::from_secs(secs.min(MAX_STALE_WAIT_SECS)));
                    tokio::time::sleep(wait).await;
                }
                continue;
            }
            return Err(error);
        }
    }

    fn build_request(&self, call: &Call<'_>) -> Result<Request<Full<Bytes>>, Error> {
        let path = format!("{}{}", self.inner.base_path, call.path);
        let uri = format!("{}{}", self.inner.origin, path);
        let mut builder = Request::builder().method(call.method.clone()).uri(uri).header(HOST, self.inner.host.clone());
        for (name, value) in &call.headers {
            builder = builder.header(name, value);
        }
        if let Some((key_id, secret)) = call.signer {
            let date = httpdate::fmt_http_date(self.server_now());
            let nonce = Nonce::random().map_err(|e| Error::new(ErrorKind::Config).with_source(e))?;
            let request =
                SignedRequest { method: call.method.as_str(), path_and_query: &path, body: &call.body, date: &date };
            let authorization = Authorization::sign(key_id, secret.as_bytes(), nonce, &request).to_string();
            let authorization = HeaderValue::from_str(&authorization)
                .map_err(|_| Error::config("the key id cannot be sent in a header"))?;
            builder = builder.header(AUTHORIZATION, authorization).header(DATE, date);
        }
        builder
            .body(Full::new(call.body.clone()))
            .map_err(|e| Error::config("the request could not be built").with_source(e))
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Answer, Error> {
        let response =
            self.inner.http.request(request).await.map_err(|e| Error::new(ErrorKind::Network).with_source(e))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::new(ErrorKind::Network).with_source(e))?
            .to_bytes();
        Ok(Answer { status: parts.status, headers: parts.headers, body })
    }

    fn server_now(&self) -> SystemTime {
        let offset = self.inner.clock_offset.load(Ordering::Relaxed);
        let now = SystemTime::now();
        if offset >= 0 {
            now + Duration::from_secs(offset.unsigned_abs())
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        }
    }

    fn learn_clock(&self, headers: &http::HeaderMap) {
        let Some(server) =
            headers.get(DATE).and_then(|v| v.to_str().ok()).and_then(|v| httpdate::parse_http_date(v).ok())
        else {
            return;
        };
        let local = SystemTime::now();
        let offset = match server.duration_since(local) {
            Ok(ahead) => i64::try_from(ahead.as_secs()).unwrap_or(i64::MAX),
            Err(behind) => -i64::try_from(behind.duration().as_secs()).unwrap_or(i64::MAX),
        };
        self.inner.clock_offset.store(offset, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &format_args!("{}{}", self.inner.origin, self.inner.base_path)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        assert!(Client::new("http://127.0.0.1:8080").is_ok());
        assert!(Client::new("http://localhost:8080").is_ok());
        assert!(Client::new("http://[::1]:8080/prefix/").is_ok());
        let error = Client::new("http://keys.example.com").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
        assert!(Client::builder("http://keys.example.com").allow_insecure_http(true).build().is_ok());
        assert!(Client::new("ftp://keys.example.com").is_err());
        assert!(Client::new("keys.example.com").is_err());
        assert!(Client::new("http://127.0.0.1/?x=1").is_err());
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let error =
            Client::builder("https://keys.example.com").ca_certificates_pem(b"nothing".to_vec()).build().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config);
    }
}
