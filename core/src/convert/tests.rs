//! The input description, the command line, the environment and the report parsing of the
//! conversion, for Linux and Windows guests.

use std::net::IpAddr;

use super::*;
use crate::model::{Disk, Nic, VmId};

fn vm(guest: &str, firmware: Firmware) -> Vm {
    Vm {
        id: VmId {
            source_ref: "vm-42".into(),
            bios_uuid: Some("4211d3a5-1b3e-4c1e-9d4f-0123456789ab".into()),
            instance_uuid: None,
        },
        name: "web & <db>".into(),
        guest_id: guest.into(),
        firmware,
        cpu_sockets: 2,
        cores_per_socket: 2,
        memory_mib: 4096,
        disks: vec![
            Disk { key: 2000, capacity_bytes: 1 << 30, file: "[ds] a/a.vmdk".into(), ..Default::default() },
            Disk {
                key: 2001,
                capacity_bytes: 1 << 30,
                file: "[ds] a/a_1.vmdk".into(),
                bus: DiskBus::Sata,
                ..Default::default()
            },
            Disk { key: 2002, capacity_bytes: 1 << 30, file: "[ds] a/a_2.vmdk".into(), ..Default::default() },
        ],
        nics: vec![
            Nic {
                key: 4000,
                mac: "00:50:56:AA:BB:01".into(),
                network: Some("VM Network".into()),
                ip_addresses: vec![
                    "10.0.0.5".parse::<IpAddr>().expect("ip"),
                    "fe80::250:56ff:feaa:bb01".parse().expect("ip"),
                    "2001:db8::5".parse().expect("ip"),
                ],
                ..Default::default()
            },
            Nic { key: 4001, mac: "00:50:56:aa:bb:02".into(), model: NicModel::E1000e, ..Default::default() },
        ],
        ..Default::default()
    }
}

fn images() -> Vec<DiskImage> {
    (0..3).map(|i| DiskImage { path: format!("/out/disks/web-disk{i}.img").into(), format: "raw".into() }).collect()
}

#[test]
fn domain_xml_describes_the_copied_vm() {
    let x = domain_xml(&vm("rhel8_64Guest", Firmware::Bios), &images());
    assert!(x.contains("<name>web &amp; &lt;db&gt;</name>"), "{x}");
    assert!(x.contains("<uuid>4211d3a5-1b3e-4c1e-9d4f-0123456789ab</uuid>"));
    assert!(x.contains("<memory unit='MiB'>4096</memory>") && x.contains("<vcpu>4</vcpu>"));
    assert!(x.contains("<loader type='rom'/>") && !x.contains("efi"), "{x}");
    // Disks in source order on their buses, lettered per bus.
    let a = x.find("/out/disks/web-disk0.img").expect("disk0");
    let b = x.find("/out/disks/web-disk1.img").expect("disk1");
    let c = x.find("/out/disks/web-disk2.img").expect("disk2");
    assert!(a < b && b < c);
    assert!(x.contains("<target dev='sda' bus='scsi'/>"));
    assert!(x.contains("<target dev='sda' bus='sata'/>"));
    assert!(x.contains("<target dev='sdb' bus='scsi'/>"));
    assert_eq!(x.matches("<driver name='qemu' type='raw'/>").count(), 3);
    // NICs with their MACs (lower case), networks and models.
    assert!(x.contains("<mac address='00:50:56:aa:bb:01'/>"));
    assert!(x.contains("<source network='VM Network'/>"));
    assert!(x.contains("<model type='vmxnet3'/>") && x.contains("<model type='e1000e'/>"));
    assert!(x.contains("<source network='default'/>"), "an unattached NIC still describes a network");
    // Well-formed: every element opened is closed.
    assert_eq!(x.matches("<disk ").count(), x.matches("</disk>").count());
    assert_eq!(x.matches("<interface ").count(), x.matches("</interface>").count());
}

#[test]
fn domain_xml_uefi() {
    let x = domain_xml(&vm("windows2019srv_64Guest", Firmware::Efi), &images()[..1]);
    assert!(x.contains("<os firmware='efi'>") && x.contains("<loader type='pflash' readonly='yes'/>"), "{x}");
}

#[test]
fn drive_letters_follow_libvirt() {
    assert_eq!(drive_letters(0), "a");
    assert_eq!(drive_letters(25), "z");
    assert_eq!(drive_letters(26), "aa");
    assert_eq!(drive_letters(27), "ab");
}

