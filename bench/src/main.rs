//! `keyservice-bench`: load for keyservice, measured against a bare hyper baseline.
//!
//! It seeds a store through the library's fast path (no HTTP), starts the real
//! `keyservice` binary on it, and drives it over N keep-alive connections for a fixed
//! time, signing every request with a fresh ss1 nonce so the replay memory sees real
//! traffic. The same generator then drives a bare hyper server that answers a body of
//! the same size: the ratio between the two survives a noisy machine.
//!
//! ```text
//! keyservice-bench run --scenario get --connections 64 --duration 10 --users 10000 --runs 3
//! keyservice-bench soak --duration 60 --connections 64
//! keyservice-bench run --postgres postgres://postgres:pw@127.0.0.1:5432/postgres --nodes 3
//! keyservice-bench run --postgres postgres://postgres:pw@127.0.0.1:5432/postgres --pgbench
//! ```
//!
//! With `--postgres` (a superuser URL; a fresh database is made and dropped), the store
//! is that PostgreSQL and `--nodes` servers share it, each connection going to one node
//! in turn; the database's own CPU is reported beside the nodes'.
//!
//! Reported: requests per second, latency p50/p99/p99.9, errors, the server's CPU time
//! per request (from /proc, all threads) and its peak RSS; `--json` for machines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keyservice::escrow::{Escrow, Policy};
use keyservice::store::Precondition;
use keyservice::{ErasureLedger, MasterKey};
use keyservice_client::protocol::Secret;
use keyservice_client::protocol::ss1::{Authorization, Nonce, SignedRequest};
use serde::Serialize;

const NAMESPACE: &str = "bench";
const KEY_ID: &str = "bench-1";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789abc";
/// Sessions the generator signs with (spread over the seeded users).
const MAX_SESSIONS: u64 = 1024;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure a scenario against keyservice and (for get) the bare-hyper baseline.
    Run(RunArgs),
    /// Run mixed traffic for a while and check errors, memory and file descriptors.
    Soak(SoakArgs),
    /// Internal: serve the bare hyper baseline and print its address.
    Baseline {
        /// Body size of every answer.
        #[arg(long, default_value_t = 32)]
        body_bytes: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
    /// GET /key.
    Get,
    /// Durable PUT /key.
    Put,
    /// init → connect → put → get.
    Flow,
    /// 90 % GET, 10 % PUT.
    Mixed,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::Get)]
    scenario: Scenario,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Users stored before measuring.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// Key size in bytes.
    #[arg(long, default_value_t = 32)]
    key_bytes: usize,
    /// Measurements (the report gives their median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the baseline.
    #[arg(long)]
    no_baseline: bool,
    /// The keyservice binary [default: beside this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
    /// Store in this PostgreSQL server (a superuser URL, password included; the bench
    /// makes a fresh database and drops it afterwards) instead of sled.
    #[arg(long)]
    postgres: Option<String>,
    /// keyservice nodes sharing the database (with `--postgres`).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// With `--postgres`: after each keyservice run, `pgbench -S` (one primary-key read
    /// per transaction, the ceiling for anything that asks the database once) on the
    /// same server with as many connections for as long, reported as `pgbench-S`.
    #[arg(long)]
    pgbench: bool,
    /// Run the server as users do: a request log line for every request (otherwise
    /// switched off to measure keyservice's own work). The audit log is on either way.
    #[arg(long)]
    default_config: bool,
}

