//! Our sparse writer checked by `qemu-img check`/`compare`, and VMware-style streamOptimized
//! files (grain directory in the footer, which qemu-img does not write) read back exactly.

mod vmdk_common;

use vmdk_common::*;
use vmigrate_core::ErrorCode;
use vmigrate_vsphere::vmdk::{open_vmdk, write_monolithic_sparse, SparseVmdkWriter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_output_passes_qemu_check_and_compare() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("src.raw");
    let size = (20 << 20) + 4096; // not a multiple of the grain
    let runs = make_raw(&raw, size, 3, 40);
    let vmdk = dir.path().join("made.vmdk");
    write_monolithic_sparse(&vmdk, size, runs.iter().map(|(o, d)| (*o, d.as_slice()))).expect("write vmdk");
    qemu_img(&["check", "-f", "vmdk", &vmdk.display().to_string()]);
    let (same, msg) = qemu_compare("vmdk", &vmdk, "raw", &raw);
    assert!(same, "qemu-img sees different content: {msg}");
    let disk = open_vmdk(&vmdk).await.expect("open our vmdk");
    assert_eq!(disk.size(), size);
    let out = dir.path().join("back.raw");
    copy_to_raw(disk.as_ref(), &out).await;
    assert!(qemu_compare("raw", &raw, "raw", &out).0);
    // Every grain with data is allocated (grains first written and later zeroed stay allocated).
    let (mapped, has) = (grain_is_data(disk.as_ref()).await, grain_has_data(&raw));
    assert!(mapped.iter().zip(&has).all(|(m, h)| *m || !*h), "a grain with data is mapped as a hole");
    assert!(mapped.iter().filter(|m| **m).count() <= has.iter().filter(|h| **h).count() + 3);
    // Sparse: far less on disk than the virtual size.
    let on_disk = std::fs::metadata(&vmdk).expect("stat").len();
    assert!(on_disk < size / 2, "{on_disk} bytes for {size}");

    // Overwrites land in the already allocated grain; out-of-range writes are refused.
    let mut w = SparseVmdkWriter::create(&dir.path().join("w.vmdk"), 1 << 20).expect("create");
    w.write_at(100, b"first").expect("write");
    w.write_at(100, b"again").expect("overwrite");
    assert_eq!(w.write_at((1 << 20) - 2, b"xyz").expect_err("past end").code(), ErrorCode::OutOfBounds);
    w.finish().expect("finish");
    let d = open_vmdk(&dir.path().join("w.vmdk")).await.expect("open");
    assert_eq!(&d.read_at(100, 5).await.expect("read")[..], b"again");
}

fn raw_image(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut raw = vec![0u8; size];
    for _ in 0..30 {
        let len = 1 + rng.below(200_000) as usize;
        let off = rng.below((size - len) as u64) as usize;
        let compressible = rng.below(2) == 0;
        for (i, b) in raw[off..off + len].iter_mut().enumerate() {
            *b = if compressible { (i / 1000) as u8 | 1 } else { rng.next() as u8 | 1 };
        }
    }
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmware_stream_optimized_with_footer_reads_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = (12 << 20) + 1536; // last grain partial
    let raw = raw_image(size, 11);
    let path = dir.path().join("export.vmdk");
    std::fs::write(&path, vmware_stream(&raw)).expect("write stream");
    let disk = open_vmdk(&path).await.expect("open stream");
    assert_eq!(disk.size(), size as u64);
    // Whole-disk read in one request, and unaligned small reads.
    let all = disk.read_at(0, size).await.expect("read all");
    assert!(all[..] == raw[..], "stream content differs");
    for (off, len) in [(1u64, 70_000usize), (65_535, 2), (size as u64 - 700, 700)] {
        let got = disk.read_at(off, len).await.expect("read part");
        assert!(got[..] == raw[off as usize..off as usize + len], "at {off}");
    }
    // Parallel reads on one handle and a clone.
    let clone = disk.try_clone().await.expect("clone");
    let half = size / 2;
    let (a, b) = tokio::join!(disk.read_at(0, half), clone.read_at(half as u64, size - half));
    assert!(a.expect("a")[..] == raw[..half] && b.expect("b")[..] == raw[half..]);
    if have_qemu_img() {
        let raw_path = dir.path().join("raw");
        std::fs::write(&raw_path, &raw).expect("write raw");
        let (same, msg) = qemu_compare("vmdk", &path, "raw", &raw_path);
        assert!(same, "qemu-img reads our footer-style stream differently: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_deflate_and_missing_footer_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = raw_image(2 << 20, 5);
    let good = vmware_stream(&raw);
    // Damage the first grain's compressed bytes.
    let first_grain = (0..raw.len() / 65536).find(|g| raw[g * 65536..(g + 1) * 65536].iter().any(|b| *b != 0));
    let mut bad = good.clone();
    for b in &mut bad[1024 + 12 + 4..1024 + 12 + 40] {
        *b ^= 0x5a;
    }
    let p = dir.path().join("bad.vmdk");
    std::fs::write(&p, &bad).expect("write");
    let disk = open_vmdk(&p).await.expect("metadata is intact");
    let g = first_grain.expect("image has data") as u64;
    let err = disk.read_at(g * 65536, 65536).await.expect_err("corrupt grain");
    assert_eq!(err.code(), ErrorCode::SourceDiskFormat, "{}", err.report());

    // Cut off the footer.
    let cut = &good[..good.len() - 512];
    std::fs::write(&p, cut).expect("write");
    let err = open_vmdk(&p).await.expect_err("no footer");
    assert_eq!(err.code(), ErrorCode::SourceDiskFormat, "{}", err.report());
}

/// Issue 14 item 6: what a checkpoint of a VMDK source is bound to. Two opens of one unchanged
/// file have one identity (a resume resumes); the same file written in place (same device and
/// inode, new modification time) and another file of the same size are other sources.
#[tokio::test]
async fn vmdk_identity_is_stable_and_changes_with_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.vmdk"), dir.path().join("b.vmdk"));
    for (p, fill) in [(&a, 1u8), (&b, 2u8)] {
        let mut w = SparseVmdkWriter::create(p, 1 << 20).expect("create");
        w.write_at(0, &[fill; 4096]).expect("write");
        w.finish().expect("finish");
    }
    let id = |p: std::path::PathBuf| async move { open_vmdk(&p).await.expect("open").identity() };
    let first = id(a.clone()).await;
    assert_eq!(first, id(a.clone()).await, "two opens of an unchanged file");
    assert!(first.as_str().contains("mtime="), "{first}");
    assert_ne!(first, id(b.clone()).await, "another file of the same size");
    let f = std::fs::OpenOptions::new().write(true).open(&a).expect("open");
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).expect("touch");
    drop(f);
    assert_ne!(first, id(a.clone()).await, "the same file written in place");
}
