//! Cold migration end to end: the lab's three VMs from govmomi's vcsim (TLS, thumbprint pinned,
//! credentials from the environment variables the plan names) into a local output folder, once
//! through the library and once through the `vmigrate` binary. Independent checks: qemu-img
//! compares every output disk with the simulator's VMDK, the manifests validate against the
//! official OpenAPI schemas, and vSphere reports the sources powered off afterwards.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use vmigrate::core::executor::{Event, Executor, ExecutorOptions};
use vmigrate::core::model::PowerState;
use vmigrate::core::{Phase, PlanStatus};
use vmigrate::vsphere::vcsim::Vcsim;

/// `database_running` is powered on: the plan must really power it off.
const VMS: [&str; 3] = ["database_running", "winweb01", "winweb02"];

async fn prepare(sim: &Vcsim) {
    let src = connect(sim).await;
    for name in ["winweb01", "winweb02"] {
        unmount_iso(&src, &find_vm(&src, name).await).await;
    }
    assert_eq!(power_state(&src, &find_vm(&src, "database_running").await).await, PowerState::PoweredOn);
}

/// Everything a completed run must leave behind, checked independently of vmigrate.
async fn check_outcome(sim: &Vcsim, out: &Path, status: &PlanStatus) {
    assert_eq!(status.summary(), "3 of 3 VMs migrated");
    let schemas = Schemas::load();
    let docs = manifests(&out.join("manifests.yaml"));
    let mut validated = 0;
    for d in &docs {
        if schemas.check(d).unwrap_or_else(|e| panic!("{} {} invalid:\n{e}", d["kind"], d["metadata"]["name"])) {
            validated += 1;
        }
    }
    // 3 DataVolumes + 3 VirtualMachines + 1 Route.
    assert_eq!(validated, 7, "{docs:#?}");
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    find("Service", "webapp");
    find("Service", "database");
    assert_eq!(find("Route", "route-webapp")["spec"]["to"]["name"], "webapp");

    let src = connect(sim).await;
    for (vm, vs) in VMS.iter().zip(&status.vms) {
        assert_eq!(vs.phase, Phase::Completed, "{vm}: {:?}", vs.error);
        assert_eq!(vs.disks.len(), 1, "{vm}");
        let d = &vs.disks[0];
        assert!(d.done && d.copied_bytes == d.total_bytes, "{vm}: {d:?}");
        let vmobj = find("VirtualMachine", &vs.target_name);
        assert_eq!(vmobj["metadata"]["namespace"], "vmexamples");
        find("DataVolume", &d.volume);
        let img = out.join("disks").join(format!("{}.img", d.volume));
        qemu_img_compare(&vcsim_descriptor(sim, vm), &img).unwrap_or_else(|e| panic!("{vm}: {e}"));
        let v = find_vm(&src, vm).await;
        assert_eq!(v.power_state, PowerState::PoweredOff, "{vm} must be off after a cold migration");
        assert!(v.snapshots.is_empty(), "{vm}: cold migration takes no snapshots");
    }
    // The renamed VM: `database_running` is not a DNS label.
    assert_eq!(status.vms[0].target_name, "database-running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_vcsim_to_dir_through_the_library() {
    let sim = start_vcsim(8 << 20);
    prepare(&sim).await;
    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("out");
    let env = CredEnv::new("cold_lib");
    env.export(&sim);
    let text = vcsim_plan("cold-lib", &sim, &env, &format!("dir://{}", out.display()), &VMS, false, "");
    let plan = vmigrate::core::Plan::from_yaml_str(&text).expect("plan");
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source from the plan");
    let target = vmigrate::targets::open_target(&plan.spec.target).await.expect("target");
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = {
        let events = events.clone();
        Arc::new(move |e: &Event| events.lock().expect("events").push(e.clone()))
    };
    let opts = ExecutorOptions {
        status_path: Some(work.path().join("cold-lib.status.json")),
        events: Some(sink),
        ..Default::default()
    };
    let exec = Executor::new(plan, Arc::from(source), Arc::from(target), opts);
    let status = exec.run().await.expect("plan runs");
    check_outcome(&sim, &out, &status).await;

    // Progress as the MTV console shows it, and the power-off recorded as a phase.
    let events = events.lock().expect("events");
    assert!(events.iter().any(|e| matches!(e, Event::Plan { summary, .. } if summary == "3 of 3 VMs migrated")));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Phase { vm, phase: Phase::PowerOff } if vm == "database_running")));
    let downtime = status.vms[0].downtime_seconds.expect("downtime of the VM that was running");
    assert!(downtime > 0.0 && downtime < 60.0, "{downtime}");
    assert!(status.vms[1].downtime_seconds.is_none(), "winweb01 was already off");
    // The status file on disk says the same.
    let saved = read_status(&work.path().join("cold-lib.status.json")).expect("status file");
    assert_eq!(saved.summary(), "3 of 3 VMs migrated");
    assert!(saved.completed.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_vcsim_to_dir_through_the_cli() {
    let sim = start_vcsim(8 << 20);
    prepare(&sim).await;
    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("out");
    let env = CredEnv::new("cold_cli");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(
        &plan_file,
        vcsim_plan("cold-cli", &sim, &env, &format!("dir://{}", out.display()), &VMS, false, ""),
    )
    .expect("write plan");
    let plan_arg = plan_file.to_str().expect("utf-8 path");
    // The test's own session (prepare) logs out in the background; every CLI command must leave
    // no session behind (vCenter caps sessions per user).
    wait_for(Duration::from_secs(10), "the test's own session to end", || (sim.sessions() == 0).then_some(()));
    let v = run_cli(&["validate", "--plan", plan_arg], |c| env.apply(c, &sim));
    assert_eq!(v.status.code(), Some(0), "validate: {}", String::from_utf8_lossy(&v.stderr));
    assert_eq!(sim.sessions(), 0, "`vmigrate validate` left a vCenter session behind");
    let res = run_cli(&["migrate", "--plan", plan_arg, "--output", "json"], |c| env.apply(c, &sim));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(sim.sessions(), 0, "`vmigrate migrate` left a vCenter session behind");
    assert!(!stderr.contains(&sim.password), "the password leaked into stderr");
    let lines = json_lines(&res.stdout);
    assert!(lines.iter().any(|e| e["event"] == "plan" && e["summary"] == "3 of 3 VMs migrated"), "{lines:#?}");
    let last = lines.last().expect("final status line");
    assert_eq!(last["event"], "status");
    let status: PlanStatus = serde_json::from_value(last["status"].clone()).expect("status JSON");
    check_outcome(&sim, &out, &status).await;

    // `vmigrate status` reads the status file written next to the plan.
    let st = run_cli(&["status", "--plan", plan_arg, "--output", "json"], |_| {});
    assert_eq!(st.status.code(), Some(0));
    let from_file: PlanStatus = serde_json::from_slice(&st.stdout).expect("status JSON");
    assert_eq!(from_file.summary(), "3 of 3 VMs migrated");
    assert!(work.path().join("cold-cli.status.json").exists());
}
