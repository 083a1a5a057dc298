//! The copy engine across transport pairs, named like nbdcopy's `copy-<src>-to-<dst>` tests,
//! plus its error, sparse, delta, cancel, resume and verify cases.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{pattern, Faults, Faulty};
use vmigrate_core::engine::{self, Checkpoint, CopyControl, CopyOptions};
use vmigrate_core::file::{FileOptions, FileTransport};
use vmigrate_core::memory::MemoryTransport;
use vmigrate_core::{BlockTransport, ErrorCode, Extent, ExtentKind, ExtentState};

const MIB: u64 = 1 << 20;
/// An odd size, so the last unit and the last request are partial.
const SIZE: u64 = 24 * MIB + 3 * 4096 + 100;

/// Data extents of the test image (offset, length, seed).
fn layout() -> Vec<(u64, u64, u64)> {
    vec![
        (0, MIB, 1),
        (3 * MIB + 512, 2 * MIB + 1000, 2),
        (10 * MIB, 64 << 10, 3),
        (20 * MIB, 3 * MIB, 4),
        (SIZE - 100, 100, 5),
    ]
}

/// Allocated zeroes in the test image.
const ZERO_AT: (u64, u64) = (15 * MIB, 2 * MIB);

fn expected() -> Vec<u8> {
    let mut v = vec![0u8; SIZE as usize];
    for (off, len, seed) in layout() {
        v[off as usize..(off + len) as usize].copy_from_slice(&pattern(seed, len as usize));
    }
    v
}

fn data_bytes() -> u64 {
    layout().iter().map(|l| l.1).sum()
}

async fn fill(t: &dyn BlockTransport) {
    for (off, len, seed) in layout() {
        t.write_at(off, Bytes::from(pattern(seed, len as usize))).await.expect("write layout");
    }
    t.write_at(ZERO_AT.0, Bytes::from(vec![0u8; ZERO_AT.1 as usize])).await.expect("write zeroes");
}

async fn memory_source() -> MemoryTransport {
    let m = MemoryTransport::new(SIZE);
    fill(&m).await;
    m
}

async fn file_source(dir: &Path) -> FileTransport {
    let path = dir.join("src.raw");
    let f = FileTransport::open(&path, FileOptions { create_size: Some(SIZE), ..Default::default() })
        .await
        .expect("create source");
    fill(&f).await;
    f.flush().await.expect("flush source");
    FileTransport::open(&path, FileOptions::default()).await.expect("reopen source read-only")
}

async fn file_target(dir: &Path, name: &str) -> FileTransport {
    FileTransport::open(dir.join(name), FileOptions { create_size: Some(SIZE), ..Default::default() })
        .await
        .expect("create target")
}

fn opts() -> CopyOptions {
    CopyOptions { work_unit: 4 * MIB, request_size: 256 << 10, ..Default::default() }
}

fn sha(v: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(v))
}

async fn read_all(t: &dyn BlockTransport) -> Vec<u8> {
    t.read_at(0, t.size() as usize).await.expect("read back").to_vec()
}

