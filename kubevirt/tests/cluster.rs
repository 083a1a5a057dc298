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
use vmigrate_core::{ErrorCode, Plan, SnapshotRef, TargetPass, TargetProvider, VolumeSink};
use vmigrate_kubevirt::fake::{FakeKube, FakeUploadProxy};
use vmigrate_kubevirt::job::pass_job_name;
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
    fake.insert(NS, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vmexamples"}}));
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
    // VirtualMachines, DataVolumes, PVCs, Jobs and the conversion's ConfigMaps.
    assert_eq!(del.len(), 5, "{del:?}");
    assert!(del.iter().any(|r| r.path == format!("{NS}/configmaps")), "{del:?}");
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
    assert_eq!(err.code(), ErrorCode::TargetImportFailed);
    assert!(err.report().contains("no space"), "{}", err.report());

    for (status, reason, code) in [
        (403, "Forbidden", ErrorCode::TargetForbidden),
        (409, "Conflict", ErrorCode::TargetConflict),
        (422, "Invalid", ErrorCode::TargetInvalid),
    ] {
        fake.fail(Method::PATCH, "/virtualmachines/", status, reason, 1);
        let err = t.create_vm(&vm, &[]).await.expect_err(reason);
        assert_eq!(err.code(), code, "{status}");
    }
    fake.fail(Method::PATCH, "/datavolumes/", 403, "Forbidden", 1);
    let err = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect_err("forbidden namespace");
    assert_eq!(err.code(), ErrorCode::TargetForbidden);

    // No KubeVirt (found from discovery; the fake answers a plain-text 404 like a real server):
    // no VMs exist, and writing one is KubeMissingCrd.
    fake.uninstall("kubevirt.io/v1");
    let t = target(&fake, None, TransferMethod::Upload); // a new run: discovery is per run
    assert!(t.existing_vms("vmexamples").await.expect("no kubevirt: no VMs").is_empty());
    let err = t.create_vm(&vm, &[]).await.expect_err("no kubevirt");
    assert_eq!(err.code(), ErrorCode::TargetMissingApi);
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
        ["target.kubevirt-missing", "target.namespace-missing", "target.storage-class-missing", "target.nad-missing",]
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
    assert!(ids.is_empty(), "guests are converted in the cluster (a Job): nothing to refuse: {ids:?}");
    let mut raw = plan.clone();
    raw.spec.skip_guest_conversion = true;
    assert!(t2.preflight(&raw).await.expect("preflight").is_empty());
}

#[tokio::test]
async fn expose_falls_back_to_ingress_without_routes() {
    let fake = FakeKube::start("t").await;
    fake.uninstall("route.openshift.io/v1");
    let t = target(&fake, None, TransferMethod::Upload);
    fake.insert(NS, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "vmexamples"}}));
    t.expose("move-webapp-vmware", "vmexamples", &lab_services(None, None)).await.expect("expose");
    let reqs = fake.requests();
    assert!(reqs
        .iter()
        .any(|r| r.method == "PATCH"
            && r.path == "/apis/networking.k8s.io/v1/namespaces/vmexamples/ingresses/route-webapp"));
    assert!(!reqs.iter().any(|r| r.path.contains("/routes/")));
    fake.assert_applies_are_ssa();
}

/// A finished worker pod of `job` whose container left `message` (exit `code`).
fn worker_pod(fake: &FakeKube, job: &str, n: u32, code: i32, message: &str) {
    fake.insert(
        &format!("/api/v1/namespaces/vmexamples/pods/{job}-{n}"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": format!("{job}-{n}"), "namespace": "vmexamples",
                            "labels": {"batch.kubernetes.io/job-name": job, "job-name": job}},
               "status": {"containerStatuses": [{"name": "transfer", "image": "x", "imageID": "", "ready": false,
                          "restartCount": 0, "state": {"terminated": {"exitCode": code, "message": message}}}]}}),
    );
}

