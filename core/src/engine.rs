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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Kept here too: callers found the zero check in the engine first.
pub use crate::buf::is_zero;
use crate::buf::{is_shared_zeroes, shared_zeroes, SHARED_ZEROES_LEN};
use crate::error::{Error, ErrorCode, Result};
use crate::transport::{coalesce, BlockTransport, Extent, ExtentKind, ExtentState};

/// Default size of a work unit: the granularity of extent queries, scheduling and checkpoints.
pub const DEFAULT_WORK_UNIT: u64 = 128 << 20;

/// Granularity of [`digest`]: fixed so that digests of any two transports are comparable.
const DIGEST_CHUNK: u64 = 4 << 20;

/// Data extents separated by a hole or zero extent of at most this many bytes are read as one
/// request (up to the request size): the gap comes back as zeroes (a hole chunk from a server
/// with structured replies), which the zero scan then skips or zeroes on the target exactly as
/// the extent would have been. Extents of 4-64 KiB otherwise cost a request each, and a request
/// costs the client and the server far more than reading 64 KiB of holes.
const COALESCE_GAP: u64 = 128 << 10;

/// Buffers at least this large are scanned for zeroes on the blocking pool.
const SCAN_INLINE_MAX: usize = 512 << 10;

/// How to copy. [`Default`] gives the tuned settings.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Handle pairs used in parallel (capped by both sides' `max_connections`).
    pub connections: usize,
    /// Largest single read or write (capped at the transports' `max_request`).
    pub request_size: usize,
    /// Bytes of buffers in flight at once, when no shared [`BufferBudget`] is given.
    pub max_buffer_bytes: usize,
    /// Scan data read for all-zero blocks and zero them instead of writing.
    pub zero_detect: bool,
    /// Compare digests of source and target after the copy.
    pub verify: bool,
    /// Flush the target at the end (and before each checkpoint): the copy is then durable.
    pub flush: bool,
    /// Retries of a request failing with a transient error.
    pub retries: u32,
    /// Delta copy: `Data` extents are copied, `Zero`/`Hole` extents zeroed, nothing else touched.
    pub only: Option<Vec<Extent>>,
    /// Resume from this checkpoint: its units are skipped.
    pub resume: Option<Checkpoint>,
    /// A budget shared with other copies (a plan's disks), instead of `max_buffer_bytes`.
    pub buffer_budget: Option<BufferBudget>,
    /// Work unit size in bytes (checkpoint granularity).
    pub work_unit: u64,
    /// Zero-detection granularity in bytes.
    pub sparse_size: usize,
    /// Smallest interval between two checkpoints (each costs a target flush).
    pub checkpoint_interval: Duration,
    /// Between two local files, copy data extents with `copy_file_range` (reflink where the
    /// filesystem can). Data is then not scanned for zeroes.
    pub copy_file_range: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            connections: 4,
            request_size: 4 << 20,
            max_buffer_bytes: 32 << 20,
            zero_detect: true,
            verify: false,
            flush: true,
            retries: 5,
            only: None,
            resume: None,
            buffer_budget: None,
            work_unit: DEFAULT_WORK_UNIT,
            sparse_size: 4096,
            checkpoint_interval: Duration::from_secs(5),
            copy_file_range: false,
        }
    }
}

/// A byte budget for buffers in flight, shareable between concurrent copies.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    sem: Arc<Semaphore>,
    total: usize,
}

impl BufferBudget {
    /// A budget of `bytes` (at least 64 KiB).
    pub fn new(bytes: usize) -> Self {
        let total = bytes.clamp(64 << 10, Semaphore::MAX_PERMITS);
        BufferBudget { sem: Arc::new(Semaphore::new(total)), total }
    }

    /// The budget's size in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    async fn acquire(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = u32::try_from(bytes.min(self.total)).unwrap_or(u32::MAX);
        self.sem.clone().acquire_many_owned(n).await.expect("the budget semaphore is never closed")
    }
}