fn allocated_on_disk(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

fn qemu_img_compare(a: &Path, b: &Path) {
    let out = Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(a).arg(b).output();
    match out {
        Ok(o) => assert!(o.status.success(), "qemu-img compare: {}", String::from_utf8_lossy(&o.stdout)),
        Err(e) if std::env::var_os("CI").is_none() => eprintln!("skipping qemu-img compare: {e}"),
        Err(e) => panic!("qemu-img is required in CI: {e}"),
    }
}

#[tokio::test]
async fn copy_memory_to_memory() {
    let src = memory_source().await;
    let dst = MemoryTransport::new(SIZE);
    let stats = engine::copy(&src, &dst, &opts(), &CopyControl::new()).await.expect("copy");
    assert_eq!(sha(&dst.contents()), sha(&expected()));
    // Holes are never read; allocated zeroes are read but not written.
    assert!(stats.bytes_read <= data_bytes() + ZERO_AT.1 + 2 * 4096 * 5, "read {}", stats.bytes_read);
    // Whole 4 KiB blocks holding any data are written, zero blocks never.
    assert!((data_bytes()..data_bytes() + 4 * 4096).contains(&stats.bytes_written), "{}", stats.bytes_written);
    assert!(dst.allocated_bytes() <= data_bytes() + 5 * 8192, "target not sparse: {}", dst.allocated_bytes());
}

#[tokio::test]
async fn durable_copy_flushes_behind_each_unit_and_no_flush_never_flushes() {
    let units = SIZE.div_ceil(opts().work_unit);
    for flush in [true, false] {
        let src = memory_source().await;
        let dst = Faulty::new(MemoryTransport::new(SIZE), Faults::default());
        let o = CopyOptions { flush, ..opts() };
        engine::copy(&src, &dst, &o, &CopyControl::new()).await.expect("copy");
        let flushes = dst.faults.flushes.load(Ordering::Relaxed);
        if flush {
            // One per unit while copying (the target writes back as data arrives), one at the end.
            assert_eq!(flushes, units + 1, "flushes of a durable copy");
        } else {
            assert_eq!(flushes, 0, "a copy not asked to flush must not");
        }
        assert_eq!(sha(&read_all(&dst).await), sha(&expected()));
    }
}

#[tokio::test]
async fn copy_file_to_file_sparse_and_byte_equal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = file_source(dir.path()).await;
    let dst = file_target(dir.path(), "dst.raw").await;
    let o = CopyOptions { verify: true, ..opts() };
    let stats = engine::copy(&src, &dst, &o, &CopyControl::new()).await.expect("copy");
    assert!(stats.source_digest.is_some() && stats.source_digest == stats.target_digest);
    assert_eq!(sha(&read_all(&dst).await), sha(&expected()));
    qemu_img_compare(&dir.path().join("src.raw"), &dir.path().join("dst.raw"));
    // Sparse: the allocated zeroes of the source became a hole, and the allocation map of the
    // target has only the data extents.
    let on_disk = allocated_on_disk(&dir.path().join("dst.raw"));
    assert!(on_disk <= data_bytes() + 10 * 4096, "target has {on_disk} bytes allocated");
    let ext = dst.extents(ZERO_AT.0, ZERO_AT.1, ExtentKind::Allocation).await.expect("extents");
    assert_eq!(ext, vec![Extent::hole(ZERO_AT.0, ZERO_AT.1)]);
}

#[tokio::test]
async fn copy_file_to_file_copy_file_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = file_source(dir.path()).await;
    let dst = file_target(dir.path(), "dst.raw").await;
    let o = CopyOptions { copy_file_range: true, ..opts() };
    engine::copy(&src, &dst, &o, &CopyControl::new()).await.expect("copy");
    qemu_img_compare(&dir.path().join("src.raw"), &dir.path().join("dst.raw"));
    // Holes of the source stay holes.
    let ext = dst.extents(6 * MIB, 4 * MIB, ExtentKind::Allocation).await.expect("extents");
    assert_eq!(ext, vec![Extent::hole(6 * MIB, 4 * MIB)]);
}

#[tokio::test]
async fn copy_memory_to_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = memory_source().await;
    let dst = file_target(dir.path(), "dst.raw").await;
    engine::copy(&src, &dst, &opts(), &CopyControl::new()).await.expect("copy");
    assert_eq!(sha(&read_all(&dst).await), sha(&expected()));
    assert!(allocated_on_disk(&dir.path().join("dst.raw")) <= data_bytes() + 10 * 4096);
}

#[tokio::test]
async fn copy_file_to_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = file_source(dir.path()).await;
    let dst = MemoryTransport::new(SIZE);
    engine::copy(&src, &dst, &opts(), &CopyControl::new()).await.expect("copy");
    assert_eq!(sha(&dst.contents()), sha(&expected()));
}

#[tokio::test]
async fn copy_onto_dirty_target_zeroes_holes() {
    // A target that is not zero-initialised: holes and zero blocks must be zeroed.
    let src = memory_source().await;
    let dst = MemoryTransport::from_bytes(vec![0xAAu8; SIZE as usize]);
    let ctl = CopyControl::new();
    let stats = engine::copy(&src, &dst, &opts(), &ctl).await.expect("copy");
    assert_eq!(sha(&dst.contents()), sha(&expected()));
    assert_eq!(stats.bytes_zeroed + stats.bytes_written, SIZE);
    let snap = ctl.progress.snapshot();
    assert_eq!(snap.done, SIZE);
    assert_eq!(snap.copied, stats.bytes_written);
}

