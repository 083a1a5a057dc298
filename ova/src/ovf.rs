//! The OVF descriptor: parsed into [`Envelope`] by [`parse_envelope`], mapped to the core model
//! by [`to_vms`].
//!
//! Both are pure functions over untrusted bytes: the descriptor is bounded
//! ([`MAX_OVF_BYTES`]), every count is bounded, numbers are checked for overflow, and a
//! malformed descriptor is [`OvaError::Ovf`], never a panic. Element and attribute names are
//! matched by local name, so the `ovf:`/`rasd:`/`vmw:` prefixes a tool chooses do not matter,
//! and OVF 1.x `Item`s and OVF 2.0 `StorageItem`/`EthernetPortItem`s read alike.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use vmigrate_core::model::{Cdrom, Disk, DiskBus, Firmware, Nic, NicModel, PowerState, ToolsStatus, Vm, VmId};

use crate::error::OvaError;

/// Largest descriptor read (ovftool's are a few KiB; generous for many VMs).
pub const MAX_OVF_BYTES: usize = 4 << 20;
/// Most virtual systems in one package.
pub const MAX_SYSTEMS: usize = 256;
/// Most hardware items in one virtual system.
pub const MAX_ITEMS: usize = 1024;
/// Deepest element nesting accepted.
const MAX_DEPTH: usize = 64;

/// A file the package references (`References/File`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRef {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: the tar member's name.
    pub href: String,
    /// `ovf:size`, when given.
    pub size: Option<u64>,
    /// `ovf:compression` (`gzip`), when given: not read.
    pub compression: Option<String>,
    /// `ovf:chunkSize`, when given: chunked files are not read.
    pub chunked: bool,
}

/// A virtual disk (`DiskSection/Disk`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskDef {
    /// `ovf:diskId`.
    pub id: String,
    /// `ovf:fileRef`: a [`FileRef::id`]; `None` for a blank disk to be created.
    pub file_ref: Option<String>,
    /// Capacity in bytes (`ovf:capacity` times `ovf:capacityAllocationUnits`).
    pub capacity_bytes: u64,
    /// `ovf:format` (a URI naming the VMDK sub-format).
    pub format: String,
}

/// One `rasd` hardware item (or OVF 2.0 `StorageItem`/`EthernetPortItem`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// `InstanceID`.
    pub instance_id: String,
    /// CIM `ResourceType` (3 CPU, 4 memory, 5 IDE, 6 SCSI, 10 Ethernet, 15/16 CD/DVD, 17 disk,
    /// 20 other storage controller).
    pub resource_type: u32,
    /// `ResourceSubType` (`VmxNet3`, `lsilogic`, `vmware.sata.ahci`...).
    pub sub_type: String,
    /// `Parent`: the controller's `InstanceID`.
    pub parent: String,
    /// `AddressOnParent`: the unit on the controller.
    pub address_on_parent: String,
    /// `Address`: a NIC's MAC, a controller's bus number.
    pub address: String,
    /// `HostResource` (`ovf:/disk/vmdisk1`).
    pub host_resource: String,
    /// `Connection`: a NIC's network name.
    pub connection: String,
    /// `VirtualQuantity`.
    pub virtual_quantity: String,
    /// `AllocationUnits`.
    pub allocation_units: String,
    /// `ElementName`.
    pub element_name: String,
    /// `AutomaticAllocation` (a NIC connected at power-on).
    pub automatic_allocation: String,
    /// VMware's `vmw:CoresPerSocket` on the CPU item.
    pub cores_per_socket: String,
}

/// One `VirtualSystem`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualSystem {
    /// `ovf:id`.
    pub id: String,
    /// `Name`, when given.
    pub name: String,
    /// `OperatingSystemSection/@vmw:osType` (a VMware guest id), when given.
    pub os_type: Option<String>,
    /// `OperatingSystemSection/@ovf:id` (a CIM OS number).
    pub os_cim_id: Option<u32>,
    /// `OperatingSystemSection/Description`.
    pub os_description: String,
    /// `vmw:Config` key/value pairs of the hardware section (`firmware`, ...).
    pub config: Vec<(String, String)>,
    /// The hardware items.
    pub items: Vec<Item>,
}

/// What a descriptor says, before mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Referenced files.
    pub files: Vec<FileRef>,
    /// Disks.
    pub disks: Vec<DiskDef>,
    /// Network names.
    pub networks: Vec<String>,
    /// Virtual systems.
    pub systems: Vec<VirtualSystem>,
}

