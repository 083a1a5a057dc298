//! The provider-neutral inventory model: what a source tells us about its VMs.
//!
//! Field names follow vSphere concepts (a moref, a datastore, a portgroup) because that is the
//! source we migrate from, but nothing here talks to vSphere: the vSphere and VMX readers fill
//! it, validation and the target builders read it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Stable identity of a source VM: the moref is stable within one vCenter, the UUIDs across
/// re-registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmId {
    /// Managed object reference (`vm-123`) or, for local sources, the VMX path relative to the root.
    pub moref: String,
    /// BIOS UUID (`config.uuid`, VMX `uuid.bios`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_uuid: Option<String>,
    /// vCenter instance UUID (`config.instanceUuid`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_uuid: Option<String>,
}

/// Power state as vSphere reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PowerState {
    /// Running.
    PoweredOn,
    /// Stopped.
    #[default]
    PoweredOff,
    /// Suspended to disk.
    Suspended,
}

/// Boot firmware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Firmware {
    /// Legacy BIOS.
    #[default]
    Bios,
    /// UEFI.
    Efi,
}

/// Disk controller bus the disk hangs off at the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DiskBus {
    /// SCSI (LSI, PVSCSI, BusLogic).
    #[default]
    Scsi,
    /// SATA / AHCI.
    Sata,
    /// IDE.
    Ide,
    /// NVMe.
    Nvme,
}

/// VMware disk mode: independent disks are excluded from snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DiskMode {
    /// Normal, snapshot-able.
    #[default]
    Persistent,
    /// Independent persistent: snapshots skip it.
    IndependentPersistent,
    /// Independent non-persistent: changes are discarded at power-off.
    IndependentNonpersistent,
    /// Any other mode vSphere may report.
    Other,
}

impl DiskMode {
    /// Whether snapshots (and so CBT deltas) cover this disk.
    pub fn is_independent(self) -> bool {
        matches!(self, DiskMode::IndependentPersistent | DiskMode::IndependentNonpersistent)
    }
}

/// One virtual disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Device key, unique within the VM (vSphere `key`, 2000+ for disks).
    pub key: i32,
    /// Human label (`Hard disk 1`).
    #[serde(default)]
    pub label: String,
    /// Virtual size in bytes; may be non-positive on a broken source, which validation reports.
    pub capacity_bytes: i64,
    /// Datastore name holding the backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// Backing file as vSphere names it: `[datastore] folder/disk.vmdk`, or a local path.
    pub file: String,
    /// Controller bus.
    #[serde(default)]
    pub bus: DiskBus,
    /// Position on the controller, e.g. `0:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Disk mode.
    #[serde(default)]
    pub mode: DiskMode,
    /// Multi-writer sharing enabled.
    #[serde(default)]
    pub shared: bool,
    /// Raw device mapping instead of a VMDK.
    #[serde(default)]
    pub rdm: bool,
    /// Thin provisioned.
    #[serde(default)]
    pub thin: bool,
    /// Current CBT change id of the disk, when CBT is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

/// NIC adapter model at the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NicModel {
    /// VMware paravirtual.
    #[default]
    Vmxnet3,
    /// Intel e1000.
    E1000,
    /// Intel e1000e.
    E1000e,
    /// Older vmxnet/vmxnet2, pcnet32 or anything else, by name.
    Other(String),
}

/// One network adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    /// Device key.
    pub key: i32,
    /// MAC address, lower-case colon form.
    pub mac: String,
    /// Network name it is attached to (portgroup name, resolved for distributed portgroups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Adapter model.
    #[serde(default)]
    pub model: NicModel,
    /// IP addresses the guest reports on this NIC (needs VMware Tools).
    #[serde(default)]
    pub ip_addresses: Vec<IpAddr>,
    /// Connected now.
    #[serde(default = "yes")]
    pub connected: bool,
}

fn yes() -> bool {
    true
}

/// One CD-ROM drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cdrom {
    /// Device key.
    pub key: i32,
    /// Connected now.
    pub connected: bool,
    /// Connects at power-on.
    #[serde(default)]
    pub start_connected: bool,
    /// ISO image backing, when the drive is backed by a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<String>,
}

/// A snapshot already present on the source VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Snapshot moref or local id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// State of VMware Tools in the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolsStatus {
    /// Running: graceful shutdown and guest IPs work.
    Running,
    /// Installed but not running.
    NotRunning,
    /// Not installed.
    NotInstalled,
    /// Unknown (e.g. a local VMX source has no live guest).
    #[default]
    Unknown,
}

