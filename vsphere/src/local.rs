//! The local VMware datastore folder source (`vmx:///path`).