#[tokio::test]
async fn copy_all_zero_data_becomes_holes() {
    // A fully allocated source that is entirely zero: nothing written, target stays empty.
    let src = MemoryTransport::from_bytes(vec![0u8; 8 * MIB as usize]);
    let dst = MemoryTransport::new(8 * MIB);
    let stats = engine::copy(&src, &dst, &opts(), &CopyControl::new()).await.expect("copy");
    assert_eq!(stats.bytes_read, 8 * MIB);
    assert_eq!(stats.bytes_written, 0);
    assert_eq!(dst.allocated_bytes(), 0);
    // Onto a file: punched, not written.
    let dir = tempfile::tempdir().expect("tempdir");
    let fdst = FileTransport::open(
        dir.path().join("z.raw"),
        FileOptions { write: true, create_size: Some(8 * MIB), direct: false },
    )
    .await
    .expect("create");
    engine::copy(&src, &fdst, &opts(), &CopyControl::new()).await.expect("copy");
    assert_eq!(allocated_on_disk(&dir.path().join("z.raw")), 0);
}

#[tokio::test]
async fn copy_delta_only_touches_given_extents() {
    let old = pattern(9, SIZE as usize);
    let src = memory_source().await;
    let dst = MemoryTransport::from_bytes(old.clone());
    let only = vec![Extent::data(3 * MIB, MIB), Extent::zero(12 * MIB, MIB), Extent::hole(21 * MIB, 4096)];
    let o = CopyOptions { only: Some(only), ..opts() };
    let ctl = CopyControl::new();
    engine::copy(&src, &dst, &o, &ctl).await.expect("delta copy");
    let mut want = old;
    let exp = expected();
    want[3 * MIB as usize..4 * MIB as usize].copy_from_slice(&exp[3 * MIB as usize..4 * MIB as usize]);
    want[12 * MIB as usize..13 * MIB as usize].fill(0);
    want[21 * MIB as usize..21 * MIB as usize + 4096].fill(0);
    assert_eq!(sha(&dst.contents()), sha(&want));
    assert_eq!(ctl.progress.snapshot().total, 2 * MIB + 4096);
}

#[tokio::test]
async fn copy_cancel_is_prompt() {
    let src = Faulty::new(
        MemoryTransport::from_bytes(pattern(3, 64 * MIB as usize)),
        Faults { read_delay: Some(Duration::from_millis(200)), ..Default::default() },
    );
    let dst = MemoryTransport::new(64 * MIB);
    let ctl = CopyControl::new();
    let cancel = ctl.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let t0 = Instant::now();
    let err = engine::copy(&src, &dst, &opts(), &ctl).await.expect_err("cancelled");
    assert_eq!(err.code(), ErrorCode::Cancelled);
    assert!(t0.elapsed() < Duration::from_secs(2), "cancel took {:?}", t0.elapsed());
}

#[tokio::test]
async fn copy_resume_after_failure_copies_less() {
    let size = 32 * MIB;
    let data = pattern(11, size as usize);
    let o = CopyOptions {
        connections: 1,
        work_unit: MIB,
        request_size: 256 << 10,
        checkpoint_interval: Duration::ZERO,
        ..Default::default()
    };
    let dst = MemoryTransport::new(size);
    let last: Arc<Mutex<Option<Checkpoint>>> = Arc::default();
    let saver = last.clone();
    let ctl = CopyControl {
        on_checkpoint: Some(Arc::new(move |cp: &Checkpoint| *saver.lock().expect("lock") = Some(cp.clone()))),
        ..Default::default()
    };
    // 4 reads per unit: fails inside unit 10.
    let src = Faulty::new(
        MemoryTransport::from_bytes(data.clone()),
        Faults { fail_after_reads: Some(42), ..Default::default() },
    );
    let err = engine::copy(&src, &dst, &o, &ctl).await.expect_err("injected failure");
    assert_eq!(err.code(), ErrorCode::Io);
    let cp = last.lock().expect("lock").clone().expect("a checkpoint was recorded");
    assert!(cp.done_units() >= 5 && cp.done_units() < 32, "done {:?}", cp.done);
    // Round-trips as JSON, as the CLI stores it.
    let cp: Checkpoint = serde_json::from_str(&serde_json::to_string(&cp).expect("ser")).expect("de");

    let src2 = Faulty::new(MemoryTransport::from_bytes(data.clone()), Faults::default());
    let o2 = CopyOptions { resume: Some(cp.clone()), ..o.clone() };
    let stats = engine::copy(&src2, &dst, &o2, &CopyControl::new()).await.expect("resumed copy");
    let read2 = src2.faults.bytes_read.load(Ordering::SeqCst);
    assert_eq!(read2, size - cp.done_units() * MIB);
    assert!(stats.bytes_skipped >= cp.done_units() * MIB);
    assert_eq!(sha(&dst.contents()), sha(&data));

    // A checkpoint of another copy is refused.
    let other = MemoryTransport::from_bytes(vec![1u8; 16 * MIB as usize]);
    let err =
        engine::copy(&other, &MemoryTransport::new(16 * MIB), &o2, &CopyControl::new()).await.expect_err("foreign");
    assert_eq!(err.code(), ErrorCode::Checkpoint);
}

