//! Helpers shared by the VMDK and local-source tests: deterministic raw images, qemu-img, and a
//! small extent-aware copy through our reader.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use flate2::write::ZlibEncoder;
use flate2::Compression;

use vmigrate_core::{BlockTransport, ExtentKind, ExtentState};
use vmigrate_vsphere::vmdk::header::{
    marker, SparseHeader, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_TEST, GD_AT_END,
};

/// Grain size qemu-img and our writer use.
pub const GRAIN: u64 = 64 << 10;

/// Whether qemu-img can be run; under CI its absence fails the test.
pub fn have_qemu_img() -> bool {
    vmigrate_testkit::peers::have("qemu-img")
}

/// Run qemu-img and assert success.
pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `raw` converted by qemu-img to a VMDK of `subformat` at `out`, asserting success.
pub fn convert(raw: &Path, subformat: &str, out: &Path) {
    vmigrate_testkit::peers::qemu_img_to_vmdk(raw, subformat, out).unwrap_or_else(|e| panic!("{e}"));
}

/// `qemu-img compare` exit status: 0 identical, 1 different.
pub fn qemu_compare(fmt_a: &str, a: &Path, fmt_b: &str, b: &Path) -> (bool, String) {
    match vmigrate_testkit::peers::qemu_img_compare_as(fmt_a, a, fmt_b, b) {
        Ok(()) => (true, String::new()),
        Err(e) => (false, e),
    }
}

/// A tiny deterministic generator (xorshift) so images are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Write a raw image of `size` bytes: scattered random data runs, an allocated all-zero region,
/// holes everywhere else, and data in the last sector. Returns every write, in order.
pub fn make_raw(path: &Path, size: u64, seed: u64, runs: usize) -> Vec<(u64, Vec<u8>)> {
    let f = File::create(path).expect("create raw");
    f.set_len(size).expect("size raw");
    let mut rng = Rng::new(seed);
    let mut written = Vec::new();
    for _ in 0..runs {
        let len = 512 + rng.below(300 << 10) as usize;
        let off = rng.below(size - len as u64) & !511;
        let data: Vec<u8> = (0..len).map(|_| (rng.next() >> 24) as u8 | 1).collect();
        f.write_all_at(&data, off).expect("write data");
        written.push((off, data));
    }
    // Allocated zeroes (the raw file has them on disk; readers must still see zeroes).
    let zoff = (size / 3) & !(GRAIN - 1);
    let zeroes = vec![0u8; 3 * GRAIN as usize];
    f.write_all_at(&zeroes, zoff).expect("write zeroes");
    written.push((zoff, zeroes));
    let tail = vec![0xabu8; 512];
    f.write_all_at(&tail, size - 512).expect("write tail");
    written.push((size - 512, tail));
    f.sync_all().expect("sync raw");
    written
}

/// Copy a transport into a new sparse raw file the way the engine does: ask for extents per
/// range, read only data, skip zero chunks.
pub async fn copy_to_raw(src: &dyn BlockTransport, out: &Path) {
    let f = File::create(out).expect("create out");
    let size = src.size();
    f.set_len(size).expect("size out");
    let mut pos = 0u64;
    while pos < size {
        let want = (size - pos).min(64 << 20);
        let exts = src.extents(pos, want, ExtentKind::Allocation).await.expect("extents");
        assert!(!exts.is_empty(), "extents answered nothing at {pos}");
        assert_eq!(exts[0].offset, pos, "extents start where asked");
        for e in &exts {
            assert!(e.length > 0 && e.end() <= size);
            if e.state == ExtentState::Data {
                let mut at = e.offset;
                while at < e.end() {
                    let n = (e.end() - at).min(4 << 20) as usize;
                    let data = src.read_at(at, n).await.expect("read");
                    assert_eq!(data.len(), n, "short read at {at}");
                    if data.iter().any(|b| *b != 0) {
                        f.write_all_at(&data, at).expect("write out");
                    }
                    at += n as u64;
                }
            } else {
                // Zero/hole ranges must really read as zeroes.
                let n = e.length.min(1 << 20) as usize;
                let data = src.read_at(e.offset, n).await.expect("read hole");
                assert!(data.iter().all(|b| *b == 0), "{:?} at {} reads non-zero", e.state, e.offset);
            }
        }
        pos = exts.last().map(|e| e.end()).expect("non-empty");
    }
    f.sync_all().expect("sync out");
}

