//! The plan executor: runs every VM of a plan through its cold or warm pipeline.
//!
//! ```text
//! cold: Initialize → Validate → PreHook → PowerOff → AllocateDisks → CopyDisks → ConvertGuest → CreateVm
//!       → PostHook → Expose → Completed
//! warm: Initialize → Validate → PreHook → EnableCbt → CreateInitialSnapshot → AllocateDisks → CopyDisks
//!       → Precopy* → Cutover → ConvertGuest → CreateVm → PostHook → Expose → Completed
//! ```
//!
//! Every phase change and every engine checkpoint is written to the status file (atomically), so
//! running the same plan again after a crash resumes each VM from its last completed phase and
//! each disk from its checkpoint. A failed or cancelled VM is cleaned up: target objects removed,
//! our snapshots removed, the source powered back on if we powered it off. Other VMs go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::engine::{self, CopyOptions};
use crate::error::{Error, ErrorCode, Result};
use crate::model::{PowerState, Vm};
use crate::plan::{NetworkDestination, Plan, TargetPowerState};
use crate::provider::{SourceProvider, TargetProvider, TargetVm};
use crate::status::{Phase, PhaseRecord, PlanStatus, StatusError};
use crate::validate::{validate_plan, Concern, Severity, ValidationContext};
use guest::apply_inspection;
use persist::{new_status, now_rfc3339, record};

mod cold;
mod control;
mod disks;
mod events;
mod guest;
mod hooks;
mod persist;
mod warm;
pub use control::{ControlRequests, Controller};
pub use events::{Event, EventSink};
pub use hooks::run_local_hook;
pub use warm::WARM_TRANSFER_UNSUPPORTED;

/// How to run a plan.
#[derive(Clone)]
pub struct ExecutorOptions {
    /// Status file; resumed from when it exists and belongs to the same plan.
    pub status_path: Option<PathBuf>,
    /// Control file polled for cancel / cutover requests from other processes.
    pub control_path: Option<PathBuf>,
    /// Engine settings shared by every disk copy (their buffer budget is shared, not multiplied).
    /// The plan's own copy options are applied on top by [`Executor::new`]: `options.verify`
    /// turns verification on whatever `copy.verify` says, so no caller can forget it.
    pub copy: CopyOptions,
    /// Progress sink.
    pub events: Option<EventSink>,
    /// Warm: cut over right after the initial copy instead of waiting for the plan's time.
    pub cutover_now: bool,
    /// How often disk progress events are emitted.
    pub progress_interval: Duration,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        let mut copy = CopyOptions::default();
        copy.buffer_budget = Some(engine::BufferBudget::new(copy.max_buffer_bytes));
        ExecutorOptions {
            status_path: None,
            control_path: None,
            copy,
            events: None,
            cutover_now: false,
            progress_interval: Duration::from_millis(250),
        }
    }
}

impl std::fmt::Debug for ExecutorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorOptions")
            .field("status_path", &self.status_path)
            .field("control_path", &self.control_path)
            .field("cutover_now", &self.cutover_now)
            .finish_non_exhaustive()
    }
}

/// One VM's run, as the pipeline steps pass it down: its index in the plan and status, the
/// source VM, what it becomes at the target, and its cancellation (the VM's own or the plan's).
#[derive(Clone, Copy)]
struct VmRun<'a> {
    idx: usize,
    vm: &'a Vm,
    tvm: &'a TargetVm,
    cancel: &'a CancellationToken,
}

/// Runs one plan.
pub struct Executor {
    plan: Plan,
    source: Arc<dyn SourceProvider>,
    target: Arc<dyn TargetProvider>,
    opts: ExecutorOptions,
    ctl: Controller,
    state: Arc<Mutex<PlanStatus>>,
    last_save: Arc<Mutex<Instant>>,
    /// The deferred save [`save_soon`](Self::save_soon) scheduled, if one is pending.
    deferred_save: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("plan", &self.plan.metadata.name).field("opts", &self.opts).finish()
    }
}

impl Executor {
    /// An executor for `plan` moving VMs from `source` to `target`.
    pub fn new(
        plan: Plan,
        source: Arc<dyn SourceProvider>,
        target: Arc<dyn TargetProvider>,
        mut opts: ExecutorOptions,
    ) -> Self {
        // The plan's choices hold for every front end (CLI, C, Python, a Rust program): a caller
        // may ask for more (`--verify`) but never drops what the plan asks for.
        opts.copy.verify |= plan.spec.options.verify;
        let state = Arc::new(Mutex::new(new_status(&plan)));
        Executor {
            plan,
            source,
            target,
            opts,
            ctl: Controller::default(),
            state,
            last_save: Arc::new(Mutex::new(Instant::now())),
            deferred_save: Mutex::new(None),
        }
    }

