//! Copy benchmark: our engine against the anchor tools, in the same run, on the same images.
//!
//! `cargo run --release -p vmigrate-benches --bin copy_bench -- [--quick] [--dir DIR]`
//!
//! Every measured command runs as a child under `/usr/bin/time`, ours included (this program
//! re-executes itself with `--child`), so wall time, CPU seconds and peak RSS are measured the
//! same way for everyone. Each scenario is one function returning rows; add transports by adding
//! a scenario function and listing it in `main`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use bytes::Bytes;
use vmigrate_core::engine::{self, CopyControl, CopyOptions};
use vmigrate_core::file::{FileOptions, FileTransport};
use vmigrate_core::BlockTransport;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One measured run.
struct Row {
    scenario: &'static str,
    tool: String,
    ours: bool,
    secs: f64,
    cpu: f64,
    rss_kib: u64,
    virtual_bytes: u64,
}

/// Deterministic fast random bytes (xorshift64*), never a zero 8-byte word.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next() | 1;
            c.copy_from_slice(&v.to_le_bytes()[..c.len()]);
        }
    }
}

async fn write_extent(f: &FileTransport, rng: &mut Rng, off: u64, len: u64, zero: bool) {
    let mut pos = off;
    while pos < off + len {
        let n = (off + len - pos).min(8 * MIB) as usize;
        let mut buf = vec![0u8; n];
        if !zero {
            rng.fill(&mut buf);
        }
        f.write_at(pos, Bytes::from(buf)).await.expect("write image");
        pos += n as u64;
    }
}

/// Create the image once (kept between runs of the same size in the same directory).
async fn image(path: &Path, size: u64, kind: &str) {
    if std::fs::metadata(path).map(|m| m.len() == size).unwrap_or(false) {
        return;
    }
    let f = FileTransport::open(path, FileOptions { create_size: Some(size), ..Default::default() })
        .await
        .expect("create image");
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    match kind {
        // ~30% data in scattered extents of 64 KiB .. 16 MiB.
        "sparse30" => {
            let mut off = 0;
            while off < size {
                let len = (64 << 10) * (1 + rng.next() % 256);
                let gap = len * 7 / 3 * (50 + rng.next() % 100) / 100;
                let len = len.min(size - off);
                write_extent(&f, &mut rng, off, len, false).await;
                off = (off + len + gap) / 4096 * 4096;
            }
        }
        "full" => write_extent(&f, &mut rng, 0, size, false).await,
        "zeroes" => write_extent(&f, &mut rng, 0, size, true).await,
        other => panic!("unknown image kind {other}"),
    }
    f.flush().await.expect("flush image");
}

fn data_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0)
}

/// Run `args` under /usr/bin/time and parse wall, user+sys and max RSS.
fn timed(args: &[String]) -> Option<(f64, f64, u64)> {
    let out = Command::new("/usr/bin/time").arg("-f").arg("@@ %e %U %S %M").args(args).output().ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("  {:?} failed: {}", args, err.trim());
        return None;
    }
    let line = err.lines().rev().find(|l| l.starts_with("@@ "))?;
    let v: Vec<&str> = line[3..].split_whitespace().collect();
    let f = |i: usize| v.get(i).and_then(|s| s.parse::<f64>().ok());
    Some((f(0)?, f(1)? + f(2)?, f(3)? as u64))
}

fn prepare_target(dst: &Path) {
    let _ = std::fs::remove_file(dst);
    let _ = Command::new("sync").status();
}

fn sh(cmd: String) -> Vec<String> {
    vec!["sh".into(), "-c".into(), cmd]
}

fn measure(scenario: &'static str, tool: &str, ours: bool, src: &Path, dst: &Path, args: Vec<String>) -> Option<Row> {
    prepare_target(dst);
    let size = std::fs::metadata(src).ok()?.len();
    // nbdcopy writes into an existing file: give every tool the same fresh sparse target.
    if tool.starts_with("nbdcopy") {
        std::fs::File::create(dst).ok()?.set_len(size).ok()?;
    }
    let r = timed(&args).map(|(secs, cpu, rss_kib)| Row {
        scenario,
        tool: tool.to_string(),
        ours,
        secs,
        cpu,
        rss_kib,
        virtual_bytes: size,
    });
    if let Some(r) = &r {
        eprintln!("  {scenario:<24} {tool:<34} {:>7.3} s", r.secs);
    }
    r
}

