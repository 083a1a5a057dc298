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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use support::warm::{between_passes, run_plan, scribble, touched, CBT_BLOCK as BLOCK, WARM_OPTIONS};
use support::*;
use vmigrate::core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate::core::model::PowerState;
use vmigrate::core::{PassReport, Phase, Plan, PlanStatus, SourceProvider};
use vmigrate::kubevirt::fake::FakeKube;
use vmigrate::kubevirt::{KubevirtOptions, KubevirtTarget};

const DISK: u64 = 8 << 20;
const NS: &str = NAMESPACE;
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

/// What the test kubelet saw of one Job.
#[derive(Debug, Clone)]
struct RanJob {
    name: String,
    args: Vec<String>,
    report: Option<PassReport>,
    /// Exit code of each pod's worker, in order (128 + signal for a killed one, as a container
    /// runtime reports it).
    exits: Vec<i32>,
    /// Units the checkpoint on the PVC recorded as done when the fault hit.
    done_at_fault: Option<u64>,
}

/// A fault the test kubelet injects into the first pod of the Jobs whose name contains `job`:
/// once the worker has recorded a checkpoint with at least `min_done` completed units on the
/// PVC (so it is really mid-pass), it gets `signal` (`KILL`: OOM or node loss; `TERM`: how
/// Kubernetes stops a pod).
#[derive(Debug, Clone, Copy)]
struct Fault {
    job: &'static str,
    signal: &'static str,
    min_done: u64,
}

/// How the test kubelet departs from "run every Job to the end" (the default).
#[derive(Default)]
struct Kubelet {
    /// Jobs whose name contains this are never run: a pass that is still going.
    hold: Option<&'static str>,
    /// Before the Job whose name contains `.0` runs, its snapshot is removed at the source.
    vanish: Option<(&'static str, Arc<vmigrate::vsphere::VsphereSource>)>,
    /// Pods killed mid-pass.
    faults: Vec<Fault>,
}

/// The cluster side every job-mode test starts from, written once: a scratch folder whose
/// `pvcs/<claim>/` folders are the volumes, the fake cluster (the lab's namespace and storage
/// class) whose blank DataVolumes for `volumes` succeed, and the test kubelet running every
/// transfer Job into the volumes as the real worker.
struct JobCluster {
    /// The scratch folder (status files, the `pvcs` folder).
    work: tempfile::TempDir,
    /// The volumes: one folder a claim.
    pvcs: PathBuf,
    fake: FakeKube,
    /// Every Job the kubelet ran, in order.
    ran: Arc<Mutex<Vec<RanJob>>>,
    kubelet: tokio::task::JoinHandle<()>,
}

impl JobCluster {
    async fn start(volumes: &[&str], opts: Kubelet) -> JobCluster {
        let work = tempfile::tempdir().expect("tmp");
        let pvcs = work.path().join("pvcs");
        let fake = lab_cluster("unused", "x").await;
        for v in volumes {
            fake.play_statuses(
                &format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/{v}"),
                vec![json!({"phase": "Succeeded"})],
            );
        }
        let ran: Arc<Mutex<Vec<RanJob>>> = Arc::default();
        let kubelet = kubelet(fake.clone(), pvcs.clone(), ran.clone(), opts);
        JobCluster { work, pvcs, fake, ran, kubelet }
    }

    /// The KubeVirt target on this cluster, polling fast.
    fn target(&self) -> KubevirtTarget {
        target(&self.fake)
    }

    /// Run `plan` into this cluster to the end (see [`run_plan`]), then stop the kubelet.
    async fn run(
        &self,
        plan: Plan,
        opts: ExecutorOptions,
        ctl: Option<&OnceLock<Controller>>,
        timeout: Duration,
    ) -> PlanStatus {
        let st = run_plan(plan, self.target(), opts, ctl, timeout).await;
        self.kubelet.abort();
        st
    }

    /// The Jobs run so far.
    fn ran(&self) -> Vec<RanJob> {
        self.ran.lock().expect("lock").clone()
    }

