//! Guest conversion: what makes a copied guest boot on a KVM target.
//!
//! A byte-for-byte copy keeps the drivers of the hypervisor it came from: a RHEL-family guest whose initramfs
//! was built host-only (PVSCSI / LSI drivers only) cannot find its root disk on virtio, and a
//! Windows guest has no virtio drivers at all. Like MTV/Forklift, vmigrate runs virt-v2v on the
//! copied disks, in place (`virt-v2v-in-place`, after the last copy), which installs virtio
//! drivers, rebuilds the initramfs, fixes fstab / bootloader device names, removes the old guest tools,
//! installs the QEMU guest agent and carries static IPs over.
//!
//! This module is provider-neutral: it builds the input description of the source VM (libvirt
//! domain XML over the copied images), virt-v2v's command line and its clean environment,
//! parses what virt-v2v reports (the inspected OS and the guest capabilities it converted to),
//! and decides the target VM's disk bus, NIC model and guest agent. Targets run it where the
//! disks are: the output folder runs [`run_in_place`] on the local images, the cluster runs the
//! same command in a Job that mounts the VM's volumes.
//!
//! virt-v2v 2.2 (Debian bookworm) has no output-metadata file for in-place conversion, so the
//! outcome is read from its verbose report: the `i_*` lines of the inspection and the `gcaps_*`
//! lines of the guest capabilities it converted the guest to.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorCode, Result};
use crate::model::{DiskBus, Firmware, NicModel, Vm};
use crate::plan::{Plan, TargetDiskBus};

/// The program that converts a guest in place.
pub const IN_PLACE_PROGRAM: &str = "virt-v2v-in-place";

/// The program that inspects a guest before anything moves: libguestfs inspection
/// (`virt-inspector`, Debian package `guestfs-tools`), read-only. `virt-v2v-inspector` would
/// run virt-v2v's whole conversion on overlays to estimate its output (minutes more under TCG);
/// inspection alone is what validation needs.
pub const INSPECTOR_PROGRAM: &str = "virt-inspector";

/// What the plan asks of one VM's conversion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversionRequest {
    /// Pass every NIC's MAC and IPs to virt-v2v (`--mac MAC:ip:IP`).
    pub preserve_static_ips: bool,
    /// virt-v2v `--root` (`first` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<String>,
    /// Path of the virtio-win ISO (Windows drivers and guest agent), given to virt-v2v as
    /// `VIRTIO_WIN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_win: Option<String>,
}

impl ConversionRequest {
    /// The request for VM `idx` of `plan`.
    pub fn for_vm(plan: &Plan, idx: usize) -> ConversionRequest {
        ConversionRequest {
            preserve_static_ips: plan.spec.preserve_static_ips,
            root_disk: plan.spec.vms.get(idx).and_then(|v| v.root_disk.clone()),
            virtio_win: plan.spec.virtio_win.clone(),
        }
    }
}

/// The guest operating system as libguestfs inspection found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectedOs {
    /// `linux`, `windows`, ...
    pub kind: String,
    /// `rhel`, `debian`, `windows`, ...
    #[serde(default)]
    pub distro: String,
    /// libosinfo short id: `debian12`, `rhel8.6`, `win2k19`.
    #[serde(default)]
    pub osinfo: String,
    /// `x86_64`, ...
    #[serde(default)]
    pub arch: String,
    /// Product name, e.g. `Debian GNU/Linux 12 (bookworm)`.
    #[serde(default)]
    pub product_name: String,
    /// Major version.
    #[serde(default)]
    pub major: u32,
    /// Minor version.
    #[serde(default)]
    pub minor: u32,
    /// Root file system converted (`/dev/sda1`).
    #[serde(default)]
    pub root: String,
}

impl InspectedOs {
    /// Whether this is a Windows guest.
    pub fn is_windows(&self) -> bool {
        self.kind == "windows"
    }
}

/// The outcome of a VM's conversion phase, kept in the status and given to the target VM
/// builder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestConversion {
    /// The guest was converted (false: copied as it was).
    pub converted: bool,
    /// The inspected guest OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<InspectedOs>,
    /// Disk bus the converted guest boots from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bus: Option<TargetDiskBus>,
    /// NIC model its drivers support (`virtio`, `e1000e`, `e1000`, `rtl8139`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_model: Option<String>,
    /// The QEMU guest agent was installed (or will install itself at first boot).
    #[serde(default)]
    pub guest_agent: bool,
    /// What the user should know (why not converted, why no virtio), for the summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Seconds the conversion took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// What the converter reported, when it ran away from this process (the cluster's
    /// conversion Job): its report lines (inspection, guest capabilities, virt-v2v's messages;
    /// at most 4000 bytes), kept because the Job and its pod are deleted once read. A local
    /// conversion keeps its whole log in a file instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

