//! Logging: the library's records delivered to a C callback.

use std::ffi::{c_char, c_void, CString};
use std::sync::{OnceLock, RwLock};

use vmigrate_core::{Error, ErrorCode};
use vmigrate_facade::logging::{self, ForwardLayer, Record};

use crate::codes::vmigrate_result;

/// Severity of a log record; `vmigrate_set_log_callback` forwards its `max_level` and the more
/// severe ones.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum vmigrate_log_level {
    /// Something failed.
    Error = 1,
    /// Something unexpected that the library worked around.
    Warn = 2,
    /// Milestones: plan, VM phases, disks copied.
    Info = 3,
    /// Details for diagnosing: connections, retries, chosen I/O paths.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl vmigrate_log_level {
    fn from_u32(v: u32) -> Option<Self> {
        [Self::Error, Self::Warn, Self::Info, Self::Debug, Self::Trace].into_iter().find(|l| *l as u32 == v)
    }

    fn of(level: tracing::Level) -> Self {
        match level {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::INFO => Self::Info,
            tracing::Level::DEBUG => Self::Debug,
            _ => Self::Trace,
        }
    }
}

/// Log callback: `userdata` as given, the record's level, its origin (a Rust module path such as
/// `vmigrate_core::engine`) and its text (`message key=value ...`, with the plan / VM / disk it
/// belongs to); both strings are valid only during the call.
pub type vmigrate_log_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: vmigrate_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

struct Sink {
    func: unsafe extern "C" fn(*mut c_void, vmigrate_log_level, *const c_char, *const c_char),
    /// The caller's pointer, kept as an address: it is only ever handed back to the callback.
    userdata: usize,
    max: vmigrate_log_level,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// Whether our subscriber became the process's, decided on the first call.
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn deliver(r: &Record) {
    let sink = SINK.read().unwrap_or_else(|p| p.into_inner());
    let Some(s) = sink.as_ref() else { return };
    let level = vmigrate_log_level::of(r.level);
    if level > s.max {
        return;
    }
    let clean = |t: String| CString::new(t.replace('\0', " ")).unwrap_or_default();
    let (target, text) = (clean(r.target.clone()), clean(r.text()));
    // SAFETY: the caller registered a function with this signature and promised it may be
    // called from any library thread with its userdata until it is replaced; the strings live
    // until the call returns. The read lock keeps a replacement waiting until then.
    unsafe { (s.func)(s.userdata as *mut c_void, level, target.as_ptr(), text.as_ptr()) };
}

/// Send the library's log records of `max_level` (a `vmigrate_log_level`) and more severe to
/// `callback`, or stop with `callback` NULL. Records come from library threads, several at once:
/// the callback must be thread-safe, return quickly and not call vmigrate functions. A later
/// call replaces the callback; when this returns the old one is no longer running. Without a
/// callback nothing is logged (the `vmigrate` command-line tool has its own `--log`); the
/// libraries vmigrate uses (HTTP, Kubernetes clients) are not forwarded.
///
/// Fails with `VMIGRATE_RESULT_INVALID_ARGUMENT` for a `max_level` out of range, or when another
/// `tracing` subscriber already owns the process (a Rust program that installed its own and
/// links this library).
///
/// # Safety
/// `callback`, when not NULL, must be safe to call with `userdata` from any thread until it is
/// replaced or removed.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_set_log_callback(
    callback: vmigrate_log_cb,
    userdata: *mut c_void,
    max_level: u32,
) -> vmigrate_result {
    ffi_panic_boundary! {
        let max = vmigrate_log_level::from_u32(max_level).ok_or_else(|| {
            Error::new(ErrorCode::InvalidArgument, format!("max_level {max_level} is not a vmigrate_log_level (1-5)"))
        })?;
        if !*INSTALLED.get_or_init(|| logging::install(ForwardLayer::new(tracing::Level::TRACE, deliver))) {
            return Err(Error::new(
                ErrorCode::InvalidArgument,
                "another tracing subscriber owns this process; vmigrate logs go there",
            ));
        }
        let mut sink = SINK.write().unwrap_or_else(|p| p.into_inner());
        *sink = callback.map(|func| Sink { func, userdata: userdata as usize, max });
        Ok(())
    }
}
