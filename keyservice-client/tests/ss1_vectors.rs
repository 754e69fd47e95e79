//! Known-answer tests for the ss1 header, against vectors computed independently with
//! Python's `hmac` module (`tests/data/gen_ss1_vectors.py`). The first two are the
//! reference Sessionist implementation's own vectors, so passing them means existing
//! Sessionist clients interoperate.

use keyservice_client::protocol::ss1::{Authorization, NONCE_LEN, Nonce, SignedRequest, mac};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    key_id: String,
    secret: String,
    nonce: String,
    method: String,
    path: String,
    body_hex: String,
    date: String,
    hash: String,
    header: String,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("data/ss1_vectors.json");
    let vectors: Vec<Vector> = serde_json::from_str(text).expect("vector file is valid JSON");
    assert!(vectors.len() >= 6, "vector file lost cases");
    vectors
}

fn nonce(hex_text: &str) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    hex::decode_to_slice(hex_text, &mut bytes).unwrap();
    Nonce::from_bytes(bytes)
}

#[test]
fn signing_matches_every_vector() {
    for v in vectors() {
        let body = hex::decode(&v.body_hex).unwrap();
        let request = SignedRequest { method: &v.method, path_and_query: &v.path, body: &body, date: &v.date };
        let signed = Authorization::sign(&v.key_id, v.secret.as_bytes(), nonce(&v.nonce), &request);
        assert_eq!(hex::encode(mac(v.secret.as_bytes(), &nonce(&v.nonce), &request)), v.hash, "{}", v.name);
        assert_eq!(signed.to_string(), v.header, "{}", v.name);
    }
}

#[test]
fn every_vector_header_parses_and_verifies() {
    for v in vectors() {
        let body = hex::decode(&v.body_hex).unwrap();
        let request = SignedRequest { method: &v.method, path_and_query: &v.path, body: &body, date: &v.date };
        let parsed = Authorization::parse(&v.header).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(parsed.key_id(), v.key_id, "{}", v.name);
        assert!(parsed.verify(v.secret.as_bytes(), &request), "{}", v.name);
        let mut wrong = v.secret.clone();
        wrong.push('x');
        assert!(!parsed.verify(wrong.as_bytes(), &request), "{}", v.name);
    }
}
