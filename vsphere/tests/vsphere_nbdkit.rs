//! The VDDK spawn path with nbdkit's file plugin standing in for the vddk plugin.

use sha2::{Digest, Sha256};

#[tokio::test]
async fn nbdkit_child_serves_disk_over_unix_socket() {
    let have =
        std::process::Command::new("nbdkit").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !have {
        assert!(std::env::var_os("CI").is_none(), "nbdkit is required in CI");
        eprintln!("skipping: nbdkit not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let img = dir.path().join("disk.raw");
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i / 512) as u8).collect();
    std::fs::write(&img, &data).expect("write");
    let socket = dir.path().join("nbd.sock");
    let argv: Vec<String> = [
        "nbdkit",
        "--exit-with-parent",
        "--readonly",
        "--foreground",
        "--unix",
        socket.to_str().expect("utf8"),
        "file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("file={}", img.display())])
    .collect();
    let t = vmigrate_vsphere::source::open_nbdkit_disk(&argv, &socket).await.expect("spawn and connect");
    assert_eq!(t.size(), data.len() as u64);
    let mut got = Vec::new();
    let mut off = 0u64;
    while off < t.size() {
        got.extend_from_slice(&t.read_at(off, 1 << 20).await.expect("read"));
        off += 1 << 20;
    }
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data));
    let bad = vec!["nbdkit".to_string(), "--no-such-flag".into()];
    let e = vmigrate_vsphere::source::open_nbdkit_disk(&bad, &dir.path().join("x.sock")).await.expect_err("bad argv");
    assert!(!e.report().is_empty());
}
