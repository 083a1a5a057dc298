//! The warm pipeline (CBT, snapshots, delta passes, cutover; at the end of this file) and its
//! guards: a warm plan whose target cannot apply delta passes is refused
//! before anything is touched at the source, and a delta pass that reaches such a target anyway
//! fails loudly instead of "succeeding" with the changed ranges dropped (issue 12: warm into a
//! cluster used to end with exit 0 and a target frozen at the first copy).

use crate::error::{Error, ErrorCode, Result};
use crate::plan::Plan;
use crate::provider::TargetProvider;
use crate::validate::{warm_transfer_message, Concern, Severity};

/// The concern id of a warm plan whose target cannot take delta passes.
pub const WARM_TRANSFER_UNSUPPORTED: &str = "warm.transfer-unsupported";

/// The blocking concern for a warm plan into `target` when the target (after preflight) says it
/// cannot apply incremental passes; `None` for cold plans and capable targets.
pub(super) fn target_concern(plan: &Plan, target: &dyn TargetProvider) -> Option<Concern> {
    if !plan.spec.warm || target.capabilities().incremental {
        return None;
    }
    Some(Concern::new(WARM_TRANSFER_UNSUPPORTED, Severity::Critical, warm_transfer_message(&target.describe())))
}

/// Add `extra` unless a concern with its id is there already (a target's own validation rules
/// may find the same refusal from the plan alone).
pub(super) fn add_once(concerns: &mut Vec<Concern>, extra: Option<&Concern>) {
    if let Some(c) = extra {
        if !concerns.iter().any(|x| x.id == c.id) {
            concerns.push(c.clone());
        }
    }
}

/// Defense in depth before a delta pass: the target must apply it.
pub(super) fn ensure_incremental(target: &dyn TargetProvider) -> Result<()> {
    if target.capabilities().incremental {
        return Ok(());
    }
    Err(Error::new(ErrorCode::Unsupported, warm_transfer_message(&target.describe())))
}

/// A delta pass met a volume the target fills by itself in one go: following that import would
/// return at once and drop the changed ranges, so this is an error, never a success.
pub(super) fn self_import_delta(volume: &str, pass: &str) -> Error {
    Error::new(
        ErrorCode::Unsupported,
        format!(
            "{pass}: the target imports volume {volume} by itself and cannot apply changed ranges; refusing to drop them"
        ),
    )
}

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Event, Executor, VmRun};
use crate::engine::ProgressSnapshot;
use crate::model::{Disk, PowerState, Vm};
use crate::plan::HookStep;
use crate::provider::{PassReport, PreparedVolume, SnapshotRef, TargetPass, TargetVm};
use crate::status::Phase;
use crate::transport::{Extent, ExtentState};

