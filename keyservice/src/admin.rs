//! Operator commands: backup, restore, master-key rotation, and the erasure of a user
//! the Real Service cannot erase itself (on a namespace with `oidc`, a user whose
//! account at the identity provider is already gone).
//!
//! A running server owns its store (sled allows one process), so it also listens on an
//! admin socket: a Unix socket, mode 0600, that only the server's own user can reach.
//! `keyservice backup` and `keyservice rotate-master-key` talk to it when the server runs
//! and open the store directly when it does not. `keyservice restore` always works on a
//! stopped server's new, empty data directory.
//!
//! The socket speaks one JSON line each way:
//! `{"op": "backup"}`, `{"op": "rotate-master-key", "newKeyFile": "/path"}` (or
//! `"newKeyLabel": "label"` for a key in the configured PKCS#11 token) or
//! `{"op": "erase", "namespace": "…", "userId": "…"}`, answered by
//! `{"ok": true|false, "message": "…"}`. A backup's answer also says `"bytes": N`, and
//! the backup's N bytes follow it: the command writes the file itself, as the person
//! who runs it and where they can write, not where the server may (under the shipped
//! unit the server cannot write outside its state directories, and its `/tmp` is its
//! own).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::crypto::master::{MasterKey, MasterKeyError};
use crate::crypto::token::{TokenError, TokenSettings};
use crate::crypto::vault::{Rotation, Vault, envelope_key_id};
use crate::error::Error;
use crate::http::App;
use crate::store::{Coordination, Maintenance, SledStore, backup};

/// A request on the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Send a consistent backup over the socket.
    Backup,
    /// Re-wrap the keyring under the key in `new_key_file`, or under the key labelled
    /// `new_key_label` in the token `[master_key]` names (either created if absent).
    #[serde(rename_all = "camelCase")]
    RotateMasterKey {
        /// The new master key file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_key_file: Option<PathBuf>,
        /// The label of the new master key in the configured token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_key_label: Option<String>,
    },
    /// Erase a user, as `POST /erase` does, without the Real Service.
    #[serde(rename_all = "camelCase")]
    Erase {
        /// The user's namespace.
        namespace: String,
        /// The user.
        user_id: String,
    },
}

impl AdminRequest {
    /// Its name, for the log (an erasure's user id is personal data and is not logged).
    pub fn op(&self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::RotateMasterKey { .. } => "rotate-master-key",
            Self::Erase { .. } => "erase",
        }
    }
}

/// Where a rotation moves the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewMasterKey {
    /// A key file (created when absent).
    File(PathBuf),
    /// A key with this label in the token `[master_key]` names (generated when absent).
    TokenKey(String),
}

impl NewMasterKey {
    /// The target an admin request names.
    ///
    /// # Errors
    ///
    /// When it names none, or both.
    pub fn of(new_key_file: Option<PathBuf>, new_key_label: Option<String>) -> Result<Self, String> {
        match (new_key_file, new_key_label) {
            (Some(file), None) => Ok(Self::File(file)),
            (None, Some(label)) => Ok(Self::TokenKey(label)),
            _ => Err("a rotation names one new key: a key file or a key label in the token".to_owned()),
        }
    }

