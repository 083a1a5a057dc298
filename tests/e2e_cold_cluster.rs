//! Cold migration into a KubeVirt cluster through the CDI upload path, against the in-process
//! fake Kubernetes API and upload proxy (feature `fake-api`): disks arrive byte-equal at the
//! proxy, every object is a server-side apply by `vmigrate` that validates against the official
//! schemas; and a cluster that refuses the VirtualMachine fails the VM with exit code 4 and
//! nothing half-done left behind.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;
use vmigrate::core::executor::{Executor, ExecutorOptions};
use vmigrate::core::model::PowerState;
use vmigrate::core::{Phase, PlanStatus};
use vmigrate::kubevirt::fake::{FakeKube, FakeUploadProxy};
use vmigrate::kubevirt::{KubevirtOptions, KubevirtTarget};

const DVS: &str = "/apis/cdi.kubevirt.io/v1beta1/namespaces/vmexamples/datavolumes";
const VMS_API: &str = "/apis/kubevirt.io/v1/namespaces/vmexamples/virtualmachines";

/// A cluster with the lab's namespace and storage class, CDI pointing at `proxy`, and
/// DataVolumes that go UploadReady at once and Succeeded once `disks` uploads arrived (what
/// CDI's upload server does when a stream completes).
async fn cluster(proxy: &FakeUploadProxy, volumes: &[&str]) -> FakeKube {
    let fake = lab_cluster("upload-token-1", "openshift-storage.rbd.csi.ceph.com").await;
    fake.fixed(
        "/apis/cdi.kubevirt.io/v1beta1/cdiconfigs/config",
        json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "CDIConfig", "metadata": {"name": "config"}, "status": {"uploadProxyURL": proxy.base_url()}}),
    );
    for v in volumes {
        fake.play_statuses(&format!("{DVS}/{v}"), vec![json!({"phase": "UploadReady"})]);
    }
    let (f, p, vols) = (fake.clone(), proxy.clone(), volumes.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    tokio::spawn(async move {
        loop {
            if p.uploads().len() >= vols.len() {
                for v in &vols {
                    f.play_statuses(&format!("{DVS}/{v}"), vec![json!({"phase": "Succeeded", "progress": "100.0%"})]);
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    fake
}

fn applied<'a>(reqs: &'a [vmigrate::kubevirt::fake::Recorded], path: &str) -> &'a Value {
    &reqs.iter().find(|r| r.method == "PATCH" && r.path == path).unwrap_or_else(|| panic!("no apply of {path}")).body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_vcsim_to_cluster_through_cdi_upload() {
    let sim = start_vcsim(4 << 20);
    let src = connect(&sim).await;
    for n in ["winweb01", "winweb02"] {
        unmount_iso(&src, &find_vm(&src, n).await).await;
    }
    let vms = ["database_running", "winweb01", "winweb02"];
    let proxy = FakeUploadProxy::start("upload-token-1").await;
    let fake = cluster(&proxy, &["database-running-disk0", "winweb01-disk0", "winweb02-disk0"]).await;
    let env = CredEnv::new("cluster_lib");
    env.export(&sim);
    let plan =
        vmigrate::core::Plan::from_yaml_str(&vcsim_plan("cluster-lib", &sim, &env, "kubevirt://", &vms, false, ""))
            .expect("plan");
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let target = KubevirtTarget::from_client(fake.client()).with_options(KubevirtOptions {
        upload_proxy_url: Some(proxy.base_url()),
        poll_interval: Duration::from_millis(10),
        timeout: Duration::from_secs(30),
        ..Default::default()
    });
    let exec = Executor::new(plan, Arc::from(source), Arc::new(target), ExecutorOptions::default());
    let st = exec.run().await.expect("run");
    for v in &st.vms {
        assert_eq!(v.phase, Phase::Completed, "{}: {:?}", v.name, v.error);
    }
    assert_eq!(st.summary(), "3 of 3 VMs migrated");

    // Every disk arrived byte-equal at the upload proxy: match by digest, then let qemu-img
    // compare the received image with the simulator's VMDK.
    let uploads = proxy.uploads();
    assert_eq!(uploads.len(), 3);
    let tmp = tempfile::tempdir().expect("tmp");
    for vm in vms {
        let want = hex::encode(Sha256::digest(std::fs::read(sim.flat_file(vm)).expect("flat")));
        let up = uploads
            .iter()
            .find(|u| hex::encode(Sha256::digest(&u.image)) == want)
            .unwrap_or_else(|| panic!("no upload carries {vm}'s disk"));
        assert!(up.zstd && up.wire_bytes < up.image.len(), "{vm}: uploads are zstd-compressed");
        let got = tmp.path().join(format!("{vm}.img"));
        std::fs::write(&got, &up.image).expect("write");
        qemu_img_compare(&vcsim_descriptor(&sim, vm), &got).expect("byte-equal");
    }

    // Server-side apply of every object, each valid against its schema.
    fake.assert_applies_are_ssa();
    let reqs = fake.requests();
    let schemas = Schemas::load();
    for (t, _) in [("database-running", 0), ("winweb01", 1), ("winweb02", 2)] {
        let dv = applied(&reqs, &format!("{DVS}/{t}-disk0"));
        assert_eq!(dv["spec"]["source"]["upload"], json!({}));
        assert!(schemas.check(dv).expect("DataVolume validates"));
        let vm = applied(&reqs, &format!("{VMS_API}/{t}"));
        assert!(schemas.check(vm).expect("VirtualMachine validates"));
    }
    applied(&reqs, "/api/v1/namespaces/vmexamples/services/webapp");
    applied(&reqs, "/api/v1/namespaces/vmexamples/services/database");
    let route = applied(&reqs, "/apis/route.openshift.io/v1/namespaces/vmexamples/routes/route-webapp");
    assert!(schemas.check(route).expect("Route validates"));
    assert!(reqs.iter().filter(|r| r.path.ends_with("/uploadtokenrequests")).count() >= 3);

    for vm in vms {
        assert_eq!(find_vm(&src, vm).await.power_state, PowerState::PoweredOff, "{vm}");
    }
}

#[test]
fn cluster_refusing_the_vm_fails_it_with_exit_4_and_cleans_up() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let sim = start_vcsim(1 << 20);
    let proxy = rt.block_on(FakeUploadProxy::start("upload-token-1"));
    let fake = rt.block_on(cluster(&proxy, &["database-disk0"]));
    fake.fail(axum::http::Method::PATCH, "/virtualmachines/", 403, "Forbidden", 100);
    let work = tempfile::tempdir().expect("tmp");
    let kubeconfig = work.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{ server: \"{}\" }}\nusers:\n- name: u\n  user: {{ token: e2e-token }}\ncontexts:\n- name: fake\n  context: {{ cluster: fake, user: u, namespace: default }}\ncurrent-context: fake\n",
            fake.url()
        ),
    )
    .expect("kubeconfig");
    let env = CredEnv::new("cluster_403");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vcsim_plan("cluster-403", &sim, &env, "kubevirt://", &["database"], false, ""))
        .expect("plan");
    let res = run_cli(&["migrate", "--plan", plan_file.to_str().expect("utf-8"), "--output", "json"], |c| {
        env.apply(c, &sim);
        c.env("KUBECONFIG", &kubeconfig);
    });
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(4), "stderr: {stderr}");
    let lines = json_lines(&res.stdout);
    let st: PlanStatus = serde_json::from_value(lines.last().expect("status")["status"].clone()).expect("status");
    let vm = &st.vms[0];
    assert_eq!(vm.phase, Phase::Failed);
    let err = vm.error.as_ref().expect("typed cause");
    assert!(
        err.message.contains("Forbidden") || err.message.contains("403") || err.message.contains("forbidden"),
        "{err:?}"
    );
    assert!(vm.history.iter().any(|h| h.phase == Phase::CreateVm && h.completed.is_none()), "{:?}", vm.history);
    // The disk had been uploaded; cleanup removed what was created, by label.
    assert_eq!(proxy.uploads().len(), 1);
    let deletes: Vec<_> = fake.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert!(deletes.iter().any(|r| r.path == DVS && r.query.contains("labelSelector=")), "{deletes:?}");
    assert!(deletes.iter().any(|r| r.path == VMS_API), "{deletes:?}");
    assert!(fake.get(&format!("{DVS}/database-disk0")).is_none(), "the DataVolume is left behind");
    assert!(fake.get(&format!("{VMS_API}/database")).is_none());
}
