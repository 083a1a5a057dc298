//! vmigrate's VMware side: the vSphere API client and source provider, the local VMware
//! datastore folder source (VMX + VMDK), and the VMDK reader.

pub mod local;
pub mod vmdk;
pub mod vmx;
