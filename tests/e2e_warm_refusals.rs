//! Warm plans that could only end in silent data loss are refused before anything happens
//! (issue 12): `vmigrate validate` and `vmigrate migrate` exit 3 with a named concern, and the
//! source is left exactly as it was — no snapshot taken, changed block tracking not switched on —
//! while the cluster gets no object.

mod support;

use std::path::Path;

use support::*;
use vmigrate::core::model::PowerState;
use vmigrate::kubevirt::fake::FakeKube;
use vmigrate::vsphere::vcsim::Vcsim;

const VM: &str = "database_running";

fn kubeconfig(dir: &Path, fake: &FakeKube) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{ server: \"{}\" }}\nusers:\n- name: u\n  user: {{ token: e2e-token }}\ncontexts:\n- name: fake\n  context: {{ cluster: fake, user: u, namespace: default }}\ncurrent-context: fake\n",
            fake.url()
        ),
    )
    .expect("kubeconfig");
    path
}

/// The VM as the source reports it now: power, snapshots and CBT untouched.
fn assert_source_untouched(rt: &tokio::runtime::Runtime, sim: &Vcsim) {
    rt.block_on(async {
        let src = connect(sim).await;
        let vm = find_vm(&src, VM).await;
        assert_eq!(vm.power_state, PowerState::PoweredOn);
        assert!(vm.snapshots.is_empty(), "snapshots taken: {:?}", vm.snapshots);
        assert!(!vm.cbt_enabled, "CBT was switched on for a refused plan");
    });
}

fn run(args: &[&str], env: &CredEnv, sim: &Vcsim, kube: Option<&Path>) -> (Option<i32>, String, String) {
    let out = run_cli(args, |c| {
        env.apply(c, sim);
        if let Some(k) = kube {
            c.env("KUBECONFIG", k);
        }
    });
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn warm_into_a_cluster_with_a_transfer_mode_that_cannot_apply_deltas_is_exit_3_and_touches_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let sim = start_vcsim(1 << 20);
    // The lab namespace and storage class: nothing but the warm refusal blocks.
    let fake = rt.block_on(lab_cluster("unused-token", "x"));
    let work = tempfile::tempdir().expect("tmp");
    let kube = kubeconfig(work.path(), &fake);
    let env = CredEnv::new("warm_refused");
    let refused: Vec<_> =
        vmigrate::core::plan::TransferMethod::ALL.into_iter().filter(|m| !m.supports_warm()).collect();
    assert!(refused.contains(&vmigrate::core::plan::TransferMethod::Upload), "upload never carries a delta");
    for mode in refused {
        let plan_file = work.path().join(format!("{mode}.yaml"));
        let opts = format!("    enableCbt: true\n    precopyInterval: 1s\n    transfer: {mode}\n");
        std::fs::write(&plan_file, vcsim_plan(&format!("warm-{mode}"), &sim, &env, "kubevirt://", &[VM], true, &opts))
            .expect("plan");
        let plan = plan_file.to_str().expect("utf-8");

        let (code, stdout, stderr) = run(&["validate", "--plan", plan, "--output", "json"], &env, &sim, None);
        assert_eq!(code, Some(3), "validate {mode}: {stdout}{stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("validation json");
        let concern = v["vms"][0]["concerns"]
            .as_array()
            .expect("concerns")
            .iter()
            .find(|c| c["id"] == "warm.transfer-unsupported")
            .unwrap_or_else(|| panic!("{mode}: no warm.transfer-unsupported in {stdout}"))
            .clone();
        assert_eq!(concern["severity"], "critical");
        let msg = concern["message"].as_str().expect("message");
        assert!(msg.contains(&format!("transfer: {mode}")), "{msg}");
        for ok in vmigrate::core::plan::TransferMethod::warm_capable() {
            assert!(msg.contains(&format!("transfer: {ok}")), "the modes that work are named: {msg}");
        }

        let (code, _, stderr) = run(&["migrate", "--plan", plan], &env, &sim, Some(&kube));
        assert_eq!(code, Some(3), "migrate {mode}: {stderr}");
        assert!(stderr.contains("warm.transfer-unsupported"), "{stderr}");
        assert_source_untouched(&rt, &sim);
    }
    let writes: Vec<_> =
        fake.requests().into_iter().filter(|r| r.method != "GET").map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(writes.is_empty(), "objects created in the cluster for refused plans: {writes:?}");
}

#[test]
fn warm_from_a_source_without_changed_block_tracking_is_exit_3_and_touches_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let sim = start_vcsim(1 << 20);
    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("out");
    let env = CredEnv::new("warm_nocbt");
    // CBT is off on the VM and the plan does not allow turning it on.
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(
        &plan_file,
        vcsim_plan(
            "warm-nocbt",
            &sim,
            &env,
            &format!("dir://{}", out.display()),
            &[VM],
            true,
            "    precopyInterval: 1s\n",
        ),
    )
    .expect("plan");
    let plan = plan_file.to_str().expect("utf-8");
    for args in [vec!["validate", "--plan", plan], vec!["migrate", "--plan", plan]] {
        let (code, stdout, stderr) = run(&args, &env, &sim, None);
        assert_eq!(code, Some(3), "{args:?}: {stdout}{stderr}");
        assert!(format!("{stdout}{stderr}").contains("cbt.disabled"), "{stdout}{stderr}");
    }
    assert_source_untouched(&rt, &sim);
    assert_eq!(std::fs::read_dir(out.join("disks")).map(|d| d.count()).unwrap_or(0), 0);

    // A source that has no snapshots or changed blocks at all (a datastore folder).
    let (ds, _) = big_vmx_datastore(work.path(), "folder-vm", 1 << 20, 1);
    let text = vmx_plan("warm-vmx", &ds, &format!("dir://{}", out.display()), &["folder-vm"])
        .replace("  targetNamespace: vmexamples\n", "  targetNamespace: vmexamples\n  warm: true\n");
    let vmx_file = work.path().join("vmx.yaml");
    std::fs::write(&vmx_file, text).expect("plan");
    let (code, stdout, stderr) = run(&["migrate", "--plan", vmx_file.to_str().expect("utf-8")], &env, &sim, None);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(stderr.contains("warm.unsupported-source"), "{stderr}");
    assert_eq!(std::fs::read_dir(out.join("disks")).map(|d| d.count()).unwrap_or(0), 0);
}
