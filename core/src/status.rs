//! Plan status: what has happened to each VM, persisted so a re-run resumes.
//!
//! The executor writes this after every phase change and checkpoint (atomically: write to a
//! temporary file, then rename), and `vmigrate status` reads it. It never holds secrets.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::concern::Concern;
use crate::engine::Checkpoint;
use crate::error::{Error, ErrorCode, Result};
use crate::transport::SourceIdentity;

/// Where a VM is in its pipeline. Cold and warm plans use different subsets, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Not started.
    Pending,
    /// Reading the VM and preparing.
    Initialize,
    /// Running validation.
    Validate,
    /// Running pre hooks.
    PreHook,
    /// Warm: enabling CBT.
    EnableCbt,
    /// Warm: first snapshot.
    CreateInitialSnapshot,
    /// Cold: stopping the source.
    PowerOff,
    /// Creating target volumes.
    AllocateDisks,
    /// Copying disk data (full copy).
    CopyDisks,
    /// Warm: delta copies between snapshots.
    Precopy,
    /// Warm: final shutdown, snapshot and delta.
    Cutover,
    /// Converting the guest on its copied disks (virt-v2v), or recording why not.
    ConvertGuest,
    /// Creating the target VM.
    CreateVm,
    /// Running post hooks.
    PostHook,
    /// Creating services and routes.
    Expose,
    /// Done.
    Completed,
    /// Failed (see `error`).
    Failed,
    /// Cancelled by the user.
    Canceled,
}

impl Phase {
    /// Whether the VM is finished, one way or another.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Canceled)
    }
}

/// A typed error as stored in status (code + message, no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    /// Numeric [`ErrorCode`].
    pub code: u32,
    /// Symbolic name.
    pub name: String,
    /// Message with its cause chain.
    pub message: String,
}

impl From<&Error> for StatusError {
    fn from(e: &Error) -> Self {
        StatusError { code: e.code() as u32, name: e.code().name().to_string(), message: e.report() }
    }
}

/// One phase that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRecord {
    /// Phase.
    pub phase: Phase,
    /// Start, RFC 3339.
    pub started: String,
    /// End, RFC 3339, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
}

/// Progress of one disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    /// Source disk key.
    pub key: i32,
    /// Target volume name.
    #[serde(default)]
    pub volume: String,
    /// Virtual size.
    pub total_bytes: u64,
    /// Bytes accounted for (copied, zeroed or skipped) in the current pass.
    pub copied_bytes: u64,
    /// Bytes actually transferred over all passes.
    #[serde(default)]
    pub transferred_bytes: u64,
    /// Bytes read from the source so far in the pass that is running (0 between passes): with
    /// `transferred_bytes`, what has moved, from which `status --watch` and `serve` compute
    /// rates a person can believe (the virtual `copied_bytes` jumps over holes).
    #[serde(default)]
    pub pass_read_bytes: u64,
    /// Completed.
    #[serde(default)]
    pub done: bool,
    /// Engine checkpoint of the pass that is running, bound to the source it reads: a resume
    /// uses it only when the source's identity is still the one recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<DiskCheckpoint>,
    /// What the completed copy of this disk read (set with `done`): a resume that finds the
    /// source changed since copies the disk again rather than pair it with other disks copied
    /// from a later state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<SourceIdentity>,
    /// Warm: CBT change id the target is in sync with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

/// A disk's resume checkpoint as the status file keeps it: the engine's [`Checkpoint`] and the
/// identity of the source it was made from ([`SourceProvider::disk_identity`]).
///
/// Typed, so a checkpoint that does not decode makes the status file fail to load
/// ([`ErrorCode::StatusFile`]) rather than silently restart: vmigrate writes the file atomically,
/// so a bad checkpoint means the file was edited or damaged, and the same damage may sit in the
/// records cleanup relies on (snapshots created, power changed). A checkpoint from before
/// identities were recorded decodes with an empty identity, which matches no source: that disk
/// restarts, with a warning.
///
/// [`SourceProvider::disk_identity`]: crate::provider::SourceProvider::disk_identity
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCheckpoint {
    /// The engine's checkpoint (done work units, sizes, fingerprint).
    #[serde(flatten)]
    pub copy: Checkpoint,
    /// The source it was made from.
    #[serde(default)]
    pub source: SourceIdentity,
}

