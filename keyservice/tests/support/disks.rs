//! Disks that fill for real: a small tmpfs mounted for one test (the tests run as root,
//! as CI does), the server's config with its files on them, and the checks every
//! full-disk test ends with.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binary;
use crate::support::{Device, shop_toml};

/// A config for the binary with the data under `data`, the audit log in `audit`, the
/// ledger in `ledger`, the rest in `dir`, and `extra` settings; named after `data`'s
/// directory, so that several can share `dir`.
pub fn config_file(dir: &Path, data: &Path, audit: &Path, ledger: &Path, extra: &str) -> PathBuf {
    let path = dir.join(format!("keyservice-{}.toml", data.file_name().unwrap_or_default().to_string_lossy()));
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\nmaster_key_file = {:?}\nerasure_ledger_file = {:?}\nadmin_socket = {:?}\naudit_log_file = {:?}\nshutdown_grace_secs = 2\ninit_per_minute = 100000\n{extra}\n{}",
        data.join("data").display().to_string(),
        dir.join("master.key").display().to_string(),
        ledger.join("erasures.jsonl").display().to_string(),
        dir.join("admin.sock").display().to_string(),
        audit.join("audit.jsonl").display().to_string(),
        shop_toml("127.0.0.1/32"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the binary on `config`, past the second its last run may have served (the
/// replay floor refuses requests dated in it).
pub fn restart(config: &Path) -> binary::Serving {
    std::thread::sleep(Duration::from_millis(1100));
    binary::serve(&["serve", "--config", config.to_str().unwrap()], &[])
}

/// Sends SIGTERM; returns how long the process took to exit.
pub fn terminate(server: &mut binary::Serving) -> Duration {
    let started = Instant::now();
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    while server.child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(40), "SIGTERM did not stop the server");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Reads every acknowledged key back through `addr`, byte for byte.
pub async fn every_acknowledged_key_reads_back(acknowledged: &[(Device, Vec<u8>)], addr: SocketAddr) {
    let get = |device: &Device| {
        let device = device.clone();
        async move { tokio::time::timeout(Duration::from_secs(15), device.get("/key")).await.expect("a read is answered") }
    };
    for (device, key) in acknowledged {
        let device = Device { addr, ..device.clone() };
        let mut got = get(&device).await;
        if got.status == 401 && got.error() == "stale_date" {
            // A stop that could not store its exact replay floor leaves the reserved one,
            // a few seconds ahead: wait it out as a client does, by the Retry-After.
            let wait: u64 = got.header("retry-after").parse().unwrap();
            tokio::time::sleep(Duration::from_secs(wait)).await;
            got = get(&device).await;
        }
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        assert!(got.body.as_ref() == key.as_slice(), "an acknowledged key came back different");
    }
}

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
