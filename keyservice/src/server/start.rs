//! Starting a whole server from its [`Config`]: the master key, the store, the handler,
//! the listeners (main, metrics, admin socket), TLS and the signals. The binary, the
//! tests and the examples all start one this way; the binary adds only its arguments
//! and exit codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Limits, run_tls, serve_metrics};
use crate::config::{Config, MasterKeySource};
use crate::crypto::master::{MASTER_KEY_ENV, MasterKey, MasterKeyError};
use crate::http::App;
use crate::store::{Store, StoreError};
use crate::time::{Clock, SystemClock};
use crate::tls::Tls;

/// Why a server did not start. Nothing was served; what was opened is closed again.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting must change before a start can work (the binary exits with 2).
    #[error("{0}")]
    Misconfigured(String),
    /// The data disk lacks the room to open the store; nothing was changed (exit 3: a
    /// restart cannot work until space is freed, and must not be tried in a loop).
    #[error("{0}")]
    NoRoom(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl StartError {
    /// The binary's exit status for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Misconfigured(_) => 2,
            Self::NoRoom(_) => 3,
            Self::Failed(_) => 1,
        }
    }
}

/// A server to start: its configuration, and what the caller provides instead of what
/// the configuration names.
pub struct Server {
    config: Config,
    store: Option<Arc<dyn Store>>,
    master: Option<MasterKey>,
    signals: Option<Option<PathBuf>>,
    clock: Arc<dyn Clock>,
}

impl Server {
    /// A server as `config` says: its store, master key, listeners and files.
    pub fn new(config: Config) -> Self {
        Self { config, store: None, master: None, signals: None, clock: Arc::new(SystemClock) }
    }

    /// Serves `store` instead of opening the configured one.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Seals with `master` instead of loading the configured master key.
    #[must_use]
    pub fn with_master_key(mut self, master: MasterKey) -> Self {
        self.master = Some(master);
        self
    }

    /// Reads the time of day from `clock` instead of the system's (a test moves it
    /// forward rather than waiting).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Stops gracefully on SIGTERM or SIGINT, and on SIGHUP reloads the namespaces (and
    /// TLS files) from `config_path` (when given). For a process that is the server.
    #[must_use]
    pub fn with_signals(mut self, config_path: Option<PathBuf>) -> Self {
        self.signals = Some(config_path);
        self
    }

    /// Opens everything and starts listening; returns once the server accepts
    /// connections (after its `keyservice listening` log line).
    ///
    /// # Errors
    ///
    /// [`StartError`], with the exit status the binary gives it.
    pub async fn start(self) -> Result<Running, StartError> {
        let Self { config, store, master, signals, clock } = self;
        // Signal handlers first: a SIGTERM, SIGINT or SIGHUP sent as soon as the server
        // says it listens must find them in place, not the default action (exit).
        let shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match &signals {
            Some(_) => Box::pin(super::signals::shutdown_signal()),
            None => Box::pin(std::future::pending()),
        };
        #[cfg(unix)]
        let hangups = signals.is_some().then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()));
        // TLS files are part of the configuration: found before anything is opened.
        let tls = match &config.tls {
            Some(files) => {
                Some(Arc::new(Tls::load(files.clone()).map_err(|e| StartError::Misconfigured(e.to_string()))?))
            }
            None => None,
        };
        let master = match master {
            Some(master) => master,
            None => {
                // A token answers over its library, which may block on a device or network.
                let config = config.clone();
                tokio::task::spawn_blocking(move || announced_master_key(&config))
                    .await
                    .map_err(|e| StartError::Failed(format!("loading the master key failed: {e}")))??
            }
        };
        // With a shared database, the claim on this node's id is held while it serves.
        let (store, node_claim) = match store {
            Some(store) => (store, None),
            None => crate::store::open_serving(&config.storage, &config.data_dir, &config.node_id).await.map_err(
                |error| {
                    if error.is_configuration() {
                        StartError::Misconfigured(error.to_string())
                    } else if error.is_no_room() {
                        StartError::NoRoom(error.to_string())
                    } else {
                        StartError::Failed(error.to_string())
                    }
                },
            )?,
        };
        let app = App::with_clock(&config, store, &master, clock).await.map_err(|error| match &error {
            crate::error::Error::Vault(crate::crypto::vault::VaultError::WrongMasterKey { stored, .. }) => {
                let hint = match config.master_key_source {
                    MasterKeySource::File => format!(
                        "Point {} at the key with fingerprint {stored}: after a rotation, that is the new key file it was given; `keyservice master-key fingerprint FILE` prints a file's fingerprint",
                        master_key_source(&config)
                    ),
                    MasterKeySource::Pkcs11 => format!(
                        "Point {} at the key with fingerprint {stored}: every node of a store uses the same token key (or a token of the same HSM cluster); `keyservice master-key fingerprint` prints the configured key's",
                        master_key_source(&config)
                    ),
                };
                StartError::Misconfigured(format!("{error}. {hint}"))
            }
            _ => StartError::Failed(error.to_string()),
        })?;
        drop(master);
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; another process listens there: stop it, or choose another address with --listen ADDR (or KEYSERVICE_LISTEN)"
            } else {
                ""
            };
            StartError::Failed(format!("cannot listen on {}: {e}{hint}", config.listen))
        })?;
        let addr = listener.local_addr().map_err(|e| StartError::Failed(e.to_string()))?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|e| StartError::Failed(format!("cannot listen for metrics on {address}: {e}")))?,
            ),
            None => None,
        };
        // The last step that can fail: nothing runs yet that would outlive a failed start.
        let admin = start_admin_socket(&config, &app).await?;
        let (metrics, metrics_addr) = match metrics_listener {
            Some(listener) => {
                let local = listener.local_addr().ok();
                if let Some(local) = local {
                    tracing::info!(address = %local, "metrics listening");
                }
                (Some(tokio::spawn(serve_metrics(listener, app.clone(), Limits::from(&config)))), local)
            }
            None => (None, None),
        };
        #[cfg(unix)]
        let reloader = hangups.map(|hangups| {
            let config_path = signals.clone().flatten();
            tokio::spawn(super::signals::reload_on_sighup(hangups, tls.clone(), config_path, app.clone()))
        });
        #[cfg(not(unix))]
        let reloader: Option<JoinHandle<()>> = None;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %addr, scheme, "keyservice listening");

        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                _ = stopped => {}
            }
        };
        let serving = run_tls(listener, app.clone(), Limits::from(&config), tls, shutdown);
        let admin_socket = config.admin_socket.clone();
        let task = tokio::spawn(async move {
            let result = serving.await;
            // Everything that holds the handler ends with it, so the store is released.
            for task in [Some(admin), metrics, reloader].into_iter().flatten() {
                task.abort();
                let _ = task.await;
            }
            let _ = std::fs::remove_file(&admin_socket);
            drop(node_claim);
            if result.is_ok() {
                tracing::info!("stopped");
            }
            result
        });
        Ok(Running { addr, metrics_addr, app, scheme, stop: Some(stop), task })
    }
}

