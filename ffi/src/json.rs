//! The JSON shapes C callers (and the Python package) see for progress and copy statistics:
//! camelCase keys, durations as float seconds.

use serde_json::Value;
use vmigrate_core::engine::{CopyStats, ProgressSnapshot};

/// The counters of a progress snapshot (core's serialisation: camelCase, seconds).
pub(crate) fn progress_value(p: &ProgressSnapshot) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
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
    serde_json::to_value(s).unwrap_or(Value::Null)
}