#[test]
fn argv_passes_root_and_static_ips() {
    let v = vm("rhel8_64Guest", Firmware::Bios);
    let req = ConversionRequest { preserve_static_ips: true, root_disk: None, virtio_win: None };
    let args: Vec<String> =
        in_place_args(Path::new("/w/web.xml"), &v, &req).iter().map(|a| a.to_string_lossy().into_owned()).collect();
    assert_eq!(
        args,
        vec![
            "-v",
            "-i",
            "libvirtxml",
            "--root",
            "first",
            "--mac",
            "00:50:56:aa:bb:01:ip:10.0.0.5",
            "--mac",
            "00:50:56:aa:bb:01:ip:2001:db8::5",
            "/w/web.xml"
        ],
        "link-local addresses are not configuration"
    );
    let req = ConversionRequest { preserve_static_ips: false, root_disk: Some("/dev/sda2".into()), virtio_win: None };
    let args: Vec<String> =
        in_place_args(Path::new("/w/web.xml"), &v, &req).iter().map(|a| a.to_string_lossy().into_owned()).collect();
    assert_eq!(args, vec!["-v", "-i", "libvirtxml", "--root", "/dev/sda2", "/w/web.xml"]);
}

#[test]
fn child_environment_is_explicit() {
    std::env::set_var("VMIGRATE_CONVERT_TEST_SECRET", "hunter2");
    let env = child_env(Path::new("/w/home"), false, Some("/isos/virtio-win.iso"));
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("LIBGUESTFS_BACKEND"), Some("direct"));
    assert_eq!(get("VIRTIO_WIN"), Some("/isos/virtio-win.iso"));
    assert_eq!(get("HOME"), Some("/w/home"));
    if std::env::var_os("LIBGUESTFS_BACKEND_SETTINGS").is_none() {
        assert_eq!(get("LIBGUESTFS_BACKEND_SETTINGS"), Some("force_tcg"), "no usable KVM: TCG");
    }
    assert_eq!(get("VMIGRATE_CONVERT_TEST_SECRET"), None, "nothing else is inherited");
    for (k, _) in &env {
        assert!(
            matches!(k.as_str(), "PATH" | "HOME" | "LANG" | "TMPDIR" | "VIRTIO_WIN") || k.starts_with("LIBGUESTFS_"),
            "unexpected variable {k}"
        );
    }
    let with_kvm = child_env(Path::new("/w/home"), true, None);
    if std::env::var_os("LIBGUESTFS_BACKEND_SETTINGS").is_none() {
        assert!(!with_kvm.iter().any(|(k, _)| k == "LIBGUESTFS_BACKEND_SETTINGS"));
    }
    assert!(!with_kvm.iter().any(|(k, _)| k == "VIRTIO_WIN"));
}

/// The report lines virt-v2v 2.2 prints with `-v` (format strings of its `string_of_inspect`
/// and `string_of_guestcaps`), around libguestfs noise.
fn report(kind: &str, distro: &str, osinfo: &str, product: &str, block: &str, net: &str, extra: &str) -> String {
    format!(
        "virt-v2v-in-place: virt-v2v 2.2.0 (x86_64)\n\
         libguestfs: trace: inspect_os\n\
         i_root = /dev/sda2\n\
         i_type = {kind}\n\
         i_distro = {distro}\n\
         i_osinfo = {osinfo}\n\
         i_arch = x86_64\n\
         i_major_version = 10\n\
         i_minor_version = 0\n\
         i_package_format = unknown\n\
         i_package_management = unknown\n\
         i_product_name = {product}\n\
         i_product_variant = Server\n\
         i_firmware = BIOS\n\
         {extra}\
         gcaps_block_bus = {block}\n\
         gcaps_net_bus = {net}\n\
         gcaps_virtio_rng = true\n\
         gcaps_machine = q35\n\
         gcaps_arch = x86_64\n\
         gcaps_acpi = true\n\
         libguestfs: closing guestfs handle\n"
    )
}

#[test]
fn windows_without_virtio_win_stays_on_sata_and_e1000e() {
    let log = report(
        "windows",
        "windows",
        "win2k19",
        "Windows Server 2019 Standard",
        "ide",
        "rtl8139",
        "virt-v2v-in-place: warning: there are no virtio drivers available for this version of Windows (10.0 x86_64 windows Server).  virt-v2v looks for drivers in /usr/share/virtio-win\n",
    );
    let r = parse_report(&log);
    let os = r.os.as_ref().expect("inspected");
    assert_eq!((os.kind.as_str(), os.osinfo.as_str(), os.major), ("windows", "win2k19", 10));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    let req = ConversionRequest { preserve_static_ips: true, ..Default::default() };
    let c = decide(&r, &req).expect("decided");
    assert_eq!(c.disk_bus, Some(TargetDiskBus::Sata));
    assert_eq!(c.nic_model.as_deref(), Some("e1000e"));
    assert!(!c.guest_agent);
    assert!(c.summary().contains("without spec.virtioWin"), "{}", c.summary());
}

#[test]
fn windows_with_virtio_win_gets_virtio_and_the_guest_agent() {
    let log = report("windows", "windows", "win2k19", "Windows Server 2019 Standard", "virtio-blk", "virtio-net", "");
    let req = ConversionRequest { virtio_win: Some("/isos/virtio-win.iso".into()), ..Default::default() };
    let c = decide(&parse_report(&log), &req).expect("decided");
    assert_eq!(c.disk_bus, Some(TargetDiskBus::Virtio));
    assert_eq!(c.nic_model.as_deref(), Some("virtio"));
    assert!(c.guest_agent && c.notes.is_empty());
    assert!(
        c.summary().starts_with("converted win2k19: disks virtio, NICs virtio, guest agent yes"),
        "{}",
        c.summary()
    );
}

