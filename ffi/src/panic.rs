//! The panic boundary every exported function runs inside.

/// Run a body returning `Result<(), vmigrate_core::Error>` so that no panic unwinds into C: `Ok`
/// becomes `VMIGRATE_RESULT_OK`, an error its table code (and the thread's last-error detail), a
/// panic `VMIGRATE_RESULT_PANIC`.
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {{
        let outcome = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(
            || -> ::std::result::Result<(), ::vmigrate_core::Error> { $($body)* },
        ));
        $crate::util::finish(outcome)
    }};
}

/// The same boundary for functions that return nothing (the `_free` functions): a panic is
/// recorded as the last error and swallowed.
macro_rules! ffi_panic_boundary_void {
    ($($body:tt)*) => {{
        let outcome = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* }));
        if let Err(payload) = outcome {
            $crate::util::record_panic(payload);
        }
    }};
}