#[derive(clap::Args)]
struct SoakArgs {
    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    scenario: Scenario,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of warm-up before the reference measurements (longer than the soak
    /// server's 10 s replay window plus its 16 s bucket).
    #[arg(long, default_value_t = 30)]
    warmup: u64,
    /// The keyservice binary [default: beside this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
struct Measurement {
    target: &'static str,
    scenario: Scenario,
    connections: usize,
    users: u64,
    requests: u64,
    errors: u64,
    requests_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    server_cpu_us_per_request: f64,
    server_peak_rss_mib: f64,
    /// CPU of the database's processes per request (`--postgres` only).
    database_cpu_us_per_request: Option<f64>,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts");
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Soak(args) => soak(args).await,
            Cmd::Baseline { body_bytes } => baseline(body_bytes).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keyservice-bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A server process being measured.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// CPU time of all its threads, from /proc.
    fn cpu(&self) -> Duration {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut total = 0u64;
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Duration::from_nanos(total)
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map(|d| d.count()).unwrap_or(0)
    }
}

fn spawn(mut command: Command, marker: &str) -> Result<Server, Failure> {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let stderr = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let (found, addr_rx) = std::sync::mpsc::channel();
    let marker = marker.to_owned();
    for lines in
        [Box::new(stderr.lines()) as Box<dyn Iterator<Item = std::io::Result<String>> + Send>, Box::new(stdout.lines())]
    {
        let found = found.clone();
        let marker = marker.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains(&marker)
                    && let Some(addr) = line.split("address=").nth(1).and_then(|r| r.split_whitespace().next())
                {
                    let _ = found.send(addr.to_owned());
                }
            }
        });
    }
    let addr = addr_rx.recv_timeout(Duration::from_secs(60)).map_err(|_| "the server did not start")?;
    Ok(Server { child, addr: addr.parse()? })
}

fn server_bin(given: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(path) = given {
        return Ok(path);
    }
    let here = std::env::current_exe()?;
    let beside = here.with_file_name("keyservice");
    if beside.exists() {
        Ok(beside)
    } else {
        Err("no keyservice binary beside this one; build it or pass --server-bin".into())
    }
}

