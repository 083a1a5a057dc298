//! Conversion benchmark: a whole cold migration with guest conversion (`vmigrate`: copy, then
//! `virt-v2v-in-place` on the copied disk) against `virt-v2v -i vmx … -o local` (copy and
//! conversion in one tool, what MTV's cold path runs), per VM, on the same guests, in the same run.
//!
//! `cargo run --release -p vmigrate-benches --bin convert_bench -- [--quick] [--dir DIR]
//! [--guest NAME]... [--no-boot]`
//!
//! The guests are the bootable Debian test guests (`tests/guests/build-guests.sh`, cached by
//! recipe hash; built the first time), each in a vSphere-style datastore folder (VMFS flat disk,
//! PVSCSI, VMXNET3) made by the same code the boot tests use (`tests/support/guests.rs`, included
//! below). For each guest both tools run as child processes of this program (ours re-executes
//! this binary with `--child`, which runs the plan through the library's executor exactly as
//! `vmigrate migrate` does, so its conversion phase is timed from the executor's own phase events)
//! after a `sync`, in alternating order from guest to guest so neither always gets the warmer
//! page cache. Afterwards (unless `--quick` or `--no-boot`) both outputs are booted under QEMU
//! with the boot tests' harness — ours with the devices of the generated VirtualMachine, virt-v2v's
//! on virtio as its libvirt XML says — and the guest's marker is required from both: a faster
//! tool whose guest does not boot would win nothing.
//!
//! Both sides run libguestfs the same way (`vmigrate_core::convert::child_env`: the direct
//! backend, TCG when `/dev/kvm` cannot run a stock kernel), so the appliance costs the same.
//! `--quick` (CI) converts the host-only guest once per tool and boots nothing: it keeps the
//! program from rotting; its numbers mean little on a loaded machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vmigrate_core::executor::{Event, Executor, ExecutorOptions};
use vmigrate_core::status::Phase;

// The boot tests' guest and boot helpers, shared as source so the bench lays out datastores
// and boots disks exactly as the tests that prove the boot do. They expect these three items
// beside them (as `tests/support/mod.rs` has them).

/// The lab's datastore name (as `tests/support/mod.rs`).
const DATASTORE: &str = "WorkloadDatastore";
/// The lab's VM network (as `tests/support/mod.rs`).
const NETWORK: &str = "segment-migrating-to-ocpvirt";

/// Every YAML document of a `manifests.yaml` (as `tests/support/mod.rs`).
fn manifests(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

#[allow(dead_code)]
#[path = "../../../tests/support/guests.rs"]
mod guests;

#[allow(dead_code)]
#[path = "../../../tests/support/boot.rs"]
mod boot;

use boot::{BootSpec, DiskBus, Drive};
use guests::{DatastoreVm, Guest, VmdkFormat};

/// One guest's measurements.
struct Row {
    guest: String,
    ours_secs: f64,
    ours_convert_secs: f64,
    v2v_secs: f64,
    ours_boots: Option<bool>,
    v2v_boots: Option<bool>,
}

/// What the `--child` run prints on its last stdout line: `<wall> <conversion seconds>`.
fn child(plan_path: &Path) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let start = Instant::now();
    let convert: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
    let seen = convert.clone();
    let status = rt.block_on(async move {
        let plan = vmigrate_core::Plan::from_file(plan_path).expect("plan");
        let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("open source");
        let target = vmigrate::targets::open_target(&plan.spec.target).await.expect("open target");
        let opts = ExecutorOptions {
            events: Some(Arc::new(move |e: &Event| {
                if let Event::Phase { phase, .. } = e {
                    let mut t = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if *phase == Phase::ConvertGuest {
                        t.0 = Some(Instant::now());
                    } else if t.0.is_some() && t.1.is_none() {
                        t.1 = Some(Instant::now());
                    }
                }
            })),
            ..Default::default()
        };
        Executor::new(plan, Arc::from(source), Arc::from(target), opts).run().await.expect("run")
    });
    let wall = start.elapsed().as_secs_f64();
    let vm = &status.vms[0];
    if vm.phase != Phase::Completed {
        eprintln!("vmigrate: {} ended {:?}: {:?}", vm.name, vm.phase, vm.error);
        return ExitCode::FAILURE;
    }
    let converted = vm.conversion.as_ref().map(|c| c.summary()).unwrap_or_default();
    eprintln!("vmigrate: {} converted: {converted}", vm.name);
    let t = convert.lock().unwrap_or_else(|p| p.into_inner());
    let conv = match (t.0, t.1) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => {
            eprintln!("vmigrate: no conversion phase seen");
            return ExitCode::FAILURE;
        }
    };
    println!("{wall:.3} {conv:.3}");
    ExitCode::SUCCESS
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// Our side: this program with `--child`, timed from outside like the anchor.
fn run_ours(exe: &Path, work: &Path, name: &str, ds: &Path, out: &Path, vm: &str) -> (f64, f64) {
    let plan = guests::boot_plan(name, ds, out, &[(vm, None)], "")
        .replace("  skipGuestConversion: true\n", "  skipGuestConversion: false\n");
    let plan_path = work.join(format!("{name}.yaml"));
    std::fs::write(&plan_path, plan).expect("write plan");
    sync();
    let start = Instant::now();
    let res = Command::new(exe).arg("--child").arg(&plan_path).output().expect("run the child");
    let wall = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "vmigrate on {vm} failed:\n{stderr}");
    eprint!("{stderr}");
    let line = String::from_utf8_lossy(&res.stdout).lines().last().unwrap_or_default().to_owned();
    let conv: f64 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("child reports conversion");
    (wall, conv)
}