fn ovf_err(reason: impl Into<String>) -> OvaError {
    OvaError::Ovf { reason: reason.into() }
}

fn attrs(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, OvaError> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| ovf_err(format!("bad attribute: {e}")))?;
        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        let value = a.unescape_value().map_err(|e| ovf_err(format!("bad attribute value: {e}")))?.into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn get<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Bytes per allocation unit: `byte`, `byte * 2^20`, `byte * 1024`, `KiloBytes`, `MegaBytes`,
/// `GigaBytes` (and `KB`/`MB`/`GB`). `None` for anything else.
pub fn allocation_unit(units: &str) -> Option<u64> {
    let u: String = units.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    if u.is_empty() || u == "byte" || u == "bytes" {
        return Some(1);
    }
    if let Some(rest) = u.strip_prefix("bytes*").or_else(|| u.strip_prefix("byte*")) {
        if let Some(exp) = rest.strip_prefix("2^") {
            let n: u32 = exp.parse().ok()?;
            return (n < 63).then(|| 1u64 << n);
        }
        if let Some(exp) = rest.strip_prefix("10^") {
            let n: u32 = exp.parse().ok()?;
            return 10u64.checked_pow(n);
        }
        return rest.parse().ok().filter(|n| *n > 0);
    }
    match u.as_str() {
        "kilobytes" | "kb" | "kib" => Some(1 << 10),
        "megabytes" | "mb" | "mib" => Some(1 << 20),
        "gigabytes" | "gb" | "gib" => Some(1 << 30),
        "terabytes" | "tb" | "tib" => Some(1 << 40),
        _ => None,
    }
}

fn quantity(value: &str, units: &str, what: &str) -> Result<u64, OvaError> {
    let n: u64 = value.trim().parse().map_err(|_| ovf_err(format!("{what} {value:?} is not a whole number")))?;
    let unit = allocation_unit(units).ok_or_else(|| ovf_err(format!("{what}: unknown allocation unit {units:?}")))?;
    n.checked_mul(unit).ok_or_else(|| ovf_err(format!("{what} {value} x {units} overflows")))
}

fn is_item(name: &str) -> bool {
    matches!(name, "Item" | "StorageItem" | "EthernetPortItem")
}

