//! `vmigrate validate` asks a reachable cluster target (issue 16 item 6): against a real
//! kube-apiserver (tests/peers, started by vmigrate_kubevirt::realkube) a missing namespace and
//! storage class show in `validate`, not first in `migrate`; an unreachable target is said to be
//! unchecked.

use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::Value;
use vmigrate_kubevirt::realkube::RealKube;

fn validate(plan: &Path, kubeconfig: &Path) -> (Option<i32>, Value, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["validate", "--output", "json", "--plan"])
        .arg(plan)
        .arg("--inventory")
        .arg(format!("{root}/examples/inventory.json"))
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run validate");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    (out.status.code(), v, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn concern_ids(v: &Value, vm: usize) -> Vec<String> {
    v["vms"][vm]["concerns"]
        .as_array()
        .expect("concerns")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_runs_the_cluster_preflight_and_says_when_it_cannot() {
    let kube = RealKube::shared().await;
    let dir = tempfile::tempdir().expect("tmp");
    let plan = dir.path().join("plan.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml")).expect("plan");
    std::fs::write(&plan, text.replace("url: kubevirt://\n", "url: kubevirt://realkube\n")).expect("write");

    // Nothing there yet: the namespace and the storage class are missing.
    let (code, v, err) = validate(&plan, &kube.kubeconfig());
    assert_eq!(code, Some(3), "{err}");
    let ids = concern_ids(&v, 0);
    assert!(ids.contains(&"target.namespace-missing".into()), "{ids:?} {err}");
    assert!(ids.contains(&"target.storage-class-missing".into()), "{ids:?}");
    assert!(err.contains("checked (read-only preflight)"), "{err}");

    // Create them: `database` has no concern left (winweb02 stays blocked by its ISO).
    let client = kube.client().await;
    let ns = Namespace {
        metadata: ObjectMeta { name: Some("vmexamples".into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let sc = StorageClass {
        metadata: ObjectMeta { name: Some("ocs-storagecluster-ceph-rbd-virtualization".into()), ..Default::default() },
        provisioner: "openshift-storage.rbd.csi.ceph.com".into(),
        ..Default::default()
    };
    Api::<StorageClass>::all(client).create(&PostParams::default(), &sc).await.expect("storage class");
    let (_, v, err) = validate(&plan, &kube.kubeconfig());
    assert!(concern_ids(&v, 0).is_empty(), "{:?} {err}", concern_ids(&v, 0));

    // A target nobody answers for: validate still reports the plan, and says the target was not checked.
    let kc = dir.path().join("kubeconfig");
    let dead =
        std::fs::read_to_string(kube.kubeconfig()).expect("kubeconfig").replace(kube.server(), "https://127.0.0.1:1");
    std::fs::write(&kc, dead).expect("write");
    let (code, v, err) = validate(&plan, &kc);
    assert_eq!(code, Some(3), "the ISO of winweb02 still blocks: {err}");
    assert!(concern_ids(&v, 0).is_empty());
    assert!(err.contains("NOT checked"), "{err}");
}