impl GuestConversion {
    /// No conversion, for `reason` (the summary says it).
    pub fn skipped(reason: impl Into<String>) -> GuestConversion {
        GuestConversion { notes: vec![reason.into()], ..Default::default() }
    }

    /// One line for summaries: what the guest became.
    pub fn summary(&self) -> String {
        if !self.converted {
            return format!("not converted: {}", self.notes.join("; "));
        }
        let os = self.os.as_ref().map(|o| if o.osinfo.is_empty() { o.distro.clone() } else { o.osinfo.clone() });
        let bus = match self.disk_bus {
            Some(TargetDiskBus::Virtio) => "virtio",
            Some(TargetDiskBus::Scsi) => "scsi",
            Some(TargetDiskBus::Sata) => "sata",
            None => "?",
        };
        let mut s = format!(
            "converted {}: disks {bus}, NICs {}, guest agent {}",
            os.unwrap_or_else(|| "guest".into()),
            self.nic_model.as_deref().unwrap_or("?"),
            if self.guest_agent { "yes" } else { "no" }
        );
        for n in &self.notes {
            let _ = write!(s, "; {n}");
        }
        s
    }
}

/// One copied disk image, in source disk order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImage {
    /// Path of the image (file or block device).
    pub path: PathBuf,
    /// `raw` or `qcow2`.
    pub format: String,
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The libvirt domain XML virt-v2v reads the source VM from (`-i libvirtxml`): name, memory,
/// vCPUs, firmware, the copied images as disks on the source's buses (in source order), and the
/// NICs with their MACs and models. Device names follow libvirt's per-bus lettering.
pub fn domain_xml(vm: &Vm, disks: &[DiskImage]) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='kvm'>");
    let _ = writeln!(x, "  <name>{}</name>", xml_escape(&vm.name));
    if let Some(u) = &vm.id.bios_uuid {
        if u.len() == 36 {
            let _ = writeln!(x, "  <uuid>{}</uuid>", xml_escape(u));
        }
    }
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", vm.memory_mib.max(256));
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", vm.vcpus());
    match vm.firmware {
        Firmware::Efi => {
            let _ = writeln!(x, "  <os firmware='efi'>");
            let _ = writeln!(x, "    <type arch='x86_64'>hvm</type>");
            let _ = writeln!(x, "    <loader type='pflash' readonly='yes'/>");
        }
        Firmware::Bios => {
            let _ = writeln!(x, "  <os>");
            let _ = writeln!(x, "    <type arch='x86_64'>hvm</type>");
            let _ = writeln!(x, "    <loader type='rom'/>");
        }
    }
    let _ = writeln!(x, "    <boot dev='hd'/>");
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features><acpi/><apic/></features>");
    let _ = writeln!(x, "  <devices>");
    let mut per_bus: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, img) in disks.iter().enumerate() {
        let bus = match vm.disks.get(i).map(|d| d.bus) {
            Some(DiskBus::Ide) => "ide",
            Some(DiskBus::Sata) => "sata",
            // libvirt's NVMe disks need a newer schema than virt-v2v reads; SCSI is the
            // nearest controller it knows and conversion does not depend on it.
            Some(DiskBus::Scsi) | Some(DiskBus::Nvme) | None => "scsi",
        };
        let n = per_bus.entry(bus).or_default();
        let prefix = if bus == "ide" { "hd" } else { "sd" };
        let dev = format!("{prefix}{}", drive_letters(*n));
        *n += 1;
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", xml_escape(&img.format));
        let _ = writeln!(x, "      <source file='{}'/>", xml_escape(&img.path.to_string_lossy()));
        let _ = writeln!(x, "      <target dev='{dev}' bus='{bus}'/>");
        let _ = writeln!(x, "    </disk>");
    }
    for nic in &vm.nics {
        let model = match &nic.model {
            NicModel::Vmxnet3 => "vmxnet3",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Other(_) => "vmxnet3",
        };
        let _ = writeln!(x, "    <interface type='network'>");
        if !nic.mac.is_empty() {
            let _ = writeln!(x, "      <mac address='{}'/>", xml_escape(&nic.mac.to_ascii_lowercase()));
        }
        let net = nic.network.as_deref().unwrap_or("default");
        let _ = writeln!(x, "      <source network='{}'/>", xml_escape(net));
        let _ = writeln!(x, "      <model type='{model}'/>");
        let _ = writeln!(x, "    </interface>");
    }
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

