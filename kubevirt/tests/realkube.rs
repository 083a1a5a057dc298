//! KubevirtTarget against a real control plane (etcd, kube-apiserver, kube-controller-manager
//! with the garbage collector, namespace and job controllers; KubeVirt, CDI and Route CRDs
//! installed by server-side apply): the behaviours the in-process fake got wrong (issue 16).
//!
//! No CDI or KubeVirt controller runs here. Where a test needs a DataVolume to move through its
//! phases, [`CdiStandIn`] writes the phases CDI's controller would write (through the status
//! subresource, as field manager `cdi-standin`) and removes a test finalizer the way a controller
//! finishes its cleanup; the test says so where it uses it.
//!
//! The peers are built by `tests/peers/build-kube.sh`; without them these tests fail.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use vmigrate_core::plan::TransferMethod;
use vmigrate_core::{ErrorCode, PreparedVolume, TargetProvider, TargetVm};
use vmigrate_kubevirt::realkube::{CdiStandIn, Crds, RealKube};
use vmigrate_kubevirt::{DataVolume, KubevirtError, KubevirtOptions, KubevirtTarget, VirtualMachine};

fn options() -> KubevirtOptions {
    KubevirtOptions {
        transfer: TransferMethod::Upload,
        compression: true,
        adopt_plan_options: false,
        upload_proxy_url: Some("https://127.0.0.1:1".into()),
        timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

async fn target(kube: &RealKube) -> KubevirtTarget {
    KubevirtTarget::from_client(kube.client().await).with_options(options())
}

async fn namespace(kube: &RealKube, name: &str) -> String {
    let api: Api<Namespace> = Api::all(kube.client().await);
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    api.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name.to_string()
}

fn in_ns(mut vm: TargetVm, ns: &str) -> TargetVm {
    vm.namespace = ns.into();
    vm
}

async fn set_phase(client: &kube::Client, ns: &str, name: &str, phase: &str) {
    let api: Api<DataVolume> = Api::namespaced(client.clone(), ns);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": phase}})))
        .await
        .expect("set phase");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_are_established_and_the_target_reads_the_cluster() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "smoke").await;
    let t = target(kube).await;
    assert!(t.has_api("kubevirt.io/v1").await.expect("discovery"));
    assert!(t.has_api("cdi.kubevirt.io/v1beta1").await.expect("discovery"));
    assert!(t.has_api("route.openshift.io/v1").await.expect("discovery"));
    assert!(!t.has_api("upload.cdi.kubevirt.io/v1beta1").await.expect("discovery"), "no cdi-apiserver here");
    assert!(t.existing_vms(&ns).await.expect("list VMs").is_empty());
}

/// Issue 16 item 1: a re-run deletes the populated upload DataVolume; on a real server the
/// deleted object lingers (here: a finalizer the CDI stand-in removes after 3 s). The new run
/// must wait for it to be gone and populate a new object, not land on the dying one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_waits_for_the_deleted_datavolume_to_be_gone() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "rerun").await;
    let client = kube.client().await;
    let _cdi = CdiStandIn::start(client.clone(), &ns, "UploadReady", Duration::from_secs(3));
    let vm = in_ns(database(), &ns);
    let disk = &vm.source.disks[0];

    let first = target(kube).await;
    let vol = first.prepare_volume(&vm, disk).await.expect("first run: upload ready");
    set_phase(&client, &ns, &vol.name, "Succeeded").await; // the first run's upload completed
    let api: Api<DataVolume> = Api::namespaced(client.clone(), &ns);
    let old_uid = api.get(&vol.name).await.expect("dv").metadata.uid.expect("uid");

    let second = target(kube).await;
    let vol2 = second.prepare_volume(&vm, disk).await.expect("second run gets a fresh DataVolume");
    let dv = api.get(&vol2.name).await.expect("dv");
    assert_ne!(dv.metadata.uid.as_deref(), Some(old_uid.as_str()), "a new object, not the dying one");
    assert_eq!(dv.phase(), "UploadReady");
    assert!(dv.metadata.deletion_timestamp.is_none());
}

