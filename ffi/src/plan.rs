//! `vmigrate_plan`: a parsed, checked migration plan, and its validation.

use std::ffi::c_char;

use vmigrate_core::{Error, ErrorCode, Inventory, Plan, Result};

use crate::codes::vmigrate_result;
use crate::runtime::block_on;
use crate::util::{non_null, optional_str, required_str, write_out, write_string};

/// A migration plan: opaque; create with `vmigrate_plan_new_from_file` or
/// `vmigrate_plan_new_from_str`, release with `vmigrate_plan_free`.
pub struct vmigrate_plan {
    _private: [u8; 0],
}

fn hand_out(plan: Plan, out: *mut *mut vmigrate_plan) {
    // SAFETY: every caller checked `out` for NULL before doing any work.
    unsafe { write_out(out, Box::into_raw(Box::new(plan)).cast::<vmigrate_plan>()) };
}

/// Borrow the plan behind a handle.
///
/// # Safety
/// `p` is NULL or a live handle.
pub(crate) unsafe fn plan_ref<'a>(p: *const vmigrate_plan) -> Result<&'a Plan> {
    non_null(p, "plan")?;
    // SAFETY: a non-NULL handle is a Box<Plan> leaked by a vmigrate_plan_new_* call, still alive.
    Ok(unsafe { &*p.cast::<Plan>() })
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("serializing {what}")).with_source(e))
}

/// Read a plan file (`.json` as JSON, anything else as YAML) and check it. Parse errors are
/// `VMIGRATE_RESULT_PLAN_PARSE` with the line in `vmigrate_last_error`; inconsistent plans
/// `VMIGRATE_RESULT_PLAN_INVALID`.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_plan_new_from_file(
    path: *const c_char,
    out: *mut *mut vmigrate_plan,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out, "out")?;
        // SAFETY: caller contract.
        let path = unsafe { required_str(path, "path") }?;
        hand_out(Plan::from_file(path)?, out);
        Ok(())
    }
}

/// Parse a plan from text: JSON when it starts with `{`, YAML otherwise.
///
/// # Safety
/// `text` is a NUL-terminated string; `out` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_plan_new_from_str(
    text: *const c_char,
    out: *mut *mut vmigrate_plan,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out, "out")?;
        // SAFETY: caller contract.
        let text = unsafe { required_str(text, "text") }?;
        let plan = if text.trim_start().starts_with('{') { Plan::from_json_str(text)? } else { Plan::from_yaml_str(text)? };
        hand_out(plan, out);
        Ok(())
    }
}

/// The plan as JSON (normalized: defaults filled in). Free `*out_json` with `vmigrate_string_free`.
///
/// # Safety
/// `plan` is a live handle; `out_json` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_plan_to_json(
    plan: *const vmigrate_plan,
    out_json: *mut *mut c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out_json, "out_json")?;
        // SAFETY: caller contract.
        let plan = unsafe { plan_ref(plan) }?;
        let json = to_json(plan, "the plan")?;
        // SAFETY: checked for NULL above.
        unsafe { write_string(out_json, json) };
        Ok(())
    }
}

/// Validate a plan: every VM against the source inventory and the plan's maps.
///
/// `inventory_json` is an inventory as `vmigrate_source_inventory` returns it; when NULL, the
/// plan's source is opened (credentials from the environment variables the plan names) and read.
/// On success `*out_json` receives the `PlanValidation` document (`docs/wire-format.md`):
/// `{"apiVersion", "kind", "blocked": bool, "vms": [{"name", "sourceId", "targetName",
/// "concerns": [{"id", "severity", "message"}]}]}` (free it with `vmigrate_string_free`) and
/// `*out_blocked` whether any VM has a critical concern. A blocked plan is still a successful call.
///
/// # Safety
/// `plan` is a live handle; `inventory_json` NULL or a NUL-terminated string; the out-pointers
/// valid.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_plan_validate(
    plan: *const vmigrate_plan,
    inventory_json: *const c_char,
    out_json: *mut *mut c_char,
    out_blocked: *mut bool,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out_json, "out_json")?;
        non_null(out_blocked, "out_blocked")?;
        // SAFETY: caller contract.
        let (plan, inventory_json) = unsafe { (plan_ref(plan)?, optional_str(inventory_json, "inventory_json")?) };
        let inventory: Option<Inventory> = inventory_json.map(vmigrate_facade::wire::parse_inventory).transpose()?;
        let validation = block_on(vmigrate_facade::validate_plan(plan, inventory.as_ref()))??;
        let blocked = validation.blocked();
        let json = vmigrate_facade::wire::plan_validation(&validation)?;
        // SAFETY: both checked for NULL above.
        unsafe {
            write_string(out_json, json);
            write_out(out_blocked, blocked);
        }
        Ok(())
    }
}

/// Release a plan. NULL is ignored.
///
/// # Safety
/// `plan` is NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_plan_free(plan: *mut vmigrate_plan) {
    ffi_panic_boundary_void! {
        if !plan.is_null() {
            // SAFETY: the Box<Plan> leaked by a vmigrate_plan_new_* call, freed once.
            drop(unsafe { Box::from_raw(plan.cast::<Plan>()) });
        }
    }
}
