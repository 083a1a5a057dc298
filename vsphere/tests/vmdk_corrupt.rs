//! Corrupt and truncated VMDKs, and random input to the parsers: typed errors, never a panic,
//! never a short read.

use std::path::Path;

use proptest::prelude::*;
use vmigrate_core::{ErrorCode, ExtentKind};
use vmigrate_vsphere::vmdk::header::SparseHeader;
use vmigrate_vsphere::vmdk::{open_vmdk, parse_descriptor, write_monolithic_sparse};
use vmigrate_vsphere::vmx::parse_vmx;

const CAP: u64 = 1 << 20;

fn sparse_image(dir: &Path) -> Vec<u8> {
    let p = dir.join("base.vmdk");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 | 1).collect();
    write_monolithic_sparse(&p, CAP, [(0u64, &data[..]), (700_000, &data[..50_000])]).expect("write");
    std::fs::read(&p).expect("read back")
}

/// Open and read everything; the only acceptable outcomes are exact data or a typed error.
async fn exercise(path: &Path) -> Result<(), ErrorCode> {
    let disk = open_vmdk(path).await.map_err(|e| e.code())?;
    let size = disk.size();
    let mut pos = 0;
    while pos < size {
        let n = (size - pos).min(256 << 10) as usize;
        let b = disk.read_at(pos, n).await.map_err(|e| e.code())?;
        assert_eq!(b.len(), n, "short read without an error");
        pos += n as u64;
    }
    let mut pos = 0;
    while pos < size {
        let ex = disk.extents(pos, size - pos, ExtentKind::Allocation).await.map_err(|e| e.code())?;
        assert!(!ex.is_empty() && ex[0].offset == pos);
        pos = ex.last().map(|e| e.end()).unwrap_or(size);
    }
    Ok(())
}

/// The error code of a result that must be an error (without printing a large Ok value).
fn code<T>(r: vmigrate_core::Result<T>, what: &str) -> ErrorCode {
    match r {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => e.code(),
    }
}

fn acceptable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::SourceDiskFormat | ErrorCode::ShortRead | ErrorCode::SourceFileMissing)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_sparse_files_fail_typed(
        flips in proptest::collection::vec((0usize..70_000, any::<u8>()), 1..12),
        truncate in proptest::option::of(0usize..300_000),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut img = sparse_image(dir.path());
        for (at, v) in flips {
            if at < img.len() { img[at] = v; }
        }
        if let Some(t) = truncate { img.truncate(t.min(img.len())); }
        let p = dir.path().join("bad.vmdk");
        std::fs::write(&p, &img).expect("write");
        if let Err(code) = runtime().block_on(exercise(&p)) {
            prop_assert!(acceptable(code), "unexpected error code {code:?}");
        }
    }

    #[test]
    fn descriptor_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_descriptor(&bytes);
    }

    #[test]
    fn descriptor_like_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("createType=\"monolithicFlat\"".to_owned()),
                Just("parentCID=zz".to_owned()),
                "(RW|RDONLY|NOACCESS) [0-9]{0,22} (FLAT|SPARSE|ZERO|VMFS|BOGUS)( \"[a-z .\"]{0,12}\")?( [0-9-]{0,21})?",
                "ddb\\.[a-z]{1,8} = \"[^\"]{0,10}\"",
                "[ -~]{0,40}",
            ],
            0..12,
        )
    ) {
        let text = lines.join("\n");
        if let Ok(d) = parse_descriptor(text.as_bytes()) {
            let _ = d.capacity_bytes();
        }
    }

    #[test]
    fn sparse_header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(h) = SparseHeader::parse(&bytes) {
            // Whatever it accepts is bounded.
            prop_assert!(h.gd_entries() <= vmigrate_vsphere::vmdk::header::MAX_GD_ENTRIES);
            prop_assert!(h.grain_bytes() <= 32 << 20);
        }
    }

    #[test]
    fn sparse_header_fields_never_panic(
        version in 0u32..5, flags in any::<u32>(), capacity in any::<u64>(), grain in any::<u64>(),
        gtes in any::<u32>(), gd in any::<u64>(), desc in any::<u64>(), desc_size in any::<u64>(),
    ) {
        let h = SparseHeader {
            version, flags, capacity, grain_size: grain, descriptor_offset: desc, descriptor_size: desc_size,
            num_gtes_per_gt: gtes, rgd_offset: 0, gd_offset: gd, over_head: 0, unclean_shutdown: false,
            compress_algorithm: (flags & 3) as u16,
        };
        let _ = SparseHeader::parse(&h.to_bytes());
    }

    #[test]
    fn vmx_parser_never_panics(text in "(?s).{0,2000}") {
        let _ = parse_vmx(&text);
    }

    #[test]
    fn vmx_like_text_never_panics(
        lines in proptest::collection::vec(
            "[a-zA-Z0-9:.]{0,20} ?= ?\"?([^\"\n]|\\|[0-9A-Fa-f]{0,2}){0,20}\"?( #.*)?", 0..20)
    ) {
        if let Ok(v) = parse_vmx(&lines.join("\n")) {
            let _ = vmigrate_vsphere::vmx::vmx_to_vm(
                &v,
                "vm/vm.vmx",
                vmigrate_vsphere::vmx::VmxLocation { datastore: "ds", folder: "vm" },
                &|_| None,
            );
        }
    }
}

