//! HTTP: the handler's state ([`app`]), the route table ([`routes`]) and the router
//! that sends each request to one small handler per endpoint ([`router`]), the audit
//! lines and access history of requests ([`audit`]), and the work beside them
//! ([`tasks`]).
//!
//! This layer knows the [`Store`](crate::store::Store) trait, never a storage engine.

mod app;
mod audit;
mod body;
mod connect;
mod cors;
mod health;
mod identity;
mod init;
mod key;
mod response;
mod router;
mod routes;
mod session;
mod signed;
mod subject;
mod tasks;

pub use self::app::App;
pub use self::response::HSTS;
pub(crate) use self::response::early_answer_headers;
pub use self::routes::{ROUTES, Route};

use crate::error::RequestError;

/// For the fuzzing entry points.
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    signed::describe_json_error(error)
}

/// For the fuzzing entry points.
pub(crate) fn precondition_of(headers: &http::HeaderMap) -> Result<crate::store::Precondition, RequestError> {
    key::precondition(headers)
}
