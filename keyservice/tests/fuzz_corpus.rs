//! Every input of the committed fuzz corpus (`fuzz/corpus/<target>/`), replayed through
//! the function its fuzz target calls: none may panic. This keeps what the fuzzers found
//! as regression cases on the stable toolchain, without building libFuzzer;
//! `scripts/fuzz.sh` runs the fuzzers themselves.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 9] = [
    ("ss1", keyservice::fuzzing::ss1),
    ("request_bodies", keyservice::fuzzing::request_bodies),
    ("stored_records", keyservice::fuzzing::stored_records),
    ("request_headers", keyservice::fuzzing::request_headers),
    ("config", keyservice::fuzzing::config),
    ("admin_socket", keyservice::fuzzing::admin_socket),
    ("backup", keyservice::fuzzing::backup),
    ("ledger", keyservice::fuzzing::ledger),
    ("audit_log", keyservice::fuzzing::audit_log),
];

#[test]
fn every_corpus_input_runs_without_a_panic() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let targets: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(targets.len(), TARGETS.len(), "a fuzz target's corpus is not replayed here: {targets:?}");
    let mut panicked = Vec::new();
    for (name, target) in TARGETS {
        let mut inputs = 0;
        for entry in std::fs::read_dir(corpus.join(name)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            inputs += 1;
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panicked.push(path.display().to_string());
            }
        }
        assert!(inputs >= 5, "the {name} corpus holds only {inputs} inputs");
    }
    assert!(panicked.is_empty(), "these corpus inputs panic: {panicked:?}");
}
