//! C ABI for vmigrate: `libvmigrate.so` / `libvmigrate.a` and the header `include/vmigrate.h`.
//!
//! Conventions (those of rustls-ffi):
//!
//! - Every function returns a [`vmigrate_result`]: `VMIGRATE_RESULT_OK` (0) or a number from the
//!   one error-code table that Rust ([`vmigrate_core::ErrorCode`]) and Python share. The detail of
//!   the last failure of the calling thread is read with `vmigrate_last_error`.
//! - Objects are opaque handles (`vmigrate_source`, `vmigrate_plan`, `vmigrate_migration`) created
//!   by `vmigrate_<type>_new*` and released by `vmigrate_<type>_free` (which accepts NULL).
//!   Read-only functions take a `const` handle first.
//! - Every pointer is checked for NULL; out-parameters are written only on success.
//! - Strings are UTF-8 and NUL-terminated. Strings returned through `char **` belong to the caller,
//!   who releases them with `vmigrate_string_free`.
//! - Callbacks take `void *userdata` first and run on a library thread: they must be thread-safe,
//!   return quickly, and must not call blocking vmigrate functions (cancelling is fine).
//! - Logs go nowhere until `vmigrate_set_log_callback` registers a callback (which, unlike the
//!   others, runs on any library thread, several at once).
//! - No panic crosses the boundary: it becomes `VMIGRATE_RESULT_PANIC`.
//! - The library owns one multi-thread tokio runtime for the process, built on first use; every call
//!   blocks until done and may be made from any thread. `vmigrate_shutdown` stops the runtime (for
//!   leak checkers, or before `dlclose`); the next call builds a new one.

#![allow(non_camel_case_types)]

#[macro_use]
mod panic;
mod codes;
mod copy;
mod error;
mod log;
mod migration;
mod plan;
mod runtime;
mod source;
mod status;
mod util;

pub use codes::vmigrate_result;
pub use copy::vmigrate_copy_disk;
pub use error::{vmigrate_error_message, vmigrate_error_name, vmigrate_last_error};
pub use log::{vmigrate_log_cb, vmigrate_log_level, vmigrate_set_log_callback};
pub use migration::{
    vmigrate_migration, vmigrate_migration_cancel, vmigrate_migration_cancel_vm, vmigrate_migration_free,
    vmigrate_migration_new, vmigrate_migration_run, vmigrate_migration_status,
};
pub use plan::{
    vmigrate_plan, vmigrate_plan_free, vmigrate_plan_new_from_file, vmigrate_plan_new_from_str, vmigrate_plan_to_json,
    vmigrate_plan_validate,
};
pub use runtime::vmigrate_shutdown;
pub use source::{vmigrate_source, vmigrate_source_free, vmigrate_source_inventory, vmigrate_source_new};
pub use status::vmigrate_status_load;
pub use util::{vmigrate_progress_cb, vmigrate_string_free, vmigrate_version};