/// `a`..`z`, `aa`.. as libvirt names drives.
fn drive_letters(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ascii letters")
}

/// The `--mac MAC:ip:ADDR` arguments for every NIC's reported IPs (link-local and loopback
/// addresses are not configuration, and are left out).
pub fn static_ip_args(vm: &Vm) -> Vec<String> {
    let mut out = Vec::new();
    for nic in &vm.nics {
        if nic.mac.is_empty() {
            continue;
        }
        for ip in &nic.ip_addresses {
            let keep = match ip {
                std::net::IpAddr::V4(a) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
                std::net::IpAddr::V6(a) => {
                    !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
                }
            };
            if keep {
                out.push(format!("{}:ip:{ip}", nic.mac.to_ascii_lowercase()));
            }
        }
    }
    out
}

/// virt-v2v-in-place's arguments (after the program name) for a domain XML file.
pub fn in_place_args(domain_xml: &Path, vm: &Vm, req: &ConversionRequest) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-v".into(), "-i".into(), "libvirtxml".into()];
    a.push("--root".into());
    a.push(req.root_disk.clone().unwrap_or_else(|| "first".into()).into());
    if req.preserve_static_ips {
        for m in static_ip_args(vm) {
            a.push("--mac".into());
            a.push(m.into());
        }
    }
    a.push(domain_xml.as_os_str().to_owned());
    a
}

/// Whether KVM can run a stock kernel here: `/dev/kvm` opens, and it is not kvm-pvm (which runs
/// only kernels built for it, so a stock appliance kernel would hang).
pub fn kvm_usable() -> bool {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return false;
    }
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// The whole environment of a virt-v2v child: nothing inherited but the variables named here
/// (no credentials can leak into it or its logs). libguestfs runs its appliance directly
/// (`LIBGUESTFS_BACKEND=direct`, no libvirtd needed) and under TCG when KVM cannot run it; the
/// caller's own `LIBGUESTFS_*` tuning and `TMPDIR` are kept.
pub fn child_env(home: &Path, kvm: bool, virtio_win: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()),
        ("HOME".to_string(), home.to_string_lossy().into_owned()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("LIBGUESTFS_BACKEND".to_string(), "direct".to_string()),
    ];
    for (k, v) in std::env::vars() {
        let pass = matches!(
            k.as_str(),
            "TMPDIR" | "LIBGUESTFS_PATH" | "LIBGUESTFS_CACHEDIR" | "LIBGUESTFS_MEMSIZE" | "LIBGUESTFS_HV"
        ) || (k == "LIBGUESTFS_BACKEND_SETTINGS");
        if pass {
            env.push((k, v));
        }
    }
    if !kvm && !env.iter().any(|(k, _)| k == "LIBGUESTFS_BACKEND_SETTINGS") {
        env.push(("LIBGUESTFS_BACKEND_SETTINGS".to_string(), "force_tcg".to_string()));
    }
    if let Some(v) = virtio_win {
        env.push(("VIRTIO_WIN".to_string(), v.to_string()));
    }
    env
}

/// What virt-v2v reported in its verbose output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2vReport {
    /// The inspected OS (`i_*` lines).
    pub os: Option<InspectedOs>,
    /// `gcaps_block_bus`: `virtio-blk`, `virtio-scsi` or `ide`.
    pub block_bus: Option<String>,
    /// `gcaps_net_bus`: `virtio-net`, `e1000` or `rtl8139`.
    pub net_bus: Option<String>,
    /// virt-v2v said the QEMU guest agent will not be installed.
    pub no_guest_agent: bool,
    /// Warnings virt-v2v printed (`virt-v2v...: warning: ...`).
    pub warnings: Vec<String>,
}