/// Issue 16 item 1: cleanup after a failed re-run removes only what that run made; the VM and
/// its objects of an earlier successful run stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_of_a_failed_rerun_leaves_the_earlier_run_alone() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "cleanup").await;
    let client = kube.client().await;
    let cdi = CdiStandIn::start(client.clone(), &ns, "UploadReady", Duration::from_millis(200));
    let vm = in_ns(database(), &ns);
    let mut other = in_ns(winweb01(), &ns);
    other.source.disks.truncate(1);

    // The earlier run: `database` completed (VM and DataVolume).
    let first = target(kube).await;
    let vol = first.prepare_volume(&vm, &vm.source.disks[0]).await.expect("first run");
    set_phase(&client, &ns, &vol.name, "Succeeded").await;
    first.create_vm(&vm, std::slice::from_ref(&vol)).await.expect("first run: vm");
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    let vm_uid = vms.get(&vm.name).await.expect("vm").metadata.uid;

    // The re-run: `winweb01`'s volume fails; the executor cleans up that VM, and a cleanup of
    // `database` (e.g. a cancel) must not take the earlier run's VM with it.
    cdi.set_next_phase("Failed");
    let second = target(kube).await;
    let err = second.prepare_volume(&other, &other.source.disks[0]).await.expect_err("failed volume");
    assert_eq!(err.code(), ErrorCode::TargetImportFailed);
    second.cleanup(&other).await.expect("cleanup winweb01");
    second.cleanup(&vm).await.expect("cleanup database");

    assert_eq!(vms.get(&vm.name).await.expect("earlier VM stays").metadata.uid, vm_uid);
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), &ns);
    let dv = dvs.get(&vol.name).await.expect("earlier DataVolume stays");
    assert!(dv.metadata.deletion_timestamp.is_none());
    let gone = wait_gone(&dvs, "winweb01-disk0").await;
    assert!(gone, "the re-run's own failed DataVolume is deleted");
}

async fn wait_gone(api: &Api<DataVolume>, name: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if api.get_opt(name).await.expect("get").is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Issue 16 item 2: a cluster without KubeVirt answers its paths with a plain-text
/// `404 page not found`; the target finds that out from discovery: no VMs exist, preflight says
/// `target.kubevirt-missing`, and writes fail with KubeMissingCrd (not KubeNotFound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kubevirt_is_found_by_discovery() {
    let kube = RealKube::start(Crds::WithoutKubevirt).await;
    let ns = namespace(&kube, "vmexamples").await;
    let t = target(&kube).await;
    assert!(t.existing_vms(&ns).await.expect("no KubeVirt: no VMs, not an error").is_empty());
    let plan = vmigrate_core::Plan::from_yaml_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/test_data/plan-multus.yaml")).expect("plan"),
    )
    .expect("plan parses");
    let ids: Vec<String> = t.preflight(&plan).await.expect("preflight").into_iter().map(|c| c.id).collect();
    assert!(ids.contains(&"target.kubevirt-missing".to_string()), "{ids:?}");
    let vm = in_ns(database(), &ns);
    let err = t.create_vm(&vm, &[]).await.expect_err("no KubeVirt");
    assert_eq!(err.code(), ErrorCode::TargetMissingApi, "{}", err.report());
}

/// Issue 16 item 2: UploadTokenRequest is served by cdi-apiserver (an aggregated API); without
/// it the upload path fails with KubeMissingCrd naming the API, not KubeNotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_upload_token_api_is_missing_crd() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "uploadtoken").await;
    let t = target(kube).await;
    let vm = in_ns(database(), &ns);
    let vol = PreparedVolume { disk_key: vm.source.disks[0].key, name: "database-disk0".into(), size: 1 << 20 };
    let Err(err) = t.open_volume(&vm, &vol).await else { panic!("no upload API: open must fail") };
    assert_eq!(err.code(), ErrorCode::TargetMissingApi, "{}", err.report());
    assert!(err.report().contains("upload.cdi.kubevirt.io/v1beta1"), "{}", err.report());
}

/// Issue 16 item 3: the real server refuses objects in a missing namespace; `expose` checks
/// the namespace first and is blocked with `target.namespace-missing`, like `migrate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_into_a_missing_namespace_is_blocked() {
    let kube = RealKube::shared().await;
    let t = target(kube).await;
    let err = t.expose("p", "no-such-namespace", &lab_services(None, None)).await.expect_err("missing namespace");
    assert_eq!(err.code(), ErrorCode::ValidationBlocked, "{}", err.report());
    assert!(err.report().contains("target.namespace-missing"), "{}", err.report());
    assert!(err.report().contains("no-such-namespace"), "{}", err.report());
}

