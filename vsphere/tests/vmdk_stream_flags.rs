//! streamOptimized VMDKs written by real `qemu-img`, then mutated where the header's flags and the
//! grains can disagree (compressed flag, markers flag, compressAlgorithm, grain marker sizes).
//! Each case is either refused by both qemu-img and us, or read identically by both; where
//! qemu-img reads a grain's marker and deflate bytes as disk data, we refuse. Never do we answer
//! bytes that differ from what qemu-img reads.

mod vmdk_common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use vmdk_common::*;
use vmigrate_core::ErrorCode;
use vmigrate_vsphere::vmdk::header::{FLAG_COMPRESSED, FLAG_MARKERS};
use vmigrate_vsphere::vmdk::open_vmdk;

const SIZE: u64 = 8 << 20;

/// A raw image with scattered data and the streamOptimized VMDK qemu-img makes of it.
fn stream_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let raw = dir.join("src.raw");
    make_raw(&raw, SIZE, 41, 12);
    let vmdk = dir.join("src.vmdk");
    let (r, v) = (raw.display().to_string(), vmdk.display().to_string());
    qemu_img(&["convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", &r, &v]);
    (raw, std::fs::read(&vmdk).expect("read vmdk"))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// File offset of the marker of the first allocated grain (qemu-img writes the grain directory
/// in place, not in a footer).
fn first_grain_marker(img: &[u8]) -> usize {
    let gd = u64_at(img, 56) as usize * 512;
    assert_ne!(u64_at(img, 56), u64::MAX, "qemu-img wrote the grain directory in place");
    let gt = u32_at(img, gd) as usize * 512;
    let per = u32_at(img, 44) as usize;
    let gte = (0..per).map(|i| u32_at(img, gt + 4 * i)).find(|&s| s > 1).expect("an allocated grain");
    gte as usize * 512
}

/// qemu-img's read of `vmdk` as raw, or `None` when it refuses.
fn qemu_read(vmdk: &Path, out: &Path) -> Option<PathBuf> {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(vmdk)
        .arg(out)
        .output()
        .expect("run qemu-img");
    st.status.success().then(|| out.to_path_buf())
}

/// Our read of `vmdk` as raw (every byte, as the copy does), or the error.
async fn our_read(vmdk: &Path, out: &Path) -> Result<PathBuf, vmigrate_core::Error> {
    let disk = open_vmdk(vmdk).await?;
    let f = std::fs::File::create(out).expect("create out");
    f.set_len(disk.size()).expect("size out");
    let mut pos = 0;
    while pos < disk.size() {
        let n = (disk.size() - pos).min(1 << 20) as usize;
        let b = disk.read_at(pos, n).await?;
        assert_eq!(b.len(), n, "short read without an error");
        f.write_all_at(&b, pos).expect("write out");
        pos += n as u64;
    }
    Ok(out.to_path_buf())
}

#[derive(Debug, PartialEq)]
enum Want {
    /// Both read it, identically, and equal to the source.
    BothReadSource,
    /// Both refuse.
    BothRefuse,
    /// We refuse; qemu-img copies the grains' marker and deflate bytes as disk data.
    WeRefuseQemuReadsGarbage,
}

async fn check(dir: &Path, raw: &Path, name: &str, img: &[u8], want: Want, why: &str) {
    let vmdk = dir.join(format!("{name}.vmdk"));
    std::fs::write(&vmdk, img).expect("write mutated");
    let theirs = qemu_read(&vmdk, &dir.join(format!("{name}.qemu.raw")));
    let ours = our_read(&vmdk, &dir.join(format!("{name}.ours.raw"))).await;
    // The invariant for every case: if we answer, qemu-img answers the same bytes.
    if let Ok(o) = &ours {
        let t = theirs.as_ref().unwrap_or_else(|| panic!("{name}: we read a file qemu-img refuses"));
        let (same, msg) = qemu_compare("raw", t, "raw", o);
        assert!(same, "{name}: our bytes differ from qemu-img's: {msg}");
    }
    match want {
        Want::BothReadSource => {
            let o = ours.unwrap_or_else(|e| panic!("{name}: refused: {}", e.report()));
            let (same, msg) = qemu_compare("raw", raw, "raw", &o);
            assert!(same, "{name}: read differs from the source: {msg}");
        }
        Want::BothRefuse | Want::WeRefuseQemuReadsGarbage => {
            let e = ours.err().unwrap_or_else(|| panic!("{name}: read with exit 0"));
            assert_eq!(e.code(), ErrorCode::SourceDiskFormat, "{name}: {}", e.report());
            let report = e.report();
            assert!(report.contains(&format!("{name}.vmdk")) && report.contains(why), "{name}: {report}");
            if want == Want::BothRefuse {
                assert!(theirs.is_none(), "{name}: qemu-img reads it");
            } else if let Some(t) = theirs {
                let (same, _) = qemu_compare("raw", raw, "raw", &t);
                assert!(!same, "{name}: qemu-img reads the source bytes, refusing is wrong");
            }
        }
    }
}

