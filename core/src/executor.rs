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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::convert::{self, ConversionRequest, GuestConversion};
use crate::engine::{self, Checkpoint, CopyControl, CopyOptions, ProgressSnapshot};
use crate::error::{Error, ErrorCode, Result};
use crate::model::{Disk, PowerState, Vm};
use crate::plan::{parse_duration, HookSpec, HookStep, NetworkDestination, Plan, TargetPowerState};
use crate::provider::{PreparedVolume, SnapshotRef, SourceProvider, TargetProvider, TargetVm, VolumeSink};
use crate::status::{DiskCheckpoint, DiskStatus, Phase, PhaseRecord, PlanStatus, SourceChanges, StatusError, VmStatus};
use crate::transport::{Extent, ExtentState, SourceIdentity};
use crate::validate::{validate_plan, Concern, Severity, ValidationContext};

mod hooks;
mod warm;
pub use hooks::run_local_hook;
pub use warm::WARM_TRANSFER_UNSUPPORTED;

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

/// Thread-safe handle to steer a running plan: cancel it (or one VM), or cut over now.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    cancel: CancellationToken,
    vms: Arc<Mutex<BTreeMap<String, CancellationToken>>>,
    cutover: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Controller {
    /// Cancel the whole plan.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancel one VM (by source name); the others go on. Unknown names are ignored.
    pub fn cancel_vm(&self, name: &str) {
        let token = self.vm_token(name);
        token.cancel();
    }

    /// Warm plans: start the cutover of every VM as soon as its current pass ends.
    pub fn cutover_now(&self) {
        self.cutover.send_replace(true);
    }

    /// Whether the whole plan was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn vm_token(&self, name: &str) -> CancellationToken {
        let mut map = self.vms.lock().expect("controller lock is never poisoned by panics in short sections");
        map.entry(name.to_string()).or_insert_with(|| self.cancel.child_token()).clone()
    }
}

/// Requests written by `vmigrate cancel` / `vmigrate migrate --cutover now` for a running plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlRequests {
    /// VM names to cancel; `*` cancels the plan.
    #[serde(default)]
    pub cancel: Vec<String>,
    /// Cut over now.
    #[serde(default)]
    pub cutover: bool,
}

impl ControlRequests {
    /// Read a control file (missing = no requests).
    pub fn load(path: &Path) -> Result<ControlRequests> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::new(ErrorCode::StatusFile, format!("control file {} is corrupt", path.display())).with_source(e)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ControlRequests::default()),
            Err(e) => Err(Error::io(format!("reading control file {}", path.display()), e)),
        }
    }

    /// Add requests to a control file atomically.
    pub fn append(path: &Path, cancel: Option<&str>, cutover: bool) -> Result<()> {
        let mut cur = ControlRequests::load(path)?;
        if let Some(c) = cancel {
            if !cur.cancel.iter().any(|x| x == c) {
                cur.cancel.push(c.to_string());
            }
        }
        cur.cutover |= cutover;
        let tmp = path.with_extension("tmp");
        crate::safe_fs::write_atomic(path, &tmp, &serde_json::to_vec(&cur).expect("control serializes"), false)
            .map_err(|e| Error::io(format!("writing control file {}", path.display()), e))
    }
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