#[tokio::test]
async fn specific_corruptions_have_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = sparse_image(dir.path());
    let p = dir.path().join("c.vmdk");
    let h = SparseHeader::parse(&img[..512]).expect("our header parses");

    // A grain table entry pointing far past the end of the file.
    let mut bad = img.clone();
    let gt0 = u32::from_le_bytes(bad[(h.gd_offset * 512) as usize..][..4].try_into().expect("4 bytes")) as usize * 512;
    bad[gt0..gt0 + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    std::fs::write(&p, &bad).expect("write");
    let disk = open_vmdk(&p).await.expect("metadata reads");
    assert_eq!(code(disk.read_at(0, 4096).await, "gte past eof"), ErrorCode::SourceDiskFormat);

    // Truncated in the middle of the data grains.
    std::fs::write(&p, &img[..img.len() - 40_000]).expect("write");
    let disk = open_vmdk(&p).await.expect("metadata reads");
    assert_eq!(code(disk.read_at(700_000, 50_000).await, "grain cut off"), ErrorCode::SourceDiskFormat);

    // Truncated header, wrong magic, absurd capacity.
    std::fs::write(&p, &img[..60]).expect("write");
    assert_eq!(code(open_vmdk(&p).await, "truncated"), ErrorCode::SourceDiskFormat);
    let mut bad = img.clone();
    bad[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&p, &bad).expect("write");
    assert_eq!(code(open_vmdk(&p).await, "absurd capacity"), ErrorCode::SourceDiskFormat);
    let mut bad = img.clone();
    bad[0] = b'X';
    std::fs::write(&p, &bad).expect("write");
    assert_eq!(code(open_vmdk(&p).await, "bad magic"), ErrorCode::SourceDiskFormat);

    // Flat descriptors: missing extent file, extent shorter than declared.
    let d = dir.path().join("flat.vmdk");
    std::fs::write(&d, "createType=\"monolithicFlat\"\nRW 2048 FLAT \"flat-flat.vmdk\" 0\n").expect("write");
    assert_eq!(code(open_vmdk(&d).await, "missing"), ErrorCode::SourceFileMissing);
    std::fs::write(dir.path().join("flat-flat.vmdk"), vec![1u8; 1000]).expect("write");
    assert_eq!(code(open_vmdk(&d).await, "short extent"), ErrorCode::SourceDiskFormat);
    std::fs::write(dir.path().join("flat-flat.vmdk"), vec![7u8; 2048 * 512 + 512]).expect("write");
    std::fs::write(&d, "createType=\"monolithicFlat\"\nRW 2048 FLAT \"flat-flat.vmdk\" 1\nRW 8 ZERO\n").expect("write");
    let disk = open_vmdk(&d).await.expect("flat with offset");
    assert_eq!(disk.size(), 2056 * 512);
    let b = disk.read_at(2048 * 512 - 2, 4).await.expect("read across flat and zero");
    assert_eq!(&b[..], &[7, 7, 0, 0]);

    // RDM descriptors are reported, not read.
    std::fs::write(&d, "createType=\"vmfsPassthroughRawDeviceMap\"\nRW 2048 VMFSRAW \"x-rdmp.vmdk\"\n").expect("write");
    assert_eq!(code(open_vmdk(&d).await, "rdm"), ErrorCode::SourceDiskFormat);
}