    /// Opens the new key, creating it when absent, and tells whether it was created.
    /// Blocks while a token answers. `token` is the configured `[master_key]` token.
    ///
    /// # Errors
    ///
    /// Why the key could not be opened or created.
    pub fn open(&self, token: Option<&TokenSettings>) -> Result<(MasterKey, bool), String> {
        match self {
            Self::File(path) => MasterKey::load_or_create_telling(path).map_err(|e| e.to_string()),
            Self::TokenKey(label) => {
                let mut settings = token
                    .ok_or("no token is configured: set [master_key] module, token_label (or slot) and pin_env (or pin_file) first")?
                    .clone();
                settings.key_label.clone_from(label);
                match MasterKey::from_token(&settings) {
                    Ok(key) => Ok((key, false)),
                    Err(MasterKeyError::Token(TokenError::KeyAbsent { .. })) => {
                        MasterKey::create_in_token(&settings).map(|key| (key, true)).map_err(|e| e.to_string())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        }
    }

    /// What to change in the configuration before the next start.
    fn next_start(&self) -> String {
        match self {
            Self::File(path) => format!("point master_key_file at {} before the next start", path.display()),
            Self::TokenKey(label) => {
                format!("set [master_key] source = \"pkcs11\" and key_label = {label:?} before the next start")
            }
        }
    }
}

/// Which master key a backup's entries were sealed under, for the operator: a restore
/// needs it.
pub fn sealed_under(entries: &[crate::store::SnapshotEntry]) -> String {
    let mut ids: Vec<String> = entries
        .iter()
        .filter(|(table, _, _)| table == "keyring")
        .filter_map(|(_, _, value)| envelope_key_id(value).map(hex::encode))
        .collect();
    ids.sort();
    ids.dedup();
    match ids.as_slice() {
        [] => "no keys sealed yet".to_owned(),
        [id] => format!("sealed under master key {id}; a restore needs that key"),
        more => {
            format!("sealed under master keys {} (a rotation was under way); a restore needs each", more.join(", "))
        }
    }
}

/// A user id as the Real Service's requests take it: 1 to 256 bytes.
fn check_user_id(user_id: &str) -> Result<(), String> {
    let max = keyservice_client::protocol::wire::MAX_USER_ID_LEN;
    if user_id.is_empty() || user_id.len() > max {
        return Err(format!("the user id must be 1 to {max} bytes"));
    }
    Ok(())
}

/// Describes a finished erasure for the operator.
pub fn describe_erasure(receipt: &keyservice_client::protocol::wire::ErasureReceipt) -> String {
    format!(
        "erased user {} at {}: {} key versions destroyed, {} sessions revoked, {} history entries destroyed",
        receipt.user_id,
        receipt.erased_at,
        receipt.versions_destroyed,
        receipt.sessions_revoked,
        receipt.access_records_destroyed
    )
}

/// Erases a user of the stopped server's store described by `config`: recorded in its
/// erasure ledger first, as the running server does.
///
/// # Errors
///
/// When the store, the master key or the ledger cannot be opened, or the erasure fails.
pub async fn erase_offline(config: &Config, master: &MasterKey, namespace: &str, user_id: &str) -> Outcome {
    check_user_id(user_id)?;
    let store =
        crate::store::open(&config.storage, &config.data_dir, &config.node_id).await.map_err(|e| e.to_string())?;
    let ledger = crate::ledger::ErasureLedger::open(&config.erasure_ledger_file).map_err(|e| e.to_string())?;
    let escrow = crate::escrow::Escrow::open(store.clone(), master, ledger, crate::escrow::Policy::from(config))
        .await
        .map_err(|e| e.to_string())?;
    let user = escrow.user(namespace, user_id);
    let receipt = escrow.erase(&user, crate::time::now()).await.map_err(|e| e.to_string())?;
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(describe_erasure(&receipt))
}

/// The answer on the admin socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminResponse {
    /// Whether it worked.
    pub ok: bool,
    /// What happened, for the operator.
    pub message: String,
    /// For a backup, the length of the backup that follows the answer line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// What an admin command reports.
pub type Outcome = Result<String, String>;

/// What the server answers an admin request with.
pub struct Answer {
    /// What happened, for the operator.
    pub message: String,
    /// Bytes sent after the answer line (a backup).
    pub payload: Option<Vec<u8>>,
}

/// Serves the admin socket at `path` until the task is dropped; `ready` learns whether
/// binding worked.
///
/// # Errors
///
/// When accepting fails after the socket was bound.
pub async fn serve(
    path: &Path,
    app: App,
    ready: tokio::sync::oneshot::Sender<std::io::Result<()>>,
) -> std::io::Result<()> {
    let listener = match bind(path).await {
        Ok(listener) => {
            let _ = ready.send(Ok(()));
            listener
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return Ok(());
        }
    };
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &app).await {
                tracing::warn!(%error, "admin connection failed");
            }
        });
    }
}

async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another server owns the admin socket"));
        }
        // Left behind by a server that did not stop cleanly.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    // Until this chmod the socket has the process umask's mode; run the server with a
    // umask of 077, or keep the socket in a directory only its user can enter.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

