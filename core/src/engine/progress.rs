//! Live progress of a copy ([`Progress`], [`ProgressSnapshot`]) and what a finished copy did
//! ([`CopyStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Default)]
pub(super) struct ProgressInner {
    pub(super) total: AtomicU64,
    pub(super) copied: AtomicU64,
    pub(super) zeroed: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) resumed: AtomicU64,
    pub(super) read: AtomicU64,
    pub(super) written: AtomicU64,
    pub(super) started: Mutex<Option<Instant>>,
    pub(super) finished: Mutex<Option<Instant>>,
}

/// Live progress of a copy: atomics a reporter thread reads while the copy runs.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub(super) inner: Arc<ProgressInner>,
}

/// Durations in machine-readable output are float seconds, the one shape the CLI's JSON, the C
/// callbacks and the Python package share.
pub(super) fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

pub(super) fn as_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
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

    pub(super) fn start(&self, total: u64) {
        let i = &self.inner;
        for a in [&i.copied, &i.zeroed, &i.skipped, &i.resumed, &i.read, &i.written] {
            a.store(0, Ordering::Relaxed);
        }
        i.total.store(total, Ordering::Relaxed);
        *i.started.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        *i.finished.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(super) fn finish(&self) {
        *self.inner.finished.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub(super) fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
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