/// Which work units of a copy are done; persisted by the caller to resume after a crash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Source size the checkpoint was made for.
    pub source_size: u64,
    /// Work unit size.
    pub work_unit: u64,
    /// Fingerprint of what the units mean (sizes, delta extents): a checkpoint of another copy
    /// is rejected.
    pub fingerprint: String,
    /// Done units, as sorted half-open `[start, end)` ranges of unit indices.
    pub done: Vec<[u64; 2]>,
}

impl Checkpoint {
    /// Whether unit `i` is done.
    pub fn is_done(&self, i: u64) -> bool {
        self.done.iter().any(|r| r[0] <= i && i < r[1])
    }

    /// Number of units done.
    pub fn done_units(&self) -> u64 {
        self.done.iter().map(|r| r[1] - r[0]).sum()
    }
}

#[derive(Debug, Default)]
struct ProgressInner {
    total: AtomicU64,
    copied: AtomicU64,
    zeroed: AtomicU64,
    skipped: AtomicU64,
    resumed: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    started: Mutex<Option<Instant>>,
    finished: Mutex<Option<Instant>>,
}

/// Live progress of a copy: atomics a reporter thread reads while the copy runs.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

/// Durations in machine-readable output are float seconds, the one shape the CLI's JSON, the C
/// callbacks and the Python package share.
fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn as_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// A point-in-time view of [`Progress`]. Serialised with camelCase keys and durations as float
/// seconds (`elapsedSeconds`, `etaSeconds`): the shape of every progress event vmigrate emits.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProgressSnapshot {
    /// Bytes to process (the source size, or the delta's size).
    pub total: u64,
    /// Bytes processed: copied + zeroed + skipped + resumed.
    pub done: u64,
    /// Data bytes written.
    pub copied: u64,
    /// Bytes zeroed on the target.
    pub zeroed: u64,
    /// Bytes of holes left untouched on a zero-initialised target.
    pub skipped: u64,
    /// Bytes done in a previous run, skipped by resume.
    pub resumed: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the target (data and zero-fill).
    pub bytes_written: u64,
    /// Time since the copy started.
    #[serde(rename = "elapsedSeconds", serialize_with = "as_secs")]
    pub elapsed: Duration,
    /// Average rate of `done` (excluding resumed bytes) since the start.
    pub rate_bytes_per_sec: f64,
    /// Estimated time left at the current rate.
    #[serde(rename = "etaSeconds", serialize_with = "as_opt_secs")]
    pub eta: Option<Duration>,
}

impl Progress {
    /// A fresh progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read every counter at once.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let i = &self.inner;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (copied, zeroed, skipped, resumed) = (get(&i.copied), get(&i.zeroed), get(&i.skipped), get(&i.resumed));
        let total = get(&i.total);
        let done = (copied + zeroed + skipped + resumed).min(total.max(copied + zeroed + skipped + resumed));
        let started = *i.started.lock().unwrap_or_else(|p| p.into_inner());
        let finished = *i.finished.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = match (started, finished) {
            (Some(s), Some(f)) => f.duration_since(s),
            (Some(s), None) => s.elapsed(),
            _ => Duration::ZERO,
        };
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { (done - resumed) as f64 / secs } else { 0.0 };
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate));
        ProgressSnapshot {
            total,
            done,
            copied,
            zeroed,
            skipped,
            resumed,
            bytes_read: get(&i.read),
            bytes_written: get(&i.written),
            elapsed,
            rate_bytes_per_sec: rate,
            eta,
        }
    }

    fn start(&self, total: u64) {
        let i = &self.inner;
        for a in [&i.copied, &i.zeroed, &i.skipped, &i.resumed, &i.read, &i.written] {
            a.store(0, Ordering::Relaxed);
        }
        i.total.store(total, Ordering::Relaxed);
        *i.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        *i.finished.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn finish(&self) {
        *self.inner.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }
}

/// Callback receiving each checkpoint.
pub type CheckpointFn = Arc<dyn Fn(&Checkpoint) + Send + Sync>;

/// How a caller watches and steers a running copy.
#[derive(Clone, Default)]
pub struct CopyControl {
    /// Live counters.
    pub progress: Progress,
    /// Cancels the copy; it then returns [`ErrorCode::Cancelled`].
    pub cancel: CancellationToken,
    /// Called with each checkpoint, after the target was flushed (when `flush` is on).
    pub on_checkpoint: Option<CheckpointFn>,
}

