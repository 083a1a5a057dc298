//! vmigrate's VMware side: the vSphere API client and source provider, the local VMware
//! datastore folder source (VMX + VMDK), and the VMDK reader.
//!
//! ```no_run
//! use vmigrate_core::SourceProvider;
//! use vmigrate_vsphere::{ConnectOptions, VsphereSource};
//!
//! # async fn demo() -> vmigrate_core::Result<()> {
//! let source = VsphereSource::connect(ConnectOptions {
//!     url: "https://vcenter.lab.example/sdk".into(),
//!     username: "administrator@vsphere.local".into(),
//!     password: std::env::var("VMIGRATE_SOURCE_PASSWORD").unwrap_or_default(),
//!     // Pin the certificate as govc does (or set `ca_pem`; `insecure` only for labs).
//!     thumbprint: Some("AB:CD:...".into()),
//!     ..Default::default()
//! })
//! .await?;
//! // One ContainerView + paged RetrievePropertiesEx: a few round trips for thousands of VMs.
//! let inventory = source.inventory().await?;
//! for vm in &inventory.vms {
//!     println!("{} {:?} {} disk(s)", vm.name, vm.power_state, vm.disks.len());
//! }
//! source.close().await?;
//! # Ok(()) }
//! ```
//!
//! ```text
//!   Client (SOAP, session, re-login) ──> VsphereSource: SourceProvider
//!        │ TLS: vmigrate_core::http::apply_tls          │ open_disk
//!        │                                              ├─ HTTPS /folder: vmdk::open_vmdk_at over a
//!        │                                              │  DatastoreOpener (HttpTransport per extent,
//!        │                                              │  session cookie, 401 -> re-login), CBT map
//!        │                                              └─ VDDK: nbdkit vddk child + NBD client
//!   local::LocalSource (vmx:///path) ── vmx parser + vmdk reader
//! ```
//!
//! Errors are [`VsphereError`] inside the crate and [`vmigrate_core::Error`] with 2000-range
//! codes at the provider seam. The `vcsim` feature adds the `vcsim` module, the govmomi simulator harness
//! the tests and benchmarks use.

pub mod beneath;
pub mod client;
pub mod error;
pub mod local;
pub mod osinfo;
pub mod rules;
pub mod secret;
pub mod soap;
pub mod source;
#[cfg(feature = "vcsim")]
pub mod vcsim;
pub mod vmdk;
pub mod vmx;

pub use client::{Client, ConnectOptions};
pub use error::VsphereError;
pub use source::{DatastoreDisk, DatastoreOpener, VsphereSource};
