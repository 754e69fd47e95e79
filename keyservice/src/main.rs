//! The `keyservice` binary: parse arguments, set up logging, bind, and run the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyservice::config::{DEV_KEY_ID, DEV_NAMESPACE};
use keyservice::config::{MasterKeySource, Storage};
use keyservice::crypto::master::MASTER_KEY_ENV;
use keyservice::server::{Server, StartError, load_master_key, master_key_source};
use keyservice::{Config, MasterKey, SledStore, admin};

/// Key-escrow service: devices keep their data keys here, signed with Sessionist ss1.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Print a new random credential secret (32 bytes from the OS CSPRNG, base64url).
    GenSecret,
    /// Audit-trail tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Master-key tools.
    #[command(subcommand)]
    MasterKey(MasterKeyCommand),
    /// Write a consistent backup of the store (records stay sealed), through the running
    /// server's admin socket, or directly when the server is stopped.
    Backup {
        /// The backup file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rebuild a store from a backup into a new, empty data directory (server stopped).
    Restore {
        /// The backup file to read.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The data directory to create; must be absent or empty.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// TOML config file, for the master key [default: built-in defaults].
        #[arg(long, env = "KEYSERVICE_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Erase everything held for a user, as the Real Service's `/erase` does: through the
    /// running server's admin socket, or directly when it is stopped. For the user a Real
    /// Service cannot erase itself (on a namespace with `oidc`, one who can no longer log
    /// in at the identity provider).
    Erase {
        /// The user's namespace.
        #[arg(long)]
        namespace: String,
        /// The user's id at the Real Service.
        #[arg(long)]
        user_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Re-wrap every key under a new master key: a key file (created if it does not
    /// exist) or a key in the PKCS#11 token `[master_key]` names (generated if no key
    /// has the label), through the running server's admin socket, or directly when it
    /// is stopped. Idempotent: running it again finishes an interrupted rotation.
    #[command(group(clap::ArgGroup::new("new_key").required(true).args(["new_key_file", "new_key_label"])))]
    RotateMasterKey {
        /// The new master key file (64 hex digits, mode 0600).
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
        /// The label of the new master key in the configured token.
        #[arg(long, value_name = "LABEL")]
        new_key_label: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an audit log's hash chain, through the files rotated from it; exit 1 at the
    /// first altered, removed, inserted or reordered line, or when lines were cut off the
    /// end that the head file (`<log>.head`) records.
    Verify {
        /// The audit log and any files rotated from it (`<log>.<seq>`), in any order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Create the configured master key and print its fingerprint: with `[master_key]`
    /// naming a PKCS#11 token, an AES-256 key generated in the token (sensitive, never
    /// extractable); otherwise the key file. Never replaces a key that exists.
    Init {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a master key's fingerprint (its public id, the one logs and errors name):
    /// of FILE, or else of the configured key (`KEYSERVICE_MASTER_KEY`, or
    /// `master_key_file`). Never prints the key.
    Fingerprint {
        /// A master key file.
        file: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store an operator command works on.
#[derive(clap::Args)]
struct StoreArgs {
    /// TOML config file [default: built-in defaults].
    #[arg(long, env = "KEYSERVICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory; overrides the file's `data_dir` [default: ./keyservice-data].
    #[arg(long, env = "KEYSERVICE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file. Without it (and without --dev) the defaults apply and no
    /// namespace may connect.
    #[arg(long, env = "KEYSERVICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides the file's `listen` [default: 127.0.0.1:8080].
    #[arg(long, env = "KEYSERVICE_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Address of the separate metrics listener; overrides the file's `metrics_listen`.
    #[arg(long, env = "KEYSERVICE_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Data directory; overrides the file's `data_dir` [default: ./keyservice-data; with
    /// --dev: a new temporary directory, removed on exit].
    #[arg(long, env = "KEYSERVICE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Development mode, no config file: a `demo` namespace that loopback may connect to,
    /// with a fresh credential printed once. Not for production.
    #[arg(long, conflicts_with = "config")]
    dev: bool,
}

fn main() -> ExitCode {
    // Everything this process creates (data, backups, logs, ledger, sockets) is for its
    // own user only, whatever umask it was started with.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    match cli.command {
        Command::GenSecret => match keyservice::new_token() {
            Ok(secret) => {
                println!("{}", secret.expose());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => serve(args),
        Command::MasterKey(MasterKeyCommand::Fingerprint { file, store }) => {
            operate(store.config, store.data_dir, |config| async move {
                let (key, source) = match &file {
                    Some(path) => (MasterKey::load(path), path.display().to_string()),
                    None => (load_master_key(&config, false).map(|(key, _)| key), master_key_source(&config)),
                };
                let key = key.map_err(|e| Failure::Usage(e.to_string()))?;
                Ok(format!("{}  {source}", key.fingerprint()))
            })
        }
        Command::MasterKey(MasterKeyCommand::Init { store }) => {
            operate(store.config, store.data_dir, |config| async move {
                tokio::task::spawn_blocking(move || init_master_key(&config))
                    .await
                    .map_err(|e| Failure::Failed(format!("creating the master key failed: {e}")))?
            })
        }
        Command::Audit(AuditCommand::Verify { files }) => match keyservice::audit::verify_series(&files) {
            Ok(verified) => {
                let range = match verified.last_seq {
                    Some(last) => format!("seq {} to {last}", verified.first_seq),
                    None => "empty".to_owned(),
                };
                println!("{} lines in {} file(s), chain intact ({range})", verified.lines, files.len());
                if verified.first_seq > 0 {
                    println!("the chain begins mid-way: the files before seq {} were not given", verified.first_seq);
                }
                match verified.head {
                    Some(seq) => println!("the head file agrees (last synced line: seq {seq})"),
                    None => println!("no head file beside the newest file: lines cut off its end would not be noticed"),
                }
                ExitCode::SUCCESS
            }
            Err(broken) => {
                eprintln!("{broken}");
                ExitCode::FAILURE
            }
        },
        Command::Backup { out, store } => operate(store.config, store.data_dir, |config| async move {
            match admin::backup_online(&config.admin_socket, &out).await {
                Some(outcome) => Ok(outcome?),
                None => {
                    existing_store(&config)?;
                    Ok(admin::backup_offline(&config, &out).await?)
                }
            }
        }),
        Command::Restore { from, data_dir, config } => operate(config, Some(data_dir.clone()), |config| async move {
            let (master, _) = load_master_key(&config, false).map_err(|e| Failure::Usage(e.to_string()))?;
            Ok(admin::restore(&from, &data_dir, &master).await?)
        }),
        Command::Erase { namespace, user_id, store } => operate(store.config, store.data_dir, |config| async move {
            let request = admin::AdminRequest::Erase { namespace: namespace.clone(), user_id: user_id.clone() };
            match admin::request(&config.admin_socket, &request).await {
                Some(outcome) => Ok(outcome?),
                None => {
                    existing_store(&config)?;
                    let (master, _) = load_master_key(&config, false).map_err(|e| Failure::Usage(e.to_string()))?;
                    Ok(admin::erase_offline(&config, &master, &namespace, &user_id).await?)
                }
            }
        }),
        Command::RotateMasterKey { new_key_file, new_key_label, store } => {
            operate(store.config, store.data_dir, |config| async move {
                let new_key_file = new_key_file.as_deref().map(absolute);
                let request = admin::AdminRequest::RotateMasterKey {
                    new_key_file: new_key_file.clone(),
                    new_key_label: new_key_label.clone(),
                };
                match admin::request(&config.admin_socket, &request).await {
                    Some(outcome) => Ok(outcome?),
                    None => {
                        existing_store(&config)?;
                        let target = admin::NewMasterKey::of(new_key_file, new_key_label).map_err(Failure::Usage)?;
                        let (current, (new, created)) = {
                            let (config, target) = (config.clone(), target.clone());
                            tokio::task::spawn_blocking(move || {
                                let current =
                                    load_master_key(&config, false).map_err(|e| Failure::Usage(e.to_string()))?;
                                let new = target.open(config.master_key_token.as_ref())?;
                                Ok::<_, Failure>((current.0, new))
                            })
                            .await
                            .map_err(|e| Failure::Failed(format!("opening the master keys failed: {e}")))??
                        };
                        #[cfg(unix)]
                        if let (admin::NewMasterKey::File(path), true) = (&target, created) {
                            keyservice::crypto::master::give_to_owner_of(path, &config.master_key_file)?;
                        }
                        #[cfg(not(unix))]
                        let _ = created;
                        let message = admin::rotate_offline(&config, &current, &new, &target).await?;
                        Ok(format!("{message} (old key {}, new key {})", current.fingerprint(), new.fingerprint()))
                    }
                }
            })
        }
    }
}

/// Creates the configured master key: in the token `[master_key]` names, else the file.
fn init_master_key(config: &Config) -> Result<String, Failure> {
    if let Some(token) = &config.master_key_token {
        let key = MasterKey::create_in_token(token).map_err(|e| Failure::Usage(e.to_string()))?;
        let source = if config.master_key_source == MasterKeySource::Pkcs11 {
            ""
        } else {
            "; the configuration still says source = \"file\": rotate to it with `keyservice rotate-master-key --new-key-label`"
        };
        return Ok(format!(
            "{}  generated in the token as {:?} (AES-256, sensitive, not extractable){source}",
            key.fingerprint(),
            token.key_label
        ));
    }
    if std::env::var_os(MASTER_KEY_ENV).is_some() {
        return Err(Failure::Usage(format!("the master key comes from {MASTER_KEY_ENV}: there is nothing to create")));
    }
    // Created only if absent, in one step: a file that exists (or appears meanwhile) is
    // read, never replaced.
    let path = &config.master_key_file;
    let exists = |detail: String| {
        Failure::Usage(format!("master_key_file {} exists ({detail}); it is never overwritten", path.display()))
    };
    match MasterKey::load_or_create_telling(path) {
        Ok((key, true)) => Ok(format!(
            "{}  written to {} (mode 0600); back it up offline, apart from the data",
            key.fingerprint(),
            path.display()
        )),
        Ok((key, false)) => Err(exists(format!("fingerprint {}", key.fingerprint()))),
        Err(error) if path.exists() => Err(exists(error.to_string())),
        Err(error) => Err(error.to_string().into()),
    }
}

/// Why an operator command failed: a usage or configuration problem (exit 2), or the
/// command itself (exit 1).
enum Failure {
    Usage(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

/// Refuses to work on a store that does not exist, rather than creating an empty one.
fn existing_store(config: &Config) -> Result<(), Failure> {
    if matches!(config.storage, Storage::Postgres(_)) || SledStore::exists(&config.data_dir) {
        return Ok(());
    }
    Err(Failure::Usage(format!(
        "there is no store in {} (and no server answers on {}); name it with --config or --data-dir",
        config.data_dir.display(),
        config.admin_socket.display()
    )))
}

/// Runs an operator command on the config from `config_path` (or the defaults), with
/// `data_dir` overriding it: prints its message, exit 0; or its error, exit 1; a config
/// or usage error exits 2.
fn operate<F, Fut>(config_path: Option<PathBuf>, data_dir: Option<PathBuf>, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = Result<String, Failure>>,
{
    // The operator commands read what they use: not the namespaces' credentials.
    let loaded = match config_path.as_deref() {
        Some(path) => Config::load_for_operator(path, data_dir),
        None => load_config(None, data_dir),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(config)) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The config file (or the built-in defaults), with `data_dir` in place of its own.
fn load_config(path: Option<&std::path::Path>, data_dir: Option<PathBuf>) -> Result<Config, keyservice::ConfigError> {
    match path {
        Some(path) => Config::load_with_data_dir(path, data_dir),
        None => {
            Ok(Config::for_data_dir(data_dir.unwrap_or_else(|| PathBuf::from(keyservice::config::DEFAULT_DATA_DIR))))
        }
    }
}

/// The server resolves paths from its own working directory; send it absolute ones.
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn serve(args: ServeArgs) -> ExitCode {
    // Kept alive until exit: dropping it removes the --dev data directory.
    let mut dev_dir = None;
    let mut dev_secret = None;
    let config = if args.dev {
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => match tempfile::Builder::new().prefix("keyservice-dev-").tempdir() {
                Ok(dir) => dev_dir.insert(dir).path().join("data"),
                Err(error) => {
                    eprintln!("error: cannot create a temporary data directory: {error}");
                    return ExitCode::FAILURE;
                }
            },
        };
        match Config::dev(data_dir) {
            // The credential is printed once the server listens: a start that fails
            // (a port taken) shows no secret that nothing will accept.
            Ok((config, secret)) => {
                dev_secret = Some(secret);
                config
            }
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        match load_config(args.config.as_deref(), args.data_dir.clone()) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    };
    let mut config = config;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(metrics) = args.metrics_listen {
        config.metrics_listen = Some(metrics);
    }
    // An existing store is never given a new master key: that would only fail later,
    // and leave a stray key behind.
    if matches!(config.storage, Storage::Sled)
        && config.master_key_source == MasterKeySource::File
        && SledStore::exists(&config.data_dir)
        && std::env::var_os(MASTER_KEY_ENV).is_none()
        && !config.master_key_file.exists()
    {
        eprintln!(
            "error: the store in {} exists but its master key file {} does not; set master_key_file (or {MASTER_KEY_ENV}) to the key it was sealed under",
            config.data_dir.display(),
            config.master_key_file.display()
        );
        return ExitCode::from(2);
    }
    // Kept until the end of serve(): dropping it writes the lines still buffered.
    let _log_writer = match keyservice::logwriter::init(config.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start the logging thread: {error}");
            return ExitCode::FAILURE;
        }
    };
    if config.namespaces.is_empty() {
        tracing::warn!("no namespaces are configured: /connect will refuse every caller");
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config_path = if args.dev { None } else { args.config.clone() };
    let result = runtime.block_on(serve_until_stopped(config, config_path, dev_secret));
    drop(dev_dir);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Serves until a signal stops it; in dev mode, prints what a second shell needs.
async fn serve_until_stopped(
    config: Config,
    config_path: Option<PathBuf>,
    dev_secret: Option<keyservice_client::protocol::Secret>,
) -> Result<(), StartError> {
    let data_dir = config.data_dir.clone();
    let running = Server::new(config).with_signals(config_path).start().await?;
    if let Some(secret) = dev_secret {
        println!("dev mode: namespace={DEV_NAMESPACE} key_id={DEV_KEY_ID} secret={}", secret.expose());
        println!("dev mode: data in {}", data_dir.display());
        // What a second shell needs to drive this server with keyservice-cli.
        println!("dev mode: paste this into another shell to use it with keyservice-cli:");
        println!(
            "export KEYSERVICE_URL={}://{} KEYSERVICE_SECRET={}",
            running.scheme(),
            running.addr(),
            secret.expose()
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    running.finished().await.map_err(|error| StartError::Failed(error.to_string()))
}