impl CopyControl {
    /// Fresh progress, a new token, no checkpoint callback.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for CopyControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyControl")
            .field("progress", &self.progress)
            .field("cancel", &self.cancel)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .finish()
    }
}

/// What a finished copy did (serialised like [`ProgressSnapshot`]: camelCase, seconds).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CopyStats {
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the target (data and zero-fill).
    pub bytes_written: u64,
    /// Bytes zeroed on the target.
    pub bytes_zeroed: u64,
    /// Bytes of holes not touched (zero-initialised target) or skipped by resume.
    pub bytes_skipped: u64,
    /// Wall time.
    #[serde(rename = "elapsedSeconds", serialize_with = "as_secs")]
    pub elapsed: Duration,
    /// Source digest when verified.
    pub source_digest: Option<String>,
    /// Target digest when verified.
    pub target_digest: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// An in-task future set: runs borrowed futures concurrently without spawning (so handles can be
// `&dyn BlockTransport`). `FuturesUnordered` polls only the futures that were woken: with small
// extents a copy has hundreds of requests in flight, and polling every one of them at each
// wake-up cost a fifth of the client's CPU (perf, 4-64 KiB extents: 0.5-0.7 s user per GiB
// against nbdcopy's 0.11-0.13 s).

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

struct FutSet<'a, T> {
    futs: futures::stream::FuturesUnordered<BoxFut<'a, T>>,
}

impl<'a, T> FutSet<'a, T> {
    fn new() -> Self {
        FutSet { futs: futures::stream::FuturesUnordered::new() }
    }

    fn push(&mut self, f: impl Future<Output = T> + Send + 'a) {
        self.futs.push(Box::pin(f));
    }

    fn len(&self) -> usize {
        self.futs.len()
    }

    /// The next output, or `None` when empty.
    async fn next(&mut self) -> Option<T> {
        futures::StreamExt::next(&mut self.futs).await
    }
}

impl<T> FutSet<'_, Result<T>> {
    /// Wait for every future; the first error wins (the rest are dropped).
    async fn drain(&mut self) -> Result<()> {
        while let Some(r) = self.next().await {
            r?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

async fn retry<T, F, Fut>(retries: u32, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && attempt < retries => {
                let delay = Duration::from_millis(50u64 << attempt.min(6)).min(Duration::from_secs(2));
                tracing::warn!(attempt, what, error = %e.report(), "transient error, retrying");
                attempt += 1;
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Split `data` into alternating runs `(start, end, is_zero)` at `sparse` granularity.
fn zero_runs(data: &[u8], sparse: usize) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + sparse).min(data.len());
        let z = is_zero(&data[pos..end]);
        match runs.last_mut() {
            Some(last) if last.2 == z => last.1 = end,
            _ => runs.push((pos, end, z)),
        }
        pos = end;
    }
    runs
}

enum Handle<'a> {
    Borrowed(&'a dyn BlockTransport),
    Owned(Box<dyn BlockTransport>),
}

impl Handle<'_> {
    fn get(&self) -> &dyn BlockTransport {
        match self {
            Handle::Borrowed(t) => *t,
            Handle::Owned(b) => b.as_ref(),
        }
    }
}

async fn open_handles<'a>(
    src: &'a dyn BlockTransport,
    dst: Option<&'a dyn BlockTransport>,
    want: usize,
) -> Vec<(Handle<'a>, Option<Handle<'a>>)> {
    let mut n = want.max(1).min(src.max_connections().max(1));
    if let Some(d) = dst {
        n = n.min(d.max_connections().max(1));
    }
    let mut out = vec![(Handle::Borrowed(src), dst.map(Handle::Borrowed))];
    while out.len() < n {
        let s = match src.try_clone().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e.report(), "source cannot clone; using {} connection(s)", out.len());
                break;
            }
        };
        let d = match dst {
            Some(d) => match d.try_clone().await {
                Ok(d) => Some(Handle::Owned(d)),
                Err(e) => {
                    tracing::debug!(error = %e.report(), "target cannot clone; using {} connection(s)", out.len());
                    break;
                }
            },
            None => None,
        };
        out.push((Handle::Owned(s), d));
    }
    out
}