    /// Wait until the kubelet has run the first Job (the full pass).
    async fn first_job_ran(&self) {
        tokio::time::timeout(Duration::from_secs(60), async {
            while self.ran.lock().expect("lock").is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the full pass ran");
    }

    /// Files of volume `claim` whose name says checkpoint: a finished pass leaves none.
    fn checkpoint_files(&self, claim: &str) -> Vec<String> {
        std::fs::read_dir(self.pvcs.join(claim))
            .expect("pvc")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.contains("checkpoint"))
            .collect()
    }
}

/// Run every new transfer Job as the real worker process, then publish its pods (with the result
/// file as termination message) and the Job's Complete/Failed condition. Like the Job
/// controller, a failed pod is followed by a new one (a new worker process) until one succeeds
/// or `spec.backoffLimit` retries failed.
/// Jobs whose name contains `hold` are never run (a pass that is still going); before a Job
/// whose name contains `vanish.0` runs, its snapshot is removed at the source behind vmigrate's
/// back; `faults` kill the first pod of matching Jobs mid-pass (see [`Kubelet`]).
fn kubelet(fake: FakeKube, pvcs: PathBuf, ran: Arc<Mutex<Vec<RanJob>>>, opts: Kubelet) -> tokio::task::JoinHandle<()> {
    let Kubelet { hold, vanish, faults } = opts;
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
                let fault = faults.iter().copied().find(|f| path.contains(f.job));
                let r =
                    tokio::task::spawn_blocking(move || run_job(&fake, &pvcs, &path, &job, fault)).await.expect("job");
                ran.lock().expect("lock").push(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// Completed units recorded in the worker's checkpoint file, if it is there and readable.
fn checkpoint_done_units(path: &Path) -> Option<u64> {
    let v: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(v["done"].as_array()?.iter().filter_map(|r| Some(r[1].as_u64()? - r[0].as_u64()?)).sum())
}

fn run_job(fake: &FakeKube, pvcs: &Path, path: &str, job: &Value, fault: Option<Fault>) -> RanJob {
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
    let mut env = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let sel = &e["valueFrom"]["secretKeyRef"];
        let secret = fake
            .get(&format!("/api/v1/namespaces/{NS}/secrets/{}", sel["name"].as_str().expect("secret name")))
            .expect("the Job's Secret exists");
        let v = unbase64(secret["data"][sel["key"].as_str().expect("key")].as_str().expect("data"));
        env.push((e["name"].as_str().expect("env name").to_string(), String::from_utf8(v).expect("utf-8")));
    }
    let attempts = job["spec"]["backoffLimit"].as_u64().unwrap_or(6) + 1;
    let (mut exits, mut message, mut done_at_fault) = (Vec::new(), String::new(), None);
    for attempt in 1..=attempts {
        // Each pod is a new container: no termination message of the one before.
        let _ = std::fs::remove_file(&term);
        let log = pvcs.join(format!("{name}-x{attempt}.log"));
        let mut child = std::process::Command::new(vmigrate_bin())
            .args(&local)
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("run vmigrate transfer");
        if let Some(f) = fault.filter(|_| attempt == 1) {
            let cp = pvc.join("disk.img.vmigrate-checkpoint");
            let t = std::time::Instant::now();
            let done = loop {
                if let Some(code) = child.try_wait().expect("wait") {
                    panic!("{name}: the worker ended ({code}) before a mid-pass checkpoint: make the pass longer");
                }
                // The checkpoint of this pass (not a leftover): it names the pass.
                let ours = std::fs::read_to_string(&cp).is_ok_and(|t| {
                    t.contains(&format!(
                        " pass={} ",
                        local[local.iter().position(|a| a == "--pass").expect("--pass") + 1]
                    ))
                });
                if let Some(n) = checkpoint_done_units(&cp).filter(|&n| n >= f.min_done && ours) {
                    break n;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "{name}: no checkpoint");
                std::thread::sleep(Duration::from_millis(1));
            };
            let kill = std::process::Command::new("kill")
                .args([format!("-{}", f.signal), child.id().to_string()])
                .status()
                .expect("kill");
            assert!(kill.success());
            done_at_fault = Some(done);
        }
        let status = child.wait().expect("wait");
        let code =
            status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
        exits.push(code);
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        message = std::fs::read_to_string(&term).unwrap_or_default();
        fake.insert(
            &format!("/api/v1/namespaces/{NS}/pods/{name}-x{attempt}"),
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": format!("{name}-x{attempt}"), "namespace": NS,
                                "labels": {"batch.kubernetes.io/job-name": name, "job-name": name}},
                   "status": {"containerStatuses": [{"name": "transfer", "image": "x", "imageID": "", "ready": false,
                              "restartCount": 0, "state": {"terminated": {"exitCode": code,
                              "message": if code == 0 { message.clone() } else { stderr }}}}]}}),
        );
        if code == 0 {
            break;
        }
    }
    let status = if exits.last() == Some(&0) {
        json!({"succeeded": 1, "failed": exits.len() - 1, "conditions": [{"type": "Complete", "status": "True"}]})
    } else {
        json!({"failed": exits.len(), "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]})
    };
    fake.play_statuses(path, vec![status]);
    RanJob { name, args, report: serde_json::from_str(&message).ok(), exits, done_at_fault }
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

/// Plan `name` moving `vm` in job mode into Filesystem volumes, its credentials exported in
/// variables of its own.
fn job_plan(sim: &vmigrate::vsphere::vcsim::Vcsim, name: &str, vm: &str, warm: bool) -> Plan {
    let env = CredEnv::new(name);
    env.export(sim);
    let opts = if warm { format!("{WARM_OPTIONS}    transfer: job\n") } else { "    transfer: job\n".to_string() };
    let text = vcsim_plan(name, sim, &env, "kubevirt://", &[vm], warm, &opts)
        .replace("volumeMode: Block", "volumeMode: Filesystem");
    Plan::from_yaml_str(&text).expect("plan")
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
    let plan = job_plan(&sim, "warm-job", vm_name, true);
    let lab = JobCluster::start(&[volume], Kubelet::default()).await;

    let sets = change_sets();
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let bytes_read: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sink = {
        let (bytes_read, flat, sets) = (bytes_read.clone(), flat.clone(), sets.clone());
        let write = between_passes(&["full", "precopy-1", "precopy-2"], ctl.clone(), move |n| {
            for &(off, len, byte) in &sets[n] {
                scribble(&flat, &[(off, len)], byte);
            }
        });
        Arc::new(move |e: &Event| {
            if let Event::Disk { pass, progress, .. } = e {
                bytes_read.lock().expect("lock").insert(pass.clone(), progress.bytes_read);
                write(e);
            }
        })
    };
    let opts = ExecutorOptions {
        status_path: Some(lab.work.path().join("warm-job.status.json")),
        events: Some(sink),
        progress_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let status = lab.run(plan, opts, Some(&ctl), Duration::from_secs(120)).await;
    let (fake, pvcs) = (&lab.fake, &lab.pvcs);

    let vs = &status.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
    assert_eq!(vs.precopies, 2, "two precopies, then the cutover");

    // The PVC holds exactly the source disk at the final snapshot (taken with the VM off).
    let img = pvcs.join(volume).join("disk.img");
    qemu_img_compare_raw(&flat, &img).expect("target equals final source");
    let leftovers = lab.checkpoint_files(volume);
    assert!(leftovers.is_empty(), "finished passes leave no checkpoint: {leftovers:?}");

    // One Job per pass, named after it; each reads a snapshot; deltas carry the change id.
    let ran = lab.ran();
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
        let (bound, changed) = touched(set.iter().map(|w| (w.0, w.1)));
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
    // The VM was created over the volume, and the finished pass Jobs are gone (the volume and
    // its DataVolume stay: the VM runs from them).
    assert!(fake.get(&format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/database-running")).is_some());
    for r in &ran {
        assert!(fake.get(&format!("{JOBS}{}", r.name)).is_none(), "Job {} left after the migration", r.name);
    }
    // No finished pass Job was deleted on its own while the migration ran (only running Jobs of
    // an earlier attempt are; these went all at once at the end).
    let single: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.starts_with(JOBS))
        .map(|r| r.path)
        .collect();
    assert!(single.is_empty(), "{single:?}");
    // The Secret with the vCenter credentials the workers read (the test kubelet read it for
    // every pod) is gone too: nothing needs it once the VM exists.
    let secret = format!("/api/v1/namespaces/{NS}/secrets/vmigrate-warm-job-database-running-source");
    assert!(fake.requests().iter().any(|r| r.method == "PATCH" && r.path == secret), "the Secret was applied");
    assert!(fake.get(&secret).is_none(), "the source credentials were left in the namespace");
    assert!(fake.get(&format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/{volume}")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_job_mode_is_one_full_pass_and_target_equals_source() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database";
    let volume = "database-disk0";
    let plan = job_plan(&sim, "cold-job", vm_name, false);
    let lab = JobCluster::start(&[volume], Kubelet::default()).await;
    let st = lab.run(plan, ExecutorOptions::default(), None, Duration::from_secs(60)).await;
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    qemu_img_compare_raw(&sim.flat_file(vm_name), &lab.pvcs.join(volume).join("disk.img")).expect("byte-equal");
    let ran = lab.ran();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].name, format!("{volume}-full"));
    assert!(!ran[0].args.iter().any(|a| a == "--snapshot" || a == "--changed-since"), "{:?}", ran[0].args);
    let report = ran[0].report.as_ref().expect("report");
    assert_eq!((report.pass.as_str(), report.size), ("full", 4 << 20));
}

/// Cancel while the Job of the pass named by `hold` "runs" (the test kubelet never runs it):
/// the source ends as it was (no snapshot, CBT we enabled turned off, powered on again if the
/// cutover had powered it off) and the cluster keeps nothing of the run (Jobs, DataVolume, VM).
/// `cutover_now` makes the plan cut over right after the full copy (`--cutover now`).
async fn cancel_during_a_job_pass(hold: &'static str, cutover_now: bool, tag: &str) {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database_running";
    let volume = "database-running-disk0";
    let src = connect(&sim).await;
    let vm = find_vm(&src, vm_name).await;
    assert!(!vm.cbt_enabled && vm.power_state == PowerState::PoweredOn);
    let plan = job_plan(&sim, &tag.replace('_', "-"), vm_name, true);
    let lab = JobCluster::start(&[volume], Kubelet { hold: Some(hold), ..Default::default() }).await;
    let fake = &lab.fake;
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let opts = ExecutorOptions { cutover_now, ..Default::default() };
    let exec = Arc::new(Executor::new(plan, Arc::from(source), Arc::new(lab.target()), opts));
    let ctl = exec.controller();
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    if hold != "-full-" {
        // A guest write after the full copy, so the next pass has something to move.
        lab.first_job_ran().await;
        scribble(&sim.flat_file(vm_name), &[(1 << 20, 4096)], 0x42);
    }
    let prefix = format!("{JOBS}{volume}{hold}");
    let job = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(r) = fake.requests().into_iter().find(|r| r.method == "PATCH" && r.path.starts_with(&prefix)) {
                return r.path;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the {hold} Job is created"));
    let mid = src.vm(&vm.id).await.expect("vm");
    assert!(mid.cbt_enabled && mid.snapshots.len() == 1, "mid-pass: CBT on, one snapshot: {mid:?}");
    let want_power = if hold == "-cutover-" { PowerState::PoweredOff } else { PowerState::PoweredOn };
    assert_eq!(mid.power_state, want_power, "{hold}");
    ctl.cancel();
    let st = tokio::time::timeout(Duration::from_secs(60), run).await.expect("ends").expect("join").expect("run");
    lab.kubelet.abort();
    assert_eq!(st.vms[0].phase, Phase::Canceled, "{:?}", st.vms[0].error);

    // The source is as it was: no snapshot, CBT off again, running.
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(after.snapshots.is_empty(), "{hold}: {:?}", after.snapshots);
    assert!(!after.cbt_enabled, "{hold}: CBT we enabled is turned off again");
    assert_eq!(after.power_state, PowerState::PoweredOn, "{hold}: power restored");
    let sc = &st.vms[0].source_changes;
    assert!(sc.snapshots.is_empty() && !sc.enabled_cbt && !sc.powered_off, "{sc:?}");
    // The cluster keeps nothing half-made: every Job of the run, the DataVolume, the VM.
    let applied: BTreeSet<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with(JOBS))
        .map(|r| r.path)
        .collect();
    assert!(applied.contains(&job));
    for path in applied.into_iter().chain([
        format!("/api/v1/namespaces/{NS}/secrets/vmigrate-{}-database-running-source", tag.replace('_', "-")),
        format!("/apis/cdi.kubevirt.io/v1beta1/namespaces/{NS}/datavolumes/{volume}"),
        format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/database-running"),
    ]) {
        assert!(fake.get(&path).is_none(), "{hold}: {path} left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_full_job_pass_restores_the_source_and_leaves_no_cluster_objects() {
    cancel_during_a_job_pass("-full-", false, "cancel_full").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_a_precopy_job_pass_restores_the_source_and_leaves_no_cluster_objects() {
    cancel_during_a_job_pass("-precopy-1-", false, "cancel_precopy").await;
}

/// The cutover pass runs with the source powered off: a cancel then powers it on again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_cutover_job_pass_powers_the_source_on_again_and_leaves_no_cluster_objects() {
    cancel_during_a_job_pass("-cutover-", true, "cancel_cutover").await;
}

/// `--cutover now` (`ExecutorOptions::cutover_now`), per-VM cutover times and the precopy
/// interval in job mode, in one plan of two running VMs: `database_running` has its own
/// cutover time (passed) and cuts over right after its full copy, no precopy; the plan's cutover
/// time is far away, so `haproxy_running` precopies every `precopyInterval` (1 s) until the
/// controller asks for the cutover. Both end byte-equal to their source at the final snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_vm_cutover_times_and_the_precopy_interval_in_job_mode() {
    let sim = start_vcsim(4 << 20);
    let (db, ha) = ("database_running", "haproxy_running");
    let env = CredEnv::new("per_vm_cutover");
    env.export(&sim);
    let text = vcsim_plan(
        "per-vm-cutover",
        &sim,
        &env,
        "kubevirt://",
        &[db, ha],
        true,
        &format!("{WARM_OPTIONS}    transfer: job\n    cutover: \"2099-01-01T00:00:00Z\"\n"),
    )
    .replace("volumeMode: Block", "volumeMode: Filesystem")
    .replacen(
        &format!("    - name: {db}\n"),
        &format!("    - name: {db}\n      cutover: \"2020-01-01T00:00:00Z\"\n"),
        1,
    );
    let plan = Plan::from_yaml_str(&text).expect("plan");
    let lab = JobCluster::start(&["database-running-disk0", "haproxy-running-disk0"], Kubelet::default()).await;
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let finished: Arc<Mutex<Vec<(String, String, std::time::Instant)>>> = Arc::default();
    let sink = {
        let (ctl, finished) = (ctl.clone(), finished.clone());
        let (db_flat, ha_flat) = (sim.flat_file(db), sim.flat_file(ha));
        Arc::new(move |e: &Event| {
            if let Event::Disk { vm, pass, progress, .. } = e {
                if progress.done != progress.total {
                    return;
                }
                finished.lock().expect("lock").push((vm.clone(), pass.clone(), std::time::Instant::now()));
                match (vm.as_str(), pass.as_str()) {
                    // Written before the cutover snapshot of each VM.
                    ("database_running", "full") => scribble(&db_flat, &[(3 << 20, 5000)], 0x31),
                    ("haproxy_running", "precopy-1") => scribble(&ha_flat, &[(2 << 20, 700)], 0x32),
                    ("haproxy_running", "precopy-2") => ctl.get().expect("controller").cutover_now(),
                    _ => {}
                }
            }
        })
    };
    let opts = ExecutorOptions { events: Some(sink), ..Default::default() };
    let st = lab.run(plan, opts, Some(&ctl), Duration::from_secs(180)).await;
    for (vs, name) in st.vms.iter().zip([db, ha]) {
        assert_eq!(vs.phase, Phase::Completed, "{name}: {:?}", vs.error);
        assert!(vs.downtime_seconds.is_some(), "{name}");
        let img = lab.pvcs.join(&vs.disks[0].volume).join("disk.img");
        qemu_img_compare_raw(&sim.flat_file(name), &img).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(st.vms[0].precopies, 0, "database_running's own cutover time had passed");
    assert!(st.vms[1].precopies >= 2, "haproxy_running waited for the cutover: {}", st.vms[1].precopies);
    let passes = |vm: &str| -> Vec<(String, std::time::Instant)> {
        finished.lock().expect("lock").iter().filter(|f| f.0 == vm).map(|f| (f.1.clone(), f.2)).collect()
    };
    let db_passes: Vec<String> = passes(db).into_iter().map(|p| p.0).collect();
    assert_eq!(db_passes, ["full", "cutover"]);
    let ha = passes(ha);
    let names: Vec<&str> = ha.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names.first(), Some(&"full"));
    assert_eq!(names.last(), Some(&"cutover"));
    // Each precopy starts a precopyInterval after the pass before it ended.
    for w in ha.windows(2).filter(|w| w[1].0.starts_with("precopy-")) {
        let gap = w[1].1.duration_since(w[0].1);
        assert!(gap >= Duration::from_secs(1), "{} ended {gap:?} after {}", w[1].0, w[0].0);
    }
    let jobs: Vec<String> = lab.ran().iter().map(|r| r.name.clone()).collect();
    assert_eq!(jobs.iter().filter(|j| j.starts_with("database-running-disk0-")).count(), 2, "{jobs:?}");
}

/// `vmigrate migrate --cutover now` at the start of a warm plan in job mode: one full copy while
/// the VM runs, then at once the cutover (power off, a last delta), no precopy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_now_in_job_mode_is_a_full_copy_then_the_cutover() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database_running";
    let plan = job_plan(&sim, "cutover-now-job", vm_name, true);
    let lab = JobCluster::start(&["database-running-disk0"], Kubelet::default()).await;
    let flat = sim.flat_file(vm_name);
    let sink = {
        let flat = flat.clone();
        Arc::new(move |e: &Event| {
            if let Event::Disk { pass, progress, .. } = e {
                if pass == "full" && progress.done == progress.total {
                    scribble(&flat, &[(1 << 20, 3000), ((4 << 20) - 10, 10)], 0x77);
                }
            }
        })
    };
    let opts = ExecutorOptions { cutover_now: true, events: Some(sink), ..Default::default() };
    let st = lab.run(plan, opts, None, Duration::from_secs(120)).await;
    let vs = &st.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
    assert_eq!(vs.precopies, 0);
    qemu_img_compare_raw(&flat, &lab.pvcs.join("database-running-disk0").join("disk.img")).expect("equal");
    let ran = lab.ran();
    let names: Vec<&str> = ran.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].contains("-full-") && names[1].contains("-cutover-"), "{names:?}");
    assert!(ran[1].report.as_ref().expect("report").changed_bytes > 0, "the cutover copied the write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_vanishing_before_its_pass_fails_the_vm_loudly_and_restores_the_source() {
    let sim = start_vcsim(4 << 20);
    let vm_name = "database_running";
    let volume = "database-running-disk0";
    let src = Arc::new(connect(&sim).await);
    let vm = find_vm(&src, vm_name).await;
    let plan = job_plan(&sim, "vanish-job", vm_name, true);
    let lab =
        JobCluster::start(&[volume], Kubelet { vanish: Some(("-precopy-1", src.clone())), ..Default::default() }).await;
    let fake = &lab.fake;
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let exec = Arc::new(Executor::new(plan, Arc::from(source), Arc::new(lab.target()), ExecutorOptions::default()));
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    lab.first_job_ran().await;
    scribble(&sim.flat_file(vm_name), &[(2 << 20, 8192)], 0x24);
    let st = tokio::time::timeout(Duration::from_secs(90), run).await.expect("ends").expect("join").expect("run");
    lab.kubelet.abort();
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
    let lab = JobCluster::start(&[volume], Kubelet::default()).await;
    let pvcs = &lab.pvcs;
    // A Block PVC is not known to be zeroed: the "device" holds stale bytes everywhere, so every
    // hole of the source must be written as zeroes.
    std::fs::create_dir_all(pvcs.join(volume)).expect("pvc");
    let dev = pvcs.join(volume).join("block.dev");
    std::fs::write(&dev, vec![0x5au8; 4 << 20]).expect("stale device");
    let env = CredEnv::new("cold_job_block");
    env.export(&sim);
    let text = vcsim_plan("cold-block", &sim, &env, "kubevirt://", &[vm_name], false, "    transfer: job\n");
    assert!(text.contains("volumeMode: Block"));
    let plan = Plan::from_yaml_str(&text).expect("plan");
    let st = lab.run(plan, ExecutorOptions::default(), None, Duration::from_secs(60)).await;
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    let ran = lab.ran();
    assert!(ran[0].args.windows(2).any(|w| w == ["--target-device", "/dev/xvda"]), "{:?}", ran[0].args);
    qemu_img_compare_raw(&sim.flat_file(vm_name), &dev).expect("byte-equal, stale bytes overwritten");
}

/// Issue 12, fault cases: the worker of the full pass is SIGKILLed mid-pass (OOM, node loss)
/// and the worker of the first precopy gets SIGTERM mid-pass (how Kubernetes stops a pod: a
/// drain, an eviction). Each time the Job's next pod — a new worker process — continues from
/// the checkpoint the killed one left on the PVC (it reads less than what was left), and after
/// the cutover the PVC equals the source disk at the final snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_or_stopped_mid_pass_resume_in_the_next_pod_and_cutover_equals_the_final_source() {
    const BIG: u64 = 64 << 20;
    const MIB: u64 = 1 << 20;
    let sim = start_vcsim(BIG);
    let vm_name = "database_running";
    let volume = "database-running-disk0";
    let src = connect(&sim).await;
    let vm = find_vm(&src, vm_name).await;
    let flat = sim.flat_file(vm_name);
    let plan = job_plan(&sim, "killed-job", vm_name, true);
    // The precopy's units 0-7 have nothing to copy (done at once): 12 done units are at least
    // four of its data units.
    let faults = vec![
        Fault { job: "-full-", signal: "KILL", min_done: 1 },
        Fault { job: "-precopy-1-", signal: "TERM", min_done: 12 },
    ];
    let lab = JobCluster::start(&[volume], Kubelet { faults, ..Default::default() }).await;
    // After the full copy: 24 MiB from 8 MiB on (work units 8-31), so the precopy is long
    // enough to be stopped mid-way; after the precopy, two small writes; then cutover.
    let sets: [Vec<(u64, u64, u8)>; 2] =
        [vec![(8 * MIB, 24 * MIB, 0xc3)], vec![(3 * MIB + 17, 100, 0x00), (BIG - 1, 1, 0x5a)]];
    let ctl: Arc<OnceLock<Controller>> = Arc::default();
    let sink = {
        let (flat, sets) = (flat.clone(), sets.clone());
        Arc::new(between_passes(&["full", "precopy-1"], ctl.clone(), move |n| {
            for &(off, len, byte) in &sets[n] {
                scribble(&flat, &[(off, len)], byte);
            }
        }))
    };
    let opts = ExecutorOptions {
        status_path: Some(lab.work.path().join("killed-job.status.json")),
        events: Some(sink),
        ..Default::default()
    };
    let target = KubevirtTarget::from_client(lab.fake.client()).with_options(KubevirtOptions {
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(120),
        // A checkpoint after every 1 MiB unit: the kubelet can stop the worker mid-pass.
        job_checkpoint_interval: Some(Duration::ZERO),
        job_work_unit: Some(MIB),
        ..Default::default()
    });
    let status = run_plan(plan, target, opts, Some(&ctl), Duration::from_secs(240)).await;
    lab.kubelet.abort();
    let vs = &status.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);

    // What counts: the PVC holds the source disk at the final snapshot.
    qemu_img_compare_raw(&flat, &lab.pvcs.join(volume).join("disk.img")).expect("target equals final source");

    let ran = lab.ran();
    let names: Vec<&str> = ran.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 3, "full, precopy-1, cutover: {names:?}");
    // Full pass: SIGKILL (the runtime reports 128 + 9), then a new pod resumed and skipped
    // every unit the killed one had checkpointed.
    let full = &ran[0];
    assert_eq!(full.exits, vec![137, 0], "{}", full.name);
    let report = full.report.as_ref().expect("full report");
    let done = full.done_at_fault.expect("killed mid-pass");
    assert!(report.resumed, "the second pod resumed: {report:?}");
    assert!(
        report.bytes_read <= BIG - done * MIB,
        "the second pod read {} bytes although {done} MiB were checkpointed: it started over",
        report.bytes_read
    );
    assert_eq!(report.changed_bytes, BIG);
    // Precopy: SIGTERM stops the worker cleanly with the cancelled code (5), keeping its
    // checkpoint; the next pod continues it.
    let pre = &ran[1];
    assert!(pre.name.starts_with(&format!("{volume}-precopy-1-")), "{}", pre.name);
    assert_eq!(pre.exits, vec![5, 0], "{}", pre.name);
    let report = pre.report.as_ref().expect("precopy report");
    let done = pre.done_at_fault.expect("stopped mid-pass");
    assert!(report.resumed, "{report:?}");
    assert_eq!(report.changed_bytes, 24 * MIB, "{report:?}");
    assert!(
        report.bytes_read <= (24 + 8 - done) * MIB,
        "the second pod read {} bytes although {done} units were checkpointed: it started over",
        report.bytes_read
    );
    assert_eq!(ran[2].exits, vec![0]);
    let leftovers = lab.checkpoint_files(volume);
    assert!(leftovers.is_empty(), "finished passes leave no checkpoint: {leftovers:?}");
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(after.snapshots.is_empty(), "{:?}", after.snapshots);
    assert!(vs.downtime_seconds.is_some());
}

/// The worker of `pass` at `snapshot` into `img`, checkpointing after every 1 MiB unit.
fn worker(
    sim: &vmigrate::vsphere::vcsim::Vcsim,
    vm: &vmigrate::core::model::Vm,
    pass: &str,
    snapshot: &str,
    img: &Path,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(vmigrate_bin());
    cmd.args(["transfer", "--output", "json", "--source-url", &sim.url, "--thumbprint", &sim.thumbprint])
        .args(["--vm-id", &vm.id.source_ref, "--disk-key", &vm.disks[0].key.to_string(), "--pass", pass])
        .args(["--snapshot", snapshot, "--checkpoint-interval", "0ms", "--work-unit", "1M", "--target-file"])
        .arg(img)
        .env_remove("RUST_LOG")
        .env("VMIGRATE_SOURCE_USERNAME", &sim.username)
        .env("VMIGRATE_SOURCE_PASSWORD", &sim.password);
    cmd
}

/// Issue 12: a checkpoint is bound to its pass, snapshot included. A pass killed mid-way and
/// then redone at **another snapshot** (the executor crashed and took a new one) finds the
/// killed attempt's checkpoint on the PVC; continuing it would keep, in every unit it marks
/// done, the bytes of the old snapshot — writes made since would be lost with exit 0. The
/// worker must start the pass over instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_the_same_pass_at_another_snapshot_is_never_continued() {
    const BIG: u64 = 32 << 20;
    const MIB: u64 = 1 << 20;
    let sim = start_vcsim(BIG);
    let src = connect(&sim).await;
    let vm = find_vm(&src, "database_running").await;
    let flat = sim.flat_file("database_running");
    let work = tempfile::tempdir().expect("tmp");
    let img = work.path().join("disk.img");
    let cp = work.path().join("disk.img.vmigrate-checkpoint");
    let s1 = src.create_snapshot(&vm.id, "s1").await.expect("snapshot 1");

