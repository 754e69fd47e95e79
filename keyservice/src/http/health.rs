//! `GET /healthz` (the process answers), `GET /readyz` (the store, the master key and the
//! audit log are usable) and `GET /metrics` (Prometheus).

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::app::App;
use super::response;
use crate::error::{Error, RequestError};

pub fn healthz() -> Response<Full<Bytes>> {
    response::json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(app: &App) -> Response<Full<Bytes>> {
    let (health, master_key) = tokio::join!(app.inner.escrow.health(), app.inner.escrow.master_key_health());
    if let Err(error) = &master_key {
        tracing::warn!(%error, "/readyz: the master key cannot be reached");
    }
    let store = health.is_ok();
    let audit = app.inner.audit.is_writable();
    let mut disks = app.inner.disks.states();
    // The embedded store keeps its own room on the data disk, reserve or not.
    if health.as_ref().err().and_then(crate::store::StoreError::full_disk) == Some("data") {
        disks.iter_mut().filter(|d| d.name == "data").for_each(|d| d.full = true);
    }
    let disks_ok = disks.iter().all(|d| !d.low && !d.full);
    let status =
        if store && master_key.is_ok() && audit && disks_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let disk_report: serde_json::Map<String, serde_json::Value> =
        disks.iter().map(|d| (d.name.to_owned(), d.label().into())).collect();
    response::json(
        status,
        &serde_json::json!({
            "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
            "store": match health {
                Ok(()) => "ok",
                Err(crate::store::StoreError::Full(_)) => "full",
                Err(_) => "failing",
            },
            "masterKey": if master_key.is_ok() { "ok" } else { "unreachable" },
            "audit": if audit { "ok" } else { "failing" },
            "disks": disk_report,
        }),
    )
}

/// The metrics, unless they are served on their own listener instead.
pub fn metrics(app: &App, on_metrics_listener: bool) -> Result<Response<Full<Bytes>>, Error> {
    if app.inner.metrics_listen_separately && !on_metrics_listener {
        return Err(RequestError::NotFound.into());
    }
    let mut response = super::response::with_body(Bytes::from(app.inner.metrics.encode(on_metrics_listener)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    Ok(response)
}
