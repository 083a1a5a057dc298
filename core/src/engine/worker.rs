//! The copy loop: handle pairs, work units from extents, reads under the buffer budget, zero
//! scans, writes, retries and checkpoints.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::progress::ProgressInner;
use super::{BufferBudget, Checkpoint, CopyControl, CopyOptions, Progress, SCAN_INLINE_MAX};
use crate::buf::{is_shared_zeroes, is_zero, shared_zeroes, SHARED_ZEROES_LEN};
use crate::error::{Error, ErrorCode, Result};
use crate::transport::{coalesce, BlockTransport, Extent, ExtentKind, ExtentState};

// ---------------------------------------------------------------------------------------------
// An in-task future set: runs borrowed futures concurrently without spawning (so handles can be
// `&dyn BlockTransport`). `FuturesUnordered` polls only the futures that were woken, which
// matters with hundreds of small requests in flight (docs/perf-notes.md, "Small extents").

pub(super) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(super) struct FutSet<'a, T> {
    pub(super) futs: futures::stream::FuturesUnordered<BoxFut<'a, T>>,
}

impl<'a, T> FutSet<'a, T> {
    pub(super) fn new() -> Self {
        FutSet { futs: futures::stream::FuturesUnordered::new() }
    }

    pub(super) fn push(&mut self, f: impl Future<Output = T> + Send + 'a) {
        self.futs.push(Box::pin(f));
    }

    pub(super) fn len(&self) -> usize {
        self.futs.len()
    }

    /// The next output, or `None` when empty.
    pub(super) async fn next(&mut self) -> Option<T> {
        futures::StreamExt::next(&mut self.futs).await
    }
}

impl<T> FutSet<'_, Result<T>> {
    /// Wait for every future; the first error wins (the rest are dropped).
    pub(super) async fn drain(&mut self) -> Result<()> {
        while let Some(r) = self.next().await {
            r?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------

pub(super) async fn retry<T, F, Fut>(retries: u32, what: &str, mut f: F) -> Result<T>
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
pub(super) fn zero_runs(data: &[u8], sparse: usize) -> Vec<(usize, usize, bool)> {
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

pub(super) enum Handle<'a> {
    Borrowed(&'a dyn BlockTransport),
    Owned(Box<dyn BlockTransport>),
}

impl Handle<'_> {
    pub(super) fn get(&self) -> &dyn BlockTransport {
        match self {
            Handle::Borrowed(t) => *t,
            Handle::Owned(b) => b.as_ref(),
        }
    }
}

/// How many handle pairs to use: what the caller wants, as far as both sides allow.
pub(super) fn handle_count(src: &dyn BlockTransport, dst: Option<&dyn BlockTransport>, want: usize) -> usize {
    let n = want.max(1).min(src.max_connections().max(1));
    dst.map_or(n, |d| n.min(d.max_connections().max(1)))
}

pub(super) type Owned = Box<dyn BlockTransport>;

/// One more handle pair, both sides opened at once (an NBD handshake is several round trips).
pub(super) async fn clone_pair(
    src: &dyn BlockTransport,
    dst: Option<&dyn BlockTransport>,
) -> Result<(Owned, Option<Owned>)> {
    match dst {
        Some(d) => {
            let (s, d) = tokio::try_join!(src.try_clone(), d.try_clone())?;
            Ok((s, Some(d)))
        }
        None => Ok((src.try_clone().await?, None)),
    }
}

/// The caller's handles plus up to `want - 1` clones, opened concurrently; a side that cannot
/// clone leaves fewer handles.
pub(super) async fn open_handles<'a>(
    src: &'a dyn BlockTransport,
    dst: Option<&'a dyn BlockTransport>,
    want: usize,
) -> Vec<(Handle<'a>, Option<Handle<'a>>)> {
    let n = handle_count(src, dst, want);
    let clones = futures::future::join_all((1..n).map(|_| clone_pair(src, dst))).await;
    let mut out = vec![(Handle::Borrowed(src), dst.map(Handle::Borrowed))];
    for c in clones {
        match c {
            Ok((s, d)) => out.push((Handle::Owned(s), d.map(Handle::Owned))),
            Err(e) => tracing::debug!(error = %e.report(), "cannot open another handle pair"),
        }
    }
    out
}

pub(super) fn fingerprint(src_size: u64, dst_size: u64, unit: u64, only: Option<&[Extent]>) -> String {
    let mut h = Sha256::new();
    h.update(format!("vmigrate-copy-v1:{src_size}:{dst_size}:{unit}").as_bytes());
    if let Some(only) = only {
        for e in only {
            h.update(format!(";{}+{}:{:?}", e.offset, e.length, e.state).as_bytes());
        }
    }
    hex::encode(&h.finalize()[..12])
}

pub(super) struct Shared<'a> {
    pub(super) opts: &'a CopyOptions,
    pub(super) ctl: &'a CopyControl,
    pub(super) budget: BufferBudget,
    pub(super) size: u64,
    pub(super) unit: u64,
    pub(super) units: u64,
    pub(super) request: usize,
    pub(super) skip_zero: bool,
    pub(super) use_cfr: bool,
    /// Flush the target after every unit (durable copies to targets other than local files).
    pub(super) flush_behind: bool,
    /// [`COALESCE_GAP`](super::COALESCE_GAP), or 0 when gaps read would be written as data (no
    /// zero detection, `copy_file_range`).
    pub(super) coalesce_gap: u64,
    pub(super) only: Option<Vec<Extent>>,
    pub(super) next: AtomicU64,
    /// Cancelled once every unit was handed to a worker: a handle pair still opening then has
    /// nothing left to do and stops waiting for its connections.
    pub(super) units_taken: CancellationToken,
    pub(super) done: Mutex<Vec<bool>>,
    pub(super) fingerprint: String,
    pub(super) last_checkpoint: tokio::sync::Mutex<Instant>,
}