/// Issue 16 item 4: another manager owning a field gives 409; the error names that manager and
/// the way out, and `force_conflicts` takes the field over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_conflicts_name_the_other_manager_and_can_be_forced() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "conflicts").await;
    let client = kube.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    let theirs = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "database"},
        "spec": {"ports": [{"port": 3306, "targetPort": 3307, "protocol": "TCP"}]}});
    svcs.patch("database", &PatchParams::apply("helm-controller"), &Patch::Apply(&theirs)).await.expect("theirs");

    let services = lab_services(None, None);
    let t = target(kube).await;
    let err = t.expose("p", &ns, &services).await.expect_err("conflict");
    assert_eq!(err.code(), ErrorCode::TargetConflict, "{}", err.report());
    assert!(err.report().contains("helm-controller"), "{}", err.report());
    assert!(err.report().contains("--force-conflicts"), "{}", err.report());

    let forced = KubevirtTarget::from_client(client.clone())
        .with_options(KubevirtOptions { force_conflicts: true, ..options() });
    forced.expose("p", &ns, &services).await.expect("forced");
    let svc = svcs.get("database").await.expect("svc");
    let port = &svc.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(port.target_port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3306)));
}

/// Issue 16 item 5: the real server refuses (HTTP 500) an apply with a field its schema does not
/// declare; that is an invalid object naming the field, not an opaque API error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_fields_are_invalid_objects() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "undeclared").await;
    let vms: Api<VirtualMachine> = Api::namespaced(kube.client().await, &ns);
    let obj = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "x"},
        "spec": {"runStrategy": "Halted", "bogusField": 1, "template": {"spec": {"domain": {"devices": {}}}}}});
    let err = vms.patch("x", &PatchParams::apply("vmigrate"), &Patch::Apply(&obj)).await.expect_err("undeclared");
    let err = KubevirtError::from_kube("apply", "VirtualMachine undeclared/x", err);
    let err = vmigrate_core::Error::from(err);
    assert_eq!(err.code(), ErrorCode::TargetInvalid, "{}", err.report());
    assert!(err.report().contains("bogusField"), "{}", err.report());
}

/// Every object the target applies on the upload path is accepted by the real server with the
/// real CRDs, and nothing we set is pruned (read back equal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_objects_are_accepted_and_not_pruned() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "accepted").await;
    let client = kube.client().await;
    let _cdi = CdiStandIn::start(client.clone(), &ns, "UploadReady", Duration::from_millis(100));
    let vm = in_ns(database(), &ns);
    let t = target(kube).await;
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("dv");
    t.create_vm(&vm, std::slice::from_ref(&vol)).await.expect("vm");
    t.expose("p", &ns, &lab_services(None, None)).await.expect("expose");
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    let got = serde_json::to_value(vms.get(&vm.name).await.expect("vm")).expect("json");
    let want = serde_json::to_value(vmigrate_kubevirt::build_vm(&vm, &[vol])).expect("json");
    assert_subset(&want["spec"], &got["spec"], "spec");
}

fn assert_subset(want: &serde_json::Value, got: &serde_json::Value, at: &str) {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => {
            for (k, v) in w {
                assert!(g.contains_key(k), "{at}.{k} was pruned");
                assert_subset(v, &g[k], &format!("{at}.{k}"));
            }
        }
        (serde_json::Value::Array(w), serde_json::Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{at}");
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                assert_subset(a, b, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{at}"),
    }
}

/// The fake models how a server answers an API it does not serve (plain-text 404, found by
/// discovery): the same requests against both must give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_answers_unserved_apis_like_the_real_server() {
    let kube = RealKube::shared().await;
    let fake = vmigrate_kubevirt::fake::FakeKube::start("t").await;
    fake.uninstall("upload.cdi.kubevirt.io/v1beta1");
    for (who, client) in [("real", kube.client().await), ("fake", fake.client())] {
        for path in [
            "/apis/upload.cdi.kubevirt.io/v1beta1",
            "/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/default/uploadtokenrequests",
        ] {
            let req = axum::http::Request::get(path).body(Vec::new()).expect("request");
            match client.request_text(req).await {
                Err(kube::Error::Api(e)) => {
                    assert_eq!(e.code, 404, "{who} {path}");
                    assert!(e.message.contains("404 page not found"), "{who} {path}: {e:?}");
                }
                other => panic!("{who} {path}: {other:?}"),
            }
        }
        let t = KubevirtTarget::from_client(client).with_options(options());
        assert!(!t.serves("upload.cdi.kubevirt.io/v1beta1", "uploadtokenrequests").await.expect(who));
        assert!(t.serves("cdi.kubevirt.io/v1beta1", "datavolumes").await.expect(who), "{who}");
        assert!(t.serves("kubevirt.io/v1", "virtualmachines").await.expect(who), "{who}");
    }
}

