//! The table of routes: every path the server serves and the methods it takes there.

/// A path the server serves and the methods it takes there.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The exact path.
    pub path: &'static str,
    /// The methods, as the `Allow` header lists them.
    pub allow: &'static str,
}

/// Every route. The router consults this table first, so a path or method missing here
/// cannot be reached; `docs/openapi.yaml` is checked against it.
pub const ROUTES: &[Route] = &[
    Route { path: "/init", allow: "POST" },
    Route { path: "/connect", allow: "POST" },
    Route { path: "/key", allow: "GET, PUT, DELETE" },
    Route { path: "/key/history", allow: "GET" },
    Route { path: "/session", allow: "DELETE" },
    Route { path: "/erase", allow: "POST" },
    Route { path: "/export", allow: "POST" },
    Route { path: "/healthz", allow: "GET" },
    Route { path: "/readyz", allow: "GET" },
    Route { path: "/metrics", allow: "GET" },
];

/// A fixed label for logs: never the raw path, which a client controls.
pub(super) fn route_name(path: &str) -> &'static str {
    ROUTES.iter().find(|r| r.path == path).map_or("other", |r| r.path)
}