fn with_flags(img: &[u8], clear: u32) -> Vec<u8> {
    let mut m = img.to_vec();
    let flags = u32_at(&m, 8) & !clear;
    m[8..12].copy_from_slice(&flags.to_le_bytes());
    m
}

fn with_marker_size(img: &[u8], size: u32) -> Vec<u8> {
    let mut m = img.to_vec();
    let at = first_grain_marker(img) + 8;
    m[at..at + 4].copy_from_slice(&size.to_le_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_header_flags_that_disagree_with_grains() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (raw, img) = stream_image(d);
    assert_eq!(u32_at(&img, 8) & (FLAG_COMPRESSED | FLAG_MARKERS), FLAG_COMPRESSED | FLAG_MARKERS);
    check(d, &raw, "pristine", &img, Want::BothReadSource, "").await;
    // compressAlgorithm still says deflate: qemu-img inflates, and so do we.
    check(d, &raw, "no_compressed_flag", &with_flags(&img, FLAG_COMPRESSED), Want::BothReadSource, "").await;
    // Grains behind markers read as marker-less deflate streams: qemu-img fails to inflate them.
    check(d, &raw, "no_markers_flag", &with_flags(&img, FLAG_MARKERS), Want::BothRefuse, "markers flag is clear").await;
    let mut no_algo = img.clone();
    no_algo[77..79].copy_from_slice(&0u16.to_le_bytes());
    check(d, &raw, "no_algorithm", &no_algo, Want::WeRefuseQemuReadsGarbage, "compressAlgorithm is not deflate").await;
    let markers_only = with_flags(&no_algo, FLAG_COMPRESSED);
    check(d, &raw, "markers_only", &markers_only, Want::WeRefuseQemuReadsGarbage, "grains are not compressed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_grain_marker_sizes() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (raw, img) = stream_image(d);
    let size = u32_at(&img, first_grain_marker(&img) + 8);
    let grain = (GRAIN) as u32;
    assert!(size > 16 && size + 100 <= 2 * grain, "qemu-img compressed the first grain ({size} bytes)");
    check(d, &raw, "size_zero", &with_marker_size(&img, 0), Want::BothRefuse, "bad compressed grain size").await;
    check(d, &raw, "size_short", &with_marker_size(&img, size / 2), Want::BothRefuse, "compressed grain is truncated")
        .await;
    check(
        d,
        &raw,
        "size_over_two_grains",
        &with_marker_size(&img, 2 * grain + 1),
        Want::BothRefuse,
        "bad compressed grain size",
    )
    .await;
    // Trailing bytes after the deflate stream's end are ignored by both.
    check(d, &raw, "size_long", &with_marker_size(&img, size + 100), Want::BothReadSource, "").await;
}

/// VMware's exports keep the real header in the footer: there, qemu-img and we read the footer's
/// flags and ignore the head's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_footer_flags_that_disagree_with_grains() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let raw = d.join("src.raw");
    make_raw(&raw, SIZE, 43, 12);
    let img = vmware_stream(&std::fs::read(&raw).expect("read raw"));
    let footer = img.len() - 1024;
    assert_eq!(u64_at(&img, 56), u64::MAX, "grain directory in the footer");
    check(d, &raw, "vmware", &img, Want::BothReadSource, "").await;
    // The head says plain sparse; the footer, which both follow, says stream.
    let mut head_plain = with_flags(&img, FLAG_COMPRESSED | FLAG_MARKERS);
    head_plain[77..79].copy_from_slice(&0u16.to_le_bytes());
    check(d, &raw, "head_plain", &head_plain, Want::BothReadSource, "").await;
    let mut footer_no_markers = img.clone();
    let flags = u32_at(&img, footer + 8) & !FLAG_MARKERS;
    footer_no_markers[footer + 8..footer + 12].copy_from_slice(&flags.to_le_bytes());
    check(d, &raw, "footer_no_markers", &footer_no_markers, Want::BothRefuse, "markers flag is clear").await;
    let mut footer_no_algo = img.clone();
    footer_no_algo[footer + 77..footer + 79].copy_from_slice(&0u16.to_le_bytes());
    check(d, &raw, "footer_no_algorithm", &footer_no_algo, Want::WeRefuseQemuReadsGarbage, "not deflate").await;
}
