//! Every builder case validated against the official KubeVirt, CDI and OpenShift schemas, with
//! unknown fields forbidden, plus proofs that the validator catches typos and wrong types.

mod common;

use common::*;
use serde_json::{json, Value};
use vmigrate_core::model::Firmware;
use vmigrate_core::plan::{NetworkDestination, TargetDiskBus};
use vmigrate_kubevirt::builder::{self, vddk_source, VolumeSource};
use vmigrate_kubevirt::objects::{HttpSource, UploadTokenRequest, UploadTokenRequestSpec};

fn vm_cases() -> Vec<(&'static str, vmigrate_core::TargetVm)> {
    let mut efi = target(
        "efi-linux",
        "ubuntu",
        vec![disk(2000, 8 * GIB, "[ds] u/u.vmdk")],
        vec![(nic(4000, "00:50:56:00:00:10", "net"), NetworkDestination::Pod)],
    );
    efi.source.firmware = Firmware::Efi;
    let multus = target(
        "multus-only",
        "centos-stream9",
        vec![disk(2000, GIB, "[ds] m/m.vmdk")],
        vec![
            (nic(4000, "00:50:56:00:00:20", "a"), NetworkDestination::Multus { name: "vmexamples/vlan10".into() }),
            (nic(4001, "00:50:56:00:00:21", "b"), NetworkDestination::Multus { name: "vlan20".into() }),
            (nic(4002, "00:50:56:00:00:22", "c"), NetworkDestination::Ignored),
        ],
    );
    let mut many = target(
        "many-disks",
        "sles15",
        (0..4).map(|i| disk(2000 + i, GIB * i64::from(i + 1), "[ds] x/x.vmdk")).collect(),
        vec![],
    );
    many.storage.clear();
    let mut win_virtio = winweb01();
    win_virtio.name = "winweb02".into();
    win_virtio.disk_bus = Some(TargetDiskBus::Virtio);
    let mut with_tpm = winweb01();
    with_tpm.name = "bitlocker".into();
    with_tpm.source.tpm = true;
    let mut converted_rhel = database();
    converted_rhel.name = "converted-rhel".into();
    converted_rhel.conversion = Some(converted("linux", "rhel8.6", TargetDiskBus::Virtio, "virtio", true));
    let mut converted_win = winweb01();
    converted_win.name = "converted-win".into();
    converted_win.conversion = Some(converted("windows", "win2k19", TargetDiskBus::Sata, "e1000e", false));
    let mut unknown_os = database();
    unknown_os.source.os_id = String::new();
    unknown_os.source.memory_mib = 0;
    vec![
        ("bios-linux", database()),
        ("efi-linux", efi),
        ("secure-boot-windows", winweb01()),
        ("windows-virtio-override", win_virtio),
        ("multus", multus),
        ("multiple-disks", many),
        ("unknown-os", unknown_os),
        ("vtpm", with_tpm),
        ("converted-rhel", converted_rhel),
        ("converted-windows-without-virtio", converted_win),
    ]
}

#[test]
fn a_source_vtpm_becomes_a_persistent_tpm() {
    let cases = vm_cases();
    let (_, t) = cases.iter().find(|(c, _)| *c == "vtpm").expect("case");
    let vm = serde_json::to_value(vmigrate_kubevirt::builder::build_vm(t, &[])).expect("json");
    assert_eq!(vm.pointer("/spec/template/spec/domain/devices/tpm/persistent"), Some(&serde_json::json!(true)));
    let (_, plain) = cases.iter().find(|(c, _)| *c == "bios-linux").expect("case");
    let vm = serde_json::to_value(vmigrate_kubevirt::builder::build_vm(plain, &[])).expect("json");
    assert!(vm.pointer("/spec/template/spec/domain/devices/tpm").is_none());
}

#[test]
fn every_virtual_machine_case_validates() {
    let s = Schemas::load();
    for (case, t) in vm_cases() {
        let doc = serde_json::to_value(builder::build_vm(&t, &volumes(&t))).expect("json");
        s.check(&doc).unwrap_or_else(|e| panic!("{case}: {e}\n{doc:#}"));
    }
}

