//! The shipped deployment files work together: every path the example config writes is
//! writable under the systemd unit's sandbox and created by the container image, and the
//! binary starts on that config as the unit and the image run it (paths mapped into a
//! temporary root) without writing to its read-only configuration directory.

#[path = "support/binary.rs"]
mod binary;
mod support;

use std::path::{Path, PathBuf};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(DEPLOY).join(name)).unwrap()
}

/// The directories the server must be able to write to, for `config`.
fn written_dirs(config: &keyservice::Config) -> Vec<PathBuf> {
    let parent = |p: &Path| p.parent().unwrap().to_path_buf();
    vec![
        config.data_dir.clone(),
        parent(&config.master_key_file),
        parent(&config.erasure_ledger_file),
        parent(&config.audit_log_file),
        parent(&config.admin_socket),
    ]
}

/// The example config, parsed with its secret file stood in by a private temporary one.
fn example_config(secret_dir: &Path) -> keyservice::Config {
    let secret = secret_dir.join("rs-1");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = read("keyservice.toml").replace("/etc/keyservice/secrets/rs-1", secret.to_str().unwrap());
    keyservice::Config::from_toml(&text, |_| None).unwrap()
}

#[test]
fn every_path_the_config_writes_is_writable_under_the_unit_and_in_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(dir.path());
    let unit = read("keyservice.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    assert!(unit.contains("ProtectSystem=strict"), "the unit keeps its sandbox");
    let mut unit_writable: Vec<PathBuf> = value("ReadWritePaths").iter().map(PathBuf::from).collect();
    unit_writable.extend(value("StateDirectory").iter().map(|d| Path::new("/var/lib").join(d)));
    unit_writable.extend(value("RuntimeDirectory").iter().map(|d| Path::new("/run").join(d)));
    let dockerfile = read("Dockerfile");
    let image_dirs: Vec<PathBuf> = dockerfile
        .lines()
        .find(|l| l.contains("for dir in"))
        .expect("the image creates its writable directories in one loop")
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(|w| PathBuf::from(w.trim_end_matches(';')))
        .collect();
    for written in written_dirs(&config) {
        assert!(
            unit_writable.iter().any(|w| written.starts_with(w)),
            "{} is read-only under the unit",
            written.display()
        );
        assert!(image_dirs.iter().any(|d| written.starts_with(d)), "{} is not created in the image", written.display());
        assert!(!written.starts_with("/etc"), "{} would be written in the read-only config", written.display());
    }
    assert!(read("../.dockerignore").lines().any(|l| l.trim() == "target/"), "the build context leaves target/ out");
    assert!(
        dockerfile.contains("KEYSERVICE_METRICS_LISTEN=0.0.0.0:9090"),
        "metrics reachable from the container network"
    );
}

#[test]
fn the_binary_starts_on_the_example_config_in_a_mapped_root() {
    let root = tempfile::tempdir().unwrap();
    let at = |path: &str| root.path().join(path.trim_start_matches('/'));
    // What the image (or the unit's StateDirectory and RuntimeDirectory) provides.
    for dir in ["/var/lib/keyservice", "/var/lib/keyservice-keys", "/run/keyservice", "/etc/keyservice/secrets"] {
        std::fs::create_dir_all(at(dir)).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tls-certificates.sh");
    let tls = root.path().join("made-tls");
    assert!(std::process::Command::new("bash").arg(script).arg(&tls).status().unwrap().success());
    std::fs::create_dir_all(at("/etc/keyservice/tls")).unwrap();
    std::fs::copy(tls.join("server.crt"), at("/etc/keyservice/tls/fullchain.pem")).unwrap();
    std::fs::copy(tls.join("server.key"), at("/etc/keyservice/tls/privkey.pem")).unwrap();
    let secret = at("/etc/keyservice/secrets/rs-1");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef-secret\n").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = read("keyservice.toml").replace("\"/", &format!("\"{}/", root.path().display()));
    let config = at("/etc/keyservice/keyservice.toml");
    std::fs::write(&config, text).unwrap();
    let etc_before = listing(&at("/etc"));

    let server = binary::serve(
        &["serve", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[("KEYSERVICE_METRICS_LISTEN", "127.0.0.1:0")],
    );
    let metrics = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "metrics listening")
        .and_then(|v| v["address"].as_str().map(str::to_owned))
        .expect("the metrics listener logged its address");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ready = runtime.block_on(support::send(metrics.parse().unwrap(), "GET", "/readyz", &[], b""));
    assert_eq!(ready.status, 200, "{}", String::from_utf8_lossy(&ready.body));
    assert!(at("/var/lib/keyservice-keys/master.key").exists(), "the first start made the master key");
    assert!(at("/run/keyservice/admin.sock").exists());
    assert_eq!(listing(&at("/etc")), etc_before, "nothing was written to the configuration directory");
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(listing(&path));
        }
        out.push(path);
    }
    out.sort();
    out
}