    /// A handle to cancel or cut over, usable from any thread while [`run`](Self::run) is going.
    pub fn controller(&self) -> Controller {
        self.ctl.clone()
    }

    /// The current status (a copy).
    pub fn status(&self) -> PlanStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanStatus> {
        self.state.lock().expect("status lock is never held across a panic")
    }

    fn emit(&self, e: Event) {
        if let Some(sink) = &self.opts.events {
            sink(&e);
        }
    }

    /// Run the plan to the end (or cancellation) and return the final status.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationBlocked`] when a VM has a critical concern (nothing is changed);
    /// source/target errors before any VM starts. Failures of single VMs are recorded in the
    /// status, not returned.
    ///
    /// # Cancel safety
    /// Use [`Controller::cancel`] rather than dropping the future: cancel runs the cleanup.
    pub async fn run(&self) -> Result<PlanStatus> {
        let span = info_span!("plan", plan = %self.plan.metadata.name, warm = self.plan.spec.warm);
        self.run_inner().instrument(span).await
    }

    async fn run_inner(&self) -> Result<PlanStatus> {
        // Held until the run ends (or its future is dropped), whichever front end runs it.
        let _target_lock = self.lock_target()?;
        self.resume_status()?;
        let plan = &self.plan;
        let ns = &plan.spec.target_namespace;
        let inventory = self.source.inventory().await?;
        let existing = self.target.existing_vms(ns).await?;
        let preflight = self.target.preflight(plan).await?;
        let ctx = ValidationContext {
            plan,
            inventory: &inventory,
            existing: &existing,
            capabilities: self.source.capabilities(),
            rules: &[self.source.vm_rules(), self.target.vm_rules()],
        };
        let validation = validate_plan(&ctx);
        let inspections = self.inspect_guests(&inventory, &validation).await?;
        let warm_refusal = warm::target_concern(plan, self.target.as_ref());
        let mut blocked = Vec::new();
        {
            let mut st = self.lock();
            if st.started.is_none() {
                st.started = Some(now_rfc3339());
            }
            for (vs, v) in st.vms.iter_mut().zip(&validation.vms) {
                if vs.phase == Phase::Completed {
                    continue;
                }
                vs.concerns = v.concerns.clone();
                vs.concerns.extend(preflight.iter().cloned());
                warm::add_once(&mut vs.concerns, warm_refusal.as_ref());
                if let Some(found) = inspections.get(&vs.name) {
                    apply_inspection(vs, found);
                }
                vs.target_name = v.target_name.clone();
                vs.source_id = v.source_id.clone().unwrap_or_default();
                record(vs, Phase::Validate, true);
                if vs.concerns.iter().any(|c| c.severity == Severity::Critical) {
                    blocked.push(vs.name.clone());
                }
            }
        }
        if !blocked.is_empty() {
            self.save_durable()?;
            return Err(Error::new(
                ErrorCode::ValidationBlocked,
                format!("validation blocks {}: run `vmigrate validate` for the concerns", blocked.join(", ")),
            ));
        }
        self.save(true)?;
        let control = self.spawn_control_watch();

        let sem = Arc::new(Semaphore::new(plan.spec.options.max_in_flight));
        let mut tasks = Vec::new();
        for idx in 0..plan.spec.vms.len() {
            if self.lock().vms[idx].phase == Phase::Completed {
                continue;
            }
            let sem = sem.clone();
            let inventory = &inventory;
            tasks.push(async move {
                let _permit = sem.acquire().await.expect("semaphore is never closed");
                self.run_vm(idx, inventory).await
            });
        }
        futures_join_all(tasks).await;
        self.expose_completed().await;
        if let Some(h) = control {
            h.abort();
        }
        {
            let mut st = self.lock();
            if st.is_finished() {
                st.completed = Some(now_rfc3339());
            }
        }
        self.cancel_deferred_save();
        self.save_durable()?;
        let st = self.status();
        info!(summary = %st.summary(), "plan finished");
        Ok(st)
    }

