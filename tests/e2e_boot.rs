//! Migrated VMs boot: real Debian guests (built from packages by tests/guests/build-guests.sh,
//! cached) in a VMware datastore folder (vSphere's VMFS flat layout, monolithicSparse and
//! streamOptimized VMDKs; PVSCSI + VMXNET3 in the `.vmx`) go through one cold plan
//! (`vmx://` → `dir://`, through the `vmigrate` binary), and every output disk is booted under
//! QEMU with the firmware, disk bus and NIC model of the VirtualMachine vmigrate generated. A
//! boot counts only when the guest's own init, on its root file system, prints its marker.
//!
//! The guest with a VMware host-only initramfs (only PVSCSI / LSI storage drivers, as RHEL's
//! dracut builds on VMware) must not boot on virtio after a raw copy, and must boot on PVSCSI
//! (the control that the guest and the copied disk are otherwise healthy).
//!
//! Needs root, debootstrap, qemu-system-x86 and ovmf (scripts/test-all.sh installs them); a
//! missing tool fails the tests. First run: a few minutes to build the guests; then each boot
//! takes ~30-40 s under TCG.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;

use support::boot::{self, BootSpec, DiskBus, Drive};
use support::guests::{self, DatastoreVm, Firmware, Guest, VmdkFormat};
use support::*;

/// One VM of the test datastore: its guest, VMDK format and the plan's `diskBus` (None: the
/// default vmigrate picks).
struct Case {
    vm: &'static str,
    guest: &'static str,
    format: VmdkFormat,
    disk_bus: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { vm: "debian-bios", guest: "bios-generic", format: VmdkFormat::VmfsFlat, disk_bus: None },
    Case { vm: "debian-uefi", guest: "uefi-generic", format: VmdkFormat::MonolithicSparse, disk_bus: Some("scsi") },
    Case { vm: "debian-sata", guest: "bios-generic", format: VmdkFormat::StreamOptimized, disk_bus: Some("sata") },
    Case { vm: "debian-hostonly", guest: "bios-hostonly", format: VmdkFormat::VmfsFlat, disk_bus: None },
];

/// The migrated output folder, made once per test process.
struct Migrated {
    _work: tempfile::TempDir,
    out: PathBuf,
}

fn migrated() -> &'static Migrated {
    static M: OnceLock<Migrated> = OnceLock::new();
    M.get_or_init(|| {
        let set = guests::guests();
        eprintln!("guests ready in {:.1} s: {}", set.build_seconds, set.dir.display());
        let work = tempfile::tempdir().expect("tmp");
        let vms: Vec<DatastoreVm<'_>> = CASES
            .iter()
            .enumerate()
            .map(|(i, c)| DatastoreVm { name: c.vm, guest: set.get(c.guest), format: c.format, index: i as u8 + 1 })
            .collect();
        let start = std::time::Instant::now();
        let ds = guests::vmware_datastore(work.path(), &vms);
        eprintln!("datastore written in {:.1} s", start.elapsed().as_secs_f64());
        let out = work.path().join("out");
        let plan = work.path().join("boot.yaml");
        let list: Vec<(&str, Option<&str>)> = CASES.iter().map(|c| (c.vm, c.disk_bus)).collect();
        std::fs::write(&plan, guests::boot_plan("boot", &ds, &out, &list, "")).expect("write plan");
        let start = std::time::Instant::now();
        let res = run_cli(&["migrate", "--plan", plan.to_str().expect("utf-8"), "--output", "json"], |_| {});
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(0), "migrate failed: {stderr}");
        let lines = json_lines(&res.stdout);
        let summary = format!("{n} of {n} VMs migrated", n = CASES.len());
        assert!(lines.iter().any(|e| e["event"] == "plan" && e["summary"] == summary), "{lines:#?}");
        eprintln!("migrated {} VMs in {:.1} s", CASES.len(), start.elapsed().as_secs_f64());
        Migrated { _work: work, out }
    })
}

fn guest(name: &str) -> &'static Guest {
    guests::guests().get(name)
}

