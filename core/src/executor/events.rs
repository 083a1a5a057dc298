//! Progress events of a running plan and the sink that receives them.

use std::sync::Arc;

use serde::Serialize;

use crate::engine::ProgressSnapshot;
use crate::status::{Phase, StatusError};

/// Something that happened, for progress displays (CLI bars, C callbacks, Python iterators).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum Event {
    /// Plan-level progress, as the MTV console shows it.
    #[serde(rename_all = "camelCase")]
    Plan {
        /// VMs completed.
        migrated: usize,
        /// VMs in the plan.
        total: usize,
        /// "N of M VMs migrated".
        summary: String,
    },
    /// A VM entered a phase.
    #[serde(rename_all = "camelCase")]
    Phase {
        /// Source VM name.
        vm: String,
        /// Phase entered.
        phase: Phase,
    },
    /// Copy progress of one disk.
    #[serde(rename_all = "camelCase")]
    Disk {
        /// Source VM name.
        vm: String,
        /// Source disk key.
        disk: i32,
        /// Target volume name (as the manifests name it, e.g. `database-disk0`): what a person
        /// looks for in the output, where the disk key is the source's internal number.
        volume: String,
        /// Which pass: `full`, `precopy-N` or `cutover`.
        pass: String,
        /// Counters, rate and ETA.
        progress: ProgressSnapshot,
    },
    /// A VM reached a terminal phase.
    #[serde(rename_all = "camelCase")]
    VmDone {
        /// Source VM name.
        vm: String,
        /// Completed, Failed or Canceled.
        phase: Phase,
        /// Failure cause.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<StatusError>,
        /// Measured downtime, seconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        downtime_seconds: Option<f64>,
    },
}

/// Receives events; called from executor tasks, so it must be cheap and thread-safe.
pub type EventSink = Arc<dyn Fn(&Event) + Send + Sync>;
