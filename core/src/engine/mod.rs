//! The block-copy engine: parallel, sparse-aware, zero-copy, resumable and verified copies
//! between two [`BlockTransport`]s.
//!
//! ```text
//!  source size ──> work units (128 MiB) ──> workers (one src+dst handle pair each)
//!                                              │ extents(unit)  ── asked per unit, never whole disk
//!                                              ├ Data  ─> read (budget) ─> zero scan ─┬ write_at(slice)
//!                                              │                                      └ zero / skip
//!                                              └ Zero/Hole ─> zero, or skip when target is zero
//!  unit done ──> done set ──> (flush) ──> on_checkpoint
//! ```
//!
//! - **Sparse**: holes and zero extents are never read; all-zero blocks found in data that was
//!   read are zeroed (punched) instead of written, and nothing at all is done for them when the
//!   target is zero-initialised.
//! - **Parallel**: `connections` handle pairs (from `try_clone`), each with many requests in
//!   flight, bounded by a byte budget ([`BufferBudget`]) shared by every copy that is given it.
//! - **Zero-copy**: the `Bytes` read are handed to `write_at` as slices of the same buffer. A
//!   target that can take the bytes of the source without the engine
//!   ([`BlockTransport::can_copy_from`]: two local files, `copy_file_range`) does when asked
//!   ([`CopyOptions::copy_file_range`]). A durable copy writes behind: a target that schedules
//!   its own writeback ([`BlockTransport::prepare_bulk_write`]: a regular file starts writeback of
//!   each range as it is written, a block device takes the page-aligned buffers with `O_DIRECT`)
//!   is left to it, any other target is flushed after every work unit.
//! - **Resumable**: a [`Checkpoint`] names the work units already copied and flushed; a copy given
//!   one skips them. Transient errors are retried with backoff.
//! - **Verified**: [`digest`] hashes content over the virtual size independently of sparseness.
//!
//! All the requests of one copy are driven from the caller's task (plus tokio's blocking pool for
//! file I/O and zero scans of large buffers), so dropping the future or cancelling the token
//! stops everything promptly.

mod options;
mod progress;
mod verify;
mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Kept here too: callers found the zero check in the engine first.
pub use crate::buf::is_zero;
use crate::error::{Error, ErrorCode, Result};
use crate::transport::{coalesce, BlockTransport, Extent};
pub use options::{BufferBudget, Checkpoint, CheckpointFn, CopyControl, CopyOptions};
pub use progress::{CopyStats, Progress, ProgressSnapshot};
pub use verify::digest;
use verify::digest_sized;
use worker::{clone_pair, fingerprint, handle_count, retry, FutSet, Shared};

/// Default size of a work unit: the granularity of extent queries, scheduling and checkpoints
/// (docs/perf-notes.md, "Work units").
pub const DEFAULT_WORK_UNIT: u64 = 128 << 20;

/// Granularity of [`digest`]: fixed so that digests of any two transports are comparable.
const DIGEST_CHUNK: u64 = 4 << 20;

/// Data extents separated by a hole or zero extent of at most this many bytes are read as one
/// request (up to the request size): the gap comes back as zeroes, which the zero scan skips or
/// zeroes on the target exactly as the extent would have been; a request costs far more than
/// reading 64 KiB of holes (measured: docs/perf-notes.md, "Small extents").
const COALESCE_GAP: u64 = 128 << 10;

/// Default [`CopyOptions::queue_depth`]: enough 512 KiB NBD reads to keep the server busy,
/// without faulting in buffers it cannot fill; small reads may be many more in the same bytes,
/// and 1 MiB reads or larger hit the budget first (measured: docs/perf-notes.md, "Buffers in
/// flight").
const QUEUE_DEPTH: usize = 8;

/// Buffers larger than this are scanned for zeroes on the blocking pool; NBD reads (512 KiB)
/// are scanned inline (docs/perf-notes.md, "Zero scans").
const SCAN_INLINE_MAX: usize = 512 << 10;

