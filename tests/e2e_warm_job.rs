//! Warm (and cold) migration into a KubeVirt cluster with `transfer: job`, end to end: the fake
//! Kubernetes API stands in for the cluster, and a test "kubelet" runs every transfer Job the
//! executor creates as the **real `vmigrate transfer` worker process** against vcsim, with the
//! Job's own arguments and the credentials from the Secret it references, writing into a
//! file-backed "PVC" (`/data/disk.img` of a Filesystem volume). The worker's result file becomes
//! the pod's termination message, which is all the executor may trust.
//!
//! Between passes the test writes to the source disk — new data, overwrites, zeroed ranges, data
//! where the disk had never been written (past the old allocation) and the last byte. After the
//! cutover the PVC's bytes must equal the source disk at the final snapshot (`qemu-img compare`),
//! and each delta pass may move no more than the 64 KiB blocks the writes touched.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use vmigrate::core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate::core::model::PowerState;
use vmigrate::core::{PassReport, Phase, SourceProvider};
use vmigrate::kubevirt::fake::FakeKube;
use vmigrate::kubevirt::{KubevirtOptions, KubevirtTarget};

const BLOCK: u64 = 64 << 10;
const DISK: u64 = 8 << 20;
const NS: &str = "vmexamples";
const JOBS: &str = "/apis/batch/v1/namespaces/vmexamples/jobs/";

/// Standard base64 (what Kubernetes stores Secret data as), for the test kubelet.
fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= u32::from(val(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A cluster with the lab's namespace and storage class, whose blank DataVolumes succeed.
async fn cluster(volumes: &[&str]) -> FakeKube {
    let fake = FakeKube::start("unused").await;
    fake.insert(
        &format!("/api/v1/namespaces/{NS}"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    );
    fake.insert(
        "/apis/storage.k8s.io/v1/storageclasses/ocs-storagecluster-ceph-rbd-virtualization",
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "ocs-storagecluster-ceph-rbd-virtualization"}, "provisioner": "x"}),
    );
    for v in volumes {
        fake.play_statuses(
            &format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/{v}"),
            vec![json!({"phase": "Succeeded"})],
        );
    }
    fake
}

/// What the test kubelet saw of one Job.
#[derive(Debug, Clone)]
struct RanJob {
    name: String,
    args: Vec<String>,
    report: Option<PassReport>,
}

