//! The wrapped-key format against its known answers, the same file the JavaScript
//! client's tests read: both produce these bytes, and open them.

use keyservice_client::wrap::{self, Argon2Params, WrapError, Wrapping};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../spec/wrap/vectors.json")).unwrap()
}

fn bytes(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

fn array<const N: usize>(value: &Value) -> [u8; N] {
    bytes(value).try_into().unwrap()
}

#[test]
fn passphrase_vectors_wrap_to_the_same_bytes_and_open() {
    let vectors = vectors();
    let cases = vectors["passphrase"].as_array().unwrap();
    assert!(cases.len() >= 2);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let params = Argon2Params {
            memory_kib: case["params"]["memoryKib"].as_u64().unwrap() as u32,
            iterations: case["params"]["iterations"].as_u64().unwrap() as u32,
            parallelism: case["params"]["parallelism"].as_u64().unwrap() as u8,
        };
        let passphrase = case["passphrase"].as_str().unwrap();
        let key = bytes(&case["key"]);
        let wrapped =
            wrap::wrap_with_passphrase_using(&key, passphrase, params, &array(&case["salt"]), &array(&case["nonce"]))
                .unwrap();
        assert_eq!(hex::encode(&wrapped), case["wrapped"].as_str().unwrap(), "{name}");
        assert_eq!(wrap::describe(&wrapped).unwrap(), Wrapping::Passphrase { params }, "{name}");
        assert_eq!(wrap::unwrap_with_passphrase(&wrapped, passphrase).unwrap().as_slice(), key, "{name}");
        if let Some(other) = case["alsoOpensWith"].as_str() {
            assert_ne!(other, passphrase);
            assert_eq!(wrap::unwrap_with_passphrase(&wrapped, other).unwrap().as_slice(), key, "{name}");
        }
        let wrong = format!("{passphrase}!");
        assert_eq!(wrap::unwrap_with_passphrase(&wrapped, &wrong), Err(WrapError::WrongSecret), "{name}");
    }
}

#[test]
fn prf_vectors_wrap_to_the_same_bytes_and_open() {
    let vectors = vectors();
    for case in vectors["prf"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let key = bytes(&case["key"]);
        let output: [u8; 32] = array(&case["prfOutput"]);
        let credential = bytes(&case["credentialId"]);
        let salt: [u8; 32] = array(&case["prfSalt"]);
        let wrapped = wrap::wrap_with_prf_using(&key, &output, &credential, &salt, &array(&case["nonce"])).unwrap();
        assert_eq!(hex::encode(&wrapped), case["wrapped"].as_str().unwrap(), "{name}");
        assert_eq!(wrap::describe(&wrapped).unwrap(), Wrapping::Prf { credential_id: credential, prf_salt: salt });
        assert_eq!(wrap::unwrap_with_prf(&wrapped, &output).unwrap().as_slice(), key, "{name}");
        let mut other = output;
        other[0] ^= 1;
        assert_eq!(wrap::unwrap_with_prf(&wrapped, &other), Err(WrapError::WrongSecret), "{name}");
    }
}

#[test]
fn fresh_wraps_differ_and_debug_shows_no_secret() {
    let key = [7u8; 32];
    let one = wrap::wrap_with_passphrase(&key, "pass phrase", Argon2Params::MINIMUM).unwrap();
    let two = wrap::wrap_with_passphrase(&key, "pass phrase", Argon2Params::MINIMUM).unwrap();
    assert_ne!(one, two, "salt and nonce are fresh");
    assert!(!one.windows(key.len()).any(|w| w == key), "the key shows through");
    let error = wrap::unwrap_with_passphrase(&one, "wrong").unwrap_err();
    assert!(!format!("{error:?} {error}").contains("wrong"));
    assert_eq!(Argon2Params::default(), Argon2Params { memory_kib: 65536, iterations: 3, parallelism: 1 });
}
