//! Inventory benchmark: `VsphereSource::inventory()` against pyvmomi doing the same (a
//! ContainerView, then RetrievePropertiesEx/ContinueRetrievePropertiesEx with the same property
//! set and page size) on the same vcsim, in the same run.
//!
//! `cargo run --release -p vmigrate-benches --bin inventory_bench [-- --quick] [--vms N]`
//!
//! The simulator gets 2,000 generated VMs (`--quick`: 200) besides the lab. Each side runs three
//! times; the best time counts. Round trips: ours from `Client::round_trips()`, pyvmomi's from a
//! counter on its `SoapStubAdapter.InvokeMethod`. pyvmomi is installed into `target/bench-venv`
//! from PyPI when missing (or use `--python PATH` with pyvmomi installed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use vmigrate_core::SourceProvider;
use vmigrate_vsphere::source::{INVENTORY_PROPS, INVENTORY_VIEW_TYPES};
use vmigrate_vsphere::vcsim::{Vcsim, VcsimOptions};
use vmigrate_vsphere::VsphereSource;

const RUNS: usize = 3;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("benches sits in the workspace").to_path_buf()
}

/// A python with pyvmomi: `--python`, else `target/bench-venv` (created and filled from PyPI).
fn python(args: &[String]) -> PathBuf {
    if let Some(p) = args.iter().position(|a| a == "--python").and_then(|i| args.get(i + 1)) {
        return PathBuf::from(p);
    }
    let venv = repo_root().join("target/bench-venv");
    let py = venv.join("bin/python");
    let has =
        |py: &Path| Command::new(py).args(["-c", "import pyVmomi"]).status().map(|s| s.success()).unwrap_or(false);
    if has(&py) {
        return py;
    }
    eprintln!("installing pyvmomi into {} (pip, from PyPI)", venv.display());
    let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().map(|s| s.success()).unwrap_or(false)
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "pyvmomi"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    assert!(ok && has(&py), "cannot install pyvmomi: run `python3 -m venv target/bench-venv && target/bench-venv/bin/pip install pyvmomi`, or pass --python");
    py
}

struct Side {
    best: f64,
    round_trips: u64,
    vms: usize,
}

async fn ours(sim: &Vcsim) -> Side {
    let src = VsphereSource::connect(sim.connect_options()).await.expect("connect");
    let mut best = f64::MAX;
    let mut trips = 0;
    let mut vms = 0;
    for i in 0..RUNS {
        let before = src.client().round_trips();
        let t = Instant::now();
        let inv = src.inventory().await.expect("inventory");
        let secs = t.elapsed().as_secs_f64();
        trips = src.client().round_trips() - before;
        vms = inv.vms.len();
        eprintln!("  vmigrate run {}: {secs:.3}s, {trips} round trips, {vms} VMs", i + 1);
        best = best.min(secs);
    }
    let _ = src.close().await;
    Side { best, round_trips: trips, vms }
}

fn pyvmomi(sim: &Vcsim, py: &Path, dir: &Path) -> Side {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &sim.ca_pem).expect("write ca");
    let spec = serde_json::json!({
        "view_types": INVENTORY_VIEW_TYPES,
        "props": INVENTORY_PROPS.iter().map(|(k, p)| (k.to_string(), p.to_vec())).collect::<Vec<_>>(),
    });
    let script = repo_root().join("benches/py/inventory_pyvmomi.py");
    let mut child = Command::new(py)
        .arg(&script)
        .args(["--url", &sim.url, "--username", &sim.username, "--runs", &RUNS.to_string()])
        .arg("--ca-file")
        .arg(&ca)
        .arg("--page")
        .arg(vmigrate_vsphere::client::PAGE_SIZE.to_string())
        .env("VMIGRATE_BENCH_PASSWORD", &sim.password)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python");
    child.stdin.take().expect("stdin").write_all(spec.to_string().as_bytes()).expect("send spec");
    let out = child.wait_with_output().expect("python ran");
    assert!(out.status.success(), "pyvmomi side failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pyvmomi json");
    eprintln!("  pyvmomi runs: {}", v["secs"]);
    Side {
        best: v["best_secs"].as_f64().expect("best_secs"),
        round_trips: v["round_trips"].as_u64().expect("round_trips"),
        vms: v["vms"].as_u64().expect("vms") as usize,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let extra: usize = args
        .iter()
        .position(|a| a == "--vms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 200 } else { 2000 });
    let py = python(&args);
    let dir = tempfile::tempdir().expect("tmp");
    let t = Instant::now();
    let sim = Vcsim::start(VcsimOptions { extra_vms: extra, disk_size: 1 << 20, ..VcsimOptions::default() });
    eprintln!("vcsim with {extra} extra VMs ready in {:.1}s", t.elapsed().as_secs_f64());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let us = rt.block_on(ours(&sim));
    let them = pyvmomi(&sim, &py, dir.path());
    if us.vms != them.vms {
        eprintln!("VM counts differ: vmigrate {} pyvmomi {}", us.vms, them.vms);
        return ExitCode::FAILURE;
    }
    let ratio = them.best / us.best;
    println!("inventory of {} VMs (vcsim, best of {RUNS})", us.vms);
    println!("{:<10} {:>10} {:>12}", "client", "seconds", "round trips");
    println!("{:<10} {:>10.3} {:>12}", "vmigrate", us.best, us.round_trips);
    println!("{:<10} {:>10.3} {:>12}", "pyvmomi", them.best, them.round_trips);
    println!("speed-up: {ratio:.2}x (target >= 3x)");
    if ratio < 3.0 && !quick {
        eprintln!("below the 3x target");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