/// A virtual machine at the source, with everything validation and the target builders need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vm {
    /// Identity.
    pub id: VmId,
    /// Display name.
    pub name: String,
    /// Power state.
    #[serde(default)]
    pub power_state: PowerState,
    /// Guest OS id (`rhel8_64Guest`, `windows2019srv_64Guest`).
    #[serde(default)]
    pub guest_id: String,
    /// Guest OS full name.
    #[serde(default)]
    pub guest_full_name: String,
    /// Boot firmware.
    #[serde(default)]
    pub firmware: Firmware,
    /// UEFI secure boot on.
    #[serde(default)]
    pub secure_boot: bool,
    /// CPU sockets.
    #[serde(default = "one")]
    pub cpu_sockets: u32,
    /// Cores per socket.
    #[serde(default = "one")]
    pub cores_per_socket: u32,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: u64,
    /// Virtual disks.
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Network adapters.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// CD-ROM drives.
    #[serde(default)]
    pub cdroms: Vec<Cdrom>,
    /// A virtual TPM is present.
    #[serde(default)]
    pub tpm: bool,
    /// PCI passthrough, vGPU or USB devices, by label.
    #[serde(default)]
    pub passthrough_devices: Vec<String>,
    /// Changed block tracking enabled.
    #[serde(default)]
    pub cbt_enabled: bool,
    /// Existing snapshots.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    /// VMware Tools state.
    #[serde(default)]
    pub tools_status: ToolsStatus,
    /// Fault tolerance configured.
    #[serde(default)]
    pub fault_tolerance: bool,
    /// Names of DRS affinity / anti-affinity rules that include this VM.
    #[serde(default)]
    pub drs_rules: Vec<String>,
    /// Host the VM runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Cluster the host belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Whether the VM is a template (templates are not migrated).
    #[serde(default)]
    pub template: bool,
}

fn one() -> u32 {
    1
}

impl Vm {
    /// Total vCPUs (sockets x cores).
    pub fn vcpus(&self) -> u32 {
        self.cpu_sockets.max(1) * self.cores_per_socket.max(1)
    }

    /// Sum of disk capacities, ignoring non-positive ones.
    pub fn total_disk_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.capacity_bytes.max(0) as u64).sum()
    }
}

/// Kind of network at the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NetworkKind {
    /// Standard switch portgroup.
    #[default]
    Standard,
    /// Distributed virtual portgroup.
    Distributed,
    /// NSX opaque network (segment).
    Opaque,
}

/// A source network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Moref or local id.
    pub id: String,
    /// Name VMs refer to.
    pub name: String,
    /// Kind.
    #[serde(default)]
    pub kind: NetworkKind,
}

/// A source datastore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Datastore {
    /// Moref or local id.
    pub id: String,
    /// Name used in `[name] path` file names.
    pub name: String,
    /// Type (`VMFS`, `NFS`, `vsan`, `local`).
    #[serde(default)]
    pub kind: String,
    /// Capacity in bytes.
    #[serde(default)]
    pub capacity_bytes: u64,
    /// Free space in bytes.
    #[serde(default)]
    pub free_bytes: u64,
}

/// A source host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Moref or local id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Cluster, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// Everything a source knows, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Virtual machines.
    #[serde(default)]
    pub vms: Vec<Vm>,
    /// Networks.
    #[serde(default)]
    pub networks: Vec<Network>,
    /// Datastores.
    #[serde(default)]
    pub datastores: Vec<Datastore>,
    /// Hosts.
    #[serde(default)]
    pub hosts: Vec<Host>,
}

impl Inventory {
    /// Find a VM by name, moref or BIOS UUID.
    pub fn find_vm(&self, key: &str) -> Option<&Vm> {
        self.vms
            .iter()
            .find(|v| v.name == key)
            .or_else(|| self.vms.iter().find(|v| v.id.moref == key || v.id.bios_uuid.as_deref() == Some(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_json_round_trip_and_defaults() {
        let vm: Vm = serde_json::from_str(
            r#"{"id":{"moref":"vm-1"},"name":"database","disks":[{"key":2000,"capacityBytes":1024,"file":"[ds] db/db.vmdk"}],
                "nics":[{"key":4000,"mac":"00:50:56:aa:bb:cc","ipAddresses":["10.0.0.5","fe80::1"]}]}"#,
        )
        .expect("valid vm json");
        assert_eq!(vm.vcpus(), 1);
        assert_eq!(vm.power_state, PowerState::PoweredOff);
        assert!(vm.nics[0].connected);
        assert_eq!(vm.nics[0].ip_addresses.len(), 2);
        let back: Vm = serde_json::from_value(serde_json::to_value(&vm).expect("serialize")).expect("deserialize");
        assert_eq!(back, vm);
        assert_eq!(vm.total_disk_bytes(), 1024);
    }

    #[test]
    fn inventory_finds_by_name_moref_uuid() {
        let inv = Inventory {
            vms: vec![Vm {
                id: VmId { moref: "vm-7".into(), bios_uuid: Some("4211-abc".into()), instance_uuid: None },
                name: "winweb01".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(inv.find_vm("winweb01").is_some());
        assert!(inv.find_vm("vm-7").is_some());
        assert!(inv.find_vm("4211-abc").is_some());
        assert!(inv.find_vm("winweb02").is_none());
    }
}
