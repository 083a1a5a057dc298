//! `vmigrate_migration`: one run of a plan, with progress events and a thread-safe cancel.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use vmigrate_core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate_core::{Error, ErrorCode, PlanStatus, Result, SourceProvider, TargetProvider};

use crate::codes::vmigrate_result;
use crate::plan::{plan_ref, vmigrate_plan};
use crate::runtime::block_on;
use crate::util::{non_null, optional_str, required_str, write_out, write_string, Callback};
use crate::vmigrate_progress_cb;

/// A plan ready to run against its opened source and target: opaque; create with
/// `vmigrate_migration_new`, release with `vmigrate_migration_free`.
pub struct vmigrate_migration {
    _private: [u8; 0],
}

type EventSlot = Arc<Mutex<Option<mpsc::UnboundedSender<Event>>>>;

struct Migration {
    executor: Arc<Executor>,
    controller: Controller,
    /// Where the executor's events go while a run is in progress.
    events: EventSlot,
    running: AtomicBool,
    /// The executor's source and target, ended (vCenter logout) when the handle is freed.
    providers: Providers,
}

/// A run's source and target, kept to be closed when the run's handle goes away.
pub(crate) type Providers = (Arc<dyn SourceProvider>, Arc<dyn TargetProvider>);

/// End the sessions of a run's source and target (never fails: a failed logout is logged).
pub(crate) async fn close_providers((source, target): Providers) {
    vmigrate_facade::sources::close_quietly(source.as_ref()).await;
    if let Err(e) = target.close().await {
        tracing::warn!(error = %e.report(), "releasing the target failed");
    }
}

/// Open the plan's source and target and build its executor. `status_path` (optional) is resumed
/// from when it holds an earlier run of the same plan.
pub(crate) async fn prepare(
    plan: vmigrate_core::Plan,
    status_path: Option<PathBuf>,
) -> Result<(Arc<Executor>, EventSlot, Providers)> {
    let source: Arc<dyn SourceProvider> = Arc::from(vmigrate_facade::sources::open_source(&plan.spec.source).await?);
    let target: Arc<dyn TargetProvider> = Arc::from(vmigrate_facade::targets::open_target(&plan.spec.target).await?);
    let slot: EventSlot = Arc::new(Mutex::new(None));
    let sink_slot = slot.clone();
    let opts = ExecutorOptions {
        status_path,
        events: Some(Arc::new(move |e: &Event| {
            if let Some(tx) = sink_slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = tx.send(e.clone());
            }
        })),
        ..ExecutorOptions::default()
    };
    let executor = Arc::new(Executor::new(plan, source.clone(), target.clone(), opts));
    Ok((executor, slot, (source, target)))
}

/// Run an executor to the end, handing each event to `on_event` on the calling thread.
/// A cancelled run is [`ErrorCode::Cancelled`] (the final status stays readable).
pub(crate) async fn run_with_events(
    executor: &Executor,
    slot: &EventSlot,
    mut on_event: impl FnMut(&Event),
) -> Result<PlanStatus> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let run = executor.run();
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(e) = rx.recv() => on_event(&e),
        }
    };
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    while let Ok(e) = rx.try_recv() {
        on_event(&e);
    }
    let status = result?;
    if executor.controller().is_cancelled() {
        return Err(Error::new(ErrorCode::Cancelled, format!("plan cancelled: {}", status.summary())));
    }
    Ok(status)
}

/// Borrow the migration behind a handle.
///
/// # Safety
/// `p` is NULL or a live handle.
unsafe fn migration_ref<'a>(p: *const vmigrate_migration) -> Result<&'a Migration> {
    non_null(p, "migration")?;
    // SAFETY: a non-NULL handle is the Box<Migration> leaked by vmigrate_migration_new, alive.
    Ok(unsafe { &*p.cast::<Migration>() })
}

/// Prepare a run of `plan`: open its source (credentials from the environment variables the plan
/// names, else `VMIGRATE_SOURCE_USERNAME`/`_PASSWORD`) and its target (`dir:///path` or
/// `kubevirt://[context]`). `status_path` (may be NULL) is where the status is written after
/// every phase; an existing status of the same plan is resumed. The plan is copied: `plan` may be
/// freed afterwards.
///
/// # Safety
/// `plan` is a live handle; `status_path` NULL or a NUL-terminated string; `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_migration_new(
    plan: *const vmigrate_plan,
    status_path: *const c_char,
    out: *mut *mut vmigrate_migration,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out, "out")?;
        // SAFETY: caller contract.
        let (plan, status_path) = unsafe { (plan_ref(plan)?, optional_str(status_path, "status_path")?) };
        let (executor, events, providers) = block_on(prepare(plan.clone(), status_path.map(PathBuf::from)))??;
        let controller = executor.controller();
        let m = Migration { executor, controller, events, running: AtomicBool::new(false), providers };
        // SAFETY: out was checked for NULL; C treats the Box<Migration> as opaque.
        unsafe { write_out(out, Box::into_raw(Box::new(m)).cast::<vmigrate_migration>()) };
        Ok(())
    }
}

