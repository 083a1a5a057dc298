//! Cancel mid-copy: the target keeps nothing of the cancelled VM, the source is back as it was
//! (powered on again, no snapshots), the status says Canceled, and the other VMs go on.

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::*;
use vmigrate::core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate::core::model::PowerState;
use vmigrate::core::{Phase, PlanStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_one_vm_mid_copy_in_process() {
    let sim = start_vcsim(32 << 20);
    let src = connect(&sim).await;
    let running = find_vm(&src, "database_running").await;
    assert_eq!(running.power_state, PowerState::PoweredOn);
    unmount_iso(&src, &find_vm(&src, "winweb01").await).await;

    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("out");
    let env = CredEnv::new("cancel_lib");
    env.export(&sim);
    let text = vcsim_plan(
        "cancel-lib",
        &sim,
        &env,
        &format!("dir://{}", out.display()),
        &["database_running", "winweb01"],
        false,
        "",
    );
    let plan = vmigrate::core::Plan::from_yaml_str(&text).expect("plan");
    // Cancel database_running at its first progress report that is not the end of the copy.
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let caught: Arc<OnceLock<u64>> = Arc::default();
    let sink = {
        let (ctl, caught) = (ctl.clone(), caught.clone());
        Arc::new(move |e: &Event| {
            if let Event::Disk { vm, progress, .. } = e {
                if vm == "database_running" && progress.done < progress.total && caught.set(progress.done).is_ok() {
                    ctl.get().expect("controller").cancel_vm("database_running");
                }
            }
        })
    };
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let target = vmigrate::targets::open_target(&plan.spec.target).await.expect("target");
    let opts = ExecutorOptions {
        status_path: Some(work.path().join("cancel.status.json")),
        events: Some(sink),
        progress_interval: Duration::from_millis(2),
        ..Default::default()
    };
    let exec = Executor::new(plan, Arc::from(source), Arc::from(target), opts);
    ctl.set(exec.controller()).expect("once");
    let st = exec.run().await.expect("run");
    assert!(caught.get().is_some(), "never saw database_running mid-copy");

    let (db, web) = (&st.vms[0], &st.vms[1]);
    assert_eq!(db.phase, Phase::Canceled, "{:?}", db.error);
    assert_eq!(web.phase, Phase::Completed, "the other VM goes on: {:?}", web.error);
    assert_eq!(st.summary(), "1 of 2 VMs migrated");
    // Nothing of the cancelled VM at the target: no disk image, no DataVolume, no VirtualMachine.
    let disks: Vec<String> = std::fs::read_dir(out.join("disks"))
        .expect("disks dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(disks.iter().all(|d| !d.starts_with("database-running")), "{disks:?}");
    assert!(disks.iter().any(|d| d.starts_with("winweb01")), "{disks:?}");
    let docs = manifests(&out.join("manifests.yaml"));
    assert!(
        docs.iter().all(|d| !d["metadata"]["name"].as_str().unwrap_or("").starts_with("database-running")),
        "{docs:#?}"
    );
    assert!(docs.iter().any(|d| d["kind"] == "VirtualMachine" && d["metadata"]["name"] == "winweb01"));
    // The source as it was: powered on again, no snapshots.
    let after = find_vm(&src, "database_running").await;
    assert_eq!(after.power_state, PowerState::PoweredOn, "powered back on after cancel");
    assert!(after.snapshots.is_empty());
    assert!(!db.source_changes.powered_off && db.source_changes.snapshots.is_empty());
    let saved = read_status(&work.path().join("cancel.status.json")).expect("status file");
    assert_eq!(saved.vms[0].phase, Phase::Canceled);
}

#[test]
fn vmigrate_cancel_stops_a_running_cli_with_exit_5() {
    stop_a_running_cli(Stop::CancelCommand);
}

/// SIGTERM (systemd, a container runtime) is a cancel too: cleaned up, exit 5, not a kill that
/// leaves the source's snapshots and half-made target objects behind.
#[test]
fn sigterm_cancels_a_running_cli_and_cleans_up() {
    stop_a_running_cli(Stop::Sigterm);
}

/// How the running `vmigrate migrate` is asked to stop.
enum Stop {
    /// `vmigrate cancel --plan P` from another process.
    CancelCommand,
    /// `kill -TERM PID`.
    Sigterm,
}

fn stop_a_running_cli(how: Stop) {
    let work = tempfile::tempdir().expect("tmp");
    // 2 GiB of data: the copy must outlast the CLI's start-up plus the migrate's control-file
    // poll (300 ms). 512 MiB was enough until durable file copies started writing behind, then
    // the copy sometimes finished first (a fresh-clone CI run saw exit 0).
    let (ds, _) = big_vmx_datastore(work.path(), "bigapp", 4 << 30, 2048);
    let out = work.path().join("out");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("cancel-cli", &ds, &format!("dir://{}", out.display()), &["bigapp"]))
        .expect("plan");
    let plan_arg = plan_file.to_str().expect("utf-8");
    let status_file = work.path().join("cancel-cli.status.json");
    let mut child = Command::new(vmigrate_bin())
        .args(["migrate", "--plan", plan_arg, "--output", "json", "--connections", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmigrate migrate");
    wait_for(Duration::from_secs(30), "the copy to start", || {
        if let Ok(Some(code)) = child.try_wait() {
            panic!("vmigrate migrate ended ({code}) before it could be cancelled");
        }
        read_status(&status_file).filter(|s| s.vms[0].phase == Phase::CopyDisks)
    });
    match how {
        Stop::CancelCommand => {
            let req = run_cli(&["cancel", "--plan", plan_arg], |_| {});
            assert_eq!(req.status.code(), Some(0), "{}", String::from_utf8_lossy(&req.stderr));
        }
        Stop::Sigterm => {
            let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
            assert!(kill.success());
        }
    }
    let res = child.wait_with_output().expect("wait");
    assert_eq!(res.status.code(), Some(5), "stderr: {}", String::from_utf8_lossy(&res.stderr));
    let lines = json_lines(&res.stdout);
    let st: PlanStatus = serde_json::from_value(lines.last().expect("status")["status"].clone()).expect("status");
    assert_eq!(st.vms[0].phase, Phase::Canceled);
    assert!(lines.iter().any(|e| e["event"] == "vmDone" && e["phase"] == "Canceled"), "{lines:?}");
    assert!(!out.join("disks/bigapp-disk0.img").exists(), "the cancelled VM's disk is left behind");
    let docs = manifests(&out.join("manifests.yaml"));
    assert!(docs.iter().all(|d| d["metadata"]["name"] != "bigapp" && d["metadata"]["name"] != "bigapp-disk0"));
    // Nothing runs any more: a cancel says so instead of claiming a request was made.
    let again = run_cli(&["cancel", "--plan", plan_arg], |_| {});
    assert_eq!(again.status.code(), Some(1), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to cancel"));
}
