//! TLS with rustls: the certificate chain and key from PEM files, reloaded on SIGHUP
//! without dropping connections (each new handshake uses the current configuration;
//! established connections keep theirs). ALPN offers HTTP/2 and HTTP/1.1.

use std::path::{Path, PathBuf};
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
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("{cert} and {key} do not form a usable TLS configuration: {source}")]
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
    let file_error = |path: &Path, reason: String| TlsError::File { path: path.to_path_buf(), reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| file_error(&files.cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error(&files.cert_file, "holds no PEM certificate".into()));
    }
    // The key's own parse errors can quote key bytes; report only the kind of failure.
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|_| file_error(&files.key_file, "holds no readable PEM private key".into()))?;
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
