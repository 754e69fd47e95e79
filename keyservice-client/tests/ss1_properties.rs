//! Properties of the ss1 header for arbitrary inputs: signing and verifying round-trip,
//! any single-bit change makes verification fail, and parsing never panics.

use keyservice_client::protocol::ss1::{Authorization, NONCE_LEN, Nonce, SignedRequest};
use proptest::prelude::*;

/// Key ids as ss1 carries them: printable, no comma, not starting with a space.
fn key_id() -> impl Strategy<Value = String> {
    "[!-+\\--~][ -+\\--~]{0,60}"
}

fn method() -> impl Strategy<Value = String> {
    "[A-Z]{1,10}"
}

fn nonce() -> impl Strategy<Value = Nonce> {
    proptest::array::uniform32(any::<u8>()).prop_flat_map(|head| {
        proptest::array::uniform32(any::<u8>()).prop_map(move |tail| {
            let mut bytes = [0u8; NONCE_LEN];
            bytes[..32].copy_from_slice(&head);
            bytes[32..].copy_from_slice(&tail);
            Nonce::from_bytes(bytes)
        })
    })
}

fn flip(bytes: &mut [u8], bit: usize) {
    let bit = bit % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sign_then_verify_round_trips(
        key_id in key_id(),
        secret in ".{0,64}",
        method in method(),
        path in "/[^\\r\\n]{0,100}",
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        date in "[ -~]{0,40}",
        nonce in nonce(),
    ) {
        let request = SignedRequest { method: &method, path_and_query: &path, body: &body, date: &date };
        let header = Authorization::sign(&key_id, secret.as_bytes(), nonce, &request).to_string();
        let parsed = Authorization::parse(&header).expect("a signed header parses");
        prop_assert_eq!(parsed.key_id(), key_id.as_str());
        prop_assert!(parsed.verify(secret.as_bytes(), &request));
    }

    #[test]
    fn any_single_bit_change_fails_verification(
        key_id in key_id(),
        secret in "[a-z0-9]{32}",
        path in "/[a-z0-9/?=&]{1,60}",
        body in proptest::collection::vec(any::<u8>(), 1..512),
        bit in any::<usize>(),
        nonce in nonce(),
    ) {
        let date = "Sun, 22 Nov 2026 06:00:00 GMT";
        let request = SignedRequest { method: "PUT", path_and_query: &path, body: &body, date };
        let header = Authorization::sign(&key_id, secret.as_bytes(), nonce, &request);

        let mut changed_body = body.clone();
        flip(&mut changed_body, bit);
        let changed = SignedRequest { body: &changed_body, ..request };
        prop_assert!(!header.verify(secret.as_bytes(), &changed));

        let mut changed_path = path.clone().into_bytes();
        flip(&mut changed_path, bit);
        if let Ok(changed_path) = String::from_utf8(changed_path) {
            let changed = SignedRequest { path_and_query: &changed_path, ..request };
            prop_assert!(!header.verify(secret.as_bytes(), &changed));
        }

        let mut changed_date = date.as_bytes().to_vec();
        flip(&mut changed_date, bit);
        if let Ok(changed_date) = String::from_utf8(changed_date) {
            let changed = SignedRequest { date: &changed_date, ..request };
            prop_assert!(!header.verify(secret.as_bytes(), &changed));
        }

        // A bit flipped anywhere in the header text: either it no longer parses, or it
        // no longer verifies (or it names another key id, which the server looks up).
        let mut text = header.to_string().into_bytes();
        flip(&mut text, bit);
        if let Ok(text) = String::from_utf8(text)
            && let Ok(parsed) = Authorization::parse(&text)
        {
            prop_assert!(parsed.key_id() != key_id || !parsed.verify(secret.as_bytes(), &request));
        }
    }

    #[test]
    fn parsing_never_panics(value in ".{0,400}") {
        let _ = Authorization::parse(&value);
    }

    #[test]
    fn parsing_near_misses_never_panics(
        parts in proptest::collection::vec(("(keyid|hash|nonce|x)", "[ -~]{0,140}"), 0..5),
    ) {
        let value = format!("ss1 {}", parts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "));
        let _ = Authorization::parse(&value);
    }
}
