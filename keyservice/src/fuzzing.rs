//! Entry points for the fuzz targets in `fuzz/` and the property tests: each takes
//! arbitrary bytes and must never panic. Not a stable API.

use http::{HeaderMap, HeaderName, HeaderValue};
use keyservice_client::protocol::ss1::{Authorization, SignedRequest};
use keyservice_client::protocol::wire::{ConnectRequest, UserRequest};

use crate::store::{backup, record};

/// The ss1 header parser and verifier.
pub fn ss1(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(header) = Authorization::parse(text) {
        let request = SignedRequest { method: "GET", path_and_query: "/key", body: data, date: "" };
        let _ = header.verify(b"fuzzing secret", &request);
        let _ = header.to_string();
    }
}

/// The JSON request bodies, and the error description given for bad ones.
pub fn request_bodies(data: &[u8]) {
    if let Err(error) = serde_json::from_slice::<ConnectRequest>(data) {
        let _ = crate::http::describe_json_error(&error);
    }
    let _ = serde_json::from_slice::<UserRequest>(data);
}

/// Every stored-record decoder, the backup file parser, and the wrapped-key parser a
/// device runs on what keyservice hands it.
pub fn stored_records(data: &[u8]) {
    let _ = record::decode_init(data);
    let _ = record::decode_session(data);
    let _ = record::decode_access([0; 16], data);
    let _ = record::access_id_of_key(data);
    let _ = keyservice_client::wrap::describe(data);
    // Only the passkey kind: unwrapping with a passphrase runs Argon2id at the stored cost.
    let _ = keyservice_client::wrap::unwrap_with_prf(data, &[7; 32]);
    let _ = record::decode_key(1, data);
    let _ = record::decode_u64(data, "fuzz");
    let _ = record::version_of_key(data);
    let _ = record::session_of_index_key(data);
    let _ = backup::parse(data);
}

/// The proxy headers and the request headers the handlers parse, and the history query.
pub fn request_headers(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let _ = value.to_str().map(|query| crate::access::parse_query(Some(query)));
    let mut headers = HeaderMap::new();
    for name in ["forwarded", "x-forwarded-for", "if-match", "if-none-match", "x-request-id"] {
        headers.insert(HeaderName::from_static(name), value.clone());
    }
    for header in [crate::proxy::ForwardedHeader::XForwardedFor, crate::proxy::ForwardedHeader::Forwarded] {
        for hops in 1..=3 {
            let trust = crate::proxy::ProxyTrust {
                trusted: vec!["127.0.0.0/8".parse().expect("a valid network")],
                header: Some(header),
                hops,
            };
            let _ = trust.client_ip([127, 0, 0, 1].into(), &headers);
        }
    }
    let _ = crate::http::precondition_of(&headers);
}

/// The TOML config file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = crate::config::Config::from_toml(text, |name| (name == "FUZZ_SECRET").then(|| "f".repeat(40)));
}

/// The admin socket's request and answer lines.
pub fn admin_socket(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::admin::AdminRequest>(data);
    let _ = serde_json::from_slice::<crate::admin::AdminResponse>(data);
}

/// A backup file, as `restore` reads it.
pub fn backup(data: &[u8]) {
    let _ = backup::parse(data);
}

/// The erasure ledger, read whole and from a mark, as every start does.
pub fn ledger(data: &[u8]) {
    let Some((file, path)) = scratch_file(data) else { return };
    let Ok(ledger) = crate::ledger::ErasureLedger::open(&path) else { return };
    let _ = ledger.entries_after(None);
    let mark = crate::ledger::Mark::decode(data.get(..40).unwrap_or_default());
    let _ = ledger.entries_after(mark.as_ref());
    let _ = ledger.entries_after(Some(&crate::ledger::Mark { offset: data.len() as u64 / 2, hash: [0; 32] }));
    drop(file);
}

/// An audit log, as `audit verify` reads it, with and without a head file.
pub fn audit_log(data: &[u8]) {
    let Some((file, path)) = scratch_file(data) else { return };
    let _ = crate::audit::verify_series(std::slice::from_ref(&path));
    // The head file: the first line, if it is one.
    let head = data.split(|&b| b == b'\n').next().unwrap_or_default();
    if std::fs::write(crate::audit::head_path(&path), head).is_ok() {
        let _ = crate::audit::verify_series(std::slice::from_ref(&path));
    }
    drop(file);
}

/// `data` in a new temporary file, kept while the returned handle lives.
fn scratch_file(data: &[u8]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("input");
    std::fs::write(&path, data).ok()?;
    Some((dir, path))
}