#[test]
fn every_datavolume_case_validates() {
    let s = Schemas::load();
    let t = winweb01();
    let vddk = VolumeSource::Vddk(vddk_source(
        &t,
        &t.source.disks[0],
        "https://vcenter.example.com/sdk",
        Some("AB:CD:EF"),
        "vmigrate-move-webapp-vmware-vddk",
        Some("registry.example.com/vddk:8"),
    ));
    let http = VolumeSource::Http(HttpSource {
        url: "https://esx.example.com/folder/winweb01/winweb01-flat.vmdk?dsName=ds".into(),
        secret_ref: Some("esx-basic".into()),
        cert_config_map: Some("esx-ca".into()),
    });
    let mut unmapped = database();
    unmapped.storage.clear();
    for (case, tv, src) in [
        ("upload", &t, VolumeSource::Upload),
        ("vddk", &t, vddk),
        ("http", &t, http),
        ("blank", &t, VolumeSource::Blank),
        ("upload-storage-profile-defaults", &unmapped, VolumeSource::Upload),
    ] {
        for d in &tv.source.disks {
            let doc = serde_json::to_value(builder::build_datavolume(tv, d, &src)).expect("json");
            s.check(&doc).unwrap_or_else(|e| panic!("{case}: {e}\n{doc:#}"));
        }
    }
}

#[test]
fn upload_token_request_validates() {
    let s = Schemas::load();
    let utr = UploadTokenRequest {
        api_version: UploadTokenRequest::API_VERSION.into(),
        kind: UploadTokenRequest::KIND.into(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("database-disk0".into()),
            namespace: Some("vmexamples".into()),
            ..Default::default()
        },
        spec: UploadTokenRequestSpec { pvc_name: "database-disk0".into() },
        status: Default::default(),
    };
    s.check(&serde_json::to_value(&utr).expect("json")).expect("valid");
}

#[test]
fn routes_with_and_without_tls_validate() {
    let s = Schemas::load();
    for (tls, host) in [
        (None, None),
        (Some("edge"), Some("webapp.apps.example.com")),
        (Some("passthrough"), None),
        (Some("reencrypt"), None),
    ] {
        for svc in lab_services(tls, host) {
            let Some(r) = builder::build_route("move-webapp-vmware", "vmexamples", &svc) else { continue };
            let doc = serde_json::to_value(&r).expect("json");
            s.check(&doc).unwrap_or_else(|e| panic!("tls {tls:?}: {e}\n{doc:#}"));
        }
    }
}

fn set(doc: &mut Value, pointer: &str, v: Value) {
    *doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} missing")) = v;
}

fn rename(doc: &mut Value, parent: &str, from: &str, to: &str) {
    let obj = doc.pointer_mut(parent).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("{parent} missing"));
    let v = obj.remove(from).unwrap_or_else(|| panic!("{parent}/{from} missing"));
    obj.insert(to.into(), v);
}

#[test]
fn validator_catches_misspelled_fields_and_wrong_types() {
    let s = Schemas::load();
    let t = winweb01();
    let vm = serde_json::to_value(builder::build_vm(&t, &volumes(&t))).expect("json");
    s.check(&vm).expect("baseline valid");

    let mut typo = vm.clone();
    rename(&mut typo, "/spec", "runStrategy", "runstrategy");
    let err = s.check(&typo).expect_err("misspelled runStrategy");
    assert!(err.contains("runstrategy"), "{err}");

    let mut deep = vm.clone();
    rename(&mut deep, "/spec/template/spec/domain/devices/interfaces/0", "macAddress", "mac");
    assert!(s.check(&deep).is_err(), "misspelled macAddress accepted");

    let mut wrong = vm.clone();
    set(&mut wrong, "/spec/template/spec/domain/cpu/cores", json!("two"));
    let err = s.check(&wrong).expect_err("string cores");
    assert!(err.contains("cores"), "{err}");

    let mut dv =
        serde_json::to_value(builder::build_datavolume(&t, &t.source.disks[0], &VolumeSource::Upload)).expect("json");
    s.check(&dv).expect("baseline dv");
    rename(&mut dv, "/spec/storage", "storageClassName", "storageClass");
    assert!(s.check(&dv).is_err(), "misspelled storageClassName accepted");

    let route = serde_json::to_value(builder::build_route("p", "ns", &lab_services(None, None)[0]).expect("route"))
        .expect("json");
    let mut bad = route.clone();
    set(&mut bad, "/spec/to/weight", json!("heavy"));
    assert!(s.check(&bad).is_err(), "string weight accepted");
    let mut bad = route.clone();
    rename(&mut bad, "/spec", "to", "target");
    assert!(s.check(&bad).is_err(), "route without spec.to accepted");
    let mut bad = route;
    set(&mut bad, "/spec/port/targetPort", json!(0));
    assert!(s.check(&bad).is_err(), "targetPort 0 accepted");
}
