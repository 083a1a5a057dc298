//! vmigrate's VMware side: the vSphere API client and source provider, the local VMware
//! datastore folder source (VMX + VMDK), and the VMDK reader.

pub mod client;
pub mod error;
pub mod local;
pub mod soap;
pub mod source;
#[cfg(feature = "vcsim")]
pub mod vcsim;
pub mod vmdk;
pub mod vmx;

pub use client::{Client, ConnectOptions};
pub use error::VsphereError;
pub use source::VsphereSource;
