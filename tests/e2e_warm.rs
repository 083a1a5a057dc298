//! Warm migration end to end against vcsim with changed block tracking: new data is written
//! into the source disk's flat file between precopies, the plan cuts over on demand, and the
//! target must equal the final source bytes while every delta pass read only the 64 KiB blocks
//! that changed (vcsim's QueryChangedDiskAreas diffs the flat files frozen at each snapshot).

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use support::warm::{
    between_passes, run_plan, scribble, touched, warm_dir_plan, WarmDirPlan, CBT_BLOCK as BLOCK, WARM_OPTIONS,
};
use support::*;
use vmigrate::core::executor::{Controller, Event, ExecutorOptions};
use vmigrate::core::model::PowerState;
use vmigrate::core::Phase;
use vmigrate::core::SourceProvider;

const DISK: u64 = 8 << 20;

/// Changes per pass: after the full copy, after precopy 1, after precopy 2 (then cut over).
fn change_sets() -> [Vec<(u64, u64)>; 3] {
    [
        // A few bytes, one whole block, and a write straddling two blocks.
        vec![(100 << 10, 10), (2 * BLOCK * 16 + BLOCK, BLOCK), ((5 << 20) - 100, 200)],
        // Data where the source had a hole (the second half of every MiB is zero).
        vec![(576 << 10, 4096), (7 << 20, 3 * BLOCK)],
        // The last writes before the cutover, including the disk's last byte.
        vec![(3 << 20, 1), (DISK - 1, 1)],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_precopies_copy_only_changed_blocks_and_cutover_matches_final_source() {
    let sim = start_vcsim(DISK);
    let vm_name = "database_running";
    let src = connect(&sim).await;
    let vm = find_vm(&src, vm_name).await;
    assert!(!vm.cbt_enabled, "the plan must turn CBT on itself");
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    let flat = sim.flat_file(vm_name);

    let WarmDirPlan { work, out, plan } = warm_dir_plan(&sim, "warm-lib", vm_name);

    // The sink writes the next change set the moment a pass has read everything, i.e. before
    // the next snapshot is taken; after the third set it asks for the cutover.
    let sets = change_sets();
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let bytes_read: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let phases: Arc<Mutex<Vec<Phase>>> = Arc::default();
    let sink = {
        let (bytes_read, phases, flat, sets) = (bytes_read.clone(), phases.clone(), flat.clone(), sets.clone());
        let write =
            between_passes(&["full", "precopy-1", "precopy-2"], ctl.clone(), move |n| scribble(&flat, &sets[n], 0xee));
        Arc::new(move |e: &Event| match e {
            Event::Disk { pass, progress, .. } => {
                {
                    let mut br = bytes_read.lock().expect("lock");
                    let slot = br.entry(pass.clone()).or_default();
                    *slot = (*slot).max(progress.bytes_read);
                }
                write(e);
            }
            Event::Phase { phase, .. } => phases.lock().expect("lock").push(*phase),
            _ => {}
        })
    };
    let target = vmigrate::kubevirt::DirTarget::open(&out).expect("output folder");
    let opts = ExecutorOptions {
        status_path: Some(work.path().join("warm.status.json")),
        events: Some(sink),
        progress_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let status = run_plan(plan, target, opts, Some(&ctl), Duration::from_secs(50)).await;

    let vs = &status.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
    assert_eq!(vs.precopies, 2, "two precopies, then the cutover");
    let phases = phases.lock().expect("lock").clone();
    for p in [Phase::EnableCbt, Phase::CreateInitialSnapshot, Phase::CopyDisks, Phase::Precopy, Phase::Cutover] {
        assert!(phases.contains(&p), "{p:?} missing from {phases:?}");
    }

    // The target equals the FINAL source bytes (the flat extent: vcsim's snapshot removal
    // deletes the base descriptor, see the report).
    let img = out.join("disks").join(format!("{}.img", vs.disks[0].volume));
    qemu_img_compare_raw(&flat, &img).expect("target equals final source");

    // Deltas copied only the changed blocks.
    let br = bytes_read.lock().expect("lock").clone();
    for (pass, set) in ["precopy-1", "precopy-2", "cutover"].iter().zip(&sets) {
        let (bound, changed) = touched(set.iter().copied());
        let read = *br.get(*pass).unwrap_or_else(|| panic!("no progress for {pass}: {br:?}"));
        assert!((changed..=bound).contains(&read), "{pass}: read {read} bytes, changed {changed}, blocks {bound}");
    }
    assert!(br["full"] > br["precopy-1"] * 4, "the full copy reads far more than a delta: {br:?}");

    // The source: snapshots all removed, powered off at cutover; downtime measured.
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(after.snapshots.is_empty(), "snapshots left: {:?}", after.snapshots);
    assert_eq!(after.power_state, PowerState::PoweredOff);
    assert!(vs.source_changes.snapshots.is_empty());
    let downtime = vs.downtime_seconds.expect("downtime reported");
    assert!(downtime > 0.0 && downtime < 30.0, "{downtime}");
}

#[test]
fn warm_cli_cutover_now_from_a_second_process() {
    let sim = start_vcsim(DISK);
    let vm_name = "winweb02_running";
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let src = connect(&sim).await;
        unmount_iso(&src, &find_vm(&src, vm_name).await).await;
    });
    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("out");
    let env = CredEnv::new("warm_cli");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(
        &plan_file,
        vcsim_plan("warm-cli", &sim, &env, &format!("dir://{}", out.display()), &[vm_name], true, WARM_OPTIONS),
    )
    .expect("plan");
    let plan_arg = plan_file.to_str().expect("utf-8");
    let mut cmd = Command::new(vmigrate_bin());
    cmd.args(["migrate", "--plan", plan_arg, "--output", "json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    env.apply(&mut cmd, &sim);
    let child = cmd.spawn().expect("start vmigrate migrate");
    let status_file = work.path().join("warm-cli.status.json");
    // Wait for a precopy, change the source, then ask the running process to cut over.
    wait_for(Duration::from_secs(30), "first precopy", || {
        read_status(&status_file).filter(|s| s.vms[0].precopies >= 1).map(|_| ())
    });
    scribble(&sim.flat_file(vm_name), &[(1 << 20, 2 * BLOCK), (6 << 20, 7)], 0xee);
    let req = run_cli(&["migrate", "--plan", plan_arg, "--cutover", "now"], |_| {});
    assert_eq!(req.status.code(), Some(0), "{}", String::from_utf8_lossy(&req.stderr));
    assert!(String::from_utf8_lossy(&req.stderr).contains("cutover requested"));
    let res = child.wait_with_output().expect("vmigrate migrate ends");
    assert_eq!(res.status.code(), Some(0), "{}", String::from_utf8_lossy(&res.stderr));
    let lines = json_lines(&res.stdout);
    let st: vmigrate::core::PlanStatus =
        serde_json::from_value(lines.last().expect("status")["status"].clone()).expect("status");
    let vs = &st.vms[0];
    assert_eq!(vs.phase, Phase::Completed);
    // Downtime (source off -> target VM created) is in the final summary, the status file and
    // `vmigrate status`'s table.
    let downtime = vs.downtime_seconds.expect("downtime in the final summary");
    let saved = read_status(&status_file).expect("status file");
    assert_eq!(saved.vms[0].downtime_seconds, Some(downtime), "the status file has the same downtime");
    let table = run_cli(&["status", "--plan", plan_arg], |_| {});
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let row = table.lines().find(|l| l.starts_with(vm_name)).unwrap_or_else(|| panic!("no row: {table}"));
    assert!(table.contains("DOWNTIME") && row.contains(&format!("{downtime:.1}s")), "{table}");
    let img = out.join("disks").join(format!("{}.img", vs.disks[0].volume));
    qemu_img_compare_raw(&sim.flat_file(vm_name), &img).expect("target equals final source");
    // The change was read by the delta pass(es) after it (the next precopy or the cutover),
    // block-granular: 3 touched blocks, each at most in two passes if a snapshot split a write.
    let mut per_pass = std::collections::BTreeMap::<String, u64>::new();
    for e in lines.iter().filter(|e| e["event"] == "disk" && e["pass"] != "full") {
        let v = per_pass.entry(e["pass"].as_str().unwrap_or("").to_string()).or_default();
        *v = (*v).max(
            e["progress"]["bytesRead"].as_u64().unwrap_or_else(|| panic!("disk event without progress.bytesRead: {e}")),
        );
    }
    let delta_read: u64 = per_pass.values().sum();
    assert!(per_pass.contains_key("precopy-1"), "{per_pass:?}");
    assert!((2 * BLOCK + 7..=6 * BLOCK).contains(&delta_read), "delta passes read {per_pass:?}");
    rt.block_on(async {
        let src = connect(&sim).await;
        let v = find_vm(&src, vm_name).await;
        assert!(v.snapshots.is_empty());
        assert_eq!(v.power_state, PowerState::PoweredOff);
    });
}
