//! A cold plan into a real Kubernetes API server (etcd, kube-apiserver, kube-controller-manager
//! from tests/peers; KubeVirt, CDI and Route CRDs), through the CDI upload path: the upload
//! token comes from the API server (an APIService proxying to the harness's token API
//! stand-in), the disk is streamed to the in-process upload proxy and compared with the source;
//! then expose, a re-run of the completed plan, and a cancelled run that cleans up after itself
//! without touching the completed one.
//!
//! Stand-ins, because their real programs cannot be built here (CDI's Go module is refused by
//! the module proxy): CDI's DataVolume controller ([`CdiStandIn`] writes the phases, and marks a
//! DataVolume Succeeded once its upload arrived, as cdi-uploadserver's pod would), cdi-apiserver's
//! token API and cdi-uploadproxy/cdi-uploadserver (the fake upload proxy, which checks the
//! token and stores the image).

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use support::*;
use vmigrate::core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate::core::Phase;
use vmigrate::kubevirt::fake::FakeUploadProxy;
use vmigrate::kubevirt::realkube::{CdiStandIn, Crds, RealKube};
use vmigrate::kubevirt::{DataVolume, KubevirtOptions, KubevirtTarget, VirtualMachine};

const TOKEN: &str = "upload-token-realkube";
const NS: &str = "vmexamples";

