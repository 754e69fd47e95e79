//! The server's parsers never panic, whatever bytes arrive: ss1 headers, JSON bodies,
//! stored records and backups, proxy and precondition headers. (The same entry points
//! are the fuzz targets in `fuzz/`, run for longer where cargo-fuzz is available.)

use keyservice::fuzzing;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ss1_headers(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::ss1(&data);
    }

    #[test]
    fn ss1_like_headers(text in "ss1 ((keyid|hash|nonce)=[0-9a-f ,=]{0,140}){0,4}") {
        fuzzing::ss1(text.as_bytes());
    }

    #[test]
    fn request_bodies(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::request_bodies(&data);
    }

    #[test]
    fn json_like_bodies(text in "\\{(\"(namespace|userId|initTokenHash|x)\":(\"[^\"]{0,20}\"|[0-9e+-]{1,12}|\\[|\\{|null|true),?){0,5}\\}?") {
        fuzzing::request_bodies(text.as_bytes());
    }

    #[test]
    fn stored_records(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::stored_records(&data);
    }

    #[test]
    fn backup_like_files(
        entries in proptest::collection::vec(any::<u8>(), 0..200),
        count in any::<u64>(),
    ) {
        let mut data = b"KSBACKUP\x01".to_vec();
        data.extend_from_slice(&entries);
        data.extend_from_slice(&count.to_be_bytes());
        data.extend_from_slice(&[0u8; 32]);
        fuzzing::stored_records(&data);
    }

    #[test]
    fn request_headers(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::request_headers(&data);
    }

    #[test]
    fn header_like_values(text in "((for=)?\"?\\[?[0-9a-f.:]{0,40}\\]?(:[0-9]{1,5})?\"?[;,] ?){0,4}|(\\*|\"[0-9]{0,25}\"|W/\"1\")(, ?\"[0-9]{1,3}\"){0,3}") {
        fuzzing::request_headers(text.as_bytes());
    }

    #[test]
    fn config_like_files(text in "((listen|data_dir|trusted_proxies|forwarded_header|trusted_hops|min_free_bytes|audit_max_bytes) = (\"[a-z0-9./:-]{0,20}\"|[0-9]{1,12}|\\[\"[0-9./]{0,18}\"\\]|true)\n){0,5}(\\[namespaces\\.[a-z]{1,5}\\]\nallow = \\[\"::1\"\\]\ncredentials = \\[\\{ key_id = \"k\", secret_env = \"FUZZ_SECRET\" \\}\\]\n)?") {
        fuzzing::config(text.as_bytes());
    }

    #[test]
    fn admin_socket_lines(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        fuzzing::admin_socket(&data);
    }
}

proptest! {
    // These read files, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ledgers(lines in proptest::collection::vec("\\{\"at\":[0-9]{1,3},\"namespace\":\"[0-9a-f]{0,64}\",\"user\":\"[0-9a-f]{0,64}\"\\}|[ -~]{0,30}", 0..5)) {
        fuzzing::ledger(lines.join("\n").as_bytes());
    }

    #[test]
    fn audit_logs(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        fuzzing::audit_log(&data);
    }
}
