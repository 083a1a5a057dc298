//! `vmigrate_copy_disk` and `vmigrate_copy_disk_with`: the copy engine on its own, between two
//! transports, with the options, checkpoint file and cancel handle of `vmigrate copy`.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vmigrate_core::engine::{CopyControl, CopyStats};
use vmigrate_core::Result;
use vmigrate_facade::copy::{prepare_specs, CopyRequest};

use crate::codes::vmigrate_result;
use crate::runtime::block_on;
use crate::util::{non_null, optional_str, required_str, write_out, write_string, Callback};
use crate::vmigrate_progress_cb;
use vmigrate_facade::wire;

/// How often progress events are delivered during a copy.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Copy `src` onto `dst` as `req` asks, calling `on_progress` on the calling thread.
pub(crate) async fn copy_with_progress(
    src: &str,
    dst: &str,
    req: &CopyRequest,
    ctl: CopyControl,
    mut on_progress: impl FnMut(String),
) -> Result<CopyStats> {
    let prepared = prepare_specs(src, dst, req).await?;
    let progress = ctl.progress.clone();
    let copy = prepared.run(ctl);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        tokio::select! {
            r = &mut copy => break r,
            _ = tick.tick() => on_progress(wire::copy_progress(&progress.snapshot())),
        }
    };
    // The last event always reports the final counters (done == total on success).
    on_progress(wire::copy_progress(&progress.snapshot()));
    result
}

/// Run one copy for the C entry points and hand back its statistics.
///
/// # Safety
/// As [`vmigrate_copy_disk_with`].
unsafe fn copy_entry(
    src: *const c_char,
    dst: *const c_char,
    req: &CopyRequest,
    cancel: Option<CancellationToken>,
    cb: vmigrate_progress_cb,
    userdata: *mut c_void,
    out_stats_json: *mut *mut c_char,
) -> Result<()> {
    // SAFETY: caller contract.
    let (src, dst) = unsafe { (required_str(src, "src")?, required_str(dst, "dst")?) };
    let callback = Callback::new(cb, userdata);
    let mut ctl = CopyControl::new();
    if let Some(token) = cancel {
        ctl.cancel = token;
    }
    let stats = block_on(copy_with_progress(src, dst, req, ctl, |event| {
        if let Some(cb) = &callback {
            cb.call(&event);
        }
    }))??;
    if non_null(out_stats_json, "out_stats_json").is_ok() {
        // SAFETY: checked for NULL just above.
        unsafe { write_string(out_stats_json, wire::copy_stats(&stats)?) };
    }
    Ok(())
}

/// Copy one disk image between two transports: the engine on its own.
///
/// `src` and `dst` are paths (raw files or block devices), `nbd://host:port/export` or
/// `nbd+unix:///export?socket=PATH` URIs, and, as a source only, `http(s)://` URLs (Range reads)
/// and `.vmdk` files. A file target is created sparse at the source's size. Only data is
/// written: zero and unallocated areas stay holes. With `verify`, both sides are hashed afterwards
/// and a difference is `VMIGRATE_RESULT_VERIFY_MISMATCH`. A target that is the source itself
/// (any path to the same file, the same device or NBD export) is `VMIGRATE_RESULT_SAME_DISK`;
/// an existing non-empty target file is `VMIGRATE_RESULT_TARGET_EXISTS` (replace it with
/// `vmigrate_copy_disk_with` and `{"overwrite": true}`).
///
/// `cb` (may be NULL) receives, on the calling thread, about five times a second and once at the
/// end, a `CopyProgress` document (`docs/wire-format.md`: `apiVersion` and `kind` first)
/// `{"event": "copy", "total", "done", "copied", "zeroed", "skipped", "resumed", "bytesRead",
/// "bytesWritten", "elapsedSeconds", "rateBytesPerSec", "etaSeconds"}`. On success `*out_stats_json`
/// (may be NULL when not wanted) receives the `CopyStats` document `{"apiVersion", "kind", "bytesRead", "bytesWritten", "bytesZeroed",
/// "bytesSkipped", "elapsedSeconds", "sourceDigest", "targetDigest"}`, to free with
/// `vmigrate_string_free`.
///
/// # Safety
/// `src`/`dst` are NUL-terminated strings; `cb` and `userdata` are usable during the call;
/// `out_stats_json` is NULL or a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_copy_disk(
    src: *const c_char,
    dst: *const c_char,
    verify: bool,
    cb: vmigrate_progress_cb,
    userdata: *mut c_void,
    out_stats_json: *mut *mut c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        let req = CopyRequest { verify, ..CopyRequest::default() };
        // SAFETY: caller contract, passed on.
        unsafe { copy_entry(src, dst, &req, None, cb, userdata, out_stats_json) }
    }
}

