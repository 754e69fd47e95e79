//! `keyservice-cli`: the keyservice flow from a shell script.
//!
//! Secrets never go on the command line, where any user could read them in the process
//! list: the credential secret comes from `KEYSERVICE_SECRET` or `--secret-file`, the
//! init token from `KEYSERVICE_INIT_TOKEN` or `--init-token-file` (or standard input for
//! `hash-token`), and the session token from `KEYSERVICE_SESSION_TOKEN` or
//! `--session-token-file`.
//!
//! Exit codes: 0 success; 1 any other failure; 2 usage error; 3 authentication or
//! authorization refused (401, 403), or a missing or wrong passphrase; 4 not found (404, 410: no such key, version or init
//! token); 5 network failure or timeout; 6 precondition failed (412); 7 not a keyservice
//! answer (a URL with a path, the metrics port, another server).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, Parser, Subcommand};
use keyservice_client::protocol::Secret;
use keyservice_client::{Client, Condition, Credential, Error, ErrorKind, InitToken, wrap};

const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_AUTH: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;
const EXIT_NETWORK: u8 = 5;
const EXIT_PRECONDITION: u8 = 6;
const EXIT_NOT_KEYSERVICE: u8 = 7;

/// Command-line client of keyservice, for both a device and a Real Service.
///
/// Exit codes: 0 success, 1 other failure, 2 usage error, 3 authentication or
/// authorization refused, 4 not found (no such key, version or init token), 5 network
/// failure or timeout, 6 precondition failed, 7 not a keyservice answer (check --url).
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
        /// The device's initTokenHash.
        #[arg(long)]
        init_token_hash: String,
        /// The user's OpenID Connect ID token (nonce = the initTokenHash), for a namespace
        /// that requires one: from this file [default: KEYSERVICE_ID_TOKEN, if set].
        #[arg(long, value_name = "FILE")]
        id_token_file: Option<PathBuf>,
        #[command(flatten)]
        user: UserArgs,
    },
    /// Real Service: erase everything held for a user (their account was deleted);
    /// prints the receipt.
    Erase {
        /// The user's OpenID Connect ID token for this erasure (nonce = `erase-nonce`),
        /// for a namespace that requires one: from this file [default:
        /// KEYSERVICE_ID_TOKEN, if set].
        #[arg(long, value_name = "FILE")]
        id_token_file: Option<PathBuf>,
        #[command(flatten)]
        user: UserArgs,
    },
    /// Real Service: print the nonce to ask the identity provider for, in the ID token
    /// that authorises erasing this user on a namespace with `oidc`.
    EraseNonce {
        /// The namespace.
        #[arg(long)]
        namespace: String,
        /// The user.
        #[arg(long)]
        user_id: String,
    },
    /// Real Service: what is held for a user (versions, sizes, dates, sessions; never key
    /// bytes), as JSON, for a subject-access request.
    Export {
        #[command(flatten)]
        user: UserArgs,
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
        /// Wrap the key under the passphrase in FILE first (Argon2id, 64 MiB, 3 passes),
        /// so that keyservice holds only the wrapped key.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Device: read the key (the latest version unless --version).
    Get {
        /// Read this version instead of the latest.
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// Write the key here: a new file, or a regular file replaced, with mode 0600; a
        /// device or FIFO is written as it is; a symbolic link is refused [default:
        /// standard output].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Unwrap a key stored with `put --passphrase-file` with the passphrase in FILE.
        /// Without it, a wrapped key is refused (exit 3, `user_factor_required`).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Give the stored bytes as they are, also when they are a wrapped key.
        #[arg(long, conflicts_with = "passphrase_file")]
        raw: bool,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Device: delete every version of the key (the session stays).
    DeleteKey {
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Device: end the session at once (log out).
    Logout {
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Device: who used this user's key and sessions, newest first: one line per access
    /// (time, operation, session, address, credential, version), or a page as JSON.
    History {
        /// Entries per page [default: the server's, 50].
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Start after this entry (the `next` of a previous page).
        #[arg(long, value_name = "ID")]
        before: Option<String>,
        #[command(flatten)]
        session: SessionArgs,
    },
}

/// A Real Service's credential and the user a command is about.
#[derive(Args)]
struct UserArgs {
    /// The namespace the credential belongs to.
    #[arg(long)]
    namespace: String,
    /// The user.
    #[arg(long)]
    user_id: String,
    /// The credential's key id.
    #[arg(long)]
    key_id: String,
    /// File holding the credential secret [default: KEYSERVICE_SECRET].
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

impl UserArgs {
    fn real_service(&self, client: &Client) -> Result<keyservice_client::RealService, Failure> {
        let secret = secret_from(self.secret_file.as_deref(), "KEYSERVICE_SECRET", "--secret-file")?;
        Ok(client.real_service(Credential::new(self.key_id.clone(), secret)))
    }
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

impl From<wrap::WrapError> for Failure {
    fn from(error: wrap::WrapError) -> Self {
        let (code, message) = match error {
            // The codes the JavaScript client gives the same failures.
            wrap::WrapError::WrongSecret | wrap::WrapError::OtherFactor(_) => {
                (EXIT_AUTH, format!("wrong_user_factor: {error}"))
            }
            _ => (EXIT_FAILURE, error.to_string()),
        };
        Self { message, code }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        // keyservice answers `not_found` only for a route it does not have: the URL
        // carries a path, or leads to the metrics listener.
        let wrong_url = error.code() == Some("not_found") || error.kind() == ErrorKind::InvalidResponse;
        let code = match error.kind() {
            _ if wrong_url => EXIT_NOT_KEYSERVICE,
            ErrorKind::Unauthorized | ErrorKind::Forbidden => EXIT_AUTH,
            ErrorKind::NotFound => EXIT_NOT_FOUND,
            ErrorKind::Network | ErrorKind::Timeout => EXIT_NETWORK,
            ErrorKind::PreconditionFailed => EXIT_PRECONDITION,
            ErrorKind::Config => EXIT_USAGE,
            _ => EXIT_FAILURE,
        };
        // The causes too: "network error" alone does not say that the certificate was
        // refused, or why.
        let mut message = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        if wrong_url {
            message.push_str(
                " (this is not an answer of keyservice's API: give --url the server's root, such as https://keys.example.com, without a path and not the metrics port)",
            );
        }
        for (cause, hint) in HINTS {
            if message.contains(cause) {
                message.push_str(" (");
                message.push_str(hint);
                message.push(')');
            }
        }
        Self { message, code }
    }
}

/// What low-level failures mean, for the person reading the error: rustls's certificate
/// refusals, and a scheme that does not match the port.
const HINTS: [(&str, &str); 5] = [
    ("invalid HTTP version parsed", "the server answered in TLS: use an https:// URL"),
    ("InvalidContentType", "the server does not speak TLS on this port: use an http:// URL, with --allow-http"),
    (
        "CaUsedAsEndEntity",
        "the server presents a CA certificate as its own; make a CA and a server certificate signed by it, see docs/operations.md",
    ),
    ("UnknownIssuer", "the server's certificate is not signed by a CA you trust; pass that CA with --ca-file"),
    ("NotValidForName", "the server's certificate does not name the host in --url"),
];

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
    if let Command::EraseNonce { namespace, user_id } = &cli.command {
        let nonce = keyservice_client::protocol::wire::erase_nonce(namespace, user_id);
        return print(json, &serde_json::json!({ "nonce": nonce }), &nonce);
    }

    let client = client(&cli)?;
    match cli.command {
        Command::HashToken { .. } | Command::EraseNonce { .. } => Ok(()),
        Command::Init => {
            let token = client.init().await?;
            let value = serde_json::json!({
                "initToken": token.secret().expose(),
                "expiresAt": token.expires_at(),
                "initTokenHash": token.hash(),
            });
            print(json, &value, token.secret().expose())
        }
        Command::Connect { init_token_hash, id_token_file, user } => {
            let id_token = id_token(id_token_file)?;
            let grant = user
                .real_service(&client)?
                .connect_with_id_token(
                    &user.namespace,
                    &user.user_id,
                    &init_token_hash,
                    id_token.as_ref().map(Secret::expose),
                )
                .await?;
            let value =
                serde_json::json!({ "sessionToken": grant.session_token.expose(), "expiresAt": grant.expires_at });
            print(json, &value, grant.session_token.expose())
        }
        Command::Erase { id_token_file, user } => {
            let id_token = id_token(id_token_file)?;
            let receipt = user
                .real_service(&client)?
                .erase_with_id_token(&user.namespace, &user.user_id, id_token.as_ref().map(Secret::expose))
                .await?;
            let plain = format!(
                "erased at {}: {} key versions destroyed, {} sessions revoked",
                receipt.erased_at, receipt.versions_destroyed, receipt.sessions_revoked
            );
            print(json, &to_json(&receipt), &plain)
        }
        Command::Export { user } => {
            let export = user.real_service(&client)?.export(&user.namespace, &user.user_id).await?;
            let value = to_json(&export);
            print(json, &value, &serde_json::to_string_pretty(&value).unwrap_or_default())
        }
        Command::DeleteKey { session } => {
            open_session(&client, &session)?.delete_key().await?;
            print(json, &serde_json::json!({ "deleted": true }), "deleted")
        }
        Command::Logout { session } => {
            open_session(&client, &session)?.logout().await?;
            print(json, &serde_json::json!({ "loggedOut": true }), "logged out")
        }
        Command::History { limit, before, session } => {
            let page = open_session(&client, &session)?.access_history(limit, before.as_deref()).await?;
            let lines: Vec<String> = page
                .entries
                .iter()
                .map(|e| {
                    let session = match (&e.session, e.current_session) {
                        (Some(tag), true) => format!("{tag} (this session)"),
                        (Some(tag), false) => tag.clone(),
                        (None, _) => "-".to_owned(),
                    };
                    let version = match (e.first_version, e.version) {
                        (Some(first), Some(last)) => format!("{first}-{last}"),
                        (_, Some(version)) => version.to_string(),
                        (_, None) => "-".to_owned(),
                    };
                    let credential = e.credential.as_deref().unwrap_or("-");
                    let times = if e.count > 1 { format!("  ×{}", e.count) } else { String::new() };
                    format!("{}  {:<10}  {session}  {}  {credential}  {version}{times}", e.time, e.operation, e.address)
                })
                .chain(page.next.iter().map(|next| format!("more: --before {next}")))
                .collect();
            print(json, &to_json(&page), &lines.join("\n"))
        }
        Command::Put { file, content_type, if_match, if_none_match, passphrase_file, session } => {
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
            let (bytes, content_type) = match passphrase_file {
                None => (bytes, content_type),
                Some(path) => {
                    let passphrase = read_secret_file(&path)?;
                    let wrapped =
                        wrap::wrap_with_passphrase(&bytes, passphrase.expose(), wrap::Argon2Params::default())
                            .map_err(Failure::from)?;
                    (zeroize::Zeroizing::new(wrapped), Some(content_type.unwrap_or_else(|| wrap::CONTENT_TYPE.into())))
                }
            };
            let session = open_session(&client, &session)?;
            let version = session.put_key(&bytes, content_type.as_deref(), condition).await?;
            print(json, &serde_json::json!({ "version": version }), &version.to_string())
        }
        Command::Get { version, output, passphrase_file, raw, session } => {
            let session = open_session(&client, &session)?;
            let key = match version {
                Some(version) => session.get_key_version(version).await?,
                None => session.get_key().await?,
            };
            let bytes = match passphrase_file {
                // Wrapped bytes printed as if they were the key would be used as one.
                None if key.content_type == wrap::CONTENT_TYPE && !raw => {
                    return Err(Failure {
                        message: "user_factor_required: this key is wrapped under a passphrase or passkey; give --passphrase-file (or --raw for the wrapped bytes)".into(),
                        code: EXIT_AUTH,
                    });
                }
                None => zeroize::Zeroizing::new(key.bytes().to_vec()),
                Some(path) => {
                    let passphrase = read_secret_file(&path)?;
                    wrap::unwrap_with_passphrase(key.bytes(), passphrase.expose()).map_err(Failure::from)?
                }
            };
            if json {
                let value = serde_json::json!({
                    "version": key.version,
                    "contentType": key.content_type,
                    "key": base64::engine::general_purpose::STANDARD.encode(&bytes),
                });
                return print(true, &value, "");
            }
            match output {
                Some(path) => write_private(&path, &bytes),
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&bytes)
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

/// The user's ID token: a bearer credential, kept off the command line like the others.
fn id_token(file: Option<PathBuf>) -> Result<Option<Secret>, Failure> {
    Ok(match file {
        Some(path) => Some(read_secret_file(&path)?),
        None => std::env::var("KEYSERVICE_ID_TOKEN").ok().filter(|t| !t.is_empty()).map(Secret::new),
    })
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

fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    // The wire types are strings and integers: they always serialise.
    serde_json::to_value(value).unwrap_or_default()
}

/// Writes the key to `path`, by what `path` is now:
/// - nothing, or a regular file: a new private (0600) file beside it, synced and renamed
///   into place, so a reader never sees half a key and an existing file of a looser mode
///   does not keep its mode;
/// - a device, FIFO or socket (`/dev/null`, `/dev/stdout`, a pipe to another program):
///   written as it is, never replaced: renaming over `/dev/null` as root would turn it
///   into a regular file for the whole machine;
/// - a symbolic link: refused (exit 2). Following it would write wherever the link
///   points, which in a shared directory may be somebody else's choice; name the file
///   itself.
/// - a directory: refused (exit 2).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let cannot = |e| Failure::io(&format!("cannot write {}", path.display()), e);
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(cannot(error)),
        Ok(metadata) if metadata.file_type().is_symlink() => {
            return Err(Failure::usage(format!(
                "{} is a symbolic link; give the path of the file itself (-o does not follow links)",
                path.display()
            )));
        }
        Ok(metadata) if metadata.is_dir() => {
            return Err(Failure::usage(format!("{} is a directory; give a file name", path.display())));
        }
        Ok(metadata) if !metadata.is_file() => {
            // A device, FIFO or socket: write to it, never replace it.
            let mut file = std::fs::OpenOptions::new().write(true).open(path).map_err(cannot)?;
            return file.write_all(bytes).and_then(|()| file.flush()).map_err(cannot);
        }
        Ok(_) => {}
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // tempfile creates it 0600.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(cannot)?;
    file.write_all(bytes).and_then(|()| file.as_file().sync_all()).map_err(cannot)?;
    file.persist(path).map_err(|e| cannot(e.error))?;
    Ok(())
}

fn print(json: bool, value: &serde_json::Value, plain: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    let result = if json { writeln!(stdout, "{value}") } else { writeln!(stdout, "{plain}") };
    result.map_err(|e| Failure::io("cannot write to standard output", e))
}
