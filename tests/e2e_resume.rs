//! Crash and resume: a migration killed mid-copy resumes from the checkpoint in its status file
//! instead of starting over, and still ends byte-equal (qemu-img reads the source VMDK).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use vmigrate::core::executor::{Executor, ExecutorOptions};
use vmigrate::core::{Phase, Plan, PlanStatus};

const MIB: u64 = 1 << 20;

/// The first disk's checkpoint shows completed work units, and the disk is not done.
fn mid_copy(st: &PlanStatus) -> bool {
    st.vms[0].disks.first().is_some_and(|d| !d.done && d.checkpoint.as_ref().is_some_and(|c| !c.copy.done.is_empty()))
}

/// A library run of a one-VM `vmx://` plan into `dir://<work>/out` that a test kills mid-copy
/// and runs again: the setup every executor resume test shares, written once so that each
/// kills and resumes the same way.
struct Resumable {
    plan: Plan,
    out: PathBuf,
    status_file: PathBuf,
}

impl Resumable {
    /// Plan `name` moving `vm` of datastore `ds`, with its status file in `work`.
    fn new(work: &Path, name: &str, ds: &Path, vm: &str) -> Resumable {
        let out = work.join("out");
        let plan = Plan::from_yaml_str(&vmx_plan(name, ds, &format!("dir://{}", out.display()), &[vm])).expect("plan");
        Resumable { plan, out, status_file: work.join(format!("{name}.status.json")) }
    }

    /// A fresh executor (a new process, as far as the plan knows): one connection, 4 MiB work
    /// units and a checkpoint every 50 ms, so that checkpoints land mid-copy.
    fn executor(&self) -> Arc<Executor> {
        let mut opts = ExecutorOptions { status_path: Some(self.status_file.clone()), ..Default::default() };
        opts.copy.connections = 1;
        opts.copy.work_unit = 4 * MIB;
        opts.copy.request_size = MIB as usize;
        opts.copy.checkpoint_interval = Duration::from_millis(50);
        let source = vmigrate::vsphere::local::LocalSource::from_url(&self.plan.spec.source.url).expect("source");
        let target = vmigrate::kubevirt::DirTarget::open(&self.out).expect("target");
        Arc::new(Executor::new(self.plan.clone(), Arc::new(source), Arc::new(target), opts))
    }

    /// Run an executor until its status file shows a checkpoint mid-copy, then "die": the run
    /// future is dropped, nothing is cleaned up. Returns the status caught.
    async fn kill_mid_copy(&self) -> PlanStatus {
        let first = self.executor();
        let task = tokio::spawn({
            let e = first.clone();
            async move { e.run().await }
        });
        let sf = self.status_file.clone();
        let caught = tokio::task::spawn_blocking(move || {
            wait_for(Duration::from_secs(30), "a checkpoint mid-copy", || {
                let st = read_status(&sf)?;
                assert!(
                    !st.vms[0].disks.first().is_some_and(|d| d.done),
                    "the copy ended before a mid-copy checkpoint: make the disk bigger"
                );
                mid_copy(&st).then_some(st)
            })
        })
        .await
        .expect("poll");
        task.abort();
        assert!(task.await.expect_err("aborted").is_cancelled());
        caught
    }

    /// The output image of `disk`.
    fn image(&self, disk: &vmigrate::core::status::DiskStatus) -> PathBuf {
        self.out.join("disks").join(format!("{}.img", disk.volume))
    }
}

