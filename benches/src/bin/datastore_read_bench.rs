//! Datastore disk read benchmark: vmigrate's HTTPS `/folder` read (`VsphereSource::open_disk` +
//! the copy engine into a file) against `nbdkit curl` + `nbdcopy` on the same flat extent of the
//! same vcsim, in the same run. Both copies are durable (engine flush = fdatasync; nbdcopy
//! `--flush`) and both outputs are checked against the file.
//!
//! `cargo run --release -p vmigrate-benches --bin datastore_read_bench [-- --quick] [--mib N]`
//!
//! The disk is a 1 GiB monolithicFlat VMDK (`--quick`: 64 MiB) with vcsim's lab pattern. nbdkit
//! gets the session cookie in a file (`cookie=+FILE`) and `sslverify=false` (it reads the same
//! TLS endpoint; verification is not what is measured).

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vmigrate_core::engine::{self, CopyControl, CopyOptions};
use vmigrate_core::file::{FileOptions, FileTransport};
use vmigrate_core::SourceProvider;
use vmigrate_vsphere::vcsim::{LabDisk, LabDiskFormat, Vcsim, VcsimOptions};
use vmigrate_vsphere::VsphereSource;

const VM: &str = "haproxy";

fn sha_file(p: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(p).expect("open output");
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = f.read(&mut buf).expect("read output");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn drop_output(p: &Path) {
    let _ = std::fs::remove_file(p);
    let _ = Command::new("sync").status();
}

async fn ours(sim: &Vcsim, out: &Path) -> (f64, u64) {
    let src = VsphereSource::connect(sim.connect_options()).await.expect("connect");
    let inv = src.inventory().await.expect("inventory");
    let vm = inv.find_vm(VM).expect("bench vm");
    drop_output(out);
    let t = Instant::now();
    let disk = src.open_disk(&vm.id, &vm.disks[0], None).await.expect("open disk");
    let size = disk.size();
    let dst = FileTransport::open(out, FileOptions { create_size: Some(size), ..Default::default() })
        .await
        .expect("create output");
    let opts = CopyOptions { connections: disk.max_connections(), flush: true, ..CopyOptions::default() };
    let opts = tuned(opts);
    engine::copy(disk.as_ref(), &dst, &opts, &CopyControl::new()).await.expect("copy");
    let secs = t.elapsed().as_secs_f64();
    let _ = src.close().await;
    (secs, size)
}

/// `VMIGRATE_BENCH_CONNECTIONS` / `VMIGRATE_BENCH_REQUEST_MIB` override the engine settings, to
/// see how the read scales.
fn tuned(mut opts: CopyOptions) -> CopyOptions {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(c) = env("VMIGRATE_BENCH_CONNECTIONS") {
        opts.connections = c;
    }
    if let Some(r) = env("VMIGRATE_BENCH_REQUEST_MIB") {
        opts.request_size = r << 20;
    }
    opts
}

fn nbdkit_curl(sim: &Vcsim, cookie: &str, dir: &Path, out: &Path) -> f64 {
    let cookie_file = dir.join("cookie");
    std::fs::write(&cookie_file, cookie).expect("cookie file");
    let sock = dir.join("curl.sock");
    let _ = std::fs::remove_file(&sock);
    let url = sim.folder_url(&format!("{VM}/{VM}-flat.vmdk"));
    drop_output(out);
    let t = Instant::now();
    let mut nbdkit = Command::new("nbdkit")
        .args(["--exit-with-parent", "--foreground", "--readonly", "-U"])
        .arg(&sock)
        .arg("curl")
        .arg(format!("url={url}"))
        .arg(format!("cookie=+{}", cookie_file.display()))
        .arg("sslverify=false")
        .stdin(Stdio::null())
        .spawn()
        .expect("start nbdkit curl (install nbdkit and its curl plugin)");
    while !sock.exists() {
        if let Ok(Some(st)) = nbdkit.try_wait() {
            panic!("nbdkit curl exited with {st}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = Command::new("nbdcopy")
        .arg("--flush")
        .arg(format!("nbd+unix:///?socket={}", sock.display()))
        .arg(out)
        .status()
        .expect("run nbdcopy");
    let secs = t.elapsed().as_secs_f64();
    let _ = nbdkit.kill();
    let _ = nbdkit.wait();
    assert!(st.success(), "nbdcopy failed");
    secs
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mib: u64 = args
        .iter()
        .position(|a| a == "--mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 64 } else { 1024 });
    let size = mib << 20;
    let t = Instant::now();
    let sim = Vcsim::start(VcsimOptions {
        disk_size: 1 << 20,
        disks: vec![LabDisk { vm: VM, format: LabDiskFormat::Flat, size: Some(size) }],
        ..VcsimOptions::default()
    });
    eprintln!("vcsim with a {mib} MiB flat disk ready in {:.1}s", t.elapsed().as_secs_f64());
    let dir = tempfile::tempdir_in(sim.datastore_dir.parent().expect("sim dir")).expect("tmp");
    let want = sha_file(&sim.flat_file(VM));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // nbdkit's session: held open for the whole run.
    let session = rt.block_on(vmigrate_vsphere::Client::connect(&sim.connect_options())).expect("login for nbdkit");
    let cookie = session.cookie().expect("session cookie");
    let out = dir.path().join("out.raw");
    // Alternate the two tools; best of two each.
    let (mut best_ours, mut best_curl) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        let (secs, _) = rt.block_on(ours(&sim, &out));
        assert_eq!(sha_file(&out), want, "vmigrate output differs from the disk");
        eprintln!("  round {}: vmigrate {secs:.3}s", round + 1);
        best_ours = best_ours.min(secs);
        let secs = nbdkit_curl(&sim, &cookie, dir.path(), &out);
        assert_eq!(sha_file(&out), want, "nbdcopy output differs from the disk");
        eprintln!("  round {}: nbdkit curl + nbdcopy {secs:.3}s", round + 1);
        best_curl = best_curl.min(secs);
    }
    let mbs = |s: f64| size as f64 / 1e6 / s;
    println!("HTTPS /folder read of a {mib} MiB flat disk into a file (vcsim, durable, best of 3)");
    println!("{:<26} {:>10} {:>10}", "reader", "seconds", "MB/s");
    println!("{:<26} {:>10.3} {:>10.1}", "vmigrate (engine)", best_ours, mbs(best_ours));
    println!("{:<26} {:>10.3} {:>10.1}", "nbdkit curl + nbdcopy", best_curl, mbs(best_curl));
    let ratio = best_curl / best_ours;
    println!("speed-up: {ratio:.2}x (target >= 2x)");
    if ratio < 2.0 && !quick {
        eprintln!("below the 2x target");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