#[tokio::test]
async fn copy_retries_transient_errors() {
    let data = pattern(5, 4 * MIB as usize);
    let faults = Faults::default();
    faults.transient_reads.store(3, Ordering::SeqCst);
    let src = Faulty::new(MemoryTransport::from_bytes(data.clone()), faults);
    let dst = MemoryTransport::new(4 * MIB);
    engine::copy(&src, &dst, &opts(), &CopyControl::new()).await.expect("copy with retries");
    assert_eq!(dst.contents(), data);
    assert_eq!(src.faults.transient_reads.load(Ordering::SeqCst), 0);

    // Out of retries: the transient error surfaces.
    let faults = Faults::default();
    faults.transient_reads.store(100, Ordering::SeqCst);
    let src = Faulty::new(MemoryTransport::from_bytes(data), faults);
    let o = CopyOptions { retries: 1, connections: 1, ..opts() };
    let err = engine::copy(&src, &MemoryTransport::new(4 * MIB), &o, &CopyControl::new()).await.expect_err("gives up");
    assert_eq!(err.code(), ErrorCode::NbdConnect);
}

#[tokio::test]
async fn copy_short_read_is_an_error() {
    let src = Faulty::new(
        MemoryTransport::from_bytes(pattern(6, 4 * MIB as usize)),
        Faults { short_read_at: Some(MIB), ..Default::default() },
    );
    let err =
        engine::copy(&src, &MemoryTransport::new(4 * MIB), &opts(), &CopyControl::new()).await.expect_err("short");
    assert_eq!(err.code(), ErrorCode::ShortRead);

    // A target smaller than the source is refused up front.
    let err = engine::copy(&src, &MemoryTransport::new(MIB), &opts(), &CopyControl::new()).await.expect_err("small");
    assert_eq!(err.code(), ErrorCode::OutOfBounds);
}

#[tokio::test]
async fn copy_verify_detects_corruption() {
    let src = MemoryTransport::from_bytes(pattern(7, 4 * MIB as usize));
    let dst = Faulty::new(MemoryTransport::new(4 * MIB), Faults { corrupt_write_at: Some(MIB), ..Default::default() });
    let o = CopyOptions { verify: true, ..opts() };
    let err = engine::copy(&src, &dst, &o, &CopyControl::new()).await.expect_err("mismatch");
    assert_eq!(err.code(), ErrorCode::VerifyMismatch);
}

#[tokio::test]
async fn digest_ignores_sparseness() {
    let sparse = memory_source().await;
    let dense = MemoryTransport::from_bytes(expected());
    let o = CopyOptions::default();
    let c = tokio_util::sync::CancellationToken::new();
    let a = engine::digest(&sparse, &o, &c).await.expect("digest");
    let b = engine::digest(&dense, &o, &c).await.expect("digest");
    assert_eq!(a, b);
    dense.write_at(SIZE - 1, Bytes::from_static(&[0])).await.expect("write");
    assert_ne!(engine::digest(&dense, &o, &c).await.expect("digest"), a);
}

#[tokio::test]
async fn copy_enospc_is_no_space() {
    let src = MemoryTransport::from_bytes(pattern(8, 8 * MIB as usize));
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let err = if mounted {
        let dst =
            FileTransport::open(mnt.join("t.raw"), FileOptions { create_size: Some(8 * MIB), ..Default::default() })
                .await
                .expect("create on tmpfs");
        let r = engine::copy(&src, &dst, &opts(), &CopyControl::new()).await;
        drop(dst);
        let _ = Command::new("umount").arg(&mnt).status();
        r.expect_err("tmpfs fills up")
    } else {
        eprintln!("cannot mount a small tmpfs; injecting ENOSPC instead");
        let dst = Faulty::new(MemoryTransport::new(8 * MIB), Faults { enospc: true, ..Default::default() });
        engine::copy(&src, &dst, &opts(), &CopyControl::new()).await.expect_err("enospc")
    };
    assert_eq!(err.code(), ErrorCode::NoSpace, "{}", err.report());
}

