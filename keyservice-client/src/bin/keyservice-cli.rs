//! `keyservice-cli`: the keyservice flow from a shell script.
//!
//! Secrets never go on the command line, where any user could read them in the process
//! list: the credential secret comes from `KEYSERVICE_SECRET` or `--secret-file`, the
//! init token from `KEYSERVICE_INIT_TOKEN` or `--init-token-file` (or standard input for
//! `hash-token`), and the session token from `KEYSERVICE_SESSION_TOKEN` or
//! `--session-token-file`.
//!
//! Exit codes: 0 success; 1 any other failure; 2 usage error; 3 authentication or
//! authorization refused (401, 403); 4 not found (404, 410); 5 network failure or
//! timeout; 6 precondition failed (412).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Parser, Subcommand};
use keyservice_client::protocol::Secret;
use keyservice_client::{Client, Condition, Credential, Error, ErrorKind, InitToken};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_AUTH: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;
const EXIT_NETWORK: u8 = 5;
const EXIT_PRECONDITION: u8 = 6;

/// Command-line client of keyservice, for both a device and a Real Service.
///
/// Exit codes: 0 success, 1 other failure, 2 usage error, 3 authentication or
/// authorization refused, 4 not found, 5 network failure or timeout, 6 precondition
/// failed.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The keyservice URL, such as `https://keys.example.com`.
    #[arg(long, env = "KEYSERVICE_URL", global = true)]
    url: Option<String>,
    /// Allow http:// to a host that is not loopback (never on an untrusted network).
    #[arg(long, global = true)]
    allow_http: bool,
    /// PEM bundle of the CA certificates to trust [default: the platform's].
    #[arg(long, value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, value_name = "SECS", default_value_t = 30, global = true)]
    timeout: u64,
    /// Print machine-readable JSON instead of plain values.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Device: get a new init token (printed on standard output).
    Init,
    /// Device: print the initTokenHash of the init token, to hand to the Real Service.
    HashToken {
        /// File holding the init token [default: KEYSERVICE_INIT_TOKEN, else standard input].
        #[arg(long, value_name = "FILE")]
        init_token_file: Option<PathBuf>,
    },
    /// Real Service: connect a device's init token for a user; prints the session token.
    Connect {
        /// The namespace the credential belongs to.
        #[arg(long)]
        namespace: String,
        /// The user the device's session will belong to.
        #[arg(long)]
        user_id: String,
        /// The device's initTokenHash.
        #[arg(long)]
        init_token_hash: String,
        /// The credential's key id.
        #[arg(long)]
        key_id: String,
        /// File holding the credential secret [default: KEYSERVICE_SECRET].
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Device: store a new version of the key; prints its version number.
    Put {
        /// File with the key bytes, or - for standard input [default: -].
        file: Option<PathBuf>,
        /// Content-Type to store with the key [default: application/octet-stream].
        #[arg(long)]
        content_type: Option<String>,
        /// Write only if the latest version is N.
        #[arg(long, value_name = "N", conflicts_with = "if_none_match")]
        if_match: Option<u64>,
        /// Write only if there is no key yet.
        #[arg(long)]
        if_none_match: bool,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Device: read the key (the latest version unless --version).
    Get {
        /// Read this version instead of the latest.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// Write the key here (created with mode 0600) [default: standard output].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        session: SessionArgs,
    },
}

#[derive(Args)]
struct SessionArgs {
    /// File holding the session token [default: KEYSERVICE_SESSION_TOKEN].
    #[arg(long, value_name = "FILE")]
    session_token_file: Option<PathBuf>,
    /// File holding the init token [default: KEYSERVICE_INIT_TOKEN].
    #[arg(long, value_name = "FILE")]
    init_token_file: Option<PathBuf>,
}

/// Why the command failed: the message (one line) and the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), code: EXIT_USAGE }
    }

    fn io(what: &str, error: std::io::Error) -> Self {
        Self { message: format!("{what}: {error}"), code: EXIT_FAILURE }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        let code = match error.kind() {
            ErrorKind::Unauthorized | ErrorKind::Forbidden => EXIT_AUTH,
            ErrorKind::NotFound => EXIT_NOT_FOUND,
            ErrorKind::Network | ErrorKind::Timeout => EXIT_NETWORK,
            ErrorKind::PreconditionFailed => EXIT_PRECONDITION,
            ErrorKind::Config => EXIT_USAGE,
            _ => EXIT_FAILURE,
        };
        Self { message: error.to_string(), code }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("keyservice-cli: cannot start: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let line = failure.message.replace(['\n', '\r'], " ");
            eprintln!("keyservice-cli: {line}");
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let json = cli.json;
    if let Command::HashToken { init_token_file } = &cli.command {
        let token = match init_token_file {
            Some(path) => read_secret_file(path)?,
            None => match std::env::var("KEYSERVICE_INIT_TOKEN") {
                Ok(value) => Secret::new(value),
                Err(_) => read_secret_stdin()?,
            },
        };
        let hash = InitToken::from_secret(token).hash();
        return print(json, &serde_json::json!({ "initTokenHash": hash }), &hash);
    }

    let client = client(&cli)?;
    match cli.command {
        Command::HashToken { .. } => Ok(()),
        Command::Init => {
            let token = client.init().await?;
            let value = serde_json::json!({
                "initToken": token.secret().expose(),
                "expiresAt": token.expires_at(),
                "initTokenHash": token.hash(),
            });
            print(json, &value, token.secret().expose())
        }
        Command::Connect { namespace, user_id, init_token_hash, key_id, secret_file } => {
            let secret = secret_from(secret_file.as_deref(), "KEYSERVICE_SECRET", "--secret-file")?;
            let grant = client
                .real_service(Credential::new(key_id, secret))
                .connect(&namespace, &user_id, &init_token_hash)
                .await?;
            let value =
                serde_json::json!({ "sessionToken": grant.session_token.expose(), "expiresAt": grant.expires_at });
            print(json, &value, grant.session_token.expose())
        }
        Command::Put { file, content_type, if_match, if_none_match, session } => {
            let bytes = zeroize::Zeroizing::new(match file.as_deref() {
                None => read_stdin()?,
                Some(path) if path == Path::new("-") => read_stdin()?,
                Some(path) => {
                    std::fs::read(path).map_err(|e| Failure::io(&format!("cannot read {}", path.display()), e))?
                }
            });
            let condition = match (if_match, if_none_match) {
                (Some(version), _) => Condition::IfMatch(version),
                (None, true) => Condition::IfNoneMatch,
                (None, false) => Condition::None,
            };
            let session = open_session(&client, &session)?;
            let version = session.put_key(&bytes, content_type.as_deref(), condition).await?;
            print(json, &serde_json::json!({ "version": version }), &version.to_string())
        }
        Command::Get { version, output, session } => {
            let session = open_session(&client, &session)?;
            let key = match version {
                Some(version) => session.get_key_version(version).await?,
                None => session.get_key().await?,
            };
            if json {
                let value = serde_json::json!({
                    "version": key.version,
                    "contentType": key.content_type,
                    "key": base64::engine::general_purpose::STANDARD.encode(key.bytes()),
                });
                return print(true, &value, "");
            }
            match output {
                Some(path) => write_private(&path, key.bytes()),
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(key.bytes())
                        .and_then(|()| stdout.flush())
                        .map_err(|e| Failure::io("cannot write the key", e))
                }
            }
        }
    }
}

