//! The master key: the root of every key that protects data at rest.
//!
//! What the vault needs of it is a [`MasterSource`]: an id, and wrapping and unwrapping
//! the keyring's keys. The source here is a file key: 256 bits from the OS CSPRNG, kept
//! in a file of 64 hex digits (mode 0600) or in the `KEYSERVICE_MASTER_KEY` environment
//! variable. It never enters the data directory, a log line or an error message; its
//! *id* (a keyed hash, 8 bytes) may.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyservice_client::protocol::random_bytes;
use zeroize::Zeroizing;

use super::seal::{SealError, SealingKey};
pub use super::source::MasterSource;
use crate::files::{self, Place};

/// The environment variable a master key may come from instead of a file.
pub const MASTER_KEY_ENV: &str = "KEYSERVICE_MASTER_KEY";

/// The master key: a handle on its [`MasterSource`]. `Debug` shows only its id.
pub struct MasterKey {
    source: Arc<dyn MasterSource>,
}

/// A master key held in memory (read from a file or the environment). Wiped on drop.
struct FileKey {
    sealing: SealingKey,
}

impl MasterSource for FileKey {
    fn id(&self) -> [u8; 8] {
        self.sealing.id
    }

    fn wrap(&self, aad: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, SealError> {
        self.sealing.wrap(aad, key)
    }

    fn unwrap(&self, aad: &[u8], envelope: &[u8], kind: &'static str) -> Result<Zeroizing<[u8; 32]>, SealError> {
        self.sealing.unwrap_bytes(aad, envelope, kind)
    }
}

/// Why a master key could not be loaded or created. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The file could not be read, created or written.
    #[error("master key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable or writable by group or others.
    #[error("master key file {path} is accessible to group or others (mode {mode:o}); make it 0600")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file or variable does not hold 64 hex digits.
    #[error("the master key in {0} is not 64 hexadecimal digits")]
    Format(String),
    /// The file is empty: left by a creation cut short (before this version wrote key
    /// files whole), it never held a key, so nothing was sealed under it.
    #[error(
        "master key file {0} is empty: a creation cut short leaves one, and it sealed nothing; delete it and start again to create a key"
    )]
    Empty(PathBuf),
    /// No randomness for a new key.
    #[error("cannot generate a master key: {0}")]
    Random(#[from] keyservice_client::protocol::RandomError),
    /// Two settings contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// The token key could not be opened or created.
    #[error(transparent)]
    Token(#[from] super::token::TokenError),
}

impl MasterKeyError {
    /// Whether a setting must change (a token, PIN or key that is not as configured)
    /// rather than the machine (a file unreadable now).
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::Token(_) | Self::Conflict(_) | Self::Permissions { .. } | Self::Format(_) | Self::Empty(_))
    }
}