/// Per grain of `raw`, whether it holds a non-zero byte.
pub fn grain_has_data(raw: &Path) -> Vec<bool> {
    let data = std::fs::read(raw).expect("read raw");
    data.chunks(GRAIN as usize).map(|c| c.iter().any(|b| *b != 0)).collect()
}

/// Per grain, whether `extents()` says Data.
pub async fn grain_is_data(src: &dyn BlockTransport) -> Vec<bool> {
    let size = src.size();
    let mut out = vec![false; size.div_ceil(GRAIN) as usize];
    let mut pos = 0;
    while pos < size {
        let exts = src.extents(pos, size - pos, ExtentKind::Allocation).await.expect("extents");
        for e in &exts {
            if e.state == ExtentState::Data {
                for g in e.offset / GRAIN..e.end().div_ceil(GRAIN) {
                    out[g as usize] = true;
                }
            }
        }
        pos = exts.last().map(|e| e.end()).expect("non-empty");
    }
    out
}

/// Build a streamOptimized file the way VMware exports it: grain markers, GT and GD markers,
/// and the grain directory found through the footer.
pub fn vmware_stream(raw: &[u8]) -> Vec<u8> {
    let grain = 128u64;
    let gb = (grain * 512) as usize;
    let capacity = (raw.len() as u64).div_ceil(512);
    let grains = capacity.div_ceil(grain) as usize;
    let gd_entries = grains.div_ceil(512);
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\
         RW {capacity} SPARSE \"export.vmdk\"\nddb.adapterType = \"lsilogic\"\n"
    );
    let header = SparseHeader {
        version: 3,
        flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity,
        grain_size: grain,
        descriptor_offset: 1,
        descriptor_size: 1,
        num_gtes_per_gt: 512,
        rgd_offset: 0,
        gd_offset: GD_AT_END,
        over_head: 2,
        unclean_shutdown: false,
        compress_algorithm: 1,
    };
    let mut f = header.to_bytes().to_vec();
    let mut d = desc.into_bytes();
    d.resize(512, 0);
    f.extend(d);
    let pad = |f: &mut Vec<u8>| f.resize(f.len().div_ceil(512) * 512, 0);
    let meta_marker = |f: &mut Vec<u8>, sectors: u64, kind: u32| {
        let mut m = [0u8; 512];
        m[0..8].copy_from_slice(&sectors.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&m);
    };
    let mut gtes = vec![0u32; gd_entries * 512];
    for (g, chunk) in raw.chunks(gb).enumerate() {
        if chunk.iter().all(|b| *b == 0) {
            continue;
        }
        let mut enc = ZlibEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(chunk).expect("deflate");
        let z = enc.finish().expect("deflate");
        gtes[g] = (f.len() / 512) as u32;
        f.extend_from_slice(&(g as u64 * grain).to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        pad(&mut f);
    }
    let mut gd = Vec::new();
    for t in 0..gd_entries {
        meta_marker(&mut f, 4, marker::GT);
        gd.push((f.len() / 512) as u32);
        for e in &gtes[t * 512..(t + 1) * 512] {
            f.extend_from_slice(&e.to_le_bytes());
        }
    }
    meta_marker(&mut f, (gd_entries as u64 * 4).div_ceil(512), marker::GD);
    let gd_offset = (f.len() / 512) as u64;
    for e in gd {
        f.extend_from_slice(&e.to_le_bytes());
    }
    pad(&mut f);
    meta_marker(&mut f, 1, marker::FOOTER);
    f.extend_from_slice(&SparseHeader { gd_offset, ..header }.to_bytes());
    meta_marker(&mut f, 0, marker::EOS);
    f
}