/// The anchor: `virt-v2v -i vmx VMX -o local -os OUT -of raw`, with the same libguestfs setup.
fn run_v2v(work: &Path, vmx: &Path, out: &Path) -> f64 {
    std::fs::create_dir_all(out).expect("anchor output");
    let home = work.join("v2v-home");
    std::fs::create_dir_all(&home).expect("anchor home");
    let env = vmigrate_core::convert::child_env(&home, vmigrate_core::convert::kvm_usable(), None);
    sync();
    let start = Instant::now();
    let res = Command::new("virt-v2v")
        .args(["-i", "vmx"])
        .arg(vmx)
        .args(["-o", "local", "-os"])
        .arg(out)
        .args(["-of", "raw"])
        .env_clear()
        .envs(env)
        .output()
        .expect("virt-v2v is installed (Debian package virt-v2v)");
    let wall = start.elapsed().as_secs_f64();
    assert!(
        res.status.success(),
        "virt-v2v -i vmx {} failed:\n{}",
        vmx.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    wall
}

/// Boot virt-v2v's output disk on virtio (its libvirt XML's bus) with the guest's firmware.
fn boot_v2v(out: &Path, vm: &str, g: &Guest) -> bool {
    let xml = std::fs::read_to_string(out.join(format!("{vm}.xml"))).expect("virt-v2v wrote its libvirt XML");
    assert!(xml.contains("bus='virtio'"), "virt-v2v's disk is not on virtio:\n{xml}");
    let spec = BootSpec::new(g.firmware, Drive::new(out.join(format!("{vm}-sda"))), DiskBus::Virtio);
    let report = boot::boot(&spec, &g.marker);
    if !report.booted() {
        eprintln!("virt-v2v's {vm} did not boot: {}", report.describe());
    }
    report.booted()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(Path::new(args.get(i + 1).expect("--child PLAN")));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let no_boot = quick || args.iter().any(|a| a == "--no-boot");
    let flag = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let mut names: Vec<String> = args.windows(2).filter(|w| w[0] == "--guest").map(|w| w[1].clone()).collect();
    if names.is_empty() {
        names = if quick {
            vec!["bios-hostonly".into()]
        } else {
            vec!["bios-hostonly".into(), "bios-generic".into(), "uefi-generic".into()]
        };
    }
    // Our own folder inside `--dir`, so clearing it never touches anything else there.
    let work = match flag("--dir") {
        Some(d) => PathBuf::from(d).join("convert-bench"),
        None => std::env::temp_dir().join(format!("vmigrate-convert-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work folder");
    let exe = std::env::current_exe().expect("own path");
    let set = guests::guests();
    eprintln!("guests from {} (ready in {:.1} s)", set.dir.display(), set.build_seconds);

    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let g = set.get(name);
        let vm = format!("bench-{name}");
        let gw = work.join(name);
        let ds = guests::vmware_datastore(
            &gw,
            &[DatastoreVm { name: &vm, guest: g, format: VmdkFormat::VmfsFlat, index: 40 + i as u8 }],
        );
        let vmx = ds.join(&vm).join(format!("{vm}.vmx"));
        let ours_out = gw.join("vmigrate-out");
        let v2v_out = gw.join("virt-v2v-out");
        let plan_name = format!("convert-bench-{i}");
        let (ours_secs, ours_convert_secs, v2v_secs) = if i % 2 == 0 {
            let (a, c) = run_ours(&exe, &gw, &plan_name, &ds, &ours_out, &vm);
            (a, c, run_v2v(&gw, &vmx, &v2v_out))
        } else {
            let b = run_v2v(&gw, &vmx, &v2v_out);
            let (a, c) = run_ours(&exe, &gw, &plan_name, &ds, &ours_out, &vm);
            (a, c, b)
        };
        eprintln!("{name}: vmigrate {ours_secs:.1} s (conversion {ours_convert_secs:.1} s), virt-v2v {v2v_secs:.1} s");
        let (ours_boots, v2v_boots) = if no_boot {
            (None, None)
        } else {
            let ours = boot::boot_manifest_vm(&ours_out, &vm, &g.marker);
            if !ours.booted() {
                eprintln!("vmigrate's {vm} did not boot: {}", ours.describe());
            }
            (Some(ours.booted()), Some(boot_v2v(&v2v_out, &vm, g)))
        };
        rows.push(Row { guest: name.clone(), ours_secs, ours_convert_secs, v2v_secs, ours_boots, v2v_boots });
        let _ = std::fs::remove_dir_all(&gw);
    }

    let boots = |b: Option<bool>| match b {
        None => "-",
        Some(true) => "yes",
        Some(false) => "NO",
    };
    println!(
        "| guest | vmigrate s | of which conversion | virt-v2v -i vmx s | speed-up | boots (vmigrate / virt-v2v) |"
    );
    println!("|---|---:|---:|---:|---:|---|");
    let (mut sum_ours, mut sum_v2v) = (0.0, 0.0);
    for r in &rows {
        sum_ours += r.ours_secs;
        sum_v2v += r.v2v_secs;
        println!(
            "| {} | {:.1} | {:.1} s ({:.0}%) | {:.1} | {:.2}x | {} / {} |",
            r.guest,
            r.ours_secs,
            r.ours_convert_secs,
            100.0 * r.ours_convert_secs / r.ours_secs,
            r.v2v_secs,
            r.v2v_secs / r.ours_secs,
            boots(r.ours_boots),
            boots(r.v2v_boots)
        );
    }
    println!(
        "total: vmigrate {sum_ours:.1} s, virt-v2v {sum_v2v:.1} s, speed-up {:.2}x (goal >= 2x)",
        sum_v2v / sum_ours
    );
    let failed = rows.iter().any(|r| r.ours_boots == Some(false) || r.v2v_boots == Some(false));
    if failed {
        eprintln!("a converted guest did not boot (see above)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
