//! vmigrate's test kit (not published): what every provider's tests share.
//!
//! - [`mem`]: the reference providers, [`MemSource`] and [`MemTarget`], over in-memory disks.
//! - [`conformance`]: the suites any [`BlockTransport`](vmigrate_core::BlockTransport),
//!   [`SourceProvider`](vmigrate_core::SourceProvider) or
//!   [`TargetProvider`](vmigrate_core::TargetProvider) must pass; a new provider runs them in
//!   its tests (see `docs/architecture.md`).
//! - [`ova`]: OVA packages made by real tools (qemu-img, sha256sum, GNU tar), as ovftool lays them out.
//! - [`peers`]: whether a program is installed, and `qemu-img` to make and compare images
//!   independently of vmigrate's own readers.

pub mod conformance;
pub mod golden;
pub mod mem;
pub mod ova;
pub mod peers;

pub use mem::{MemSource, MemTarget};
