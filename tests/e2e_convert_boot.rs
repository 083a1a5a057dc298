//! Guest conversion makes a VMware-only guest boot (issue 13).
//!
//! The Debian guest whose initramfs was built host-only on VMware (only PVSCSI / LSI storage
//! drivers, as RHEL's dracut builds it; `tests/guests/build-guests.sh`) sits in a VMware
//! datastore folder (VMFS flat disk, PVSCSI + VMXNET3 in the `.vmx`) and is migrated cold
//! (`vmx://` → `dir://`, through the `vmigrate` binary) twice:
//!
//! - with `skipGuestConversion: true` (a byte copy): booted on the devices of the generated
//!   VirtualMachine (virtio), its initramfs finds no root disk;
//! - with the default conversion (virt-v2v-in-place on the output image): the VirtualMachine is
//!   built from what virt-v2v installed and inspected (virtio, `spec.preference: debian`), and
//!   the guest boots on it to its own init's marker.
//!
//! Needs virt-v2v (with a kernel in /boot for libguestfs's appliance), qemu-system-x86 and the
//! guest builder's tools; scripts/test-all.sh installs them. Nothing is skipped: without
//! virt-v2v the conversion fails the VM and this test fails. Under TCG (this machine's kvm-pvm
//! cannot run stock kernels) the conversion takes 3-5 minutes and each boot 30-90 s.

mod support;

use std::path::Path;

use serde_json::Value;
use support::boot::{self, DiskBus};
use support::guests::{self, DatastoreVm, Firmware, VmdkFormat};
use support::*;

const VM: &str = "rhel-like-hostonly";

fn plan_text(name: &str, ds: &Path, out: &Path, skip: bool) -> String {
    let text = guests::boot_plan(name, ds, out, &[(VM, None)], "");
    assert!(text.contains("  skipGuestConversion: true\n"), "{text}");
    text.replace("  skipGuestConversion: true\n", &format!("  skipGuestConversion: {skip}\n"))
}

/// Migrate with `vmigrate migrate --output json`; the final status.
fn migrate(work: &Path, name: &str, ds: &Path, out: &Path, skip: bool) -> Value {
    let plan = work.join(format!("{name}.yaml"));
    std::fs::write(&plan, plan_text(name, ds, out, skip)).expect("write plan");
    let start = std::time::Instant::now();
    let res = run_cli(&["migrate", "--plan", plan.to_str().expect("utf-8"), "--output", "json"], |_| {});
    let stderr = String::from_utf8_lossy(&res.stderr);
    let lines = json_lines(&res.stdout);
    let status = lines.iter().rev().find(|e| e["event"] == "status").map(|e| e["status"].clone());
    eprintln!("{name}: migrate took {:.1} s", start.elapsed().as_secs_f64());
    assert_eq!(res.status.code(), Some(0), "{name}: migrate failed: {status:#?}\n{stderr}");
    status.unwrap_or_else(|| panic!("{name}: no status event in {lines:#?}"))
}

#[test]
fn hostonly_guest_boots_only_when_converted() {
    let set = guests::guests();
    let g = set.get("bios-hostonly");
    assert!(g.hostonly && g.firmware == Firmware::Bios);
    let work = tempfile::tempdir().expect("tmp");
    let ds = guests::vmware_datastore(
        work.path(),
        &[DatastoreVm { name: VM, guest: g, format: VmdkFormat::VmfsFlat, index: 7 }],
    );
    let flat = ds.join(VM).join(format!("{VM}-flat.vmdk"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).expect("source disk");
    let before = [mtime(&flat), mtime(&g.image)];

    // 1. A byte copy: the VM is built for virtio, the guest only knows PVSCSI.
    let raw_out = work.path().join("raw");
    let st = migrate(work.path(), "raw-copy", &ds, &raw_out, true);
    let vm = &st["vms"][0];
    assert_eq!(vm["phase"], "Completed", "{vm:#}");
    assert_eq!(vm["conversion"]["converted"], false, "{vm:#}");
    let (dev, spec) = boot::manifest_spec(&raw_out, VM);
    assert_eq!(dev.bus, DiskBus::Virtio);
    let report = boot::boot(&spec, &g.marker);
    eprintln!("raw copy on virtio: {:?} in {:.1} s ({:?})", report.outcome, report.seconds, report.accel);
    assert!(!report.booted(), "a host-only initramfs must not find a virtio disk: {}", report.describe());
    assert!(report.root_not_found(), "expected the initramfs to give up on its root: {}", report.describe());

    // 2. The same VM converted: virt-v2v-in-place on the output image before the VM is built.
    let conv_out = work.path().join("converted");
    let st = migrate(work.path(), "converted", &ds, &conv_out, false);
    let vm = &st["vms"][0];
    assert_eq!(vm["phase"], "Completed", "{vm:#}");
    let conv = &vm["conversion"];
    assert_eq!(conv["converted"], true, "{conv:#}");
    // Inspected on the source disk before the copy (Validate), then converted.
    assert_eq!(vm["inspection"]["osinfo"], "debian12", "inspected before anything moved: {vm:#}");
    assert_eq!(conv["os"]["osinfo"], "debian12", "inspection found the guest's OS: {conv:#}");
    assert_eq!(conv["diskBus"], "virtio", "{conv:#}");
    assert_eq!(conv["nicModel"], "virtio", "{conv:#}");
    eprintln!("conversion took {} s", conv["seconds"]);
    assert!(
        vm["history"]
            .as_array()
            .expect("history")
            .iter()
            .any(|r| r["phase"] == "ConvertGuest" && r.get("completed").is_some()),
        "{vm:#}"
    );
    let manifest = boot::manifest_vm(&conv_out, VM);
    assert_eq!(manifest["spec"]["preference"]["name"], "debian", "{manifest:#}");
    assert!(conv_out.join("conversion").join(format!("{VM}.v2v.log")).exists(), "virt-v2v's log is kept");
    let (dev, spec) = boot::manifest_spec(&conv_out, VM);
    assert_eq!(dev.bus, DiskBus::Virtio);
    assert_eq!(dev.nic.as_deref(), Some("virtio"));
    let report = boot::boot(&spec, &g.marker);
    eprintln!("converted on virtio: {:?} in {:.1} s ({:?})", report.outcome, report.seconds, report.accel);
    assert!(report.booted(), "the converted guest must boot on its VirtualMachine's devices: {}", report.describe());
    let line = report.marker_line.as_deref().unwrap_or_default();
    assert!(line.contains("root=/dev/vda1"), "the guest should run from its virtio disk: {line}");

    // The source disk (a hard link to the cached guest where possible) was never written:
    // conversion works on the output image only.
    assert_eq!([mtime(&flat), mtime(&g.image)], before, "the source disk or the cached guest was written");
}
