//! The vSphere client and source against govmomi's vcsim (a real SOAP peer) with the lab
//! inventory, over TLS, with disks backed by real VMDK files.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use sha2::{Digest, Sha256};
use vmigrate_core::model::{DiskBus, Firmware, NicModel, PowerState, ToolsStatus};
use vmigrate_core::{BlockTransport, ErrorCode, ErrorKind, ExtentKind, SourceProvider};
use vmigrate_vsphere::vcsim::{LabDisk, LabDiskFormat, Vcsim, VcsimOptions};
use vmigrate_vsphere::{ConnectOptions, VsphereSource};

async fn read_all(t: &dyn BlockTransport) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.size() as usize);
    let mut off = 0;
    while off < t.size() {
        let n = ((t.size() - off) as usize).min(1 << 20);
        out.extend_from_slice(&t.read_at(off, n).await.expect("read"));
        off += n as u64;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tls_and_credentials() {
    let sim = Vcsim::start(VcsimOptions::default());
    // CA-verified.
    let ok = VsphereSource::connect(sim.connect_options()).await.expect("login with CA");
    ok.close().await.expect("logout");

    // Wrong password: typed, and the password never shows.
    let bad = ConnectOptions { password: "Wrong-Secret-123".into(), ..sim.connect_options() };
    let e = VsphereSource::connect(bad).await.expect_err("wrong password");
    assert_eq!(e.code(), ErrorCode::SourceInvalidLogin);
    assert!(!e.report().contains("Wrong-Secret-123") && !format!("{e:?}").contains("Wrong-Secret-123"));

    // Pinned thumbprint: right one passes, a wrong one is refused as TLS.
    let pinned = ConnectOptions { ca_pem: None, thumbprint: Some(sim.thumbprint.clone()), ..sim.connect_options() };
    VsphereSource::connect(pinned).await.expect("pinned thumbprint");
    let wrong = "00:".repeat(31) + "00";
    let mismatch = ConnectOptions { ca_pem: None, thumbprint: Some(wrong), ..sim.connect_options() };
    let e = VsphereSource::connect(mismatch).await.expect_err("thumbprint mismatch");
    assert_eq!(e.code(), ErrorCode::SourceTls, "{}", e.report());
    assert_eq!(e.kind(), ErrorKind::Tls);

    // Default verification (system roots) refuses the test CA; insecure accepts.
    let plain = ConnectOptions { ca_pem: None, ..sim.connect_options() };
    assert_eq!(VsphereSource::connect(plain).await.expect_err("untrusted").code(), ErrorCode::SourceTls);
    let insecure = ConnectOptions { ca_pem: None, insecure: true, ..sim.connect_options() };
    let s = VsphereSource::connect(insecure).await.expect("insecure");
    let cert = s.client().peer_certificate().expect("peer cert seen");
    assert_eq!(vmigrate_core::http::thumbprint_sha256(&cert), sim.thumbprint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_maps_lab_vms() {
    let sim = Vcsim::start(VcsimOptions::default());
    let src = VsphereSource::connect(sim.connect_options()).await.expect("connect");
    // A self-importing target reaches this endpoint through VDDK, as the source says.
    match src.import_hint() {
        Some(vmigrate_core::provider::ImportHint::Vddk { url, thumbprint }) => {
            assert_eq!(url, sim.connect_options().url);
            assert_eq!(thumbprint, sim.connect_options().thumbprint);
        }
        other => panic!("vSphere hands a VDDK hint, not {other:?}"),
    }
    let before = src.client().round_trips();
    let inv = src.inventory().await.expect("inventory");
    assert!(
        src.client().round_trips() - before <= 4,
        "inventory took {} round trips",
        src.client().round_trips() - before
    );
    let names: Vec<&str> = inv.vms.iter().map(|v| v.name.as_str()).collect();
    for n in vmigrate_vsphere::vcsim::LAB_VMS {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let db = inv.find_vm("database").expect("database");
    assert_eq!(db.guest_id, "rhel8_64Guest");
    assert_eq!(db.os_id, "rhel8.0", "the neutral OS id the source fills");
    assert_eq!(db.firmware, Firmware::Bios);
    assert_eq!((db.cpu_sockets, db.cores_per_socket, db.memory_mib), (2, 2, 8192));
    assert_eq!(db.power_state, PowerState::PoweredOff);
    assert!(db.id.bios_uuid.is_some());
    assert_eq!(db.disks.len(), 1);
    let d = &db.disks[0];
    assert_eq!(d.capacity_bytes, 4 << 20);
    assert_eq!(d.datastore.as_deref(), Some("WorkloadDatastore"));
    assert_eq!(d.file, "[WorkloadDatastore] database/database.vmdk");
    assert_eq!(d.bus, DiskBus::Scsi);
    assert_eq!(d.unit.as_deref(), Some("0:0"));
    assert!(d.thin);
    assert_eq!(db.nics.len(), 1);
    assert_eq!(db.nics[0].mac, "00:50:56:01:00:02");
    assert_eq!(db.nics[0].network.as_deref(), Some("segment-migrating-to-ocpvirt"));
    assert_eq!(db.nics[0].model, NicModel::Vmxnet3);

    let win = inv.find_vm("winweb01").expect("winweb01");
    assert_eq!(win.guest_id, "windows2019srv_64Guest");
    assert_eq!(win.os_id, "win2k19");
    assert_eq!(win.firmware, Firmware::Efi);
    assert!(win.secure_boot);
    assert_eq!(win.cdroms.len(), 1);
    assert_eq!(win.cdroms[0].iso.as_deref(), Some("[WorkloadDatastore] iso/windows2019.iso"));
    assert!(win.cdroms[0].start_connected && !win.cdroms[0].connected);

    let run = inv.find_vm("winweb02_running").expect("running");
    assert_eq!(run.power_state, PowerState::PoweredOn);
    assert_eq!(run.tools_status, ToolsStatus::Running);
    assert!(run.nics[0].ip_addresses.contains(&"192.168.123.23".parse().expect("ip")));
    assert!(run.host.is_some() && run.cluster.as_deref() == Some("DC0_C0"), "{:?} {:?}", run.host, run.cluster);

    let seg = inv.networks.iter().find(|n| n.name == "segment-migrating-to-ocpvirt").expect("segment");
    assert_eq!(seg.kind, vmigrate_core::model::NetworkKind::Distributed);
    let ds = inv.datastores.iter().find(|d| d.name == "WorkloadDatastore").expect("datastore");
    assert!(ds.capacity_bytes > 0);
    assert!(inv.hosts.len() >= 2);

    let one = src.vm(&db.id).await.expect("vm by id");
    assert_eq!(&one, db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_snapshots_cbt_and_changed_areas() {
    let sim = Vcsim::start(VcsimOptions::default());
    let src = VsphereSource::connect(sim.connect_options()).await.expect("connect");
    let inv = src.inventory().await.expect("inventory");
    let vm = inv.find_vm("database_running").expect("vm").clone();

    src.power_off(&vm.id, Some(Duration::from_secs(10))).await.expect("graceful power off");
    assert_eq!(src.vm(&vm.id).await.expect("vm").power_state, PowerState::PoweredOff);
    src.power_off(&vm.id, None).await.expect("already off is success");
    src.power_on(&vm.id).await.expect("power on");
    assert_eq!(src.vm(&vm.id).await.expect("vm").power_state, PowerState::PoweredOn);
    src.power_off(&vm.id, None).await.expect("hard power off");
    assert_eq!(src.vm(&vm.id).await.expect("vm").power_state, PowerState::PoweredOff);

    src.enable_cbt(&vm.id).await.expect("enable cbt");
    assert!(src.vm(&vm.id).await.expect("vm").cbt_enabled);
    let disk = vm.disks[0].clone();
    let flat = sim.flat_file("database_running");
    let original = std::fs::read(&flat).expect("flat file");

    let s1 = src.create_snapshot(&vm.id, "vmigrate-precopy-1").await.expect("snapshot 1");
    let c1 = s1.change_ids.get(&disk.key).expect("change id at snapshot 1").clone();
    assert_eq!(src.vm(&vm.id).await.expect("vm").snapshots.len(), 1);

    // Allocated areas: exactly the non-zero 64 KiB blocks of the pattern (first half of each MiB).
    let all = src.changed_areas(&vm.id, &disk, &s1, "*", 0).await.expect("changed *");
    assert_eq!(all.end, 4 << 20);
    let expect: Vec<_> = (0..4u64).map(|m| vmigrate_core::Extent::data(m << 20, 512 << 10)).collect();
    assert_eq!(all.extents, expect);

    // The guest writes 100 KiB at 2.5 MiB + 10 KiB; the delta is the 64 KiB blocks it touched.
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&flat).expect("open flat");
        f.seek(SeekFrom::Start((5 << 19) + 10_240)).expect("seek");
        f.write_all(&vec![0x5a; 100 << 10]).expect("write");
    }
    let s2 = src.create_snapshot(&vm.id, "vmigrate-precopy-2").await.expect("snapshot 2");
    let delta = src.changed_areas(&vm.id, &disk, &s2, &c1, 0).await.expect("delta");
    assert_eq!(delta.extents, vec![vmigrate_core::Extent::data(5 << 19, 128 << 10)]);
    assert_ne!(s2.change_ids.get(&disk.key), Some(&c1));

    // Reading at snapshot 1 gives the content of then; at snapshot 2 the new content.
    let t1 = src.open_disk(&vm.id, &disk, Some(&s1)).await.expect("open at s1");
    assert_eq!(Sha256::digest(read_all(t1.as_ref()).await), Sha256::digest(&original));
    // The allocation map comes from QueryChangedDiskAreas("*"): exactly the simulator's
    // allocated blocks, asked per range as the engine does.
    let ext = t1.extents(0, 4 << 20, ExtentKind::Allocation).await.expect("allocation from cbt");
    let blocks: Vec<_> = (0..4u64)
        .flat_map(|m| {
            [
                vmigrate_core::Extent::data(m << 20, 512 << 10),
                vmigrate_core::Extent::hole((m << 20) + (512 << 10), 512 << 10),
            ]
        })
        .collect();
    assert_eq!(ext, blocks);
    let part = t1.extents(3 << 20, 1 << 20, ExtentKind::Allocation).await.expect("allocation of one range");
    assert_eq!(part, blocks[6..]);
    let t2 = src.open_disk(&vm.id, &disk, Some(&s2)).await.expect("open at s2");
    let now = std::fs::read(&flat).expect("flat");
    assert_eq!(Sha256::digest(read_all(t2.as_ref()).await), Sha256::digest(&now));

    src.remove_snapshot(&vm.id, &s1).await.expect("remove s1");
    src.remove_snapshot(&vm.id, &s1).await.expect("removing a missing snapshot is success");
    src.remove_snapshot(&vm.id, &s2).await.expect("remove s2");
    assert!(src.vm(&vm.id).await.expect("vm").snapshots.is_empty());
    src.disable_cbt(&vm.id).await.expect("disable cbt");
    assert!(!src.vm(&vm.id).await.expect("vm").cbt_enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_read_session_expiry_and_vanishing_vm() {
    let sim = Vcsim::start(VcsimOptions::default());
    let src = VsphereSource::connect(sim.connect_options()).await.expect("connect");
    let inv = src.inventory().await.expect("inventory");
    let vm = inv.find_vm("haproxy").expect("haproxy").clone();

    // Full read over /folder, byte-equal to the file.
    let t = src.open_disk(&vm.id, &vm.disks[0], None).await.expect("open");
    assert_eq!(t.size(), 4 << 20);
    let got = read_all(t.as_ref()).await;
    let file = std::fs::read(sim.flat_file("haproxy")).expect("flat");
    assert_eq!(Sha256::digest(&got), Sha256::digest(&file));
    let clone = t.try_clone().await.expect("clone");
    assert_eq!(clone.read_at(4096, 4096).await.expect("read").as_ref(), &file[4096..8192]);

    // The session expires mid-run: the datastore read gets 401, logs in again and goes on with
    // the new cookie (every clone too); SOAP calls log in again transparently as well.
    let cookie = src.client().cookie().expect("cookie");
    assert!(sim.expire_sessions() >= 1);
    assert_eq!(t.read_at(0, 65536).await.expect("read after expiry").as_ref(), &file[..65536]);
    let fresh = src.client().cookie().expect("cookie");
    assert_ne!(fresh, cookie, "the datastore read logged in again");
    assert_eq!(clone.read_at(65536, 4096).await.expect("clone read").as_ref(), &file[65536..69632]);
    assert_eq!(src.client().cookie().as_deref(), Some(fresh.as_str()), "one re-login for all clones");
    assert!(sim.expire_sessions() >= 1);
    let again = src.inventory().await.expect("inventory after session expiry");
    assert_eq!(again.vms.len(), inv.vms.len());
    assert_eq!(t.read_at(8192, 4096).await.expect("read after soap re-login").as_ref(), &file[8192..12288]);

    // The VM disappears mid-read: typed NotFound errors, no panic.
    sim.destroy_vm("haproxy");
    let e = t.read_at(1 << 20, 65536).await.expect_err("disk file gone");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{}", e.report());
    let e = src.vm(&vm.id).await.expect_err("vm gone");
    assert_eq!(e.code(), ErrorCode::SourceNotFound);
    let e = src.open_disk(&vm.id, &vm.disks[0], None).await.expect_err("open gone");
    assert_eq!(e.code(), ErrorCode::SourceNotFound);
}

/// `qemu-img convert -O raw` of a datastore file: what the disk must read as.
fn qemu_raw(vmdk: &std::path::Path) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("disk.raw");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(vmdk)
        .arg(&out)
        .status()
        .expect("qemu-img runs");
    assert!(st.success(), "qemu-img convert {}", vmdk.display());
    std::fs::read(out).expect("raw")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_delta_and_flat_disks_read_over_folder() {
    let sim = Vcsim::start(VcsimOptions {
        disks: vec![
            LabDisk { vm: "haproxy", format: LabDiskFormat::Sparse, size: None },
            LabDisk { vm: "database", format: LabDiskFormat::Delta, size: None },
        ],
        ..VcsimOptions::default()
    });
    let src = VsphereSource::connect(sim.connect_options()).await.expect("connect");
    let inv = src.inventory().await.expect("inventory");
    for vm_name in ["haproxy", "database", "winweb01"] {
        let vm = inv.find_vm(vm_name).expect("lab vm");
        let t = src.open_disk(&vm.id, &vm.disks[0], None).await.expect("open over /folder");
        let want = qemu_raw(&sim.disk_file(vm_name));
        assert_eq!(t.size(), want.len() as u64, "{vm_name}");
        let got = read_all(t.as_ref()).await;
        assert_eq!(Sha256::digest(&got), Sha256::digest(&want), "{vm_name} differs from qemu-img convert");
        // Without CBT the allocation map comes from the format: grain tables leave holes where
        // the pattern is zero; a flat extent is all data.
        let map = t.extents(0, t.size(), ExtentKind::Allocation).await.expect("extents");
        let holes = map.iter().any(|e| e.state != vmigrate_core::ExtentState::Data);
        assert_eq!(holes, vm_name != "winweb01", "{vm_name}: {map:?}");
    }
    // The delta really reads through its parent chain.
    let db = read_all(
        src.open_disk(&inv.find_vm("database").expect("db").id, &inv.find_vm("database").expect("db").disks[0], None)
            .await
            .expect("open delta")
            .as_ref(),
    )
    .await;
    let (off, len) = vmigrate_vsphere::vcsim::DELTA_WRITE;
    assert!(db[off as usize..(off + len) as usize].iter().all(|b| *b == 0x5a));
    assert_eq!(db[4096], vmigrate_vsphere::vcsim::pattern_byte("database", 4096));

    // A descriptor whose extent file is gone is a typed missing file.
    let win = inv.find_vm("winweb02").expect("winweb02");
    std::fs::remove_file(sim.flat_file("winweb02")).expect("remove extent");
    let e = src.open_disk(&win.id, &win.disks[0], None).await.expect_err("extent missing");
    assert_eq!(e.code(), ErrorCode::SourceFileMissing, "{}", e.report());
}