#[test]
fn linux_guest_gets_virtio() {
    let log =
        report("linux", "rhel", "rhel8.6", "Red Hat Enterprise Linux 8.6 (Ootpa)", "virtio-blk", "virtio-net", "");
    let c = decide(&parse_report(&log), &ConversionRequest::default()).expect("decided");
    assert_eq!(
        (c.disk_bus, c.nic_model.as_deref(), c.guest_agent),
        (Some(TargetDiskBus::Virtio), Some("virtio"), true)
    );
    assert_eq!(c.os.as_ref().map(|o| o.osinfo.as_str()), Some("rhel8.6"));
    let no_agent = log.replace(
        "gcaps_block_bus",
        "virt-v2v-in-place: warning: The QEMU Guest Agent will not be installed.  The install command for package ...\ngcaps_block_bus",
    );
    let c = decide(&parse_report(&no_agent), &ConversionRequest::default()).expect("decided");
    assert!(!c.guest_agent);
}

#[test]
fn a_report_without_guest_capabilities_is_a_failure() {
    let err = decide(
        &parse_report("virt-v2v-in-place: error: inspection could not detect the source guest\n"),
        &ConversionRequest::default(),
    )
    .expect_err("nothing converted");
    assert_eq!(err.code(), ErrorCode::ConversionFailed);
    assert!(failure_summary("a\nvirt-v2v-in-place: error: no root device found\nb\n")
        .starts_with("virt-v2v-in-place: error"));
}

/// The report lines of a real `virt-v2v-in-place -v` run (virt-v2v 2.2.0, Debian bookworm) on
/// the host-only Debian 12 guest of the boot test, cut from its log.
#[test]
fn real_debian_report_parses() {
    let log = include_str!("testdata/debian12-hostonly-in-place.log");
    let r = parse_report(log);
    let os = r.os.as_ref().expect("inspected");
    assert_eq!((os.kind.as_str(), os.distro.as_str(), os.osinfo.as_str()), ("linux", "debian", "debian12"));
    assert_eq!((os.root.as_str(), os.major), ("/dev/sda1", 12));
    let c = decide(&r, &ConversionRequest::default()).expect("decided");
    assert_eq!(c.disk_bus, Some(TargetDiskBus::Virtio));
    assert_eq!(c.nic_model.as_deref(), Some("virtio"));
    assert!(c.guest_agent, "virt-v2v installs the agent at first boot");
}

#[test]
fn inspector_output_gives_the_os_and_validation_knows_what_virt_v2v_converts() {
    // virt-inspector on the host-only Debian guest (tests/guests), applications and icon cut.
    let xml = include_str!("testdata/debian12-hostonly.inspector.xml");
    let os = parse_inspector_xml(xml).expect("an OS");
    assert_eq!(
        (os.kind.as_str(), os.distro.as_str(), os.osinfo.as_str(), os.root.as_str(), os.major, os.minor),
        ("linux", "debian", "debian12", "/dev/sda1", 12, 15)
    );
    assert_eq!(unsupported_os(&os), None);
    assert_eq!(parse_inspector_xml("<?xml version=\"1.0\"?>\n<operatingsystems/>\n"), None, "no OS");
    let other = |kind: &str, distro: &str, osinfo: &str| InspectedOs {
        kind: kind.into(),
        distro: distro.into(),
        osinfo: osinfo.into(),
        ..Default::default()
    };
    for (os, ok) in [
        (other("linux", "rhel", "rhel8.6"), true),
        (other("linux", "ubuntu", "ubuntu22.04"), true),
        (other("linux", "sles", "sles15sp4"), true),
        (other("windows", "windows", "win2k19"), true),
        (other("linux", "archlinux", "archlinux"), false),
        (other("linux", "unknown", ""), false),
        (other("freebsd", "freebsd", "freebsd13.1"), false),
    ] {
        let why = unsupported_os(&os);
        assert_eq!(why.is_none(), ok, "{os:?}: {why:?}");
        if let Some(w) = why {
            assert!(w.contains(if os.osinfo.is_empty() { &os.kind } else { &os.osinfo }), "{w}");
        }
    }
    let args: Vec<String> = inspector_args(&[
        DiskImage { path: "/ds/vm/vm.vmdk".into(), format: "vmdk".into() },
        DiskImage { path: "/ds/vm/vm_1.vmdk".into(), format: "vmdk".into() },
    ])
    .into_iter()
    .map(|a| a.to_string_lossy().into_owned())
    .collect();
    assert_eq!(
        args,
        [
            "--no-applications",
            "--no-icon",
            "--format=vmdk",
            "-a",
            "/ds/vm/vm.vmdk",
            "--format=vmdk",
            "-a",
            "/ds/vm/vm_1.vmdk"
        ]
    );
}