/// A user who may not read Namespaces (RBAC: `alice` has a Role in her namespace only) still
/// exposes: the namespace check steps aside on 403 instead of blocking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_by_a_namespace_scoped_user() {
    let kube = RealKube::shared().await;
    let ns = namespace(kube, "alice").await;
    let admin = kube.client().await;
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "exposer"},
        "rules": [{"apiGroups": ["", "route.openshift.io"], "resources": ["services", "routes"], "verbs": ["*"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "alice-exposer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exposer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]});
    let pp = PatchParams::apply("test");
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), &ns);
    roles.patch("exposer", &pp, &Patch::Apply(&role)).await.expect("role");
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(admin.clone(), &ns);
    rbs.patch("alice-exposer", &pp, &Patch::Apply(&binding)).await.expect("binding");

    let t = KubevirtTarget::from_client(kube.unprivileged_client().await).with_options(options());
    let start = Instant::now();
    loop {
        // RBAC caches settle within a moment of the binding.
        match t.expose("p", &ns, &lab_services(None, None)).await {
            Ok(()) => break,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                assert_eq!(e.code(), ErrorCode::TargetForbidden, "{}", e.report());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{}", e.report()),
        }
    }
    let svcs: Api<Service> = Api::namespaced(admin, &ns);
    svcs.get("webapp").await.expect("service");
}

