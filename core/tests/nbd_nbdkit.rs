//! The NBD client against real `nbdkit` servers: memory (sparse, multi-conn), the error filter
//! (typed request errors), pattern and sparse-random data, a 512-byte minimum block size and a
//! server without structured replies.
#![cfg(feature = "nbd")]
#![allow(clippy::unwrap_used)]

mod common;
mod nbd_support;

use bytes::Bytes;
use nbd_support::*;
use vmigrate_core::nbd::{proto, NbdAddr, NbdOptions, NbdTransport};
use vmigrate_core::{BlockTransport, ErrorCode, ExtentKind, ExtentState};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn memory_plugin_round_trip_extents_and_zero() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(dir.path(), &["memory", "64M"]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    assert_eq!(t.size(), 64 * MIB);
    assert!(t.info().has(proto::TF_CAN_MULTI_CONN));
    assert_eq!(t.max_connections(), 4);
    // A fresh memory disk is one big hole.
    let ext = t.extents(0, 64 * MIB, ExtentKind::Allocation).await.unwrap();
    assert!(ext.iter().all(|e| e.state == ExtentState::Hole), "{ext:?}");

    let data = pattern(21, 3 * MIB as usize);
    t.write_at(5 * MIB, Bytes::from(data.clone())).await.unwrap();
    t.flush().await.unwrap();
    let clone = t.try_clone().await.unwrap();
    assert!(clone.read_at(5 * MIB, data.len()).await.unwrap()[..] == data[..]);
    let ext = clone.extents(0, 64 * MIB, ExtentKind::Allocation).await.unwrap();
    let data_bytes: u64 = ext.iter().filter(|e| e.state == ExtentState::Data).map(|e| e.length).sum();
    assert!((3 * MIB..4 * MIB).contains(&data_bytes), "{ext:?}");
    for e in ext.iter().filter(|e| e.state.is_zero()) {
        assert!(e.end() <= 5 * MIB || e.offset >= 8 * MIB, "hole over written data: {e:?}");
    }

    assert!(t.zero(5 * MIB, 3 * MIB).await.unwrap());
    let ext = t.extents(0, 64 * MIB, ExtentKind::Allocation).await.unwrap();
    assert!(ext.iter().all(|e| e.state.is_zero()), "{ext:?}");
    assert!(t.read_at(5 * MIB, 3 * MIB as usize).await.unwrap().iter().all(|b| *b == 0));
    t.close().await;
}

#[tokio::test]
async fn error_filter_gives_typed_request_errors() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(
        dir.path(),
        &[
            "--filter=error",
            "memory",
            "16M",
            "error-pread=EIO",
            "error-pread-rate=100%",
            "error-pwrite=ENOSPC",
            "error-pwrite-rate=100%",
        ],
    );
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    let e = t.read_at(0, 4096).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdRequest, "{}", e.report());
    assert!(e.message().contains("EIO"), "{}", e.report());
    assert!(!e.is_transient());
    let e = t.write_at(0, Bytes::from_static(&[1; 512])).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSpace, "{}", e.report());
    // The connection survives request errors.
    t.flush().await.unwrap();
    assert_eq!(t.read_at(4096, 1).await.unwrap_err().code(), ErrorCode::NbdRequest);
}

#[tokio::test]
async fn pattern_plugin_reads_are_byte_exact() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(dir.path(), &["pattern", "size=48M"]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    // The pattern plugin stores each 8-byte word's own offset, big-endian.
    let expect = |off: u64, len: usize| -> Vec<u8> {
        (off..off + len as u64).map(|i| ((i & !7) >> (8 * (7 - (i % 8)))) as u8).collect()
    };
    for (off, len) in [(0u64, 64usize), (3, 1000), (17 * MIB + 5, 30 << 20), (48 * MIB - 9, 9)] {
        let got = t.read_at(off, len).await.unwrap();
        assert!(got[..] == expect(off, len)[..], "pattern mismatch at {off}+{len}");
    }
}

