//! Issue 14 items 3, 13 and 15: a `vmx://` datastore folder can only make vmigrate read files
//! inside it. Extents, VMX names and delta parents that point outside (`../`, absolute names,
//! symlinks out) are refused with `UnsafePath`, FIFOs are refused rather than waited on, and a
//! linked clone whose parent lives in another folder of the datastore is read through it.

use std::path::Path;
use std::time::Duration;

use vmigrate_core::{BlockTransport, Disk, ErrorCode, SourceProvider, VmId};
use vmigrate_vsphere::local::LocalSource;
use vmigrate_vsphere::vmdk::{open_vmdk, write_monolithic_sparse};

const SECRET: &[u8] = b"root:x:0:0:host secret that must never reach an output disk\n";
const SECTORS: u64 = 8; // 4 KiB disks

fn flat_descriptor(extent: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW {SECTORS} FLAT \"{extent}\" 0\n"
    )
}

fn vmx(disk: &str) -> String {
    format!(
        "config.version = \"8\"\nvirtualHW.version = \"13\"\ndisplayName = \"vm\"\nscsi0.present = \"TRUE\"\nscsi0.virtualDev = \"lsilogic\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"{disk}\"\n"
    )
}

/// A datastore with one VM whose disk descriptor names `extent`; the host secret sits next to
/// the datastore (outside it).
fn datastore(extent: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let top = tempfile::tempdir().expect("tmp");
    std::fs::write(top.path().join("secret"), SECRET.repeat(4096 / SECRET.len() + 1)).expect("secret");
    let root = top.path().join("ds");
    std::fs::create_dir_all(root.join("vm")).expect("mkdir");
    std::fs::write(root.join("vm/vm.vmx"), vmx("disk.vmdk")).expect("vmx");
    std::fs::write(root.join("vm/disk.vmdk"), flat_descriptor(extent)).expect("descriptor");
    (top, root)
}

async fn open_first_disk(root: &Path) -> vmigrate_core::Result<Box<dyn BlockTransport>> {
    let src = LocalSource::open(root)?;
    let vm = src.vm(&VmId { source_ref: "vm/vm.vmx".into(), ..Default::default() }).await?;
    let disk: Disk =
        vm.disks.first().cloned().unwrap_or_else(|| Disk { file: "disk.vmdk".into(), ..Default::default() });
    src.open_disk(&vm.id, &disk, None).await
}

#[tokio::test]
async fn extents_outside_the_datastore_are_refused() {
    let relative_escape = "../../secret";
    let (top, root) = datastore(relative_escape);
    let e = open_first_disk(&root).await.expect_err("relative escape");
    assert_eq!(e.code(), ErrorCode::UnsafePath, "{e}");

    // An absolute name outside the root never opens the host file: it falls back to its file
    // name inside the VM folder, which does not exist.
    let abs = top.path().join("secret");
    let (_top2, root2) = datastore(&abs.display().to_string());
    let e = open_first_disk(&root2).await.expect_err("absolute escape");
    assert_eq!(e.code(), ErrorCode::SourceFileMissing, "{e}");

    // Symlinks out of the datastore, absolute or relative, for the extent and for the
    // descriptor itself.
    for (what, target) in [("absolute", abs.display().to_string()), ("relative", "../../secret".to_owned())] {
        let (_t, r) = datastore("disk-flat.vmdk");
        std::os::unix::fs::symlink(&target, r.join("vm/disk-flat.vmdk")).expect("symlink");
        let e = open_first_disk(&r).await.expect_err(what);
        assert_eq!(e.code(), ErrorCode::UnsafePath, "{what} extent link: {e}");
        let (_t, r) = datastore("disk-flat.vmdk");
        std::fs::remove_file(r.join("vm/disk.vmdk")).expect("rm");
        let outside_desc = top.path().join("outside.vmdk");
        std::fs::write(&outside_desc, flat_descriptor(&abs.display().to_string())).expect("write");
        std::os::unix::fs::symlink(&outside_desc, r.join("vm/disk.vmdk")).expect("symlink");
        let e = open_first_disk(&r).await.expect_err("descriptor link");
        assert_eq!(e.code(), ErrorCode::UnsafePath, "descriptor link: {e}");
    }

    // The VM id itself, and a VMX that is a symlink out.
    let (_t, r) = datastore("disk-flat.vmdk");
    std::fs::write(top.path().join("evil.vmx"), vmx("disk.vmdk")).expect("vmx");
    std::os::unix::fs::symlink(top.path().join("evil.vmx"), r.join("vm/link.vmx")).expect("symlink");
    let src = LocalSource::open(&r).expect("open");
    let e = src.vm(&VmId { source_ref: "vm/link.vmx".into(), ..Default::default() }).await.expect_err("vmx link");
    assert_eq!(e.code(), ErrorCode::UnsafePath, "{e}");
    let e = src.vm(&VmId { source_ref: "../evil.vmx".into(), ..Default::default() }).await.expect_err("vmx id");
    assert_eq!(e.code(), ErrorCode::VmNotFound, "{e}");
}

