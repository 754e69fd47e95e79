//! `docs/openapi.yaml` stays true: every route the server has is in the spec, every
//! operation in the spec is served, and every error code it lists is documented.

mod support;

use std::collections::BTreeSet;

use serde_norway::Value;
use support::*;

const SPEC: &str = include_str!("../../docs/openapi.yaml");
const PROTOCOL: &str = include_str!("../../docs/protocol.md");

fn spec() -> Value {
    serde_norway::from_str(SPEC).expect("docs/openapi.yaml is valid YAML")
}

/// (path, METHOD) pairs of the spec.
fn spec_operations() -> BTreeSet<(String, String)> {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let paths = spec["paths"].as_mapping().expect("the spec has paths");
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_mapping().unwrap() {
            operations.insert((path.as_str().unwrap().to_owned(), method.as_str().unwrap().to_uppercase()));
        }
    }
    operations
}

fn server_operations() -> BTreeSet<(String, String)> {
    keyservice::ROUTES
        .iter()
        .flat_map(|route| route.allow.split(", ").map(|method| (route.path.to_owned(), method.to_owned())))
        .collect()
}

#[test]
fn the_spec_and_the_router_list_the_same_operations() {
    let spec = spec_operations();
    let server = server_operations();
    let missing_from_spec: Vec<_> = server.difference(&spec).collect();
    let missing_from_server: Vec<_> = spec.difference(&server).collect();
    assert!(missing_from_spec.is_empty(), "routes the spec lacks: {missing_from_spec:?}");
    assert!(missing_from_server.is_empty(), "spec operations the server lacks: {missing_from_server:?}");
}

#[tokio::test]
async fn every_spec_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_sled(config(dir.path())).await;
    for (path, method) in spec_operations() {
        let reply = send(server.addr, &method, &path, &[], b"").await;
        assert!(reply.status != 404 || reply.error() != "not_found", "{method} {path} is in the spec but not served");
        assert_ne!(reply.status, 405, "{method} {path} is in the spec but refused");
    }
}

#[test]
fn every_error_code_in_the_spec_is_documented() {
    let spec = spec();
    let codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"].as_sequence().unwrap();
    assert!(codes.len() >= 30);
    for code in codes {
        let code = code.as_str().unwrap();
        assert!(PROTOCOL.contains(&format!("`{code}`")), "{code} is missing from docs/protocol.md");
    }
}
