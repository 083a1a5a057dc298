//! How to copy ([`CopyOptions`], [`BufferBudget`]), how to steer a copy ([`CopyControl`]) and
//! what resumes it ([`Checkpoint`]).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Progress, DEFAULT_WORK_UNIT, QUEUE_DEPTH};
use crate::transport::Extent;

/// How to copy. [`Default`] gives the tuned settings.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Handle pairs used in parallel (capped by both sides' `max_connections`).
    pub connections: usize,
    /// Largest single read or write (capped at the transports' `max_request`).
    pub request_size: usize,
    /// Bytes of buffers in flight at once, when no shared [`BufferBudget`] is given.
    pub max_buffer_bytes: usize,
    /// Reads of the full request size each connection keeps in flight at most (smaller reads: as
    /// many as fit in the same bytes; the budget may allow fewer): more than the source can
    /// serve only costs fresh buffer memory.
    pub queue_depth: usize,
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
            queue_depth: QUEUE_DEPTH,
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

    pub(super) async fn acquire(&self, bytes: usize) -> OwnedSemaphorePermit {
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

/// Callback receiving each checkpoint.
pub type CheckpointFn = Arc<dyn Fn(&Checkpoint) + Send + Sync>;

/// How a caller watches and steers a running copy.
#[derive(Clone, Default)]
pub struct CopyControl {
    /// Live counters.
    pub progress: Progress,
    /// Cancels the copy; it then returns [`ErrorCode::Cancelled`](crate::error::ErrorCode::Cancelled).
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
