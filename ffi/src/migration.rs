//! `vmigrate_migration`: one run of a plan, with progress events and a thread-safe cancel.

use std::ffi::{c_char, c_void};
use std::path::PathBuf;

use vmigrate_core::Result;
use vmigrate_facade::session::MigrationOptions;

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

/// What a `vmigrate_migration` handle points to: the facade's session, written once for the CLI,
/// C and Python.
type Migration = vmigrate_facade::session::Migration;

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
        let mut options = MigrationOptions::default();
        if let Some(path) = status_path {
            options = options.status_path(PathBuf::from(path));
        }
        let m = block_on(Migration::open(plan.clone(), options))??;
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
        let callback = Callback::new(cb, userdata);
        let status = block_on(m.run(|e| {
            if let Some(cb) = &callback {
                cb.call(&vmigrate_facade::wire::migration_event(e));
            }
        }))??;
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
        unsafe { migration_ref(migration) }?.controller().cancel();
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
        m.controller().cancel_vm(vm);
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
        let json = vmigrate_facade::wire::plan_status(&m.status())?;
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
            let _ = block_on(m.close_quietly());
            crate::runtime::drop_in_runtime(m);
        }
    }
}