impl MasterKey {
    /// A master key with these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        Self::from_source(Arc::new(FileKey { sealing: SealingKey::new(&bytes) }))
    }

    /// A master key kept by `source`.
    pub fn from_source(source: Arc<dyn MasterSource>) -> Self {
        Self { source }
    }

    /// The key in a PKCS#11 token that `settings` names.
    ///
    /// # Errors
    ///
    /// [`MasterKeyError::Token`], naming the setting to change.
    pub fn from_token(settings: &super::token::TokenSettings) -> Result<Self, MasterKeyError> {
        Ok(Self::from_source(Arc::new(super::token::TokenKey::open(settings)?)))
    }

    /// Generates the key `settings` names in its token; refuses to replace one.
    ///
    /// # Errors
    ///
    /// [`MasterKeyError::Token`]: a key with that label exists, or the token cannot be used.
    pub fn create_in_token(settings: &super::token::TokenSettings) -> Result<Self, MasterKeyError> {
        Ok(Self::from_source(Arc::new(super::token::TokenKey::create(settings)?)))
    }

    /// A new random master key.
    ///
    /// # Errors
    ///
    /// Fails only when the OS cannot supply randomness.
    pub fn generate() -> Result<Self, MasterKeyError> {
        Ok(Self::from_bytes(random_bytes()?))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored); `source` names where they
    /// came from, for the error.
    ///
    /// # Errors
    ///
    /// [`MasterKeyError::Format`].
    pub fn from_hex(text: &str, source: &str) -> Result<Self, MasterKeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| MasterKeyError::Format(source.to_owned()))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// Reads the key file, refusing one that group or others may access; creates it
    /// (mode 0600, fsynced) with a new key when it does not exist.
    ///
    /// # Errors
    ///
    /// [`MasterKeyError`] for an unreadable, badly formatted or too open file.
    pub fn load_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        Self::load_or_create_telling(path).map(|(key, _)| key)
    }

    /// [`MasterKey::load_or_create`], also telling whether the file was created now.
    ///
    /// # Errors
    ///
    /// [`MasterKeyError`] for an unreadable, badly formatted or too open file.
    pub fn load_or_create_telling(path: &Path) -> Result<(Self, bool), MasterKeyError> {
        let io = |source| MasterKeyError::Io { path: path.to_path_buf(), source };
        match std::fs::metadata(path) {
            Ok(metadata) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = metadata.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Err(MasterKeyError::Permissions { path: path.to_path_buf(), mode });
                    }
                }
                #[cfg(not(unix))]
                let _ = metadata;
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
                files::remove_stale_partials(path);
                if text.trim().is_empty() {
                    return Err(MasterKeyError::Empty(path.to_path_buf()));
                }
                Ok((Self::from_hex(&text, &path.display().to_string())?, false))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let bytes = Zeroizing::new(random_bytes::<32>()?);
                let text = Zeroizing::new(format!("{}\n", hex::encode(&bytes[..])));
                match files::write_whole(path, text.as_bytes(), Place::CreateNew) {
                    Ok(()) => Ok((Self::from_bytes(*bytes), true)),
                    // Another process created it meanwhile: that key is the one.
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create_telling(path)
                    }
                    Err(error) => Err(io(error)),
                }
            }
            Err(error) => Err(io(error)),
        }
    }

    /// Reads the key file like [`MasterKey::load_or_create`], but never creates it.
    ///
    /// # Errors
    ///
    /// [`MasterKeyError`], also when the file does not exist.
    pub fn load(path: &Path) -> Result<Self, MasterKeyError> {
        if !path.exists() {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "the master key file does not exist");
            return Err(MasterKeyError::Io { path: path.to_path_buf(), source });
        }
        Self::load_or_create(path)
    }

    /// The key's 8-byte id: a keyed hash, safe to store and show.
    pub fn id(&self) -> [u8; 8] {
        self.source.id()
    }

    /// The id in hex, as logs, errors and `keyservice master-key fingerprint` show it.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.id())
    }

    /// What wraps and unwraps with it.
    pub(crate) fn source(&self) -> Arc<dyn MasterSource> {
        self.source.clone()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {})", self.fingerprint())
    }
}

/// Gives a master key file just created to the owner of the current key file, when
/// they differ and the file is root's (root rotating the key of a server that runs as
/// its own user): otherwise the server could not read its new key at the next start.
///
/// # Errors
///
/// When the ownership cannot be changed; the message names both files.
#[cfg(unix)]
pub fn give_to_owner_of(new_key_file: &Path, current: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (Ok(new), Ok(current_meta)) = (std::fs::metadata(new_key_file), std::fs::metadata(current)) else {
        return Ok(());
    };
    if new.uid() == 0 && (current_meta.uid(), current_meta.gid()) != (new.uid(), new.gid()) {
        std::os::unix::fs::chown(new_key_file, Some(current_meta.uid()), Some(current_meta.gid())).map_err(|e| {
            format!("cannot give {} to the owner of {}: {e}", new_key_file.display(), current.display())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_private_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let created = MasterKey::load_or_create(&path).unwrap();
        let loaded = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(created.id(), loaded.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!format!("{created:?}").contains(text.trim()));
        // Nothing but the key file is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["master.key"]);
    }

    #[test]
    fn processes_creating_the_file_at_once_all_get_the_one_key_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let ids: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> =
                (0..8).map(|_| scope.spawn(|| MasterKey::load_or_create(&path).unwrap().id())).collect();
            racers.into_iter().map(|racer| racer.join().unwrap()).collect()
        });
        let written = MasterKey::load(&path).unwrap().id();
        assert!(ids.iter().all(|id| *id == written), "{ids:?}");
    }

    #[test]
    fn what_a_creation_cut_short_left_is_removed_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        let left = files::CutShort::beside(&path);
        MasterKey::load_or_create(&path).unwrap();
        left.assert_swept();
    }

    #[test]
    fn an_empty_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path).unwrap();
        let error = MasterKey::load_or_create(&path).unwrap_err();
        assert!(matches!(error, MasterKeyError::Empty(_)) && error.is_configuration(), "{error}");
        assert!(error.to_string().contains("delete it"), "{error}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "the empty file was changed");
    }

    #[cfg(unix)]
    #[test]
    fn an_open_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = MasterKey::load_or_create(&path).unwrap_err();
        assert!(matches!(error, MasterKeyError::Permissions { mode: 0o640, .. }), "{error}");
    }

    #[test]
    fn bad_hex_is_refused_without_echoing_it() {
        let error = MasterKey::from_hex("zz-secret-zz", "KEYSERVICE_MASTER_KEY").unwrap_err();
        assert!(!error.to_string().contains("secret"));
    }
}
