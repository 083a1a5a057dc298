//! vmigrate's OVA source: virtual machines packaged as an OVF descriptor, a manifest and
//! streamOptimized VMDKs in one tar (`ova:///path/vm.ova`, or `ova:///path/folder` for every
//! `.ova` in a folder), read where they lie.
//!
//! ```text
//!   vm.ova (ustar) ── tar::scan ──> members (name, offset, size); nothing is extracted
//!     ├─ vm.ovf  ── ovf::parse_envelope ── ovf::to_vms ──> core model (VMs, disks, NICs)
//!     ├─ vm.mf   ── manifest::parse_manifest: SHA-256 / SHA-1 / SHA-512 of every member,
//!     │             checked before the first volume is prepared
//!     └─ vm-disk1.vmdk ── source::Member (a byte range of the .ova) ── the VMDK reader of
//!                          vmigrate-vsphere (streamOptimized grains) ──> BlockTransport
//! ```
//!
//! This crate is the worked example of adding a provider without changing `vmigrate-core`: it
//! implements [`vmigrate_core::SourceProvider`], maps its own problems ([`OvaError`]) onto the
//! existing error codes, reuses the VMDK reader and the `openat2` containment of the vSphere
//! crate, and is registered by URL scheme in the facade (`vmigrate::sources`). See
//! `docs/architecture.md`.
//!
//! The source is read-only and cold-only: the packaged VMs are not running, so there is nothing
//! to power off, snapshot or track, and validation blocks a warm plan.
//!
//! ```no_run
//! # async fn demo() -> vmigrate_core::Result<()> {
//! use vmigrate_core::SourceProvider;
//! let src = vmigrate_ova::OvaSource::from_url("ova:///srv/exports/web01.ova")?;
//! for vm in src.inventory().await?.vms {
//!     println!("{} ({} disks)", vm.name, vm.disks.len());
//! }
//! # Ok(()) }
//! ```

pub mod error;
pub mod manifest;
pub mod ovf;
mod source;
pub mod tar;

pub use error::{ova_error, OvaError};
pub use source::{Member, OvaSource};
