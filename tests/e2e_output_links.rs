//! Issue 14 item 7 (and 14's file modes): links planted in the output and status folders are
//! never written through. A symlink at `manifests.tmp`, `NEXT-STEPS.tmp` or
//! `<plan>.status.json.tmp` pointing at a file of the victim's leaves that file intact; a lock
//! file that is a symlink is refused; outputs are created 0600.

mod support;

use std::os::unix::fs::MetadataExt;

use support::*;

#[test]
fn planted_links_in_output_and_status_folders_are_not_followed() {
    let work = tempfile::tempdir().expect("tmp");
    let (ds, _vmdk) = big_vmx_datastore(work.path(), "linkdb", 64 << 20, 2);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let victim = work.path().join("victim.txt");
    std::fs::write(&victim, b"the victim's file").expect("victim");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("links", &ds, &format!("dir://{}", out.display()), &["linkdb"])).expect("plan");
    for tmp in [out.join("manifests.tmp"), out.join("NEXT-STEPS.tmp"), work.path().join("links.status.json.tmp")] {
        std::os::unix::fs::symlink(&victim, &tmp).expect("plant");
    }
    let plan_arg = plan_file.to_str().expect("utf-8");
    let r = run_cli(&["migrate", "--plan", plan_arg, "--output", "json"], |_| {});
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"the victim's file", "a planted link was written through");
    for f in [out.join("manifests.yaml"), out.join("NEXT-STEPS.txt"), work.path().join("links.status.json")] {
        let m = std::fs::symlink_metadata(&f).expect("output");
        assert!(m.file_type().is_file(), "{}", f.display());
        assert_eq!(m.mode() & 0o077, 0, "{} is readable by others: {:o}", f.display(), m.mode());
    }
    let disks: Vec<_> = std::fs::read_dir(out.join("disks")).expect("disks").flatten().map(|e| e.path()).collect();
    assert!(!disks.is_empty());
    for d in &disks {
        assert_eq!(std::fs::metadata(d).expect("disk").mode() & 0o077, 0, "{} is readable by others", d.display());
    }

    // The lock file as a link: refused, victim intact.
    std::fs::remove_file(work.path().join("links.status.json")).expect("rm status");
    let lock = work.path().join("links.status.lock");
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim, &lock).expect("plant lock");
    let r = run_cli(&["migrate", "--plan", plan_arg, "--output", "json"], |_| {});
    assert_ne!(r.status.code(), Some(0), "a symlinked lock file was used");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"the victim's file");
}

/// Issue 14 item 16: a run holding an output folder (here: its lock, held by this test) keeps a
/// second run with another status file out of it, instead of both writing the same disks.
#[test]
fn a_busy_output_folder_is_refused() {
    let work = tempfile::tempdir().expect("tmp");
    let (ds, _vmdk) = big_vmx_datastore(work.path(), "busydb", 16 << 20, 1);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".vmigrate.lock"))
        .expect("lock file");
    held.try_lock().expect("lock");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("busy", &ds, &format!("dir://{}", out.display()), &["busydb"])).expect("plan");
    let other_status = work.path().join("other.status.json");
    let r = run_cli(
        &["migrate", "--plan", plan_file.to_str().expect("utf-8"), "--status", other_status.to_str().expect("utf-8")],
        |_| {},
    );
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_ne!(r.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("in use by another vmigrate run"), "{stderr}");
    assert_eq!(std::fs::read_dir(out.join("disks")).map(|d| d.count()).unwrap_or(0), 0, "a disk was written");
    drop(held);
    let r = run_cli(
        &["migrate", "--plan", plan_file.to_str().expect("utf-8"), "--status", other_status.to_str().expect("utf-8")],
        |_| {},
    );
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
}

/// Issue 14 item 16, for every front end: the output folder's lock is taken by the executor, so
/// two runs from the Rust API (as C and Python make them) into one folder with different status
/// files cannot both write it: while the first copies, the second is `TargetBusy` and writes
/// nothing; the first still ends byte-equal, and once it is done the folder is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_library_runs_into_one_folder_the_second_is_target_busy() {
    use std::sync::Arc;
    use std::time::Duration;
    use vmigrate::core::executor::{Executor, ExecutorOptions};
    use vmigrate::core::{ErrorCode, Phase};

    let work = tempfile::tempdir().expect("tmp");
    let (ds, vmdk) = big_vmx_datastore(work.path(), "busyweb", 512 << 20, 256);
    let out = work.path().join("out");
    // A pre hook holds the first run (and so the folder's lock) until the test opens the gate:
    // waiting for a phase raced a copy that finished between two polls.
    let gate = work.path().join("gate");
    let hook = format!(
        "  hooks:\n    - name: hold\n      step: pre\n      command: [\"sh\", \"-c\", \"while [ ! -e '{}' ]; do sleep 0.05; done\"]\n      timeout: 60s\n",
        gate.display()
    );
    let text = vmx_plan("busy-lib", &ds, &format!("dir://{}", out.display()), &["busyweb"])
        .replace("  networkMap:\n", &format!("{hook}  networkMap:\n"));
    let plan = vmigrate::core::Plan::from_yaml_str(&text).expect("plan");
    let make = |status: &str| {
        let mut opts = ExecutorOptions { status_path: Some(work.path().join(status)), ..Default::default() };
        opts.copy.connections = 1;
        opts.copy.request_size = 1 << 20;
        let plan = plan.clone();
        async move {
            let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
            let target = vmigrate::targets::open_target(&plan.spec.target).await.expect("target");
            Arc::new(Executor::new(plan, Arc::from(source), Arc::from(target), opts))
        }
    };
    let first = make("first.status.json").await;
    let task = tokio::spawn({
        let e = first.clone();
        async move { e.run().await }
    });
    let sf = work.path().join("first.status.json");
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(30), "the first run in its pre hook", || {
            read_status(&sf).filter(|s| s.vms[0].phase == Phase::PreHook).map(|_| ())
        })
    })
    .await
    .expect("poll");

    let second = make("second.status.json").await;
    let e = second.run().await.expect_err("a second run into a busy folder");
    assert_eq!(e.code(), ErrorCode::TargetBusy, "{}", e.report());
    assert!(e.to_string().contains(".vmigrate.lock"), "{e}");
    assert!(!work.path().join("second.status.json").exists(), "the second run wrote its status");
    assert!(!task.is_finished(), "the first run ended before the second tried");
    std::fs::write(&gate, "").expect("open the gate");

    let st = task.await.expect("join").expect("first run");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    let disk = &st.vms[0].disks[0];
    qemu_img_compare(&vmdk, &out.join("disks").join(format!("{}.img", disk.volume))).expect("byte-equal");
    // Free again once the first run is over.
    drop(first);
    let st = make("second.status.json").await.run().await.expect("the folder is free again");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
}
