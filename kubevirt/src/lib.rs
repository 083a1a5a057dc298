//! vmigrate's KubeVirt side: the Kubernetes target provider (VirtualMachines, DataVolumes, CDI
//! upload, Services, Routes) and the local output folder target.