/// Parse virt-v2v's verbose output (stdout and stderr together).
pub fn parse_report(log: &str) -> V2vReport {
    let mut r = V2vReport::default();
    let mut os = InspectedOs::default();
    let mut saw_os = false;
    for line in log.lines() {
        let line = line.trim_end();
        if let Some((k, v)) = line.split_once(" = ") {
            let v = v.trim();
            match k.trim() {
                "i_root" => {
                    saw_os = true;
                    os.root = v.to_string();
                }
                "i_type" => os.kind = v.to_string(),
                "i_distro" => os.distro = v.to_string(),
                "i_osinfo" => os.osinfo = v.to_string(),
                "i_arch" => os.arch = v.to_string(),
                "i_major_version" => os.major = v.parse().unwrap_or(0),
                "i_minor_version" => os.minor = v.parse().unwrap_or(0),
                "i_product_name" => os.product_name = v.to_string(),
                "gcaps_block_bus" => r.block_bus = Some(v.to_string()),
                "gcaps_net_bus" => r.net_bus = Some(v.to_string()),
                _ => {}
            }
        }
        if line.contains("QEMU Guest Agent will not be installed") || line.contains("guest agent will not be installed")
        {
            r.no_guest_agent = true;
        }
        if let Some(pos) = line.find(": warning: ") {
            if line[..pos].starts_with("virt-v2v") {
                r.warnings.push(line[pos + 11..].trim().to_string());
            }
        }
    }
    if saw_os {
        r.os = Some(os);
    }
    r
}

/// Decide the target VM from virt-v2v's report.
///
/// virt-v2v's block bus maps to the target's (`virtio-blk` → virtio, `virtio-scsi` → scsi, `ide`
/// → sata: the targets have no IDE, and every guest virt-v2v leaves on IDE has an AHCI driver);
/// its NIC model to the target's, with e1000e for Windows (the inbox driver since Windows 8 / 2012).
/// A Windows guest left without virtio drivers gets a note saying why.
///
/// # Errors
/// [`ErrorCode::ConversionFailed`] when the report has no guest capabilities (virt-v2v did not
/// get to convert the guest).
pub fn decide(report: &V2vReport, req: &ConversionRequest) -> Result<GuestConversion> {
    let Some(block) = &report.block_bus else {
        return Err(Error::new(ErrorCode::ConversionFailed, "virt-v2v reported no converted guest capabilities"));
    };
    let windows = report.os.as_ref().is_some_and(InspectedOs::is_windows);
    let disk_bus = match block.as_str() {
        "virtio-blk" => TargetDiskBus::Virtio,
        "virtio-scsi" => TargetDiskBus::Scsi,
        _ => TargetDiskBus::Sata,
    };
    let nic = match report.net_bus.as_deref() {
        Some("virtio-net") => "virtio",
        Some("rtl8139") if !windows => "rtl8139",
        Some("e1000") if !windows => "e1000",
        _ => "e1000e",
    };
    let mut notes = Vec::new();
    if windows && disk_bus == TargetDiskBus::Sata {
        notes.push(if req.virtio_win.is_none() {
            "Windows without spec.virtioWin: no virtio drivers installed, so SATA disks and e1000e NICs (slower); \
             give the virtio-win ISO to get virtio and the guest agent"
                .to_string()
        } else {
            "the virtio-win ISO has no drivers for this Windows version: SATA disks and e1000e NICs".to_string()
        });
    }
    let guest_agent =
        if windows { disk_bus != TargetDiskBus::Sata && !report.no_guest_agent } else { !report.no_guest_agent };
    Ok(GuestConversion {
        converted: true,
        os: report.os.clone(),
        disk_bus: Some(disk_bus),
        nic_model: Some(nic.to_string()),
        guest_agent,
        notes,
        seconds: None,
        report: None,
    })
}

/// The text of the first `<tag>...</tag>` inside `xml`, unescaped.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let raw = &xml[start..end];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .trim()
            .to_string(),
    )
}

/// Parse inspector output (`virt-inspector`; `virt-v2v-inspector -O` has the same element):
/// its first `<operatingsystem>` (`None` when the document has none: no operating system).
pub fn parse_inspector_xml(xml: &str) -> Option<InspectedOs> {
    let start = xml.find("<operatingsystem>")?;
    let end = xml[start..].find("</operatingsystem>").map_or(xml.len(), |e| start + e);
    let os = &xml[start..end];
    let get = |t: &str| xml_text(os, t).unwrap_or_default();
    Some(InspectedOs {
        kind: get("name"),
        distro: get("distro"),
        osinfo: get("osinfo"),
        arch: get("arch"),
        product_name: get("product_name"),
        major: get("major_version").parse().unwrap_or(0),
        minor: get("minor_version").parse().unwrap_or(0),
        root: get("root"),
    })
}

