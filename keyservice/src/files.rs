//! Files written whole or not at all: the master key file and backups. A file is
//! written under a hidden name beside its own, fsynced, and only then given its name
//! (and the directory fsynced), so a crash or a kill at any moment leaves the old file,
//! or no file, or the complete new one, never a torn one under the final name.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use keyservice_client::protocol::random_bytes;

/// How a file written by [`write_whole`] takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Replacing any file of that name (a backup written again).
    Replace,
    /// Only if no file has that name: otherwise the write fails with `AlreadyExists`
    /// and the file there is left as it was (a key file, never overwritten, even by a
    /// process creating it at the same moment).
    CreateNew,
}

/// How old a hidden partial file must be for [`remove_stale_partials`] to remove it: no
/// write that is still going on leaves its file untouched this long.
pub(crate) const STALE_PARTIAL: Duration = Duration::from_secs(60);

/// The directory `path` is in (`.` for a bare file name).
pub(crate) fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes the entries of `dir` (a file created, renamed or linked there) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` (mode 0600) whole or not at all, and puts it in `place`.
/// What earlier writes of `path` stopped partway left beside it is removed once stale.
pub(crate) fn write_whole(path: &Path, bytes: &[u8], place: Place) -> std::io::Result<()> {
    remove_stale_partials(path);
    let dir = dir_of(path);
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    // A name of its own: two processes writing `path` at once never share a partial file.
    let suffix = hex::encode(random_bytes::<8>().map_err(std::io::Error::other)?);
    let partial = dir.join(format!(".{}.{suffix}.partial", name.to_string_lossy()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&partial).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let placed = written.and_then(|()| match place {
        Place::Replace => std::fs::rename(&partial, path),
        Place::CreateNew => std::fs::hard_link(&partial, path),
    });
    // Tidiness only: once placed, the file has its name (and after a rename the partial
    // name is gone already).
    let _ = std::fs::remove_file(&partial);
    placed?;
    sync_dir(dir)
}

/// Removes the hidden partial files that writes of `path` stopped partway (a kill, a
/// crash) left beside it, once [`STALE_PARTIAL`] old. Tidiness: a directory that cannot
/// be listed or written (a read-only mount) is left as it is.
pub(crate) fn remove_stale_partials(path: &Path) {
    let Some(name) = path.file_name() else { return };
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else { return };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if !file_name.starts_with(&prefix) || !file_name.ends_with(".partial") {
            continue;
        }
        let age = entry.metadata().and_then(|metadata| metadata.modified()).ok().and_then(|m| m.elapsed().ok());
        if age.is_some_and(|age| age >= STALE_PARTIAL) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What writes of a file stopped partway leave beside it, for the tests of the sweep:
/// a stale partial file of it, a fresh one (a write that may still be going on), and a
/// stale one of another file.
#[cfg(test)]
pub(crate) struct CutShort {
    stale: std::path::PathBuf,
    fresh: std::path::PathBuf,
    other: std::path::PathBuf,
}

#[cfg(test)]
impl CutShort {
    /// Leaves the three beside `path`.
    pub(crate) fn beside(path: &Path) -> Self {
        let name = path.file_name().unwrap().to_string_lossy();
        let dir = dir_of(path);
        let left = Self {
            stale: dir.join(format!(".{name}.00112233aabbccdd.partial")),
            fresh: dir.join(format!(".{name}.44556677aabbccdd.partial")),
            other: dir.join(".other.key.8899aabbccddeeff.partial"),
        };
        for file in [&left.stale, &left.fresh, &left.other] {
            std::fs::write(file, "ab\n").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - STALE_PARTIAL * 2;
        for file in [&left.stale, &left.other] {
            std::fs::File::options().write(true).open(file).unwrap().set_modified(long_ago).unwrap();
        }
        left
    }

    /// Only the stale partial file of the file is gone.
    pub(crate) fn assert_swept(&self) {
        assert!(!self.stale.exists(), "a stale partial file of this file was left");
        assert!(self.fresh.exists(), "a write that may still be going on lost its file");
        assert!(self.other.exists(), "another file's partial file was removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_never_placed_over_one_and_a_replacement_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_whole(&path, b"first", Place::CreateNew).unwrap();
        let refused = write_whole(&path, b"second", Place::CreateNew).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        write_whole(&path, b"third", Place::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"third");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["file"], "a partial file was left behind");
    }

    #[test]
    fn what_a_write_cut_short_left_is_removed_once_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let left = CutShort::beside(&path);
        remove_stale_partials(&path);
        left.assert_swept();
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(dir_of(Path::new("master.key")), Path::new("."));
        assert_eq!(dir_of(Path::new("/etc/keyservice/master.key")), Path::new("/etc/keyservice"));
    }
}
