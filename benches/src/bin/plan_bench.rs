//! Plan benchmark: the orchestration overhead of the executor over the bare copy engine.
//!
//! `cargo run --release -p vmigrate-benches --bin plan_bench -- [--quick] [--dir DIR] [--reps N]`
//!
//! It writes a local VMware datastore (`vmx://`) of 20 VMs with sparse monolithicSparse disks of
//! mixed virtual sizes (64 MiB to 1 GiB; 5 MiB to 80 MiB with `--quick`) holding random,
//! text-like and allocated-zero runs, then measures, in the same run and each in a fresh child
//! process of this program:
//!
//! - `engine`: `engine::copy` alone on every disk, one after the other, same source transport
//!   (the `vmx://` source's `open_disk`) and the same raw output files as the plan; the sum of the
//!   per-disk copy times;
//! - `plan`: the whole plan (`Executor::run`: validation, phases, status file after every phase
//!   and checkpoint, manifests, progress) into a `dir://` target with `maxInFlight: 1`, so its
//!   wall time is directly comparable with the sum above.
//!
//! Overhead = (plan wall − Σ engine copy) / Σ engine copy; the best of `--reps` runs of each,
//! alternating, each after a `sync`.
//! Peak RSS is the child's high-water mark (`VmHWM` of /proc/self/status, the counter
//! `getrusage(2)` reports as `ru_maxrss`). vcsim is not used: its lab harness backs only the
//! eight lab VMs with disks (its generated VMs have none), and 20 VMDK files in a local datastore
//! exercise the same executor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmigrate::core::engine::{self, CopyControl};
use vmigrate::core::executor::{Event, Executor, ExecutorOptions};
use vmigrate::core::file::{FileOptions, FileTransport};
use vmigrate::core::{Phase, Plan, SourceProvider};
use vmigrate::kubevirt::DirTarget;
use vmigrate::vsphere::local::LocalSource;
use vmigrate::vsphere::vmdk::SparseVmdkWriter;
use vmigrate_benches::Rng;

const MIB: u64 = 1 << 20;
const VMS: usize = 20;

/// Virtual size of VM `i`'s disk.
fn disk_size(i: usize, quick: bool) -> u64 {
    let full = [64 * MIB, 128 * MIB, 256 * MIB, 512 * MIB, 1024 * MIB][i % 5];
    if quick {
        full / 13 / MIB * MIB
    } else {
        full
    }
}

/// Write VM `i`: about a third of the disk is data (random, text-like), some allocated zeroes,
/// the rest holes.
fn write_vm(ds: &Path, i: usize, quick: bool) -> u64 {
    let name = format!("app{i:02}");
    let dir = ds.join(&name);
    std::fs::create_dir_all(&dir).expect("vm dir");
    let size = disk_size(i, quick);
    let mut w = SparseVmdkWriter::create(&dir.join(format!("{name}.vmdk")), size).expect("vmdk");
    let mut rng = Rng::new(0x1234_5678 + i as u64);
    let run = MIB.min(size / 8);
    let mut data = 0;
    let mut off = 0;
    let mut buf = vec![0u8; run as usize];
    while off + run <= size {
        match rng.next_u64() % 6 {
            0 | 1 => {
                rng.fill(&mut buf);
                w.write_at(off, &buf).expect("write");
                data += run;
            }
            2 => {
                let line = format!("{name} row {off}: INSERT INTO visitors VALUES ('webapp');\n");
                for (j, b) in buf.iter_mut().enumerate() {
                    *b = line.as_bytes()[j % line.len()];
                }
                w.write_at(off, &buf).expect("write");
                data += run;
            }
            3 => {
                buf.fill(0);
                w.write_at(off, &buf).expect("write zeroes");
            }
            _ => {}
        }
        off += run;
    }
    w.finish().expect("finish vmdk");
    let vmx = format!(
        concat!(
            ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n",
            "displayName = \"{name}\"\nguestOS = \"rhel8-64\"\nfirmware = \"bios\"\nnumvcpus = \"2\"\nmemSize = \"2048\"\n",
            "uuid.bios = \"42 23 5e 1a 0b 7c 4d {i:02x}-9a 01 22 33 44 55 66 {i:02x}\"\n",
            "scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n",
            "scsi0:0.present = \"TRUE\"\nscsi0:0.deviceType = \"scsi-hardDisk\"\nscsi0:0.fileName = \"{name}.vmdk\"\n",
            "ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"bench-net\"\n",
            "ethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:a2:00:{i:02x}\"\n"
        ),
        name = name,
        i = i
    );
    std::fs::write(dir.join(format!("{name}.vmx")), vmx).expect("vmx");
    data
}