fn fingerprint(src_size: u64, dst_size: u64, unit: u64, only: Option<&[Extent]>) -> String {
    let mut h = Sha256::new();
    h.update(format!("vmigrate-copy-v1:{src_size}:{dst_size}:{unit}").as_bytes());
    if let Some(only) = only {
        for e in only {
            h.update(format!(";{}+{}:{:?}", e.offset, e.length, e.state).as_bytes());
        }
    }
    hex::encode(&h.finalize()[..12])
}

struct Shared<'a> {
    opts: &'a CopyOptions,
    ctl: &'a CopyControl,
    budget: BufferBudget,
    size: u64,
    unit: u64,
    units: u64,
    request: usize,
    skip_zero: bool,
    use_cfr: bool,
    /// Flush the target after every unit (durable copies to targets other than local files).
    flush_behind: bool,
    /// [`COALESCE_GAP`], or 0 when gaps read would be written as data (no zero detection,
    /// `copy_file_range`).
    coalesce_gap: u64,
    only: Option<Vec<Extent>>,
    next: AtomicU64,
    done: Mutex<Vec<bool>>,
    fingerprint: String,
    last_checkpoint: tokio::sync::Mutex<Instant>,
}

impl Shared<'_> {
    fn progress(&self) -> &ProgressInner {
        &self.ctl.progress.inner
    }

    fn next_unit(&self) -> Option<u64> {
        loop {
            let u = self.next.fetch_add(1, Ordering::Relaxed);
            if u >= self.units {
                return None;
            }
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner())[u as usize];
            if !done {
                return Some(u);
            }
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for (i, d) in done.iter().enumerate() {
            if !*d {
                continue;
            }
            let i = i as u64;
            match ranges.last_mut() {
                Some(r) if r[1] == i => r[1] = i + 1,
                _ => ranges.push([i, i + 1]),
            }
        }
        Checkpoint {
            version: 1,
            source_size: self.size,
            work_unit: self.unit,
            fingerprint: self.fingerprint.clone(),
            done: ranges,
        }
    }

    /// Flush (if asked) and hand the caller a checkpoint.
    async fn emit_checkpoint(&self, dst: &dyn BlockTransport, force: bool) -> Result<()> {
        let Some(cb) = &self.ctl.on_checkpoint else { return Ok(()) };
        let mut last = self.last_checkpoint.lock().await;
        if !force && last.elapsed() < self.opts.checkpoint_interval {
            return Ok(());
        }
        // Snapshot before flushing: every unit in it completed its writes, so the flush makes
        // them durable.
        let cp = self.checkpoint();
        if self.opts.flush {
            retry(self.opts.retries, "flush", || dst.flush()).await?;
        }
        cb(&cp);
        *last = Instant::now();
        Ok(())
    }

    /// The work of one unit: ranges to copy (`true`) or to zero (`false`).
    fn unit_work(&self, u: u64) -> Vec<(u64, u64, bool)> {
        let start = u * self.unit;
        let end = (start + self.unit).min(self.size);
        match &self.only {
            None => vec![(start, end, true)],
            Some(only) => only
                .iter()
                .filter(|e| e.offset < end && e.end() > start)
                .map(|e| (e.offset.max(start), e.end().min(end), e.state == ExtentState::Data))
                .collect(),
        }
    }

    async fn run_unit(&self, u: u64, src: &dyn BlockTransport, dst: &dyn BlockTransport) -> Result<()> {
        let mut set: FutSet<'_, Result<()>> = FutSet::new();
        for (start, end, copy) in self.unit_work(u) {
            if !copy {
                self.zero_or_skip(&mut set, dst, start, end - start);
                continue;
            }
            let mut pos = start;
            while pos < end {
                let exts =
                    retry(self.opts.retries, "extents", || src.extents(pos, end - pos, ExtentKind::Allocation)).await?;
                let exts = coalesce(exts.into_iter().filter_map(|e| {
                    let (a, b) = (e.offset.max(pos), e.end().min(end));
                    (b > a).then_some(Extent { offset: a, length: b - a, state: e.state })
                }));
                match exts.first() {
                    Some(first) if first.offset == pos => {}
                    _ => {
                        return Err(Error::new(
                            ErrorCode::Internal,
                            format!("source answered extents not starting at {pos}: {exts:?}"),
                        ))
                    }
                }
                let mut i = 0;
                while i < exts.len() {
                    let e = exts[i];
                    if e.offset != pos {
                        return Err(Error::new(ErrorCode::Internal, format!("gap in source extents at {pos}")));
                    }
                    if e.state != ExtentState::Data {
                        self.zero_or_skip(&mut set, dst, e.offset, e.length);
                        pos = e.end();
                        i += 1;
                        continue;
                    }
                    // Small data extents close together become one read (see `COALESCE_GAP`).
                    let mut span_end = e.end();
                    let mut j = i + 1;
                    while j + 1 < exts.len() {
                        let (gap, next) = (exts[j], exts[j + 1]);
                        if gap.state == ExtentState::Data
                            || next.state != ExtentState::Data
                            || gap.length > self.coalesce_gap
                            || next.end() - e.offset > self.request as u64
                        {
                            break;
                        }
                        span_end = next.end();
                        j += 2;
                    }
                    let mut off = e.offset;
                    while off < span_end {
                        let len = (span_end - off).min(self.request as u64) as usize;
                        let permit = self.acquire_polling(&mut set, len).await?;
                        set.push(self.copy_chunk(src, dst, off, len, permit));
                        off += len as u64;
                    }
                    pos = span_end;
                    i = j;
                }
            }
        }
        set.drain().await
    }

    /// Wait for budget while still driving the futures already in flight.
    async fn acquire_polling(&self, set: &mut FutSet<'_, Result<()>>, len: usize) -> Result<OwnedSemaphorePermit> {
        let acq = self.budget.acquire(len);
        tokio::pin!(acq);
        loop {
            if set.len() == 0 {
                return Ok(acq.await);
            }
            tokio::select! {
                p = &mut acq => return Ok(p),
                Some(r) = set.next() => r?,
            }
        }
    }

    fn zero_or_skip<'s>(&'s self, set: &mut FutSet<'s, Result<()>>, dst: &'s dyn BlockTransport, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        if self.skip_zero {
            Progress::add(&self.progress().skipped, len);
            return;
        }
        set.push(self.zero_target(dst, off, len));
    }

    async fn zero_target(&self, dst: &dyn BlockTransport, off: u64, len: u64) -> Result<()> {
        let p = self.progress();
        if retry(self.opts.retries, "zero", || dst.zero(off, len)).await? {
            Progress::add(&p.zeroed, len);
            return Ok(());
        }
        let mut pos = off;
        while pos < off + len {
            let n = (off + len - pos).min(SHARED_ZEROES_LEN as u64) as usize;
            let zeroes = shared_zeroes(n).expect("n is at most SHARED_ZEROES_LEN");
            retry(self.opts.retries, "write zeroes", || dst.write_at(pos, zeroes.clone())).await?;
            Progress::add(&p.written, n as u64);
            Progress::add(&p.zeroed, n as u64);
            pos += n as u64;
        }
        Ok(())
    }

    async fn copy_chunk(
        &self,
        src: &dyn BlockTransport,
        dst: &dyn BlockTransport,
        off: u64,
        len: usize,
        permit: OwnedSemaphorePermit,
    ) -> Result<()> {
        let p = self.progress();
        if self.use_cfr {
            retry(self.opts.retries, "copy_from", || dst.copy_from(src, off, len as u64)).await?;
            for a in [&p.read, &p.written, &p.copied] {
                Progress::add(a, len as u64);
            }
            drop(permit);
            return Ok(());
        }
        let data = retry(self.opts.retries, "read", || src.read_at(off, len)).await?;
        if data.len() != len {
            return Err(Error::new(
                ErrorCode::ShortRead,
                format!("source returned {} of {len} bytes at {off}", data.len()),
            ));
        }
        Progress::add(&p.read, len as u64);
        let runs = if !self.opts.zero_detect {
            vec![(0, len, false)]
        } else if is_shared_zeroes(&data) {
            // The source already knows these are zeroes (see `shared_zeroes`).
            vec![(0, len, true)]
        } else if len <= SCAN_INLINE_MAX {
            zero_runs(&data, self.opts.sparse_size)
        } else {
            let (d, sparse) = (data.clone(), self.opts.sparse_size);
            tokio::task::spawn_blocking(move || zero_runs(&d, sparse))
                .await
                .map_err(|e| Error::new(ErrorCode::Internal, "zero scan task failed").with_source(e))?
        };
        let mut writes = Vec::new();
        for (a, b, zero) in runs {
            let at = off + a as u64;
            if zero {
                if self.skip_zero {
                    Progress::add(&p.skipped, (b - a) as u64);
                } else {
                    self.zero_target(dst, at, (b - a) as u64).await?;
                }
            } else {
                writes.push((at, data.slice(a..b)));
            }
        }
        let bytes: u64 = writes.iter().map(|(_, d)| d.len() as u64).sum();
        match writes.len() {
            0 => {}
            1 => {
                let (at, slice) = writes.pop().expect("one write");
                retry(self.opts.retries, "write", || dst.write_at(at, slice.clone())).await?;
            }
            _ => retry(self.opts.retries, "write", || dst.write_runs(writes.clone())).await?,
        }
        Progress::add(&p.written, bytes);
        Progress::add(&p.copied, bytes);
        drop(permit);
        Ok(())
    }

    async fn worker(&self, src: &dyn BlockTransport, dst: &dyn BlockTransport) -> Result<()> {
        // With flush-behind, a unit is done once the flush after it returns; that flush runs
        // while this worker copies the next unit (a worker that waited for it would leave the
        // target idle, and with a single connection there is no other worker).
        let mut flushing: Option<(u64, BoxFut<'_, Result<()>>)> = None;
        while let Some(u) = self.next_unit() {
            if self.ctl.cancel.is_cancelled() {
                return Err(Error::cancelled());
            }
            match flushing.take() {
                Some((prev, flush)) => {
                    let (flushed, copied) = tokio::join!(flush, self.run_unit(u, src, dst));
                    flushed?;
                    self.unit_done(prev, dst).await?;
                    copied?;
                }
                None => self.run_unit(u, src, dst).await?,
            }
            if self.flush_behind {
                flushing = Some((u, Box::pin(retry(self.opts.retries, "flush", || dst.flush()))));
            } else {
                self.unit_done(u, dst).await?;
            }
        }
        if let Some((prev, flush)) = flushing {
            flush.await?;
            self.unit_done(prev, dst).await?;
        }
        Ok(())
    }

    async fn unit_done(&self, u: u64, dst: &dyn BlockTransport) -> Result<()> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())[u as usize] = true;
        self.emit_checkpoint(dst, false).await
    }
}

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

    let handles = open_handles(src, Some(dst), opts.connections).await;
    let body = async {
        let mut set: FutSet<'_, Result<()>> = FutSet::new();
        for (s, d) in &handles {
            let d = d.as_ref().expect("copy opens target handles").get();
            set.push(sh.worker(s.get(), d));
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
    drop(handles);
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

/// Content digest of `t` over its virtual size: sha256 over the size and the sha256 of every
/// 4 MiB chunk. Chunks the allocation map says read as zeroes are not read, yet hash exactly like
/// read zeroes, so equal content gives equal digests whatever the sparseness.
///
/// # Errors
/// The transport's read/extent errors; [`ErrorCode::Cancelled`] when cancelled.
///
/// # Cancel safety
/// Read-only; dropping the future is harmless.
pub async fn digest(t: &dyn BlockTransport, opts: &CopyOptions, cancel: &CancellationToken) -> Result<String> {
    digest_sized(t, t.size(), opts, cancel).await
}

/// [`digest`] of the first `size` bytes (a target larger than its source).
async fn digest_sized(
    t: &dyn BlockTransport,
    size: u64,
    opts: &CopyOptions,
    cancel: &CancellationToken,
) -> Result<String> {
    let chunks = size.div_ceil(DIGEST_CHUNK);
    let hashes: Mutex<Vec<[u8; 32]>> = Mutex::new(vec![[0u8; 32]; chunks as usize]);
    let zero_full: [u8; 32] = Sha256::digest(&vec![0u8; DIGEST_CHUNK as usize][..]).into();
    let budget = opts.buffer_budget.clone().unwrap_or_else(|| BufferBudget::new(opts.max_buffer_bytes));
    let window = opts.work_unit.max(DIGEST_CHUNK) / DIGEST_CHUNK * DIGEST_CHUNK;
    let next = AtomicU64::new(0);
    let handles = open_handles(t, None, opts.connections).await;

    let dw = DigestWork { size, window, zero_full, opts, hashes: &hashes, budget: &budget, next: &next };
    let body = async {
        let mut set: FutSet<'_, Result<()>> = FutSet::new();
        for (h, _) in &handles {
            set.push(dw.worker(h.get()));
        }
        set.drain().await
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::cancelled()),
        r = body => r?,
    }
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    for c in hashes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        h.update(c);
    }
    Ok(hex::encode(h.finalize()))
}