#[tokio::test]
async fn a_fifo_extent_is_refused_not_waited_on() {
    let (_top, root) = datastore("disk-flat.vmdk");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("vm/disk-flat.vmdk"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_bits_truncate(0o600),
        0,
    )
    .expect("mkfifo");
    let r = tokio::time::timeout(Duration::from_secs(10), open_first_disk(&root)).await.expect("no hang");
    assert_eq!(r.expect_err("fifo").code(), ErrorCode::UnsafePath);
    // The descriptor itself as a FIFO, through the standalone reader too.
    std::fs::remove_file(root.join("vm/disk.vmdk")).expect("rm");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("vm/disk.vmdk"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_bits_truncate(0o600),
        0,
    )
    .expect("mkfifo");
    let r =
        tokio::time::timeout(Duration::from_secs(10), open_vmdk(&root.join("vm/disk.vmdk"))).await.expect("no hang");
    assert_eq!(r.expect_err("fifo").code(), ErrorCode::UnsafePath);
}

/// A delta whose parent lives in another folder of the datastore (a linked clone): the parent
/// is found relative to the delta's descriptor, and its own extent relative to the parent's.
/// A parent hint that climbs out of the datastore is refused.
#[tokio::test]
async fn linked_clone_parent_in_another_folder_is_read_and_escapes_are_refused() {
    let top = tempfile::tempdir().expect("tmp");
    let root = top.path().join("ds");
    std::fs::create_dir_all(root.join("base")).expect("mkdir");
    std::fs::create_dir_all(root.join("clone")).expect("mkdir");
    let size = 1u64 << 20;
    let base: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(root.join("base/base-flat.vmdk"), &base).expect("base");
    std::fs::write(
        root.join("base/base.vmdk"),
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=0000000a\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW {} FLAT \"base-flat.vmdk\" 0\n",
            size / 512
        ),
    )
    .expect("base descriptor");
    // The delta: one 64 KiB grain of its own, the rest from the parent.
    let own = vec![0xeeu8; 64 << 10];
    write_monolithic_sparse(&root.join("clone/clone-delta.vmdk"), size, [(0u64, &own[..])]).expect("delta");
    let clone_desc = |hint: &str| {
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=0000000b\nparentCID=0000000a\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"{hint}\"\n\nRW {} SPARSE \"clone-delta.vmdk\"\n",
            size / 512
        )
    };
    std::fs::write(root.join("clone/clone.vmdk"), clone_desc("../base/base.vmdk")).expect("clone descriptor");
    std::fs::write(root.join("clone/clone.vmx"), vmx("clone.vmdk")).expect("vmx");

    let src = LocalSource::open(&root).expect("open");
    let vm = src.vm(&VmId { source_ref: "clone/clone.vmx".into(), ..Default::default() }).await.expect("vm");
    let disk = src.open_disk(&vm.id, &vm.disks[0], None).await.expect("linked clone opens");
    let got = disk.read_at(0, size as usize).await.expect("read");
    assert_eq!(&got[..own.len()], &own[..], "the delta's own grain");
    assert_eq!(&got[own.len()..], &base[own.len()..], "the rest comes from the parent in ../base");

    // The parent hint climbing out of the datastore (to a copy of the base there) is refused.
    std::fs::create_dir_all(top.path().join("base")).expect("mkdir");
    std::fs::write(top.path().join("base/base-flat.vmdk"), SECRET.repeat(size as usize / SECRET.len() + 1))
        .expect("outside");
    for hint in ["../../base/base.vmdk", "/etc/passwd"] {
        std::fs::write(root.join("clone/clone.vmdk"), clone_desc(hint)).expect("clone descriptor");
        let r = src.open_disk(&vm.id, &vm.disks[0], None).await;
        let e = r.expect_err(hint);
        assert!(matches!(e.code(), ErrorCode::UnsafePath | ErrorCode::SourceFileMissing), "{hint}: {e}");
    }
}

/// What a guest inspection may open: the VM's descriptors inside the datastore, and nothing
/// for a VMX whose disk name climbs out of it. (The executor also opens every disk through
/// the contained reader first, so an extent escaping the datastore is never inspected.)
#[tokio::test]
async fn local_disk_files_name_only_descriptors_inside_the_datastore() {
    let (_top, root) = datastore("disk-flat.vmdk");
    let src = LocalSource::open(&root).expect("open");
    let vm = src.vm(&VmId { source_ref: "vm/vm.vmx".into(), ..Default::default() }).await.expect("vm");
    assert_eq!(src.local_disk_files(&vm), Some(vec![root.join("vm/disk.vmdk")]));
    let mut escaping = vm.clone();
    escaping.disks[0].file = "../../secret".into();
    assert_eq!(src.local_disk_files(&escaping), None);
    let mut rdm = vm.clone();
    rdm.disks[0].rdm = true;
    assert_eq!(src.local_disk_files(&rdm), None, "a raw device mapping is not in the folder");
}
