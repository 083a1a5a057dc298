//! Shared plumbing: the thread's last error, C strings in and out, out-parameters, callbacks.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};

use vmigrate_core::{Error, ErrorCode, Result};

use crate::codes::vmigrate_result;

thread_local! {
    /// Detail of the last failed call made by this thread (message and cause chain).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Record the detail of a failure for `vmigrate_last_error`.
pub(crate) fn set_last_error(text: String) {
    LAST_ERROR.with(|slot| *slot.borrow_mut() = text);
}

/// The calling thread's last error detail.
pub(crate) fn last_error() -> String {
    LAST_ERROR.with(|slot| slot.borrow().clone())
}

/// Record a caught panic as the last error.
pub(crate) fn record_panic(payload: Box<dyn Any + Send>) {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    set_last_error(format!("panic inside vmigrate (a bug, please report it): {what}"));
}

/// Turn the outcome of a boundary body into the C result code.
pub(crate) fn finish(outcome: std::thread::Result<Result<()>>) -> vmigrate_result {
    match outcome {
        Ok(Ok(())) => vmigrate_result::Ok,
        Ok(Err(e)) => {
            set_last_error(e.report());
            vmigrate_result::from_code(e.code())
        }
        Err(payload) => {
            record_panic(payload);
            vmigrate_result::Panic
        }
    }
}

/// The error for a NULL or malformed argument.
pub(crate) fn invalid(what: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidArgument, what)
}

/// Fail when a required pointer is NULL.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> Result<()> {
    if p.is_null() {
        return Err(invalid(format!("argument {name} is NULL")));
    }
    Ok(())
}

/// Borrow a required C string as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn required_str<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    non_null(p, name)?;
    // SAFETY: non-NULL, and the caller guarantees a live NUL-terminated string for 'a.
    let bytes = unsafe { CStr::from_ptr(p) };
    bytes.to_str().map_err(|_| invalid(format!("argument {name} is not valid UTF-8")))
}

/// Borrow an optional C string: NULL (and the empty string) mean "not given".
///
/// # Safety
/// As [`required_str`].
pub(crate) unsafe fn optional_str<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded caller contract; p is non-NULL.
    let s = unsafe { required_str(p, name) }?;
    Ok(if s.is_empty() { None } else { Some(s) })
}

/// Hand a string to C through `*out`; the caller frees it with `vmigrate_string_free`.
///
/// # Safety
/// `out` is non-NULL (checked by the caller up front) and valid for a pointer write.
pub(crate) unsafe fn write_string(out: *mut *mut c_char, text: String) {
    // JSON escapes NUL; other text (messages) gets it replaced rather than truncated.
    let c = CString::new(text).unwrap_or_else(|e| {
        let cleaned: Vec<u8> = e.into_vec().into_iter().map(|b| if b == 0 { b'?' } else { b }).collect();
        CString::new(cleaned).expect("every NUL byte was replaced")
    });
    // SAFETY: the caller checked `out` for NULL and C passed a writable `char **`.
    unsafe { *out = c.into_raw() };
}

/// Write a plain value through an out-pointer checked for NULL beforehand.
///
/// # Safety
/// `out` is non-NULL, aligned and valid for writes of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: see the function contract.
    unsafe { out.write(value) };
}

/// Copy `text` into a caller buffer, `snprintf`-style: at most `len - 1` bytes plus a NUL; `*out_n`
/// receives the full length of `text` (without NUL), so `*out_n >= len` means truncated.
///
/// # Safety
/// `buf` is valid for `len` bytes of writes (or NULL with `len == 0`); `out_n` is valid or NULL.
pub(crate) unsafe fn copy_to_buffer(text: &str, buf: *mut c_char, len: usize, out_n: *mut usize) -> Result<()> {
    if buf.is_null() && len > 0 {
        return Err(invalid("argument buf is NULL but len is not 0"));
    }
    non_null(out_n, "out_n")?;
    if len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: buf has room for len >= n + 1 bytes; the source is a live &str that cannot
        // overlap a caller buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    // SAFETY: out_n was checked for NULL above.
    unsafe { write_out(out_n, text.len()) };
    Ok(())
}

/// Progress callback: `userdata` as given, then one event as a JSON object (valid only during the
/// call). Called on the thread that made the call that took it, while that call runs.
pub type vmigrate_progress_cb = Option<unsafe extern "C" fn(userdata: *mut c_void, event_json: *const c_char)>;

/// A C callback and its userdata. Deliberately neither `Send` nor `Sync`: callbacks run on the
/// caller's thread only.
#[derive(Clone, Copy)]
pub(crate) struct Callback {
    func: unsafe extern "C" fn(*mut c_void, *const c_char),
    userdata: *mut c_void,
}

impl Callback {
    /// Wrap an optional callback.
    pub(crate) fn new(func: vmigrate_progress_cb, userdata: *mut c_void) -> Option<Callback> {
        func.map(|func| Callback { func, userdata })
    }

    /// Call it with one JSON document.
    pub(crate) fn call(&self, json: &str) {
        let Ok(c) = CString::new(json) else { return };
        // SAFETY: the caller registered a function with this signature and promised it may be
        // called with its userdata while the call that registered it runs (on the same thread,
        // since Callback is not Send); the string lives until the callback returns.
        unsafe { (self.func)(self.userdata, c.as_ptr()) };
    }
}

/// Release a string returned by vmigrate (through a `char **` out-parameter). NULL is ignored.
///
/// # Safety
/// `s` is NULL or a string vmigrate returned that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_string_free(s: *mut c_char) {
    ffi_panic_boundary_void! {
        if !s.is_null() {
            // SAFETY: s came from CString::into_raw in write_string and is freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    }
}

/// The library version, a static NUL-terminated string (`"0.1.0"`); never NULL, never freed.
#[no_mangle]
pub extern "C" fn vmigrate_version() -> *const c_char {
    static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the crate version has no NUL byte"),
    };
    VERSION.as_ptr()
}