    let mut child = worker(&sim, &vm, "full", &s1.id, &img)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("worker");
    let done = wait_for(Duration::from_secs(60), "a mid-pass checkpoint", || {
        if let Ok(Some(code)) = child.try_wait() {
            panic!("the pass ended ({code}) before a mid-pass checkpoint: make the disk bigger");
        }
        checkpoint_done_units(&cp).filter(|&n| n >= 4)
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let v: Value = serde_json::from_slice(&std::fs::read(&cp).expect("checkpoint kept")).expect("json");
    assert!(v["source"].as_str().is_some_and(|s| s.contains(&format!("snapshot={} ", s1.id))), "{v}");

    // The guest writes into every unit the killed attempt finished; then the pass is redone at a
    // new snapshot (the old one removed first, as the executor does).
    let units: Vec<u64> = v["done"]
        .as_array()
        .expect("done")
        .iter()
        .flat_map(|r| r[0].as_u64().expect("start")..r[1].as_u64().expect("end"))
        .collect();
    assert!(units.len() as u64 >= done.min(4));
    for u in &units {
        scribble(&flat, &[(u * MIB + 100, 4096)], 0x99);
    }
    src.remove_snapshot(&vm.id, &s1).await.expect("remove snapshot 1");
    let s2 = src.create_snapshot(&vm.id, "s2").await.expect("snapshot 2");
    let out = worker(&sim, &vm, "full", &s2.id, &img).output().expect("worker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: PassReport = serde_json::from_slice(&out.stdout).expect("report");
    assert!(!report.resumed, "continued a checkpoint of snapshot {}: {report:?}", s1.id);
    assert_eq!(report.snapshot.as_deref(), Some(s2.id.as_str()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not continued"), "{}", String::from_utf8_lossy(&out.stderr));
    // Nothing written since s2: the target must equal the disk now, writes of every unit included.
    qemu_img_compare_raw(&flat, &img).expect("the redone pass holds snapshot 2's bytes");
    assert!(!cp.exists(), "the finished pass removed its checkpoint");
    src.remove_snapshot(&vm.id, &s2).await.expect("remove snapshot 2");
}
