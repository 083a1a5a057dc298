//! The in-cluster conversion Job and its input ConfigMap. No Kubernetes core schema is in the
//! fixtures, so the objects are typed by k8s-openapi and checked here for what the pod needs;
//! running the Job needs a cluster with KubeVirt (not available to this suite).

mod common;

use common::*;
use vmigrate_core::convert::ConversionRequest;
use vmigrate_core::plan::{StorageDestination, VolumeMode};
use vmigrate_core::PreparedVolume;
use vmigrate_kubevirt::builder;
use vmigrate_kubevirt::convert_job::{build_conversion_job, build_input_configmap, job_name};

fn volumes(t: &vmigrate_core::TargetVm) -> Vec<PreparedVolume> {
    t.source
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| PreparedVolume {
            disk_key: d.key,
            name: builder::volume_name(&t.name, i),
            size: builder::volume_size(d),
        })
        .collect()
}

#[test]
fn conversion_job_mounts_every_volume_and_runs_virt_v2v_in_place() {
    let mut t = winweb01();
    // Disk 0 on a Block volume (the lab's storage map), disk 1 on a Filesystem volume.
    t.storage.insert(
        2001,
        StorageDestination {
            storage_class: "standard".into(),
            volume_mode: Some(VolumeMode::Filesystem),
            access_mode: None,
        },
    );
    t.source.nics[0].ip_addresses = vec!["10.1.2.3".parse().expect("ip")];
    let req = ConversionRequest {
        preserve_static_ips: true,
        root_disk: None,
        virtio_win: Some("/usr/share/virtio-win/virtio-win.iso".into()),
    };
    let job = serde_json::to_value(build_conversion_job(&t, &volumes(&t), "localhost/vmigrate-convert:latest", &req))
        .expect("json");
    assert_eq!(job["metadata"]["name"], "winweb01-convert");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(c["command"], serde_json::json!(["virt-v2v-in-place"]));
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args.first(), Some(&"-v"));
    assert!(args.windows(2).any(|w| w == ["-i", "libvirtxml"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--root", "first"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--mac", "00:50:56:aa:00:02:ip:10.1.2.3"]), "{args:?}");
    assert_eq!(args.last(), Some(&"/mnt/v2v/domain.xml"));
    assert_eq!(c["resources"]["limits"]["devices.kubevirt.io/kvm"], "1");
    let env = c["env"].as_array().expect("env");
    assert!(env.iter().any(|e| e["name"] == "VIRTIO_WIN" && e["value"] == "/usr/share/virtio-win/virtio-win.iso"));
    assert!(env.iter().all(|e| e.get("valueFrom").is_none()), "no secrets in the conversion pod");
    assert_eq!(c["volumeDevices"], serde_json::json!([{ "name": "disk0", "devicePath": "/dev/disk0" }]));
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.iter().any(|m| m["name"] == "disk1" && m["mountPath"] == "/mnt/disks/disk1"));
    assert!(mounts.iter().any(|m| m["name"] == "v2v-input" && m["readOnly"] == true));
    let vols = pod["volumes"].as_array().expect("volumes");
    assert!(vols.iter().any(|v| v["name"] == "disk0" && v["persistentVolumeClaim"]["claimName"] == "winweb01-disk0"));
    assert!(vols.iter().any(|v| v["name"] == "disk1" && v["persistentVolumeClaim"]["claimName"] == "winweb01-disk1"));
    assert!(vols.iter().any(|v| v["name"] == "v2v-input" && v["configMap"]["name"] == "winweb01-convert"));
    // Typed objects survive a round trip through the API types (what the server would accept).
    let back: k8s_openapi::api::batch::v1::Job = serde_json::from_value(job.clone()).expect("a Job");
    assert_eq!(serde_json::to_value(back).expect("json"), job);

    let cm = build_input_configmap(&t);
    assert_eq!(cm.metadata.name.as_deref(), Some(job_name(&t).as_str()));
    let xml = &cm.data.as_ref().expect("data")["domain.xml"];
    assert!(xml.contains("<source file='/dev/disk0'/>"), "{xml}");
    assert!(xml.contains("<source file='/mnt/disks/disk1/disk.img'/>"), "{xml}");
    assert!(xml.contains("<os firmware='efi'>") || !matches!(t.source.firmware, vmigrate_core::model::Firmware::Efi));
    assert!(xml.contains("<mac address='00:50:56:aa:00:02'/>"));
}

#[test]
fn long_names_stay_valid() {
    let mut t = database();
    t.name = "a".repeat(63);
    let name = job_name(&t);
    assert!(name.len() <= 63 && name.ends_with("-convert"), "{name}");
}
