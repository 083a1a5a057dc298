//! VMDK images written by real `qemu-img`, read back through our reader and proven identical
//! with `qemu-img compare`; the allocation map must match the data layout grain by grain.

mod vmdk_common;

use std::path::Path;

use vmdk_common::*;
use vmigrate_core::{BlockTransport, ErrorCode, ExtentKind, ExtentState};
use vmigrate_vsphere::vmdk::{self, open_vmdk};

const SIZE: u64 = 48 << 20;

async fn round_trip(dir: &Path, raw: &Path, subformat: &str, sparse: bool) {
    let vmdk_path = dir.join(format!("{subformat}.vmdk"));
    convert(raw, subformat, &vmdk_path);
    let disk = open_vmdk(&vmdk_path).await.unwrap_or_else(|e| panic!("{subformat}: {}", e.report()));
    assert_eq!(disk.size(), std::fs::metadata(raw).expect("stat").len(), "{subformat} size");
    let out = dir.join(format!("{subformat}.out.raw"));
    copy_to_raw(disk.as_ref(), &out).await;
    let (same, msg) = qemu_compare("raw", raw, "raw", &out);
    assert!(same, "{subformat}: our read differs from the source: {msg}");
    if sparse {
        assert_eq!(grain_is_data(disk.as_ref()).await, grain_has_data(raw), "{subformat}: allocation map");
    }
    // Reads that start and end inside grains (compressed ones are inflated in part), checked
    // against the raw image.
    let want = std::fs::read(raw).expect("read raw");
    let mut rng = Rng::new(0x5eed);
    for _ in 0..40 {
        let off = rng.below(SIZE - 1);
        let len = (1 + rng.below(300_000)).min(SIZE - off) as usize;
        let got = disk.read_at(off, len).await.expect("unaligned read");
        assert!(got[..] == want[off as usize..off as usize + len], "{subformat}: read {off}+{len} differs");
    }
    // A clone reads the same bytes, concurrently with the original.
    let clone = disk.try_clone().await.expect("clone");
    let (a, b) = tokio::join!(disk.read_at(SIZE - (1 << 20), 1 << 20), clone.read_at(SIZE - (1 << 20), 1 << 20));
    assert_eq!(a.expect("read a"), b.expect("read b"));
    let err = disk.write_at(0, bytes::Bytes::from_static(b"x")).await.expect_err("read-only");
    assert_eq!(err.code(), ErrorCode::TransportUnsupported);
    let err = disk.read_at(SIZE - 10, 20).await.expect_err("past the end");
    assert_eq!(err.code(), ErrorCode::OutOfBounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_subformats_read_back_identical() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("in.raw");
    make_raw(&raw, SIZE, 7, 60);
    round_trip(dir.path(), &raw, "monolithicSparse", true).await;
    round_trip(dir.path(), &raw, "streamOptimized", true).await;
    round_trip(dir.path(), &raw, "monolithicFlat", false).await;
    round_trip(dir.path(), &raw, "twoGbMaxExtentSparse", true).await;
    round_trip(dir.path(), &raw, "twoGbMaxExtentFlat", false).await;
}

/// Over 2 GiB, twoGbMaxExtent* split into several extent files; data straddles the boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gb_max_extent_spans_files() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("big.raw");
    let size: u64 = (2 << 30) + (8 << 20);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&raw).expect("create");
        f.set_len(size).expect("size");
        let mut rng = Rng::new(99);
        for off in [0u64, 5 << 20, (2 << 30) - 100_000, (2 << 30) + (3 << 20), size - 70_000] {
            let data: Vec<u8> = (0..70_000).map(|_| rng.next() as u8 | 1).collect();
            f.write_all_at(&data, off).expect("write");
        }
    }
    for sub in ["twoGbMaxExtentSparse", "twoGbMaxExtentFlat"] {
        let v = dir.path().join(format!("{sub}.vmdk"));
        convert(&raw, sub, &v);
        let disk = vmdk::VmdkDisk::open_path(&v).await.expect("open");
        assert!(disk.descriptor().extents.len() >= 2, "{sub} has several extents");
        assert_eq!(disk.size(), size);
        if sub.ends_with("Sparse") {
            let out = dir.path().join("big.out.raw");
            copy_to_raw(&disk, &out).await;
            let (same, msg) = qemu_compare("raw", &raw, "raw", &out);
            assert!(same, "{sub}: {msg}");
            // Only a handful of grains hold data.
            let mut data = 0u64;
            let mut pos = 0;
            while pos < size {
                let ex = disk.extents(pos, size - pos, ExtentKind::Allocation).await.expect("extents");
                data += ex.iter().filter(|e| e.state == ExtentState::Data).map(|e| e.length).sum::<u64>();
                pos = ex.last().expect("non-empty").end();
            }
            assert!(data < 2 << 20, "{sub}: {data} bytes of data");
        } else {
            // Compare the region around the extent boundary byte for byte.
            let start = (2 << 30) - (1 << 20);
            let ours = disk.read_at(start, 6 << 20).await.expect("read across extents");
            let theirs = {
                use std::os::unix::fs::FileExt;
                let mut b = vec![0u8; 6 << 20];
                std::fs::File::open(&raw).expect("open raw").read_exact_at(&mut b, start).expect("read raw");
                b
            };
            assert!(ours[..] == theirs[..], "{sub}: bytes across the 2 GiB boundary differ");
        }
    }
}
