//! `vmigrate copy` with NBD URIs, against real servers: qemu-nbd as source, nbdkit as target.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(sock: &Path) {
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "server socket {} never appeared", sock.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vmigrate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmigrate")).args(args).output().expect("run vmigrate")
}

fn sparse_image(path: &Path) {
    let out = Command::new("qemu-img").args(["create", "-f", "raw"]).arg(path).arg("64M").output().expect("qemu-img");
    assert!(out.status.success());
    for (off, pat) in [("0", "0x11"), ("5M", "0x22"), ("33M", "0x33"), ("63M", "0x44")] {
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", &format!("write -P {pat} {off} 512k")])
            .arg(path)
            .output()
            .expect("qemu-io (qemu-utils)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn copy_nbd_to_file_and_file_to_nbd() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src.raw");
    sparse_image(&src);
    let sock = dir.path().join("qemu-nbd.sock");
    let _qemu = Server(
        Command::new("qemu-nbd")
            .args(["-f", "raw", "--persistent", "--shared=8", "-x", "disk", "--socket"])
            .arg(&sock)
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-nbd (qemu-utils) is installed"),
    );
    wait_for(&sock);
    let uri = format!("nbd+unix:///disk?socket={}", sock.display());
    let out_file = dir.path().join("out.raw");
    let out = vmigrate(&["copy", &uri, out_file.to_str().expect("utf8"), "--verify", "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(s["size"].as_u64(), Some(64 << 20));
    assert!(s["bytesRead"].as_u64().expect("read") <= 4 << 20, "holes were not read: {s}");
    assert_eq!(s["sourceDigest"], s["targetDigest"]);
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&out_file)
        .output()
        .expect("cmp");
    assert!(cmp.status.success());

    // file -> NBD target (nbdkit memory), then read it back through qemu-img.
    let sock2 = dir.path().join("nbdkit.sock");
    let _kit = Server(
        Command::new("nbdkit")
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(&sock2)
            .args(["memory", "64M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdkit is installed"),
    );
    wait_for(&sock2);
    let uri2 = format!("nbd+unix:///?socket={}", sock2.display());
    let out = vmigrate(&["copy", src.to_str().expect("utf8"), &uri2, "--output", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = dir.path().join("back.raw");
    let out = vmigrate(&["copy", &uri2, back.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&back)
        .output()
        .expect("cmp");
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stdout));

    // One export under two spellings of its socket is one disk: refused (issue 14, item 1).
    let uri2b = format!("nbd+unix:///?socket={}/./nbdkit.sock", dir.path().display());
    let out = vmigrate(&["copy", &uri2, &uri2b]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SameDisk"), "{}", String::from_utf8_lossy(&out.stderr));
    // The file qemu-nbd serves, as the target of a copy from its own export: it exists, so it
    // is refused without --overwrite, and stays intact.
    let before = std::fs::read(&src).expect("read");
    let out = vmigrate(&["copy", &uri, src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TargetExists"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&src).expect("read") == before, "the served file was changed");
}

#[test]
fn unreachable_nbd_is_a_typed_error() {
    let out = vmigrate(&["copy", "nbd+unix:///disk?socket=/nonexistent/sock", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NbdConnect"), "{err}");
}

/// Issue 14 item 14: Ctrl-C (SIGINT) during `vmigrate copy` exits 5 (cancelled), as documented,
/// and, with no checkpoint to resume from, leaves no partial output behind.
#[test]
fn ctrl_c_exits_5_and_removes_the_partial_output() {
    stopped_copy_exits_5_and_removes_the_partial_output("-INT");
}

/// Issue 12: SIGTERM (how Kubernetes, systemd or `kill` stop a process) is a clean cancel too.
#[test]
fn sigterm_exits_5_and_removes_the_partial_output() {
    stopped_copy_exits_5_and_removes_the_partial_output("-TERM");
}

fn stopped_copy_exits_5_and_removes_the_partial_output(signal: &str) {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("slow.sock");
    // Every read takes 200 ms: the copy is still running when SIGINT comes.
    let _kit = Server(
        Command::new("nbdkit")
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(&sock)
            .args(["--filter=delay", "--filter=noextents", "pattern", "64M", "rdelay=200ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdkit is installed"),
    );
    wait_for(&sock);
    let out_file = dir.path().join("partial.raw");
    let child = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["copy", "--connections", "1", "--request-size", "65536"])
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .arg(&out_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start copy");
    let t = Instant::now();
    while !out_file.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "the copy never created its target");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let kill = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Cancelled"));
    assert!(!out_file.exists(), "a partial output was left behind");
}

/// Issue 14 item 13: `--nbd-timeout` is the deadline of one NBD request. A server that stops
/// answering (nbdkit's delay filter holding every read of its data for 60 s) makes `vmigrate copy` fail
/// with the typed Timeout soon after the deadline (and its retries), not wait for the server;
/// a zero deadline is refused as a usage error.
#[test]
fn nbd_timeout_flag_bounds_a_stalled_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("stalled.sock");
    let _kit = Server(
        Command::new("nbdkit")
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(&sock)
            .args(["--filter=delay", "pattern", "1M", "rdelay=60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nbdkit is installed"),
    );
    wait_for(&sock);
    let uri = format!("nbd+unix:///?socket={}", sock.display());
    let out_file = dir.path().join("out.raw");
    let started = Instant::now();
    let out = vmigrate(&["copy", &uri, out_file.to_str().expect("utf8"), "--nbd-timeout", "1s", "--output", "json"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // The 1 s deadline is what ended each attempt (the final error may be the reconnect giving
    // up, NbdConnect, when nbdkit stops accepting while its stalled threads sleep).
    assert!(stderr.contains("no reply within 1s"), "{stderr}");
    assert!(stderr.contains("error[Timeout]") || stderr.contains("error[NbdConnect]"), "{stderr}");
    assert!(took < Duration::from_secs(45), "the copy waited {took:?} for a stalled server");
    assert!(!out_file.exists(), "a partial output was left");

    let out = vmigrate(&["copy", &uri, out_file.to_str().expect("utf8"), "--nbd-timeout", "0s"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