/// Parse a descriptor.
///
/// # Errors
/// [`OvaError::Ovf`] for XML that is malformed, too large or too deep, or breaks the OVF
/// structure (no `Envelope`, no virtual system, over the counts).
pub fn parse_envelope(xml: &[u8]) -> Result<Envelope, OvaError> {
    if xml.len() > MAX_OVF_BYTES {
        return Err(ovf_err(format!("descriptor is {} bytes (at most {MAX_OVF_BYTES})", xml.len())));
    }
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut env = Envelope::default();
    let mut stack: Vec<String> = Vec::new();
    let mut item: Option<Item> = None;
    let mut saw_envelope = false;
    loop {
        let ev = reader.read_event().map_err(|e| ovf_err(format!("xml at byte {}: {e}", reader.buffer_position())))?;
        let (start, empty) = match &ev {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            let parent = stack.last().map(String::as_str).unwrap_or("");
            let a = attrs(e)?;
            match (parent, name.as_str()) {
                ("", "Envelope") => saw_envelope = true,
                ("", other) => return Err(ovf_err(format!("root element is {other:?}, not Envelope"))),
                ("References", "File") => {
                    env.files.push(FileRef {
                        id: get(&a, "id").unwrap_or_default().to_owned(),
                        href: get(&a, "href").unwrap_or_default().to_owned(),
                        size: match get(&a, "size") {
                            Some(s) => Some(s.trim().parse().map_err(|_| ovf_err(format!("file size {s:?}")))?),
                            None => None,
                        },
                        compression: get(&a, "compression")
                            .filter(|c| !c.is_empty() && *c != "identity")
                            .map(str::to_owned),
                        chunked: get(&a, "chunkSize").is_some(),
                    });
                    if env.files.len() > MAX_ITEMS {
                        return Err(ovf_err("too many files"));
                    }
                }
                ("DiskSection", "Disk") => {
                    let cap = get(&a, "capacity").unwrap_or_default();
                    let units = get(&a, "capacityAllocationUnits").unwrap_or("byte");
                    env.disks.push(DiskDef {
                        id: get(&a, "diskId").unwrap_or_default().to_owned(),
                        file_ref: get(&a, "fileRef").filter(|f| !f.is_empty()).map(str::to_owned),
                        capacity_bytes: quantity(cap, units, "disk capacity")?,
                        format: get(&a, "format").unwrap_or_default().to_owned(),
                    });
                    if env.disks.len() > MAX_ITEMS {
                        return Err(ovf_err("too many disks"));
                    }
                }
                ("NetworkSection", "Network") => {
                    if let Some(n) = get(&a, "name") {
                        env.networks.push(n.to_owned());
                    }
                    if env.networks.len() > MAX_ITEMS {
                        return Err(ovf_err("too many networks"));
                    }
                }
                (_, "VirtualSystem") => {
                    if env.systems.len() >= MAX_SYSTEMS {
                        return Err(ovf_err(format!("more than {MAX_SYSTEMS} virtual systems")));
                    }
                    if stack.iter().any(|s| s == "VirtualSystem") {
                        return Err(ovf_err("a VirtualSystem inside a VirtualSystem"));
                    }
                    env.systems
                        .push(VirtualSystem { id: get(&a, "id").unwrap_or_default().to_owned(), ..Default::default() });
                }
                ("VirtualSystem", "OperatingSystemSection") => {
                    if let Some(sys) = env.systems.last_mut() {
                        sys.os_type = get(&a, "osType").filter(|s| !s.is_empty()).map(str::to_owned);
                        sys.os_cim_id = get(&a, "id").and_then(|s| s.trim().parse().ok());
                    }
                }
                ("VirtualHardwareSection", "Config") | ("VirtualHardwareSection", "ExtraConfig") => {
                    if let (Some(sys), Some(k)) = (env.systems.last_mut(), get(&a, "key")) {
                        if sys.config.len() < MAX_ITEMS {
                            sys.config.push((k.to_owned(), get(&a, "value").unwrap_or_default().to_owned()));
                        }
                    }
                }
                ("VirtualHardwareSection", n) if is_item(n) && !empty && stack.iter().any(|s| s == "VirtualSystem") => {
                    item = Some(Item::default());
                }
                _ => {}
            }
            if !empty {
                stack.push(name);
                if stack.len() > MAX_DEPTH {
                    return Err(ovf_err("elements nested too deep"));
                }
            }
            continue;
        }
        match ev {
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                if is_item(&name) && stack.last().map(String::as_str) == Some("VirtualHardwareSection") {
                    if let (Some(it), Some(sys)) = (item.take(), env.systems.last_mut()) {
                        if sys.items.len() >= MAX_ITEMS {
                            return Err(ovf_err(format!("more than {MAX_ITEMS} hardware items")));
                        }
                        sys.items.push(it);
                    }
                }
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| ovf_err(format!("bad text: {e}")))?.into_owned();
                let n = stack.len();
                let (parent, top) = match n {
                    0 => continue,
                    1 => ("", stack[0].as_str()),
                    _ => (stack[n - 2].as_str(), stack[n - 1].as_str()),
                };
                if is_item(parent) {
                    if let Some(it) = item.as_mut() {
                        let slot = match top {
                            "InstanceID" => &mut it.instance_id,
                            "ResourceType" => {
                                it.resource_type = text.trim().parse().unwrap_or(0);
                                continue;
                            }
                            "ResourceSubType" => &mut it.sub_type,
                            "Parent" => &mut it.parent,
                            "AddressOnParent" => &mut it.address_on_parent,
                            "Address" => &mut it.address,
                            "HostResource" => &mut it.host_resource,
                            "Connection" => &mut it.connection,
                            "VirtualQuantity" => &mut it.virtual_quantity,
                            "AllocationUnits" => &mut it.allocation_units,
                            "ElementName" => &mut it.element_name,
                            "AutomaticAllocation" => &mut it.automatic_allocation,
                            "CoresPerSocket" => &mut it.cores_per_socket,
                            _ => continue,
                        };
                        *slot = text;
                    }
                } else if let Some(sys) = env.systems.last_mut() {
                    match (parent, top) {
                        ("VirtualSystem", "Name") => sys.name = text,
                        ("OperatingSystemSection", "Description") => sys.os_description = text,
                        _ => {}
                    }
                }
            }
            Event::Eof => break,
            // Declarations, comments, processing instructions, CDATA and DOCTYPEs carry nothing
            // we read (quick-xml expands no custom entities).
            _ => {}
        }
    }
    if !saw_envelope {
        return Err(ovf_err("no Envelope element"));
    }
    if env.systems.is_empty() {
        return Err(ovf_err("no VirtualSystem"));
    }
    Ok(env)
}