fn ours(src: &Path, dst: &Path, extra: &[&str]) -> Vec<String> {
    let me = std::env::current_exe().expect("own path").display().to_string();
    let mut v = vec![me, "--child".into(), src.display().to_string(), dst.display().to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// File to file, durable (target flushed), for one image.
fn file_to_file_durable(scenario: &'static str, src: &Path, dst: &Path) -> Vec<Row> {
    let (s, d) = (src.display(), dst.display());
    [
        measure(scenario, "vmigrate", true, src, dst, ours(src, dst, &[])),
        measure(scenario, "vmigrate --copy-file-range", true, src, dst, ours(src, dst, &["--cfr"])),
        measure(scenario, "nbdcopy --flush", false, src, dst, sh(format!("nbdcopy --flush {s} {d}"))),
        measure(
            scenario,
            "qemu-img convert + sync",
            false,
            src,
            dst,
            sh(format!("qemu-img convert -O raw {s} {d} && sync {d}")),
        ),
        measure(
            scenario,
            "qemu-img convert -t none -W -m 8",
            false,
            src,
            dst,
            sh(format!("qemu-img convert -t none -W -m 8 -O raw {s} {d}")),
        ),
        measure(
            scenario,
            "cp --sparse=always + sync",
            false,
            src,
            dst,
            sh(format!("cp --sparse=always {s} {d} && sync {d}")),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// File to file into the page cache (no flush asked).
fn file_to_file_cached(scenario: &'static str, src: &Path, dst: &Path) -> Vec<Row> {
    let (s, d) = (src.display(), dst.display());
    [
        measure(scenario, "vmigrate --no-flush", true, src, dst, ours(src, dst, &["--no-flush"])),
        measure(scenario, "nbdcopy", false, src, dst, sh(format!("nbdcopy {s} {d}"))),
        measure(scenario, "qemu-img convert", false, src, dst, sh(format!("qemu-img convert -O raw {s} {d}"))),
        measure(
            scenario,
            "qemu-img convert -W -m 8",
            false,
            src,
            dst,
            sh(format!("qemu-img convert -W -m 8 -O raw {s} {d}")),
        ),
        measure(scenario, "cp --sparse=always", false, src, dst, sh(format!("cp --sparse=always {s} {d}"))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn print_table(rows: &[Row]) {
    println!("| scenario | tool | seconds | MB/s (virtual) | CPU s/GiB | peak RSS MiB | ours ÷ anchor speed |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let best_ours =
            rows.iter().filter(|o| o.ours && o.scenario == r.scenario).map(|o| o.secs).fold(f64::INFINITY, f64::min);
        let ratio =
            if r.ours || !best_ours.is_finite() { "—".to_string() } else { format!("{:.2}×", r.secs / best_ours) };
        println!(
            "| {} | {} | {:.3} | {:.0} | {:.2} | {:.0} | {} |",
            r.scenario,
            r.tool,
            r.secs,
            r.virtual_bytes as f64 / r.secs.max(1e-9) / 1e6,
            r.cpu / (r.virtual_bytes as f64 / GIB as f64),
            r.rss_kib as f64 / 1024.0,
            ratio
        );
    }
}

/// `--child SRC DST [--no-flush] [--cfr]`: one engine copy, measured by the parent.
async fn child(args: &[String]) -> ExitCode {
    let (src, dst) = (&args[0], &args[1]);
    let flags: Vec<&str> = args[2..].iter().map(|s| s.as_str()).collect();
    let s = FileTransport::open(src, FileOptions::default()).await.expect("open source");
    let d = FileTransport::open(dst, FileOptions { create_size: Some(s.size()), ..Default::default() })
        .await
        .expect("create target");
    let opts = CopyOptions {
        flush: !flags.contains(&"--no-flush"),
        copy_file_range: flags.contains(&"--cfr"),
        ..Default::default()
    };
    let t = Instant::now();
    match engine::copy(&s, &d, &opts, &CopyControl::new()).await {
        Ok(st) => {
            eprintln!("child: {:.3}s read {} written {}", t.elapsed().as_secs_f64(), st.bytes_read, st.bytes_written);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("child: copy failed: {}", e.report());
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if args.first().map(|a| a == "--child").unwrap_or(false) {
        return rt.block_on(child(&args[1..]));
    }
    let quick = args.iter().any(|a| a == "--quick");
    let dir: PathBuf = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/.bench-copy"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let div = if quick { 16 } else { 1 };
    let images = [("sparse30", 4 * GIB / div), ("full", GIB / div), ("zeroes", 2 * GIB / div)];
    let mut paths = Vec::new();
    rt.block_on(async {
        for (kind, size) in images {
            let p = dir.join(format!("{kind}-{}m.raw", size / MIB));
            let t = Instant::now();
            image(&p, size, kind).await;
            eprintln!(
                "image {} ready ({:.0} MiB allocated, {:.1}s)",
                p.display(),
                data_bytes(&p) as f64 / MIB as f64,
                t.elapsed().as_secs_f64()
            );
            paths.push(p);
        }
    });
    let dst = dir.join("target.raw");
    let mut rows = Vec::new();
    rows.extend(file_to_file_durable("file→file durable 30%", &paths[0], &dst));
    rows.extend(file_to_file_cached("file→file cache 30%", &paths[0], &dst));
    rows.extend(file_to_file_durable("file→file durable full", &paths[1], &dst));
    rows.extend(file_to_file_durable("file→file durable zeroes", &paths[2], &dst));
    let _ = std::fs::remove_file(&dst);
    print_table(&rows);
    if rows.iter().any(|r| r.ours) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
