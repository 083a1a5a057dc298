//! Parser for VMware `.vmx` configuration files and their mapping into the core model.
//!
//! A VMX file is a flat list of `key = "value"` lines. VMware quotes every value and escapes
//! bytes that would break the line with `|XX` (two hex digits): `|22` is `"`, `|7C` is `|`,
//! `|0A` a newline. Keys are case-insensitive (`displayName` and `displayname` are the same key)
//! and a later line wins over an earlier one, which is how VMware itself reads the file.
//!
//! [`parse_vmx`] is a pure function over `&str` so it can be fuzzed; [`vmx_to_vm`] turns the
//! parsed keys into a [`Vm`] and asks the caller for what only the disk files know (capacity,
//! RDM), so it stays pure as well.

use std::collections::{BTreeMap, BTreeSet};

use vmigrate_core::model::{
    Cdrom, Disk, DiskBus, DiskMode, Firmware, Nic, NicModel, PowerState, Snapshot, ToolsStatus, Vm, VmId,
};
use vmigrate_core::{Error, ErrorCode};

/// Largest VMX (or VMSD) text we accept; real files are a few KiB.
pub const MAX_VMX_BYTES: usize = 4 << 20;

/// Why a VMX file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VmxError {
    /// A non-comment line has no `=`.
    #[error("vmx line {line}: expected `key = \"value\"`")]
    MissingEquals {
        /// 1-based line number.
        line: usize,
    },
    /// A line has an empty key.
    #[error("vmx line {line}: empty key")]
    EmptyKey {
        /// 1-based line number.
        line: usize,
    },
    /// A quoted value has no closing quote.
    #[error("vmx line {line}: unterminated quoted value")]
    Unterminated {
        /// 1-based line number.
        line: usize,
    },
    /// Text after the closing quote that is not a comment.
    #[error("vmx line {line}: unexpected text after the closing quote")]
    TrailingText {
        /// 1-based line number.
        line: usize,
    },
    /// An `|XX` escape decoded into bytes that are not UTF-8.
    #[error("vmx line {line}: escaped value is not valid utf-8")]
    BadEncoding {
        /// 1-based line number.
        line: usize,
    },
    /// The file is larger than [`MAX_VMX_BYTES`].
    #[error("vmx file is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// Size seen.
        size: usize,
        /// Limit.
        max: usize,
    },
}

impl From<VmxError> for Error {
    fn from(e: VmxError) -> Self {
        Error::new(ErrorCode::SourceDescriptorParse, "parsing vmx file").with_source(e)
    }
}

/// A parsed VMX (or VMSD) file: keys lower-cased, values unescaped, last assignment wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vmx {
    entries: BTreeMap<String, String>,
}

impl Vmx {
    /// The value of `key` (any case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// A boolean value the way VMware spells it (`TRUE`, `true`, `1`, `yes`); `None` when absent
    /// or not a boolean.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        }
    }

    /// An unsigned integer value; `None` when absent or not a number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.trim().parse().ok()
    }

    /// Whether `<prefix>.present` is true (how VMware marks a configured device).
    pub fn present(&self, prefix: &str) -> bool {
        self.get_bool(&format!("{prefix}.present")).unwrap_or(false)
    }

    /// Every `(key, value)` pair, keys lower-cased, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file had no assignments.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Parse the text of a VMX (or VMSD, same syntax) file.
///
/// Blank lines and `#` comments are skipped; values may be quoted (VMware always quotes) or bare;
/// `|XX` escapes are decoded; a trailing `# comment` after a quoted value is allowed.
///
/// # Errors
/// A [`VmxError`] naming the first bad line.
pub fn parse_vmx(text: &str) -> Result<Vmx, VmxError> {
    if text.len() > MAX_VMX_BYTES {
        return Err(VmxError::TooLarge { size: text.len(), max: MAX_VMX_BYTES });
    }
    let mut entries = BTreeMap::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let l = raw.trim_start_matches('\u{feff}').trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (key, rest) = l.split_once('=').ok_or(VmxError::MissingEquals { line })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(VmxError::EmptyKey { line });
        }
        let rest = rest.trim();
        let raw_value = if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').ok_or(VmxError::Unterminated { line })?;
            let after = q[end + 1..].trim();
            if !after.is_empty() && !after.starts_with('#') {
                return Err(VmxError::TrailingText { line });
            }
            &q[..end]
        } else {
            rest
        };
        let value = unescape(raw_value).ok_or(VmxError::BadEncoding { line })?;
        entries.insert(key.to_ascii_lowercase(), value);
    }
    Ok(Vmx { entries })
}

