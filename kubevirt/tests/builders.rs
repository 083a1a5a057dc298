//! Builder golden cases: the lab's VMs, DataVolumes, Services and Route, compared with reviewed
//! YAML in `test_data/golden/` (regenerate with `UPDATE_GOLDEN=1` and review the diff), plus
//! targeted assertions on the decisions the issue lists.

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;
use vmigrate_core::plan::TargetDiskBus;
use vmigrate_kubevirt::builder::{self, VolumeSource};

fn golden(name: &str, value: &impl serde::Serialize) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/golden").join(format!("{name}.yaml"));
    let text = serde_yaml_ng::to_string(value).expect("yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &text).expect("write golden");
    }
    let want =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(text, want, "{name} differs from {}", path.display());
}

#[test]
fn golden_lab_objects() {
    let db = database();
    let web = winweb01();
    golden("vm-database", &builder::build_vm(&db, &volumes(&db)));
    golden("vm-winweb01", &builder::build_vm(&web, &volumes(&web)));
    golden("dv-database-disk0-upload", &builder::build_datavolume(&db, &db.source.disks[0], &VolumeSource::Upload));
    let svcs = lab_services(None, None);
    golden("service-webapp", &builder::build_service("move-webapp-vmware", "vmexamples", &svcs[0]));
    golden("service-database", &builder::build_service("move-webapp-vmware", "vmexamples", &svcs[1]));
    golden("route-webapp", &builder::build_route("move-webapp-vmware", "vmexamples", &svcs[0]).expect("route"));
    golden(
        "ingress-webapp",
        &builder::build_ingress(
            "move-webapp-vmware",
            "vmexamples",
            &lab_services(Some("edge"), Some("webapp.example.com"))[0],
        )
        .expect("ingress"),
    );
    assert!(builder::build_route("p", "ns", &svcs[1]).is_none(), "database asks for no route");
}

fn j(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("json")
}