#[tokio::test]
async fn job_path_runs_one_job_per_pass_and_takes_only_the_workers_report() {
    let fake = FakeKube::start("t").await;
    let t = target(&fake, None, TransferMethod::Job);
    assert!(t.capabilities().incremental, "transfer: job applies warm delta passes");
    let vm = database();
    fake.play_statuses(&format!("{DVS}/database-disk0"), vec![json!({"phase": "Succeeded"})]);
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("prepare");
    assert!(matches!(t.open_volume(&vm, &vol).await.expect("open"), VolumeSink::Passes));
    let complete = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});

    // The full pass at a snapshot: its own Job, the snapshot on the worker's command line.
    let snap = SnapshotRef { id: "snapshot-7".into(), name: "s".into(), change_ids: Default::default() };
    let pass = TargetPass { name: "full".into(), snapshot: Some(snap.clone()), changed_since: None };
    let full_job = pass_job_name("database-disk0", &pass);
    assert!(full_job.starts_with("database-disk0-full-"), "{full_job}");
    let full_path = format!("/apis/batch/v1/namespaces/vmexamples/jobs/{full_job}");
    let full_path = full_path.as_str();
    fake.play_statuses(full_path, vec![json!({"active": 1}), complete.clone()]);
    let report = json!({"pass": "full", "size": 1048576, "ranges": 0, "changedBytes": 1048576,
                        "bytesRead": 524288, "bytesWritten": 524288, "bytesZeroed": 0});
    worker_pod(&fake, &full_job, 1, 0, &report.to_string());
    let got = t.run_pass(&vm, &vol, &pass).await.expect("full pass");
    assert_eq!(got.bytes_read, 524288);
    let reqs = fake.requests();
    let dv = reqs.iter().find(|r| r.method == "PATCH" && r.path.ends_with("/datavolumes/database-disk0")).expect("dv");
    assert_eq!(dv.body["spec"]["source"]["blank"], json!({}));
    let job = reqs.iter().find(|r| r.method == "PATCH" && r.path == full_path).expect("job applied");
    let c = &job.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["volumeDevices"][0]["devicePath"], "/dev/xvda");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args[0], "transfer");
    for w in [
        ["--target-device", "/dev/xvda"],
        ["--pass", "full"],
        ["--snapshot", "snapshot-7"],
        ["--result-file", "/dev/termination-log"],
    ] {
        assert!(args.windows(2).any(|x| x == w), "{w:?} in {args:?}");
    }
    assert!(!args.contains(&"--changed-since"), "{args:?}");

    // A delta pass is a new Job carrying the change id; a completed Job without a worker report
    // is not a finished pass.
    let delta = TargetPass { name: "precopy-1".into(), snapshot: Some(snap), changed_since: Some("52 aa/3".into()) };
    let delta_job = pass_job_name("database-disk0", &delta);
    let delta_path = format!("/apis/batch/v1/namespaces/vmexamples/jobs/{delta_job}");
    let delta_path = delta_path.as_str();
    fake.play_statuses(delta_path, vec![complete.clone()]);
    let err = t.run_pass(&vm, &vol, &delta).await.expect_err("no report, no success");
    assert_eq!(err.code(), ErrorCode::TargetImportFailed);
    assert!(err.to_string().contains("no worker pod reported"), "{err}");
    let job =
        fake.requests().into_iter().rev().find(|r| r.method == "PATCH" && r.path == delta_path).expect("delta job");
    let args: Vec<String> = job.body["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    assert!(args.windows(2).any(|w| w == ["--changed-since", "52 aa/3"]), "{args:?}");
    // A report of another pass is refused too.
    worker_pod(&fake, &delta_job, 1, 0, &report.to_string());
    let err = t.run_pass(&vm, &vol, &delta).await.expect_err("wrong pass");
    assert!(err.to_string().contains("not \"precopy-1\""), "{err}");

    // A failed Job fails the pass with the worker's own last words.
    let c2 = "/apis/batch/v1/namespaces/vmexamples/jobs/database-disk0-cutover";
    fake.play_statuses(c2, vec![json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]})]);
    worker_pod(&fake, "database-disk0-cutover", 1, 1, "vmigrate: snapshot snapshot-9 not found");
    let cut = TargetPass { name: "cutover".into(), snapshot: None, changed_since: None };
    let err = t.run_pass(&vm, &vol, &cut).await.expect_err("job failed");
    assert_eq!(err.code(), ErrorCode::TargetImportFailed);
    assert!(err.to_string().contains("snapshot-9 not found"), "{err}");
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

/// Issue 12: a pass Job is waited for as long as its worker runs (a full copy of a big disk
/// takes hours; the target's timeout must not cut it off), and times out only when no worker
/// pod runs for that long (unschedulable, image pull, volume attach).
#[tokio::test]
async fn a_pass_job_times_out_only_while_no_worker_runs() {
    let fake = FakeKube::start("t").await;
    let t = KubevirtTarget::from_client(fake.client()).with_options(KubevirtOptions {
        transfer: TransferMethod::Job,
        adopt_plan_options: false,
        timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(10),
        ..Default::default()
    });
    let vm = database();
    fake.play_statuses(&format!("{DVS}/database-disk0"), vec![json!({"phase": "Succeeded"})]);
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("prepare");
    let pass = TargetPass { name: "full".into(), snapshot: None, changed_since: None };
    let job = pass_job_name("database-disk0", &pass);
    let path = format!("/apis/batch/v1/namespaces/vmexamples/jobs/{job}");
    // The worker runs for about a second (100 polls), three times the timeout, then completes.
    let mut statuses = vec![json!({"active": 1, "ready": 1}); 100];
    statuses.push(json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}));
    fake.play_statuses(&path, statuses);
    let report = json!({"pass": "full", "size": 1048576, "ranges": 0, "changedBytes": 1048576,
                        "bytesRead": 1048576, "bytesWritten": 1048576, "bytesZeroed": 0});
    worker_pod(&fake, &job, 1, 0, &report.to_string());
    let started = std::time::Instant::now();
    t.run_pass(&vm, &vol, &pass).await.expect("a long pass with a running worker is waited for");
    assert!(started.elapsed() > Duration::from_millis(300), "{:?}", started.elapsed());

    // A Job whose pod never runs (Pending: active but not ready) times out, saying why.
    let cut = TargetPass { name: "cutover".into(), snapshot: None, changed_since: None };
    let path = format!("/apis/batch/v1/namespaces/vmexamples/jobs/{}", pass_job_name("database-disk0", &cut));
    fake.play_statuses(&path, vec![json!({"active": 1, "ready": 0})]);
    let err = t.run_pass(&vm, &vol, &cut).await.expect_err("never running");
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(err.to_string().contains("no worker pod running"), "{err}");
}
