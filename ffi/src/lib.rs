//! C ABI for vmigrate. Filled by the bindings issue.
