//! `vmigrate_copy_disk`: the copy engine on its own, between two transports.

use std::ffi::{c_char, c_void};
use std::time::Duration;

use serde_json::Value;
use vmigrate_core::engine::{self, CopyControl, CopyOptions, CopyStats};
use vmigrate_core::Result;
use vmigrate_facade::transport_url::{open_transport, Role};

use crate::codes::vmigrate_result;
use crate::json::{progress_event, stats_json};
use crate::runtime::block_on;
use crate::util::{non_null, required_str, write_string, Callback};
use crate::vmigrate_progress_cb;

/// How often progress events are delivered during a copy.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

/// Copy `src` onto `dst`, calling `cb` with progress on the calling thread.
pub(crate) async fn copy_with_progress(
    src: &str,
    dst: &str,
    opts: CopyOptions,
    ctl: CopyControl,
    mut on_progress: impl FnMut(Value),
) -> Result<CopyStats> {
    let source = open_transport(src, Role::Source).await?;
    let target = open_transport(dst, Role::Target { create_size: Some(source.size()) }).await?;
    let copy = engine::copy(&*source, &*target, &opts, &ctl);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        tokio::select! {
            r = &mut copy => break r,
            _ = tick.tick() => on_progress(progress_event("copy", &ctl.progress.snapshot())),
        }
    };
    // The last event always reports the final counters (done == total on success).
    on_progress(progress_event("copy", &ctl.progress.snapshot()));
    result
}

/// Copy one disk image between two transports: the engine on its own.
///
/// `src` and `dst` are paths (raw files or block devices), `nbd://host:port/export` or
/// `nbd+unix:///export?socket=PATH` URIs, and, as a source only, `http(s)://` URLs (Range reads)
/// and `.vmdk` files. A file target is created sparse at the source's size. Only data is
/// written: zero and unallocated areas stay holes. With `verify`, both sides are hashed afterwards
/// and a difference is `VMIGRATE_RESULT_VERIFY_MISMATCH`.
///
/// `cb` (may be NULL) receives, on the calling thread, about five times a second and once at the
/// end, `{"event": "copy", "total", "done", "copied", "zeroed", "skipped", "resumed", "bytesRead",
/// "bytesWritten", "elapsedSeconds", "rateBytesPerSec", "etaSeconds"}`. On success `*out_stats_json`
/// (may be NULL when not wanted) receives `{"bytesRead", "bytesWritten", "bytesZeroed",
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
        // SAFETY: caller contract.
        let (src, dst) = unsafe { (required_str(src, "src")?, required_str(dst, "dst")?) };
        let callback = Callback::new(cb, userdata);
        let opts = CopyOptions { verify, ..CopyOptions::default() };
        let stats = block_on(copy_with_progress(src, dst, opts, CopyControl::new(), |event| {
            if let Some(cb) = &callback {
                cb.call(&event.to_string());
            }
        }))??;
        if non_null(out_stats_json, "out_stats_json").is_ok() {
            // SAFETY: checked for NULL just above.
            unsafe { write_string(out_stats_json, stats_json(&stats).to_string()) };
        }
        Ok(())
    }
}