#[test]
fn cli_killed_with_sigkill_resumes_from_its_checkpoint() {
    let work = tempfile::tempdir().expect("tmp");
    // Enough data that the copy outlasts the CLI's start, a checkpoint and the SIGKILL with a
    // margin, now that file copies write behind (faster; the cancel test raced at 512 MiB).
    let data_mib = 1024;
    let (ds, vmdk) = big_vmx_datastore(work.path(), "bigdb", 2 << 30, data_mib);
    let out = work.path().join("out");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("resume-cli", &ds, &format!("dir://{}", out.display()), &["bigdb"]))
        .expect("plan");
    let plan_arg = plan_file.to_str().expect("utf-8");
    let status_file = work.path().join("resume-cli.status.json");

    let mut child = Command::new(vmigrate_bin())
        .args([
            "migrate",
            "--plan",
            plan_arg,
            "--output",
            "json",
            "--connections",
            "1",
            "--checkpoint-interval",
            "100ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vmigrate migrate");
    let caught = wait_for(Duration::from_secs(40), "a checkpoint mid-copy", || {
        if let Ok(Some(code)) = child.try_wait() {
            panic!("the copy ended ({code}) before a mid-copy checkpoint: make the disk bigger");
        }
        read_status(&status_file).filter(mid_copy)
    });
    // A real SIGKILL: no cleanup, no final status write.
    child.kill().expect("SIGKILL");
    let killed = child.wait().expect("reap");
    assert!(!killed.success());
    assert_eq!(caught.vms[0].phase, Phase::CopyDisks);

    let res = Command::new(vmigrate_bin())
        .args(["migrate", "--plan", plan_arg, "--output", "json", "--resume"])
        .output()
        .expect("run again");
    assert_eq!(res.status.code(), Some(0), "{}", String::from_utf8_lossy(&res.stderr));
    let lines = json_lines(&res.stdout);
    let st: PlanStatus = serde_json::from_value(lines.last().expect("status")["status"].clone()).expect("status");
    let disk = &st.vms[0].disks[0];
    assert_eq!(st.vms[0].phase, Phase::Completed);
    assert!(
        disk.transferred_bytes < data_mib * MIB,
        "the second run wrote {} bytes of {} MiB of data: it started over",
        disk.transferred_bytes,
        data_mib
    );
    let resumed = lines
        .iter()
        .filter(|e| e["event"] == "disk")
        .filter_map(|e| e["progress"]["resumed"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(resumed > 0, "no resumed bytes in the progress events");
    qemu_img_compare(&vmdk, &out.join("disks").join(format!("{}.img", disk.volume))).expect("byte-equal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_dropped_mid_copy_resumes_from_its_checkpoint() {
    let work = tempfile::tempdir().expect("tmp");
    // Big enough that the copy outlasts several status saves (they are throttled to 200 ms).
    let data_mib = 384;
    let (ds, vmdk) = big_vmx_datastore(work.path(), "bigweb", 1024 * MIB, data_mib);
    let run = Resumable::new(work.path(), "resume-lib", &ds, "bigweb");
    // The process "dies": the run future is dropped, nothing is cleaned up.
    let caught = run.kill_mid_copy().await;
    assert!(!caught.vms[0].disks[0].done);

    let st = run.executor().run().await.expect("resumed run");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    let disk = &st.vms[0].disks[0];
    assert!(
        disk.transferred_bytes < data_mib * MIB,
        "the second run wrote {} bytes of {data_mib} MiB of data: it started over",
        disk.transferred_bytes
    );
    qemu_img_compare(&vmdk, &run.image(disk)).expect("byte-equal");
}

/// Issue 14 item 6: a migration killed mid-copy whose source disk was replaced before the resume
/// (another disk of the same size, as a restored backup or a VM run and stopped again leaves
/// it) copies the disk again from the start: the target equals the new source, never the old
/// checkpointed units with the new rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_the_source_changed_starts_the_disk_over() {
    let work = tempfile::tempdir().expect("tmp");
    let data_mib = 384;
    let (ds, vmdk) = big_vmx_datastore(work.path(), "bigweb", 1024 * MIB, data_mib);
    // The same VM, another disk state: same size and name, other data in other places.
    let (_, other) = big_vmx_datastore(&work.path().join("later"), "bigweb", 1024 * MIB, data_mib / 2);
    let run = Resumable::new(work.path(), "resume-changed", &ds, "bigweb");
    let caught = run.kill_mid_copy().await;
    let cp = caught.vms[0].disks[0].checkpoint.as_ref().expect("checkpoint");
    assert!(!cp.source.as_str().is_empty(), "the checkpoint records its source: {cp:?}");

    // The source disk is replaced between the runs.
    std::fs::rename(&other, &vmdk).expect("replace the source disk");
    let st = run.executor().run().await.expect("resumed run");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    let disk = &st.vms[0].disks[0];
    qemu_img_compare(&vmdk, &run.image(disk)).expect("the target equals the new source, not a mix of two");
    assert!(disk.checkpoint.is_none() && disk.copied_from.is_some(), "{disk:?}");
}

/// A status file whose checkpoint does not decode is a typed `StatusFile` error naming the file,
/// never a silent restart of the disk.
#[test]
fn a_checkpoint_that_does_not_decode_is_a_status_file_error() {
    let work = tempfile::tempdir().expect("tmp");
    let path = work.path().join("p.status.json");
    let text = serde_json::json!({
        "plan": "p", "vms": [{
            "name": "a", "targetName": "a", "phase": "CopyDisks",
            "disks": [{"key": 2000, "totalBytes": 1, "copiedBytes": 0, "checkpoint": {"version": "one"}}]
        }]
    });
    std::fs::write(&path, text.to_string()).expect("write");
    let e = PlanStatus::load(&path).expect_err("bad checkpoint");
    assert_eq!(e.code(), vmigrate::core::ErrorCode::StatusFile, "{e}");
    assert!(e.to_string().contains("p.status.json"), "{e}");
}
