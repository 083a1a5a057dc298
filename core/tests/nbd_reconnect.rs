//! Issue 14 item 13: a lost NBD connection is reopened on retry. A real server (nbdkit on a
//! unix socket) is killed in the middle of an engine copy and restarted on the same socket: the
//! copy completes byte for byte. A server that never comes back ends the copy with a typed
//! error in bounded time. A writable server that loses acknowledged writes with its connection
//! makes the next flush fail instead of calling them durable.
#![cfg(feature = "nbd")]
#![allow(clippy::unwrap_used)]

mod common;
mod nbd_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nbd_support::*;
use vmigrate_core::engine::{self, CopyControl, CopyOptions};
use vmigrate_core::file::{FileOptions, FileTransport};
use vmigrate_core::nbd::{NbdAddr, NbdOptions, NbdTransport};
use vmigrate_core::{BlockTransport, ErrorCode};
use vmigrate_testkit::peers::qemu_img_compare_raw;

const MIB: u64 = 1 << 20;

/// A 48 MiB source with data in four places (the rest holes) and the bytes it should read as.
fn source(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    use std::os::unix::fs::FileExt;
    let path = dir.join("src.raw");
    let f = std::fs::File::create(&path).unwrap();
    let size = 48 * MIB;
    f.set_len(size).unwrap();
    let mut want = vec![0u8; size as usize];
    for (i, (off, len)) in [(0, 6 * MIB), (9 * MIB, 12 * MIB), (25 * MIB, MIB), (30 * MIB, 17 * MIB)].iter().enumerate()
    {
        let d = pattern(i as u64 + 1, *len as usize);
        f.write_all_at(&d, *off).unwrap();
        want[*off as usize..(*off + *len) as usize].copy_from_slice(&d);
    }
    (path, want)
}

/// nbdkit serving `file` read-only with two threads and 200 ms per read (the delay filter): a
/// copy of 36 MiB of data in 2 MiB reads takes about two seconds, so a kill lands in it.
fn slow_server(sock: &Path, file: &Path) -> Server {
    nbdkit_on(sock, &["-r", "-t", "2", "--filter=delay", "file", &format!("file={}", file.display()), "rdelay=200ms"])
}

/// Start an engine copy from the server on `sock` into `dst` in a task.
async fn start_copy(
    sock: &Path,
    dst: &Path,
    size: u64,
) -> tokio::task::JoinHandle<vmigrate_core::Result<engine::CopyStats>> {
    let src = NbdTransport::connect_with(NbdAddr::Unix(sock.to_path_buf()), "", NbdOptions::default()).await.unwrap();
    let dst = FileTransport::open(dst, FileOptions { create_size: Some(size), ..Default::default() }).await.unwrap();
    tokio::spawn(async move { engine::copy(&src, &dst, &CopyOptions::default(), &CopyControl::new()).await })
}

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// An engine copy from a [`slow_server`] whose server was killed (SIGKILL) mid-copy, the start
/// both server-loss tests share: the copy task is still running, reading from nothing.
struct KilledMidCopy {
    dir: tempfile::TempDir,
    /// The source file the server served, and the bytes it reads as.
    src: PathBuf,
    want: Vec<u8>,
    /// The socket a restarted server must listen on.
    sock: PathBuf,
    /// The copy's target file.
    dst: PathBuf,
    copy: tokio::task::JoinHandle<vmigrate_core::Result<engine::CopyStats>>,
}

/// Start a copy from a slow server, and kill the server 700 ms in (asserting the copy still
/// runs, so the kill lands mid-copy).
async fn kill_server_mid_copy() -> KilledMidCopy {
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path());
    let sock = dir.path().join("nbd.sock");
    let mut server = slow_server(&sock, &src);
    let dst = dir.path().join("dst.raw");
    let copy = start_copy(&sock, &dst, want.len() as u64).await;

    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !copy.is_finished(),
        "the copy must still run when the server dies: {:?}",
        if copy.is_finished() { Some(copy.await) } else { None }
    );
    server.kill();
    KilledMidCopy { dir, src, want, sock, dst, copy }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_server_killed_and_restarted_mid_copy_copies_byte_equal() {
    if !have("nbdkit") {
        return;
    }
    let KilledMidCopy { dir: _dir, src, want, sock, dst, copy } = kill_server_mid_copy().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _server = slow_server(&sock, &src);

    let stats = tokio::time::timeout(Duration::from_secs(60), copy).await.unwrap().unwrap().unwrap();
    assert!(stats.bytes_read >= 36 * MIB, "{stats:?}");
    let got = file_bytes(&dst);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the target differs from the source after the reconnect");
    // And as qemu-img sees it, when installed.
    if have("qemu-img") {
        qemu_img_compare_raw(&src, &dst).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_server_that_never_comes_back_is_a_typed_error_in_bounded_time() {
    if !have("nbdkit") {
        return;
    }
    let KilledMidCopy { dir: _dir, copy, .. } = kill_server_mid_copy().await;
    let killed = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(60), copy).await.unwrap().unwrap().expect_err("server is gone");
    let took = killed.elapsed();
    assert_eq!(e.code(), ErrorCode::NbdConnect, "{}", e.report());
    assert!(e.report().contains("reconnect attempt"), "{}", e.report());
    // Default policy: 6 attempts over about 8 s, then the engine's retries fail at once.
    assert!(took < Duration::from_secs(20), "gave up after {took:?}");
    assert!(took > Duration::from_secs(5), "gave up too early ({took:?}): it did not try to reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_lost_with_the_connection_fail_the_next_flush() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nbd.sock");
    // The memory plugin keeps writes in the server process: a killed server loses them, as a
    // server host that crashes loses what it had not flushed.
    let mut server = nbdkit_on(&sock, &["memory", "8M"]);
    let t = NbdTransport::connect_with(NbdAddr::Unix(sock.clone()), "", NbdOptions::default()).await.unwrap();
    let data = pattern(3, MIB as usize);
    t.write_at(0, Bytes::from(data.clone())).await.unwrap();
    t.flush().await.unwrap();
    t.write_at(2 * MIB, Bytes::from(data.clone())).await.unwrap();
    server.kill();
    let _server = nbdkit_on(&sock, &["memory", "8M"]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The write after the last flush is gone: the flush that would call it durable fails, and
    // keeps failing (a later flush on the new connection covers nothing of the old one).
    for _ in 0..2 {
        let e = t.flush().await.expect_err("writes were lost");
        assert_eq!(e.code(), ErrorCode::NbdConnect, "{}", e.report());
        assert!(e.report().contains("acknowledged"), "{}", e.report());
    }
    // The new connection works, and shows why the flush had to fail.
    assert!(t.read_at(2 * MIB, MIB as usize).await.unwrap().iter().all(|b| *b == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_restart_reconnects_without_losing_anything_flushed() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (src, want) = source(dir.path());
    let sock = dir.path().join("nbd.sock");
    let mut server = nbdkit_on(&sock, &["-r", "file", &format!("file={}", src.display())]);
    let t = NbdTransport::connect_with(NbdAddr::Unix(sock.clone()), "", NbdOptions::default()).await.unwrap();
    assert!(t.read_at(9 * MIB, 4096).await.unwrap()[..] == want[9 * MIB as usize..][..4096]);
    server.kill();
    let _server = nbdkit_on(&sock, &["-r", "file", &format!("file={}", src.display())]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let off = 30 * MIB as usize;
    assert!(t.read_at(off as u64, 8192).await.unwrap()[..] == want[off..off + 8192]);
    // Nothing was written, so flushing is fine (a read-only export ignores it).
    t.flush().await.unwrap();
}
