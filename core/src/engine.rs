//! The block-copy engine: parallel, sparse-aware, zero-copy, resumable and verified copies
//! between two [`BlockTransport`](crate::BlockTransport)s.