impl Executor {
    /// One pass run by the target itself ([`VolumeSink::Passes`](crate::provider::VolumeSink),
    /// the transfer Job): full when `only` is `None`, else the areas changed since the disk's
    /// last change id. Succeeds only on the worker's own report of that very pass, whose changed
    /// bytes must equal what the executor asked the source for: a worker that copied other ranges is
    /// a failure, never a silent success.
    pub(super) async fn target_pass(
        &self,
        run: VmRun<'_>,
        disk: &Disk,
        vol: &PreparedVolume,
        snapshot: Option<&SnapshotRef>,
        only: Option<&[Extent]>,
        pass: &str,
    ) -> Result<()> {
        let VmRun { idx, vm, tvm, cancel } = run;
        let started = Instant::now();
        let changed_since = match only {
            None => None,
            Some(_) => Some(
                self.lock().vms[idx]
                    .disks
                    .iter()
                    .find(|d| d.key == disk.key)
                    .and_then(|d| d.change_id.clone())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorCode::Internal,
                            format!("{pass}: disk {} has no change id to copy from", disk.key),
                        )
                    })?,
            ),
        };
        if only.is_some() && snapshot.is_none() {
            return Err(Error::new(ErrorCode::Internal, format!("{pass}: a delta pass needs a snapshot")));
        }
        let expected: Option<u64> = only.map(|o| o.iter().map(|e| e.length).sum());
        let report = if expected == Some(0) {
            // Nothing changed on this disk since the last pass: no Job to run.
            PassReport { pass: pass.to_string(), size: vol.size, ..Default::default() }
        } else {
            let req = TargetPass { name: pass.to_string(), snapshot: snapshot.cloned(), changed_since };
            let report = tokio::select! {
                r = self.target.run_pass(tvm, vol, &req) => r?,
                _ = cancel.cancelled() => return Err(Error::cancelled()),
            };
            // A report of an earlier attempt at this pass (another snapshot, say, before a
            // crash) says nothing about this one.
            let asked = (req.snapshot.as_ref().map(|s| s.id.as_str()), req.changed_since.as_deref());
            if (report.snapshot.as_deref(), report.changed_since.as_deref()) != asked {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!(
                        "volume {} {pass}: the worker reported snapshot {:?} since {:?}, not {:?} since {:?}",
                        vol.name, report.snapshot, report.changed_since, asked.0, asked.1
                    ),
                ));
            }
            report
        };
        if report.pass != pass {
            return Err(Error::new(
                ErrorCode::Internal,
                format!("volume {}: asked for pass {pass}, the worker reported pass {:?}", vol.name, report.pass),
            ));
        }
        if let Some(want) = expected {
            if report.changed_bytes != want {
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!(
                        "volume {} {pass}: the worker copied {} changed bytes, the source reports {want}; refusing a pass that may have missed writes",
                        vol.name, report.changed_bytes
                    ),
                ));
            }
        }
        let total = expected.unwrap_or(report.size);
        let progress = ProgressSnapshot {
            total,
            done: total,
            copied: report.bytes_written.saturating_sub(report.bytes_zeroed),
            zeroed: report.bytes_zeroed,
            bytes_read: report.bytes_read,
            bytes_written: report.bytes_written,
            elapsed: started.elapsed(),
            ..Default::default()
        };
        {
            let mut st = self.lock();
            if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == disk.key) {
                d.copied_bytes = if only.is_some() { d.copied_bytes.max(total) } else { report.size };
                d.transferred_bytes += report.bytes_written;
                d.checkpoint = None;
                d.done = true;
            }
        }
        tracing::info!(
            volume = %vol.name, pass, read = report.bytes_read, written = report.bytes_written,
            zeroed = report.bytes_zeroed, ranges = report.ranges, resumed = report.resumed, "pass done by the target"
        );
        self.emit(Event::Disk {
            vm: vm.name.clone(),
            disk: disk.key,
            volume: vol.name.clone(),
            pass: pass.to_string(),
            progress,
        });
        self.save(true)?;
        Ok(())
    }
}

impl Executor {
    /// Remove the cutover snapshot once the target VM exists: consolidating a snapshot can take
    /// minutes on a busy datastore, and the source VM is off meanwhile, so doing it inside the
    /// cutover would lengthen the downtime (source off → target VM created) for nothing. The
    /// data is already on the target, so a failure here leaves the snapshot recorded in the
    /// status with a warning instead of failing (and cleaning up) a migrated VM.
    pub(super) async fn remove_final_snapshot(&self, idx: usize, vm: &Vm) -> Result<()> {
        if let Err(e) = self.remove_our_snapshots(idx, vm).await {
            tracing::warn!(
                error = %e.report(),
                "could not remove the cutover snapshot; the VM is migrated, remove the snapshot at the source by hand"
            );
        }
        Ok(())
    }
}

impl Executor {
    /// After a precopy pass (or the first full copy) whose bytes are durably on the target:
    /// record the change ids durably, then remove the pass's snapshot, waiting for the source to
    /// finish consolidating it. The next pass creates a fresh snapshot and asks for the areas
    /// changed since the recorded change id (CBT change ids stay valid once their snapshot is
    /// gone).
    ///
    /// Why this order (Forklift's, after MTV-1656): the changed-block backup guides have tools record
    /// the change ids, delete the snapshot and only then create the next one. Forklift used to
    /// create the next snapshot first and saw guest file-system corruption on slow datastores,
    /// where a snapshot was created while the consolidation of the removed one was still
    /// writing the overlay back into the base disk, so the new snapshot missed those writes.
    /// Here the removal task (with consolidation) is awaited before any snapshot is created, at
    /// most one snapshot of ours exists at a time, and none lingers on the running VM during the
    /// precopy interval (each costs the guest I/O and datastore space). The cutover snapshot is
    /// kept until the target VM exists ([`remove_final_snapshot`](Self::remove_final_snapshot)).
    pub(super) async fn drop_pass_snapshots(&self, idx: usize, vm: &Vm) -> Result<()> {
        self.save_durable()?;
        self.remove_our_snapshots(idx, vm).await
    }
}

