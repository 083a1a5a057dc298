//! Error codes and messages for C.

use std::ffi::c_char;

use vmigrate_core::ErrorCode;

use crate::codes::vmigrate_result;
use crate::util::{copy_to_buffer, invalid};

fn describe(code: u32) -> Option<&'static str> {
    if code == 0 {
        return Some("success");
    }
    ErrorCode::from_u32(code).map(ErrorCode::description)
}

/// Write the description of `code` (one line, from the error-code table) into `buf`.
///
/// At most `len - 1` bytes and a NUL are written; `*out_n` receives the full length of the text
/// (without NUL), so `*out_n >= len` means it was truncated. `buf` may be NULL when `len` is 0, to
/// ask for the length. Returns `VMIGRATE_RESULT_INVALID_ARGUMENT` for a number outside the table.
///
/// # Safety
/// `buf` is valid for `len` bytes; `out_n` is a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_error_message(
    code: u32,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> vmigrate_result {
    ffi_panic_boundary! {
        let text = describe(code).ok_or_else(|| invalid(format!("{code} is not a vmigrate error code")))?;
        // SAFETY: forwarded caller contract for buf/len/out_n.
        unsafe { copy_to_buffer(text, buf, len, out_n) }
    }
}

/// The symbolic name of `code` (`"PlanParse"`, as `VMIGRATE_RESULT_PLAN_PARSE` and Python's
/// `.name`), a static string; NULL for a number outside the table. A renamed code gives its
/// current name (2003 is `"SourceInvalidLogin"`, once `"VsphereInvalidLogin"`): compare numbers,
/// not names (docs/errors.md).
#[no_mangle]
pub extern "C" fn vmigrate_error_name(code: u32) -> *const c_char {
    crate::codes::static_name(code).map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Write the detail of the last failed call made by the calling thread (message and causes; empty
/// when nothing failed yet), with the same buffer rules as `vmigrate_error_message`.
///
/// # Safety
/// `buf` is valid for `len` bytes; `out_n` is a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_last_error(buf: *mut c_char, len: usize, out_n: *mut usize) -> vmigrate_result {
    // Read before the boundary: a failure of this call itself must not overwrite what it reports.
    let text = crate::util::last_error();
    ffi_panic_boundary! {
        // SAFETY: forwarded caller contract for buf/len/out_n.
        unsafe { copy_to_buffer(&text, buf, len, out_n) }
    }
}
