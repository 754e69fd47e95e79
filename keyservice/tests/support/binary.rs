//! Running the real `keyservice` binary from tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_keyservice");

/// The `keyservice-cli` binary beside this one, built if this test run has not built it
/// (as `cargo test -p keyservice` alone would not).
pub fn cli_bin() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(BIN).parent().unwrap().to_path_buf();
    if !dir.join("keyservice-cli").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo).args(["build", "-p", "keyservice-client", "--bin", "keyservice-cli"]).status();
        assert!(built.unwrap().success(), "building keyservice-cli");
    }
    let cli = dir.join("keyservice-cli");
    assert!(cli.exists());
    cli
}

/// How long a command [`run`] starts may take before the test fails: a command that
/// hangs (waiting for a lock, a token or a database) fails its test instead of
/// stalling the suite.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// Runs the binary to completion: (exit code, stdout, stderr). Kills it and fails after
/// [`RUN_DEADLINE`], showing what it printed.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!("keyservice {args:?} still ran after {RUN_DEADLINE:?}\nstdout: {stdout}\nstderr: {stderr}");
    };
    (status.code().unwrap_or(-1), stdout, stderr)
}

/// Reads `stream` to its end on a thread of its own, so that a child filling one pipe
/// never blocks while the other is read.
fn drain(mut stream: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A running `keyservice serve`, killed on drop.
pub struct Serving {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub stdout: Vec<String>,
    /// Every line printed on standard output after those.
    pub later_stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every line the server has logged so far.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Stopped with SIGTERM on drop (SIGKILL only if that takes over 5 s): a `--dev`
    /// server removes its temporary directory, master key included, only when it stops
    /// itself.
    pub graceful: bool,
}

impl Serving {
    /// Every line printed on standard output so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        let mut lines = self.stdout.clone();
        lines.extend(self.later_stdout.lock().unwrap().iter().cloned());
        lines
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.graceful && self.child.try_wait().is_ok_and(|status| status.is_none()) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.child.try_wait().is_ok_and(|status| status.is_none()) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops a server with SIGTERM and waits until it has exited, then a second more: the
/// replay floor a restart sets covers the last second served.
pub fn stop(mut server: Serving) {
    let _ = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    let started = Instant::now();
    while server.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1100));
}

/// Starts the binary with `args` and waits for its "listening" log line.
pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> Serving {
    serve_command(Command::new(BIN), args, envs)
}

/// Starts the binary with `args` under `sh`, after the shell commands `setup` (such as
/// `ulimit -n 64` or `umask 022`).
pub fn serve_after(setup: &str, args: &[&str], envs: &[(&str, &str)]) -> Serving {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("{setup} && exec \"$0\" \"$@\"")).arg(BIN);
    serve_command(command, args, envs)
}

/// Starts the binary with `args` as the unprivileged user `nobody` (the tests run as
/// root), as a service account would run it.
pub fn serve_as_nobody(args: &[&str], envs: &[(&str, &str)]) -> Serving {
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
    serve_command(command, args, envs)
}

fn serve_command(mut command: Command, args: &[&str], envs: &[(&str, &str)]) -> Serving {
    let mut child = command
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let mut addr = None;
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for line in stderr.by_ref() {
        let line = line.unwrap();
        logs.lock().unwrap().push(line.clone());
        if line.contains("keyservice listening") {
            addr = Some(listening_address(&line));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no listening line");
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stdout_lines = Vec::new();
    if args.contains(&"--dev") {
        for _ in 0..2 {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            stdout_lines.push(line.trim_end().to_owned());
        }
    }
    // Keep both pipes drained, as a terminal or a log collector would.
    let later_stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let collected_stdout = later_stdout.clone();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            collected_stdout.lock().unwrap().push(line);
        }
    });
    let collected = logs.clone();
    std::thread::spawn(move || {
        for line in stderr.map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    let graceful = args.contains(&"--dev");
    let Some(addr) = addr else {
        let status = child.wait().map(|status| status.to_string()).unwrap_or_default();
        panic!("the server did not log its address ({status}); it said:\n{}", logs.lock().unwrap().join("\n"));
    };
    Serving { child, addr, stdout: stdout_lines, later_stdout, logs, graceful }
}

/// Writes `dir/keyservice.toml`: every file the server keeps under `dir` (data, master
/// key, ledger, admin socket), listening on an ephemeral loopback port, then `extra`.
pub fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("keyservice.toml");
    let file = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {}\nmaster_key_file = {}\nerasure_ledger_file = {}\nadmin_socket = {}\naudit_log_file = {}\n{extra}",
        file("data"),
        file("master.key"),
        file("erasures.jsonl"),
        file("admin.sock"),
        file("audit.jsonl"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The address in a "keyservice listening" log line, human (`address=…`) or JSON.
fn listening_address(line: &str) -> std::net::SocketAddr {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["address"].as_str().expect("the JSON line has an address").parse().unwrap();
    }
    let rest = line.split("address=").nth(1).expect("the line has an address");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}
