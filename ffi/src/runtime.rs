//! The process-wide tokio runtime the blocking C calls run on.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Runtime;
use vmigrate_core::{Error, ErrorCode, Result};

/// Built on first use; `vmigrate_shutdown` takes it out. Calls in flight hold their own `Arc`, so a
/// shutdown never pulls the runtime from under them: the last holder drops it.
static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

fn runtime() -> Result<Arc<Runtime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(rt) = slot.as_ref() {
        return Ok(rt.clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vmigrate-worker")
        .build()
        .map_err(|e| Error::io("starting the vmigrate runtime", e))?;
    let rt = Arc::new(rt);
    *slot = Some(rt.clone());
    Ok(rt)
}

/// Run a future to completion on the library runtime, blocking the calling thread.
///
/// Fails (with a panic caught at the boundary) when called from a runtime thread, e.g. from inside
/// a progress callback: callbacks must not make blocking calls.
pub(crate) fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    let rt = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            ErrorCode::Internal,
            "blocking vmigrate call made from a vmigrate callback (or another tokio runtime)",
        ));
    }
    Ok(rt.block_on(fut))
}

/// Stop the library's runtime and its worker threads, waiting up to one second for tasks to end.
///
/// Call it when no other vmigrate call is running: before `dlclose`, or at exit so that leak
/// checkers see the worker threads joined. The next vmigrate call starts a new runtime.
/// Always returns `VMIGRATE_RESULT_OK`.
#[no_mangle]
pub extern "C" fn vmigrate_shutdown() -> crate::vmigrate_result {
    ffi_panic_boundary! {
        let taken = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(rt) = taken {
            // Another thread still inside a call keeps its clone; it drops the runtime when done.
            if let Ok(rt) = Arc::try_unwrap(rt) {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
        Ok(())
    }
}

/// Drop a value inside the runtime's context, for objects whose `Drop` may spawn or need a reactor
/// (HTTP clients, providers). Falls back to a plain drop when the runtime is gone.
pub(crate) fn drop_in_runtime<T>(value: T) {
    let rt = RUNTIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    match rt {
        Some(rt) if tokio::runtime::Handle::try_current().is_err() => {
            let _guard = rt.enter();
            drop(value);
        }
        _ => drop(value),
    }
}