impl Executor {
    /// A pass snapshot: quiesced when the VM runs its guest tools (the guest flushes its file
    /// systems and runs its freeze scripts, so the copy is application-consistent); when
    /// quiescing fails (no Tools, a freeze script error, a VSS timeout), or the VM is off or has
    /// no running Tools, a crash-consistent snapshot with a warning — what a power cut would
    /// leave, which journaling file systems and databases recover from. The cutover snapshot of a
    /// powered-off VM is consistent either way.
    pub(super) async fn create_pass_snapshot(&self, vm: &Vm, name: &str) -> Result<SnapshotRef> {
        use crate::model::{PowerState, ToolsStatus};
        let fresh = self.source.vm(&vm.id).await.unwrap_or_else(|_| vm.clone());
        if fresh.power_state != PowerState::PoweredOn {
            return self.source.create_snapshot(&vm.id, name).await;
        }
        if fresh.tools_status != ToolsStatus::Running {
            tracing::warn!(snapshot = name, "the guest tools are not running: taking a crash-consistent snapshot");
            return self.source.create_snapshot(&vm.id, name).await;
        }
        match self.source.create_snapshot_quiesced(&vm.id, name, true).await {
            Ok(s) => Ok(s),
            Err(e) if e.code() == ErrorCode::Cancelled => Err(e),
            Err(e) => {
                tracing::warn!(
                    snapshot = name, error = %e.report(),
                    "quiescing the guest failed: falling back to a crash-consistent snapshot"
                );
                self.source.create_snapshot(&vm.id, name).await
            }
        }
    }
}

// The warm pipeline: CBT on, an initial snapshot and full copy, delta passes until the cutover,
// then the final pass with the source powered off.
impl Executor {
    pub(super) async fn run_warm(&self, idx: usize, vm: &Vm, tvm: &TargetVm, cancel: &CancellationToken) -> Result<()> {
        if !self.done(idx, Phase::PreHook) {
            self.phase(idx, Phase::PreHook, cancel, self.hooks(idx, HookStep::Pre, tvm, cancel)).await?;
        }
        if !self.done(idx, Phase::EnableCbt) {
            self.phase(idx, Phase::EnableCbt, cancel, async {
                if !vm.cbt_enabled {
                    if !self.plan.spec.options.enable_cbt {
                        return Err(Error::new(
                            ErrorCode::PlanInvalid,
                            "warm migration needs CBT: set options.enableCbt",
                        ));
                    }
                    self.source.enable_cbt(&vm.id).await?;
                    self.lock().vms[idx].source_changes.enabled_cbt = true;
                    self.save_durable()?;
                }
                Ok(())
            })
            .await?;
        }
        if !self.done(idx, Phase::CreateInitialSnapshot) {
            self.phase(idx, Phase::CreateInitialSnapshot, cancel, self.snapshot(idx, vm, 0)).await?;
        }
        let volumes = self.allocate(idx, vm, tvm, cancel).await?;
        if !self.done(idx, Phase::CopyDisks) {
            let snap = self.latest_snapshot(idx)?;
            self.phase(idx, Phase::CopyDisks, cancel, async {
                self.copy_disks(VmRun { idx, vm, tvm, cancel }, &volumes, Some(&snap), None, "full").await?;
                self.set_change_ids(idx, &snap);
                Ok(())
            })
            .await?;
            self.drop_pass_snapshots(idx, vm).await?;
        }
        // Precopy loop until cutover.
        let interval = self.plan.spec.options.precopy_interval.get();
        // The VM's own cutover time, else the plan's (both parsed when the plan was read).
        let cutover_at = self.plan.spec.vms.get(idx).and_then(|v| v.cutover.as_ref());
        let deadline = cutover_at.or(self.plan.spec.options.cutover.as_ref()).map(|t| t.get());
        let mut cut = self.ctl.cutover.subscribe();
        if !self.done(idx, Phase::Cutover) {
            loop {
                if self.opts.cutover_now || *cut.borrow() || deadline.is_some_and(|d| SystemTime::now() >= d) {
                    break;
                }
                let wait = match deadline {
                    Some(d) => interval.min(d.duration_since(SystemTime::now()).unwrap_or_default()),
                    None => interval,
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cut.changed() => {}
                    _ = cancel.cancelled() => return Err(Error::cancelled()),
                }
                if self.opts.cutover_now || *cut.borrow() || deadline.is_some_and(|d| SystemTime::now() >= d) {
                    break;
                }
                let n = self.lock().vms[idx].precopies + 1;
                self.phase(
                    idx,
                    Phase::Precopy,
                    cancel,
                    self.delta_pass(VmRun { idx, vm, tvm, cancel }, &volumes, n, &format!("precopy-{n}")),
                )
                .await?;
                self.lock().vms[idx].precopies = n;
                self.drop_pass_snapshots(idx, vm).await?;
            }
            let mut stopped = None;
            self.phase(idx, Phase::Cutover, cancel, async {
                let graceful = self.plan.spec.options.shutdown_timeout.get();
                let fresh = self.source.vm(&vm.id).await?;
                if fresh.power_state != PowerState::PoweredOff {
                    stopped = Some(Instant::now());
                    self.lock().vms[idx].source_changes.powered_off = true;
                    self.save_durable()?;
                    self.source.power_off(&vm.id, Some(graceful)).await?;
                }
                let n = self.lock().vms[idx].precopies + 1;
                self.delta_pass(VmRun { idx, vm, tvm, cancel }, &volumes, n, "cutover").await?;
                Ok(())
            })
            .await?;
            self.finish_vm(idx, tvm, &volumes, stopped, cancel).await?;
            return self.remove_final_snapshot(idx, vm).await;
        }
        self.finish_vm(idx, tvm, &volumes, None, cancel).await?;
        self.remove_final_snapshot(idx, vm).await
    }