fn client(cli: &Cli) -> Result<Client, Failure> {
    let url = cli.url.as_deref().ok_or_else(|| Failure::usage("--url (or KEYSERVICE_URL) is required"))?;
    let mut builder =
        Client::builder(url).allow_insecure_http(cli.allow_http).timeout(Duration::from_secs(cli.timeout.max(1)));
    if let Some(path) = &cli.ca_file {
        let pem = std::fs::read(path).map_err(|e| Failure::io(&format!("cannot read {}", path.display()), e))?;
        builder = builder.ca_certificates_pem(pem);
    }
    Ok(builder.build()?)
}

fn open_session(client: &Client, args: &SessionArgs) -> Result<keyservice_client::Session, Failure> {
    let session_token =
        secret_from(args.session_token_file.as_deref(), "KEYSERVICE_SESSION_TOKEN", "--session-token-file")?;
    let init_token = secret_from(args.init_token_file.as_deref(), "KEYSERVICE_INIT_TOKEN", "--init-token-file")?;
    Ok(client.session(session_token, &InitToken::from_secret(init_token)))
}

fn secret_from(file: Option<&Path>, env: &str, flag: &str) -> Result<Secret, Failure> {
    match file {
        Some(path) => read_secret_file(path),
        None => std::env::var(env).map(Secret::new).map_err(|_| Failure::usage(format!("set {env} or give {flag}"))),
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::io(&format!("cannot read {}", path.display()), e))?;
    let secret = Secret::new(text.trim_end_matches(['\r', '\n']));
    drop(zeroize::Zeroizing::new(text));
    Ok(secret)
}

fn read_secret_stdin() -> Result<Secret, Failure> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut text).map_err(|e| Failure::io("cannot read standard input", e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Failure::usage("no init token: set KEYSERVICE_INIT_TOKEN, give --init-token-file, or pipe it in"));
    }
    Ok(Secret::new(token))
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| Failure::io("cannot read standard input", e))?;
    Ok(bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| Failure::io(&format!("cannot create {}", path.display()), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure::io(&format!("cannot write {}", path.display()), e))
}

fn print(json: bool, value: &serde_json::Value, plain: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    let result = if json { writeln!(stdout, "{value}") } else { writeln!(stdout, "{plain}") };
    result.map_err(|e| Failure::io("cannot write to standard output", e))
}