    fn target_vm(&self, idx: usize, vm: &Vm) -> TargetVm {
        let sel = &self.plan.spec.vms[idx];
        let name = self.lock().vms[idx].target_name.clone();
        let mut networks = BTreeMap::new();
        for nic in &vm.nics {
            let dest = nic
                .network
                .as_deref()
                .and_then(|n| self.plan.network_for(n, None))
                .cloned()
                .unwrap_or(NetworkDestination::Ignored);
            networks.insert(nic.key, dest);
        }
        let storage = vm
            .disks
            .iter()
            .filter_map(|d| {
                d.datastore.as_deref().and_then(|ds| self.plan.storage_for(ds, None)).map(|s| (d.key, s.clone()))
            })
            .collect();
        TargetVm {
            plan: self.plan.metadata.name.clone(),
            namespace: self.plan.spec.target_namespace.clone(),
            name,
            source: vm.clone(),
            labels: sel.labels.clone(),
            networks,
            storage,
            disk_bus: sel.disk_bus,
            run_strategy: self.run_strategy(idx, vm),
            overwrite: sel.overwrite,
            conversion: self.lock().vms[idx].conversion.clone(),
            import_hint: self.source.import_hint(),
        }
    }

    /// The VM's `runStrategy`: its `targetPowerState` when `on` / `off`, else the plan's
    /// `options.runStrategy` when set, else as the source was before we touched it.
    fn run_strategy(&self, idx: usize, vm: &Vm) -> String {
        let on = match self.plan.spec.vms[idx].target_power_state.unwrap_or_default() {
            TargetPowerState::On => true,
            TargetPowerState::Off => false,
            TargetPowerState::Auto => {
                if let Some(rs) = &self.plan.spec.options.run_strategy {
                    return rs.clone();
                }
                vm.power_state == PowerState::PoweredOn || self.lock().vms[idx].source_changes.powered_off
            }
        };
        if on { "Always" } else { "Halted" }.to_string()
    }

    async fn run_vm(&self, idx: usize, inventory: &crate::model::Inventory) {
        let name = self.lock().vms[idx].name.clone();
        let cancel = self.ctl.vm_token(&name);
        let span = info_span!("vm", vm = %name);
        let res: std::result::Result<(), (Phase, Error)> = async {
            let fail = |e: Error| {
                let phase = if e.code() == ErrorCode::Cancelled { Phase::Canceled } else { Phase::Failed };
                (phase, e)
            };
            let source_id = self.lock().vms[idx].source_id.clone();
            let vm0 = inventory
                .vms
                .iter()
                .find(|v| v.id.source_ref == source_id)
                .ok_or_else(|| Error::new(ErrorCode::VmNotFound, format!("VM {name} disappeared from the source")))
                .map_err(fail)?;
            let vm = self.phase(idx, Phase::Initialize, &cancel, self.source.vm(&vm0.id)).await.map_err(fail)?;
            let tvm = self.target_vm(idx, &vm);
            let result = if self.plan.spec.warm {
                self.run_warm(idx, &vm, &tvm, &cancel).await
            } else {
                self.run_cold(idx, &vm, &tvm, &cancel).await
            };
            if let Err(e) = result {
                let (phase, e) = fail(e);
                warn!(error = %e.report(), "VM {phase:?}; cleaning up");
                self.cleanup(idx, &tvm).await;
                return Err((phase, e));
            }
            Ok(())
        }
        .instrument(span)
        .await;
        match res {
            Ok(()) => {
                // Reaches Completed after the plan-level Expose.
            }
            Err((phase, e)) => {
                let (error, downtime) = {
                    let mut st = self.lock();
                    let vs = &mut st.vms[idx];
                    vs.phase = phase;
                    vs.error = Some(StatusError::from(&e));
                    (vs.error.clone(), vs.downtime_seconds)
                };
                if let Err(e) = self.save_durable() {
                    warn!(error = %e.report(), "could not save status");
                }
                self.emit(Event::VmDone { vm: name, phase, error, downtime_seconds: downtime });
                self.emit_plan();
            }
        }
    }

    fn emit_plan(&self) {
        let st = self.status();
        self.emit(Event::Plan { migrated: st.migrated(), total: st.vms.len(), summary: st.summary() });
    }

    fn done(&self, idx: usize, phase: Phase) -> bool {
        self.lock().vms[idx].history.iter().any(|r| r.phase == phase && r.completed.is_some())
    }

