//! The JSON shapes C callers (and the Python package) see for progress and copy statistics:
//! camelCase keys, durations as float seconds.

use std::time::Duration;

use serde_json::{json, Value};
use vmigrate_core::engine::{CopyStats, ProgressSnapshot};

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The counters of a progress snapshot.
pub(crate) fn progress_value(p: &ProgressSnapshot) -> Value {
    json!({
        "total": p.total,
        "done": p.done,
        "copied": p.copied,
        "zeroed": p.zeroed,
        "skipped": p.skipped,
        "resumed": p.resumed,
        "bytesRead": p.bytes_read,
        "bytesWritten": p.bytes_written,
        "elapsedSeconds": secs(p.elapsed),
        "rateBytesPerSec": p.rate_bytes_per_sec,
        "etaSeconds": p.eta.map(secs),
    })
}

/// A progress event: `{"event": kind, ...counters}`.
pub(crate) fn progress_event(kind: &str, p: &ProgressSnapshot) -> Value {
    let mut v = progress_value(p);
    if let Some(map) = v.as_object_mut() {
        map.insert("event".to_string(), Value::String(kind.to_string()));
    }
    v
}

/// What a finished copy did.
pub(crate) fn stats_json(s: &CopyStats) -> Value {
    json!({
        "bytesRead": s.bytes_read,
        "bytesWritten": s.bytes_written,
        "bytesZeroed": s.bytes_zeroed,
        "bytesSkipped": s.bytes_skipped,
        "elapsedSeconds": secs(s.elapsed),
        "sourceDigest": s.source_digest,
        "targetDigest": s.target_digest,
    })
}
