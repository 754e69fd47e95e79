//! Known-answer tests for the ss1 header, against vectors computed independently with
//! Python's `hmac` module (`spec/ss1/gen_accept.py`). The first two are the
//! reference Sessionist implementation's own vectors, so passing them means existing
//! Sessionist clients interoperate.

use keyservice_client::protocol::ss1::{Authorization, NONCE_LEN, Nonce, ParseError, SignedRequest, mac};
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
    let text = include_str!("../../spec/ss1/accept.json");
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

/// `spec/ss1/reject.json`: headers every verifier refuses, and signing inputs every
/// signer must refuse.
fn rejections() -> serde_json::Value {
    let vectors: serde_json::Value = serde_json::from_str(include_str!("../../spec/ss1/reject.json")).unwrap();
    assert!(vectors["headers"].as_array().unwrap().len() >= 20, "vector file lost cases");
    vectors
}

/// The class of a parse error, as the vector file names it.
fn class(error: &ParseError) -> String {
    match error {
        ParseError::WrongScheme => "wrong_scheme".into(),
        ParseError::NotKeyValue => "not_key_value".into(),
        ParseError::UnknownField => "unknown_field".into(),
        ParseError::DuplicateField(field) => format!("duplicate_field:{field}"),
        ParseError::MissingField(field) => format!("missing_field:{field}"),
        ParseError::BadKeyId => "bad_key_id".into(),
        ParseError::BadHash => "bad_hash".into(),
        ParseError::BadNonce => "bad_nonce".into(),
        // A class added later than the vector file: named so that the test fails.
        other => format!("unclassified: {other}"),
    }
}

#[test]
fn every_rejecting_header_fails_with_its_class() {
    for vector in rejections()["headers"].as_array().unwrap() {
        let (name, expected) = (vector["name"].as_str().unwrap(), vector["error"].as_str().unwrap());
        match vector["header"].as_str() {
            Some(header) => {
                let error = Authorization::parse(header).err().unwrap_or_else(|| panic!("{name}: accepted"));
                assert_eq!(class(&error), expected, "{name}");
                assert!(
                    header.len() < 8 || !error.to_string().contains(header),
                    "{name}: the error repeats the header"
                );
            }
            None => {
                // A header value that is not text never reaches the parser of `&str`.
                let bytes = hex::decode(vector["header_hex"].as_str().unwrap()).unwrap();
                assert!(std::str::from_utf8(&bytes).is_err(), "{name}");
                assert_eq!(expected, "not_utf8", "{name}");
            }
        }
    }
}

#[test]
fn a_header_signed_from_refused_signing_input_never_parses() {
    let request =
        SignedRequest { method: "GET", path_and_query: "/key", body: b"", date: "Sun, 22 Nov 2026 06:00:00 GMT" };
    for vector in rejections()["signing"].as_array().unwrap() {
        let name = vector["name"].as_str().unwrap();
        let nonce_bytes = hex::decode(vector["nonce"].as_str().unwrap()).unwrap();
        let Ok(nonce_bytes) = <[u8; NONCE_LEN]>::try_from(nonce_bytes.as_slice()) else {
            // A nonce of another length cannot be made: `Nonce` holds exactly 64 bytes.
            continue;
        };
        let header = Authorization::sign(
            vector["key_id"].as_str().unwrap(),
            b"secret",
            Nonce::from_bytes(nonce_bytes),
            &request,
        );
        assert!(Authorization::parse(&header.to_string()).is_err(), "{name}");
    }
}
