//! The README's shell walkthrough, run as written against `keyservice serve --dev`, with
//! the export line the server prints pasted in, as a newcomer would.

#[path = "support/binary.rs"]
mod binary;

use std::path::PathBuf;
use std::process::Command;

/// The shell block between the walkthrough markers of README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("<!-- walkthrough").expect("the README marks its walkthrough");
    let block = &readme[start..];
    let body = &block[block.find("```sh\n").unwrap() + 6..];
    body[..body.find("```").unwrap()].to_owned()
}

/// The directory holding both binaries.
fn binaries() -> PathBuf {
    binary::cli_bin().parent().unwrap().to_path_buf()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let bin = binaries();
    let server = binary::serve(&["serve", "--dev", "--listen", "127.0.0.1:0"], &[]);
    // The two lines the binary test helper read, then the ones to paste.
    let export = wait_for_export(&server);
    let work = tempfile::tempdir().unwrap();
    let script = format!("set -euo pipefail\n{export}\n{}", walkthrough());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env("PATH", path)
        .env_remove("KEYSERVICE_URL")
        .env_remove("KEYSERVICE_SECRET")
        .env_remove("KEYSERVICE_INIT_TOKEN")
        .env_remove("KEYSERVICE_SESSION_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("the key came back"), "{stdout}");
}

/// The `export …` line `serve --dev` prints once it listens.
fn wait_for_export(server: &binary::Serving) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(line) = server.stdout_lines().into_iter().find(|l| l.starts_with("export KEYSERVICE_URL=")) {
            return line;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no export line: {:?}", server.stdout);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
