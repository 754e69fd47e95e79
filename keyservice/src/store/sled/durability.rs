//! What it takes for sled's writes to survive a power loss, and the data directory's
//! privacy.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::StoreError;

/// What it takes to make sled's writes survive a power loss.
pub(super) struct Durability {
    pub(super) db: sled::Db,
    /// sled's single log-and-page file, `<dir>/db`.
    pub(super) db_file: File,
    pub(super) dir: PathBuf,
    /// Blob files already fsynced; blob files are written once and never changed.
    pub(super) synced_blobs: HashSet<OsString>,
    /// A blob file was synced since the blob directory last was.
    pub(super) blob_dir_unsynced: bool,
}

/// Why a flush failed.
pub(super) enum SyncFailure {
    /// Nothing was found undurable, only left unchecked (a file could not be opened for
    /// want of descriptors or memory): the next flush checks everything again.
    Transient(std::io::Error),
    /// An fsync or sled's own flush failed: what the page cache held is in doubt.
    Fatal(Box<dyn std::error::Error + Send + Sync>),
}

impl SyncFailure {
    pub(super) fn into_store_error(self) -> StoreError {
        match self {
            Self::Transient(error) => StoreError::Unavailable(error.into()),
            Self::Fatal(error) => StoreError::Backend(error),
        }
    }
}

/// Opening a file or directory failed for a reason that passes.
fn transient_open(error: std::io::Error) -> SyncFailure {
    // EMFILE, ENFILE and ENOMEM on Linux; EINTR and EAGAIN anywhere.
    const PASSING: [i32; 3] = [24, 23, 12];
    let passing = error.raw_os_error().is_some_and(|code| PASSING.contains(&code))
        || matches!(error.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock);
    if passing { SyncFailure::Transient(error) } else { SyncFailure::Fatal(error.into()) }
}

impl Durability {
    pub(super) fn sync(&mut self) -> Result<(), SyncFailure> {
        self.db.flush().map_err(|e| SyncFailure::Fatal(e.into()))?;
        self.sync_new_blobs()?;
        self.db_file.sync_data().map_err(|e| SyncFailure::Fatal(e.into()))?;
        Ok(())
    }

    fn sync_new_blobs(&mut self) -> Result<(), SyncFailure> {
        let fatal = |e: std::io::Error| SyncFailure::Fatal(e.into());
        let blob_dir = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(transient_open(error)),
        };
        let mut present = HashSet::new();
        for entry in entries {
            let name = entry.map_err(transient_open)?.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(blob_dir.join(&name)).map_err(transient_open)?.sync_all().map_err(fatal)?;
                // Recorded at once: a later failure in this pass must not make it look
                // unsynced, nor may an unsynced one look synced.
                self.synced_blobs.insert(name.clone());
                self.blob_dir_unsynced = true;
            }
            present.insert(name);
        }
        if self.blob_dir_unsynced {
            File::open(&blob_dir).map_err(transient_open)?.sync_all().map_err(fatal)?;
            self.blob_dir_unsynced = false;
        }
        // Forget blobs sled has since collected, so the set stays as small as the dir.
        self.synced_blobs = present;
        Ok(())
    }
}

/// Creates `dir` (mode 0700) if needed, and takes group and other access away from it
/// and everything in it, so a data directory made under a loose umask (or by an older
/// version) is private too. Files sled creates later are then out of reach as well.
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    make_private(dir)?;
    Ok(())
}

#[cfg(unix)]
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::symlink_metadata(path)?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    if metadata.is_dir() {
        for entry in std::fs::read_dir(path)? {
            make_private(&entry?.path())?;
        }
    }
    Ok(())
}