struct DigestWork<'a> {
    size: u64,
    window: u64,
    zero_full: [u8; 32],
    opts: &'a CopyOptions,
    hashes: &'a Mutex<Vec<[u8; 32]>>,
    budget: &'a BufferBudget,
    next: &'a AtomicU64,
}

impl DigestWork<'_> {
    async fn worker(&self, h: &dyn BlockTransport) -> Result<()> {
        let (size, window, zero_full, opts, hashes, budget, next) =
            (self.size, self.window, self.zero_full, self.opts, self.hashes, self.budget, self.next);
        loop {
            let w = next.fetch_add(1, Ordering::Relaxed);
            let start = w * window;
            if start >= size {
                return Ok::<(), Error>(());
            }
            let end = (start + window).min(size);
            // Which chunks of the window read as zeroes.
            let mut zero_chunk = vec![true; ((end - start).div_ceil(DIGEST_CHUNK)) as usize];
            let mut pos = start;
            while pos < end {
                let exts = retry(opts.retries, "extents", || h.extents(pos, end - pos, ExtentKind::Allocation)).await?;
                let mut advanced = false;
                for e in exts {
                    let (a, b) = (e.offset.max(pos), e.end().min(end));
                    if b <= a {
                        continue;
                    }
                    if e.state == ExtentState::Data {
                        for c in (a - start) / DIGEST_CHUNK..=(b - 1 - start) / DIGEST_CHUNK {
                            zero_chunk[c as usize] = false;
                        }
                    }
                    pos = pos.max(b);
                    advanced = true;
                }
                if !advanced {
                    return Err(Error::new(ErrorCode::Internal, format!("no extents answered at {pos}")));
                }
            }
            let mut set: FutSet<'_, Result<()>> = FutSet::new();
            for (i, z) in zero_chunk.iter().enumerate() {
                let off = start + i as u64 * DIGEST_CHUNK;
                let len = (end - off).min(DIGEST_CHUNK) as usize;
                let idx = (off / DIGEST_CHUNK) as usize;
                if *z {
                    let hsh =
                        if len as u64 == DIGEST_CHUNK { zero_full } else { Sha256::digest(&vec![0u8; len][..]).into() };
                    hashes.lock().unwrap_or_else(|p| p.into_inner())[idx] = hsh;
                    continue;
                }
                while set.len() >= 8 {
                    if let Some(r) = set.next().await {
                        r?;
                    }
                }
                set.push(async move {
                    let permit = budget.acquire(len).await;
                    let data = retry(opts.retries, "read", || h.read_at(off, len)).await?;
                    if data.len() != len {
                        return Err(Error::new(ErrorCode::ShortRead, format!("short read at {off}")));
                    }
                    let hsh = tokio::task::spawn_blocking(move || -> [u8; 32] { Sha256::digest(&data[..]).into() })
                        .await
                        .map_err(|e| Error::new(ErrorCode::Internal, "hash task failed").with_source(e))?;
                    drop(permit);
                    hashes.lock().unwrap_or_else(|p| p.into_inner())[idx] = hsh;
                    Ok(())
                });
            }
            set.drain().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