/// Linux distributions (libguestfs `i_distro`) virt-v2v 2.2 converts: its RHEL, SUSE and Debian
/// families and ALT Linux (virt-v2v(1), "Supported guests").
const CONVERTIBLE_LINUX: &[&str] = &[
    "rhel",
    "centos",
    "circle",
    "scientificlinux",
    "redhat-based",
    "oraclelinux",
    "rocky",
    "almalinux",
    "fedora",
    "sles",
    "suse-based",
    "opensuse",
    "altlinux",
    "debian",
    "ubuntu",
    "linuxmint",
    "kalilinux",
];

/// Why virt-v2v cannot convert this guest, if it cannot: it converts Linux of the families it
/// knows and Windows; anything else (BSD, other Linux distributions, an unknown OS) fails in
/// the conversion phase, after the copy, so it is said before anything moves.
pub fn unsupported_os(os: &InspectedOs) -> Option<String> {
    let id = if os.osinfo.is_empty() { format!("{}/{}", os.kind, os.distro) } else { os.osinfo.clone() };
    match os.kind.as_str() {
        "windows" => None,
        "linux" if CONVERTIBLE_LINUX.contains(&os.distro.as_str()) => None,
        "linux" => Some(format!("virt-v2v cannot convert the Linux distribution {:?} ({id})", os.distro)),
        other => Some(format!("virt-v2v cannot convert {other:?} guests ({id})")),
    }
}

/// virt-inspector's arguments (after the program name) for `disks`: read-only, no
/// application list or icon (only the operating system is wanted).
pub fn inspector_args(disks: &[DiskImage]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["--no-applications".into(), "--no-icon".into()];
    for d in disks {
        a.push(format!("--format={}", d.format).into());
        a.push("-a".into());
        a.push(d.path.as_os_str().to_owned());
    }
    a
}

/// What the inspection of a guest found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// The operating system.
    Found(InspectedOs),
    /// virt-v2v found no operating system it knows on the disks (its error lines).
    NoOs(String),
}

/// Inspect a guest with `virt-inspector` on `disks` (opened read-only: the disks are never
/// written). Writes `<work_dir>/<name>.inspection.xml` (its output) and `<name>.inspect.log`.
/// With several operating systems on the disks, the one on `req.root_disk` when given, else
/// the first.
///
/// # Errors
/// [`ErrorCode::ConversionFailed`] when the inspector is missing or fails for another reason
/// than finding no OS; [`ErrorCode::Cancelled`].
pub async fn run_inspector(
    work_dir: &Path,
    name: &str,
    disks: &[DiskImage],
    req: &ConversionRequest,
    cancel: &CancellationToken,
) -> Result<Inspection> {
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(format!("creating {}", work_dir.display()), e))?;
    let out_path = work_dir.join(format!("{name}.inspection.xml"));
    let log_path = work_dir.join(format!("{name}.inspect.log"));
    let out_file =
        std::fs::File::create(&out_path).map_err(|e| Error::io(format!("creating {}", out_path.display()), e))?;
    let log_file =
        std::fs::File::create(&log_path).map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
    let home = work_dir.join(".v2v-home");
    std::fs::create_dir_all(&home).map_err(|e| Error::io(format!("creating {}", home.display()), e))?;
    let mut cmd = tokio::process::Command::new(INSPECTOR_PROGRAM);
    cmd.args(inspector_args(disks))
        .env_clear()
        .envs(child_env(&home, kvm_usable(), None))
        .stdin(std::process::Stdio::null())
        .stdout(out_file)
        .stderr(log_file)
        .kill_on_drop(true);
    tracing::info!(disks = disks.len(), log = %log_path.display(), "inspecting the guest with virt-inspector");
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(
            ErrorCode::ConversionFailed,
            format!("cannot run {INSPECTOR_PROGRAM} (install guestfs-tools, or set spec.skipGuestConversion)"),
        )
        .with_source(e)
    })?;
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| Error::io("waiting for virt-inspector", e))?,
        _ = cancel.cancelled() => {
            let _ = child.kill().await;
            return Err(Error::cancelled());
        }
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let xml = std::fs::read_to_string(&out_path).unwrap_or_default();
    if status.success() {
        let os = match &req.root_disk {
            Some(root) => xml
                .split("<operatingsystem>")
                .skip(1)
                .filter_map(|part| parse_inspector_xml(&format!("<operatingsystem>{part}")))
                .find(|os| &os.root == root),
            None => parse_inspector_xml(&xml),
        };
        return Ok(match os {
            Some(os) => Inspection::Found(os),
            None => Inspection::NoOs(format!("{INSPECTOR_PROGRAM} listed no operating system")),
        });
    }
    // "no operating system could be detected inside this disk image".
    if log.contains("no operating system") {
        return Ok(Inspection::NoOs(tail(&log, 2)));
    }
    Err(Error::new(
        ErrorCode::ConversionFailed,
        format!("{INSPECTOR_PROGRAM} failed ({status}); log {}:\n{}", log_path.display(), tail(&log, 10)),
    ))
}