/// Writes the server's config into `dir`: generous limits (the generator is one
/// address), long sessions, no per-request log lines.
fn write_config(dir: &Path, extra: &str, storage: &str) -> Result<PathBuf, Failure> {
    let file = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let text = format!(
        "{extra}listen = \"127.0.0.1:0\"\ndata_dir = {}\nmaster_key_file = {}\nerasure_ledger_file = {}\naudit_log_file = {}\nadmin_socket = {}\n\
         session_ttl_secs = 2592000\nsession_idle_secs = 2592000\ninit_per_minute = 100000000\n\
         auth_failures_per_minute = 100000000\nmax_pending_inits = 100000000\nmax_connections = 4096\n\
         [namespaces.{NAMESPACE}]\nallow = [\"127.0.0.1/32\"]\ncredentials = [ {{ key_id = \"{KEY_ID}\", secret = \"{SECRET}\" }} ]\n\
         connect_per_minute = 100000000\nconnect_users_per_window = 100000000\n{storage}",
        file("data"),
        file("master.key"),
        file("erasures.jsonl"),
        file("audit.jsonl"),
        file("admin.sock"),
    );
    let path = dir.join("keyservice.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Stores `users` users with one key each, and sessions for up to [`MAX_SESSIONS`] of
/// them, straight through the library; returns (session token, init token) pairs.
async fn seed(dir: &Path, config_path: &Path, users: u64, key_bytes: usize) -> Result<Vec<(Secret, Secret)>, Failure> {
    let config = keyservice::Config::load(config_path)?;
    let store = keyservice::store::open(&config.storage, &config.data_dir, &config.node_id).await?;
    let master = MasterKey::load_or_create(&config.master_key_file)?;
    let ledger = ErasureLedger::open(&config.erasure_ledger_file)?;
    let policy = Policy { max_key_versions: 1_000_000, session_idle_secs: 30 * 86_400, ..Policy::from(&config) };
    let escrow = Arc::new(Escrow::open(store.clone(), &master, ledger, policy).await?);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let started = Instant::now();
    let workers = 256u64;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let escrow = escrow.clone();
        tasks.push(tokio::spawn(async move {
            let mut sessions = Vec::new();
            let mut i = worker;
            while i < users {
                let user = escrow.user(NAMESPACE, &format!("user-{i}"));
                let key = zeroize::Zeroizing::new(vec![(i % 251) as u8; key_bytes]);
                escrow.store_key(&user, "application/octet-stream".into(), key, &Precondition::None, now).await?;
                if i < MAX_SESSIONS {
                    let init = keyservice::new_token()?;
                    let token = keyservice::new_token()?;
                    escrow.add_init(&init, now + 3600).await?;
                    let digest = keyservice::crypto::init_digest(&init);
                    escrow.connect(&digest, user, "bench", &token, now, now + 30 * 86_400).await?;
                    sessions.push((token, init));
                }
                i += workers;
            }
            Ok::<_, Failure>(sessions)
        }));
    }
    let mut sessions = Vec::new();
    for task in tasks {
        sessions.extend(task.await??);
    }
    store.flush().await?;
    drop(escrow);
    eprintln!("seeded {users} users in {:.1} s ({})", started.elapsed().as_secs_f64(), dir.display());
    Ok(sessions)
}

/// One operation of a scenario.
enum Op {
    Get,
    Put,
    Flow,
}

struct Load {
    histogram: Histogram<u64>,
    requests: u64,
    errors: u64,
}

/// Drives `addr` with `scenario` over `connections` for `duration`.
async fn load(
    addrs: &[SocketAddr],
    sessions: Arc<Vec<(Secret, Secret)>>,
    scenario: Scenario,
    connections: usize,
    duration: Duration,
    key_bytes: usize,
) -> Load {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let sessions = sessions.clone();
        let addr = addrs[c % addrs.len()];
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
            let (mut requests, mut errors) = (0u64, 0u64);
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return (histogram, 0, 1) };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
                return (histogram, 0, 1);
            };
            tokio::spawn(connection);
            let (session, init) = &sessions[c % sessions.len()];
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let op = match scenario {
                    Scenario::Get => Op::Get,
                    Scenario::Put => Op::Put,
                    Scenario::Mixed if n.is_multiple_of(10) => Op::Put,
                    Scenario::Mixed => Op::Get,
                    Scenario::Flow => Op::Flow,
                };
                let started = Instant::now();
                let ok = match op {
                    Op::Get => {
                        exchange(&mut sender, addr, "GET", "/key", vec![], session.expose(), init.expose()).await
                    }
                    Op::Put => {
                        let body = vec![(n % 251) as u8; key_bytes];
                        exchange(&mut sender, addr, "PUT", "/key", body, session.expose(), init.expose()).await
                    }
                    Op::Flow => flow(&mut sender, addr, c, n, key_bytes).await,
                };
                let _ = histogram.record(started.elapsed().as_micros() as u64);
                requests += 1;
                if !ok {
                    errors += 1;
                }
            }
            (histogram, requests, errors)
        }));
    }
    let mut total = Load {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        requests: 0,
        errors: 0,
    };
    for task in tasks {
        if let Ok((histogram, requests, errors)) = task.await {
            let _ = total.histogram.add(&histogram);
            total.requests += requests;
            total.errors += errors;
        }
    }
    total
}

/// The Authorization and Date headers of a request signed now with a fresh nonce.
fn sign(method: &str, path: &str, body: &[u8], key_id: &str, secret: &str) -> Option<(String, String)> {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let nonce = Nonce::random().ok()?;
    let request = SignedRequest { method, path_and_query: path, body, date: &date };
    Some((Authorization::sign(key_id, secret.as_bytes(), nonce, &request).to_string(), date))
}