/// Decode VMware's `|XX` escapes; a `|` not followed by two hex digits stays literal, as VMware
/// reads it.
fn unescape(s: &str) -> Option<String> {
    if !s.contains('|') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'|' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// What only the disk file can tell about a disk: [`vmx_to_vm`] asks for it per `fileName`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskFileInfo {
    /// Virtual size in bytes, from the VMDK descriptor or sparse header.
    pub capacity_bytes: u64,
    /// The descriptor is a raw device mapping (`vmfsRawDeviceMap`, `vmfsPassthroughRawDeviceMap`).
    pub rdm: bool,
    /// Thin provisioned (sparse extents, or a `ddb.thinProvisioned = "1"` flag).
    pub thin: bool,
}

/// Where the VM lives, for naming its files the way vSphere does (`[datastore] folder/file`).
#[derive(Debug, Clone, Copy)]
pub struct VmxLocation<'a> {
    /// Datastore name.
    pub datastore: &'a str,
    /// Folder of the VMX relative to the datastore root (`web01`), empty at the root.
    pub folder: &'a str,
}

/// Bus, controller and unit of a `scsi0:1`-style device prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Slot {
    bus_order: u8,
    controller: u32,
    unit: u32,
}

fn bus_of(name: &str) -> Option<(DiskBus, u8, i32, u32)> {
    // (bus, order, key base, keys per controller)
    match name {
        "scsi" => Some((DiskBus::Scsi, 0, 2000, 16)),
        "sata" => Some((DiskBus::Sata, 1, 16000, 30)),
        "nvme" => Some((DiskBus::Nvme, 2, 31000, 64)),
        "ide" => Some((DiskBus::Ide, 3, 3000, 2)),
        _ => None,
    }
}

/// Device prefixes like `scsi0:1` found in the keys, in bus/controller/unit order.
fn device_prefixes(vmx: &Vmx) -> Vec<(String, String, u32, u32)> {
    let mut seen = BTreeSet::new();
    for (k, _) in vmx.iter() {
        let Some((prefix, _)) = k.split_once('.') else { continue };
        let Some((ctrl, unit)) = prefix.split_once(':') else { continue };
        let bus: String = ctrl.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        if bus_of(&bus).is_none() {
            continue;
        }
        let (Ok(c), Ok(u)) = (ctrl[bus.len()..].parse::<u32>(), unit.parse::<u32>()) else { continue };
        if c > 64 || u > 64 {
            continue;
        }
        let order = bus_of(&bus).map(|b| b.1).unwrap_or(9);
        seen.insert((Slot { bus_order: order, controller: c, unit: u }, prefix.to_owned(), bus));
    }
    seen.into_iter().map(|(s, p, b)| (p, b, s.controller, s.unit)).collect()
}

/// The vSphere name of a file a VMX refers to: relative names live in the VM's folder.
pub fn datastore_path(loc: VmxLocation<'_>, file: &str) -> String {
    if file.starts_with('/') || file.starts_with('[') {
        return file.to_owned();
    }
    if loc.folder.is_empty() {
        format!("[{}] {}", loc.datastore, file)
    } else {
        format!("[{}] {}/{}", loc.datastore, loc.folder.trim_end_matches('/'), file)
    }
}