/// The last `n` lines of a log, for error messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The error lines of a virt-v2v log (`virt-v2v...: error: ...` and what follows), else its tail.
pub fn failure_summary(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    if let Some(i) = lines.iter().position(|l| l.starts_with("virt-v2v") && l.contains(": error: ")) {
        return lines[i..(i + 6).min(lines.len())].join("\n");
    }
    tail(log, 15)
}

/// Run `virt-v2v-in-place` on local images and decide the target VM from what it reports.
///
/// Writes `<work_dir>/<name>.xml` (the input description) and `<name>.v2v.log` (everything
/// virt-v2v printed); the images are changed in place.
///
/// # Errors
/// [`ErrorCode::ConversionFailed`] when virt-v2v is missing, fails (the message carries its
/// error lines; the log file has the rest) or reports nothing usable;
/// [`ErrorCode::Cancelled`] when cancelled (the child is killed).
pub async fn run_in_place(
    work_dir: &Path,
    name: &str,
    vm: &Vm,
    disks: &[DiskImage],
    req: &ConversionRequest,
    cancel: &CancellationToken,
) -> Result<GuestConversion> {
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(format!("creating {}", work_dir.display()), e))?;
    let xml_path = work_dir.join(format!("{name}.xml"));
    let log_path = work_dir.join(format!("{name}.v2v.log"));
    std::fs::write(&xml_path, domain_xml(vm, disks))
        .map_err(|e| Error::io(format!("writing {}", xml_path.display()), e))?;
    let log_file =
        std::fs::File::create(&log_path).map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
    let log_err = log_file.try_clone().map_err(|e| Error::io("duplicating the log file handle", e))?;
    let home = work_dir.join(".v2v-home");
    std::fs::create_dir_all(&home).map_err(|e| Error::io(format!("creating {}", home.display()), e))?;
    let kvm = kvm_usable();
    let mut cmd = tokio::process::Command::new(IN_PLACE_PROGRAM);
    cmd.args(in_place_args(&xml_path, vm, req))
        .env_clear()
        .envs(child_env(&home, kvm, req.virtio_win.as_deref()))
        .stdin(std::process::Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .kill_on_drop(true);
    tracing::info!(vm = %vm.name, kvm, log = %log_path.display(), "converting the guest with virt-v2v-in-place");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(
            ErrorCode::ConversionFailed,
            format!(
                "cannot run {IN_PLACE_PROGRAM} (install virt-v2v, or set spec.skipGuestConversion to copy the guest as it is)"
            ),
        )
        .with_source(e)
    })?;
    let status = tokio::select! {
        s = child.wait() => s.map_err(|e| Error::io("waiting for virt-v2v-in-place", e))?,
        _ = cancel.cancelled() => {
            let _ = child.kill().await;
            return Err(Error::cancelled());
        }
    };
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        return Err(Error::new(
            ErrorCode::ConversionFailed,
            format!(
                "virt-v2v-in-place failed ({status}) after {:.0}s; log {}:\n{}",
                elapsed.as_secs_f64(),
                log_path.display(),
                failure_summary(&log)
            ),
        ));
    }
    let mut out = decide(&parse_report(&log), req)
        .map_err(|e| Error::new(ErrorCode::ConversionFailed, format!("{}; log {}", e.message(), log_path.display())))?;
    out.seconds = Some(round_secs(elapsed));
    tracing::info!(vm = %vm.name, seconds = elapsed.as_secs_f64(), summary = %out.summary(), "guest converted");
    Ok(out)
}

fn round_secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests;