/// Issue 12: the transfer Job of a pass (with its `podFailurePolicy`) is accepted by the real
/// server, the job controller makes its pod, and once the VM exists the finished pass Jobs of
/// that VM are deleted and the garbage collector takes their pods; another VM's Job in the same
/// namespace stays. (No kubelet: the pods stay Pending, which is all this needs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_jobs_are_accepted_and_go_with_their_pods_once_the_vm_exists() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    use std::sync::Arc;
    use vmigrate_core::{SnapshotRef, TargetPass};

    let kube = RealKube::shared().await;
    let ns = namespace(kube, "passjobs").await;
    let client = kube.client().await;
    // CDI's stand-in: blank DataVolumes of the job mode succeed.
    let _cdi = CdiStandIn::start(client.clone(), &ns, "Succeeded", Duration::from_millis(100));
    let t = Arc::new(KubevirtTarget::from_client(client.clone()).with_options(KubevirtOptions {
        transfer: TransferMethod::Job,
        job_checkpoint_interval: Some(Duration::from_secs(2)),
        job_work_unit: Some(16 << 20),
        ..options()
    }));
    let vm = in_ns(database(), &ns);
    let mut other = in_ns(winweb01(), &ns);
    other.source.disks.truncate(1);
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("volume");
    let other_vol = t.prepare_volume(&other, &other.source.disks[0]).await.expect("other volume");
    let snap = SnapshotRef { id: "snapshot-7".into(), name: "s".into(), change_ids: Default::default() };
    let passes = [
        (
            vm.clone(),
            vol.clone(),
            TargetPass { name: "full".into(), snapshot: Some(snap.clone()), changed_since: None },
        ),
        (
            vm.clone(),
            vol.clone(),
            TargetPass {
                name: "precopy-1".into(),
                snapshot: Some(snap.clone()),
                changed_since: Some("52 aa/3".into()),
            },
        ),
        (other.clone(), other_vol.clone(), TargetPass { name: "full".into(), snapshot: None, changed_since: None }),
    ];
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut names = Vec::new();
    for (tvm, v, pass) in passes {
        let name = vmigrate_kubevirt::job::pass_job_name(&v.name, &pass);
        // run_pass applies the Job and then follows it, which never ends without a kubelet.
        let t2 = t.clone();
        let run = tokio::spawn(async move { t2.run_pass(&tvm, &v, &pass).await });
        let start = Instant::now();
        loop {
            let job = jobs.get_opt(&name).await.expect("get job");
            let pod = pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await.expect("pods");
            if job.is_some() && !pod.items.is_empty() {
                break;
            }
            assert!(!run.is_finished(), "run_pass of {name} ended: {:?}", run.await);
            assert!(start.elapsed() < Duration::from_secs(60), "no Job {name} with a pod");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        run.abort();
        let job = jobs.get(&name).await.expect("job");
        let spec = job.spec.expect("spec");
        let rules = spec.pod_failure_policy.expect("podFailurePolicy kept").rules;
        assert_eq!(rules[0].action, "Ignore");
        let args = spec.template.spec.expect("pod").containers[0].args.clone().expect("args");
        assert!(args.windows(2).any(|w| w == ["--checkpoint-interval", "2000ms"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--work-unit", "16777216"]), "{args:?}");
        names.push(name);
    }

    t.create_vm(&vm, std::slice::from_ref(&vol)).await.expect("vm");
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        for n in &names[..2] {
            if jobs.get_opt(n).await.expect("get").is_some() {
                left.push(format!("Job {n}"));
            }
            let p = pods.list(&ListParams::default().labels(&format!("job-name={n}"))).await.expect("pods");
            left.extend(p.items.iter().map(|p| format!("Pod {}", p.metadata.name.clone().unwrap_or_default())));
        }
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "left after the VM exists: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(jobs.get_opt(&names[2]).await.expect("get").is_some(), "another VM's Job was deleted");
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), &ns);
    assert!(dvs.get_opt(&vol.name).await.expect("get").is_some(), "the VM's volume stays");
}

/// Issue 12: a pass redone at another snapshot (vmigrate crashed while the earlier attempt's
/// Job ran on) gets a new Job name; before that Job is created, the earlier attempt's Job still
/// running on the same volume is deleted and waited for, pods included, so its old bytes can
/// never land after the new pass's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redone_pass_stops_the_earlier_attempts_job_first() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    use std::sync::Arc;
    use vmigrate_core::{SnapshotRef, TargetPass};

    let kube = RealKube::shared().await;
    let ns = namespace(kube, "redone").await;
    let client = kube.client().await;
    let _cdi = CdiStandIn::start(client.clone(), &ns, "Succeeded", Duration::from_millis(100));
    let t = Arc::new(
        KubevirtTarget::from_client(client.clone())
            .with_options(KubevirtOptions { transfer: TransferMethod::Job, ..options() }),
    );
    let vm = in_ns(database(), &ns);
    let vol = t.prepare_volume(&vm, &vm.source.disks[0]).await.expect("volume");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pass = |snap: &str| TargetPass {
        name: "full".into(),
        snapshot: Some(SnapshotRef { id: snap.into(), name: String::new(), change_ids: Default::default() }),
        changed_since: None,
    };
    let (first, second) = (pass("snapshot-1"), pass("snapshot-2"));
    let (a, b) = (
        vmigrate_kubevirt::job::pass_job_name(&vol.name, &first),
        vmigrate_kubevirt::job::pass_job_name(&vol.name, &second),
    );
    assert_ne!(a, b);
    let pods_of = |name: String| {
        let pods = pods.clone();
        async move { pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await.expect("pods").items }
    };
    // The first attempt: its Job runs (a pod exists) when vmigrate "crashes".
    let (t2, vm2, vol2) = (t.clone(), vm.clone(), vol.clone());
    let crashed = tokio::spawn(async move { t2.run_pass(&vm2, &vol2, &first).await });
    let start = Instant::now();
    while jobs.get_opt(&a).await.expect("get").is_none() || pods_of(a.clone()).await.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "no Job {a} with a pod");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    crashed.abort();
    // The redo at another snapshot: by the time its Job exists, the first one and its pods are gone.
    let (t2, vm2, vol2) = (t.clone(), vm.clone(), vol.clone());
    let redo = tokio::spawn(async move { t2.run_pass(&vm2, &vol2, &second).await });
    let start = Instant::now();
    while jobs.get_opt(&b).await.expect("get").is_none() {
        assert!(!redo.is_finished(), "run_pass ended: {:?}", redo.await);
        assert!(start.elapsed() < Duration::from_secs(60), "no Job {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(jobs.get_opt(&a).await.expect("get").is_none(), "the earlier attempt's Job {a} still exists");
    assert!(pods_of(a.clone()).await.is_empty(), "the earlier attempt's pods still exist");
    redo.abort();
}