/// vSphere's guest id for a VMX `guestOS` value (`rhel8-64` → `rhel8_64Guest`,
/// `windows2019srv-64` → `windows2019srv_64Guest`).
pub fn guest_id_from_vmx(guest_os: &str) -> String {
    let g = guest_os.trim().to_ascii_lowercase();
    if g.is_empty() {
        return String::new();
    }
    let special = match g.as_str() {
        "other" => Some("otherGuest"),
        "other-64" => Some("otherGuest64"),
        "otherlinux" | "other-linux" => Some("otherLinuxGuest"),
        "otherlinux-64" | "other-linux-64" => Some("otherLinux64Guest"),
        "other26xlinux" => Some("other26xLinuxGuest"),
        "other26xlinux-64" => Some("other26xLinux64Guest"),
        "other3xlinux-64" => Some("other3xLinux64Guest"),
        "other4xlinux-64" => Some("other4xLinux64Guest"),
        "other5xlinux-64" => Some("other5xLinux64Guest"),
        "winnetstandard" => Some("winNetStandardGuest"),
        "winnetenterprise" => Some("winNetEnterpriseGuest"),
        "winxppro" => Some("winXPProGuest"),
        "windows7" => Some("windows7Guest"),
        "windows7-64" => Some("windows7_64Guest"),
        "windows9-64" => Some("windows9_64Guest"),
        "windows2019srv-64" => Some("windows2019srv_64Guest"),
        "windows2019srvnext-64" => Some("windows2019srvNext_64Guest"),
        "windows2022srvnext-64" => Some("windows2022srvNext_64Guest"),
        "darwin-64" => Some("darwin64Guest"),
        _ => None,
    };
    if let Some(s) = special {
        return s.to_owned();
    }
    format!("{}Guest", g.replace('-', "_"))
}

/// A readable name for common guest ids, since a VMX carries only the short id.
fn guest_full_name(vmx: &Vmx, guest_os: &str) -> String {
    if let Some(d) = vmx.get("guestOS.detailed.data").or_else(|| vmx.get("guestInfo.detailed.data")) {
        if let Some(pretty) = d.split('\'').skip_while(|p| !p.ends_with("prettyName=")).nth(1) {
            return pretty.to_owned();
        }
    }
    let g = guest_os.to_ascii_lowercase();
    let bits = if g.ends_with("-64") { " (64-bit)" } else { "" };
    let base = g.trim_end_matches("-64");
    let name = if let Some(v) = base.strip_prefix("rhel") {
        format!("Red Hat Enterprise Linux {v}")
    } else if let Some(v) = base.strip_prefix("centos") {
        format!("CentOS {}", if v.is_empty() { "4/5 or later" } else { v })
    } else if let Some(v) = base.strip_prefix("windows").and_then(|v| v.strip_suffix("srv")) {
        format!("Microsoft Windows Server {v}")
    } else if let Some(v) = base.strip_prefix("windows").and_then(|v| v.strip_suffix("srvnext")) {
        format!("Microsoft Windows Server {}", v.parse::<u32>().map(|n| (n + 3).to_string()).unwrap_or_default())
    } else if let Some(v) = base.strip_prefix("ubuntu") {
        format!("Ubuntu Linux{}", if v.is_empty() { String::new() } else { format!(" {v}") })
    } else if let Some(v) = base.strip_prefix("debian") {
        format!("Debian GNU/Linux {v}")
    } else if let Some(v) = base.strip_prefix("sles") {
        format!("SUSE Linux Enterprise {v}")
    } else {
        return String::new();
    };
    format!("{name}{bits}")
}

