//! A small tmpfs mounted for one test (the tests run as root, as CI does), to fill a
//! disk for real.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on a new directory; unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root, as the test machines give");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free on it now.
    pub fn free(&self) -> u64 {
        keyservice::disk::free_bytes(self.path()).unwrap()
    }

    /// Fills the file system but for about `leave` bytes, with a file it returns.
    pub fn fill(&self, leave: u64) -> PathBuf {
        self.fill_as("filler", leave)
    }

    /// Fills the file system but for about `leave` bytes, with a file named `name`.
    pub fn fill_as(&self, name: &str, leave: u64) -> PathBuf {
        let filler = self.path().join(name);
        std::fs::write(&filler, vec![0u8; self.free().saturating_sub(leave) as usize]).unwrap();
        filler
    }

    /// Takes every byte left, as another process writing to the disk would: a file that
    /// grows until the file system refuses. Returns it.
    pub fn take_the_rest(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.path().join(name);
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // The last partial page too.
        while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