#[tokio::test]
async fn sparse_random_extents_agree_with_data() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(dir.path(), &["sparse-random", "size=32M", "seed=42", "percent=20", "runlength=65536"]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    let mut at = 0;
    let (mut data, mut zero) = (0u64, 0u64);
    while at < t.size() {
        let ext = t.extents(at, (8 * MIB).min(t.size() - at), ExtentKind::Allocation).await.unwrap();
        for e in &ext {
            let bytes = t.read_at(e.offset, e.length as usize).await.unwrap();
            if e.state.is_zero() {
                assert!(bytes.iter().all(|b| *b == 0), "zero extent {e:?} has data");
                zero += e.length;
            } else {
                data += e.length;
            }
        }
        assert_eq!(ext[0].offset, at);
        at = ext.last().unwrap().end();
    }
    assert_eq!(data + zero, 32 * MIB);
    assert!(data > 3 * MIB && zero > 16 * MIB, "data {data} zero {zero}");
}

#[tokio::test]
async fn minimum_block_size_is_honoured_for_unaligned_requests() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(
        dir.path(),
        &[
            "--filter=blocksize-policy",
            "memory",
            "8M",
            "blocksize-minimum=4096",
            "blocksize-preferred=65536",
            "blocksize-maximum=256K",
            "blocksize-error-policy=error",
        ],
    );
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    let bs = t.info().block_size.unwrap();
    assert_eq!((bs.minimum, bs.maximum), (4096, 256 << 10));
    // The server's maximum, below the 512 KiB the engine is otherwise offered.
    assert_eq!(t.max_request(), 256 << 10);
    let mut expect = vec![0u8; 8 * MIB as usize];
    for (off, len, seed) in [(100u64, 10usize, 1u64), (4000, 5000, 2), (70_001, 3 << 20, 3), (8 * MIB - 7, 7, 4)] {
        let d = pattern(seed, len);
        t.write_at(off, Bytes::from(d.clone())).await.unwrap();
        expect[off as usize..off as usize + len].copy_from_slice(&d);
    }
    assert!(t.zero(5000, 10_000).await.unwrap());
    expect[5000..15_000].fill(0);
    for (off, len) in [(0u64, 8 * MIB as usize), (1, 1), (4095, 2), (70_000, 12_345)] {
        let got = t.read_at(off, len).await.unwrap();
        assert!(got[..] == expect[off as usize..off as usize + len], "mismatch at {off}+{len}");
    }
    let ext = t.extents(1, 100, ExtentKind::Allocation).await.unwrap();
    assert_eq!((ext[0].offset, ext.last().unwrap().end()), (1, 101));
}

#[tokio::test]
async fn server_without_structured_replies_uses_simple_replies() {
    if !have("nbdkit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(dir.path(), &["--no-sr", "memory", "8M"]);
    let t = NbdTransport::connect_with(NbdAddr::Unix(server.sock.clone()), "", NbdOptions::default()).await.unwrap();
    assert!(!t.info().structured && t.info().allocation_context.is_none());
    let d = pattern(8, MIB as usize);
    t.write_at(MIB, Bytes::from(d.clone())).await.unwrap();
    assert!(t.read_at(MIB, d.len()).await.unwrap()[..] == d[..]);
    // Without block status everything is data, as the trait's default says.
    assert_eq!(
        t.extents(0, 8 * MIB, ExtentKind::Allocation).await.unwrap(),
        vec![vmigrate_core::Extent::data(0, 8 * MIB)]
    );
    assert_eq!(t.extents(0, 8, ExtentKind::Changed).await.unwrap_err().code(), ErrorCode::TransportUnsupported);
    // Our side can also refuse structured replies on a server that has them.
    let server2 = nbdkit(dir.path(), &["memory", "1M"]);
    let opts = NbdOptions { structured_replies: false, ..NbdOptions::default() };
    let t2 = NbdTransport::connect_with(NbdAddr::Unix(server2.sock.clone()), "", opts).await.unwrap();
    assert!(!t2.info().structured);
    assert_eq!(t2.read_at(0, 4096).await.unwrap().len(), 4096);
}

/// Issue 14 item 13: a stalled server is a typed Timeout after `request_timeout`, not a wait
/// forever.
#[tokio::test]
async fn a_stalled_server_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = nbdkit(dir.path(), &["--filter=delay", "memory", "1M", "rdelay=30"]);
    let opts = NbdOptions { request_timeout: std::time::Duration::from_millis(500), ..NbdOptions::default() };
    let t = NbdTransport::connect_with(NbdAddr::Unix(server.sock.clone()), "", opts).await.unwrap();
    let started = std::time::Instant::now();
    let e = t.read_at(0, 4096).await.expect_err("stalled");
    assert_eq!(e.code(), ErrorCode::Timeout, "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}
