//! Boot a disk under QEMU with the devices of a generated KubeVirt `VirtualMachine`, and say
//! whether the guest got as far as its marker (see `guests.rs`).
//!
//! [`boot_manifest_vm`] reads a `dir://` output folder: the VirtualMachine's firmware (BIOS →
//! SeaBIOS, EFI → OVMF), disk bus (virtio → virtio-blk-pci, scsi → virtio-scsi-pci + scsi-hd,
//! sata → ahci + ide-hd) and NIC model, and the DataVolume image under `disks/`. [`boot`] takes
//! explicit devices, for controls such as a VMware guest on PVSCSI. Disks are always attached
//! with `snapshot=on`, so a boot never changes the image it proves.
//!
//! The serial console (ttyS0) is captured to a file and watched: the marker ends the run as a
//! success; an initramfs or GRUB failure (`Dropping to a shell`, `Kernel panic`, ...) ends it
//! early as a failure; otherwise the timeout does. KVM is used only when it can run a stock
//! kernel ([`accel`]); this machine's kvm-pvm cannot, so TCG.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::guests::{self, Firmware};

/// The storage controller a disk hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// KubeVirt `virtio`: virtio-blk-pci.
    Virtio,
    /// KubeVirt `scsi`: a virtio-scsi-pci controller.
    Scsi,
    /// KubeVirt `sata`: an AHCI controller.
    Sata,
    /// VMware's paravirtual SCSI (what the source VM had): the control for VMware-only guests.
    Pvscsi,
}

impl DiskBus {
    /// From a KubeVirt `disk.bus` value.
    pub fn from_kubevirt(bus: &str) -> DiskBus {
        match bus {
            "virtio" => DiskBus::Virtio,
            "scsi" => DiskBus::Scsi,
            "sata" => DiskBus::Sata,
            other => panic!("disk bus {other:?} has no QEMU mapping here"),
        }
    }
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation (a Debian boot takes ~30-40 s).
    Tcg,
}

/// One disk to attach.
#[derive(Debug, Clone)]
pub struct Drive {
    /// The image.
    pub path: PathBuf,
    /// `raw`, `qcow2` or `vmdk`.
    pub format: String,
}

impl Drive {
    /// An image whose format is named by its extension (`.qcow2`, `.vmdk`, anything else raw).
    pub fn new(path: impl Into<PathBuf>) -> Drive {
        let path = path.into();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("qcow2") => "qcow2",
            Some("vmdk") => "vmdk",
            _ => "raw",
        };
        Drive { path, format: format.to_owned() }
    }
}

/// The virtual hardware of one boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// SeaBIOS or OVMF.
    pub firmware: Firmware,
    /// OVMF with Secure Boot (the Microsoft keys enrolled); EFI only.
    pub secure_boot: bool,
    /// Disks, the first one boots.
    pub drives: Vec<Drive>,
    /// Their controller.
    pub bus: DiskBus,
    /// KubeVirt NIC model (`virtio`, `e1000e`, `e1000`, ...) or None for no NIC.
    pub nic: Option<String>,
    /// Guest memory.
    pub memory_mib: u32,
    /// Give up after this long.
    pub timeout: Duration,
}

impl BootSpec {
    /// One disk on `bus` with a virtio NIC, 768 MiB and the default timeout.
    pub fn new(firmware: Firmware, drive: Drive, bus: DiskBus) -> BootSpec {
        BootSpec {
            firmware,
            secure_boot: false,
            drives: vec![drive],
            bus,
            nic: Some("virtio".into()),
            memory_mib: 768,
            timeout: default_timeout(),
        }
    }
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The marker appeared.
    Booted,
    /// The guest showed a boot failure (the matching console text).
    Failed(String),
    /// QEMU exited before the marker (status text).
    Exited(String),
    /// Nothing decisive before the timeout.
    TimedOut,
}

/// What a boot showed.
#[derive(Debug, Clone)]
pub struct BootReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The marker line (it carries the root device and the disks the guest saw).
    pub marker_line: Option<String>,
    /// The whole serial console.
    pub console: String,
    /// Wall time from QEMU start to the end.
    pub seconds: f64,
    /// KVM or TCG.
    pub accel: Accel,
    /// The QEMU command line, for a failure message.
    pub command: String,
}

impl BootReport {
    /// The marker appeared.
    pub fn booted(&self) -> bool {
        self.outcome == Outcome::Booted
    }