/// Phase records are written at most this often; later ones within the window are written by
/// one deferred save. A crash loses at most this much of the record, and phases are idempotent.
const SAVE_DEBOUNCE: Duration = Duration::from_millis(500);

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("plan", &self.plan.metadata.name).field("opts", &self.opts).finish()
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn new_status(plan: &Plan) -> PlanStatus {
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

    /// Save the status. Phase records are saved without fsync (a lost record only makes a
    /// resume redo an idempotent phase); what we change at the source is saved durably with
    /// [`save_durable`](Self::save_durable), so cleanup can always find it.
    fn save(&self, force: bool) -> Result<()> {
        self.save_inner(force, false)
    }

    fn save_durable(&self) -> Result<()> {
        self.save_inner(true, true)
    }

    /// Save phase records: now when nothing was saved for [`SAVE_DEBOUNCE`], else by one
    /// deferred save at the end of that window. A plan of many small VMs rewrote its growing
    /// status file twice per phase (15 times per VM, 40% of its orchestration time); a status
    /// reader still sees every change within half a second.
    fn save_soon(&self) -> Result<()> {
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
    fn cancel_deferred_save(&self) {
        if let Some(h) = self.deferred_save.lock().expect("deferred save lock").take() {
            h.abort();
        }
    }

    fn save_inner(&self, force: bool, durable: bool) -> Result<()> {
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

    /// Take the target's run lock ([`TargetProvider::run_lock`]) without waiting.
    ///
    /// # Errors
    /// [`ErrorCode::TargetBusy`] when another run holds it; I/O errors opening it (a link or a
    /// non-regular file there is refused, not followed).
    fn lock_target(&self) -> Result<Option<std::fs::File>> {
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

    fn resume_status(&self) -> Result<()> {
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

    fn spawn_control_watch(&self) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.opts.control_path.clone()?;
        let ctl = self.ctl.clone();
        Some(tokio::spawn(async move {
            loop {
                if let Ok(req) = ControlRequests::load(&path) {
                    for name in &req.cancel {
                        if name == "*" {
                            ctl.cancel();
                        } else {
                            ctl.cancel_vm(name);
                        }
                    }
                    if req.cutover {
                        ctl.cutover_now();
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }))
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
                .find(|v| v.id.moref == source_id)
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

    async fn run_cold(&self, idx: usize, vm: &Vm, tvm: &TargetVm, cancel: &CancellationToken) -> Result<()> {
        if !self.done(idx, Phase::PreHook) {
            self.phase(idx, Phase::PreHook, cancel, self.hooks(idx, HookStep::Pre, tvm, cancel)).await?;
        }
        let mut stopped_at = None;
        if !self.done(idx, Phase::PowerOff) {
            self.phase(idx, Phase::PowerOff, cancel, async {
                if vm.power_state != PowerState::PoweredOff {
                    stopped_at = Some(Instant::now());
                    let graceful = parse_duration(&self.plan.spec.options.shutdown_timeout)?;
                    self.lock().vms[idx].source_changes.powered_off = true;
                    self.save_durable()?;
                    self.source.power_off(&vm.id, Some(graceful)).await?;
                }
                Ok(())
            })
            .await?;
        }
        let volumes = self.allocate(idx, vm, tvm, cancel).await?;
        if !self.done(idx, Phase::CopyDisks) {
            self.phase(
                idx,
                Phase::CopyDisks,
                cancel,
                self.copy_disks(idx, vm, tvm, &volumes, None, None, "full", cancel),
            )
            .await?;
        }
        self.finish_vm(idx, tvm, &volumes, stopped_at, cancel).await
    }

    async fn allocate(
        &self,
        idx: usize,
        vm: &Vm,
        tvm: &TargetVm,
        cancel: &CancellationToken,
    ) -> Result<Vec<PreparedVolume>> {
        if !self.done(idx, Phase::AllocateDisks) {
            self.phase(idx, Phase::AllocateDisks, cancel, async {
                for disk in &vm.disks {
                    let vol = self.target.prepare_volume(tvm, disk).await?;
                    let mut st = self.lock();
                    let ds = &mut st.vms[idx].disks;
                    if let Some(d) = ds.iter_mut().find(|d| d.key == disk.key) {
                        d.volume = vol.name.clone();
                        d.total_bytes = vol.size;
                    } else {
                        ds.push(DiskStatus {
                            key: disk.key,
                            volume: vol.name,
                            total_bytes: vol.size,
                            ..Default::default()
                        });
                    }
                }
                Ok(())
            })
            .await?;
        }
        let st = self.lock();
        Ok(st.vms[idx]
            .disks
            .iter()
            .map(|d| PreparedVolume { disk_key: d.key, name: d.volume.clone(), size: d.total_bytes })
            .collect())
    }

    async fn finish_vm(
        &self,
        idx: usize,
        tvm: &TargetVm,
        volumes: &[PreparedVolume],
        stopped_at: Option<Instant>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if !self.done(idx, Phase::ConvertGuest) {
            let conversion =
                self.phase(idx, Phase::ConvertGuest, cancel, self.convert_guest(idx, tvm, volumes)).await?;
            self.lock().vms[idx].conversion = Some(conversion);
            self.save(true)?;
        }
        let mut tvm = tvm.clone();
        tvm.conversion = self.lock().vms[idx].conversion.clone();
        let tvm = &tvm;
        if !self.done(idx, Phase::CreateVm) {
            self.phase(idx, Phase::CreateVm, cancel, self.target.create_vm(tvm, volumes)).await?;
            if let Some(t) = stopped_at {
                self.lock().vms[idx].downtime_seconds = Some(t.elapsed().as_secs_f64());
            }
        }
        if !self.done(idx, Phase::PostHook) {
            self.phase(idx, Phase::PostHook, cancel, self.hooks(idx, HookStep::Post, tvm, cancel)).await?;
        }
        Ok(())
    }

    /// Inspect the guests of the plan on their source disks, before anything moves, where the
    /// source has the disks as local files (a `vmx://` folder) and the plan converts guests:
    /// libguestfs inspection (`virt-inspector`, read-only) learns the real OS, which validation checks
    /// ([`apply_inspection`]). VMs inspected by an earlier run of the plan (status file) or
    /// already completed are not inspected again. Sources without local files (vCenter) are
    /// not inspected here: their guest is inspected by the conversion itself, after the copy.
    async fn inspect_guests(
        &self,
        inventory: &crate::model::Inventory,
        validation: &crate::validate::PlanValidation,
    ) -> Result<BTreeMap<String, std::result::Result<convert::Inspection, Error>>> {
        let mut out = BTreeMap::new();
        if self.plan.spec.skip_guest_conversion || !self.plan.spec.options.inspect_guests {
            return Ok(out);
        }
        for (idx, v) in validation.vms.iter().enumerate() {
            {
                let st = self.lock();
                let vs = &st.vms[idx];
                if vs.phase == Phase::Completed || vs.inspection.is_some() {
                    continue;
                }
            }
            let Some(vm) = v.source_id.as_ref().and_then(|id| inventory.vms.iter().find(|x| &x.id.moref == id)) else {
                continue;
            };
            let Some(files) = self.source.local_disk_files(vm) else { continue };
            // libguestfs opens the files itself (following their extents): first open every
            // disk through the source's own reader, which refuses anything escaping the
            // datastore; such a VM is not inspected (its copy fails the same way).
            let mut contained = true;
            for d in &vm.disks {
                if let Err(e) = self.source.open_disk(&vm.id, d, None).await {
                    warn!(vm = %v.name, error = %e.report(), "not inspecting: a disk does not open");
                    contained = false;
                    break;
                }
            }
            if !contained {
                continue;
            }
            let disks: Vec<convert::DiskImage> =
                files.into_iter().map(|path| convert::DiskImage { path, format: "vmdk".into() }).collect();
            let work = std::env::temp_dir().join(format!("vmigrate-inspect-{}-{idx}", std::process::id()));
            let req = ConversionRequest::for_vm(&self.plan, idx);
            let started = Instant::now();
            let r = convert::run_inspector(&work, "guest", &disks, &req, &self.ctl.cancel).await;
            let _ = std::fs::remove_dir_all(&work);
            if matches!(&r, Err(e) if e.code() == ErrorCode::Cancelled) {
                return Err(Error::cancelled());
            }
            info!(vm = %v.name, seconds = started.elapsed().as_secs_f64(), result = ?r, "guest inspected");
            out.insert(v.name.clone(), r);
        }
        Ok(out)
    }

    /// The conversion phase: the plan's choice (skip) or the target's conversion of the copied
    /// disks (see [`crate::convert`]).
    async fn convert_guest(&self, idx: usize, tvm: &TargetVm, volumes: &[PreparedVolume]) -> Result<GuestConversion> {
        if self.plan.spec.skip_guest_conversion {
            return Ok(GuestConversion::skipped("spec.skipGuestConversion: disks copied as they are"));
        }
        let request = ConversionRequest::for_vm(&self.plan, idx);
        self.target.convert_guest(tvm, volumes, &request).await
    }

    async fn run_warm(&self, idx: usize, vm: &Vm, tvm: &TargetVm, cancel: &CancellationToken) -> Result<()> {
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
                self.copy_disks(idx, vm, tvm, &volumes, Some(&snap), None, "full", cancel).await?;
                self.set_change_ids(idx, &snap);
                Ok(())
            })
            .await?;
            self.drop_pass_snapshots(idx, vm).await?;
        }
        // Precopy loop until cutover.
        let interval = parse_duration(&self.plan.spec.options.precopy_interval)?;
        // The VM's own cutover time, else the plan's.
        let cutover_at = self.plan.spec.vms.get(idx).and_then(|v| v.cutover.as_ref());
        let deadline = match cutover_at.or(self.plan.spec.options.cutover.as_ref()) {
            Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| {
                Error::new(ErrorCode::PlanInvalid, format!("cutover {t:?} is not an RFC 3339 time")).with_source(e)
            })?),
            None => None,
        };
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
                    self.delta_pass(idx, vm, tvm, &volumes, n, &format!("precopy-{n}"), cancel),
                )
                .await?;
                self.lock().vms[idx].precopies = n;
                self.drop_pass_snapshots(idx, vm).await?;
            }
            let mut stopped = None;
            self.phase(idx, Phase::Cutover, cancel, async {
                let graceful = parse_duration(&self.plan.spec.options.shutdown_timeout)?;
                let fresh = self.source.vm(&vm.id).await?;
                if fresh.power_state != PowerState::PoweredOff {
                    stopped = Some(Instant::now());
                    self.lock().vms[idx].source_changes.powered_off = true;
                    self.save_durable()?;
                    self.source.power_off(&vm.id, Some(graceful)).await?;
                }
                let n = self.lock().vms[idx].precopies + 1;
                self.delta_pass(idx, vm, tvm, &volumes, n, "cutover", cancel).await?;
                Ok(())
            })
            .await?;
            self.finish_vm(idx, tvm, &volumes, stopped, cancel).await?;
            return self.remove_final_snapshot(idx, vm).await;
        }
        self.finish_vm(idx, tvm, &volumes, None, cancel).await?;
        self.remove_final_snapshot(idx, vm).await
    }

    async fn snapshot(&self, idx: usize, vm: &Vm, n: u32) -> Result<SnapshotRef> {
        let name = format!("vmigrate-{}-{}", self.plan.metadata.name, n);
        let snap = self.create_pass_snapshot(vm, &name).await?;
        self.lock().vms[idx].source_changes.snapshots.push(snap.clone());
        self.save_durable()?;
        Ok(snap)
    }

    fn latest_snapshot(&self, idx: usize) -> Result<SnapshotRef> {
        self.lock().vms[idx]
            .source_changes
            .snapshots
            .last()
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no snapshot recorded for the warm copy"))
    }

    fn set_change_ids(&self, idx: usize, snap: &SnapshotRef) {
        let mut st = self.lock();
        for d in &mut st.vms[idx].disks {
            d.change_id = snap.change_ids.get(&d.key).cloned();
        }
    }

    /// Snapshot, copy what changed since the last pass, drop the older snapshot.
    #[allow(clippy::too_many_arguments)]
    async fn delta_pass(
        &self,
        idx: usize,
        vm: &Vm,
        tvm: &TargetVm,
        volumes: &[PreparedVolume],
        n: u32,
        pass: &str,
        cancel: &CancellationToken,
    ) -> Result<()> {
        warm::ensure_incremental(&self.plan, self.target.as_ref())?;
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
        self.copy_disks(idx, vm, tvm, volumes, Some(&snap), Some(&changed), pass, cancel).await?;
        self.set_change_ids(idx, &snap);
        // The change ids are the base of the next pass: durable before the snapshot goes.
        self.save_durable()?;
        Ok(())
    }

    async fn changed_extents(&self, vm: &Vm, disk: &Disk, snap: &SnapshotRef, since: &str) -> Result<Vec<Extent>> {
        let size = disk.capacity_bytes.max(0) as u64;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < size {
            let areas = self.source.changed_areas(&vm.id, disk, snap, since, offset).await?;
            if areas.end <= offset {
                return Err(Error::new(ErrorCode::VsphereFault, "changed-area query made no progress"));
            }
            out.extend(areas.extents.into_iter().map(|e| Extent { state: ExtentState::Data, ..e }));
            offset = areas.end;
        }
        Ok(out)
    }

    async fn remove_our_snapshots(&self, idx: usize, vm: &Vm) -> Result<()> {
        let snaps = self.lock().vms[idx].source_changes.snapshots.clone();
        for s in snaps.iter().rev() {
            self.source.remove_snapshot(&vm.id, s).await?;
            self.lock().vms[idx].source_changes.snapshots.retain(|x| x.id != s.id);
            self.save_durable()?;
        }
        Ok(())
    }

    /// Copy every disk of a VM (concurrently), full or only the given changed extents.
    #[allow(clippy::too_many_arguments)]
    async fn copy_disks(
        &self,
        idx: usize,
        vm: &Vm,
        tvm: &TargetVm,
        volumes: &[PreparedVolume],
        snapshot: Option<&SnapshotRef>,
        only: Option<&BTreeMap<i32, Vec<Extent>>>,
        pass: &str,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut jobs = Vec::new();
        for disk in &vm.disks {
            let Some(vol) = volumes.iter().find(|v| v.disk_key == disk.key) else {
                return Err(Error::new(ErrorCode::Internal, format!("no volume prepared for disk {}", disk.key)));
            };
            if only.is_none() && self.still_copied(idx, vm, disk, snapshot).await? {
                continue;
            }
            let extents = only.map(|m| m.get(&disk.key).cloned().unwrap_or_default());
            jobs.push(self.copy_one(idx, vm, tvm, disk, vol, snapshot, extents, pass, cancel));
        }
        for r in futures_join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    /// Whether `disk` was copied completely before (a resumed phase) from the source as it is
    /// now. A disk copied from another identity (the source changed between the runs) is marked
    /// not done, with a warning, so it is copied again: the VM's disks then all come from one
    /// state of the source. A done disk with no recorded identity (copied by the target itself)
    /// is trusted as done.
    async fn still_copied(&self, idx: usize, vm: &Vm, disk: &Disk, snapshot: Option<&SnapshotRef>) -> Result<bool> {
        let recorded = {
            let st = self.lock();
            match st.vms[idx].disks.iter().find(|d| d.key == disk.key && d.done) {
                None => return Ok(false),
                Some(d) => d.copied_from.clone(),
            }
        };
        let Some(recorded) = recorded else { return Ok(true) };
        let current = {
            let src = self.source.open_disk(&vm.id, disk, snapshot).await?;
            self.source.disk_identity(disk, snapshot, src.as_ref())
        };
        if current == recorded {
            return Ok(true);
        }
        warn!(
            disk = disk.key, recorded = %recorded, current = %current,
            "the source disk changed since it was copied: copying it again from the start"
        );
        let mut st = self.lock();
        if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == disk.key) {
            d.done = false;
            d.copied_from = None;
            d.copied_bytes = 0;
        }
        Ok(false)
    }

    /// The checkpoint to resume disk `key` from: the recorded one when it was made from the
    /// source `identity` is now. One made from another identity (another snapshot or change id,
    /// a file replaced or changed in place) is dropped with a warning and the disk is copied from
    /// the start: resuming it would mix the bytes of two source states.
    fn resume_point(&self, idx: usize, key: i32, volume: &str, identity: &SourceIdentity) -> Option<Checkpoint> {
        let mut st = self.lock();
        let d = st.vms[idx].disks.iter_mut().find(|d| d.key == key)?;
        let cp = d.checkpoint.take()?;
        if cp.source == *identity {
            let copy = cp.copy.clone();
            d.checkpoint = Some(cp);
            return Some(copy);
        }
        warn!(
            volume, recorded = %cp.source, current = %identity,
            "the source disk changed since its checkpoint was made: copying it again from the start"
        );
        d.copied_bytes = 0;
        None
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_one(
        &self,
        idx: usize,
        vm: &Vm,
        tvm: &TargetVm,
        disk: &Disk,
        vol: &PreparedVolume,
        snapshot: Option<&SnapshotRef>,
        only: Option<Vec<Extent>>,
        pass: &str,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let span = info_span!("disk", disk = disk.key, volume = %vol.name, pass);
        async {
            // The target first: when it copies by itself (importer, transfer Job) the source
            // disk is not opened here at all (no local nbdkit for a VDDK source, say).
            let dst = match self.target.open_volume(tvm, vol).await? {
                VolumeSink::Transport(t) => t,
                VolumeSink::SelfImport if only.is_some() => return Err(warm::self_import_delta(&vol.name, pass)),
                VolumeSink::SelfImport => return self.follow_import(idx, vm, tvm, disk, vol, pass, cancel).await,
                VolumeSink::Passes => {
                    return self.target_pass(idx, vm, tvm, disk, vol, snapshot, only.as_deref(), pass, cancel).await
                }
            };
            let src = self.source.open_disk(&vm.id, disk, snapshot).await?;
            let identity = self.source.disk_identity(disk, snapshot, src.as_ref());
            let mut opts = self.opts.copy.clone();
            opts.only = only.clone();
            opts.resume = if only.is_none() { self.resume_point(idx, disk.key, &vol.name, &identity) } else { None };
            let state = self.state.clone();
            let key = disk.key;
            let saver = {
                let state = state.clone();
                let identity = identity.clone();
                let path = self.opts.status_path.clone();
                let last = self.last_save.clone();
                Arc::new(move |cp: &Checkpoint| {
                    let snapshot = {
                        let mut st = state.lock().expect("status lock");
                        if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == key) {
                            d.checkpoint = Some(DiskCheckpoint { copy: cp.clone(), source: identity.clone() });
                        }
                        st.clone()
                    };
                    if let Some(p) = &path {
                        let mut l = last.lock().expect("save lock");
                        if l.elapsed() >= Duration::from_millis(200) {
                            *l = Instant::now();
                            // Checkpoints follow a target flush; losing the latest only
                            // means redoing its units, so no fsync here.
                            if let Err(e) = snapshot.save_with(p, false) {
                                warn!(error = %e.report(), "could not save checkpoint");
                            }
                        }
                    }
                }) as Arc<dyn Fn(&Checkpoint) + Send + Sync>
            };
            let ctl = CopyControl {
                progress: engine::Progress::default(),
                cancel: cancel.child_token(),
                on_checkpoint: Some(saver),
            };
            let reporter = {
                let progress = ctl.progress.clone();
                let events = self.opts.events.clone();
                let vm_name = vm.name.clone();
                let volume = vol.name.clone();
                let pass = pass.to_string();
                let every = self.opts.progress_interval;
                let state = state.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let snap = progress.snapshot();
                        {
                            let mut st = state.lock().expect("status lock");
                            if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == key) {
                                d.copied_bytes = snap.done;
                                d.pass_read_bytes = snap.bytes_read;
                            }
                        }
                        if let Some(sink) = &events {
                            sink(&Event::Disk {
                                vm: vm_name.clone(),
                                disk: key,
                                volume: volume.clone(),
                                pass: pass.clone(),
                                progress: snap,
                            });
                        }
                    }
                })
            };
            let res = engine::copy(src.as_ref(), dst.as_ref(), &opts, &ctl).await;
            reporter.abort();
            let stats = res?;
            self.target.finish_volume(tvm, vol).await?;
            let snap = ctl.progress.snapshot();
            {
                let mut st = self.lock();
                if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == key) {
                    d.copied_bytes = snap.done;
                    d.transferred_bytes += stats.bytes_written;
                    d.pass_read_bytes = 0;
                    d.checkpoint = None;
                    d.done = true;
                    if only.is_none() {
                        d.copied_from = Some(identity);
                    }
                }
            }
            self.emit(Event::Disk {
                vm: vm.name.clone(),
                disk: key,
                volume: vol.name.clone(),
                pass: pass.to_string(),
                progress: snap,
            });
            self.save(true)?;
            info!(read = stats.bytes_read, written = stats.bytes_written, zeroed = stats.bytes_zeroed, "disk copied");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// The target copies by itself (CDI importer, transfer Job): wait for it, reporting its
    /// progress as ours.
    #[allow(clippy::too_many_arguments)]
    async fn follow_import(
        &self,
        idx: usize,
        vm: &Vm,
        tvm: &TargetVm,
        disk: &Disk,
        vol: &PreparedVolume,
        pass: &str,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let started = Instant::now();
        let snapshot = |fraction: f64| {
            let done = (vol.size as f64 * fraction.clamp(0.0, 1.0)) as u64;
            let elapsed = started.elapsed();
            let rate = if elapsed.as_secs_f64() > 0.0 { done as f64 / elapsed.as_secs_f64() } else { 0.0 };
            ProgressSnapshot {
                total: vol.size,
                done,
                elapsed,
                rate_bytes_per_sec: rate,
                eta: (rate > 0.0).then(|| Duration::from_secs_f64((vol.size - done) as f64 / rate)),
                ..Default::default()
            }
        };
        let finish = self.target.finish_volume(tvm, vol);
        tokio::pin!(finish);
        loop {
            tokio::select! {
                r = &mut finish => { r?; break; }
                _ = cancel.cancelled() => return Err(Error::cancelled()),
                _ = tokio::time::sleep(self.opts.progress_interval.max(Duration::from_millis(500))) => {
                    if let Some(f) = self.target.import_progress(tvm, vol).await {
                        self.emit(Event::Disk { vm: vm.name.clone(), disk: disk.key, volume: vol.name.clone(), pass: pass.to_string(), progress: snapshot(f) });
                    }
                }
            }
        }
        {
            let mut st = self.lock();
            if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == disk.key) {
                d.copied_bytes = vol.size;
                d.done = true;
            }
        }
        self.emit(Event::Disk {
            vm: vm.name.clone(),
            disk: disk.key,
            volume: vol.name.clone(),
            pass: pass.to_string(),
            progress: snapshot(1.0),
        });
        self.save(true)?;
        Ok(())
    }

    async fn hooks(&self, idx: usize, step: HookStep, tvm: &TargetVm, cancel: &CancellationToken) -> Result<()> {
        let hooks: Vec<HookSpec> = self
            .plan
            .spec
            .hooks
            .iter()
            .chain(self.plan.spec.vms[idx].hooks.iter())
            .filter(|h| h.step == step)
            .cloned()
            .collect();
        for hook in hooks {
            let input = serde_json::json!({
                "plan": self.plan.metadata.name,
                "namespace": self.plan.spec.target_namespace,
                "step": step,
                "hook": hook.name,
                "targetName": tvm.name,
                "vm": tvm.source,
            });
            if hook.image.is_some() {
                self.target.run_hook(tvm, &hook, &input).await?;
            } else {
                hooks::run_local_hook(&hook, &input, cancel).await?;
            }
        }
        Ok(())
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

/// Record a phase start (`completed == false`) or end on a VM status.
fn record(vs: &mut VmStatus, phase: Phase, completed: bool) {
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

/// Record what the inspection found in a VM's status, and what it means for validation: an OS
/// virt-v2v cannot convert, or no OS at all, is a critical concern
/// (`conversion.unsupported-os`) offering the raw copy; an inspection that could not run is a
/// warning (`conversion.not-inspected`: the conversion phase inspects the guest again).
fn apply_inspection(vs: &mut crate::status::VmStatus, found: &std::result::Result<convert::Inspection, Error>) {
    let raw_copy = "set spec.skipGuestConversion: true to copy the guest as it is (it keeps its VMware drivers: \
                    docs/conversion.md)";
    match found {
        Ok(convert::Inspection::Found(os)) => {
            vs.inspection = Some(os.clone());
            if let Some(why) = convert::unsupported_os(os) {
                vs.concerns.push(Concern::new(
                    "conversion.unsupported-os",
                    Severity::Critical,
                    format!("{why}: {raw_copy}"),
                ));
            }
        }
        Ok(convert::Inspection::NoOs(why)) => vs.concerns.push(Concern::new(
            "conversion.unsupported-os",
            Severity::Critical,
            format!("virt-v2v found no operating system it can convert on the disks ({}): {raw_copy}", why.trim()),
        )),
        Err(e) => vs.concerns.push(Concern::new(
            "conversion.not-inspected",
            Severity::Warning,
            format!(
                "the guest could not be inspected before the copy ({}); the conversion will inspect it",
                e.message()
            ),
        )),
    }
}

#[cfg(test)]
mod tests;