/// The VMDK a disk's `ovf:format` names is read; anything else is refused.
pub fn is_vmdk_format(format: &str) -> bool {
    format.is_empty() || format.to_ascii_lowercase().contains("vmdk")
}

fn nic_model(sub: &str) -> NicModel {
    match sub.to_ascii_lowercase().as_str() {
        "vmxnet3" => NicModel::Vmxnet3,
        "e1000" => NicModel::E1000,
        "e1000e" => NicModel::E1000e,
        other => NicModel::Other(other.to_owned()),
    }
}

fn controller_bus(item: &Item) -> DiskBus {
    let sub = item.sub_type.to_ascii_lowercase();
    match item.resource_type {
        5 => DiskBus::Ide,
        6 => DiskBus::Scsi,
        20 if sub.contains("nvme") => DiskBus::Nvme,
        20 if sub.contains("sata") || sub.contains("ahci") => DiskBus::Sata,
        _ => DiskBus::Scsi,
    }
}

/// The VM id of system `system` of the package at `ova` (relative to the source's root): the
/// package itself when it holds one system, else `package.ova#system-id`.
pub fn vm_id(ova: &str, env: &Envelope, system: &VirtualSystem) -> String {
    if env.systems.len() == 1 {
        ova.to_owned()
    } else {
        format!("{ova}#{}", system.id)
    }
}