    /// The guest stopped in its initramfs because it found no root file system.
    pub fn root_not_found(&self) -> bool {
        matches!(&self.outcome, Outcome::Failed(_))
            && (self.console.contains("does not exist") || self.console.contains("Gave up waiting for root"))
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> String {
        last_lines(&self.console, n)
    }

    /// A one-paragraph account for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{:?} after {:.1} s ({:?})\ncommand: {}\nconsole tail:\n{}",
            self.outcome,
            self.seconds,
            self.accel,
            self.command,
            self.tail(25)
        )
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Console text that means the guest will not get to its marker.
const FAILURES: &[&str] = &[
    "Dropping to a shell",
    "Gave up waiting for root",
    "Kernel panic",
    "grub rescue>",
    "No bootable device",
    "BdsDxe: No bootable option",
    "error: no such device",
];

/// Boot timeout: `VMIGRATE_BOOT_TIMEOUT` seconds, else 60 s with KVM and 300 s under TCG (a
/// shared, loaded machine stretches a ~35 s TCG boot).
pub fn default_timeout() -> Duration {
    if let Some(s) = std::env::var("VMIGRATE_BOOT_TIMEOUT").ok().and_then(|v| v.parse::<u64>().ok()) {
        return Duration::from_secs(s);
    }
    match accel() {
        Accel::Kvm => Duration::from_secs(60),
        Accel::Tcg => Duration::from_secs(300),
    }
}

/// Whether `/dev/kvm` looks able to run an unmodified guest kernel: it opens read-write and is
/// backed by kvm_intel or kvm_amd, not kvm-pvm (which only runs PVM-built kernels: a stock
/// Debian kernel stops after "Probing EDD").
pub fn kvm_device_usable() -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map_err(|e| format!("/dev/kvm: {e}"))?;
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm is kvm-pvm, which runs only PVM guest kernels".into());
    }
    if !Path::new("/sys/module/kvm_intel").exists() && !Path::new("/sys/module/kvm_amd").exists() {
        return Err("neither kvm_intel nor kvm_amd is loaded".into());
    }
    Ok(())
}

/// KVM or TCG for this process: `VMIGRATE_BOOT_ACCEL=kvm|tcg` if set; else KVM when
/// [`kvm_device_usable`] and a probe boot of the generic BIOS guest under KVM reaches its
/// marker; else TCG. Decided once, the reason printed.
pub fn accel() -> Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    *ACCEL.get_or_init(|| {
        match std::env::var("VMIGRATE_BOOT_ACCEL").as_deref() {
            Ok("kvm") => return Accel::Kvm,
            Ok("tcg") => return Accel::Tcg,
            Ok(other) => panic!("VMIGRATE_BOOT_ACCEL={other}: expected kvm or tcg"),
            Err(_) => {}
        }
        if let Err(why) = kvm_device_usable() {
            eprintln!("boot: TCG ({why})");
            return Accel::Tcg;
        }
        let g = guests::guests().get("bios-generic");
        let mut spec = BootSpec::new(g.firmware, Drive::new(&g.image), DiskBus::Virtio);
        spec.timeout = Duration::from_secs(90);
        let probe = boot_with(Accel::Kvm, &spec, &g.marker);
        if probe.booted() {
            eprintln!("boot: KVM (probe boot in {:.1} s)", probe.seconds);
            Accel::Kvm
        } else {
            eprintln!("boot: TCG (a stock kernel does not boot under this KVM: {})", probe.describe());
            Accel::Tcg
        }
    })
}

/// Boot `spec` and wait for `marker` (with [`accel`]).
pub fn boot(spec: &BootSpec, marker: &str) -> BootReport {
    boot_with(accel(), spec, marker)
}

/// The OVMF images (Debian's `ovmf`, 4 MiB flash layout).
fn ovmf(secure_boot: bool) -> (PathBuf, PathBuf) {
    let dir = Path::new("/usr/share/OVMF");
    let (code, vars) = if secure_boot {
        ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")
    } else {
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
    };
    let (code, vars) = (dir.join(code), dir.join(vars));
    assert!(code.exists() && vars.exists(), "{} missing: install ovmf (scripts/test-all.sh does)", code.display());
    (code, vars)
}

