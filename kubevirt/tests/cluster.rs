//! KubevirtTarget against the in-process fake Kubernetes API and fake upload proxy: exact
//! requests (server-side apply by `vmigrate`), played-back DataVolume phases and Job status,
//! error mapping, preflight concerns, cleanup by label.

mod common;

use std::time::Duration;

use axum::http::Method;
use bytes::Bytes;
use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};
use vmigrate_core::plan::TransferMethod;
use vmigrate_core::{ErrorCode, Plan, TargetProvider, VolumeSink};
use vmigrate_kubevirt::fake::{FakeKube, FakeUploadProxy};
use vmigrate_kubevirt::{KubevirtOptions, KubevirtTarget};

const NS: &str = "/api/v1/namespaces/vmexamples";
const DVS: &str = "/apis/cdi.kubevirt.io/v1beta1/namespaces/vmexamples/datavolumes";

fn target(fake: &FakeKube, proxy: Option<&FakeUploadProxy>, transfer: TransferMethod) -> KubevirtTarget {
    KubevirtTarget::from_client(fake.client()).with_options(KubevirtOptions {
        transfer,
        compression: true,
        adopt_plan_options: false,
        upload_proxy_url: proxy.map(FakeUploadProxy::base_url),
        timeout: Duration::from_secs(10),
        poll_interval: Duration::from_millis(5),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_path_end_to_end() {
    let fake = FakeKube::start("tok-9").await;
    let proxy = FakeUploadProxy::start("tok-9").await;
    let t = target(&fake, Some(&proxy), TransferMethod::Upload);
    let mut vm = database();
    vm.source.disks[0].capacity_bytes = 4 << 20;
    let dv_path = format!("{DVS}/database-disk0");
    fake.play_statuses(
        &dv_path,
        vec![json!({"phase": "Pending"}), json!({"phase": "UploadScheduled"}), json!({"phase": "UploadReady"})],
    );

    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("prepare");
    assert_eq!(vol.name, "database-disk0");
    assert_eq!(vol.size, 4 << 20);
    let VolumeSink::Transport(sink) = t.open_volume(&vm, &vol).await.expect("open") else {
        panic!("upload gives a transport")
    };
    let data: Vec<u8> = (0..(4 << 20)).map(|i| (i % 251) as u8).collect();
    sink.write_at(2 << 20, Bytes::copy_from_slice(&data[2 << 20..])).await.expect("second half first");
    sink.write_at(0, Bytes::copy_from_slice(&data[..2 << 20])).await.expect("first half");
    sink.flush().await.expect("flush");
    fake.play_statuses(&dv_path, vec![json!({"phase": "Succeeded", "progress": "100.0%"})]);
    t.finish_volume(&vm, &vol).await.expect("finish");
    let up = &proxy.uploads()[0];
    assert_eq!(hex::encode(Sha256::digest(&up.image)), hex::encode(Sha256::digest(&data)));
    assert!(up.zstd);
    let stats = t.upload_stats("database-disk0").expect("stats");
    assert_eq!(stats.bytes_copied(), 4 << 20);

    t.create_vm(&vm, &[vol]).await.expect("create vm");
    t.expose("move-webapp-vmware", "vmexamples", &lab_services(None, None)).await.expect("expose");

    fake.assert_applies_are_ssa();
    let reqs = fake.requests();
    let dv_apply = reqs.iter().find(|r| r.method == "PATCH" && r.path == dv_path).expect("dv applied");
    assert_eq!(dv_apply.body["spec"]["source"]["upload"], json!({}));
    assert_eq!(dv_apply.body["metadata"]["labels"]["vmigrate.dev/plan"], "move-webapp-vmware");
    Schemas::load().check(&dv_apply.body).expect("applied DataVolume validates");
    let tok =
        reqs.iter().find(|r| r.method == "POST" && r.path.ends_with("/uploadtokenrequests")).expect("token request");
    assert_eq!(tok.path, "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/vmexamples/uploadtokenrequests");
    assert_eq!(tok.body["spec"]["pvcName"], "database-disk0");
    let vm_apply = reqs
        .iter()
        .find(|r| {
            r.method == "PATCH" && r.path == "/apis/kubevirt.io/v1/namespaces/vmexamples/virtualmachines/database"
        })
        .expect("vm applied");
    Schemas::load().check(&vm_apply.body).expect("applied VM validates");
    assert!(reqs.iter().any(|r| r.method == "PATCH" && r.path == format!("{NS}/services/webapp")));
    let route = reqs
        .iter()
        .find(|r| {
            r.method == "PATCH" && r.path == "/apis/route.openshift.io/v1/namespaces/vmexamples/routes/route-webapp"
        })
        .expect("route applied");
    assert_eq!(route.body["spec"]["to"]["name"], "webapp");

    // existing_vms sees the VM with its MAC and labels.
    let ex = t.existing_vms("vmexamples").await.expect("existing");
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].macs, ["00:50:56:aa:00:01"]);
    assert_eq!(ex[0].plan.as_deref(), Some("move-webapp-vmware"));

    // Cleanup deletes by label selector.
    t.cleanup(&vm).await.expect("cleanup");
    assert!(fake.get("/apis/kubevirt.io/v1/namespaces/vmexamples/virtualmachines/database").is_none());
    assert!(fake.get(&dv_path).is_none());
    let del = fake.requests().into_iter().filter(|r| r.method == "DELETE").collect::<Vec<_>>();
    assert_eq!(del.len(), 4, "{del:?}");
    assert!(del.iter().all(|r| r.query.contains("labelSelector=")), "{del:?}");
}

#[tokio::test]
async fn failed_datavolume_and_http_errors_map_to_codes() {
    let fake = FakeKube::start("t").await;
    let t = target(&fake, None, TransferMethod::Upload);
    let vm = database();
    fake.play_statuses(
        &format!("{DVS}/database-disk0"),
        vec![json!({"phase": "Failed", "conditions": [{"type": "Running", "status": "False", "message": "upload pod failed: no space"}]})],
    );
    let err = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect_err("failed dv");
    assert_eq!(err.code(), ErrorCode::DataVolumeFailed);
    assert!(err.report().contains("no space"), "{}", err.report());

    for (status, reason, code) in [
        (403, "Forbidden", ErrorCode::KubeForbidden),
        (409, "Conflict", ErrorCode::KubeConflict),
        (422, "Invalid", ErrorCode::KubeInvalid),
    ] {
        fake.fail(Method::PATCH, "/virtualmachines/", status, reason, 1);
        let err = t.create_vm(&vm, &[]).await.expect_err(reason);
        assert_eq!(err.code(), code, "{status}");
    }
    fake.fail(Method::PATCH, "/datavolumes/", 403, "Forbidden", 1);
    let err = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect_err("forbidden namespace");
    assert_eq!(err.code(), ErrorCode::KubeForbidden);

    fake.uninstall("kubevirt.io/v1");
    let err = t.existing_vms("vmexamples").await.expect_err("no kubevirt");
    assert_eq!(err.code(), ErrorCode::KubeMissingCrd);
}

#[tokio::test]
async fn preflight_reports_missing_pieces() {
    let fake = FakeKube::start("t").await;
    let t = KubevirtTarget::from_client(fake.client());
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/plan-multus.yaml")).expect("plan");
    let plan = Plan::from_yaml_str(&text).expect("plan parses");
    fake.uninstall("kubevirt.io/v1");
    let ids: Vec<String> = t.preflight(&plan).await.expect("preflight").into_iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [
            "target.kubevirt-missing",
            "target.namespace-missing",
            "target.storage-class-missing",
            "target.nad-missing",
            "target.conversion-unsupported"
        ]
    );

    fake.insert(NS, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vmexamples"}}));
    fake.insert("/apis/storage.k8s.io/v1/storageclasses/ceph-rbd", json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "ceph-rbd"}, "provisioner": "x"}));
    fake.insert("/apis/k8s.cni.cncf.io/v1/namespaces/vmexamples/network-attachment-definitions/backend", json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": "backend", "namespace": "vmexamples"}}));
    let fake2 = FakeKube::start("t").await;
    for (p, v) in [
        (NS.to_string(), fake.get(NS).expect("ns")),
        (
            "/apis/storage.k8s.io/v1/storageclasses/ceph-rbd".to_string(),
            fake.get("/apis/storage.k8s.io/v1/storageclasses/ceph-rbd").expect("sc"),
        ),
        (
            "/apis/k8s.cni.cncf.io/v1/namespaces/vmexamples/network-attachment-definitions/backend".to_string(),
            fake.get("/apis/k8s.cni.cncf.io/v1/namespaces/vmexamples/network-attachment-definitions/backend")
                .expect("nad"),
        ),
    ] {
        fake2.insert(&p, v);
    }
    let t2 = KubevirtTarget::from_client(fake2.client());
    let ids: Vec<String> = t2.preflight(&plan).await.expect("preflight").into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["target.conversion-unsupported"], "the cluster does not convert guests yet");
    let mut raw = plan.clone();
    raw.spec.skip_guest_conversion = true;
    assert!(t2.preflight(&raw).await.expect("preflight").is_empty());
}

