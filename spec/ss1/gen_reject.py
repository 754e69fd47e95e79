#!/usr/bin/env python3
"""Rejection vectors for the Sessionist ss1 Authorization header.

`headers`: header values a verifier must refuse, one per class of malformed header,
each with the class (`error`) the Rust parser names; a server answers every one with
401 `malformed_authorization`. A value that is not UTF-8 is given as `header_hex`.

`signing`: inputs a signer must refuse rather than sign, because the header it would
make cannot be parsed back (or is no ss1 header at all).

Re-run to regenerate reject.json:

    python3 gen_reject.py > reject.json
"""
import json

HASH = "15622b52c1a45de70bca5102c7af5006cc64008a8e71aaf787361391fcf534590e99b4a19aa305ee32c9ab28661c99ffd33683a13b8c0f6ff7236f6030f86d6f"
NONCE = "73475cb40a568e8da8a045ced110137e159f890ac4da883b6b17dc651b3a8049" * 2
H = "hash=" + HASH
N = "nonce=" + NONCE


def header(*parts):
    return "ss1 " + ", ".join(parts)


HEADERS = [
    ("empty", "", "wrong_scheme"),
    ("another scheme", "Bearer " + H, "wrong_scheme"),
    ("no space after the scheme", "ss1keyid=a, " + H + ", " + N, "wrong_scheme"),
    ("upper-case scheme", "SS1 keyid=a, " + H + ", " + N, "wrong_scheme"),
    ("missing nonce", header("keyid=a", H), "missing_field:nonce"),
    ("missing hash", header("keyid=a", N), "missing_field:hash"),
    ("missing keyid", header(H, N), "missing_field:keyid"),
    ("duplicate keyid", header("keyid=a", "keyid=b", H, N), "duplicate_field:keyid"),
    ("duplicate hash", header("keyid=a", H, "hash=" + "0" * 128, N), "duplicate_field:hash"),
    ("unknown field", header("keyid=a", "realm=x", H, N), "unknown_field"),
    ("a part without =", header("keyid=a", "garbage", H, N), "not_key_value"),
    ("a trailing comma", header("keyid=a", H, N, ""), "not_key_value"),
    ("empty keyid", header("keyid=", H, N), "bad_key_id"),
    ("keyid over 256 bytes", header("keyid=" + "k" * 257, H, N), "bad_key_id"),
    ("upper-case hash", header("keyid=a", "hash=" + HASH.upper(), N), "bad_hash"),
    ("hash not hex", header("keyid=a", "hash=zz", N), "bad_hash"),
    ("hash one byte short", header("keyid=a", "hash=" + HASH[2:], N), "bad_hash"),
    ("nonce one byte short", header("keyid=a", H, "nonce=" + NONCE[2:]), "bad_nonce"),
    ("upper-case nonce", header("keyid=a", H, "nonce=" + NONCE.upper()), "bad_nonce"),
]

SIGNING = [
    ("empty key id", "", NONCE),
    ("key id with a comma", "a,b", NONCE),
    ("key id over 256 bytes", "k" * 257, NONCE),
    ("nonce of 8 bytes", "rs-1", "00" * 8),
]

out = {
    "headers": [{"name": n, "header": h, "error": e} for n, h, e in HEADERS]
    + [{"name": "not UTF-8", "header_hex": (b"ss1 keyid=\xff\xfe, " + H.encode() + b", " + N.encode()).hex(), "error": "not_utf8"}],
    "signing": [{"name": n, "key_id": k, "nonce": nonce} for n, k, nonce in SIGNING],
}
print(json.dumps(out, indent=1, ensure_ascii=False))
