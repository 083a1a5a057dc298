//! The OVA source against packages made by real tools (qemu-img streamOptimized VMDKs, a GNU
//! tar ustar archive laid out as ovftool writes it, coreutils digests in the manifest): the
//! model, the bytes of every disk, the conformance suite, and a typed error for every damaged
//! or hostile package, before any byte is handed out.

use std::path::Path;

use vmigrate_core::{BlockTransport, ErrorCode, SourceProvider};
use vmigrate_ova::{ova_error, OvaError, OvaSource};
use vmigrate_testkit::conformance;
use vmigrate_testkit::ova::{build_ova, manifest_lines, tar_ustar, BuiltOva, OvaSpec};
use vmigrate_testkit::peers::have;

const MIB: u64 = 1 << 20;

fn tools() -> bool {
    have("qemu-img") && have("tar") && have("sha256sum")
}

fn url(p: &Path) -> String {
    format!("ova://{}", p.display())
}

async fn read_all(t: &dyn BlockTransport) -> Vec<u8> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < t.size() {
        let n = (t.size() - off).min(4 * MIB);
        out.extend_from_slice(&t.read_at(off, n as usize).await.expect("read"));
        off += n;
    }
    out
}

async fn check_bytes(src: &OvaSource, built: &BuiltOva) {
    let inv = src.inventory().await.expect("inventory");
    let vm = src.vm(&inv.vms[0].id).await.expect("vm");
    for (disk, (raw, _)) in vm.disks.iter().zip(&built.disks) {
        let t = src.open_disk(&vm.id, disk, None).await.expect("open disk");
        let want = std::fs::read(raw).expect("raw");
        assert_eq!(t.size(), want.len() as u64);
        assert!(read_all(t.as_ref()).await == want, "disk {} differs from the image it was made from", disk.file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ovftool_layout_package_maps_and_reads_exactly() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut spec = OvaSpec::new("web01", 8);
    spec.disks_mib = vec![8, 3];
    spec.firmware = "efi";
    let built = build_ova(dir.path(), &spec).expect("build");
    assert_eq!(built.members, ["web01.ovf", "web01.mf", "web01-disk1.vmdk", "web01-disk2.vmdk"]);
    let src = OvaSource::from_url(&format!("{}?datastore=exports", url(&built.ova))).expect("open");
    let inv = src.inventory().await.expect("inventory");
    assert_eq!(inv.vms.len(), 1);
    let vm = &inv.vms[0];
    assert_eq!((vm.id.source_ref.as_str(), vm.name.as_str()), ("web01.ova", "web01"));
    assert_eq!(vm.guest_id, "rhel9_64Guest");
    assert_eq!(vm.firmware, vmigrate_core::model::Firmware::Efi);
    assert_eq!((vm.vcpus(), vm.cores_per_socket, vm.memory_mib), (2, 2, 1024));
    let caps: Vec<i64> = vm.disks.iter().map(|d| d.capacity_bytes).collect();
    assert_eq!(caps, [8 * MIB as i64, 3 * MIB as i64]);
    assert!(vm.disks.iter().all(|d| d.datastore.as_deref() == Some("exports")));
    assert_eq!(vm.nics[0].network.as_deref(), Some("VM Network"));
    assert_eq!(inv.networks.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["VM Network"]);
    assert_eq!(inv.datastores[0].name, "exports");
    check_bytes(&src, &built).await;
    // The source passes the same suite as every other source.
    let u = url(&built.ova);
    conformance::source_provider(|| {
        let u = u.clone();
        async move { Ok(Box::new(OvaSource::from_url(&u)?) as Box<dyn SourceProvider>) }
    })
    .await
    .expect("conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_sha1_manifests_and_no_manifest_are_read() {
    if !tools() || !have("sha1sum") {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut spec = OvaSpec::new("old", 2);
    spec.manifest = Some("sha1");
    let built = build_ova(dir.path(), &spec).expect("build");
    check_bytes(&OvaSource::from_url(&url(&built.ova)).expect("open"), &built).await;
    let mut spec = OvaSpec::new("bare", 2);
    spec.manifest = None;
    let built = build_ova(dir.path(), &spec).expect("build");
    check_bytes(&OvaSource::from_url(&url(&built.ova)).expect("open"), &built).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_lists_every_good_package_and_skips_a_damaged_one() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let work = tempfile::tempdir().expect("tmp");
    for name in ["app", "db"] {
        let b = build_ova(work.path(), &OvaSpec::new(name, 2)).expect("build");
        std::fs::rename(&b.ova, dir.path().join(format!("{name}.ova"))).expect("move");
    }
    std::fs::write(dir.path().join("junk.ova"), "not a tar at all\n".repeat(64)).expect("junk");
    let src = OvaSource::from_url(&url(dir.path())).expect("open");
    let inv = src.inventory().await.expect("inventory");
    let names: Vec<&str> = inv.vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["app", "db"]);
    // Alone, the damaged package is the answer, typed.
    let e = OvaSource::from_url(&url(&dir.path().join("junk.ova"))).expect("open").inventory().await.expect_err("junk");
    assert_eq!(e.code(), ErrorCode::SourceDescriptorParse, "{}", e.report());
    assert!(matches!(ova_error(&e), Some(OvaError::TarHeader { .. })), "{e:?}");
}

/// Flip one byte inside member `name` of the package.
fn damage(ova: &Path, members_offset_of: &str) {
    let data = std::fs::read(ova).expect("read");
    let entries = vmigrate_ova::tar::scan(data.as_slice(), data.len() as u64).expect("scan");
    let e = entries.iter().find(|e| e.name == members_offset_of).expect("member");
    let mut data = data;
    data[(e.offset + e.size / 2) as usize] ^= 0x55;
    std::fs::write(ova, data).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_disk_is_refused_before_any_byte_is_handed_out() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = build_ova(dir.path(), &OvaSpec::new("web", 4)).expect("build");
    damage(&built.ova, "web-disk1.vmdk");
    let src = OvaSource::from_url(&url(&built.ova)).expect("open");
    // The inventory reads the descriptor (checked) and the disk's header, not its grains.
    let inv = src.inventory().await.expect("inventory");
    let vm = &inv.vms[0];
    for e in [
        src.vm(&vm.id).await.map(|_| ()).expect_err("vm"),
        src.open_disk(&vm.id, &vm.disks[0], None).await.map(|_| ()).expect_err("open"),
    ] {
        assert_eq!(e.code(), ErrorCode::VerifyMismatch, "{}", e.report());
        match ova_error(&e) {
            Some(OvaError::DigestMismatch { file, algorithm, .. }) => {
                assert_eq!((file.as_str(), *algorithm), ("web-disk1.vmdk", "SHA256"))
            }
            other => panic!("{other:?}"),
        }
    }
    // A damaged descriptor is refused before it is parsed.
    let built = build_ova(dir.path(), &OvaSpec::new("desc", 2)).expect("build");
    damage(&built.ova, "desc.ovf");
    let e = OvaSource::from_url(&url(&built.ova)).expect("open").inventory().await.expect_err("descriptor");
    assert_eq!(e.code(), ErrorCode::VerifyMismatch, "{}", e.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_disks_and_unlisted_files_are_typed() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = build_ova(dir.path(), &OvaSpec::new("vm", 2)).expect("build");
    let parts = &built.parts;
    // The disk left out of the archive (the manifest still lists it).
    let missing = dir.path().join("missing.ova");
    tar_ustar(parts, &missing, &["vm.ovf", "vm.mf"]).expect("tar");
    let e = OvaSource::from_url(&url(&missing)).expect("open").inventory().await.expect_err("missing disk");
    assert_eq!(e.code(), ErrorCode::SourceFileMissing, "{}", e.report());
    assert!(matches!(ova_error(&e), Some(OvaError::MissingFile { file, .. }) if file == "vm-disk1.vmdk"), "{e:?}");
    // A manifest that does not cover the disk: its bytes could not be checked.
    let partial = parts.join("partial.mf");
    std::fs::write(&partial, manifest_lines(parts, "sha256", &["vm.ovf"]).expect("sum")).expect("mf");
    let unlisted = dir.path().join("unlisted.ova");
    tar_ustar(parts, &unlisted, &["vm.ovf", "partial.mf", "vm-disk1.vmdk"]).expect("tar");
    let e = OvaSource::from_url(&url(&unlisted)).expect("open").inventory().await.expect_err("unlisted");
    assert_eq!(e.code(), ErrorCode::SourceFileMissing, "{}", e.report());
    // A manifest digest line that is not hex.
    std::fs::write(parts.join("bad.mf"), "SHA256(vm.ovf)= not-a-digest\n").expect("mf");
    let bad = dir.path().join("badmf.ova");
    tar_ustar(parts, &bad, &["vm.ovf", "bad.mf", "vm-disk1.vmdk"]).expect("tar");
    let e = OvaSource::from_url(&url(&bad)).expect("open").inventory().await.expect_err("bad manifest");
    assert!(matches!(ova_error(&e), Some(OvaError::Manifest { line: 1, .. })), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_names_links_and_escaping_hrefs_are_refused() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = build_ova(dir.path(), &OvaSpec::new("vm", 2)).expect("build");
    let parts = &built.parts;
    std::fs::write(dir.path().join("outside.txt"), b"secret").expect("outside");
    // GNU tar keeps `../` and absolute names only with -P: what a hostile package would hold.
    let hostile = [
        ("dotdot.ova", "../outside.txt".to_owned()),
        ("absolute.ova", dir.path().join("outside.txt").display().to_string()),
    ];
    for (name, member) in hostile {
        let ova = dir.path().join(name);
        let out = std::process::Command::new("tar")
            .args(["--format=ustar", "-P", "-cf"])
            .arg(&ova)
            .arg("vm.ovf")
            .arg(&member)
            .current_dir(parts)
            .output()
            .expect("tar");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let e = OvaSource::from_url(&url(&ova)).expect("open").inventory().await.expect_err(name);
        assert_eq!(e.code(), ErrorCode::UnsafePath, "{name}: {}", e.report());
        assert!(matches!(ova_error(&e), Some(OvaError::UnsafeEntry { .. })), "{e:?}");
    }
    // A symbolic link member.
    std::os::unix::fs::symlink("/etc/passwd", parts.join("link.vmdk")).expect("symlink");
    let ova = dir.path().join("link.ova");
    tar_ustar(parts, &ova, &["vm.ovf", "link.vmdk"]).expect("tar");
    let e = OvaSource::from_url(&url(&ova)).expect("open").inventory().await.expect_err("link");
    assert_eq!(e.code(), ErrorCode::UnsafePath, "{}", e.report());
    // A descriptor whose file reference climbs out of the package.
    let text = std::fs::read_to_string(parts.join("vm.ovf"))
        .expect("ovf")
        .replace("ovf:href=\"vm-disk1.vmdk\"", "ovf:href=\"../vm-disk1.vmdk\"");
    std::fs::write(parts.join("vm.ovf"), text).expect("ovf");
    let ova = dir.path().join("href.ova");
    tar_ustar(parts, &ova, &["vm.ovf", "vm-disk1.vmdk"]).expect("tar");
    let e = OvaSource::from_url(&url(&ova)).expect("open").inventory().await.expect_err("href");
    assert_eq!(e.code(), ErrorCode::UnsafePath, "{}", e.report());
    // A package reached through a link out of the source's folder.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    std::os::unix::fs::symlink(&built.ova, root.join("escape.ova")).expect("symlink");
    let e = OvaSource::from_url(&url(&root.join("escape.ova"))).expect("open").inventory().await.expect_err("escape");
    assert_eq!(e.code(), ErrorCode::UnsafePath, "{}", e.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_packages_are_typed() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = build_ova(dir.path(), &OvaSpec::new("vm", 2)).expect("build");
    let data = std::fs::read(&built.ova).expect("read");
    let entries = vmigrate_ova::tar::scan(data.as_slice(), data.len() as u64).expect("scan");
    let disk = entries.iter().find(|e| e.name == "vm-disk1.vmdk").expect("disk");
    // Inside the disk's data, and inside the disk's header block.
    for cut in [disk.offset + disk.size / 2, disk.offset - 200] {
        let ova = dir.path().join(format!("cut{cut}.ova"));
        std::fs::write(&ova, &data[..cut as usize]).expect("write");
        let e = OvaSource::from_url(&url(&ova)).expect("open").inventory().await.expect_err("truncated");
        assert_eq!(e.code(), ErrorCode::ShortRead, "cut at {cut}: {}", e.report());
        assert!(matches!(ova_error(&e), Some(OvaError::Truncated { .. })), "{e:?}");
    }
}

#[tokio::test]
async fn urls_are_checked() {
    for bad in ["vmx:///tmp", "ova://host/tmp", "ova:///no/such/path.ova"] {
        assert_eq!(OvaSource::from_url(bad).expect_err(bad).code(), ErrorCode::BadUrl, "{bad}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let e = OvaSource::from_url(&format!("{}?colour=blue", url(dir.path()))).expect_err("param");
    assert_eq!(e.code(), ErrorCode::BadUrl);
}

/// A vApp export: one package, a VirtualSystemCollection of two VMs, each with its own disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vapp_package_lists_each_virtual_system_with_its_own_disk() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let parts = dir.path().join("parts");
    std::fs::create_dir(&parts).expect("parts");
    let mut raws = Vec::new();
    for (i, name) in ["app", "db"].iter().enumerate() {
        let raw = parts.join(format!("{name}.raw"));
        std::fs::write(&raw, vmigrate_testkit::ova::disk_content(i as u64 + 40, 2 * MIB)).expect("raw");
        vmigrate_testkit::peers::qemu_img_stream_optimized(&raw, &parts.join(format!("{name}-disk1.vmdk")))
            .expect("vmdk");
        raws.push(raw);
    }
    let system = |name: &str, n: u32| {
        format!(
            r#"    <VirtualSystem ovf:id="{name}">
      <Info>A virtual machine</Info>
      <Name>{name}</Name>
      <OperatingSystemSection ovf:id="101"><Info>os</Info><Description>Linux</Description></OperatingSystemSection>
      <VirtualHardwareSection>
        <Info>hw</Info>
        <Item><rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
        <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
        <Item><rasd:Address>0</rasd:Address><rasd:ElementName>SATA Controller 0</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType><rasd:ResourceType>20</rasd:ResourceType></Item>
        <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>Hard Disk 1</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk{n}</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      </VirtualHardwareSection>
    </VirtualSystem>
"#
        )
    };
    let ovf = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:href="app-disk1.vmdk" ovf:id="file1"/>
    <File ovf:href="db-disk1.vmdk" ovf:id="file2"/>
  </References>
  <DiskSection>
    <Info>disks</Info>
    <Disk ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:capacity="2097152" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <VirtualSystemCollection ovf:id="shop">
    <Info>A vApp</Info>
{}{}  </VirtualSystemCollection>
</Envelope>
"#,
        system("app", 1),
        system("db", 2)
    );
    std::fs::write(parts.join("shop.ovf"), ovf).expect("ovf");
    let mf = manifest_lines(&parts, "sha256", &["shop.ovf", "app-disk1.vmdk", "db-disk1.vmdk"]).expect("sum");
    std::fs::write(parts.join("shop.mf"), mf).expect("mf");
    let ova = dir.path().join("shop.ova");
    tar_ustar(&parts, &ova, &["shop.ovf", "shop.mf", "app-disk1.vmdk", "db-disk1.vmdk"]).expect("tar");
    let src = OvaSource::from_url(&url(&ova)).expect("open");
    let inv = src.inventory().await.expect("inventory");
    let ids: Vec<&str> = inv.vms.iter().map(|v| v.id.source_ref.as_str()).collect();
    assert_eq!(ids, ["shop.ova#app", "shop.ova#db"]);
    for (listed, raw) in inv.vms.iter().zip(&raws) {
        let vm = src.vm(&listed.id).await.expect("vm");
        assert_eq!(vm.disks.len(), 1);
        assert_eq!(vm.disks[0].bus, vmigrate_core::model::DiskBus::Sata);
        assert_eq!(vm.memory_mib, 512);
        let t = src.open_disk(&vm.id, &vm.disks[0], None).await.expect("open");
        assert!(read_all(t.as_ref()).await == std::fs::read(raw).expect("raw"), "{}", vm.name);
    }
    let e = src
        .vm(&vmigrate_core::VmId { source_ref: "shop.ova#web".into(), ..Default::default() })
        .await
        .expect_err("no such system");
    assert_eq!(e.code(), ErrorCode::VmNotFound);
}
