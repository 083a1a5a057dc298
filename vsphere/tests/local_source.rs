//! The `vmx:///` source over a datastore folder built from realistic VMX fixtures
//! (`test_data/`) and disks written by qemu-img and our writer.

mod vmdk_common;

use std::path::Path;

use vmdk_common::*;
use vmigrate_core::model::{DiskMode, Firmware, NetworkKind, NicModel, PowerState};
use vmigrate_core::{ErrorCode, SourceProvider, VmId};
use vmigrate_vsphere::local::LocalSource;
use vmigrate_vsphere::vmdk::write_monolithic_sparse;

const TEST_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test_data");

fn fixture(name: &str, to: &Path) {
    std::fs::copy(Path::new(TEST_DATA).join(name), to).expect("copy fixture");
}

/// Build the datastore; returns the raw sources of the disks we read back.
fn build(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let web = root.join("winweb01");
    let db = root.join("database");
    let legacy = root.join("legacy");
    let broken = root.join("broken");
    for d in [&web, &db, &legacy, &broken] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let raws = root.join(".raws");
    std::fs::create_dir_all(&raws).expect("mkdir");

    fixture("winweb01.vmx", &web.join("winweb01.vmx"));
    let web_raw = raws.join("web.raw");
    make_raw(&web_raw, 16 << 20, 21, 20);
    convert(&web_raw, "monolithicSparse", &web.join("winweb01.vmdk"));

    fixture("database.vmx", &db.join("database.vmx"));
    fixture("database.vmsd", &db.join("database.vmsd"));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8 | 1).collect();
    write_monolithic_sparse(&db.join("database.vmdk"), 24 << 20, [(1u64 << 20, &data[..])]).expect("writer");
    let db1_raw = raws.join("db1.raw");
    make_raw(&db1_raw, 8 << 20, 5, 10);
    convert(&db1_raw, "monolithicFlat", &db.join("database_1.vmdk"));
    std::fs::create_dir(db.join("database.vmx.lck")).expect("lock dir");

    fixture("legacy.vmx", &legacy.join("legacy.vmx"));
    fixture("legacy_2.vmdk", &legacy.join("legacy_2.vmdk"));
    let l_raw = raws.join("legacy.raw");
    make_raw(&l_raw, 4 << 20, 9, 5);
    convert(&l_raw, "streamOptimized", &legacy.join("legacy.vmdk"));
    write_monolithic_sparse(&legacy.join("legacy_1.vmdk"), 2 << 20, [(0u64, &b"shared"[..])]).expect("writer");

    std::fs::write(broken.join("broken.vmx"), "displayName = \"unterminated\n").expect("write");
    (web_raw, db1_raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_maps_realistic_vmx_files() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("datastore1");
    std::fs::create_dir(&root).expect("mkdir");
    let (web_raw, db1_raw) = build(&root);
    let url = format!("vmx://{}?datastore=WorkloadDatastore", root.display());
    let src = LocalSource::from_url(&url).expect("open source");
    assert_eq!(src.kind(), "vmx");
    assert_eq!(src.capabilities(), Default::default());
    let inv = src.inventory().await.expect("inventory");
    assert_eq!(
        inv.vms.len(),
        3,
        "the broken vmx is skipped: {:?}",
        inv.vms.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    assert_eq!(inv.datastores.len(), 1);
    assert_eq!(inv.datastores[0].name, "WorkloadDatastore");
    // The folder's file system reports real figures, as vCenter does for a datastore.
    assert!(inv.datastores[0].capacity_bytes > 0 && inv.datastores[0].free_bytes > 0, "{:?}", inv.datastores[0]);
    assert!(inv.datastores[0].free_bytes <= inv.datastores[0].capacity_bytes);
    assert!(inv.hosts.is_empty());
    let nets: Vec<(&str, NetworkKind)> = inv.networks.iter().map(|n| (n.name.as_str(), n.kind)).collect();
    assert_eq!(
        nets,
        vec![
            ("Legacy VLAN 30", NetworkKind::Standard),
            ("VM Network", NetworkKind::Standard),
            ("dvportgroup-1021", NetworkKind::Distributed)
        ]
    );

    let web = inv.find_vm("winweb01 \"IIS\"").expect("winweb01");
    assert_eq!(web.id.source_ref, "winweb01/winweb01.vmx");
    assert_eq!(web.id.bios_uuid.as_deref(), Some("421a8c2e-4f5b-6d7e-8f90-a1b2c3d4e5f6"));
    assert_eq!(web.id.instance_uuid.as_deref(), Some("501a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"));
    assert_eq!(web.guest_id, "windows2019srv_64Guest");
    assert_eq!(web.guest_full_name, "Microsoft Windows Server 2019 (64-bit)");
    assert_eq!((web.firmware, web.secure_boot, web.tpm, web.cbt_enabled), (Firmware::Efi, true, true, true));
    assert_eq!((web.cpu_sockets, web.cores_per_socket, web.memory_mib), (2, 2, 8192));
    assert_eq!(web.power_state, PowerState::PoweredOff);
    assert!(web.passthrough_devices.is_empty(), "the virtual USB mouse is not passthrough");
    assert_eq!(web.nics.len(), 1);
    assert_eq!(web.nics[0].mac, "00:50:56:9a:1b:2c");
    assert_eq!(web.nics[0].network.as_deref(), Some("VM Network"));
    assert_eq!(web.nics[0].model, NicModel::Vmxnet3);
    assert_eq!(web.cdroms.len(), 1);
    assert!(web.cdroms[0].start_connected);
    assert_eq!(
        web.cdroms[0].iso.as_deref(),
        Some("/vmfs/volumes/5f1e2d3c-a1b2c3d4-e5f6-001122334455/iso/en_windows_server_2019_x64.iso")
    );
    assert_eq!(web.disks.len(), 1);
    let d = &web.disks[0];
    assert_eq!(d.file, "[WorkloadDatastore] winweb01/winweb01.vmdk");
    assert_eq!(d.datastore.as_deref(), Some("WorkloadDatastore"));
    assert_eq!((d.capacity_bytes, d.thin, d.rdm, d.shared), (16 << 20, true, false, false));
    assert_eq!(d.unit.as_deref(), Some("0:0"));

    let db = inv.find_vm("database").expect("database");
    assert_eq!(db.guest_id, "rhel8_64Guest");
    assert_eq!(db.os_id, "rhel8.0");
    assert_eq!(db.power_state, PowerState::PoweredOn, "a .lck directory means running");
    assert_eq!(db.snapshots.len(), 1);
    assert_eq!(db.snapshots[0].name, "before mariadb upgrade");
    assert_eq!(db.disks.iter().map(|d| d.capacity_bytes).collect::<Vec<_>>(), vec![24 << 20, 8 << 20]);
    assert!(!db.disks[1].thin, "monolithicFlat is thick");
    assert_eq!(db.nics[1].mac, "00:50:56:3f:00:10");
    assert_eq!(db.nics[1].network.as_deref(), Some("dvportgroup-1021"));
    assert_eq!(db.nics[1].model, NicModel::E1000e);
    assert!(!db.nics[1].connected);
    assert_eq!(db.cdroms.len(), 1);
    assert_eq!(db.cdroms[0].iso, None, "a host CD drive is not an ISO");

    let legacy = inv.find_vm("legacy-app").expect("legacy");
    assert_eq!(legacy.guest_id, "centos7_64Guest");
    assert_eq!(legacy.os_id, "centos7.0");
    assert_eq!(legacy.disks.len(), 3, "the absent nvme disk is not listed");
    assert_eq!(legacy.disks[1].mode, DiskMode::IndependentPersistent);
    assert!(legacy.disks[1].shared);
    assert!(legacy.disks[2].rdm);
    assert_eq!(legacy.disks[2].capacity_bytes, 41_943_040 * 512);
    assert_eq!(legacy.passthrough_devices, vec!["PCI device 0 (00000:059:00.0)".to_owned()]);
    assert_eq!(legacy.nics[0].model, NicModel::E1000);

    // Disks read through the source equal their raw sources.
    for (vm, idx, raw) in [(web, 0usize, &web_raw), (db, 1, &db1_raw)] {
        let disk = src.open_disk(&vm.id, &vm.disks[idx], None).await.expect("open disk");
        let out = dir.path().join("out.raw");
        copy_to_raw(disk.as_ref(), &out).await;
        let (same, msg) = qemu_compare("raw", raw, "raw", &out);
        assert!(same, "{}: {msg}", vm.name);
    }
    let legacy_disk = src.open_disk(&legacy.id, &legacy.disks[0], None).await.expect("stream disk");
    assert_eq!(legacy_disk.size(), 4 << 20);
    let rdm = src.open_disk(&legacy.id, &legacy.disks[2], None).await.map(|_| ()).expect_err("rdm");
    assert_eq!(rdm.code(), ErrorCode::SourceDiskFormat);

    // vm() re-reads one VMX; unknown ids are typed errors.
    let again = src.vm(&web.id).await.expect("vm");
    assert_eq!(&again, web);
    let missing =
        src.vm(&VmId { source_ref: "nope/nope.vmx".into(), ..Default::default() }).await.expect_err("missing");
    assert_eq!(missing.code(), ErrorCode::VmNotFound);
    let escape = src.vm(&VmId { source_ref: "../x.vmx".into(), ..Default::default() }).await.expect_err("escape");
    assert_eq!(escape.code(), ErrorCode::VmNotFound);
    assert_eq!(src.power_on(&web.id).await.expect_err("read-only").code(), ErrorCode::Unsupported);
}

#[test]
fn datastore_name_defaults_and_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("lab-ds");
    std::fs::create_dir(&root).expect("mkdir");
    assert_eq!(LocalSource::open(&root).expect("open").datastore_name(), "lab-ds");
    std::fs::write(root.join(".vmigrate-datastore"), "WorkloadDatastore\n").expect("write");
    assert_eq!(LocalSource::open(&root).expect("open").datastore_name(), "WorkloadDatastore");
    let url = format!("vmx://{}?datastore=Other", root.display());
    assert_eq!(LocalSource::from_url(&url).expect("url").datastore_name(), "Other");
    for bad in
        ["https://vc/sdk", "vmx://host/path", "vmx:///definitely/not/here", &format!("vmx://{}?x=1", root.display())]
    {
        assert_eq!(LocalSource::from_url(bad).expect_err(bad).code(), ErrorCode::BadUrl, "{bad}");
    }
}