async fn answer(stream: UnixStream, app: &App) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One request line, at most 4 KiB.
    BufReader::new(read.take(4096)).read_line(&mut line).await?;
    let outcome = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => {
            tracing::info!(op = request.op(), "admin request");
            app.admin(request).await
        }
        Err(error) => Err(format!("not an admin request: {error}")),
    };
    let (response, payload) = match outcome {
        Ok(Answer { message, payload }) => {
            let bytes = payload.as_ref().map(|p| p.len() as u64);
            (AdminResponse { ok: true, message, bytes }, payload.unwrap_or_default())
        }
        Err(message) => (AdminResponse { ok: false, message, bytes: None }, Vec::new()),
    };
    // A struct of a bool, a string and a number always serialises.
    let mut text = serde_json::to_string(&response).expect("an admin response serialises");
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.write_all(&payload).await
}

/// Asks the server on the admin socket at `path` for a backup and writes it to `out` as
/// the caller; `None` when no server answers there.
pub async fn backup_online(path: &Path, out: &Path) -> Option<Outcome> {
    let stream = UnixStream::connect(path).await.ok()?;
    let (read, mut write) = stream.into_split();
    let broke = |error: std::io::Error| format!("the server's admin socket broke off: {error}");
    let mut text = serde_json::to_string(&AdminRequest::Backup).expect("an admin request serialises");
    text.push('\n');
    if let Err(error) = write.write_all(text.as_bytes()).await {
        return Some(Err(broke(error)));
    }
    let mut read = BufReader::new(read);
    let mut line = String::new();
    if let Err(error) = read.read_line(&mut line).await {
        return Some(Err(broke(error)));
    }
    let (message, length) = match serde_json::from_str::<AdminResponse>(&line) {
        Ok(AdminResponse { ok: true, message, bytes: Some(bytes) }) => (message, bytes),
        Ok(AdminResponse { ok: false, message, .. }) => return Some(Err(message)),
        _ => return Some(Err("the server answered something that is not a backup".to_owned())),
    };
    let mut bytes = Vec::new();
    if let Err(error) = read.take(length).read_to_end(&mut bytes).await {
        return Some(Err(broke(error)));
    }
    if bytes.len() as u64 != length {
        return Some(Err("the server's admin socket broke off in the middle of the backup".to_owned()));
    }
    Some(match backup::write_bytes(out, &bytes) {
        Ok(()) => Ok(format!("wrote {message} to {}", out.display())),
        Err(error) => Err(error.to_string()),
    })
}

/// Sends `request` to the server on the admin socket at `path`; `None` when no server
/// answers there.
pub async fn request(path: &Path, request: &AdminRequest) -> Option<Outcome> {
    let stream = UnixStream::connect(path).await.ok()?;
    let (read, mut write) = stream.into_split();
    // A request of paths always serialises.
    let mut text = serde_json::to_string(request).expect("an admin request serialises");
    text.push('\n');
    if let Err(error) = write.write_all(text.as_bytes()).await {
        return Some(Err(format!("the server's admin socket broke off: {error}")));
    }
    let mut line = String::new();
    if let Err(error) = BufReader::new(read).read_line(&mut line).await {
        return Some(Err(format!("the server's admin socket broke off: {error}")));
    }
    Some(match serde_json::from_str::<AdminResponse>(&line) {
        Ok(AdminResponse { ok: true, message, .. }) => Ok(message),
        Ok(AdminResponse { ok: false, message, .. }) => Err(message),
        Err(_) => Err("the server answered something that is not an admin response".to_owned()),
    })
}

/// Describes a finished rotation.
pub fn describe_rotation(rotation: &Rotation, target: &NewMasterKey) -> String {
    format!(
        "re-wrapped {} keyring entries (index and system keys, one key per namespace), {} already under the new key; \
         records moved: 0 (user keys and records hang below the namespace keys and are unchanged); {}",
        rotation.rewrapped,
        rotation.already_current,
        target.next_start()
    )
}

/// Backs up the stopped server's store described by `config` to `out`.
///
/// # Errors
///
/// When the store cannot be opened (a running server holds it) or the file written.
pub async fn backup_offline(config: &Config, out: &Path) -> Outcome {
    let store =
        crate::store::open(&config.storage, &config.data_dir, &config.node_id).await.map_err(|e| e.to_string())?;
    let entries = store.snapshot().await.map_err(|e| e.to_string())?;
    let written = backup::write(out, &entries).map_err(|e| e.to_string())?;
    Ok(format!("wrote {written} records to {}, {}", out.display(), sealed_under(&entries)))
}