#[test]
fn windows_vm_decisions() {
    let t = winweb01();
    let vm = j(&builder::build_vm(&t, &volumes(&t)));
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert_eq!(dom["firmware"]["bootloader"]["efi"]["secureBoot"], true);
    assert!(dom["features"]["smm"].is_object(), "secure boot needs SMM");
    assert_eq!(dom["features"]["hyperv"]["spinlocks"]["spinlocks"], 8191);
    assert_eq!(dom["clock"]["timer"]["hpet"]["present"], false);
    assert_eq!(dom["firmware"]["uuid"], t.source.id.bios_uuid.clone().expect("uuid").as_str());
    let disks = dom["devices"]["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0]["bootOrder"], 1);
    assert!(disks[1].get("bootOrder").is_none());
    assert!(disks.iter().all(|d| d["disk"]["bus"] == "sata"), "windows without virtio drivers boots from SATA");
    let ifs = dom["devices"]["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs[0]["macAddress"], "00:50:56:aa:00:02");
    assert!(ifs[0]["masquerade"].is_object() && ifs[1]["bridge"].is_object());
    assert!(ifs.iter().all(|i| i["model"] == "e1000e"));
    let nets = vm["spec"]["template"]["spec"]["networks"].as_array().expect("networks");
    assert!(nets[0]["pod"].is_object());
    assert_eq!(nets[1]["multus"]["networkName"], "vmexamples/backend");
    let volumes = vm["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert_eq!(volumes[1]["dataVolume"]["name"], "winweb01-disk1");
    let tl = &vm["spec"]["template"]["metadata"]["labels"];
    assert_eq!(tl["env"], "webapp", "the lab's Service selects on template labels");
    assert_eq!(tl["vm.kubevirt.io/name"], "winweb01");
    assert_eq!(vm["metadata"]["labels"]["instancetype.kubevirt.io/default-preference"], "windows.2k19");
    assert_eq!(vm["metadata"]["labels"]["os.template.kubevirt.io/win2k19"], "true");
    assert_eq!(vm["metadata"]["labels"]["vmigrate.dev/plan"], "move-webapp-vmware");
    assert_eq!(vm["metadata"]["annotations"]["vmigrate.dev/source-vm-name"], "winweb01");
    assert_eq!(vm["spec"]["runStrategy"], "Halted");

    let mut o = t.clone();
    o.disk_bus = Some(TargetDiskBus::Virtio);
    let vm = j(&builder::build_vm(&o, &common::volumes(&o)));
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert_eq!(dom["devices"]["disks"][0]["disk"]["bus"], "virtio", "plan override wins");
    assert_eq!(dom["devices"]["interfaces"][0]["model"], "virtio");
}

#[test]
fn linux_vm_decisions() {
    let t = database();
    let vm = j(&builder::build_vm(&t, &volumes(&t)));
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert!(dom["firmware"]["bootloader"]["bios"].is_object());
    assert!(dom["features"].get("smm").is_none() && dom["features"].get("hyperv").is_none());
    assert_eq!(dom["cpu"]["sockets"], 2);
    assert_eq!(dom["cpu"]["cores"], 2);
    assert_eq!(dom["memory"]["guest"], "4096Mi");
    assert_eq!(dom["devices"]["disks"][0]["disk"]["bus"], "virtio");
    assert_eq!(dom["devices"]["interfaces"][0]["model"], "virtio");
    assert_eq!(vm["metadata"]["labels"]["instancetype.kubevirt.io/default-preference"], "rhel.9");
    assert_eq!(vm["spec"]["template"]["metadata"]["labels"]["vm.kubevirt.io/name"], "database");
}

#[test]
fn converted_guests_get_what_the_conversion_installed() {
    // A RHEL guest on PVSCSI at the source, converted: virtio, and the inspected OS picks the
    // cluster preference (not the coarser vSphere guest id).
    let mut t = database();
    t.source.os_id = "linux".into();
    t.conversion = Some(converted("linux", "rhel8.6", TargetDiskBus::Virtio, "virtio", true));
    let vm = j(&builder::build_vm(&t, &volumes(&t)));
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert_eq!(dom["devices"]["disks"][0]["disk"]["bus"], "virtio");
    assert_eq!(dom["devices"]["interfaces"][0]["model"], "virtio");
    assert_eq!(
        vm["spec"]["preference"],
        serde_json::json!({"name": "rhel.8", "kind": "VirtualMachineClusterPreference"})
    );
    assert_eq!(vm["metadata"]["labels"]["os.template.kubevirt.io/rhel8.6"], "true");
    // Windows converted without virtio-win: SATA and e1000e; with it: virtio everywhere.
    let mut w = winweb01();
    w.conversion = Some(converted("windows", "win2k19", TargetDiskBus::Sata, "e1000e", false));
    let vm = j(&builder::build_vm(&w, &volumes(&w)));
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert_eq!(dom["devices"]["disks"][0]["disk"]["bus"], "sata");
    assert_eq!(dom["devices"]["interfaces"][0]["model"], "e1000e");
    assert_eq!(vm["spec"]["preference"]["name"], "windows.2k19");
    assert!(dom["features"]["hyperv"].is_object(), "still a Windows domain");
    w.conversion = Some(converted("windows", "win2k19", TargetDiskBus::Virtio, "virtio", true));
    let vm = j(&builder::build_vm(&w, &volumes(&w)));
    let dom = &vm["spec"]["template"]["spec"]["domain"];
    assert_eq!(dom["devices"]["disks"][0]["disk"]["bus"], "virtio");
    assert_eq!(dom["devices"]["interfaces"][1]["model"], "virtio");
    // Not converted (skipGuestConversion): today's choice by guest id, and no preference pinned.
    let mut s = database();
    s.conversion = Some(vmigrate_core::convert::GuestConversion::skipped("spec.skipGuestConversion"));
    let vm = j(&builder::build_vm(&s, &volumes(&s)));
    assert!(vm["spec"].get("preference").is_none());
    assert_eq!(vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["disk"]["bus"], "virtio");
}

#[test]
fn datavolume_sizes_and_storage_map() {
    let t = winweb01();
    let dv = j(&builder::build_datavolume(&t, &t.source.disks[1], &VolumeSource::Upload));
    assert_eq!(dv["metadata"]["name"], "winweb01-disk1");
    // 10 GiB + 512 bytes rounds up to the next MiB.
    assert_eq!(dv["spec"]["storage"]["resources"]["requests"]["storage"], "10241Mi");
    assert_eq!(dv["spec"]["storage"]["volumeMode"], "Block");
    assert_eq!(dv["spec"]["storage"]["accessModes"][0], "ReadWriteMany");
    assert!(dv["spec"]["source"]["upload"].is_object());
    assert_eq!(builder::volume_size(&t.source.disks[1]), 10 * GIB as u64 + 512);
}

#[test]
fn guest_table_and_label_values() {
    for (g, pref) in [
        ("win2k19", "windows.2k19"),
        ("win2k22", "windows.2k22"),
        ("win2k16", "windows.2k16"),
        ("rhel8.0", "rhel.8"),
        ("centos-stream9", "centos.stream9"),
        ("ubuntu", "ubuntu"),
        ("sles15", "sles"),
        ("debian12", "debian"),
    ] {
        let os = builder::guest_os(g).expect(g);
        assert_eq!((os.preference, os.os.as_str()), (pref, g), "{g}");
    }
    assert!(builder::guest_os("").is_none() && builder::guest_os("linux").is_none());
    assert_eq!(builder::label_value("vm-123"), "vm-123");
    let v = builder::label_value("web/web01.vmx");
    assert!(v.starts_with("web-web01.vmx-") && v.len() <= 63, "{v}");
    assert_ne!(builder::label_value("a/b"), builder::label_value("a:b"));
    let long = builder::label_value(&"x".repeat(100));
    assert!(long.len() <= 63);
}

#[test]
fn osinfo_to_preference() {
    for (id, pref) in [
        ("rhel8.6", Some("rhel.8")),
        ("rhel9.2", Some("rhel.9")),
        ("debian12", Some("debian")),
        ("win2k22", Some("windows.2k22")),
        ("win10", Some("windows.10")),
        ("centos-stream9", Some("centos.stream9")),
        ("ubuntu22.04", Some("ubuntu")),
        ("freebsd13.1", None),
    ] {
        assert_eq!(builder::preference_for_osinfo(id), pref, "{id}");
    }
}