/// Marks an UploadReady DataVolume of `ns` Succeeded once `proxy` has received an upload after
/// the volume was first seen (what CDI does when the upload pod finished). Each
/// volume is followed by its UID: a volume re-created under the same name waits for an upload of
/// its own, never counts the earlier run's.
fn succeed_after_upload(client: kube::Client, proxy: FakeUploadProxy) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<DataVolume> = Api::namespaced(client, NS);
        // Per UID: the proxy's upload count when the volume was first seen UploadReady.
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        loop {
            if let Ok(list) = api.list(&Default::default()).await {
                let uploads = proxy.uploads().len();
                for d in &list.items {
                    if d.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    let (Some(uid), Some(name)) = (d.metadata.uid.clone(), d.metadata.name.clone()) else { continue };
                    // Counted from the first sight of the volume, in whatever phase: vmigrate
                    // cannot upload before the volume is UploadReady, which comes later.
                    let since = *seen.entry(uid).or_insert(uploads);
                    if d.phase() == "UploadReady" && uploads > since {
                        let _ = api
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": {"phase": "Succeeded", "progress": "100.0%"}})),
                            )
                            .await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn target(client: kube::Client, proxy: &FakeUploadProxy) -> KubevirtTarget {
    KubevirtTarget::from_client(client).with_options(KubevirtOptions {
        upload_proxy_url: Some(proxy.base_url()),
        poll_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(60),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_upload_expose_rerun_and_cancel_against_a_real_api_server() {
    let kube = RealKube::start(Crds::All).await;
    let _tokens = kube.serve_upload_token_api(TOKEN).await;
    let client = kube.client().await;
    let ns = Namespace { metadata: ObjectMeta { name: Some(NS.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let sc = StorageClass {
        metadata: ObjectMeta { name: Some("ocs-storagecluster-ceph-rbd-virtualization".into()), ..Default::default() },
        provisioner: "openshift-storage.rbd.csi.ceph.com".into(),
        ..Default::default()
    };
    Api::<StorageClass>::all(client.clone()).create(&PostParams::default(), &sc).await.expect("storage class");
    let _cdi = CdiStandIn::start(client.clone(), NS, "UploadReady", Duration::from_secs(2));
    let proxy = FakeUploadProxy::start(TOKEN).await;
    let _succeed = succeed_after_upload(client.clone(), proxy.clone());

    let sim = start_vcsim(32 << 20);
    let env = CredEnv::new("realkube_e2e");
    env.export(&sim);
    let work = tempfile::tempdir().expect("tmp");
    let text = vcsim_plan("realkube", &sim, &env, "kubevirt://", &["database_running"], false, "");
    let plan = vmigrate::core::Plan::from_yaml_str(&text).expect("plan");
    let status = work.path().join("realkube.status.json");
    let run = |plan: vmigrate::core::Plan, status: std::path::PathBuf| {
        let client = client.clone();
        let proxy = proxy.clone();
        async move {
            let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
            let opts = ExecutorOptions { status_path: Some(status), ..Default::default() };
            let exec = Executor::new(plan, Arc::from(source), Arc::new(target(client, &proxy)), opts);
            exec.run().await.expect("run")
        }
    };

    // 1. Cold upload: the disk arrives byte-equal; the objects are on the real server.
    let st = run(plan.clone(), status.clone()).await;
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    let uploads = proxy.uploads();
    assert_eq!(uploads.len(), 1);
    let flat = std::fs::read(sim.flat_file("database_running")).expect("flat");
    assert_eq!(hex::encode(Sha256::digest(&uploads[0].image)), hex::encode(Sha256::digest(&flat)));
    let got = work.path().join("database_running.img");
    std::fs::write(&got, &uploads[0].image).expect("write");
    qemu_img_compare(&vcsim_descriptor(&sim, "database_running"), &got).expect("byte-equal");
    let dvs: Api<DataVolume> = Api::namespaced(client.clone(), NS);
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), NS);
    let dv_uid = dvs.get("database-running-disk0").await.expect("dv").metadata.uid;
    let vm_uid = vms.get("database-running").await.expect("vm").metadata.uid;
    assert!(_tokens.requests().iter().any(|r| r["spec"]["pvcName"] == "database-running-disk0"));

    // 2. Expose: Services and the Route exist on the server.
    let t = target(client.clone(), &proxy);
    vmigrate::core::TargetProvider::expose(&t, &plan.metadata.name, NS, &plan.spec.services).await.expect("expose");
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    svcs.get("webapp").await.expect("service webapp");
    svcs.get("database").await.expect("service database");

    // 3. Re-running the completed plan (same status file) leaves the earlier run untouched.
    let st = run(plan.clone(), status.clone()).await;
    assert_eq!(st.vms[0].phase, Phase::Completed);
    assert_eq!(dvs.get("database-running-disk0").await.expect("dv").metadata.uid, dv_uid);
    assert_eq!(vms.get("database-running").await.expect("vm").metadata.uid, vm_uid);
    assert_eq!(proxy.uploads().len(), 1, "nothing copied again");

    // 4. A new run of the same plan (no status file) cancelled mid-copy: it replaces the
    // volume (after the old one is gone), and its cleanup deletes only what it made: the earlier
    // run's VirtualMachine stays.
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let sink = {
        let ctl = ctl.clone();
        Arc::new(move |e: &Event| {
            if let Event::Disk { vm, progress, .. } = e {
                if vm == "database_running" && progress.done < progress.total {
                    if let Some(c) = ctl.get() {
                        c.cancel_vm("database_running");
                    }
                }
            }
        })
    };
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let opts = ExecutorOptions {
        status_path: Some(work.path().join("second.status.json")),
        events: Some(sink),
        progress_interval: Duration::from_millis(2),
        ..Default::default()
    };
    let exec = Executor::new(plan.clone(), Arc::from(source), Arc::new(target(client.clone(), &proxy)), opts);
    ctl.set(exec.controller()).expect("once");
    let st = exec.run().await.expect("run");
    assert_eq!(st.vms[0].phase, Phase::Canceled, "{:?}", st.vms[0].error);
    assert_eq!(vms.get("database-running").await.expect("earlier VM stays").metadata.uid, vm_uid);
    let start = std::time::Instant::now();
    loop {
        match dvs.get_opt("database-running-disk0").await.expect("get") {
            None => break,
            Some(d) => assert_ne!(d.metadata.uid, dv_uid, "the earlier volume was replaced before the copy"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the cancelled run's DataVolume is not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
