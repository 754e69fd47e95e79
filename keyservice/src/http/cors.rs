//! CORS for browsers: only the device's routes (`/init`, `/key`, `/key/history`, `/session`), only for
//! the configured origins. The Real Service's routes (`/connect`, `/erase`, `/export`)
//! never answer a browser: a preflight for them is refused, and so is any request to
//! them that carries an `Origin`, which a server-to-server call has no reason to send.
//!
//! A request to a device route from an origin not configured is refused too, before it
//! does anything: a browser sends a "simple" cross-origin `POST /init` without asking
//! first and only hides the answer from the page, so without this any web site could
//! make its visitors spend their network's `/init` budget. Clients that are not
//! browsers send no `Origin` and are not affected.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::response;
use super::routes::ROUTES;
use crate::error::{Error, RequestError};

/// Routes a browser may call.
const BROWSER_ROUTES: [&str; 4] = ["/init", "/key", "/key/history", "/session"];
const ALLOW_HEADERS: &str = "Authorization, X-Date, Content-Type, If-Match, If-None-Match, X-Request-Id";
const EXPOSE_HEADERS: &str = "ETag, Date, X-Request-Id, Retry-After";

/// The configured origins.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// CORS for exactly these origins (`https://app.example.com`).
    pub fn new(origins: Vec<String>) -> Self {
        Self { origins }
    }

    fn allowed<'a>(&self, origin: Option<&'a HeaderValue>) -> Option<&'a HeaderValue> {
        let origin = origin?;
        let text = origin.to_str().ok()?;
        self.origins.iter().any(|allowed| allowed == text).then_some(origin)
    }

    /// Answers an `OPTIONS` preflight for `path`.
    ///
    /// # Errors
    ///
    /// `cors_not_allowed` for a route browsers may not call, an origin not configured, or
    /// a method the route does not take; `not_found` for an unknown path.
    pub fn preflight(&self, path: &str, headers: &HeaderMap) -> Result<Response<Full<Bytes>>, Error> {
        let route = ROUTES.iter().find(|r| r.path == path).ok_or(RequestError::NotFound)?;
        let origin = self.allowed(headers.get(ORIGIN)).ok_or(RequestError::CorsNotAllowed)?;
        let method = headers.get(ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| m.to_str().ok()).unwrap_or_default();
        if !BROWSER_ROUTES.contains(&route.path) || !route.allow.split(", ").any(|m| m == method) {
            return Err(RequestError::CorsNotAllowed.into());
        }
        let mut answer = response::empty(StatusCode::NO_CONTENT);
        let out = answer.headers_mut();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(route.allow));
        out.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
        out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        out.insert(VARY, HeaderValue::from_static("Origin"));
        Ok(answer)
    }

    /// Refuses a browser's request to a Real Service route, and one to a device route
    /// from an origin not configured.
    ///
    /// # Errors
    ///
    /// `cors_not_allowed` when a request to `/connect`, `/erase` or `/export` has an
    /// `Origin`, or a request to `/init`, `/key`, `/key/history` or `/session` has one
    /// that is not configured.
    pub fn check(&self, path: &str, origin: Option<&HeaderValue>) -> Result<(), Error> {
        let Some(origin) = origin else { return Ok(()) };
        if BROWSER_ROUTES.contains(&path) {
            return match self.allowed(Some(origin)) {
                Some(_) => Ok(()),
                None => Err(RequestError::CorsNotAllowed.into()),
            };
        }
        let server_to_server = ROUTES.iter().any(|r| r.path == path);
        let operations = matches!(path, "/healthz" | "/readyz" | "/metrics");
        if server_to_server && !operations {
            return Err(RequestError::CorsNotAllowed.into());
        }
        Ok(())
    }

    /// Adds the CORS headers to a browser route's answer for an allowed origin.
    pub fn decorate(&self, path: &str, origin: Option<&HeaderValue>, response: &mut Response<Full<Bytes>>) {
        if !BROWSER_ROUTES.contains(&path) {
            return;
        }
        if let Some(origin) = self.allowed(origin) {
            let out = response.headers_mut();
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
            out.insert(VARY, HeaderValue::from_static("Origin"));
        }
    }
}
