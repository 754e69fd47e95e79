//! The signals a serving process answers: SIGHUP reloads what can change without a
//! restart, SIGTERM and SIGINT stop it gracefully.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::http::App;

/// On every SIGHUP: reloads the TLS certificate and key, reopens the audit log, and
/// re-reads the config file's namespaces (credentials, allowlists, budgets). Each part
/// is validated before it replaces anything, so a failed reload keeps what was there.
/// Every other setting needs a restart.
#[cfg(unix)]
pub async fn reload_on_sighup(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    tls: Option<Arc<crate::tls::Tls>>,
    config_path: Option<PathBuf>,
    app: App,
) {
    let Ok(mut hangups) = hangups else {
        tracing::warn!("cannot watch SIGHUP; nothing will be reloaded without a restart");
        return;
    };
    // The file as this process started with it: a reload names the settings that
    // changed since and need a restart.
    let mut started_with = config_path.as_deref().and_then(crate::config::changes::settings_of);
    while hangups.recv().await.is_some() {
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate and key reloaded"),
                Err(error) => tracing::error!(%error, "reloading TLS failed; keeping the previous certificate"),
            }
        }
        match app.reopen_audit() {
            Ok(()) => tracing::info!("audit log reopened"),
            Err(error) => tracing::error!(%error, "reopening the audit log failed; still writing the old file"),
        }
        let Some(path) = &config_path else { continue };
        match Config::load(path) {
            Ok(config) => {
                app.reload_namespaces(&config);
                tracing::info!(namespaces = config.namespaces.len(), "namespaces reloaded");
                let now = crate::config::changes::settings_of(path);
                if let (Some(before), Some(now)) = (&started_with, &now) {
                    let changed = crate::config::changes::changed_settings(before, now);
                    if !changed.is_empty() {
                        tracing::warn!(
                            settings = %changed.join(", "),
                            "these settings changed in the config file and take effect only at a restart; the old values stay in force"
                        );
                    }
                }
                // Warned once: the next reload compares with what was last read.
                if now.is_some() {
                    started_with = now;
                }
            }
            Err(error) => tracing::error!(%error, "reloading the config failed; keeping the previous namespaces"),
        }
    }
}

/// Registers the SIGINT and SIGTERM handlers now, so that a signal arriving before the
/// server is ready does not kill it outright, and returns a future that completes on
/// either.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {},
                    _ = interrupt.recv() => {},
                }
            }
            (Ok(mut only), Err(error)) | (Err(error), Ok(mut only)) => {
                tracing::warn!(%error, "cannot watch one of SIGTERM and SIGINT");
                only.recv().await;
            }
            (Err(error), Err(_)) => {
                tracing::warn!(%error, "cannot watch SIGTERM or SIGINT; stop the server with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}
