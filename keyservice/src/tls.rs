//! TLS with rustls: the certificate chain and key from PEM files, reloaded on SIGHUP
//! without dropping connections (each new handshake uses the current configuration;
//! established connections keep theirs). ALPN offers HTTP/2 and HTTP/1.1.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificate chain and private key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Why TLS could not be set up. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, holds no usable PEM, or (the key) is open to others.
    #[error("{field} ({path}): {reason}")]
    File {
        /// The config field that names it: `tls.cert_file` or `tls.key_file`.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("tls.cert_file ({cert}) and tls.key_file ({key}) do not form a usable TLS configuration: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason (never key material).
        source: rustls::Error,
    },
}

/// The server's TLS configuration, swappable while serving.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the files.
    ///
    /// # Errors
    ///
    /// [`TlsError`] for unreadable files, no certificate, no key, or a key that does not
    /// match the certificate.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = build(&files)?;
        Ok(Self { files, current: RwLock::new(Arc::new(config)) })
    }

    /// Reads the files again and uses them for new connections. On failure the previous
    /// configuration stays.
    ///
    /// # Errors
    ///
    /// As [`Tls::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let cert_error = |reason: String| TlsError::File { field: "tls.cert_file", path: files.cert_file.clone(), reason };
    let key_error = |reason: String| TlsError::File { field: "tls.key_file", path: files.key_file.clone(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("holds no PEM certificate".into()));
    }
    // A private key others can read is refused, as a master key or secret file is.
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(&files.key_file) {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_error(format!(
                "is readable by group or others (mode {mode:o}); make it private (chmod 600) and start again"
            )));
        }
    }
    // The key's own parse errors can quote key bytes; report only the kind of failure.
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|_| key_error("holds no readable PEM private key".into()))?;
    let refused = |source| TlsError::Config { cert: files.cert_file.clone(), key: files.key_file.clone(), source };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(refused)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