/// Status of one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStatus {
    /// Source name.
    pub name: String,
    /// Source reference ([`VmId::source_ref`](crate::model::VmId::source_ref)).
    #[serde(default)]
    pub source_id: String,
    /// Target name.
    pub target_name: String,
    /// Current phase.
    pub phase: Phase,
    /// Phases that ran.
    #[serde(default)]
    pub history: Vec<PhaseRecord>,
    /// Validation findings.
    #[serde(default)]
    pub concerns: Vec<Concern>,
    /// Per-disk progress.
    #[serde(default)]
    pub disks: Vec<DiskStatus>,
    /// What we changed at the source and must undo on failure (snapshot ids, power).
    #[serde(default)]
    pub source_changes: SourceChanges,
    /// Measured downtime: source stopped to target ready, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    /// Warm: precopies done.
    #[serde(default)]
    pub precopies: u32,
    /// Failure cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
    /// What the guest conversion found and decided (kept so a resumed plan does not convert
    /// again and still builds the VM the conversion called for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<crate::convert::GuestConversion>,
    /// The guest's operating system as inspected on the source disks before anything moved
    /// (sources with local disk files; see `SourceProvider::local_disk_files`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inspection: Option<crate::convert::InspectedOs>,
}

/// Source-side changes the executor made, recorded so cleanup can undo exactly those.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceChanges {
    /// We powered the VM off (and should power it back on after a failure).
    #[serde(default)]
    pub powered_off: bool,
    /// We enabled CBT.
    #[serde(default)]
    pub enabled_cbt: bool,
    /// Snapshots we created and have not removed yet.
    #[serde(default)]
    pub snapshots: Vec<crate::provider::SnapshotRef>,
}

/// Status of a whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Plan name.
    pub plan: String,
    /// Warm or cold.
    #[serde(default)]
    pub warm: bool,
    /// Start, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// End, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    /// Per VM.
    pub vms: Vec<VmStatus>,
    /// Digest of the plan this status belongs to
    /// ([`plan_digest`](crate::status_binding::plan_digest)): a resume of another plan is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    /// The plan's target and namespace, for the message when another plan meets this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl PlanStatus {
    /// VMs that completed.
    pub fn migrated(&self) -> usize {
        self.vms.iter().filter(|v| v.phase == Phase::Completed).count()
    }

    /// "N of M VMs migrated", as the MTV console says it.
    pub fn summary(&self) -> String {
        format!("{} of {} VMs migrated", self.migrated(), self.vms.len())
    }

    /// Whether every VM reached a terminal phase.
    pub fn is_finished(&self) -> bool {
        self.vms.iter().all(|v| v.phase.is_terminal())
    }

    /// Read a status file.
    pub fn load(path: &Path) -> Result<PlanStatus> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading status {}", path.display()), e).recode(ErrorCode::StatusFile))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(ErrorCode::StatusFile, format!("status file {} is corrupt", path.display())).with_source(e)
        })
    }

    /// Write a status file atomically and durably: a crash leaves either the old or the new
    /// file, never half, and the new one survives a power loss.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, true)
    }

    /// Write a status file atomically (write to a temporary file, rename over). With `durable`
    /// the data is fsynced before the rename; without, a power loss may bring back an older
    /// status — which a resume handles by redoing idempotent phases — but no fsync stalls the
    /// copies running next to it (on ext4 an fsync commits the journal, flushing their data).
    ///
    /// Saves of one process are serialized: they share the temporary file, which
    /// [`write_atomic`](crate::safe_fs::write_atomic) removes and re-creates, so two at once
    /// (the executor's deferred save and a forced one) could rename the other's half-written
    /// file into place, then fail with "No such file" — a warm migration failed and was
    /// cleaned up at its very end that way (issue 12's CLI test).
    pub fn save_with(&self, path: &Path, durable: bool) -> Result<()> {
        static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let err = |e: std::io::Error| {
            Error::io(format!("writing status {}", path.display()), e).recode(ErrorCode::StatusFile)
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("status always serializes");
        let _one_at_a_time = SAVING.lock().unwrap_or_else(|p| p.into_inner());
        // Exclusive, no link followed, 0600: see crate::safe_fs.
        crate::safe_fs::write_atomic(path, &tmp, &text, durable).map_err(err)
    }
}

