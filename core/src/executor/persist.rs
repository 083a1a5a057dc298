//! Status persistence: the status file written (debounced or durably) as phases and
//! checkpoints change, the target run lock, and resuming from an earlier run's status.

use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::Executor;
use crate::error::{Error, ErrorCode, Result};
use crate::plan::Plan;
use crate::status::{Phase, PhaseRecord, PlanStatus, SourceChanges, VmStatus};

/// Phase records are written at most this often; later ones within the window are written by
/// one deferred save. A crash loses at most this much of the record, and phases are idempotent.
pub(super) const SAVE_DEBOUNCE: Duration = Duration::from_millis(500);

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(super) fn new_status(plan: &Plan) -> PlanStatus {
    PlanStatus {
        plan: plan.metadata.name.clone(),
        warm: plan.spec.warm,
        started: None,
        completed: None,
        vms: plan
            .spec
            .vms
            .iter()
            .map(|s| VmStatus {
                name: s.display().to_string(),
                source_id: String::new(),
                target_name: String::new(),
                phase: Phase::Pending,
                history: vec![],
                concerns: vec![],
                disks: vec![],
                source_changes: SourceChanges::default(),
                downtime_seconds: None,
                precopies: 0,
                error: None,
                conversion: None,
                inspection: None,
            })
            .collect(),
        plan_digest: Some(crate::status_binding::plan_digest(plan)),
        target: Some(crate::status_binding::target_label(plan)),
    }
}

impl Executor {
    /// Save the status. Phase records are saved without fsync (a lost record only makes a
    /// resume redo an idempotent phase); what we change at the source is saved durably with
    /// [`save_durable`](Self::save_durable), so cleanup can always find it.
    pub(super) fn save(&self, force: bool) -> Result<()> {
        self.save_inner(force, false)
    }

    pub(super) fn save_durable(&self) -> Result<()> {
        self.save_inner(true, true)
    }

    /// Save phase records: now when nothing was saved for [`SAVE_DEBOUNCE`], else by one
    /// deferred save at the end of that window. A plan of many small VMs rewrote its growing
    /// status file twice per phase (15 times per VM, 40% of its orchestration time); a status
    /// reader still sees every change within half a second.
    pub(super) fn save_soon(&self) -> Result<()> {
        let Some(path) = &self.opts.status_path else { return Ok(()) };
        let since = self.last_save.lock().expect("save lock").elapsed();
        let Some(wait) = SAVE_DEBOUNCE.checked_sub(since) else {
            return self.save_inner(true, false);
        };
        let mut deferred = self.deferred_save.lock().expect("deferred save lock");
        if deferred.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let (state, last, path) = (self.state.clone(), self.last_save.clone(), path.clone());
        *deferred = Some(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // Snapshot and write under the save lock (as save_inner does): a forced save
            // racing this one can never be overwritten by this older snapshot.
            let mut last = last.lock().expect("save lock");
            *last = Instant::now();
            let snapshot = state.lock().expect("status lock").clone();
            if let Err(e) = snapshot.save_with(&path, false) {
                warn!(error = %e.report(), "could not save status");
            }
        }));
        Ok(())
    }

    /// Stop a pending deferred save (the caller saves next).
    pub(super) fn cancel_deferred_save(&self) {
        if let Some(h) = self.deferred_save.lock().expect("deferred save lock").take() {
            h.abort();
        }
    }

    pub(super) fn save_inner(&self, force: bool, durable: bool) -> Result<()> {
        let Some(path) = &self.opts.status_path else { return Ok(()) };
        // Held until written: saves land in the order of their snapshots (see save_soon).
        let mut last = self.last_save.lock().expect("save lock");
        if !force && last.elapsed() < Duration::from_millis(500) {
            return Ok(());
        }
        *last = Instant::now();
        let snapshot = self.lock().clone();
        snapshot.save_with(path, durable)
    }

    /// Take the target's run lock ([`TargetProvider::run_lock`]) without waiting.
    ///
    /// # Errors
    /// [`ErrorCode::TargetBusy`] when another run holds it; I/O errors opening it (a link or a
    /// non-regular file there is refused, not followed).
    pub(super) fn lock_target(&self) -> Result<Option<std::fs::File>> {
        let Some(path) = self.target.run_lock() else { return Ok(None) };
        let f = crate::safe_fs::open_own_file(&path)
            .map_err(|e| Error::io(format!("opening lock file {}", path.display()), e))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
                ErrorCode::TargetBusy,
                format!(
                    "the {} target is in use by another vmigrate run (lock {} held); wait for it or use another output",
                    self.target.kind(),
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(format!("locking {}", path.display()), e)),
        }
    }

    pub(super) fn resume_status(&self) -> Result<()> {
        let Some(path) = &self.opts.status_path else { return Ok(()) };
        if !path.exists() {
            return Ok(());
        }
        let old = PlanStatus::load(path)?;
        crate::status_binding::check(&old, &self.plan, path)?;
        if old.plan != self.plan.metadata.name || old.vms.len() != self.plan.spec.vms.len() {
            return Err(Error::new(
                ErrorCode::StatusFile,
                format!(
                    "status file {} belongs to another plan ({}); remove it or choose another",
                    path.display(),
                    old.plan
                ),
            ));
        }
        let mut st = self.lock();
        for (new, old) in st.vms.iter_mut().zip(old.vms) {
            if new.name != old.name {
                return Err(Error::new(
                    ErrorCode::StatusFile,
                    format!("status file {} lists other VMs", path.display()),
                ));
            }
            *new = old;
            // A VM that failed or was cancelled before starts over (its leftovers were cleaned up).
            if matches!(new.phase, Phase::Failed | Phase::Canceled) {
                new.phase = Phase::Pending;
                new.history.clear();
                new.disks.clear();
                new.error = None;
                new.conversion = None;
            }
        }
        st.started = old.started;
        info!(path = %path.display(), "resuming from status file");
        Ok(())
    }
}

/// Record a phase start (`completed == false`) or end on a VM status.
pub(super) fn record(vs: &mut VmStatus, phase: Phase, completed: bool) {
    if completed {
        if let Some(r) = vs.history.iter_mut().rev().find(|r| r.phase == phase) {
            r.completed = Some(now_rfc3339());
        } else {
            vs.history.push(PhaseRecord { phase, started: now_rfc3339(), completed: Some(now_rfc3339()) });
        }
    } else {
        vs.phase = phase;
        vs.history.push(PhaseRecord { phase, started: now_rfc3339(), completed: None });
    }
}