/// One signed request; whether it got a 2xx.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
    key_id: &str,
    secret: &str,
) -> bool {
    let Some((authorization, date)) = sign(method, path, &body, key_id, secret) else { return false };
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", authorization)
        .header("date", date);
    if !body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let Ok(request) = request.body(Full::new(Bytes::from(body))) else { return false };
    match sender.send_request(request).await {
        Ok(response) => {
            let ok = response.status().is_success();
            ok & response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// The whole flow for a fresh user: init, connect, put, get (counted as one operation).
async fn flow(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    c: usize,
    n: u64,
    key_bytes: usize,
) -> bool {
    let request = http::Request::builder()
        .method("POST")
        .uri("/init")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()));
    let Ok(request) = request else { return false };
    let Ok(response) = sender.send_request(request).await else { return false };
    let Ok(body) = response.into_body().collect().await else { return false };
    let Ok(init) = serde_json::from_slice::<keyservice_client::protocol::wire::InitResponse>(&body.to_bytes()) else {
        return false;
    };
    let connect = serde_json::json!({
        "namespace": NAMESPACE,
        "userId": format!("flow-{c}-{n}"),
        "initTokenHash": keyservice_client::protocol::wire::init_token_hash(&init.init_token),
    })
    .to_string()
    .into_bytes();
    let Some((authorization, date)) = sign("POST", "/connect", &connect, KEY_ID, SECRET) else { return false };
    let request = http::Request::builder()
        .method("POST")
        .uri("/connect")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", authorization)
        .header("date", date)
        .body(Full::new(Bytes::from(connect)));
    let Ok(request) = request else { return false };
    let Ok(response) = sender.send_request(request).await else { return false };
    let Ok(body) = response.into_body().collect().await else { return false };
    let Ok(grant) = serde_json::from_slice::<keyservice_client::protocol::wire::ConnectResponse>(&body.to_bytes())
    else {
        return false;
    };
    let (token, secret) = (grant.session_token.expose(), init.init_token.expose());
    exchange(sender, addr, "PUT", "/key", vec![7; key_bytes], token, secret).await
        && exchange(sender, addr, "GET", "/key", vec![], token, secret).await
}

fn measurement(
    target: &'static str,
    args: &RunArgs,
    load: &Load,
    cpu: Duration,
    servers: &[Server],
    seconds: f64,
    database_cpu: Option<Duration>,
) -> Measurement {
    let h = &load.histogram;
    Measurement {
        target,
        scenario: args.scenario,
        connections: args.connections,
        users: args.users,
        requests: load.requests,
        errors: load.errors,
        requests_per_second: load.requests as f64 / seconds,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        server_cpu_us_per_request: cpu.as_secs_f64() * 1e6 / load.requests.max(1) as f64,
        server_peak_rss_mib: servers.iter().map(|s| s.status_kib("VmHWM:")).max().unwrap_or(0) as f64 / 1024.0,
        database_cpu_us_per_request: database_cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / load.requests.max(1) as f64),
    }
}

/// CPU time of every process named `postgres` on this machine (the database under
/// test: run the bench where no other PostgreSQL works): the live ones' own, plus what
/// the postmaster's children that already ended used (its `cutime` and `cstime`, in
/// Linux's 100 ticks a second), so that backends of connections that closed count too.
fn postgres_cpu() -> Duration {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let path = entry.path();
        if !std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "postgres") {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(path.join("schedstat")) {
            let nanos = text.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            total += Duration::from_nanos(nanos);
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("stat"))
            && let Some((_, after_name)) = stat.rsplit_once(')')
        {
            // Fields after the name start at field 3; cutime and cstime are 16 and 17.
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let ticks: u64 = fields.get(13..15).into_iter().flatten().filter_map(|f| f.parse::<u64>().ok()).sum();
            total += Duration::from_millis(ticks * 10);
        }
    }
    total
}

async fn measure(
    target: &'static str,
    servers: &[Server],
    args: &RunArgs,
    sessions: Arc<Vec<(Secret, Secret)>>,
) -> Measurement {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let cpu = || servers.iter().map(Server::cpu).sum::<Duration>();
    let on_postgres = args.postgres.is_some() && target == "keyservice";
    // A short warm-up, then the measured window.
    let _ =
        load(&addrs, sessions.clone(), args.scenario, args.connections, Duration::from_secs(1), args.key_bytes).await;
    let cpu_before = cpu();
    let database_before = postgres_cpu();
    let started = Instant::now();
    let result =
        load(&addrs, sessions, args.scenario, args.connections, Duration::from_secs(args.duration), args.key_bytes)
            .await;
    let seconds = started.elapsed().as_secs_f64();
    let database = on_postgres.then(|| postgres_cpu().saturating_sub(database_before));
    measurement(target, args, &result, cpu().saturating_sub(cpu_before), servers, seconds, database)
}