impl Error {
    /// Keep message and cause, change the code (for I/O inside a specific subsystem).
    pub fn recode(mut self, code: ErrorCode) -> Self {
        if self.code() != ErrorCode::NoSpace {
            self.set_code(code);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> PlanStatus {
        PlanStatus {
            plan: "move-webapp".into(),
            warm: false,
            started: None,
            completed: None,
            vms: ["database", "winweb01", "winweb02"]
                .iter()
                .map(|n| VmStatus {
                    name: n.to_string(),
                    source_id: format!("vm-{n}"),
                    target_name: n.to_string(),
                    phase: Phase::Pending,
                    history: vec![],
                    concerns: vec![],
                    disks: vec![DiskStatus { key: 2000, total_bytes: 100, ..Default::default() }],
                    source_changes: SourceChanges::default(),
                    downtime_seconds: None,
                    precopies: 0,
                    error: None,
                    conversion: None,
                    inspection: None,
                })
                .collect(),
            plan_digest: None,
            target: None,
        }
    }

    #[test]
    fn summary_counts_completed() {
        let mut s = status();
        assert_eq!(s.summary(), "0 of 3 VMs migrated");
        s.vms[0].phase = Phase::Completed;
        s.vms[1].phase = Phase::Failed;
        assert_eq!(s.summary(), "1 of 3 VMs migrated");
        assert!(!s.is_finished());
        s.vms[2].phase = Phase::Canceled;
        assert!(s.is_finished());
    }

    /// A checkpoint is typed: one of an older vmigrate (no source identity) decodes with an
    /// empty identity, which matches no source (the disk restarts); one that is not a
    /// checkpoint fails the load with `StatusFile` instead of being dropped in silence.
    #[test]
    fn checkpoints_decode_typed() {
        let old = r#"{"key":2000,"totalBytes":8,"copiedBytes":0,
            "checkpoint":{"version":1,"source_size":8,"work_unit":4,"fingerprint":"f","done":[[0,1]]}}"#;
        let d: DiskStatus = serde_json::from_str(old).expect("an older checkpoint decodes");
        let cp = d.checkpoint.expect("kept");
        assert_eq!(cp.copy.done, vec![[0, 1]]);
        assert_eq!(cp.source, SourceIdentity::default());
        let mut d2 = DiskStatus { key: 1, ..Default::default() };
        d2.checkpoint =
            Some(DiskCheckpoint { copy: cp.copy.clone(), source: SourceIdentity::of_parts(["a=1".into()]) });
        let text = serde_json::to_string(&d2).expect("encode");
        assert!(text.contains(r#""source":"a=1""#) && text.contains(r#""work_unit":4"#), "{text}");
        assert_eq!(serde_json::from_str::<DiskStatus>(&text).expect("round trip"), d2);
        assert!(
            serde_json::from_str::<DiskStatus>(r#"{"key":1,"totalBytes":1,"copiedBytes":0,"checkpoint":[1]}"#).is_err()
        );
    }

    #[test]
    fn save_load_round_trip_atomic() {
        let dir = std::env::temp_dir().join(format!("vmigrate-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let path = dir.join("status.json");
        let s = status();
        s.save(&path).expect("save");
        assert_eq!(PlanStatus::load(&path).expect("load"), s);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, b"{not json").expect("write");
        assert_eq!(PlanStatus::load(&path).expect_err("corrupt").code(), ErrorCode::StatusFile);
        let missing = PlanStatus::load(&dir.join("nope.json")).expect_err("missing");
        assert_eq!(missing.code(), ErrorCode::StatusFile);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Saves racing from two threads (the executor's deferred save and a forced one) all
    /// succeed, and the file always holds one whole status.
    #[test]
    fn concurrent_saves_never_fail_or_tear() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("status.json");
        let small = status();
        let mut big = status();
        for v in &mut big.vms {
            v.name = "x".repeat(64 << 10);
        }
        std::thread::scope(|sc| {
            for s in [&small, &big] {
                let path = &path;
                sc.spawn(move || {
                    for i in 0..200 {
                        s.save_with(path, i % 10 == 0).expect("a racing save");
                    }
                });
            }
            sc.spawn(|| {
                for _ in 0..200 {
                    if let Ok(text) = std::fs::read(&path) {
                        serde_json::from_slice::<PlanStatus>(&text).expect("never a torn status file");
                    }
                }
            });
        });
        let last = PlanStatus::load(&path).expect("load");
        assert!(last == small || last == big);
    }
}