/// `42 1e 5d 7b 13 57 9c 4a-8b 2d 7c 1c 6e 3b 2d 11` → `421e5d7b-1357-9c4a-8b2d-7c1c6e3b2d11`, the
/// form vSphere reports as `config.uuid`; anything else is returned trimmed.
pub fn normalize_uuid(raw: &str) -> String {
    let hex: String = raw.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase();
    let only_sep = raw.chars().all(|c| c.is_ascii_hexdigit() || c == ' ' || c == '-');
    if hex.len() != 32 || !only_sep {
        return raw.trim().to_owned();
    }
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn nic_model(dev: Option<&str>) -> NicModel {
    match dev.map(|d| d.to_ascii_lowercase()) {
        None => NicModel::Other("vlance".into()),
        Some(d) if d == "vmxnet3" => NicModel::Vmxnet3,
        Some(d) if d == "e1000" => NicModel::E1000,
        Some(d) if d == "e1000e" => NicModel::E1000e,
        Some(d) => NicModel::Other(d),
    }
}

/// `00:50:56:AA:BB:CC` / `00-50-56-aa-bb-cc` → `00:50:56:aa:bb:cc`.
fn normalize_mac(mac: &str) -> String {
    mac.trim().replace('-', ":").to_ascii_lowercase()
}

/// The network a NIC is attached to, from the portgroup name or, for distributed switches, the
/// portgroup key (a VMX does not carry the distributed portgroup's name).
pub fn nic_network(vmx: &Vmx, prefix: &str) -> Option<String> {
    let k = |s: &str| vmx.get(&format!("{prefix}.{s}")).map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    k("networkName")
        .or_else(|| k("dvs.portgroupName"))
        .or_else(|| k("dvs.portgroupId"))
        .or_else(|| k("opaqueNetwork.id"))
        .or_else(|| match k("connectionType").as_deref() {
            Some("custom") => k("vnet"),
            Some(other) => Some(other.to_owned()),
            None => None,
        })
}

/// Whether a NIC's network comes from a distributed switch port group.
pub fn nic_is_distributed(vmx: &Vmx, prefix: &str) -> bool {
    vmx.get(&format!("{prefix}.networkName")).is_none()
        && (vmx.get(&format!("{prefix}.dvs.portgroupId")).is_some()
            || vmx.get(&format!("{prefix}.dvs.portgroupName")).is_some())
}

/// Indices `N` of `ethernetN` devices that are present, in order.
pub fn ethernet_indices(vmx: &Vmx) -> Vec<u32> {
    let mut idx = BTreeSet::new();
    for (k, _) in vmx.iter() {
        if let Some(rest) = k.strip_prefix("ethernet") {
            if let Some((n, _)) = rest.split_once('.') {
                if let Ok(n) = n.parse::<u32>() {
                    if n < 100 {
                        idx.insert(n);
                    }
                }
            }
        }
    }
    idx.into_iter().filter(|n| vmx.present(&format!("ethernet{n}"))).collect()
}

fn is_cdrom(device_type: &str, file: &str) -> bool {
    let d = device_type.to_ascii_lowercase();
    d.contains("cdrom") || (d.is_empty() && file.to_ascii_lowercase().ends_with(".iso"))
}

/// A disk or CD-ROM slot the VMX configures: what [`vmx_to_vm`] walks, exposed so a source can
/// find the disk files to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmxDevice {
    /// `scsi0:1`.
    pub prefix: String,
    /// Bus.
    pub bus: DiskBus,
    /// Controller number.
    pub controller: u32,
    /// Unit number.
    pub unit: u32,
    /// A CD-ROM (else a disk).
    pub cdrom: bool,
    /// `fileName` as written in the VMX.
    pub file_name: String,
    /// `deviceType` as written (may be empty).
    pub device_type: String,
}

/// Present disk and CD-ROM devices, in bus/controller/unit order.
pub fn vmx_devices(vmx: &Vmx) -> Vec<VmxDevice> {
    let mut out = Vec::new();
    for (prefix, bus_name, controller, unit) in device_prefixes(vmx) {
        if !vmx.present(&prefix) {
            continue;
        }
        // A device on a controller that is explicitly absent is not attached.
        if vmx.get_bool(&format!("{bus_name}{controller}.present")) == Some(false) {
            continue;
        }
        let Some((bus, ..)) = bus_of(&bus_name) else { continue };
        let file_name = vmx.get(&format!("{prefix}.fileName")).unwrap_or("").to_owned();
        let device_type = vmx.get(&format!("{prefix}.deviceType")).unwrap_or("").to_owned();
        let cdrom = is_cdrom(&device_type, &file_name);
        out.push(VmxDevice { prefix, bus, controller, unit, cdrom, file_name, device_type });
    }
    out
}

fn device_key(dev: &VmxDevice) -> i32 {
    let (base, per) = match dev.bus {
        DiskBus::Scsi => (2000, 16),
        DiskBus::Sata => (16000, 30),
        DiskBus::Nvme => (31000, 64),
        DiskBus::Ide => (3000, 2),
    };
    base + (dev.controller as i32) * per + dev.unit as i32
}