/// Boot the migrated VM on its generated devices; assert firmware and bus are what the case
/// expects and that the guest booted and saw its disk as that bus names it.
fn assert_boots(vm: &str, guest_name: &str, firmware: Firmware, bus: DiskBus, disk_name: &str) {
    let m = migrated();
    let g = guest(guest_name);
    let (dev, spec) = boot::manifest_spec(&m.out, vm);
    assert_eq!(dev.firmware, firmware, "{vm}: firmware in the VirtualMachine");
    assert_eq!(dev.bus, bus, "{vm}: disk bus in the VirtualMachine");
    assert_eq!(dev.nic.as_deref(), Some("virtio"), "{vm}: NIC model in the VirtualMachine");
    let report = boot::boot(&spec, &g.marker);
    eprintln!("{vm}: {:?} in {:.1} s ({:?}): {:?}", report.outcome, report.seconds, report.accel, report.marker_line);
    assert!(report.booted(), "{vm} did not boot: {}", report.describe());
    let line = report.marker_line.as_deref().unwrap_or_default();
    assert!(
        line.contains(&format!("root=/dev/{disk_name}")),
        "{vm}: the guest should run from /dev/{disk_name} on {bus:?}: {line}"
    );
}

#[test]
fn generic_bios_guest_boots_on_virtio_from_a_vmfs_flat_disk() {
    assert_boots("debian-bios", "bios-generic", Firmware::Bios, DiskBus::Virtio, "vda1");
}

#[test]
fn generic_uefi_guest_boots_on_scsi_from_a_monolithic_sparse_disk() {
    assert_boots("debian-uefi", "uefi-generic", Firmware::Efi, DiskBus::Scsi, "sda2");
}

#[test]
fn generic_bios_guest_boots_on_sata_from_a_stream_optimized_disk() {
    assert_boots("debian-sata", "bios-generic", Firmware::Bios, DiskBus::Sata, "sda1");
}

/// A raw copy (`skipGuestConversion: true`) leaves the VMware host-only initramfs as it was, so
/// the guest finds no root file system on the generated VM's virtio disk
/// (`tests/e2e_convert_boot.rs` proves that the conversion makes the same guest boot).
#[test]
fn hostonly_guest_copied_raw_does_not_boot_on_virtio() {
    let m = migrated();
    let g = guest("bios-hostonly");
    assert!(g.hostonly);
    let (dev, spec) = boot::manifest_spec(&m.out, "debian-hostonly");
    assert_eq!(dev.bus, DiskBus::Virtio);
    let report = boot::boot(&spec, &g.marker);
    eprintln!("debian-hostonly on virtio: {:?} in {:.1} s ({:?})", report.outcome, report.seconds, report.accel);
    assert!(!report.booted(), "a host-only initramfs must not find virtio disks: {}", report.describe());
    assert!(report.root_not_found(), "expected the initramfs to give up on the root device: {}", report.describe());
    assert!(report.console.contains("ALERT!"), "{}", report.describe());
}

/// The control for the test above: the same migrated disk boots on the controller it had on
/// VMware (PVSCSI), so the failure on virtio is the initramfs, not a broken guest or copy.
#[test]
fn hostonly_guest_boots_on_pvscsi() {
    let m = migrated();
    let g = guest("bios-hostonly");
    let (dev, _) = boot::manifest_spec(&m.out, "debian-hostonly");
    let image = boot::output_image(&m.out, &dev.data_volumes[0]);
    let mut spec = BootSpec::new(Firmware::Bios, image, DiskBus::Pvscsi);
    spec.nic = Some("vmxnet3".into());
    let report = boot::boot(&spec, &g.marker);
    eprintln!("debian-hostonly on pvscsi: {:?} in {:.1} s ({:?})", report.outcome, report.seconds, report.accel);
    assert!(report.booted(), "host-only guest on PVSCSI: {}", report.describe());
    assert!(report.marker_line.as_deref().unwrap_or_default().contains("root=/dev/sda1"), "{:?}", report.marker_line);
}

/// The harness can fail: a generic guest's disk with its first sector wiped (boot code and
/// partition table) is reported as not booting, from SeaBIOS's "No bootable device", in seconds.
#[test]
fn a_disk_without_a_boot_loader_does_not_boot() {
    let g = guest("bios-generic");
    let work = tempfile::tempdir().expect("tmp");
    let img = work.path().join("wiped.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&g.image)
        .arg(&img)
        .output()
        .expect("qemu-img");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -z 0 512"])
        .arg(&img)
        .output()
        .expect("qemu-io");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = boot::boot(&BootSpec::new(Firmware::Bios, Drive::new(&img), DiskBus::Virtio), &g.marker);
    eprintln!("wiped boot sector: {:?} in {:.1} s", report.outcome, report.seconds);
    assert!(!report.booted(), "{}", report.describe());
    assert_eq!(report.outcome, boot::Outcome::Failed("No bootable device".into()), "{}", report.describe());
}