impl Shared<'_> {
    pub(super) fn progress(&self) -> &ProgressInner {
        &self.ctl.progress.inner
    }

    pub(super) fn next_unit(&self) -> Option<u64> {
        loop {
            let u = self.next.fetch_add(1, Ordering::Relaxed);
            if u >= self.units {
                self.units_taken.cancel();
                return None;
            }
            let done = self.done.lock().unwrap_or_else(|p| p.into_inner())[u as usize];
            if !done {
                return Some(u);
            }
        }
    }

    pub(super) fn checkpoint(&self) -> Checkpoint {
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
    pub(super) async fn emit_checkpoint(&self, dst: &dyn BlockTransport, force: bool) -> Result<()> {
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
    pub(super) fn unit_work(&self, u: u64) -> Vec<(u64, u64, bool)> {
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

    pub(super) async fn run_unit(&self, u: u64, src: &dyn BlockTransport, dst: &dyn BlockTransport) -> Result<()> {
        // This connection's share of the reads in flight (see `QUEUE_DEPTH`).
        let window = BufferBudget::new(self.request.saturating_mul(self.opts.queue_depth.max(1)));
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
                        let (slot, permit) = self.acquire_polling(&mut set, &window, len).await?;
                        let chunk = self.copy_chunk(src, dst, off, len, permit);
                        set.push(async move {
                            let r = chunk.await;
                            drop(slot);
                            r
                        });
                        off += len as u64;
                    }
                    pos = span_end;
                    i = j;
                }
            }
        }
        set.drain().await
    }

    /// Wait for room in this connection's window and in the budget, while still driving the
    /// futures already in flight.
    pub(super) async fn acquire_polling(
        &self,
        set: &mut FutSet<'_, Result<()>>,
        window: &BufferBudget,
        len: usize,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let acq = async { (window.acquire(len).await, self.budget.acquire(len).await) };
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

    pub(super) fn zero_or_skip<'s>(
        &'s self,
        set: &mut FutSet<'s, Result<()>>,
        dst: &'s dyn BlockTransport,
        off: u64,
        len: u64,
    ) {
        if len == 0 {
            return;
        }
        if self.skip_zero {
            Progress::add(&self.progress().skipped, len);
            return;
        }
        set.push(self.zero_target(dst, off, len));
    }

    pub(super) async fn zero_target(&self, dst: &dyn BlockTransport, off: u64, len: u64) -> Result<()> {
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

    pub(super) async fn copy_chunk(
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

    pub(super) async fn worker(&self, src: &dyn BlockTransport, dst: &dyn BlockTransport) -> Result<()> {
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

    pub(super) async fn unit_done(&self, u: u64, dst: &dyn BlockTransport) -> Result<()> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())[u as usize] = true;
        self.emit_checkpoint(dst, false).await
    }
}
