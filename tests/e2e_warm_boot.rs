//! A warm migration boots (issue 13): a real Debian guest (`bios-generic` of
//! `tests/guests/build-guests.sh`) is the disk of a running VM in vcsim, migrated warm to
//! `dir://` with changed block tracking, and written between the passes: after the full copy
//! and after the first precopy, the guest's `/etc/vmigrate-guest` (the name and nonce its init
//! prints) is replaced inside its ext4 file system (`debugfs` at the partition's offset). After
//! the cutover the output disk is booted under QEMU on the devices of the generated
//! VirtualMachine: the guest must come up and print the nonce of the **last** write, so the
//! file system the delta passes assembled is consistent and holds every write.
//!
//! The guest is copied as it is (`skipGuestConversion: true`, as vcsim_plan writes it): its
//! generic initramfs boots on virtio; conversion is proven by tests/e2e_convert_*.rs. ~2-4 min
//! under TCG (a 2 GiB disk through vcsim, then one boot).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use support::boot;
use support::guests::{self, Firmware};
use support::warm::{between_passes, run_plan, warm_dir_plan, WarmDirPlan};
use support::*;
use vmigrate::core::executor::{Controller, ExecutorOptions};
use vmigrate::core::Phase;
use vmigrate::vsphere::vcsim::{LabDisk, LabDiskFormat, Vcsim, VcsimOptions};

const VM: &str = "database_running";

/// Byte offset of the root partition of a guest image (`sfdisk -J`).
fn root_offset(image: &Path, partition: usize) -> u64 {
    let out = Command::new("sfdisk").arg("-J").arg(image).output().expect("sfdisk");
    assert!(out.status.success(), "sfdisk -J {}: {}", image.display(), String::from_utf8_lossy(&out.stderr));
    let table: Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
    let p = &table["partitiontable"]["partitions"][partition - 1];
    let sector = table["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    p["start"].as_u64().expect("partition start") * sector
}

/// Replace `/etc/vmigrate-guest` in the ext4 file system at `offset` of `disk` with `text`.
fn rewrite_guest_file(disk: &Path, offset: u64, text: &str, scratch: &Path) {
    let file = scratch.join("vmigrate-guest");
    std::fs::write(&file, text).expect("new file");
    let cmds = scratch.join("debugfs.cmds");
    std::fs::write(&cmds, format!("rm /etc/vmigrate-guest\nwrite {} /etc/vmigrate-guest\n", file.display()))
        .expect("cmds");
    let out = Command::new("debugfs")
        .args(["-w", "-f"])
        .arg(&cmds)
        .arg(format!("{}?offset={offset}", disk.display()))
        .output()
        .expect("debugfs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("rror"), "debugfs: {err}");
    // Read it back through the file system.
    let cat = Command::new("debugfs")
        .args(["-R", "cat /etc/vmigrate-guest"])
        .arg(format!("{}?offset={offset}", disk.display()))
        .output()
        .expect("debugfs cat");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), text, "{}", String::from_utf8_lossy(&cat.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_migrated_guest_written_between_passes_boots_with_the_last_write() {
    let set = guests::guests();
    let g = set.get("bios-generic").clone();
    assert_eq!(g.firmware, Firmware::Bios);
    let partition = set_root_partition(&set.dir, &g.name);
    let offset = root_offset(&g.image, partition);

    let sim = Vcsim::start(VcsimOptions {
        disk_size: 4 << 20,
        disks: vec![LabDisk { vm: VM, format: LabDiskFormat::Zero, size: Some(g.size_bytes) }],
        ..Default::default()
    });
    let flat = sim.flat_file(VM);
    // The lab VM's disk becomes the guest (sparse copy: ~640 MiB of data).
    let cp = Command::new("cp").arg("--sparse=always").arg(&g.image).arg(&flat).status().expect("cp");
    assert!(cp.success());
    assert_eq!(std::fs::metadata(&flat).expect("flat").len(), g.size_bytes);

    let WarmDirPlan { work, out, plan } = warm_dir_plan(&sim, "warm-boot", VM);

    // Writes into the guest's file system the moment a pass has read everything (before the
    // next snapshot); after the second one, the cutover.
    let nonces = ["after-full-1111", "after-precopy-2222"];
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let sink = {
        let (flat, scratch) = (flat.clone(), work.path().to_path_buf());
        let name = g.name.clone();
        Arc::new(between_passes(&["full", "precopy-1"], ctl.clone(), move |n| {
            rewrite_guest_file(&flat, offset, &format!("{name} {}\n", nonces[n]), &scratch)
        }))
    };
    let target = vmigrate::kubevirt::DirTarget::open(&out).expect("output folder");
    let opts = ExecutorOptions {
        status_path: Some(work.path().join("warm.status.json")),
        events: Some(sink),
        progress_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let status = run_plan(plan, target, opts, Some(&ctl), Duration::from_secs(900)).await;
    eprintln!("warm migration of the guest took {:.1} s", started.elapsed().as_secs_f64());
    let vs = &status.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
    assert!(vs.precopies >= 1, "at least one precopy before the cutover: {}", vs.precopies);

    // The output is the final source, byte for byte, and boots with the last write.
    let img = out.join("disks").join(format!("{}.img", vs.disks[0].volume));
    qemu_img_compare_raw(&flat, &img).expect("target equals final source");
    let (dev, spec) = boot::manifest_spec(&out, &vs.target_name);
    assert_eq!(dev.firmware, Firmware::Bios);
    let report = tokio::task::spawn_blocking(move || boot::boot(&spec, "VMIGRATE-GUEST-BOOTED ")).await.expect("boot");
    eprintln!("warm-migrated guest: {:?} in {:.1} s ({:?})", report.outcome, report.seconds, report.accel);
    assert!(report.booted(), "the warm-migrated guest must boot: {}", report.describe());
    let line = report.marker_line.as_deref().unwrap_or_default();
    assert!(line.contains(&format!("{} {}", g.name, nonces[1])), "the last write between passes is missing: {line}");
}

/// The root partition number of guest `name` from its `guests.json`.
fn set_root_partition(dir: &Path, name: &str) -> usize {
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("guests.json")).expect("guests.json")).expect("json");
    let arr = list.as_array().or_else(|| list["guests"].as_array()).expect("a list of guests");
    let g = arr.iter().find(|g| g["name"] == name).expect("guest listed");
    g["root_partition"].as_u64().expect("root_partition") as usize
}
