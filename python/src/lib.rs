//! Python bindings for vmigrate. Filled by the bindings issue.
