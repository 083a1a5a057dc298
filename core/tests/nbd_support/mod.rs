//! Shared helpers for the NBD integration tests: real servers (qemu-nbd, nbdkit) on Unix sockets
//! in temporary directories, killed when the guard drops.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A socket or pid file name unique within this test process.
fn unique(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}-{}-{}.{ext}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)))
}

pub use crate::common::have;

/// A running NBD server; killed (and reaped) on drop.
pub struct Server {
    child: Option<Child>,
    /// Unix socket the server listens on.
    pub sock: PathBuf,
    /// Export name.
    pub export: String,
}

impl Server {
    /// Start `cmd`, which writes `pid` once it listens (qemu-nbd and nbdkit both do).
    fn start(mut cmd: Command, sock: PathBuf, pid: PathBuf, export: &str) -> Server {
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start nbd server");
        let mut s = Server { child: Some(child), sock, export: export.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pid.exists() || std::fs::read_to_string(&pid).map(|p| p.trim().is_empty()).unwrap_or(true) {
            if let Some(c) = s.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("nbd server exited early: {status}");
                }
            }
            assert!(Instant::now() < deadline, "nbd server did not start on {}", s.sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// The standard URI of this export.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///{}?socket={}", self.export, self.sock.display())
    }

    /// Kill the server now (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `qemu-nbd -f FMT` exporting `file` as `disk` on a socket in `dir`.
pub fn qemu_nbd(dir: &Path, file: &Path, fmt: &str, extra: &[&str]) -> Server {
    let sock = unique(dir, "qemu-nbd", "sock");
    let pid = unique(dir, "qemu-nbd", "pid");
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-f", fmt, "--persistent", "--shared=8", "-x", "disk"])
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", pid.display()))
        .args(extra)
        .arg(file);
    Server::start(cmd, sock, pid, "disk")
}

/// `nbdkit --foreground --unix SOCK ARGS...` (plugin and filters in `args`).
pub fn nbdkit(dir: &Path, args: &[&str]) -> Server {
    let sock = unique(dir, "nbdkit", "sock");
    let pid = unique(dir, "nbdkit", "pid");
    let mut cmd = Command::new("nbdkit");
    cmd.args(["--foreground", "--exit-with-parent", "--unix"]).arg(&sock).arg("-P").arg(&pid).args(args);
    Server::start(cmd, sock, pid, "")
}

/// `nbdkit` as [`nbdkit`], on a socket path the caller chooses: a server restarted on the same
/// socket is "the same server" to a client that reconnects.
pub fn nbdkit_on(sock: &Path, args: &[&str]) -> Server {
    let _ = std::fs::remove_file(sock);
    let pid = unique(sock.parent().expect("socket in a directory"), "nbdkit", "pid");
    let mut cmd = Command::new("nbdkit");
    cmd.args(["--foreground", "--exit-with-parent", "--unix"]).arg(sock).arg("-P").arg(&pid).args(args);
    Server::start(cmd, sock.to_path_buf(), pid, "")
}

pub use crate::common::pattern;

/// Run a command and assert it succeeded; returns stdout.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(out.status.success(), "{prog} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Allocated bytes of a file (st_blocks * 512).
pub fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").blocks() * 512
}