async fn run(args: RunArgs) -> Result<(), Failure> {
    let bin = server_bin(args.server_bin.clone())?;
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    if args.nodes == 0 || (args.nodes > 1 && args.postgres.is_none()) {
        return Err("--nodes above 1 needs --postgres (nodes share a database)".into());
    }
    if args.pgbench && args.postgres.is_none() {
        return Err("--pgbench needs --postgres".into());
    }
    let database = match &args.postgres {
        Some(url) => Some(BenchDatabase::create(url, dir.path()).await?),
        None => None,
    };
    if let (true, Some(database)) = (args.pgbench, &database) {
        database.pgbench_init()?;
    }
    let storage = database.as_ref().map(BenchDatabase::storage_toml).unwrap_or_default();
    let config = write_config(dir.path(), "", &storage)?;
    let sessions = Arc::new(seed(dir.path(), &config, args.users.max(1), args.key_bytes).await?);

    let mut results = Vec::new();
    for run in 0..args.runs {
        let mut servers = Vec::new();
        for node in 0..args.nodes {
            // Nodes share the database and the master key; each has its own files.
            let node_config = if node == 0 {
                config.clone()
            } else {
                let node_dir = dir.path().join(format!("node-{node}"));
                std::fs::create_dir_all(&node_dir)?;
                std::fs::copy(dir.path().join("master.key"), node_dir.join("master.key"))?;
                write_config(&node_dir, &format!("node_id = \"node-{node}\"\n"), &storage)?
            };
            let mut command = Command::new(&bin);
            command
                .args(["serve", "--config", node_config.to_str().ok_or("a UTF-8 path")?])
                .env("RUST_LOG", if args.default_config { "info" } else { "info,keyservice::request=off" });
            servers.push(spawn(command, "keyservice listening")?);
        }
        let measured = measure("keyservice", &servers, &args, sessions.clone()).await;
        eprintln!("run {}: keyservice {:.0} req/s", run + 1, measured.requests_per_second);
        results.push(measured);
        drop(servers);
        if let (true, Some(database)) = (args.pgbench, &database) {
            let measured = database.pgbench_select(&args)?;
            eprintln!("run {}: pgbench -S {:.0} tps", run + 1, measured.requests_per_second);
            results.push(measured);
        }
        // A restart refuses requests dated in the last second it served.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        if !args.no_baseline && matches!(args.scenario, Scenario::Get | Scenario::Mixed) {
            let mut command = Command::new(std::env::current_exe()?);
            command.args(["baseline", "--body-bytes", &args.key_bytes.to_string()]);
            let baseline = [spawn(command, "baseline listening")?];
            let measured = measure("baseline", &baseline, &args, sessions.clone()).await;
            eprintln!("run {}: baseline {:.0} req/s", run + 1, measured.requests_per_second);
            results.push(measured);
        }
    }
    report(&args, &results);
    if let Some(database) = database {
        database.drop_database().await?;
    }
    Ok(())
}

/// A fresh database for one bench run.
struct BenchDatabase {
    superuser: String,
    name: String,
    url: String,
    password_file: PathBuf,
}

impl BenchDatabase {
    async fn create(superuser: &str, dir: &Path) -> Result<Self, Failure> {
        let config: tokio_postgres::Config = superuser.parse()?;
        let password = String::from_utf8(config.get_password().ok_or("the --postgres URL needs a password")?.to_vec())?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => return Err("the --postgres URL needs a TCP host".into()),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().ok_or("the --postgres URL needs a user")?;
        let name = format!("ksbench_{}", std::process::id());
        let (client, connection) = tokio_postgres::connect(superuser, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await?;
        client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        let password_file = dir.join("db-password");
        std::fs::write(&password_file, password)?;
        let mut permissions = std::fs::metadata(&password_file)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
        std::fs::set_permissions(&password_file, permissions)?;
        Ok(Self {
            superuser: superuser.to_owned(),
            url: format!("postgres://{user}@{host}:{port}/{name}"),
            name,
            password_file,
        })
    }

    fn storage_toml(&self) -> String {
        format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"{}\"\npassword_file = {:?}\npool_size = 32\n",
            self.url,
            self.password_file.display().to_string()
        )
    }