/// Run the migration to its end, blocking: validation, then every VM through its pipeline.
///
/// `cb` (may be NULL) receives each event on the calling thread, as a `MigrationEvent` document
/// (`docs/wire-format.md`: `apiVersion` and `kind` first): `{"event": "plan", "migrated",
/// "total", "summary"}`, `{"event": "phase", "vm", "phase"}`, `{"event": "disk", "vm", "disk",
/// "pass", "progress": {...counters as in vmigrate_copy_disk}}` and `{"event": "vmDone", "vm",
/// "phase", "error"?, "downtimeSeconds"?}`. On success `*out_status_json` (may be NULL) receives the
/// final status (as `vmigrate_status_load` returns it). Failures of single VMs are in the status,
/// not the result; `VMIGRATE_RESULT_VALIDATION_BLOCKED` means nothing was changed;
/// `VMIGRATE_RESULT_CANCELLED` means `vmigrate_migration_cancel` was called (the status stays
/// readable with `vmigrate_migration_status`). A migration runs once at a time.
///
/// # Safety
/// `migration` is a live handle; `cb`/`userdata` usable during the call; `out_status_json` NULL or
/// a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_migration_run(
    migration: *mut vmigrate_migration,
    cb: vmigrate_progress_cb,
    userdata: *mut c_void,
    out_status_json: *mut *mut c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        // SAFETY: caller contract.
        let m = unsafe { migration_ref(migration) }?;
        if m.running.swap(true, Ordering::AcqRel) {
            return Err(Error::new(ErrorCode::Unsupported, "this migration is already running"));
        }
        let callback = Callback::new(cb, userdata);
        let result = block_on(run_with_events(&m.executor, &m.events, |e| {
            if let Some(cb) = &callback {
                cb.call(&vmigrate_facade::wire::migration_event(e));
            }
        }));
        m.running.store(false, Ordering::Release);
        let status = result??;
        if non_null(out_status_json, "out_status_json").is_ok() {
            // SAFETY: checked for NULL just above.
            unsafe { write_string(out_status_json, vmigrate_facade::wire::plan_status(&status)?) };
        }
        Ok(())
    }
}

/// Cancel the whole migration: safe from any thread (and from the progress callback), before or
/// during `vmigrate_migration_run`. VMs in flight are cleaned up (target objects removed, source
/// restored), then the run returns `VMIGRATE_RESULT_CANCELLED`.
///
/// # Safety
/// `migration` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_migration_cancel(migration: *const vmigrate_migration) -> vmigrate_result {
    ffi_panic_boundary! {
        // SAFETY: caller contract.
        unsafe { migration_ref(migration) }?.controller.cancel();
        Ok(())
    }
}

/// Cancel one VM (by source name) of a running migration; the others go on. Thread-safe.
///
/// # Safety
/// `migration` is a live handle; `vm` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_migration_cancel_vm(
    migration: *const vmigrate_migration,
    vm: *const c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        // SAFETY: caller contract.
        let (m, vm) = unsafe { (migration_ref(migration)?, required_str(vm, "vm")?) };
        m.controller.cancel_vm(vm);
        Ok(())
    }
}

/// The migration's current status as JSON (during or after a run; from any thread). Free
/// `*out_json` with `vmigrate_string_free`.
///
/// # Safety
/// `migration` is a live handle; `out_json` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_migration_status(
    migration: *const vmigrate_migration,
    out_json: *mut *mut c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out_json, "out_json")?;
        // SAFETY: caller contract.
        let m = unsafe { migration_ref(migration) }?;
        let json = vmigrate_facade::wire::plan_status(&m.executor.status())?;
        // SAFETY: checked for NULL above.
        unsafe { write_string(out_json, json) };
        Ok(())
    }
}

/// Release a migration. NULL is ignored. Must not be called while `vmigrate_migration_run` runs.
///
/// # Safety
/// `migration` is NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_migration_free(migration: *mut vmigrate_migration) {
    ffi_panic_boundary_void! {
        if !migration.is_null() {
            // SAFETY: the Box<Migration> leaked by vmigrate_migration_new, freed once.
            let m = unsafe { Box::from_raw(migration.cast::<Migration>()) };
            // A runtime already shut down (vmigrate_shutdown) cannot log out; the drop below
            // then still tries its best.
            let _ = block_on(close_providers(m.providers.clone()));
            crate::runtime::drop_in_runtime(m);
        }
    }
}