#[tokio::test]
async fn progress_reports_totals_and_state() {
    let src = memory_source().await;
    let dst = MemoryTransport::new(SIZE);
    let ctl = CopyControl::new();
    engine::copy(&src, &dst, &opts(), &ctl).await.expect("copy");
    let s = ctl.progress.snapshot();
    assert_eq!(s.total, SIZE);
    assert_eq!(s.done, SIZE);
    assert_eq!(s.copied + s.skipped, SIZE);
    assert_eq!(s.eta, Some(Duration::ZERO));
    let json = serde_json::to_value(&s).expect("serialize");
    assert_eq!(json["total"], SIZE);
    let _ = ExtentState::Data;
}

/// Many small data extents (4-64 KiB) with holes and allocated zeroes of 4 KiB to 128 KiB
/// between them (issue 17's "small" shape): the engine reads neighbours as one request, yet the
/// target is byte-equal, holes and zero extents stay unallocated on a fresh file, and a dirty
/// target gets them zeroed.
#[tokio::test]
async fn copy_many_small_extents_reads_them_together_and_stays_exact_and_sparse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 16 * MIB;
    let path = dir.path().join("small.raw");
    let mut want = vec![0u8; size as usize];
    let (mut data, mut extents, mut zero_extents, mut zero_bytes) = (0u64, 0u64, 0u64, 0u64);
    {
        let f = FileTransport::open(&path, FileOptions { create_size: Some(size), ..Default::default() })
            .await
            .expect("create source");
        let mut x = 0x1234_5678_u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut off = 4096 * next(8);
        while off < size {
            let len = (4096 * (1 + next(16))).min(size - off);
            if next(6) == 0 {
                // Allocated zeroes: data to SEEK_DATA, zero bytes to the copy.
                f.write_at(off, Bytes::from(vec![0u8; len as usize])).await.expect("write zeroes");
                zero_extents += 1;
                zero_bytes += len;
            } else {
                let d = pattern(off, len as usize);
                want[off as usize..(off + len) as usize].copy_from_slice(&d);
                f.write_at(off, Bytes::from(d)).await.expect("write data");
                data += len;
                extents += 1;
            }
            off += len + 4096 * (1 + next(32));
        }
        f.flush().await.expect("flush source");
    }
    assert!(extents > 100 && zero_extents > 10, "{extents} data and {zero_extents} zero extents");
    let src = FileTransport::open(&path, FileOptions::default()).await.expect("open source");
    let faults = Faults::default();
    let counted = Faulty::new(src, faults);
    let o = CopyOptions { request_size: 2 << 20, ..Default::default() };

    let dst =
        FileTransport::open(dir.path().join("dst.raw"), FileOptions { create_size: Some(size), ..Default::default() })
            .await
            .expect("create target");
    engine::copy(&counted, &dst, &o, &CopyControl::new()).await.expect("copy");
    assert!(read_all(&dst).await == want, "target differs from the source");
    qemu_img_compare(&path, &dir.path().join("dst.raw"));
    let reads = counted.faults.reads.load(Ordering::SeqCst);
    assert!(reads * 4 < extents, "{reads} reads for {extents} extents: small extents were not read together");
    let on_disk = allocated_on_disk(&dir.path().join("dst.raw"));
    // Slack for the extent tree's own blocks; the zero extents alone are far larger.
    assert!(
        on_disk <= data + 16 * 4096 && on_disk < data + zero_bytes / 2,
        "target has {on_disk} bytes allocated for {data} bytes of data ({zero_bytes} of allocated zeroes)"
    );

    // A dirty target: every hole and zero extent between the data must read as zeroes.
    let dirty = MemoryTransport::from_bytes(vec![0xAAu8; size as usize]);
    engine::copy(&counted, &dirty, &o, &CopyControl::new()).await.expect("copy onto dirty");
    assert!(dirty.contents() == want, "dirty target differs from the source");
}
