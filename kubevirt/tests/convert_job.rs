//! The in-cluster conversion Job and its input ConfigMap. No Kubernetes core schema is in the
//! fixtures, so the objects are typed by k8s-openapi and checked here for what the pod needs;
//! tests/e2e_convert_cluster.rs runs the Job against a real API server, and its report wrapper
//! is run here on a stand-in program.

mod common;

use common::*;
use vmigrate_core::convert::ConversionRequest;
use vmigrate_core::plan::{StorageDestination, VolumeMode};
use vmigrate_kubevirt::convert_job::{build_conversion_job, build_input_configmap, job_name};

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
    // virt-v2v-in-place through the report wrapper: `bash -c WRAPPER virt-v2v-in-place ARGS`.
    assert_eq!(
        c["command"],
        serde_json::json!(["bash", "-c", vmigrate_kubevirt::convert_job::WRAPPER, "virt-v2v-in-place"])
    );
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
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

/// Run the Job's report wrapper over a stand-in for virt-v2v-in-place that prints `log` and
/// exits `code`; the report it writes (its termination message) and the output it streams.
fn run_wrapper(log: &str, code: i32) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let prog = dir.path().join("virt-v2v-in-place");
    let sample = dir.path().join("sample.log");
    std::fs::write(&sample, log).expect("sample");
    std::fs::write(&prog, format!("#!/bin/sh\ncat '{}'\nexit {code}\n", sample.display())).expect("stand-in");
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let result = dir.path().join("termination-log");
    // The same script, writing where this test can read instead of /dev/termination-log.
    let script = vmigrate_kubevirt::convert_job::WRAPPER.replace("/dev/termination-log", &result.display().to_string());
    assert_ne!(script, vmigrate_kubevirt::convert_job::WRAPPER);
    let out = std::process::Command::new("bash")
        .args(["-c", &script, &prog.display().to_string(), "-v", "-i", "libvirtxml", "/mnt/v2v/domain.xml"])
        .output()
        .expect("bash");
    let report = std::fs::read_to_string(&result).expect("report written");
    (out.status.code().unwrap_or(-1), report, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_report_wrapper_keeps_what_decides_the_vm_and_virt_v2v_s_status() {
    // virt-v2v's verbose output: thousands of libguestfs lines around the report lines.
    let sample = include_str!("../../core/src/convert/testdata/debian12-hostonly-in-place.log");
    let noise: String = (0..20_000).map(|i| format!("libguestfs: trace: noise line {i}\n")).collect();
    let log = format!("{noise}{sample}{noise}");
    let (code, report, streamed) = run_wrapper(&log, 0);
    assert_eq!(code, 0);
    assert_eq!(streamed, log, "the whole log is the container's output");
    assert!(report.len() <= 4000, "a termination message holds 4096 bytes: {}", report.len());
    assert!(!report.contains("noise"), "{report}");
    let parsed = vmigrate_core::convert::parse_report(&report);
    assert_eq!(parsed, vmigrate_core::convert::parse_report(sample), "the report parses as the whole log does");
    assert_eq!(parsed.os.as_ref().map(|o| o.osinfo.as_str()), Some("debian12"));
    assert_eq!(parsed.block_bus.as_deref(), Some("virtio-blk"));

    // A failure: the exit status is virt-v2v's and the report carries its error lines.
    let failed = format!(
        "{noise}virt-v2v-in-place: error: inspection could not detect the source guest (or physical machine).\n\nAssuming that you are running virt-v2v/virt-p2v on a source which is\nsupported (and not, for example, a blank disk), then this should not\nhappen.\n{noise}"
    );
    let (code, report, _) = run_wrapper(&failed, 1);
    assert_eq!(code, 1);
    assert!(report.starts_with("virt-v2v-in-place: error: inspection could not detect"), "{report}");
    assert!(vmigrate_core::convert::failure_summary(&report).contains("could not detect"));

    // virt-v2v that could not even start (no error line): the log's tail.
    let (code, report, _) = run_wrapper("supermin: failed to find a suitable kernel\n", 2);
    assert_eq!(code, 2);
    assert!(report.contains("supermin: failed to find a suitable kernel"), "{report}");
}