    pub(super) async fn snapshot(&self, idx: usize, vm: &Vm, n: u32) -> Result<SnapshotRef> {
        let name = format!("vmigrate-{}-{}", self.plan.metadata.name, n);
        let snap = self.create_pass_snapshot(vm, &name).await?;
        self.lock().vms[idx].source_changes.snapshots.push(snap.clone());
        self.save_durable()?;
        Ok(snap)
    }

    pub(super) fn latest_snapshot(&self, idx: usize) -> Result<SnapshotRef> {
        self.lock().vms[idx]
            .source_changes
            .snapshots
            .last()
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no snapshot recorded for the warm copy"))
    }

    pub(super) fn set_change_ids(&self, idx: usize, snap: &SnapshotRef) {
        let mut st = self.lock();
        for d in &mut st.vms[idx].disks {
            d.change_id = snap.change_ids.get(&d.key).cloned();
        }
    }

    /// Snapshot, copy what changed since the last pass, drop the older snapshot.
    pub(super) async fn delta_pass(
        &self,
        run: VmRun<'_>,
        volumes: &[PreparedVolume],
        n: u32,
        pass: &str,
    ) -> Result<()> {
        let VmRun { idx, vm, .. } = run;
        ensure_incremental(self.target.as_ref())?;
        // No snapshot of ours may exist when the next one is created (see drop_pass_snapshots);
        // normally none is left, but a resumed run may find one.
        self.remove_our_snapshots(idx, vm).await?;
        let snap = self.snapshot(idx, vm, n).await?;
        let mut changed = BTreeMap::new();
        for disk in &vm.disks {
            let since = self.lock().vms[idx]
                .disks
                .iter()
                .find(|d| d.key == disk.key)
                .and_then(|d| d.change_id.clone())
                .unwrap_or_else(|| "*".to_string());
            changed.insert(disk.key, self.changed_extents(vm, disk, &snap, &since).await?);
        }
        self.copy_disks(run, volumes, Some(&snap), Some(&changed), pass).await?;
        self.set_change_ids(idx, &snap);
        // The change ids are the base of the next pass: durable before the snapshot goes.
        self.save_durable()?;
        Ok(())
    }

    pub(super) async fn changed_extents(
        &self,
        vm: &Vm,
        disk: &Disk,
        snap: &SnapshotRef,
        since: &str,
    ) -> Result<Vec<Extent>> {
        let size = disk.capacity_bytes.max(0) as u64;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < size {
            let areas = self.source.changed_areas(&vm.id, disk, snap, since, offset).await?;
            if areas.end <= offset {
                return Err(Error::new(ErrorCode::SourceFault, "changed-area query made no progress"));
            }
            out.extend(areas.extents.into_iter().map(|e| Extent { state: ExtentState::Data, ..e }));
            offset = areas.end;
        }
        Ok(out)
    }

    pub(super) async fn remove_our_snapshots(&self, idx: usize, vm: &Vm) -> Result<()> {
        let snaps = self.lock().vms[idx].source_changes.snapshots.clone();
        for s in snaps.iter().rev() {
            self.source.remove_snapshot(&vm.id, s).await?;
            self.lock().vms[idx].source_changes.snapshots.retain(|x| x.id != s.id);
            self.save_durable()?;
        }
        Ok(())
    }
}