/// The QEMU arguments for `spec`, the console going to `console` and a fresh EFI variable store
/// at `vars_copy`.
pub fn qemu_args(accel: Accel, spec: &BootSpec, console: &Path, vars_copy: &Path) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|x| x.to_string()));
    let machine = if spec.secure_boot { "q35,smm=on" } else { "q35" };
    push(&["-machine", machine, "-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }]);
    push(&["-m", &spec.memory_mib.to_string(), "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot"]);
    push(&["-monitor", "none", "-serial", &format!("file:{}", console.display())]);
    if spec.firmware == Firmware::Efi {
        let (code, vars) = ovmf(spec.secure_boot);
        std::fs::copy(&vars, vars_copy).expect("copy the OVMF variable store");
        if spec.secure_boot {
            push(&["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        }
        push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={}", code.display())]);
        push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display())]);
    } else {
        assert!(!spec.secure_boot, "Secure Boot needs EFI firmware");
        // SeaBIOS's own messages ("Booting from Hard Disk...", "No bootable device") go to the
        // VGA console, which -nodefaults leaves out: mirror them to the serial port (0x3f8),
        // and reboot 1 s after a failed boot (-no-reboot turns that into QEMU exiting).
        let sercon = console.with_file_name("sercon-port");
        std::fs::write(&sercon, 0x3f8u16.to_le_bytes()).expect("sercon-port file");
        push(&["-fw_cfg", &format!("name=etc/sercon-port,file={}", sercon.display())]);
        push(&["-boot", "reboot-timeout=1000"]);
    }
    match spec.bus {
        DiskBus::Virtio => {}
        DiskBus::Scsi => push(&["-device", "virtio-scsi-pci,id=ctl0"]),
        DiskBus::Sata => push(&["-device", "ahci,id=ctl0"]),
        DiskBus::Pvscsi => push(&["-device", "pvscsi,id=ctl0"]),
    }
    for (i, d) in spec.drives.iter().enumerate() {
        push(&["-drive", &format!("file={},format={},if=none,id=d{i},snapshot=on", d.path.display(), d.format)]);
        let boot = if i == 0 { ",bootindex=1" } else { "" };
        let dev = match spec.bus {
            DiskBus::Virtio => format!("virtio-blk-pci,drive=d{i}{boot}"),
            DiskBus::Scsi | DiskBus::Pvscsi => format!("scsi-hd,bus=ctl0.0,scsi-id={i},lun=0,drive=d{i}{boot}"),
            DiskBus::Sata => format!("ide-hd,bus=ctl0.{i},drive=d{i}{boot}"),
        };
        push(&["-device", &dev]);
    }
    if let Some(model) = &spec.nic {
        let dev = match model.as_str() {
            "virtio" => "virtio-net-pci",
            "e1000e" => "e1000e",
            "e1000" => "e1000",
            "rtl8139" => "rtl8139",
            "vmxnet3" => "vmxnet3",
            other => panic!("NIC model {other:?} has no QEMU mapping here"),
        };
        // No option ROM: the disk boots, PXE never runs.
        push(&["-netdev", "user,id=n0,restrict=on", "-device", &format!("{dev},netdev=n0,romfile=")]);
    }
    a
}

/// A running QEMU, killed and reaped when dropped (also when a test panics mid-boot).
struct Qemu(std::process::Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boot `spec` with `accel` and wait for `marker`.
pub fn boot_with(accel: Accel, spec: &BootSpec, marker: &str) -> BootReport {
    let tmp = tempfile::tempdir().expect("tmp");
    let console_path = tmp.path().join("console.log");
    std::fs::write(&console_path, b"").expect("console file");
    let args = qemu_args(accel, spec, &console_path, &tmp.path().join("OVMF_VARS.fd"));
    let command = format!("qemu-system-x86_64 {}", args.join(" "));
    let start = Instant::now();
    // Niced: the tests share their machine.
    let mut child = Qemu(
        Command::new("nice")
            .args(["-n", "10", "qemu-system-x86_64"])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting qemu-system-x86_64 (install qemu-system-x86): {e}")),
    );
    let read_console = || String::from_utf8_lossy(&std::fs::read(&console_path).unwrap_or_default()).into_owned();
    let mut failed_at: Option<(Instant, String)> = None;
    let outcome = loop {
        let console = read_console();
        if console.contains(marker) {
            break Outcome::Booted;
        }
        if failed_at.is_none() {
            if let Some(f) = FAILURES.iter().find(|f| console.contains(**f)) {
                failed_at = Some((Instant::now(), (*f).to_owned()));
            }
        }
        // Let the console say a little more about a failure (the ALERT line) before stopping.
        if let Some((at, what)) = &failed_at {
            if at.elapsed() > Duration::from_secs(2) {
                break Outcome::Failed(what.clone());
            }
        }
        if let Some(status) = child.0.try_wait().expect("wait for qemu") {
            let console = read_console();
            if console.contains(marker) {
                break Outcome::Booted;
            }
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            break match failed_at {
                Some((_, what)) => Outcome::Failed(what),
                None => Outcome::Exited(format!("{status}: {}", err.trim())),
            };
        }
        if start.elapsed() > spec.timeout {
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(child);
    let console = read_console();
    let marker_line = console.lines().find(|l| l.contains(marker)).map(|l| l.trim().to_owned());
    BootReport { outcome, marker_line, console, seconds: start.elapsed().as_secs_f64(), accel, command }
}

/// The devices of a generated `VirtualMachine` that decide whether its guest boots.
#[derive(Debug, Clone)]
pub struct VmDevices {
    /// `spec.template.spec.domain.firmware.bootloader`.
    pub firmware: Firmware,
    /// `bootloader.efi.secureBoot`.
    pub secure_boot: bool,
    /// `disks[].disk.bus` (all the same in what vmigrate writes; asserted).
    pub bus: DiskBus,
    /// `interfaces[0].model`.
    pub nic: Option<String>,
    /// DataVolume names in boot order (the one with `bootOrder: 1` first).
    pub data_volumes: Vec<String>,
}

impl VmDevices {
    /// Read them from a VirtualMachine document.
    pub fn from_manifest(vm: &Value) -> VmDevices {
        let spec = &vm["spec"]["template"]["spec"];
        let domain = &spec["domain"];
        let bl = &domain["firmware"]["bootloader"];
        let (firmware, secure_boot) = if bl.get("efi").is_some() {
            (Firmware::Efi, bl["efi"]["secureBoot"].as_bool().unwrap_or(true))
        } else {
            (Firmware::Bios, false)
        };
        let disks = domain["devices"]["disks"].as_array().cloned().unwrap_or_default();
        assert!(!disks.is_empty(), "VirtualMachine has no disks: {vm:#}");
        let mut buses: Vec<&str> = disks.iter().map(|d| d["disk"]["bus"].as_str().unwrap_or("virtio")).collect();
        buses.dedup();
        assert_eq!(buses.len(), 1, "one bus for every disk expected: {buses:?}");
        let bus = DiskBus::from_kubevirt(buses[0]);
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        let mut ordered: Vec<(u64, String)> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let name = d["name"].as_str().expect("disk name");
                let vol = volumes.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no volume {name}"));
                let dv =
                    vol["dataVolume"]["name"].as_str().unwrap_or_else(|| panic!("volume {name} is not a DataVolume"));
                (d["bootOrder"].as_u64().unwrap_or(1000 + i as u64), dv.to_owned())
            })
            .collect();
        ordered.sort();
        let nic = domain["devices"]["interfaces"]
            .as_array()
            .and_then(|i| i.first())
            .map(|i| i["model"].as_str().unwrap_or("virtio").to_owned());
        VmDevices { firmware, secure_boot, bus, nic, data_volumes: ordered.into_iter().map(|(_, n)| n).collect() }
    }
}

/// The VirtualMachine `name` of a `dir://` output folder's `manifests.yaml`.
pub fn manifest_vm(out: &Path, name: &str) -> Value {
    super::manifests(&out.join("manifests.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "VirtualMachine" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no VirtualMachine {name} in {}/manifests.yaml", out.display()))
}

/// The image of DataVolume `dv` in a `dir://` output folder (`disks/<dv>.img` or `.qcow2`).
pub fn output_image(out: &Path, dv: &str) -> Drive {
    for ext in ["img", "qcow2"] {
        let p = out.join("disks").join(format!("{dv}.{ext}"));
        if p.exists() {
            return Drive::new(p);
        }
    }
    panic!("no image for DataVolume {dv} under {}/disks", out.display())
}

/// The boot spec the generated VirtualMachine `name` of output folder `out` describes.
pub fn manifest_spec(out: &Path, name: &str) -> (VmDevices, BootSpec) {
    let dev = VmDevices::from_manifest(&manifest_vm(out, name));
    let drives = dev.data_volumes.iter().map(|dv| output_image(out, dv)).collect();
    let spec = BootSpec {
        firmware: dev.firmware,
        secure_boot: dev.secure_boot,
        drives,
        bus: dev.bus,
        nic: dev.nic.clone(),
        memory_mib: 768,
        timeout: default_timeout(),
    };
    (dev, spec)
}

/// Boot the migrated VM `name` of output folder `out` on the devices its VirtualMachine names,
/// waiting for `marker`.
pub fn boot_manifest_vm(out: &Path, name: &str, marker: &str) -> BootReport {
    let (_, spec) = manifest_spec(out, name);
    boot(&spec, marker)
}