/// Rotates the stopped server's master key from `current` to `new`.
///
/// # Errors
///
/// When the store cannot be opened or was sealed under neither key.
pub async fn rotate_offline(config: &Config, current: &MasterKey, new: &MasterKey, target: &NewMasterKey) -> Outcome {
    let store =
        crate::store::open(&config.storage, &config.data_dir, &config.node_id).await.map_err(|e| e.to_string())?;
    if Vault::open(new, store.as_ref()).await.is_ok() {
        let rotation = Rotation {
            rewrapped: 0,
            already_current: store.keyring_list().await.map_err(|e| e.to_string())?.len() as u64,
        };
        return Ok(describe_rotation(&rotation, target));
    }
    let vault = Vault::open(current, store.as_ref()).await.map_err(|e| e.to_string())?;
    let rotation = vault.rotate(store.as_ref(), new).await.map_err(|e| e.to_string())?;
    Ok(describe_rotation(&rotation, target))
}

/// Restores the backup `from` into `data_dir`, which must be absent or empty, after
/// checking it was sealed under `master`. Requests signed before the restore are refused
/// afterwards (the replay floor moves to now), so nothing captured in the meantime can
/// be replayed against the older data.
///
/// # Errors
///
/// A damaged backup, a backup sealed under another master key, a non-empty target.
pub async fn restore(from: &Path, data_dir: &Path, master: &MasterKey) -> Outcome {
    let entries = backup::read(from).map_err(|e| e.to_string())?;
    for (_, _, value) in entries.iter().filter(|(table, _, _)| table == "keyring") {
        if let Some(id) = envelope_key_id(value).filter(|id| *id != master.id()) {
            return Err(format!(
                "the backup was sealed under master key {}, not under the configured master key {}; restore with that key",
                hex::encode(id),
                hex::encode(master.id())
            ));
        }
    }
    if std::fs::read_dir(data_dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{} is not empty; restore into a new directory", data_dir.display()));
    }
    let store = SledStore::open(data_dir).map_err(|e| e.to_string())?;
    let count = entries.len();
    store.import(entries).await.map_err(|e| e.to_string())?;
    store.set_replay_floor(crate::time::now()).await.map_err(|e| e.to_string())?;
    Vault::open(master, &store).await.map_err(|e| e.to_string())?;
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(format!("restored {count} records into {}", data_dir.display()))
}

impl App {
    /// Carries out an admin request on the running server.
    ///
    /// # Errors
    ///
    /// What went wrong, for the operator.
    pub async fn admin(&self, request: AdminRequest) -> Result<Answer, String> {
        match request {
            AdminRequest::Backup => {
                let entries = self.inner.escrow.snapshot().await.map_err(|e| e.to_string())?;
                let message = format!("{} records, {}", entries.len(), sealed_under(&entries));
                Ok(Answer { message, payload: Some(backup::encode(&entries)) })
            }
            AdminRequest::RotateMasterKey { new_key_file, new_key_label } => {
                let target = NewMasterKey::of(new_key_file, new_key_label)?;
                let token = self.inner.master_key_token.clone();
                let opening = target.clone();
                let (new, created) = tokio::task::spawn_blocking(move || opening.open(token.as_ref()))
                    .await
                    .map_err(|e| format!("opening the new master key failed: {e}"))??;
                let rotation = self.inner.escrow.rotate_master_key(&new).await.map_err(|e: Error| e.to_string())?;
                let (place, whose) = match &target {
                    NewMasterKey::File(path) => (
                        format!("at {} on the server's file system", path.display()),
                        if created {
                            "created by the server, as its own user, so that it can read it"
                        } else {
                            "read by the server"
                        },
                    ),
                    NewMasterKey::TokenKey(label) => (
                        format!("labelled {label:?} in the token"),
                        if created { "generated in the token now" } else { "found there" },
                    ),
                };
                let message = format!(
                    "{}; the new key (fingerprint {}) is {place}, {whose}",
                    describe_rotation(&rotation, &target),
                    new.fingerprint(),
                );
                Ok(Answer { message, payload: None })
            }
            AdminRequest::Erase { namespace, user_id } => {
                if !self.tenants().namespaces.contains_key(&namespace) {
                    return Err(format!("no namespace {namespace:?} is configured"));
                }
                check_user_id(&user_id)?;
                let receipt = self.erase_as_operator(&namespace, &user_id).await.map_err(|e| e.to_string())?;
                Ok(Answer { message: describe_erasure(&receipt), payload: None })
            }
        }
    }
}
