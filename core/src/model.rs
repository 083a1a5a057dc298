//! The provider-neutral inventory model: what a source tells us about its VMs.
//!
//! Every source provider fills it (see `docs/architecture.md`); validation, the executor and
//! the target builders read it. Identifiers that only the source understands (a VM's
//! [`VmId::source_ref`], a disk's [`Disk::key`], a snapshot id, a network or datastore id) are
//! opaque strings or numbers here: core compares and records them, and hands them back to the
//! source that made them, but never parses them. The guest OS is a libosinfo short id
//! ([`Vm::os_id`]) that each source derives from what it knows.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Stable identity of a source VM.
///
/// `source_ref` is the source's own reference to the VM, opaque to core: stable for as long as
/// the source keeps the VM (a vSphere source fills it with the VM's managed object reference,
/// `vm-123`; a folder source with the VM file's path below its root). The UUIDs identify the VM
/// across re-registrations.
///
/// On the wire (`vmigrate.dev/v1alpha1`) the reference is `sourceRef`, and also `moref`, its
/// name before the model was provider-neutral, so documents only gain a field within the
/// version; input may carry either (status files and inventories written by older versions
/// load as they are).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "VmIdWire", into = "VmIdWire")]
pub struct VmId {
    /// The source's opaque reference to the VM.
    pub source_ref: String,
    /// BIOS (SMBIOS system) UUID, if known.
    pub bios_uuid: Option<String>,
    /// The source's instance UUID, if it has one.
    pub instance_uuid: Option<String>,
}

/// [`VmId`] as JSON: `sourceRef` and its older name `moref` (see [`VmId`]).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VmIdWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    moref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bios_uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance_uuid: Option<String>,
}

impl TryFrom<VmIdWire> for VmId {
    type Error = String;

    fn try_from(w: VmIdWire) -> Result<Self, Self::Error> {
        let source_ref = match (w.source_ref, w.moref) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("VM id has sourceRef {a:?} and a different moref {b:?}"));
            }
            (Some(r), _) | (None, Some(r)) => r,
            (None, None) => return Err("VM id has no sourceRef".into()),
        };
        Ok(VmId { source_ref, bios_uuid: w.bios_uuid, instance_uuid: w.instance_uuid })
    }
}

impl From<VmId> for VmIdWire {
    fn from(v: VmId) -> Self {
        VmIdWire {
            moref: Some(v.source_ref.clone()),
            source_ref: Some(v.source_ref),
            bios_uuid: v.bios_uuid,
            instance_uuid: v.instance_uuid,
        }
    }
}

/// Power state of a source VM.
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

/// Disk mode: independent disks are excluded from snapshots (so from changed-block deltas too).
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
    /// Any other mode the source may report.
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
    /// The source's opaque device key, unique within the VM: core matches disks, volumes,
    /// checkpoints and changed-block ids by it and hands it back to the source, but gives the
    /// number no meaning.
    pub key: i32,
    /// Human label (`Hard disk 1`).
    #[serde(default)]
    pub label: String,
    /// Virtual size in bytes; may be non-positive on a broken source, which validation reports.
    pub capacity_bytes: i64,
    /// Name of the source storage (datastore, pool) holding the disk; the plan's storage map
    /// is keyed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// Backing file as the source names it (opaque to core; shown to users, part of the
    /// disk's resume identity).
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
    /// The source's current changed-block id of the disk (opaque), when tracking is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_id: Option<String>,
}

/// NIC adapter model at the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NicModel {
    /// The vmxnet3 paravirtual NIC.
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
    /// Name of the source network it is attached to; the plan's network map is keyed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Adapter model.
    #[serde(default)]
    pub model: NicModel,
    /// IP addresses the guest reports on this NIC (needs the guest tools running).
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
    /// The source's opaque snapshot id.
    pub id: String,
    /// Name.
    pub name: String,
}

/// State of the source's guest tools (the agent in the guest that reports IPs and shuts the
/// guest down gracefully).
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
    /// The source's own guest OS id, opaque to core: shown to users, and read only by the
    /// source's own validation rules. Core and targets read [`os_id`](Self::os_id).
    #[serde(default)]
    pub guest_id: String,
    /// Guest OS full name, for display.
    #[serde(default)]
    pub guest_full_name: String,
    /// The guest OS as a libosinfo short id (`rhel9.0`, `win2k19`, `debian12`), as virt-v2v
    /// and Forklift name guests, filled by the source from what it knows; the libosinfo family
    /// prefix alone (`ubuntu`, `linux`) when the source knows no version; empty when unknown.
    #[serde(default)]
    pub os_id: String,
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
    /// Guest tools state.
    #[serde(default)]
    pub tools_status: ToolsStatus,
    /// A fault-tolerance secondary (a live shadow copy of the VM) is configured.
    #[serde(default)]
    pub fault_tolerance: bool,
    /// Names of the source's placement (affinity / anti-affinity) rules that include this VM.
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