fn plan_text(ds: &Path, out: &Path) -> String {
    let vms: String = (0..VMS).map(|i| format!("    - name: app{i:02}\n")).collect();
    format!(
        "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata:\n  name: bench-20\nspec:\n  source:\n    url: \"vmx://{}?datastore=bench\"\n  target:\n    url: \"dir://{}\"\n  targetNamespace: bench\n  skipGuestConversion: true\n  vms:\n{vms}  networkMap:\n    - source: {{ name: bench-net }}\n      destination: {{ type: pod }}\n  storageMap:\n    - source: {{ name: bench }}\n      destination: {{ storageClass: standard }}\n  options:\n    maxInFlight: 1\n",
        ds.display(),
        out.display()
    )
}

/// Peak resident set of this process, KiB (`VmHWM`, what `getrusage` calls `ru_maxrss`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Child `engine`: copy every disk with the bare engine; prints the sum of copy times.
async fn child_engine(dir: &Path) {
    let ds = dir.join("datastore");
    let out = dir.join("engine-out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("out");
    let src = LocalSource::from_url(&format!("vmx://{}?datastore=bench", ds.display())).expect("source");
    let mut inv = src.inventory().await.expect("inventory");
    inv.vms.sort_by(|a, b| a.name.cmp(&b.name));
    let opts = ExecutorOptions::default().copy;
    let mut sum = Duration::ZERO;
    let mut copy = Duration::ZERO;
    let mut bytes = 0;
    for vm in &inv.vms {
        for d in &vm.disks {
            let s = src.open_disk(&vm.id, d, None).await.expect("open source disk");
            let path = out.join(format!("{}-disk0.img", vm.name));
            let t0 = Instant::now();
            let dst =
                FileTransport::open(&path, FileOptions { write: true, create_size: Some(s.size()), direct: false })
                    .await
                    .expect("open output");
            let stats = engine::copy(s.as_ref(), &dst, &opts, &CopyControl::default()).await.expect("copy");
            sum += t0.elapsed();
            copy += stats.elapsed;
            bytes += stats.bytes_read;
        }
    }
    println!(
        "secs={:.4} copy_secs={:.4} bytes={bytes} rss_kib={}",
        sum.as_secs_f64(),
        copy.as_secs_f64(),
        peak_rss_kib()
    );
}

/// Child `plan`: the whole plan into a fresh output folder; prints its wall time.
async fn child_plan(dir: &Path) {
    let ds = dir.join("datastore");
    let out = dir.join("plan-out");
    let _ = std::fs::remove_dir_all(&out);
    let status = dir.join("bench-20.status.json");
    let _ = std::fs::remove_file(&status);
    let plan = Plan::from_yaml_str(&plan_text(&ds, &out)).expect("plan");
    let t0 = Instant::now();
    let source = LocalSource::from_url(&plan.spec.source.url).expect("source");
    let target = DirTarget::from_url(&plan.spec.target.url).expect("target");
    // The engine's own clock for every disk, from the last progress event of each copy: the
    // plan's wall time minus their sum is what the orchestration costs, measured in one run
    // (copy times vary more between runs than that cost).
    let copies: Arc<std::sync::Mutex<BTreeMap<(String, i32), Duration>>> = Arc::default();
    let sink = copies.clone();
    let events: Arc<dyn Fn(&Event) + Send + Sync> = Arc::new(move |e: &Event| {
        if let Event::Disk { vm, disk, progress, .. } = e {
            sink.lock().expect("copies").insert((vm.clone(), *disk), progress.elapsed);
        }
    });
    let opts = ExecutorOptions { status_path: Some(status), events: Some(events), ..Default::default() };
    let exec = Executor::new(plan, Arc::new(source), Arc::new(target), opts);
    let st = exec.run().await.expect("plan runs");
    let secs = t0.elapsed().as_secs_f64();
    assert!(st.vms.iter().all(|v| v.phase == Phase::Completed), "{}", st.summary());
    let copy: Duration = copies.lock().expect("copies").values().sum();
    println!("secs={secs:.4} copy_secs={:.4} bytes=0 rss_kib={}", copy.as_secs_f64(), peak_rss_kib());
}

struct Sample {
    secs: f64,
    /// Σ of the engine's own copy times (inside the plan, for the plan child).
    copy_secs: f64,
    rss_kib: u64,
}

fn run_child(kind: &str, dir: &Path) -> Sample {
    // Start every measurement with no dirty pages of the previous one still being written back.
    let _ = Command::new("sync").status();
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe).args(["--child", kind, "--dir"]).arg(dir).output().expect("child");
    assert!(out.status.success(), "{kind} child failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| -> f64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{kind} child printed no {k}: {text}"))
    };
    Sample { secs: get("secs"), copy_secs: get("copy_secs"), rss_kib: get("rss_kib") as u64 }
}