/// Whether a disk file name names an RDM mapping file (`-rdm.vmdk`, `-rdmp.vmdk`).
pub fn is_rdm_file_name(file: &str) -> bool {
    let f = file.to_ascii_lowercase();
    f.ends_with("-rdm.vmdk") || f.ends_with("-rdmp.vmdk")
}

/// Map a parsed VMX into the core [`Vm`].
///
/// `id` becomes the moref (for local sources the VMX path relative to the datastore root);
/// `disk_info` is asked per disk `fileName` (as written in the VMX) for what the VMDK knows —
/// return `None` when the file is missing (capacity then stays 0, which validation reports).
/// Power state is `PoweredOff`, tools `Unknown` and snapshots empty: the caller knows better
/// (lock files, the `.vmsd` file, see [`vmsd_snapshots`]).
pub fn vmx_to_vm(vmx: &Vmx, id: &str, loc: VmxLocation<'_>, disk_info: &dyn Fn(&str) -> Option<DiskFileInfo>) -> Vm {
    let guest_os = vmx.get("guestOS").unwrap_or("").to_owned();
    let vcpus = vmx.get_u64("numvcpus").unwrap_or(1).clamp(1, 4096) as u32;
    let cores = vmx.get_u64("cpuid.coresPerSocket").unwrap_or(1).clamp(1, 4096) as u32;
    let (cpu_sockets, cores_per_socket) =
        if (vcpus / cores) * cores == vcpus { (vcpus / cores, cores) } else { (vcpus, 1) };
    let firmware =
        if vmx.get("firmware").is_some_and(|f| f.eq_ignore_ascii_case("efi")) { Firmware::Efi } else { Firmware::Bios };
    let name = vmx
        .get("displayName")
        .map(str::to_owned)
        .unwrap_or_else(|| id.rsplit('/').next().unwrap_or(id).trim_end_matches(".vmx").to_owned());

    let mut disks = Vec::new();
    let mut cdroms = Vec::new();
    for dev in vmx_devices(vmx) {
        let key = device_key(&dev);
        let g = |s: &str| vmx.get(&format!("{}.{s}", dev.prefix));
        if dev.cdrom {
            let start_connected = vmx.get_bool(&format!("{}.startConnected", dev.prefix)).unwrap_or(true);
            let is_image = dev.device_type.eq_ignore_ascii_case("cdrom-image")
                || (dev.device_type.is_empty() && !dev.file_name.is_empty());
            let iso = (is_image && !dev.file_name.is_empty()).then(|| datastore_path(loc, &dev.file_name));
            cdroms.push(Cdrom { key, connected: start_connected, start_connected, iso });
            continue;
        }
        let mode = match g("mode").map(str::to_ascii_lowercase).as_deref() {
            None | Some("persistent") | Some("") => DiskMode::Persistent,
            Some("independent-persistent") => DiskMode::IndependentPersistent,
            Some("independent-nonpersistent") => DiskMode::IndependentNonpersistent,
            Some(_) => DiskMode::Other,
        };
        let shared = g("sharing").is_some_and(|s| s.eq_ignore_ascii_case("multi-writer"))
            || vmx.get_bool(&format!("{}.multiwriter", dev.prefix)).unwrap_or(false);
        let info = disk_info(&dev.file_name);
        let dt = dev.device_type.to_ascii_lowercase();
        let rdm = info.is_some_and(|i| i.rdm)
            || is_rdm_file_name(&dev.file_name)
            || dt == "rawdisk"
            || dt == "scsi-passthru"
            || dt == "plaindisk";
        let label = format!("Hard disk {}", disks.len() + 1);
        disks.push(Disk {
            key,
            label,
            capacity_bytes: info.map(|i| i.capacity_bytes.min(i64::MAX as u64) as i64).unwrap_or(0),
            datastore: (!dev.file_name.starts_with('/')).then(|| loc.datastore.to_owned()),
            file: datastore_path(loc, &dev.file_name),
            bus: dev.bus,
            unit: Some(format!("{}:{}", dev.controller, dev.unit)),
            mode,
            shared,
            rdm,
            thin: info.is_some_and(|i| i.thin),
            change_id: None,
        });
    }

    let mut nics = Vec::new();
    for n in ethernet_indices(vmx) {
        let p = format!("ethernet{n}");
        let mac = vmx
            .get(&format!("{p}.address"))
            .filter(|_| vmx.get(&format!("{p}.addressType")).is_some_and(|t| t.eq_ignore_ascii_case("static")))
            .or_else(|| vmx.get(&format!("{p}.generatedAddress")))
            .or_else(|| vmx.get(&format!("{p}.address")))
            .map(normalize_mac)
            .unwrap_or_default();
        nics.push(Nic {
            key: 4000 + n as i32,
            mac,
            network: nic_network(vmx, &p),
            model: nic_model(vmx.get(&format!("{p}.virtualDev"))),
            ip_addresses: Vec::new(),
            connected: vmx.get_bool(&format!("{p}.startConnected")).unwrap_or(true),
        });
    }

    Vm {
        id: VmId {
            source_ref: id.to_owned(),
            bios_uuid: vmx.get("uuid.bios").map(normalize_uuid).filter(|s| !s.is_empty()),
            instance_uuid: vmx.get("vc.uuid").map(normalize_uuid).filter(|s| !s.is_empty()),
        },
        name,
        power_state: PowerState::PoweredOff,
        guest_id: guest_id_from_vmx(&guest_os),
        guest_full_name: guest_full_name(vmx, &guest_os),
        os_id: crate::osinfo::os_id_from_guest_id(&guest_id_from_vmx(&guest_os)).unwrap_or_default(),
        firmware,
        secure_boot: vmx.get_bool("uefi.secureBoot.enabled").unwrap_or(false),
        cpu_sockets,
        cores_per_socket,
        memory_mib: vmx.get_u64("memsize").unwrap_or(0),
        disks,
        nics,
        cdroms,
        tpm: vmx.present("vtpm"),
        passthrough_devices: passthrough_devices(vmx),
        cbt_enabled: vmx.get_bool("ctkEnabled").unwrap_or(false),
        snapshots: Vec::new(),
        tools_status: ToolsStatus::Unknown,
        fault_tolerance: vmx.get("ft.primary0").is_some() || vmx.get_bool("ft.enabled").unwrap_or(false),
        drs_rules: Vec::new(),
        host: None,
        cluster: None,
        template: vmx.get_bool("templateVM").unwrap_or(false),
    }
}

