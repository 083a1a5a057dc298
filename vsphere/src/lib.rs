//! vmigrate's VMware side: the vSphere API client and source provider, and the local VMware
//! datastore folder source (VMX + VMDK).