/// The family of a guest OS, from its libosinfo short id ([`Vm::os_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsFamily {
    /// Windows (`win*`).
    Windows,
    /// A Linux distribution.
    Linux,
    /// Known, and neither (BSDs, Solaris, DOS, macOS, ...).
    Other,
    /// No OS id.
    Unknown,
}

/// libosinfo short-id prefixes of Linux distributions (and `linux`, the generic one).
const LINUX_OS_IDS: &[&str] = &[
    "linux",
    "rhel",
    "centos",
    "ol",
    "rocky",
    "almalinux",
    "fedora",
    "silverblue",
    "rhcos",
    "ubuntu",
    "debian",
    "sles",
    "sled",
    "opensuse",
    "amzn",
    "asianux",
    "mandriva",
    "mageia",
    "photon",
    "turbolinux",
    "alpinelinux",
    "archlinux",
    "gentoo",
    "slackware",
    "nixos",
    "cirros",
];

/// The family of a libosinfo short id.
pub fn os_family(os_id: &str) -> OsFamily {
    let o = os_id.trim().to_ascii_lowercase();
    if o.is_empty() {
        OsFamily::Unknown
    } else if o.starts_with("win") {
        OsFamily::Windows
    } else if LINUX_OS_IDS.iter().any(|p| o.starts_with(p)) {
        OsFamily::Linux
    } else {
        OsFamily::Other
    }
}

impl Vm {
    /// The family of the guest OS ([`os_family`] of [`os_id`](Self::os_id)).
    pub fn os_family(&self) -> OsFamily {
        os_family(&self.os_id)
    }

    /// Total vCPUs (sockets x cores).
    pub fn vcpus(&self) -> u32 {
        self.cpu_sockets.max(1) * self.cores_per_socket.max(1)
    }

    /// Sum of disk capacities, ignoring non-positive ones.
    pub fn total_disk_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.capacity_bytes.max(0) as u64).sum()
    }
}

/// Kind of network at the source (informative: validation does not depend on it).
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
    /// The source's opaque id.
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
    /// The source's opaque id.
    pub id: String,
    /// Name disks refer to ([`Disk::datastore`]).
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
    /// The source's opaque id.
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
    /// Find a VM by name, source reference or BIOS UUID.
    pub fn find_vm(&self, key: &str) -> Option<&Vm> {
        self.vms
            .iter()
            .find(|v| v.name == key)
            .or_else(|| self.vms.iter().find(|v| v.id.source_ref == key || v.id.bios_uuid.as_deref() == Some(key)))
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
    fn vm_id_wire_carries_source_ref_and_its_old_name() {
        let id = VmId { source_ref: "vm-9".into(), bios_uuid: Some("42-1".into()), instance_uuid: None };
        let json = serde_json::to_value(&id).expect("serialize");
        assert_eq!(json, serde_json::json!({"sourceRef": "vm-9", "moref": "vm-9", "biosUuid": "42-1"}));
        assert_eq!(serde_json::from_value::<VmId>(json).expect("round trip"), id);
        // Written by a version before the neutral model (status files, inventories): loads.
        let old: VmId = serde_json::from_str(r#"{"moref":"vm-9","biosUuid":"42-1"}"#).expect("old form");
        assert_eq!(old, id);
        let new: VmId = serde_json::from_str(r#"{"sourceRef":"vm-9","biosUuid":"42-1"}"#).expect("new form");
        assert_eq!(new, id);
        let err = serde_json::from_str::<VmId>(r#"{"sourceRef":"vm-9","moref":"vm-8"}"#).expect_err("conflict");
        assert!(err.to_string().contains("different moref"), "{err}");
        serde_json::from_str::<VmId>(r#"{"biosUuid":"42-1"}"#).expect_err("no reference");
    }

    #[test]
    fn os_families_of_libosinfo_ids() {
        for (id, fam) in [
            ("win2k19", OsFamily::Windows),
            ("winxp", OsFamily::Windows),
            ("rhel9.0", OsFamily::Linux),
            ("ol8.0", OsFamily::Linux),
            ("ubuntu", OsFamily::Linux),
            ("linux", OsFamily::Linux),
            ("freebsd13.0", OsFamily::Other),
            ("msdos6.22", OsFamily::Other),
            ("", OsFamily::Unknown),
        ] {
            assert_eq!(os_family(id), fam, "{id}");
        }
    }

    #[test]
    fn inventory_finds_by_name_ref_uuid() {
        let inv = Inventory {
            vms: vec![Vm {
                id: VmId { source_ref: "vm-7".into(), bios_uuid: Some("4211-abc".into()), instance_uuid: None },
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