/// Per-disk CBT flags (`scsi0:0.ctkEnabled`), by `fileName`: a disk only has changed-block
/// tracking when both the VM and the disk say so.
pub fn disk_ctk_enabled(vmx: &Vmx, prefix: &str) -> bool {
    vmx.get_bool("ctkEnabled").unwrap_or(false) && vmx.get_bool(&format!("{prefix}.ctkEnabled")).unwrap_or(false)
}

/// PCI passthrough, vGPU and passed-through USB devices, as labels for validation.
fn passthrough_devices(vmx: &Vmx) -> Vec<String> {
    let mut out = Vec::new();
    let mut pci = BTreeSet::new();
    let mut usb = BTreeSet::new();
    for (k, _) in vmx.iter() {
        if let Some(rest) = k.strip_prefix("pcipassthru") {
            if let Some(n) = rest.split_once('.').and_then(|(n, _)| n.parse::<u32>().ok()) {
                pci.insert(n);
            }
        } else if let Some(rest) = k.strip_prefix("usb:") {
            if let Some(n) = rest.split_once('.').and_then(|(n, _)| n.parse::<u32>().ok()) {
                usb.insert(n);
            }
        } else if k.starts_with("usb.autoconnect.device") {
            out.push(format!("USB device {}", vmx.get(k).unwrap_or_default()));
        }
    }
    for n in pci {
        let p = format!("pciPassthru{n}");
        if !vmx.present(&p) {
            continue;
        }
        if let Some(profile) = vmx.get(&format!("{p}.vgpu")) {
            out.push(format!("vGPU {profile}"));
        } else {
            let id = vmx.get(&format!("{p}.id")).or_else(|| vmx.get(&format!("{p}.deviceId"))).unwrap_or("");
            out.push(if id.is_empty() { format!("PCI device {n}") } else { format!("PCI device {n} ({id})") });
        }
    }
    for n in usb {
        let p = format!("usb:{n}");
        if !vmx.present(&p) {
            continue;
        }
        let kind = vmx.get(&format!("{p}.deviceType")).unwrap_or("").to_ascii_lowercase();
        // The virtual mouse/keyboard and hubs VMware adds by itself are not passthrough.
        if kind == "hid" || kind == "hub" || kind == "mouse" || kind == "keyboard" {
            continue;
        }
        out.push(format!("USB device {n}{}", if kind.is_empty() { String::new() } else { format!(" ({kind})") }));
    }
    out
}