    /// Run one phase (skipped on resume when it completed before), recording it.
    async fn phase<T>(
        &self,
        idx: usize,
        phase: Phase,
        cancel: &CancellationToken,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if cancel.is_cancelled() {
            return Err(Error::cancelled());
        }
        let name = {
            let mut st = self.lock();
            let vs = &mut st.vms[idx];
            record(vs, phase, false);
            vs.name.clone()
        };
        self.save_soon()?;
        self.emit(Event::Phase { vm: name, phase });
        let out = tokio::select! {
            r = fut => r?,
            _ = cancel.cancelled() => return Err(Error::cancelled()),
        };
        {
            let mut st = self.lock();
            record(&mut st.vms[idx], phase, true);
        }
        self.save_soon()?;
        Ok(out)
    }

    async fn cleanup(&self, idx: usize, tvm: &TargetVm) {
        if let Err(e) = self.target.cleanup(tvm).await {
            warn!(error = %e.report(), "target cleanup failed");
        }
        let (snaps, powered_off) = {
            let st = self.lock();
            (st.vms[idx].source_changes.snapshots.clone(), st.vms[idx].source_changes.powered_off)
        };
        for s in snaps.iter().rev() {
            match self.source.remove_snapshot(&tvm.source.id, s).await {
                Ok(()) => self.lock().vms[idx].source_changes.snapshots.retain(|x| x.id != s.id),
                Err(e) => warn!(error = %e.report(), snapshot = %s.name, "could not remove snapshot"),
            }
        }
        let enabled_cbt = self.lock().vms[idx].source_changes.enabled_cbt;
        if enabled_cbt {
            match self.source.disable_cbt(&tvm.source.id).await {
                Ok(()) => self.lock().vms[idx].source_changes.enabled_cbt = false,
                Err(e) => warn!(error = %e.report(), "could not turn changed block tracking back off"),
            }
        }
        if powered_off {
            match self.source.power_on(&tvm.source.id).await {
                Ok(()) => self.lock().vms[idx].source_changes.powered_off = false,
                Err(e) => warn!(error = %e.report(), "could not power the source VM back on"),
            }
        }
        {
            let mut st = self.lock();
            for d in &mut st.vms[idx].disks {
                d.done = false;
                d.checkpoint = None;
                d.copied_from = None;
                d.copied_bytes = 0;
            }
        }
    }

    async fn expose_completed(&self) {
        let ready: Vec<usize> = {
            let st = self.lock();
            st.vms
                .iter()
                .enumerate()
                .filter(|(_, v)| {
                    !v.phase.is_terminal()
                        && v.history.iter().any(|r| r.phase == Phase::PostHook && r.completed.is_some())
                })
                .map(|(i, _)| i)
                .collect()
        };
        if ready.is_empty() {
            return;
        }
        let ns = &self.plan.spec.target_namespace;
        for &i in &ready {
            let name = {
                let mut st = self.lock();
                record(&mut st.vms[i], Phase::Expose, false);
                st.vms[i].name.clone()
            };
            self.emit(Event::Phase { vm: name, phase: Phase::Expose });
        }
        let res = if self.plan.spec.services.is_empty() {
            Ok(())
        } else {
            self.target.expose(&self.plan.metadata.name, ns, &self.plan.spec.services).await
        };
        for &i in &ready {
            let (name, phase, error, downtime) = {
                let mut st = self.lock();
                let vs = &mut st.vms[i];
                match &res {
                    Ok(()) => {
                        record(vs, Phase::Expose, true);
                        vs.phase = Phase::Completed;
                        vs.history.push(PhaseRecord {
                            phase: Phase::Completed,
                            started: now_rfc3339(),
                            completed: Some(now_rfc3339()),
                        });
                    }
                    Err(e) => vs.error = Some(StatusError::from(e)),
                }
                (vs.name.clone(), vs.phase, vs.error.clone(), vs.downtime_seconds)
            };
            if phase == Phase::Completed {
                self.emit(Event::VmDone { vm: name, phase, error, downtime_seconds: downtime });
            }
        }
        if let Err(e) = &res {
            warn!(error = %e.report(), "exposing services failed; run the plan again to retry");
        }
        self.emit_plan();
    }
}

async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    futures::future::join_all(futs).await
}

/// Concerns for a VM as the status keeps them (critical first).
pub fn blocking_concerns(st: &PlanStatus) -> Vec<(String, Concern)> {
    st.vms
        .iter()
        .flat_map(|v| {
            v.concerns.iter().filter(|c| c.severity == Severity::Critical).map(move |c| (v.name.clone(), c.clone()))
        })
        .collect()
}