/// Map the package's virtual systems to VMs. Disks name their tar member in
/// [`Disk::file`] and sit on `datastore`; VMs are powered off (a package is not running).
///
/// # Errors
/// [`OvaError::Ovf`] when a disk item names a disk or file the descriptor does not define, a
/// number is malformed, or a name is unusable; [`OvaError::Unsupported`] for a blank disk (no
/// file to copy).
pub fn to_vms(env: &Envelope, ova: &str, datastore: &str) -> Result<Vec<Vm>, OvaError> {
    let mut out = Vec::with_capacity(env.systems.len());
    for sys in &env.systems {
        let name = if sys.name.trim().is_empty() { sys.id.clone() } else { sys.name.trim().to_owned() };
        vmigrate_core::plan::check_name(&name, &format!("virtual system name in {ova}"))
            .map_err(|e| ovf_err(e.message().to_owned()))?;
        let config = |k: &str| sys.config.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let firmware = match config("firmware") {
            Some(f) if f.eq_ignore_ascii_case("efi") => Firmware::Efi,
            _ => Firmware::Bios,
        };
        let secure_boot = config("uefi.secureBoot.enabled")
            .or_else(|| config("bootOptions.efiSecureBootEnabled"))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut vm = Vm {
            id: VmId { source_ref: vm_id(ova, env, sys), ..Default::default() },
            name,
            power_state: PowerState::PoweredOff,
            guest_id: sys.os_type.clone().unwrap_or_else(|| "otherGuest".to_owned()),
            guest_full_name: sys.os_description.clone(),
            // The OS type of a VMware-made OVF is a VMware guest id (`vmw:osType`); a
            // descriptor with only the CIM number (`ovf:id`) leaves the OS unknown.
            os_id: sys.os_type.as_deref().and_then(vmigrate_vsphere::osinfo::os_id_from_guest_id).unwrap_or_default(),
            firmware,
            secure_boot,
            tools_status: ToolsStatus::Unknown,
            ..Default::default()
        };
        let by_instance = |id: &str| sys.items.iter().find(|i| !id.is_empty() && i.instance_id == id);
        for it in &sys.items {
            match it.resource_type {
                3 => {
                    let vcpus: u32 = it
                        .virtual_quantity
                        .trim()
                        .parse()
                        .map_err(|_| ovf_err(format!("CPU count {:?}", it.virtual_quantity)))?;
                    let vcpus = vcpus.clamp(1, 4096);
                    let cores: u32 = it.cores_per_socket.trim().parse().unwrap_or(1).max(1);
                    let (sockets, cores) =
                        if vcpus.is_multiple_of(cores) { (vcpus / cores, cores) } else { (vcpus, 1) };
                    vm.cpu_sockets = sockets;
                    vm.cores_per_socket = cores;
                }
                4 => {
                    let units = if it.allocation_units.is_empty() { "byte * 2^20" } else { &it.allocation_units };
                    vm.memory_mib = quantity(&it.virtual_quantity, units, "memory")? >> 20;
                }
                17 => {
                    let disk_id = it.host_resource.trim().rsplit_once("/disk/").map(|(_, id)| id).ok_or_else(|| {
                        ovf_err(format!("disk item {:?} has no ovf:/disk/ host resource", it.element_name))
                    })?;
                    let def =
                        env.disks.iter().find(|d| d.id == disk_id).ok_or_else(|| {
                            ovf_err(format!("disk item names disk {disk_id:?}, which DiskSection lacks"))
                        })?;
                    let file_ref = def.file_ref.as_deref().ok_or_else(|| OvaError::Unsupported {
                        what: format!("disk {disk_id:?} has no file (a blank disk to create)"),
                    })?;
                    let file = env.files.iter().find(|f| f.id == file_ref).ok_or_else(|| {
                        ovf_err(format!("disk {disk_id:?} names file {file_ref:?}, which References lacks"))
                    })?;
                    let ctrl = by_instance(&it.parent);
                    let key = 2000 + i32::try_from(vm.disks.len()).unwrap_or(0);
                    vm.disks.push(Disk {
                        key,
                        label: if it.element_name.is_empty() {
                            format!("Hard disk {}", vm.disks.len() + 1)
                        } else {
                            it.element_name.clone()
                        },
                        capacity_bytes: i64::try_from(def.capacity_bytes).unwrap_or(i64::MAX),
                        datastore: Some(datastore.to_owned()),
                        file: file.href.clone(),
                        bus: ctrl.map(controller_bus).unwrap_or_default(),
                        unit: ctrl.map(|c| {
                            let bus = if c.address.is_empty() { "0" } else { c.address.as_str() };
                            format!("{bus}:{}", it.address_on_parent)
                        }),
                        thin: true,
                        ..Default::default()
                    });
                }
                10 => {
                    let key = 4000 + i32::try_from(vm.nics.len()).unwrap_or(0);
                    vm.nics.push(Nic {
                        key,
                        mac: it.address.trim().to_ascii_lowercase(),
                        network: Some(it.connection.trim().to_owned()).filter(|n| !n.is_empty()),
                        model: nic_model(&it.sub_type),
                        ip_addresses: Vec::new(),
                        connected: !it.automatic_allocation.eq_ignore_ascii_case("false"),
                    });
                }
                15 | 16 => {
                    let key = 3000 + i32::try_from(vm.cdroms.len()).unwrap_or(0);
                    vm.cdroms.push(Cdrom { key, connected: false, start_connected: false, iso: None });
                }
                _ => {}
            }
        }
        out.push(vm);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor as ovftool 4.x writes it for a one-disk EFI VM (trimmed).
    pub(crate) const OVF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="web01-disk1.vmdk" ovf:id="file1" ovf:size="123456"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized" ovf:populatedSize="0"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="segment-a &amp; b">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="web01">
    <Info>A virtual machine</Info>
    <Name>web01</Name>
    <OperatingSystemSection ovf:id="80" vmw:osType="rhel8_64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Red Hat Enterprise Linux 8 (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>4 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>4</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">2</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:Address>00:50:56:AA:BB:01</rasd:Address>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>segment-a &amp; b</rasd:Connection>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <Item ovf:required="false">
        <rasd:AutomaticAllocation>false</rasd:AutomaticAllocation>
        <rasd:ElementName>CD-ROM 1</rasd:ElementName>
        <rasd:InstanceID>6</rasd:InstanceID>
        <rasd:ResourceType>15</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

    #[test]
    fn maps_an_ovftool_descriptor() {
        let env = parse_envelope(OVF.as_bytes()).expect("parse");
        assert_eq!(env.networks, ["segment-a & b"]);
        let vms = to_vms(&env, "web01.ova", "ova").expect("map");
        let vm = &vms[0];
        assert_eq!(vm.id.source_ref, "web01.ova");
        assert_eq!(vm.name, "web01");
        assert_eq!(vm.guest_id, "rhel8_64Guest");
        assert_eq!(vm.os_id, "rhel8.0");
        assert_eq!(vm.guest_full_name, "Red Hat Enterprise Linux 8 (64-bit)");
        assert_eq!(vm.firmware, Firmware::Efi);
        assert_eq!((vm.cpu_sockets, vm.cores_per_socket, vm.memory_mib), (2, 2, 2048));
        assert_eq!(vm.disks.len(), 1);
        let d = &vm.disks[0];
        assert_eq!((d.key, d.capacity_bytes, d.file.as_str()), (2000, 16 << 20, "web01-disk1.vmdk"));
        assert_eq!((d.bus, d.unit.as_deref(), d.datastore.as_deref()), (DiskBus::Scsi, Some("0:0"), Some("ova")));
        assert_eq!(vm.nics.len(), 1);
        assert_eq!(vm.nics[0].mac, "00:50:56:aa:bb:01");
        assert_eq!(vm.nics[0].network.as_deref(), Some("segment-a & b"));
        assert_eq!(vm.nics[0].model, NicModel::Vmxnet3);
        assert_eq!(vm.cdroms.len(), 1);
        assert_eq!(vm.power_state, PowerState::PoweredOff);
    }

    #[test]
    fn units_are_parsed_and_bounded() {
        assert_eq!(allocation_unit("byte * 2^30"), Some(1 << 30));
        assert_eq!(allocation_unit("byte*2^20"), Some(1 << 20));
        assert_eq!(allocation_unit("byte * 1024"), Some(1024));
        assert_eq!(allocation_unit("GigaBytes"), Some(1 << 30));
        assert_eq!(allocation_unit("byte * 2^64"), None);
        assert_eq!(allocation_unit("furlongs"), None);
        assert!(quantity("18446744073709551615", "byte * 2^20", "x").is_err());
    }

    #[test]
    fn malformed_descriptors_are_typed() {
        for bad in [
            "",
            "<notovf/>",
            "<Envelope>",
            "<Envelope></Envelope>",
            "<Envelope><VirtualSystem><VirtualSystem/></VirtualSystem></Envelope>",
            "<Envelope><DiskSection><Disk ovf:capacity=\"x\"/></DiskSection><VirtualSystem/></Envelope>",
        ] {
            assert!(matches!(parse_envelope(bad.as_bytes()), Err(OvaError::Ovf { .. })), "{bad:?}");
        }
        let dangling = OVF.replace("ovf:/disk/vmdisk1", "ovf:/disk/nope");
        let env = parse_envelope(dangling.as_bytes()).expect("parse");
        assert!(matches!(to_vms(&env, "a.ova", "ova"), Err(OvaError::Ovf { .. })));
        let blank = OVF.replace(" ovf:fileRef=\"file1\"", "");
        let env = parse_envelope(blank.as_bytes()).expect("parse");
        assert!(matches!(to_vms(&env, "a.ova", "ova"), Err(OvaError::Unsupported { .. })));
    }

    #[test]
    fn several_systems_get_distinct_ids() {
        let two = OVF.replace(
            "<VirtualSystem ovf:id=\"web01\">",
            "<VirtualSystemCollection ovf:id=\"app\"><VirtualSystem ovf:id=\"db\"><Name>db</Name></VirtualSystem><VirtualSystem ovf:id=\"web01\">",
        )
        .replace("</VirtualSystem>\n</Envelope>", "</VirtualSystem></VirtualSystemCollection>\n</Envelope>");
        let env = parse_envelope(two.as_bytes()).expect("parse");
        let vms = to_vms(&env, "app.ova", "ova").expect("map");
        let ids: Vec<&str> = vms.iter().map(|v| v.id.source_ref.as_str()).collect();
        assert_eq!(ids, ["app.ova#db", "app.ova#web01"]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            if let Ok(env) = parse_envelope(&data) {
                let _ = to_vms(&env, "x.ova", "ova");
            }
        }

        #[test]
        fn never_panics_on_mutated_descriptors(flips in proptest::collection::vec((0usize..8000, proptest::num::u8::ANY), 1..6)) {
            let mut d = OVF.as_bytes().to_vec();
            for (at, v) in flips {
                let n = d.len();
                d[at % n] = v;
            }
            if let Ok(env) = parse_envelope(&d) {
                let _ = to_vms(&env, "x.ova", "ova");
            }
        }
    }
}