/// Copy `src` onto `dst` (see the module documentation).
///
/// # Errors
/// [`ErrorCode::Cancelled`] when cancelled; [`ErrorCode::Checkpoint`] for a foreign checkpoint;
/// [`ErrorCode::OutOfBounds`] when the target is smaller than the source;
/// [`ErrorCode::VerifyMismatch`] when verification fails; otherwise the first transport error
/// (after retries of transient ones). On error or cancel, a last checkpoint of the units done is
/// emitted (after a flush) so a re-run can resume.
///
/// # Cancel safety
/// Dropping the future stops every request; writes in flight may or may not have landed, which
/// resume tolerates since a unit is only marked done after all its writes completed.
pub async fn copy(
    src: &dyn BlockTransport,
    dst: &dyn BlockTransport,
    opts: &CopyOptions,
    ctl: &CopyControl,
) -> Result<CopyStats> {
    let size = src.size();
    if dst.size() < size {
        return Err(Error::new(
            ErrorCode::OutOfBounds,
            format!("target ({} bytes) is smaller than the source ({size} bytes)", dst.size()),
        ));
    }
    let unit = opts.work_unit.max(1 << 20);
    let units = size.div_ceil(unit);
    let only = opts.only.as_ref().map(|o| {
        let mut v: Vec<Extent> = o.iter().filter(|e| e.offset < size).copied().collect();
        v.sort_by_key(|e| e.offset);
        for e in &mut v {
            e.length = e.length.min(size - e.offset);
        }
        coalesce(v)
    });
    let fp = fingerprint(size, dst.size(), unit, only.as_deref());
    let mut done = vec![false; units as usize];
    if let Some(cp) = &opts.resume {
        if cp.version != 1 || cp.source_size != size || cp.work_unit != unit || cp.fingerprint != fp {
            return Err(Error::new(
                ErrorCode::Checkpoint,
                format!(
                    "checkpoint is for another copy (size {} unit {} fingerprint {}, expected {size} {unit} {fp})",
                    cp.source_size, cp.work_unit, cp.fingerprint
                ),
            ));
        }
        for r in &cp.done {
            if r[0] > r[1] || r[1] > units {
                return Err(Error::new(ErrorCode::Checkpoint, format!("checkpoint range {r:?} out of {units} units")));
            }
            for d in &mut done[r[0] as usize..r[1] as usize] {
                *d = true;
            }
        }
    }
    let total = match &only {
        Some(o) => o.iter().map(|e| e.length).sum(),
        None => size,
    };
    ctl.progress.start(total);
    let budget = opts.buffer_budget.clone().unwrap_or_else(|| BufferBudget::new(opts.max_buffer_bytes));
    let request = opts
        .request_size
        .clamp(64 << 10, 32 << 20)
        .min(src.max_request().max(4096))
        .min(dst.max_request().max(4096))
        .min(budget.total());
    // In-kernel copies where both ends can (two local files: copy_file_range).
    let use_cfr = opts.copy_file_range && dst.can_copy_from(src);
    // A local file arranges its own writeback (write-behind, or O_DIRECT on a block device).
    let writes_behind = dst.prepare_bulk_write(opts.flush);
    let sh = Shared {
        opts,
        ctl,
        budget,
        size,
        unit,
        units,
        request,
        skip_zero: dst.is_zero_initialized(),
        // Local files write behind on their own (see above). For the others (an NBD server
        // writing into its page cache) one flush per work unit keeps the final flush short:
        // NBD to qemu-nbd, 4 GiB image with 1.2 GB of data, 1.5 -> 1.25 s.
        flush_behind: opts.flush && !writes_behind,
        coalesce_gap: if opts.zero_detect && !use_cfr { COALESCE_GAP } else { 0 },
        use_cfr,
        only,
        next: AtomicU64::new(0),
        units_taken: CancellationToken::new(),
        done: Mutex::new(done),
        fingerprint: fp,
        last_checkpoint: tokio::sync::Mutex::new(Instant::now()),
    };
    // Bytes of units done before: reported as resumed.
    let resumed: u64 = (0..units)
        .filter(|u| sh.done.lock().unwrap_or_else(|p| p.into_inner())[*u as usize])
        .flat_map(|u| sh.unit_work(u))
        .map(|(a, b, _)| b - a)
        .sum();
    Progress::add(&sh.progress().resumed, resumed);
    let span = tracing::info_span!("copy", size, units, request, resumed);
    let _g = span.enter();
    tracing::debug!(skip_zero = sh.skip_zero, use_cfr, "copy starting");

    // The first worker copies on the caller's handles at once; each other one opens its own
    // connections meanwhile and joins when they are up (no more workers than units to do).
    let todo = sh.done.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|d| !**d).count();
    let workers = handle_count(src, Some(dst), opts.connections).min(todo.max(1));
    let body = async {
        let mut set: FutSet<'_, Result<()>> = FutSet::new();
        set.push(sh.worker(src, dst));
        for _ in 1..workers {
            let sh = &sh;
            set.push(async move {
                let pair = tokio::select! {
                    p = clone_pair(src, Some(dst)) => p,
                    _ = sh.units_taken.cancelled() => return Ok(()),
                };
                match pair {
                    Ok((s, Some(d))) => sh.worker(s.as_ref(), d.as_ref()).await,
                    Ok((_, None)) => Ok(()),
                    Err(e) => {
                        tracing::debug!(error = %e.report(), "cannot open another handle pair; fewer workers");
                        Ok(())
                    }
                }
            });
        }
        set.drain().await?;
        if opts.flush {
            retry(opts.retries, "flush", || dst.flush()).await?;
        }
        Ok::<(), Error>(())
    };
    let res = tokio::select! {
        biased;
        _ = ctl.cancel.cancelled() => Err(Error::cancelled()),
        r = body => r,
    };
    match res {
        Ok(()) => {
            // Final checkpoint: everything done (already flushed).
            if let Some(cb) = &ctl.on_checkpoint {
                cb(&sh.checkpoint());
            }
        }
        Err(e) => {
            // Leave a checkpoint of what is complete so a re-run resumes; best effort.
            if ctl.on_checkpoint.is_some() && sh.checkpoint().done_units() > 0 {
                let emitted = tokio::time::timeout(Duration::from_secs(30), sh.emit_checkpoint(dst, true)).await;
                if !matches!(emitted, Ok(Ok(()))) {
                    tracing::warn!("could not record a checkpoint after the copy failed");
                }
            }
            ctl.progress.finish();
            return Err(e);
        }
    }
    let (mut source_digest, mut target_digest) = (None, None);
    if opts.verify {
        let (a, b) = tokio::join!(digest(src, opts, &ctl.cancel), digest_sized(dst, size, opts, &ctl.cancel));
        let (a, b) = (a?, b?);
        if a != b {
            ctl.progress.finish();
            return Err(Error::new(ErrorCode::VerifyMismatch, format!("source digest {a} but target digest {b}")));
        }
        source_digest = Some(a);
        target_digest = Some(b);
    }
    ctl.progress.finish();
    let s = ctl.progress.snapshot();
    Ok(CopyStats {
        bytes_read: s.bytes_read,
        bytes_written: s.bytes_written,
        bytes_zeroed: s.zeroed,
        bytes_skipped: s.skipped + s.resumed,
        elapsed: s.elapsed,
        source_digest,
        target_digest,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::worker::zero_runs;
    use super::*;
    use crate::transport::ExtentKind;

    #[test]
    fn progress_and_stats_serialise_camel_case_with_seconds() {
        let p = ProgressSnapshot {
            total: 10,
            bytes_read: 4,
            elapsed: Duration::from_millis(1500),
            eta: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["bytesRead"], 4);
        assert_eq!(v["elapsedSeconds"], 1.5);
        assert_eq!(v["etaSeconds"], 2.0);
        assert!(v.get("bytes_read").is_none() && v.get("elapsed").is_none());
        let none = serde_json::to_value(ProgressSnapshot::default()).expect("json");
        assert!(none["etaSeconds"].is_null());
        let s = CopyStats {
            bytes_read: 1,
            bytes_written: 2,
            bytes_zeroed: 3,
            bytes_skipped: 4,
            elapsed: Duration::from_millis(250),
            source_digest: None,
            target_digest: Some("ab".into()),
        };
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(
            (v["bytesZeroed"].clone(), v["elapsedSeconds"].clone(), v["targetDigest"].clone()),
            (3.into(), 0.25.into(), "ab".into())
        );
    }

    #[test]
    fn zero_runs_split_and_merge() {
        let mut d = vec![0u8; 5 * 4096 + 10];
        d[4096 + 7] = 1;
        d[3 * 4096] = 2;
        d[5 * 4096 + 9] = 3;
        let r = zero_runs(&d, 4096);
        assert_eq!(
            r,
            vec![
                (0, 4096, true),
                (4096, 8192, false),
                (8192, 12288, true),
                (12288, 16384, false),
                (16384, 20480, true),
                (20480, 20490, false)
            ]
        );
        assert!(is_zero(&[0u8; 1000]));
        assert!(!is_zero(&{
            let mut v = [0u8; 1000];
            v[999] = 1;
            v
        }));
    }

    /// A disk whose extra connections never come up (a server that stops accepting).
    #[derive(Debug)]
    struct NoClone(crate::memory::MemoryTransport);

    #[async_trait::async_trait]
    impl BlockTransport for NoClone {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn max_connections(&self) -> usize {
            4
        }
        async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
            std::future::pending().await
        }
        async fn read_at(&self, offset: u64, len: usize) -> Result<bytes::Bytes> {
            self.0.read_at(offset, len).await
        }
        async fn write_at(&self, offset: u64, data: bytes::Bytes) -> Result<()> {
            self.0.write_at(offset, data).await
        }
        async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
            self.0.extents(offset, len, kind).await
        }
        async fn flush(&self) -> Result<()> {
            Ok(())
        }
    }

    /// Copying starts on the caller's handles while the other connections open, and a copy does
    /// not wait for connections it no longer needs.
    #[tokio::test]
    async fn copy_does_not_wait_for_connections_still_opening() {
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let src = NoClone(crate::memory::MemoryTransport::from_bytes(data.clone()));
        let dst = crate::memory::MemoryTransport::new(data.len() as u64);
        let opts = CopyOptions { work_unit: 1 << 20, ..CopyOptions::default() };
        let copied = tokio::time::timeout(Duration::from_secs(20), copy(&src, &dst, &opts, &CopyControl::new()))
            .await
            .expect("the copy finished without its extra connections")
            .expect("copy");
        assert_eq!(copied.bytes_written, data.len() as u64);
        assert!(dst.contents() == data, "target differs from the source");
    }

    /// A disk that records how many reads were in flight at once.
    #[derive(Debug)]
    struct Counting {
        disk: crate::memory::MemoryTransport,
        now: AtomicU64,
        most: AtomicU64,
    }

    #[async_trait::async_trait]
    impl BlockTransport for Counting {
        fn size(&self) -> u64 {
            self.disk.size()
        }
        async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
            Err(Error::new(ErrorCode::TransportUnsupported, "one handle"))
        }
        async fn read_at(&self, offset: u64, len: usize) -> Result<bytes::Bytes> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.disk.read_at(offset, len).await
        }
        async fn write_at(&self, offset: u64, data: bytes::Bytes) -> Result<()> {
            self.disk.write_at(offset, data).await
        }
        async fn flush(&self) -> Result<()> {
            Ok(())
        }
    }

    /// A connection keeps `queue_depth` full-size reads in flight, not as many as the budget
    /// would allow (buffers the source cannot fill are memory faulted in for nothing).
    #[tokio::test]
    async fn reads_in_flight_are_bounded_by_the_queue_depth() {
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8 | 1).collect();
        let src = Counting {
            disk: crate::memory::MemoryTransport::from_bytes(data.clone()),
            now: AtomicU64::new(0),
            most: AtomicU64::new(0),
        };
        let dst = crate::memory::MemoryTransport::new(data.len() as u64);
        let opts = CopyOptions { request_size: 64 << 10, queue_depth: 3, ..CopyOptions::default() };
        copy(&src, &dst, &opts, &CopyControl::new()).await.expect("copy");
        assert!(dst.contents() == data, "target differs from the source");
        // 64 reads of 64 KiB, a 32 MiB budget: only the depth keeps it at 3.
        assert_eq!(src.most.load(Ordering::SeqCst), 3, "reads in flight at once");
    }

    #[test]
    fn checkpoint_ranges() {
        let cp = Checkpoint {
            version: 1,
            source_size: 10,
            work_unit: 1,
            fingerprint: "x".into(),
            done: vec![[0, 2], [5, 6]],
        };
        assert!(cp.is_done(1) && !cp.is_done(2) && cp.is_done(5));
        assert_eq!(cp.done_units(), 3);
    }
}
