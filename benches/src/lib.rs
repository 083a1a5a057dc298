//! Shared helpers for vmigrate's benchmark programs.
