//! Helpers for tests against real peers: whether a program is installed, and `qemu-img`
//! (an independent VMDK and image reader) to make source images and to compare results.

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `prog` is installed (on `PATH` or in `/usr/sbin`, where nginx lives). Under `CI` a
/// missing program fails the test instead of skipping it: a skipped proof is no proof.
///
/// # Panics
/// When `CI` is set and `prog` is missing.
pub fn have(prog: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {prog} || test -x /usr/sbin/{prog}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{prog} is required in CI but is not installed");
        eprintln!("skipping: {prog} is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// `qemu-img compare` of two images, formats probed (a VMDK against a raw output, say);
/// `Err` carries its output.
///
/// # Errors
/// The images differ, or qemu-img could not read them.
pub fn qemu_img_compare(a: &Path, b: &Path) -> Result<(), String> {
    run(Command::new("qemu-img").arg("compare").arg(a).arg(b))
}

/// `qemu-img compare` of two raw images (no format probing: a raw image that happens to start
/// like a VMDK header is still read as raw).
///
/// # Errors
/// As [`qemu_img_compare`].
pub fn qemu_img_compare_raw(a: &Path, b: &Path) -> Result<(), String> {
    qemu_img_compare_as("raw", a, "raw", b)
}

/// `qemu-img compare` of `a` read as format `fmt_a` and `b` as `fmt_b` (`raw`, `vmdk`, `qcow2`).
///
/// # Errors
/// As [`qemu_img_compare`].
pub fn qemu_img_compare_as(fmt_a: &str, a: &Path, fmt_b: &str, b: &Path) -> Result<(), String> {
    run(Command::new("qemu-img").args(["compare", "-f", fmt_a, "-F", fmt_b]).arg(a).arg(b))
}

/// Convert the raw image `raw` to a streamOptimized VMDK with qemu-img (as ovftool and vSphere
/// exports write their disks).
///
/// # Errors
/// qemu-img failed.
pub fn qemu_img_stream_optimized(raw: &Path, vmdk: &Path) -> Result<(), String> {
    qemu_img_to_vmdk(raw, "streamOptimized", vmdk)
}

/// Convert the raw image `raw` to a VMDK of `subformat` (`monolithicSparse`,
/// `twoGbMaxExtentFlat`, `streamOptimized`...) with qemu-img: VMDKs written by an independent
/// writer, for vmigrate's reader to be tested against.
///
/// # Errors
/// qemu-img failed.
pub fn qemu_img_to_vmdk(raw: &Path, subformat: &str, vmdk: &Path) -> Result<(), String> {
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(raw)
        .arg(vmdk))
}

/// Deterministic pseudo-random bytes (xorshift), never containing a zero 4 KiB block.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&(x | 1).to_le_bytes());
    }
    v.truncate(len);
    v
}