    /// `pgbench` from the server's installation (its `bin` beside `initdb`), or PATH's.
    fn pgbench_command(&self) -> Result<Command, Failure> {
        let installed = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("bin/pgbench"))
            .filter(|path| path.exists())
            .max();
        let mut command = Command::new(installed.unwrap_or_else(|| PathBuf::from("pgbench")));
        let config: tokio_postgres::Config = self.superuser.parse()?;
        let password = String::from_utf8(config.get_password().unwrap_or_default().to_vec())?;
        command.env("PGPASSWORD", password);
        Ok(command)
    }

    /// `pgbench -i` into the bench database (its tables are `pgbench_*`, beside ours).
    fn pgbench_init(&self) -> Result<(), Failure> {
        let output = self
            .pgbench_command()?
            .args(["-i", "-q", "-s", "10", "-d", &self.url])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pgbench: {e}"))?;
        if !output.status.success() {
            return Err(format!("pgbench -i failed: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
        Ok(())
    }

    /// `pgbench -S -n -c <connections> -T <duration>`: its tps and the database's CPU per
    /// transaction (pgbench's own CPU, like the load generator's, is not counted).
    fn pgbench_select(&self, args: &RunArgs) -> Result<Measurement, Failure> {
        let database_before = postgres_cpu();
        let output = self
            .pgbench_command()?
            .args(["-S", "-n", "-M", "prepared", "-j", "2"])
            .args(["-c", &args.connections.to_string(), "-T", &args.duration.to_string(), "-d", &self.url])
            .output()
            .map_err(|e| format!("cannot run pgbench: {e}"))?;
        let database = postgres_cpu().saturating_sub(database_before);
        let text = String::from_utf8_lossy(&output.stdout);
        let number = |prefix: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        };
        let (Some(tps), Some(transactions), true) =
            (number("tps ="), number("number of transactions actually processed:"), output.status.success())
        else {
            return Err(format!("pgbench -S failed: {}{}", text, String::from_utf8_lossy(&output.stderr)).into());
        };
        let latency_us = number("latency average =").map_or(0, |ms| (ms * 1000.0) as u64);
        Ok(Measurement {
            target: "pgbench-S",
            scenario: args.scenario,
            connections: args.connections,
            users: 0,
            requests: transactions as u64,
            errors: 0,
            requests_per_second: tps,
            p50_us: latency_us,
            p99_us: 0,
            p999_us: 0,
            server_cpu_us_per_request: 0.0,
            server_peak_rss_mib: 0.0,
            database_cpu_us_per_request: Some(database.as_secs_f64() * 1e6 / transactions.max(1.0)),
        })
    }

    async fn drop_database(self) -> Result<(), Failure> {
        let (client, connection) = tokio_postgres::connect(&self.superuser, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await?;
        Ok(())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

fn report(args: &RunArgs, results: &[Measurement]) {
    if args.json {
        println!("{}", serde_json::json!({ "runs": results }));
        return;
    }
    println!(
        "{:<10} {:>6} {:>5} {:>9} {:>12} {:>8} {:>8} {:>9} {:>7} {:>10} {:>9}",
        "target", "scen.", "conn", "users", "req/s", "p50 µs", "p99 µs", "p99.9 µs", "errors", "cpu µs/req", "rss MiB"
    );
    for r in results {
        println!(
            "{:<10} {:>6} {:>5} {:>9} {:>12.0} {:>8} {:>8} {:>9} {:>7} {:>10.1} {:>9.1}",
            r.target,
            format!("{:?}", r.scenario).to_lowercase(),
            r.connections,
            r.users,
            r.requests_per_second,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.errors,
            r.server_cpu_us_per_request,
            r.server_peak_rss_mib
        );
    }
    let of = |target: &str, f: fn(&Measurement) -> f64| {
        median(results.iter().filter(|r| r.target == target).map(f).collect())
    };
    let ks = of("keyservice", |r| r.requests_per_second);
    println!(
        "median keyservice: {ks:.0} req/s, p99 {:.0} µs, cpu {:.1} µs/req, peak rss {:.1} MiB",
        of("keyservice", |r| r.p99_us as f64),
        of("keyservice", |r| r.server_cpu_us_per_request),
        of("keyservice", |r| r.server_peak_rss_mib)
    );
    if results.iter().any(|r| r.database_cpu_us_per_request.is_some()) {
        println!(
            "median database cpu: {:.1} µs/req ({} node(s) on PostgreSQL)",
            of("keyservice", |r| r.database_cpu_us_per_request.unwrap_or(0.0)),
            args.nodes
        );
    }
    let pgbench = of("pgbench-S", |r| r.requests_per_second);
    if pgbench > 0.0 {
        println!(
            "median pgbench -S: {pgbench:.0} tps, database cpu {:.1} µs/transaction; keyservice/pgbench -S {:.2} (p50 column: pgbench's average latency)",
            of("pgbench-S", |r| r.database_cpu_us_per_request.unwrap_or(0.0)),
            ks / pgbench
        );
    }
    let base = of("baseline", |r| r.requests_per_second);
    if base > 0.0 {
        println!(
            "median baseline: {base:.0} req/s, cpu {:.1} µs/req; keyservice/baseline throughput {:.0} %",
            of("baseline", |r| r.server_cpu_us_per_request),
            100.0 * ks / base
        );
    }
}

async fn soak(args: SoakArgs) -> Result<(), Failure> {
    let bin = server_bin(args.server_bin)?;
    let dir = tempfile::tempdir_in(std::env::current_dir()?)?;
    // The replay memory holds every request for the skew window and a bucket, so the
    // server reaches its steady size only after that: a 10 s window lets the warm-up
    // cover it.
    let config = write_config(dir.path(), "max_clock_skew_secs = 10\n", "")?;
    let sessions = Arc::new(seed(dir.path(), &config, 1000, 32).await?);
    let mut command = Command::new(&bin);
    command
        .args(["serve", "--config", config.to_str().ok_or("a UTF-8 path")?])
        .env("RUST_LOG", "info,keyservice::request=off");
    let server = spawn(command, "keyservice listening")?;
    let warm =
        load(&[server.addr], sessions.clone(), args.scenario, args.connections, Duration::from_secs(args.warmup), 32)
            .await;
    // The reference is the high-water mark of the warm-up: the replay memory drops a
    // whole date bucket at a time, so the resident size saws up and down by a bucket.
    let (rss_warm, fds_warm) = (server.status_kib("VmHWM:"), server.open_fds());
    let main =
        load(&[server.addr], sessions, args.scenario, args.connections, Duration::from_secs(args.duration), 32).await;
    let (rss_end, fds_end) = (server.status_kib("VmRSS:"), server.open_fds());
    let growth = 100.0 * (rss_end as f64 - rss_warm as f64) / rss_warm.max(1) as f64;
    println!(
        "soak: {} s at {} connections, {} requests, {} errors; peak RSS {:.1} MiB by the end of warm-up, RSS {:.1} MiB at the end ({growth:+.1} %); open fds {fds_warm} → {fds_end}",
        args.duration,
        args.connections,
        warm.requests + main.requests,
        warm.errors + main.errors,
        rss_warm as f64 / 1024.0,
        rss_end as f64 / 1024.0,
    );
    let ok = warm.errors + main.errors == 0 && growth <= 10.0 && fds_end <= fds_warm + 8;
    if ok { Ok(()) } else { Err("soak failed: errors, memory growth over 10 %, or leaking file descriptors".into()) }
}

/// A bare hyper 1 server answering every request with a body of `body_bytes`.
async fn baseline(body_bytes: usize) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("baseline listening address={}", listener.local_addr()?);
    let body = Bytes::from(vec![7u8; body_bytes]);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