/// Snapshots listed in a parsed `.vmsd` file (`snapshotN.uid`, `snapshotN.displayName`).
pub fn vmsd_snapshots(vmsd: &Vmx) -> Vec<Snapshot> {
    let mut idx = BTreeSet::new();
    for (k, _) in vmsd.iter() {
        if let Some(rest) = k.strip_prefix("snapshot") {
            if let Some(n) = rest.split_once('.').and_then(|(n, _)| n.parse::<u32>().ok()) {
                idx.insert(n);
            }
        }
    }
    idx.into_iter()
        .filter_map(|n| {
            let uid = vmsd.get(&format!("snapshot{n}.uid"))?;
            let name = vmsd.get(&format!("snapshot{n}.displayName")).unwrap_or("").to_owned();
            Some(Snapshot { id: uid.to_owned(), name })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quotes_escapes_comments_and_case() {
        let v = parse_vmx(
            ".encoding = \"UTF-8\"\n# comment\n\nDisplayName = \"web |22prod|22 |7C 1\"\nbare = 42\n\
             displayname = \"last wins\" # trailing comment\nannotation = \"a|0Ab\"\nodd = \"50|%\"\n",
        )
        .expect("valid vmx");
        assert_eq!(v.get("displayName"), Some("last wins"));
        assert_eq!(v.get("BARE"), Some("42"));
        assert_eq!(v.get("annotation"), Some("a\nb"));
        assert_eq!(v.get("odd"), Some("50|%"));
        let v = parse_vmx("x = \"web |22prod|22 |7C 1\"").expect("valid");
        assert_eq!(v.get("x"), Some("web \"prod\" | 1"));
    }

    #[test]
    fn rejects_bad_lines_with_line_numbers() {
        assert_eq!(parse_vmx("a = \"1\"\nnot a pair\n"), Err(VmxError::MissingEquals { line: 2 }));
        assert_eq!(parse_vmx("= \"1\""), Err(VmxError::EmptyKey { line: 1 }));
        assert_eq!(parse_vmx("a = \"1"), Err(VmxError::Unterminated { line: 1 }));
        assert_eq!(parse_vmx("a = \"1\" x"), Err(VmxError::TrailingText { line: 1 }));
        assert_eq!(parse_vmx("a = \"|FF\""), Err(VmxError::BadEncoding { line: 1 }));
        let e: Error = VmxError::EmptyKey { line: 3 }.into();
        assert_eq!(e.code(), ErrorCode::SourceDescriptorParse);
    }

    #[test]
    fn uuid_and_guest_ids() {
        assert_eq!(
            normalize_uuid("42 1e 5d 7b 13 57 9c 4a-8b 2d 7c 1c 6e 3b 2d 11"),
            "421e5d7b-1357-9c4a-8b2d-7c1c6e3b2d11"
        );
        assert_eq!(guest_id_from_vmx("rhel8-64"), "rhel8_64Guest");
        assert_eq!(guest_id_from_vmx("windows2019srv-64"), "windows2019srv_64Guest");
        assert_eq!(guest_id_from_vmx("otherlinux-64"), "otherLinux64Guest");
    }
}