fn same_outputs(dir: &Path) -> bool {
    (0..VMS).all(|i| {
        let a = dir.join(format!("engine-out/app{i:02}-disk0.img"));
        let b = dir.join(format!("plan-out/disks/app{i:02}-disk0.img"));
        match (std::fs::read(&a), std::fs::read(&b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if let Some(kind) = flag("--child") {
        let dir = PathBuf::from(flag("--dir").expect("--dir"));
        match kind.as_str() {
            "engine" => rt.block_on(child_engine(&dir)),
            "plan" => rt.block_on(child_plan(&dir)),
            other => panic!("unknown child {other}"),
        }
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let reps: usize = flag("--reps").and_then(|r| r.parse().ok()).unwrap_or(if quick { 2 } else { 3 });
    let tmp;
    let dir = match flag("--dir") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = std::env::temp_dir().join(format!("vmigrate-plan-bench-{}", std::process::id()));
            tmp.clone()
        }
    };
    let ds = dir.join("datastore");
    std::fs::create_dir_all(&ds).expect("datastore");
    std::fs::write(ds.join(".vmigrate-datastore"), "bench\n").expect("datastore name");
    let t0 = Instant::now();
    let mut virt = 0;
    let mut data = 0;
    for i in 0..VMS {
        data += write_vm(&ds, i, quick);
        virt += disk_size(i, quick);
    }
    eprintln!(
        "wrote {VMS} VMs: {} MiB virtual, {} MiB data in {:.1}s",
        virt / MIB,
        data / MIB,
        t0.elapsed().as_secs_f64()
    );

    let mut engine = Vec::new();
    let mut plan = Vec::new();
    for _ in 0..reps {
        engine.push(run_child("engine", &dir));
        plan.push(run_child("plan", &dir));
    }
    let ok = same_outputs(&dir);
    let best = |v: &[Sample]| v.iter().map(|s| s.secs).fold(f64::INFINITY, f64::min);
    let rss = |v: &[Sample]| v.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let (e, p) = (best(&engine), best(&plan));
    let overhead = (p - e) / e * 100.0;
    // Orchestration per plan run: its wall time minus the engine's time inside it; the smallest
    // share over the runs (the others only add copy-time noise, not orchestration).
    let orch = plan
        .iter()
        .map(|s| ((s.secs - s.copy_secs).max(0.0), (s.secs - s.copy_secs).max(0.0) / s.copy_secs * 100.0))
        .fold((f64::INFINITY, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
    println!(
        "| mode | VMs | virtual | data | Σ engine copy | plan wall | overhead | orchestration in the plan | peak RSS engine | peak RSS plan |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {VMS} | {:.1} GiB | {:.2} GiB | {e:.3} s | {p:.3} s | {overhead:+.1}% | {:.3} s ({:.1}%, {:.1} ms/VM) | {} MiB | {} MiB |",
        if quick { "quick" } else { "full" },
        virt as f64 / (1u64 << 30) as f64,
        data as f64 / (1u64 << 30) as f64,
        orch.0,
        orch.1,
        orch.0 * 1000.0 / VMS as f64,
        rss(&engine) / 1024,
        rss(&plan) / 1024
    );
    println!(
        "outputs identical (engine vs plan): {ok}; best of {reps} runs each; orchestration = plan wall − Σ engine copy time inside that plan run"
    );
    for (i, (en, pl)) in engine.iter().zip(&plan).enumerate() {
        println!(
            "run {}: engine {:.3} s (copies {:.3} s), plan {:.3} s (copies {:.3} s)",
            i + 1,
            en.secs,
            en.copy_secs,
            pl.secs,
            pl.copy_secs
        );
    }
    if flag("--dir").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if !ok {
        eprintln!("the plan's output disks differ from the engine's");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
