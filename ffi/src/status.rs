//! Reading a plan's status file.

use std::ffi::c_char;
use std::path::Path;

use vmigrate_core::PlanStatus;

use crate::codes::vmigrate_result;
use crate::util::{non_null, required_str, write_string};

/// Read a status file written by a plan run (`vmigrate migrate --status`, or the `status_path` of
/// `vmigrate_migration_new`) and return it as the `PlanStatus` document (`docs/wire-format.md`):
/// `{"apiVersion", "kind", "plan", "warm", "started", "completed",
/// "vms": [{"name", "targetName", "phase", "disks": [...], "error": {"code", "name", "message"}}]}`.
/// A missing or corrupt file is `VMIGRATE_RESULT_STATUS_FILE`. Free `*out_json` with
/// `vmigrate_string_free`.
///
/// # Safety
/// `path` is a NUL-terminated string; `out_json` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_status_load(path: *const c_char, out_json: *mut *mut c_char) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out_json, "out_json")?;
        // SAFETY: caller contract.
        let path = unsafe { required_str(path, "path") }?;
        let status = PlanStatus::load(Path::new(path))?;
        let json = vmigrate_facade::wire::plan_status(&status)?;
        // SAFETY: checked for NULL above.
        unsafe { write_string(out_json, json) };
        Ok(())
    }
}
