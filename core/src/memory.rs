//! An in-memory block transport: a real implementation used by tests, examples and benchmarks.