/// A server that is serving. Dropping it stops the server too, without waiting.
pub struct Running {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    app: App,
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), StoreError>>,
}

impl Running {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where its metrics listener listens, when it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `https` with TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The handler it serves.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Stops it gracefully (as SIGTERM does) and waits until it has.
    ///
    /// # Errors
    ///
    /// As [`Running::finished`].
    pub async fn stop(mut self) -> Result<(), StoreError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finished().await
    }

    /// Waits until it has stopped (by [`Running::stop`] or a signal), its requests
    /// finished, the store flushed and released.
    ///
    /// # Errors
    ///
    /// Only the final flush can fail.
    pub async fn finished(mut self) -> Result<(), StoreError> {
        // Held, not sent: a server still serving goes on until a signal stops it.
        let _stop = self.stop.take();
        match (&mut self.task).await {
            Ok(result) => result,
            Err(error) => Err(StoreError::Unavailable(format!("the server task failed: {error}").into())),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds the admin socket before serving, so a failure stops the start rather than a
/// later backup.
async fn start_admin_socket(config: &Config, app: &App) -> Result<JoinHandle<()>, StartError> {
    let (ready, bound) = oneshot::channel();
    let path = config.admin_socket.clone();
    let app = app.clone();
    let task = tokio::spawn(async move {
        if let Err(error) = crate::admin::serve(&path, app, ready).await {
            tracing::error!(%error, "the admin socket failed");
        }
    });
    bound.await.map_err(|_| StartError::Failed("the admin socket task ended".into()))?.map_err(|e| {
        StartError::Failed(format!("cannot listen on the admin socket {}: {e}", config.admin_socket.display()))
    })?;
    Ok(task)
}

/// The configured master key (created when absent), announced in the log with its
/// fingerprint and where it came from.
fn announced_master_key(config: &Config) -> Result<MasterKey, StartError> {
    let (master, created) = load_master_key(config, true).map_err(|e| {
        if e.is_configuration() { StartError::Misconfigured(e.to_string()) } else { StartError::Failed(e.to_string()) }
    })?;
    let source = master_key_source(config);
    if created {
        tracing::warn!(
            fingerprint = %master.fingerprint(),
            %source,
            "created a new master key: back this file up offline, apart from the data and its backups; without it nothing in the store can be read"
        );
    } else {
        tracing::info!(fingerprint = %master.fingerprint(), %source, "master key loaded");
    }
    Ok(master)
}

/// Where the configured master key comes from, for messages.
pub fn master_key_source(config: &Config) -> String {
    if let (MasterKeySource::Pkcs11, Some(token)) = (config.master_key_source, &config.master_key_token) {
        format!("[master_key] key_label ({:?}, in {})", token.key_label, token.module.display())
    } else if std::env::var_os(MASTER_KEY_ENV).is_some() {
        MASTER_KEY_ENV.to_owned()
    } else {
        format!("master_key_file ({})", config.master_key_file.display())
    }
}

/// The master key in the configured token (never created here: `keyservice master-key
/// init` does that); else from `KEYSERVICE_MASTER_KEY`, else from the configured file
/// (created when absent only if `create`); and whether it was created now. Blocks while
/// a token answers.
///
/// # Errors
///
/// [`MasterKeyError`] when it cannot be read, is malformed or cannot be created.
pub fn load_master_key(config: &Config, create: bool) -> Result<(MasterKey, bool), MasterKeyError> {
    if config.master_key_source == MasterKeySource::Pkcs11 {
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return Err(MasterKeyError::Conflict(format!(
                "{MASTER_KEY_ENV} is set but [master_key] source = \"pkcs11\": the master key is the token's; unset {MASTER_KEY_ENV}"
            )));
        }
        let token = config
            .master_key_token
            .as_ref()
            .ok_or_else(|| MasterKeyError::Conflict("[master_key] source = \"pkcs11\" names no token".to_owned()))?;
        return Ok((MasterKey::from_token(token)?, false));
    }
    match std::env::var(MASTER_KEY_ENV) {
        Ok(hex) => Ok((MasterKey::from_hex(&hex, MASTER_KEY_ENV)?, false)),
        Err(_) if create => MasterKey::load_or_create_telling(&config.master_key_file),
        Err(_) => Ok((MasterKey::load(&config.master_key_file)?, false)),
    }
}