#[tokio::test]
async fn expose_falls_back_to_ingress_without_routes() {
    let fake = FakeKube::start("t").await;
    fake.uninstall("route.openshift.io/v1");
    let t = target(&fake, None, TransferMethod::Upload);
    t.expose("move-webapp-vmware", "vmexamples", &lab_services(None, None)).await.expect("expose");
    let reqs = fake.requests();
    assert!(reqs
        .iter()
        .any(|r| r.method == "PATCH"
            && r.path == "/apis/networking.k8s.io/v1/namespaces/vmexamples/ingresses/route-webapp"));
    assert!(!reqs.iter().any(|r| r.path.contains("/routes/")));
    fake.assert_applies_are_ssa();
}

#[tokio::test]
async fn job_path_creates_blank_volume_and_follows_the_job() {
    let fake = FakeKube::start("t").await;
    let t = target(&fake, None, TransferMethod::Job);
    let vm = database();
    fake.play_statuses(&format!("{DVS}/database-disk0"), vec![json!({"phase": "Succeeded"})]);
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("prepare");
    let job_path = "/apis/batch/v1/namespaces/vmexamples/jobs/database-disk0-transfer";
    fake.play_statuses(
        job_path,
        vec![json!({"active": 1}), json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})],
    );
    assert!(matches!(t.open_volume(&vm, &vol).await.expect("open"), VolumeSink::SelfImport));
    t.finish_volume(&vm, &vol).await.expect("job completes");
    let reqs = fake.requests();
    let dv = reqs.iter().find(|r| r.method == "PATCH" && r.path.ends_with("/datavolumes/database-disk0")).expect("dv");
    assert_eq!(dv.body["spec"]["source"]["blank"], json!({}));
    let job = reqs.iter().find(|r| r.method == "PATCH" && r.path == job_path).expect("job applied");
    let c = &job.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["volumeDevices"][0]["devicePath"], "/dev/xvda");
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args[0], "transfer");
    assert!(args.windows(2).any(|w| w == ["--target-device", "/dev/xvda"]), "{args:?}");

    fake.play_statuses(job_path, vec![json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]})]);
    t.open_volume(&vm, &vol).await.expect("open again");
    let err = t.finish_volume(&vm, &vol).await.expect_err("job failed");
    assert_eq!(err.code(), ErrorCode::DataVolumeFailed);
}

#[tokio::test]
#[ignore = "needs cluster (creates DataVolume)"]
async fn real_cluster_upload_roundtrip() {
    if std::env::var_os("KUBECONFIG").is_none() {
        panic!("set KUBECONFIG to a cluster with KubeVirt and CDI");
    }
    let t = KubevirtTarget::connect(None).await.expect("connect");
    let ns = std::env::var("VMIGRATE_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let mut vm = database();
    vm.namespace = ns;
    vm.name = "vmigrate-itest".into();
    vm.storage.clear();
    vm.source.disks[0].capacity_bytes = 16 << 20;
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("prepare");
    let VolumeSink::Transport(sink) = t.open_volume(&vm, &vol).await.expect("open") else { panic!("transport") };
    sink.write_at(0, Bytes::from(vec![0x42u8; 16 << 20])).await.expect("write");
    sink.flush().await.expect("flush");
    t.finish_volume(&vm, &vol).await.expect("succeeded");
    t.cleanup(&vm).await.expect("cleanup");
}