/// Run every new transfer Job as the real worker process, then publish its pod (with the result
/// file as termination message) and the Job's Complete/Failed condition.
/// Jobs whose name ends with `hold` are never run (a pass that is still going); before a Job
/// whose name ends with `vanish.0` runs, its snapshot is removed at the source behind vmigrate's
/// back.
fn kubelet(
    fake: FakeKube,
    pvcs: PathBuf,
    ran: Arc<Mutex<Vec<RanJob>>>,
    hold: Option<&'static str>,
    vanish: Option<(&'static str, Arc<vmigrate::vsphere::VsphereSource>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        loop {
            let paths: BTreeSet<String> = fake
                .requests()
                .into_iter()
                .filter(|r| r.method == "PATCH" && r.path.starts_with(JOBS))
                .map(|r| r.path)
                .collect();
            for path in paths.difference(&seen.clone()) {
                seen.insert(path.clone());
                if hold.is_some_and(|h| path.contains(h)) {
                    continue;
                }
                let job = fake.get(path).expect("applied job is stored");
                if let Some((_, src)) = vanish.as_ref().filter(|v| path.contains(v.0)) {
                    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].as_array().expect("args");
                    let at = args.iter().position(|a| a == "--snapshot").expect("a snapshot pass");
                    let id = args[at + 1].as_str().expect("id");
                    let snap = vmigrate::vsphere::soap::MoRef::new("VirtualMachineSnapshot", id.to_string());
                    let task = src.client().remove_snapshot(&snap).await.expect("remove snapshot");
                    src.client().wait_task(&task, Duration::from_secs(30)).await.expect("removed");
                }
                let fake = fake.clone();
                let pvcs = pvcs.clone();
                let path = path.clone();
                let r = tokio::task::spawn_blocking(move || run_job(&fake, &pvcs, &path, &job)).await.expect("job");
                ran.lock().expect("lock").push(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn run_job(fake: &FakeKube, pvcs: &Path, path: &str, job: &Value) -> RanJob {
    let name = job["metadata"]["name"].as_str().expect("job name").to_string();
    let pod = &job["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"].as_str().expect("claim");
    let pvc = pvcs.join(claim);
    std::fs::create_dir_all(&pvc).expect("pvc dir");
    let term = pvcs.join(format!("{name}.termination-log"));
    let args: Vec<String> =
        c["args"].as_array().expect("args").iter().map(|a| a.as_str().expect("str").to_string()).collect();
    let local: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "/data/disk.img" => pvc.join("disk.img").display().to_string(),
            // A Block volume: the test made `block.dev` (a file standing in for the device).
            "/dev/xvda" => pvc.join("block.dev").display().to_string(),
            "/dev/termination-log" => term.display().to_string(),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(c["command"], json!(["vmigrate"]));
    let mut cmd = std::process::Command::new(vmigrate_bin());
    cmd.args(&local).env_remove("RUST_LOG");
    for e in c["env"].as_array().into_iter().flatten() {
        let sel = &e["valueFrom"]["secretKeyRef"];
        let secret = fake
            .get(&format!("/api/v1/namespaces/{NS}/secrets/{}", sel["name"].as_str().expect("secret name")))
            .expect("the Job's Secret exists");
        let v = unbase64(secret["data"][sel["key"].as_str().expect("key")].as_str().expect("data"));
        cmd.env(e["name"].as_str().expect("env name"), String::from_utf8(v).expect("utf-8"));
    }
    let out = cmd.output().expect("run vmigrate transfer");
    let message = std::fs::read_to_string(&term).unwrap_or_default();
    let code = out.status.code().unwrap_or(-1);
    fake.insert(
        &format!("/api/v1/namespaces/{NS}/pods/{name}-x1"),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": format!("{name}-x1"), "namespace": NS,
                            "labels": {"batch.kubernetes.io/job-name": name, "job-name": name}},
               "status": {"containerStatuses": [{"name": "transfer", "image": "x", "imageID": "", "ready": false,
                          "restartCount": 0, "state": {"terminated": {"exitCode": code,
                          "message": if code == 0 { message.clone() } else { String::from_utf8_lossy(&out.stderr).into_owned() }}}}]}}),
    );
    let status = if out.status.success() {
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    } else {
        json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]})
    };
    fake.play_statuses(path, vec![status]);
    RanJob { name, args, report: serde_json::from_str(&message).ok() }
}

fn scribble(flat: &Path, writes: &[(u64, u64)], byte: u8) {
    let mut f = std::fs::OpenOptions::new().write(true).open(flat).expect("open flat extent");
    for &(off, len) in writes {
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&vec![byte; len as usize]).expect("write");
    }
    f.sync_all().expect("sync");
}

/// Bytes of the 64 KiB blocks the writes touch (what CBT may report), and the bytes written.
fn touched(writes: &[(u64, u64, u8)]) -> (u64, u64) {
    let mut blocks = BTreeSet::new();
    for &(off, len, _) in writes {
        for b in off / BLOCK..=(off + len - 1) / BLOCK {
            blocks.insert(b);
        }
    }
    (blocks.len() as u64 * BLOCK, writes.iter().map(|w| w.1).sum())
}

/// Source changes after the full copy, after precopy 1 and after precopy 2 (then cut over).
/// The lab disk's pattern fills the first half of every MiB and leaves the second half zero.
fn change_sets() -> [Vec<(u64, u64, u8)>; 3] {
    [
        // New data into a never-written area, an overwrite of data, a write straddling blocks.
        vec![(576 << 10, 4096, 0xee), (100 << 10, 10, 0xab), ((5 << 20) - 100, 200, 0xcd)],
        // Zeroed ranges: a whole block of pattern data and a partial one.
        vec![(2 << 20, BLOCK, 0x00), ((3 << 20) + 1000, 3000, 0x00), (7 << 20, 3 * BLOCK, 0x77)],
        // The last writes before the cutover, up to the disk's last byte.
        vec![(4 << 20, 1, 0x01), (DISK - 1, 1, 0xfe)],
    ]
}

fn job_plan(
    sim: &vmigrate::vsphere::vcsim::Vcsim,
    env: &CredEnv,
    name: &str,
    vm: &str,
    warm: bool,
) -> vmigrate::core::Plan {
    let opts =
        if warm { "    enableCbt: true\n    precopyInterval: 1s\n    transfer: job\n" } else { "    transfer: job\n" };
    let text = vcsim_plan(name, sim, env, "kubevirt://", &[vm], warm, opts)
        .replace("volumeMode: Block", "volumeMode: Filesystem");
    vmigrate::core::Plan::from_yaml_str(&text).expect("plan")
}

