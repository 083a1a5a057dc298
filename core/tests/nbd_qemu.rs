//! The NBD client against a real `qemu-nbd`: handshake, byte-equal round trips, block status on
//! sparse raw and qcow2 images (checked against `qemu-img map`), write zeroes keeping the target
//! sparse, read-only exports, multi-conn clones and a server killed mid-copy.
#![cfg(feature = "nbd")]
#![allow(clippy::unwrap_used)]

mod common;
mod nbd_support;

use std::sync::Arc;

use bytes::Bytes;
use nbd_support::*;
use vmigrate_core::nbd::{proto, NbdAddr, NbdOptions, NbdTransport};
use vmigrate_core::{BlockTransport, ErrorCode, ExtentKind, ExtentState};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn handshake_read_write_round_trip_is_byte_equal() {
    if !have("qemu-nbd") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.raw");
    let size = 48 * MIB;
    let mut expect = pattern(1, size as usize);
    std::fs::write(&file, &expect).unwrap();
    let server = qemu_nbd(dir.path(), &file, "raw", &[]);

    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    assert_eq!(t.size(), size);
    let info = t.info();
    assert!(info.used_go && info.structured && info.allocation_context.is_some(), "{info:?}");
    assert!(info.has(proto::TF_SEND_FLUSH) && info.has(proto::TF_SEND_WRITE_ZEROES));
    // The protocol allows 32 MiB; the engine is offered the size the server handles best.
    assert_eq!(info.max_payload(), 32 << 20);
    assert_eq!(t.max_request(), 512 << 10);

    // Reads at odd offsets and lengths, one larger than the maximum payload (split internally).
    for (off, len) in [(0u64, 4096usize), (12_345, 77_777), (size - 1, 1), (3 * MIB + 5, 40 << 20)] {
        let got = t.read_at(off, len).await.unwrap();
        assert_eq!(&got[..], &expect[off as usize..off as usize + len], "read {off}+{len}");
    }
    // Concurrent writes, unaligned and larger than one request.
    let writes: Vec<(u64, Vec<u8>)> =
        vec![(0, pattern(2, 4096)), (1_000_001, pattern(3, 333_333)), (8 * MIB, pattern(4, 36 << 20))];
    let t = Arc::new(t);
    let mut tasks = Vec::new();
    for (off, data) in writes.clone() {
        let t = t.clone();
        tasks.push(tokio::spawn(async move { t.write_at(off, Bytes::from(data)).await }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    t.flush().await.unwrap();
    for (off, data) in &writes {
        expect[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let got = t.read_at(0, size as usize).await.unwrap();
    assert!(got[..] == expect[..], "read-back differs from what was written");
    drop(t);
    drop(server);

    // The backing file holds exactly the bytes: compare with an independent reference.
    let reference = dir.path().join("ref.raw");
    std::fs::write(&reference, &expect).unwrap();
    run("qemu-img", &["compare", "-q", "-f", "raw", "-F", "raw", file.to_str().unwrap(), reference.to_str().unwrap()]);
    assert!(std::fs::read(&file).unwrap() == expect);
}

#[tokio::test]
async fn block_status_matches_qemu_img_map_on_sparse_qcow2() {
    if !have("qemu-nbd") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("sparse.qcow2");
    let p = img.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", p, "64M"]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0xab 1M 2M", "-c", "write -z 8M 1M", "-c", "write -P 7 20M 64k", p],
    );
    let map = run("qemu-img", &["map", "--output=json", "-f", "qcow2", p]);
    let server = qemu_nbd(dir.path(), &img, "qcow2", &[]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();

    // Walk the whole disk in 16 MiB work ranges, as the engine does.
    let mut ours = Vec::new();
    let mut at = 0;
    while at < t.size() {
        let len = (16 * MIB).min(t.size() - at);
        let got = t.extents(at, len, ExtentKind::Allocation).await.unwrap();
        assert_eq!(got.first().unwrap().offset, at);
        at = got.last().unwrap().end();
        ours.extend(got);
    }
    let ours = vmigrate_core::transport::coalesce(ours);
    // qemu-img map: every byte qemu calls data must be Data for us, every non-data byte zero.
    let entries: Vec<serde_json::Value> = serde_json::from_str(&map).unwrap();
    for e in entries {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        let data = e["data"].as_bool().unwrap();
        for x in ours.iter().filter(|x| x.offset < start + len && x.end() > start) {
            assert_eq!(x.state == ExtentState::Data, data, "extent {x:?} vs map entry {e}");
        }
    }
    assert!(ours.iter().any(|x| x.state == ExtentState::Data && x.offset == MIB && x.length == 2 * MIB), "{ours:?}");
    assert!(ours.iter().any(|x| x.state.is_zero() && x.offset <= 8 * MIB && x.end() >= 9 * MIB), "{ours:?}");
    // Holes read as zeroes and data reads back as written.
    assert!(t.read_at(40 * MIB, 65536).await.unwrap().iter().all(|b| *b == 0));
    assert!(t.read_at(MIB, 2 * MIB as usize).await.unwrap().iter().all(|b| *b == 0xab));
}

#[tokio::test]
async fn write_zeroes_keeps_raw_target_sparse() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("target.raw");
    std::fs::File::create(&file).unwrap().set_len(64 * MIB).unwrap();
    let server = qemu_nbd(dir.path(), &file, "raw", &["--discard=unmap", "--detect-zeroes=unmap"]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();

    t.write_at(4 * MIB, Bytes::from(pattern(9, 8 * MIB as usize))).await.unwrap();
    t.flush().await.unwrap();
    assert!(allocated(&file) >= 8 * MIB, "written data is allocated");
    let ext = t.extents(0, 64 * MIB, ExtentKind::Allocation).await.unwrap();
    assert_eq!(ext[0].state, ExtentState::Hole, "{ext:?}");
    assert!(ext.iter().any(|e| e.state == ExtentState::Data && e.offset <= 4 * MIB && e.end() >= 12 * MIB), "{ext:?}");

    // Zeroing punches the range again: the file goes back to (almost) nothing allocated.
    assert!(t.zero(4 * MIB, 8 * MIB).await.unwrap());
    // An unaligned zero range is accepted too.
    assert!(t.zero(100, 70_000).await.unwrap());
    t.flush().await.unwrap();
    assert!(allocated(&file) < MIB, "zeroed range still allocated: {} bytes", allocated(&file));
    assert!(t.read_at(4 * MIB, 8 * MIB as usize).await.unwrap().iter().all(|b| *b == 0));
    let ext = t.extents(0, 64 * MIB, ExtentKind::Allocation).await.unwrap();
    assert!(ext.iter().all(|e| e.state.is_zero()), "{ext:?}");
}

#[tokio::test]
async fn read_only_export_refuses_writes_with_typed_error() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ro.raw");
    std::fs::write(&file, pattern(5, MIB as usize)).unwrap();
    let server = qemu_nbd(dir.path(), &file, "raw", &["--read-only"]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    assert!(t.info().has(proto::TF_READ_ONLY));
    let e = t.write_at(0, Bytes::from_static(b"nope")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::TransportUnsupported);
    assert_eq!(t.zero(0, 4096).await.unwrap_err().code(), ErrorCode::TransportUnsupported);
    assert_eq!(&t.read_at(0, 4096).await.unwrap()[..], &pattern(5, MIB as usize)[..4096]);
    assert_eq!(t.read_at(MIB, 1).await.unwrap_err().code(), ErrorCode::OutOfBounds);
}

#[tokio::test]
async fn unknown_export_is_a_typed_request_error() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.raw");
    std::fs::File::create(&file).unwrap().set_len(MIB).unwrap();
    let server = qemu_nbd(dir.path(), &file, "raw", &[]);
    let e = NbdTransport::connect_with(NbdAddr::Unix(server.sock.clone()), "nope", NbdOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdRequest, "{}", e.report());
    assert!(e.message().contains("NBD_REP_ERR_UNKNOWN"), "{}", e.report());
    let e = NbdTransport::connect("nbd+unix:///disk?socket=/nonexistent/x.sock").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdConnect);
    assert!(e.is_transient());
}

#[tokio::test]
async fn multi_conn_clones_share_one_consistent_export() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mc.raw");
    std::fs::File::create(&file).unwrap().set_len(16 * MIB).unwrap();
    let server = qemu_nbd(dir.path(), &file, "raw", &[]);
    let t = NbdTransport::connect(&server.uri()).await.unwrap();
    assert!(t.info().has(proto::TF_CAN_MULTI_CONN));
    assert_eq!(t.max_connections(), 4);
    let mut handles: Vec<Box<dyn BlockTransport>> = Vec::new();
    for _ in 0..3 {
        handles.push(t.try_clone().await.unwrap());
    }
    let writes = handles.iter().enumerate().map(|(i, h)| async move {
        h.write_at(i as u64 * 4 * MIB, Bytes::from(pattern(10 + i as u64, 4 * MIB as usize))).await?;
        h.flush().await
    });
    futures::future::try_join_all(writes).await.unwrap();
    // Another connection sees every clone's writes.
    for i in 0..3u64 {
        let got = t.read_at(i * 4 * MIB, 4 * MIB as usize).await.unwrap();
        assert!(got[..] == pattern(10 + i, 4 * MIB as usize)[..], "clone {i} data");
    }
    // A server without multi-conn (qemu-nbd --shared=1 still advertises it for raw; use
    // connections=1 in options) reports one connection.
    let one = NbdTransport::connect_with(
        NbdAddr::Unix(server.sock.clone()),
        "disk",
        NbdOptions { connections: 1, ..NbdOptions::default() },
    )
    .await
    .unwrap();
    assert_eq!(one.max_connections(), 1);
    one.close().await;
}

#[tokio::test]
async fn server_killed_mid_copy_fails_pending_requests_with_nbd_connect() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.raw");
    std::fs::write(&file, pattern(6, 32 * MIB as usize)).unwrap();
    let mut server = qemu_nbd(dir.path(), &file, "raw", &[]);
    let t = Arc::new(NbdTransport::connect(&server.uri()).await.unwrap());
    let reader = {
        let t = t.clone();
        tokio::spawn(async move {
            // Keep many reads in flight until one fails.
            loop {
                let reads = (0..16u64).map(|i| t.read_at(i * 2 * MIB, 2 * MIB as usize));
                if let Err(e) = futures::future::try_join_all(reads).await {
                    return e;
                }
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    server.kill();
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), reader).await.expect("no hang").unwrap();
    assert_eq!(e.code(), ErrorCode::NbdConnect, "{}", e.report());
    assert!(e.is_transient());
    let e = t.read_at(0, 512).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdConnect, "{}", e.report());
}

#[tokio::test]
async fn dirty_bitmap_gives_changed_extents() {
    if !have("qemu-nbd") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cbt.qcow2");
    let p = img.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", "qcow2", p, "16M"]);
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 1 0 4M", p]);
    run("qemu-img", &["bitmap", "--add", "-f", "qcow2", p, "b0"]);
    run("qemu-io", &["-f", "qcow2", "-c", "write -P 2 8M 1M", p]);
    let server = qemu_nbd(dir.path(), &img, "qcow2", &["-B", "b0"]);
    let opts = NbdOptions { dirty_bitmap: Some("b0".into()), ..NbdOptions::default() };
    let t = NbdTransport::connect_with(NbdAddr::Unix(server.sock.clone()), "disk", opts).await.unwrap();
    assert!(t.info().dirty_context.is_some());
    let changed = t.extents(0, 16 * MIB, ExtentKind::Changed).await.unwrap();
    let dirty: Vec<_> = changed.iter().filter(|e| e.state == ExtentState::Data).collect();
    assert_eq!(dirty.len(), 1, "{changed:?}");
    assert_eq!((dirty[0].offset, dirty[0].length), (8 * MIB, MIB), "{changed:?}");
    // The allocation map still sees both writes.
    let alloc = t.extents(0, 16 * MIB, ExtentKind::Allocation).await.unwrap();
    let data: u64 = alloc.iter().filter(|e| e.state == ExtentState::Data).map(|e| e.length).sum();
    assert_eq!(data, 5 * MIB, "{alloc:?}");
    // Asking for a bitmap the server does not export fails at connect.
    let opts = NbdOptions { dirty_bitmap: Some("nope".into()), ..NbdOptions::default() };
    let e = NbdTransport::connect_with(NbdAddr::Unix(server.sock.clone()), "disk", opts).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdRequest, "{}", e.report());
}
