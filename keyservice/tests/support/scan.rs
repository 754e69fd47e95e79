//! Scanning what a copy of the disk holds for secrets, in every encoding the code uses.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Every encoding of `value` the code uses: raw, hex (both cases), and standard and
/// URL-safe base64 at each of the three alignments a value can have inside a longer
/// encoded string.
pub fn encodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![value.to_vec(), hex::encode(value).into_bytes(), hex::encode_upper(value).into_bytes()];
    for shift in 0..3usize {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(value);
        for engine in [&STANDARD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&shifted);
            // Drop the characters that also encode the shift bytes or the padding.
            let start = (shift * 4).div_ceil(3);
            let end = encoded.trim_end_matches('=').len().saturating_sub(2);
            if end > start + 8 {
                out.push(encoded.as_bytes()[start..end].to_vec());
            }
        }
    }
    out
}

/// Every needle found, in any of its [`encodings`], in the files under `dir` but not
/// under `skip`: "name in file".
pub fn scan(dir: &Path, skip: &[&Path], needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if skip.contains(&path.as_path()) {
            continue;
        }
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        files += 1;
        found.extend(scan_bytes(&std::fs::read(&path).unwrap(), &path.display().to_string(), needles));
    }
    assert!(files >= 2, "scanned only {files} files");
    found
}

/// Every needle found in `bytes`, in any of its [`encodings`]; `name_of` names them.
pub fn scan_bytes(bytes: &[u8], name_of: &str, needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, value) in needles {
        for encoding in encodings(value) {
            if bytes.windows(encoding.len()).any(|w| w == encoding.as_slice()) {
                found.push(format!("{name} in {name_of}"));
            }
        }
    }
    found
}