/// A cancel switch for copies: opaque; create with `vmigrate_cancel_new`, pull with
/// `vmigrate_cancel_trigger` (from any thread, e.g. a signal-handling thread or a UI), release
/// with `vmigrate_cancel_free` once no copy uses it.
pub struct vmigrate_cancel {
    _private: [u8; 0],
}

/// Create a cancel switch for `vmigrate_copy_disk_with`. One switch may serve several copies.
///
/// # Safety
/// `out` is a valid pointer; `*out` receives the handle.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_cancel_new(out: *mut *mut vmigrate_cancel) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out, "out")?;
        let handle = Box::into_raw(Box::new(CancellationToken::new())).cast::<vmigrate_cancel>();
        // SAFETY: checked for NULL just above.
        unsafe { write_out(out, handle) };
        Ok(())
    }
}

/// Cancel every copy running with `cancel`, and any started with it later. Thread-safe; the
/// copies return `VMIGRATE_RESULT_CANCELLED` promptly, leaving their checkpoint when they have
/// one so a re-run resumes.
///
/// # Safety
/// `cancel` is a live handle from `vmigrate_cancel_new`.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_cancel_trigger(cancel: *const vmigrate_cancel) -> vmigrate_result {
    ffi_panic_boundary! {
        // SAFETY: caller contract.
        unsafe { cancel_ref(cancel) }?.cancel();
        Ok(())
    }
}

/// Release a cancel switch (NULL is ignored). A copy still running with it keeps working (it
/// holds its own reference) but can no longer be cancelled through it.
///
/// # Safety
/// `cancel` is NULL or a handle from `vmigrate_cancel_new`, freed once and not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_cancel_free(cancel: *mut vmigrate_cancel) {
    ffi_panic_boundary_void! {
        if !cancel.is_null() {
            // SAFETY: the Box<CancellationToken> leaked by vmigrate_cancel_new, freed once.
            drop(unsafe { Box::from_raw(cancel.cast::<CancellationToken>()) });
        }
    }
}

/// # Safety
/// `p` is NULL or a live handle from `vmigrate_cancel_new`.
unsafe fn cancel_ref<'a>(p: *const vmigrate_cancel) -> Result<&'a CancellationToken> {
    non_null(p, "cancel")?;
    // SAFETY: a non-NULL handle is the Box<CancellationToken> leaked by vmigrate_cancel_new.
    Ok(unsafe { &*p.cast::<CancellationToken>() })
}

/// `vmigrate_copy_disk` with the options of `vmigrate copy` and a cancel switch.
///
/// `options_json` (may be NULL or empty: the defaults) is a JSON object with any of `verify`
/// (bool), `connections` (at least 1), `requestSize` (bytes), `flush` (bool, default true: the
/// copy is durable), `checkpoint` (a file path: resume checkpoints are saved there, and a copy
/// finding one resumes from it, exactly as `vmigrate copy --checkpoint`), `copyFileRange`
/// (bool), `overwrite` (bool: replace an existing non-empty target file, as
/// `vmigrate copy --overwrite`) and `nbdTimeout` (a duration such as `"30s"`: the deadline of one
/// NBD request, as `vmigrate copy --nbd-timeout`; default 10 minutes). Unknown fields and wrong types are `VMIGRATE_RESULT_INVALID_ARGUMENT`, named in the
/// last error. `cancel` (may be NULL) is a switch from `vmigrate_cancel_new`: triggering it from
/// another thread makes this call return `VMIGRATE_RESULT_CANCELLED`. Progress and statistics as
/// `vmigrate_copy_disk`.
///
/// # Safety
/// `src`/`dst` are NUL-terminated strings, `options_json` NULL or one; `cancel` NULL or a live
/// handle for the whole call; `cb` and `userdata` are usable during the call; `out_stats_json`
/// is NULL or a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_copy_disk_with(
    src: *const c_char,
    dst: *const c_char,
    options_json: *const c_char,
    cancel: *const vmigrate_cancel,
    cb: vmigrate_progress_cb,
    userdata: *mut c_void,
    out_stats_json: *mut *mut c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        // SAFETY: caller contract.
        let options = unsafe { optional_str(options_json, "options_json")? };
        let req = CopyRequest::from_json(options)?;
        let token = if cancel.is_null() {
            None
        } else {
            // SAFETY: caller contract: a live handle.
            Some(unsafe { cancel_ref(cancel) }?.clone())
        };
        // SAFETY: caller contract, passed on.
        unsafe { copy_entry(src, dst, &req, token, cb, userdata, out_stats_json) }
    }
}