fn target(fake: &FakeKube) -> KubevirtTarget {
    KubevirtTarget::from_client(fake.client()).with_options(KubevirtOptions {
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(60),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_job_mode_copies_each_pass_with_the_real_worker_and_cutover_equals_the_final_source() {
    let sim = start_vcsim(DISK);
    let vm_name = "database_running";
    let volume = "database-running-disk0";
    let src = connect(&sim).await;
    let vm = find_vm(&src, vm_name).await;
    assert!(!vm.cbt_enabled && vm.power_state == PowerState::PoweredOn);
    let flat = sim.flat_file(vm_name);
    let work = tempfile::tempdir().expect("tmp");
    let pvcs = work.path().join("pvcs");
    let env = CredEnv::new("warm_job");
    env.export(&sim);
    let plan = job_plan(&sim, &env, "warm-job", vm_name, true);
    let fake = cluster(&[volume]).await;
    let ran: Arc<Mutex<Vec<RanJob>>> = Arc::default();
    let kubelet = kubelet(fake.clone(), pvcs.clone(), ran.clone(), None, None);

    let sets = change_sets();
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let bytes_read: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sink = {
        let (ctl, bytes_read, flat, sets) = (ctl.clone(), bytes_read.clone(), flat.clone(), sets.clone());
        let written = Mutex::new(0usize);
        Arc::new(move |e: &Event| {
            if let Event::Disk { pass, progress, .. } = e {
                bytes_read.lock().expect("lock").insert(pass.clone(), progress.bytes_read);
                let order = ["full", "precopy-1", "precopy-2"];
                let mut n = written.lock().expect("lock");
                if *n < 3 && pass == order[*n] && progress.done == progress.total {
                    for &(off, len, byte) in &sets[*n] {
                        scribble(&flat, &[(off, len)], byte);
                    }
                    *n += 1;
                    if *n == 3 {
                        ctl.get().expect("controller set before run").cutover_now();
                    }
                }
            }
        })
    };
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let opts = ExecutorOptions {
        status_path: Some(work.path().join("warm-job.status.json")),
        events: Some(sink),
        progress_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let exec = Executor::new(plan, Arc::from(source), Arc::new(target(&fake)), opts);
    ctl.set(exec.controller()).expect("set once");
    let status = tokio::time::timeout(Duration::from_secs(120), exec.run()).await.expect("plan finishes").expect("run");
    kubelet.abort();

    let vs = &status.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
    assert_eq!(vs.precopies, 2, "two precopies, then the cutover");

    // The PVC holds exactly the source disk at the final snapshot (taken with the VM off).
    let img = pvcs.join(volume).join("disk.img");
    qemu_img_compare_raw(&flat, &img).expect("target equals final source");
    let leftovers: Vec<_> = std::fs::read_dir(pvcs.join(volume))
        .expect("pvc")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.contains("checkpoint"))
        .collect();
    assert!(leftovers.is_empty(), "finished passes leave no checkpoint: {leftovers:?}");

    // One Job per pass, named after it; each reads a snapshot; deltas carry the change id.
    let ran = ran.lock().expect("lock").clone();
    let names: Vec<&str> = ran.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for (name, pass) in names.iter().zip(["full", "precopy-1", "precopy-2", "cutover"]) {
        assert!(name.starts_with(&format!("{volume}-{pass}-")), "{name} is not the {pass} Job");
    }
    for r in &ran {
        assert!(r.args.iter().any(|a| a == "--snapshot"), "{}: {:?}", r.name, r.args);
        assert_eq!(r.args.iter().any(|a| a == "--changed-since"), !r.name.contains("-full-"), "{}", r.name);
    }
    // Each delta moved no more than the blocks its writes touched, and at least the writes.
    let br = bytes_read.lock().expect("lock").clone();
    for ((pass, set), r) in ["precopy-1", "precopy-2", "cutover"].iter().zip(&sets).zip(&ran[1..]) {
        let (bound, changed) = touched(set);
        let report = r.report.as_ref().expect("worker report");
        assert!(
            report.changed_bytes <= bound,
            "{pass}: changed ranges {} > touched blocks {bound}",
            report.changed_bytes
        );
        assert!(report.bytes_written <= bound && report.bytes_read <= bound, "{pass}: {report:?} vs {bound}");
        assert!(report.bytes_written >= changed.min(BLOCK), "{pass} wrote nothing: {report:?}");
        assert_eq!(br[*pass], report.bytes_read, "the executor reports the worker's numbers");
    }
    let full = ran[0].report.as_ref().expect("full report");
    assert_eq!(full.changed_bytes, DISK);
    assert!(full.bytes_read > 4 * ran[1].report.as_ref().expect("r").bytes_read);

    // The source: every snapshot removed, powered off at the cutover; downtime measured.
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(after.snapshots.is_empty(), "snapshots left: {:?}", after.snapshots);
    assert_eq!(after.power_state, PowerState::PoweredOff);
    let downtime = vs.downtime_seconds.expect("downtime reported");
    assert!(downtime > 0.0 && downtime < 60.0, "{downtime}");
    // The VM was created over the volume.
    assert!(fake.get(&format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/database-running")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_job_mode_is_one_full_pass_and_target_equals_source() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database";
    let volume = "database-disk0";
    let work = tempfile::tempdir().expect("tmp");
    let pvcs = work.path().join("pvcs");
    let env = CredEnv::new("cold_job");
    env.export(&sim);
    let plan = job_plan(&sim, &env, "cold-job", vm_name, false);
    let fake = cluster(&[volume]).await;
    let ran: Arc<Mutex<Vec<RanJob>>> = Arc::default();
    let kubelet = kubelet(fake.clone(), pvcs.clone(), ran.clone(), None, None);
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let exec = Executor::new(plan, Arc::from(source), Arc::new(target(&fake)), ExecutorOptions::default());
    let st = tokio::time::timeout(Duration::from_secs(60), exec.run()).await.expect("finishes").expect("run");
    kubelet.abort();
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    qemu_img_compare_raw(&sim.flat_file(vm_name), &pvcs.join(volume).join("disk.img")).expect("byte-equal");
    let ran = ran.lock().expect("lock").clone();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].name, format!("{volume}-full"));
    assert!(!ran[0].args.iter().any(|a| a == "--snapshot" || a == "--changed-since"), "{:?}", ran[0].args);
    let report = ran[0].report.as_ref().expect("report");
    assert_eq!((report.pass.as_str(), report.size), ("full", 4 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_job_pass_restores_the_source_and_leaves_no_cluster_objects() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database_running";
    let volume = "database-running-disk0";
    let src = connect(&sim).await;
    let vm = find_vm(&src, vm_name).await;
    assert!(!vm.cbt_enabled && vm.power_state == PowerState::PoweredOn);
    let work = tempfile::tempdir().expect("tmp");
    let pvcs = work.path().join("pvcs");
    let env = CredEnv::new("cancel_job");
    env.export(&sim);
    let plan = job_plan(&sim, &env, "cancel-job", vm_name, true);
    let fake = cluster(&[volume]).await;
    let ran: Arc<Mutex<Vec<RanJob>>> = Arc::default();
    // The first precopy's Job never finishes: the cancel arrives while it "runs".
    let kubelet = kubelet(fake.clone(), pvcs.clone(), ran.clone(), Some("-precopy-1"), None);
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let exec = Arc::new(Executor::new(plan, Arc::from(source), Arc::new(target(&fake)), ExecutorOptions::default()));
    let ctl = exec.controller();
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    // A guest write after the full copy, so the first precopy has something to move.
    tokio::time::timeout(Duration::from_secs(60), async {
        while ran.lock().expect("lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the full pass ran");
    scribble(&sim.flat_file(vm_name), &[(1 << 20, 4096)], 0x42);
    let prefix = format!("{JOBS}{volume}-precopy-1-");
    let job = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(r) = fake.requests().into_iter().find(|r| r.method == "PATCH" && r.path.starts_with(&prefix)) {
                return r.path;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the precopy Job is created");
    let full_job = format!("{JOBS}{}", ran.lock().expect("lock")[0].name);
    let mid = src.vm(&vm.id).await.expect("vm");
    assert!(mid.cbt_enabled && mid.snapshots.len() == 1, "mid-pass: CBT on, one snapshot: {mid:?}");
    ctl.cancel();
    let st = tokio::time::timeout(Duration::from_secs(60), run).await.expect("ends").expect("join").expect("run");
    kubelet.abort();
    assert_eq!(st.vms[0].phase, Phase::Canceled, "{:?}", st.vms[0].error);

    // The source is as it was: no snapshot, CBT off again, still running.
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(after.snapshots.is_empty(), "{:?}", after.snapshots);
    assert!(!after.cbt_enabled, "CBT we enabled is turned off again");
    assert_eq!(after.power_state, PowerState::PoweredOn);
    let sc = &st.vms[0].source_changes;
    assert!(sc.snapshots.is_empty() && !sc.enabled_cbt && !sc.powered_off, "{sc:?}");
    // The cluster keeps nothing half-made: Jobs, DataVolumes and the VM are gone.
    for path in [
        full_job,
        job.clone(),
        format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/{volume}"),
        format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/database-running"),
    ] {
        assert!(fake.get(&path).is_none(), "{path} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_vanishing_before_its_pass_fails_the_vm_loudly_and_restores_the_source() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database_running";
    let volume = "database-running-disk0";
    let src = Arc::new(connect(&sim).await);
    let vm = find_vm(&src, vm_name).await;
    let work = tempfile::tempdir().expect("tmp");
    let pvcs = work.path().join("pvcs");
    let env = CredEnv::new("vanish_job");
    env.export(&sim);
    let plan = job_plan(&sim, &env, "vanish-job", vm_name, true);
    let fake = cluster(&[volume]).await;
    let ran: Arc<Mutex<Vec<RanJob>>> = Arc::default();
    let kubelet = kubelet(fake.clone(), pvcs.clone(), ran.clone(), None, Some(("-precopy-1", src.clone())));
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let exec = Arc::new(Executor::new(plan, Arc::from(source), Arc::new(target(&fake)), ExecutorOptions::default()));
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    tokio::time::timeout(Duration::from_secs(60), async {
        while ran.lock().expect("lock").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the full pass ran");
    scribble(&sim.flat_file(vm_name), &[(2 << 20, 8192)], 0x24);
    let st = tokio::time::timeout(Duration::from_secs(90), run).await.expect("ends").expect("join").expect("run");
    kubelet.abort();
    let vs = &st.vms[0];
    assert_eq!(vs.phase, Phase::Failed, "a pass without its snapshot must fail, not complete");
    let err = vs.error.as_ref().expect("cause");
    assert!(err.message.contains("precopy-1"), "names the pass: {}", err.message);
    assert!(fake.get(&format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/database-running")).is_none());
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(after.snapshots.is_empty() && !after.cbt_enabled, "{after:?}");
    assert_eq!(after.power_state, PowerState::PoweredOn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_job_mode_into_a_block_volume_with_stale_bytes_ends_equal() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database";
    let volume = "database-disk0";
    let work = tempfile::tempdir().expect("tmp");
    let pvcs = work.path().join("pvcs");
    // A Block PVC is not known to be zeroed: the "device" holds stale bytes everywhere, so every
    // hole of the source must be written as zeroes.
    std::fs::create_dir_all(pvcs.join(volume)).expect("pvc");
    let dev = pvcs.join(volume).join("block.dev");
    std::fs::write(&dev, vec![0x5au8; 4 << 20]).expect("stale device");
    let env = CredEnv::new("cold_job_block");
    env.export(&sim);
    let text = vcsim_plan("cold-block", &sim, &env, "kubevirt://", &[vm_name], false, "    transfer: job\n");
    assert!(text.contains("volumeMode: Block"));
    let plan = vmigrate::core::Plan::from_yaml_str(&text).expect("plan");
    let fake = cluster(&[volume]).await;
    let ran: Arc<Mutex<Vec<RanJob>>> = Arc::default();
    let kubelet = kubelet(fake.clone(), pvcs.clone(), ran.clone(), None, None);
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let exec = Executor::new(plan, Arc::from(source), Arc::new(target(&fake)), ExecutorOptions::default());
    let st = tokio::time::timeout(Duration::from_secs(60), exec.run()).await.expect("finishes").expect("run");
    kubelet.abort();
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    let ran = ran.lock().expect("lock").clone();
    assert!(ran[0].args.windows(2).any(|w| w == ["--target-device", "/dev/xvda"]), "{:?}", ran[0].args);
    qemu_img_compare_raw(&sim.flat_file(vm_name), &dev).expect("byte-equal, stale bytes overwritten");
}
