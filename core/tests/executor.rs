//! The executor driven end to end through the test kit's reference providers
//! ([`MemSource`], [`MemTarget`]): cold and warm migrations, failures and their cleanup,
//! cancel, resume from the status file, guest conversion, hooks, self-importing and pass-running
//! targets, and verification. These tests use only core's public API, so they live here (core
//! linked as an external crate) and share the one copy of the memory providers in `testkit`
//! instead of a private copy inside core.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use vmigrate_core::convert::{ConversionRequest, GuestConversion};
use vmigrate_core::engine::{self, Checkpoint, CopyControl, CopyOptions};
use vmigrate_core::executor::{Event, EventSink, Executor, ExecutorOptions, WARM_TRANSFER_UNSUPPORTED};
use vmigrate_core::memory::MemoryTransport;
use vmigrate_core::model::{Disk, PowerState};
use vmigrate_core::plan::{HookSpec, HookStep};
use vmigrate_core::provider::{ExistingVm, PreparedVolume, SourceProvider, TargetProvider, TargetVm, VolumeSink};
use vmigrate_core::status::DiskCheckpoint;
use vmigrate_core::transport::{BlockTransport, SourceIdentity};
use vmigrate_core::{ErrorCode, Phase, Plan, PlanStatus, Result, Severity};
use vmigrate_testkit::mem::{mem_vm, sparse_content, CHANGE_BLOCK};
use vmigrate_testkit::{MemSource, MemTarget};

const MIB: u64 = 1 << 20;

fn plan(vms: &[&str], warm: bool) -> Plan {
    let list: String = vms.iter().map(|v| format!("    - name: {v}\n")).collect();
    Plan::from_yaml_str(&format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata: {{ name: p }}
spec:
  source: {{ url: "mem://" }}
  target: {{ url: "mem://" }}
  targetNamespace: ns
  warm: {warm}
  vms:
{list}  networkMap: [{{ source: {{ name: lan }}, destination: {{ type: pod }} }}]
  storageMap: [{{ source: {{ name: ds }}, destination: {{ storageClass: sc }} }}]
  services: [{{ name: web, selector: {{ app: web }}, ports: [{{ port: 80 }}] }}]
  options: {{ precopyInterval: 100ms, shutdownTimeout: 1s }}
"#
    ))
    .expect("test plan")
}

fn events() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let store = Arc::new(Mutex::new(Vec::new()));
    let s = store.clone();
    (Arc::new(move |e: &Event| s.lock().expect("lock").push(e.clone())), store)
}

#[tokio::test]
async fn cold_migration_copies_powers_off_and_exposes() {
    let c1 = sparse_content(1, 2 * MIB);
    let c2a = sparse_content(2, 3 * MIB);
    let c2b = sparse_content(3, MIB);
    let src = Arc::new(MemSource::new(vec![
        (mem_vm(1, PowerState::PoweredOn, &[2 * MIB]), vec![c1.clone()]),
        (mem_vm(2, PowerState::PoweredOff, &[3 * MIB, MIB]), vec![c2a.clone(), c2b.clone()]),
    ]));
    let tgt = Arc::new(MemTarget::new());
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("status.json");
    let (sink, evs) = events();
    let opts = ExecutorOptions { status_path: Some(status_path.clone()), events: Some(sink), ..Default::default() };
    let exec = Executor::new(plan(&["vm1", "vm2"], false), src.clone(), tgt.clone(), opts);
    let st = exec.run().await.expect("plan runs");
    assert_eq!(st.summary(), "2 of 2 VMs migrated");
    assert_eq!(tgt.volume("vm1-disk2000").expect("volume"), c1);
    assert_eq!(tgt.volume("vm2-disk2000").expect("volume"), c2a);
    assert_eq!(tgt.volume("vm2-disk2001").expect("volume"), c2b);
    assert_eq!(src.power("vm-1"), PowerState::PoweredOff, "cold migration leaves the source off");
    assert_eq!(src.calls(), vec!["power_off vm-1".to_string()], "only vm1 needed a power-off");
    let calls = tgt.calls();
    assert_eq!(calls.iter().filter(|c| c.starts_with("expose")).count(), 1, "{calls:?}");
    assert!(calls.contains(&"create_vm vm2 2".to_string()));
    assert!(st.vms[0].downtime_seconds.is_some() && st.vms[1].downtime_seconds.is_none());
    let saved = PlanStatus::load(&status_path).expect("status saved");
    assert_eq!(saved.summary(), "2 of 2 VMs migrated");
    assert!(saved.completed.is_some());
    let phases: Vec<Phase> = saved.vms[0].history.iter().map(|r| r.phase).collect();
    assert_eq!(
        phases,
        vec![
            Phase::Validate,
            Phase::Initialize,
            Phase::PreHook,
            Phase::PowerOff,
            Phase::AllocateDisks,
            Phase::CopyDisks,
            Phase::ConvertGuest,
            Phase::CreateVm,
            Phase::PostHook,
            Phase::Expose,
            Phase::Completed
        ]
    );
    // The conversion ran once per VM, between the copy and the VM, and the VM was built from it.
    let convert = calls.iter().position(|c| c == "convert vm2 2 root=first static-ips=true").expect("vm2 converted");
    let create = calls.iter().position(|c| c == "create_vm vm2 2").expect("vm2 created");
    assert!(convert < create, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| c.starts_with("convert ")).count(), 2, "{calls:?}");
    let conv = saved.vms[1].conversion.as_ref().expect("conversion kept in the status");
    assert!(conv.converted && conv.disk_bus == Some(vmigrate_core::plan::TargetDiskBus::Scsi));
    let created = tgt.created();
    assert!(
        created.iter().all(|t| t.conversion.as_ref().is_some_and(|c| c.converted)),
        "VMs built from the conversion"
    );
    // Source power state decides the run strategy (targetPowerState auto): vm1 was on, vm2 off.
    let rs = |n: &str| created.iter().find(|t| t.name == n).map(|t| t.run_strategy.clone());
    assert_eq!(rs("vm1").as_deref(), Some("Always"));
    assert_eq!(rs("vm2").as_deref(), Some("Halted"));
    let evs = evs.lock().expect("lock");
    assert!(evs.iter().any(|e| matches!(e, Event::Plan { migrated: 2, total: 2, .. })));
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Disk { vm, progress, .. } if vm == "vm2" && progress.done == progress.total)));
}

#[tokio::test]
async fn failure_cleans_up_and_restores_power_other_vms_go_on() {
    let src = Arc::new(MemSource::new(vec![
        (mem_vm(1, PowerState::PoweredOn, &[MIB]), vec![sparse_content(1, MIB)]),
        (mem_vm(2, PowerState::PoweredOn, &[MIB]), vec![sparse_content(2, MIB)]),
    ]));
    let tgt = {
        let t = MemTarget::new();
        t.fail_create(1);
        Arc::new(t)
    };
    let mut p = plan(&["vm1", "vm2"], false);
    p.spec.options.max_in_flight = 1;
    let exec = Executor::new(p, src.clone(), tgt.clone(), ExecutorOptions::default());
    let st = exec.run().await.expect("plan runs");
    assert_eq!(st.summary(), "1 of 2 VMs migrated");
    let failed = st.vms.iter().find(|v| v.phase == Phase::Failed).expect("one failed");
    let err = failed.error.as_ref().expect("error recorded");
    assert_eq!(err.code, ErrorCode::TargetInvalid as u32);
    let moref = failed.source_id.clone();
    assert_eq!(src.power(&moref), PowerState::PoweredOn, "source powered back on after failure");
    assert!(tgt.calls().contains(&format!("cleanup {}", failed.target_name)));
    assert!(!tgt.volume_names().iter().any(|k| k.starts_with(&failed.target_name)), "target volumes removed");
}

#[tokio::test]
async fn cancel_mid_copy_cleans_up() {
    let src = Arc::new(MemSource::new(vec![(
        mem_vm(1, PowerState::PoweredOn, &[64 * MIB]),
        vec![sparse_content(9, 64 * MIB)],
    )]));
    src.set_slow_reads(true);
    let tgt = Arc::new(MemTarget::new());
    let mut opts = ExecutorOptions::default();
    // Few requests in flight over a slow source: the copy takes seconds, so the cancel lands mid-way.
    opts.copy.connections = 1;
    opts.copy.request_size = 256 << 10;
    opts.copy.max_buffer_bytes = 512 << 10;
    opts.copy.buffer_budget = Some(vmigrate_core::engine::BufferBudget::new(512 << 10));
    let exec = Arc::new(Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts));
    let ctl = exec.controller();
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    ctl.cancel_vm("vm1");
    let st = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("cancel is prompt")
        .expect("join")
        .expect("run");
    assert_eq!(st.vms[0].phase, Phase::Canceled);
    assert_eq!(st.vms[0].error.as_ref().map(|e| e.code), Some(ErrorCode::Cancelled as u32));
    assert_eq!(src.power("vm-1"), PowerState::PoweredOn, "source back as it was");
    assert!(tgt.volume_names().is_empty(), "target has nothing left");
    assert!(tgt.vm_names().is_empty());
}

#[tokio::test]
async fn a_phase_in_progress_reaches_the_status_file() {
    // Records are saved at most every SAVE_DEBOUNCE; the start of a long phase must still be
    // written (by the deferred save) while the phase runs, not only when it ends.
    let src = Arc::new(MemSource::new(vec![(
        mem_vm(1, PowerState::PoweredOff, &[8 * MIB]),
        vec![sparse_content(3, 8 * MIB)],
    )]));
    src.set_slow_reads(true);
    let tgt = Arc::new(MemTarget::new());
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("s.json");
    let mut opts = ExecutorOptions { status_path: Some(status_path.clone()), ..Default::default() };
    opts.copy.connections = 1;
    opts.copy.request_size = 256 << 10;
    opts.copy.buffer_budget = Some(vmigrate_core::engine::BufferBudget::new(512 << 10));
    let exec = Arc::new(Executor::new(plan(&["vm1"], false), src, tgt, opts));
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    let copying =
        |st: &PlanStatus| st.vms[0].history.iter().any(|r| r.phase == Phase::CopyDisks && r.completed.is_none());
    let mut seen = false;
    while !run.is_finished() && !seen {
        tokio::time::sleep(Duration::from_millis(25)).await;
        seen = PlanStatus::load(&status_path).map(|st| copying(&st)).unwrap_or(false);
    }
    assert!(seen, "the status file never showed the copy in progress");
    let st = run.await.expect("join").expect("run");
    assert_eq!(st.vms[0].phase, Phase::Completed);
    let saved = PlanStatus::load(&status_path).expect("final status");
    assert!(saved.vms[0].history.iter().any(|r| r.phase == Phase::CopyDisks && r.completed.is_some()));
}

#[tokio::test]
async fn blocked_plan_changes_nothing() {
    let mut v = mem_vm(1, PowerState::PoweredOn, &[MIB]);
    v.disks[0].rdm = true;
    let src = Arc::new(MemSource::new(vec![(v, vec![sparse_content(1, MIB)])]));
    let tgt = Arc::new(MemTarget::new());
    let exec = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), ExecutorOptions::default());
    let err = exec.run().await.expect_err("blocked");
    assert_eq!(err.code(), ErrorCode::ValidationBlocked);
    assert!(src.calls().is_empty(), "source untouched");
    assert!(tgt.calls().is_empty(), "target untouched");
    assert!(exec.status().vms[0].concerns.iter().any(|c| c.id == "disk.rdm"));
}

#[tokio::test]
async fn resume_skips_completed_phases_and_copies() {
    let c = sparse_content(5, 4 * MIB);
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOff, &[4 * MIB]), vec![c.clone()])]));
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("s.json");
    // First run: the copy completes, then the process "dies" before CreateVm: simulate by a
    // status file that records phases up to CopyDisks as done.
    let tgt = Arc::new(MemTarget::new());
    let opts = ExecutorOptions { status_path: Some(status_path.clone()), ..Default::default() };
    let first = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts.clone());
    first.run().await.expect("first run");
    let mut st = PlanStatus::load(&status_path).expect("status");
    let cut = st.vms[0].history.iter().position(|r| r.phase == Phase::CreateVm).expect("create vm phase");
    st.vms[0].history.truncate(cut);
    st.vms[0].phase = Phase::CopyDisks;
    st.completed = None;
    st.save(&status_path).expect("rewrite");
    // Second run on the same target: nothing is copied again, the VM is created.
    let copies_before = tgt.calls().iter().filter(|c| c.starts_with("prepare")).count();
    let second = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts);
    let st2 = second.run().await.expect("resume");
    assert_eq!(st2.summary(), "1 of 1 VMs migrated");
    assert_eq!(tgt.calls().iter().filter(|c| c.starts_with("prepare")).count(), copies_before, "no re-allocation");
    assert_eq!(st2.vms[0].disks[0].transferred_bytes, st.vms[0].disks[0].transferred_bytes, "no bytes copied again");
    assert_eq!(tgt.calls().iter().filter(|c| c.starts_with("create_vm")).count(), 2);
    assert_eq!(tgt.volume("vm1-disk2000").expect("volume"), c);
    // The conversion completed before the "crash": it is not redone, and its outcome (from the
    // status file) still shapes the VM.
    assert_eq!(tgt.calls().iter().filter(|c| c.starts_with("convert ")).count(), 1, "{:?}", tgt.calls());
    let created = tgt.created();
    assert_eq!(
        created.last().and_then(|t| t.conversion.as_ref()).and_then(|c| c.disk_bus),
        Some(vmigrate_core::plan::TargetDiskBus::Scsi)
    );
}

#[tokio::test]
async fn resume_before_conversion_converts_once() {
    let c = sparse_content(6, 2 * MIB);
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOff, &[2 * MIB]), vec![c.clone()])]));
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("s.json");
    let tgt = Arc::new(MemTarget::new());
    let opts = ExecutorOptions { status_path: Some(status_path.clone()), ..Default::default() };
    Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts.clone()).run().await.expect("first run");
    // The process "died" during the conversion: its phase started but never completed.
    let mut st = PlanStatus::load(&status_path).expect("status");
    let cut = st.vms[0].history.iter().position(|r| r.phase == Phase::ConvertGuest).expect("convert phase");
    st.vms[0].history.truncate(cut + 1);
    st.vms[0].history[cut].completed = None;
    st.vms[0].conversion = None;
    st.vms[0].phase = Phase::ConvertGuest;
    st.completed = None;
    st.save(&status_path).expect("rewrite");
    let st2 = Executor::new(plan(&["vm1"], false), src, tgt.clone(), opts).run().await.expect("resume");
    assert_eq!(st2.summary(), "1 of 1 VMs migrated");
    assert_eq!(tgt.calls().iter().filter(|c| c.starts_with("convert ")).count(), 2, "converted again after the crash");
    assert!(st2.vms[0].conversion.as_ref().is_some_and(|c| c.converted));
}

#[tokio::test]
async fn skip_guest_conversion_copies_as_is_and_says_so() {
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[MIB]), vec![sparse_content(1, MIB)])]));
    let tgt = Arc::new(MemTarget::new());
    let mut p = plan(&["vm1"], false);
    p.spec.skip_guest_conversion = true;
    p.spec.vms[0].target_power_state = Some(vmigrate_core::plan::TargetPowerState::Off);
    let st = Executor::new(p, src, tgt.clone(), ExecutorOptions::default()).run().await.expect("runs");
    assert_eq!(st.summary(), "1 of 1 VMs migrated");
    assert!(!tgt.calls().iter().any(|c| c.starts_with("convert ")), "{:?}", tgt.calls());
    let conv = st.vms[0].conversion.as_ref().expect("recorded");
    assert!(!conv.converted);
    assert!(conv.summary().contains("skipGuestConversion"), "{}", conv.summary());
    assert!(st.vms[0].history.iter().any(|r| r.phase == Phase::ConvertGuest && r.completed.is_some()));
    let created = tgt.created();
    assert_eq!(created[0].run_strategy, "Halted", "targetPowerState off wins over the source's power");
}

#[tokio::test]
async fn failed_conversion_fails_the_vm_and_cleans_up() {
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[MIB]), vec![sparse_content(1, MIB)])]));
    let tgt = {
        let t = MemTarget::new();
        t.fail_convert(1);
        Arc::new(t)
    };
    let mut p = plan(&["vm1"], false);
    p.spec.vms[0].root_disk = Some("/dev/sda2".into());
    p.spec.preserve_static_ips = false;
    let st = Executor::new(p, src.clone(), tgt.clone(), ExecutorOptions::default()).run().await.expect("runs");
    assert_eq!(st.vms[0].phase, Phase::Failed);
    let err = st.vms[0].error.as_ref().expect("error");
    assert_eq!(err.code, ErrorCode::ConversionFailed as u32);
    assert!(tgt.calls().contains(&"convert vm1 1 root=/dev/sda2 static-ips=false".to_string()), "{:?}", tgt.calls());
    assert!(!tgt.calls().iter().any(|c| c.starts_with("create_vm")), "no VM over an unconverted guest");
    assert!(tgt.calls().contains(&"cleanup vm1".to_string()));
    assert_eq!(src.power("vm-1"), PowerState::PoweredOn, "source powered back on");
}

#[tokio::test]
async fn status_of_another_plan_is_refused() {
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOff, &[MIB]), vec![sparse_content(1, MIB)])]));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.json");
    // The status a fresh executor of this plan starts from, made another plan's.
    let mut other =
        Executor::new(plan(&["vm1"], false), src.clone(), Arc::new(MemTarget::new()), ExecutorOptions::default())
            .status();
    other.plan = "other".into();
    other.save(&path).expect("save");
    let opts = ExecutorOptions { status_path: Some(path), ..Default::default() };
    let exec = Executor::new(plan(&["vm1"], false), src, Arc::new(MemTarget::new()), opts);
    assert_eq!(exec.run().await.expect_err("refused").code(), ErrorCode::StatusFile);
}

#[tokio::test]
async fn warm_migration_copies_deltas_and_ends_equal() {
    let size = 8 * MIB;
    let src =
        Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[size]), vec![sparse_content(7, size)])]));
    let tgt = Arc::new(MemTarget::new());
    let (sink, evs) = events();
    let exec = Arc::new(Executor::new(
        plan(&["vm1"], true),
        src.clone(),
        tgt.clone(),
        ExecutorOptions { events: Some(sink), ..Default::default() },
    ));
    let ctl = exec.controller();
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    // Let the initial copy and at least one precopy happen, writing new data in between.
    let disk = src.disk("vm-1", 2000).try_clone().await.expect("clone");
    for round in 0..3u8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let off = (round as u64 + 1) * MIB + 4096;
        disk.write_at(off, bytes::Bytes::from(vec![0xA0 + round; 10_000])).await.expect("guest write");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    ctl.cutover_now();
    let st = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("cutover finishes")
        .expect("join")
        .expect("run");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    assert!(st.vms[0].precopies >= 1, "at least one precopy ran");
    assert_eq!(
        tgt.volume("vm1-disk2000").expect("volume"),
        src.disk("vm-1", 2000).contents(),
        "target equals final source"
    );
    let calls = src.calls();
    let created = calls.iter().filter(|c| c.starts_with("create_snapshot")).count();
    let removed = calls.iter().filter(|c| c.starts_with("remove_snapshot")).count();
    assert_eq!(created, removed, "every snapshot we made is removed: {calls:?}");
    assert!(calls.contains(&"power_off vm-1".to_string()));
    assert!(st.vms[0].downtime_seconds.is_some());
    // Deltas only moved changed blocks: each delta pass copied at most a few 64 KiB blocks.
    let evs = evs.lock().expect("lock");
    for e in evs.iter() {
        if let Event::Disk { pass, progress, .. } = e {
            if pass != "full" {
                assert!(progress.bytes_read <= 4 * CHANGE_BLOCK, "{pass} read {} bytes", progress.bytes_read);
            }
        }
    }
    assert!(evs.iter().any(|e| matches!(e, Event::Disk { pass, .. } if pass == "cutover")));
    // Warm: the guest is converted after the final (cutover) copy, before the VM exists.
    let phases: Vec<Phase> = st.vms[0].history.iter().map(|r| r.phase).collect();
    let cut = phases.iter().position(|p| *p == Phase::Cutover).expect("cutover");
    assert_eq!(&phases[cut + 1..cut + 3], &[Phase::ConvertGuest, Phase::CreateVm], "{phases:?}");
    assert_eq!(tgt.calls().iter().filter(|c| c.starts_with("convert ")).count(), 1);
}

#[tokio::test]
async fn failing_pre_hook_fails_vm_with_output() {
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[MIB]), vec![sparse_content(1, MIB)])]));
    let mut p = plan(&["vm1"], false);
    p.spec.hooks.push(HookSpec {
        name: "drain".into(),
        step: HookStep::Pre,
        command: vec!["sh".into(), "-c".into(), "echo cannot drain $VMIGRATE_VM >&2; exit 3".into()],
        image: None,
        timeout: None,
    });
    let tgt = Arc::new(MemTarget::new());
    let st = Executor::new(p, src.clone(), tgt, ExecutorOptions::default()).run().await.expect("runs");
    let err = st.vms[0].error.as_ref().expect("failed");
    assert_eq!(err.code, ErrorCode::HookFailed as u32);
    assert!(err.message.contains("cannot drain vm1"), "{}", err.message);
    assert!(src.calls().is_empty(), "the pre hook failed before the source was touched");
}

#[tokio::test]
async fn self_importing_target_is_followed_to_the_end() {
    let c = sparse_content(4, 2 * MIB);
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOff, &[2 * MIB]), vec![c.clone()])]));
    let tgt = Arc::new(MemTarget::new().importing_from(src.clone()));
    let (sink, evs) = events();
    let opts =
        ExecutorOptions { events: Some(sink), progress_interval: Duration::from_millis(100), ..Default::default() };
    let st = Executor::new(plan(&["vm1"], false), src, tgt.clone(), opts).run().await.expect("runs");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    assert_eq!(tgt.volume("vm1-disk2000").expect("volume"), c);
    assert!(tgt.calls().contains(&"imported vm1-disk2000".to_string()));
    let evs = evs.lock().expect("lock");
    assert!(
        evs.iter().any(|e| matches!(e, Event::Disk { progress, .. } if progress.done == progress.total / 2)),
        "import progress reported"
    );
    assert!(evs.iter().any(|e| matches!(e, Event::Disk { progress, .. } if progress.done == progress.total)));
}

/// A target that claims incremental passes but fills volumes by itself (a buggy target).
#[derive(Debug)]
struct LyingTarget(MemTarget);

#[async_trait]
impl TargetProvider for LyingTarget {
    fn kind(&self) -> &'static str {
        "lying"
    }
    fn capabilities(&self) -> vmigrate_core::provider::TargetCapabilities {
        vmigrate_core::provider::TargetCapabilities { incremental: true }
    }
    async fn existing_vms(&self, ns: &str) -> Result<Vec<ExistingVm>> {
        self.0.existing_vms(ns).await
    }
    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume> {
        self.0.prepare_volume(vm, disk).await
    }
    async fn open_volume(&self, vm: &TargetVm, v: &PreparedVolume) -> Result<VolumeSink> {
        self.0.open_volume(vm, v).await
    }
    async fn finish_volume(&self, vm: &TargetVm, v: &PreparedVolume) -> Result<()> {
        self.0.finish_volume(vm, v).await
    }
    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()> {
        self.0.create_vm(vm, volumes).await
    }
    async fn expose(&self, plan: &str, ns: &str, services: &[vmigrate_core::plan::ServiceSpec]) -> Result<()> {
        self.0.expose(plan, ns, services).await
    }
    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        self.0.cleanup(vm).await
    }
}

#[tokio::test]
async fn warm_plan_into_a_target_without_incremental_passes_is_blocked_before_the_source_is_touched() {
    let size = 2 * MIB;
    let src =
        Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[size]), vec![sparse_content(3, size)])]));
    let tgt = Arc::new(MemTarget::new().importing_from(src.clone()));
    let exec = Executor::new(plan(&["vm1"], true), src.clone(), tgt.clone(), ExecutorOptions::default());
    let err = exec.run().await.expect_err("blocked");
    assert_eq!(err.code(), ErrorCode::ValidationBlocked);
    let st = exec.status();
    let c = st.vms[0].concerns.iter().find(|c| c.id == WARM_TRANSFER_UNSUPPORTED).expect("concern");
    assert_eq!(c.severity, Severity::Critical);
    assert!(c.message.contains("memory target"), "{}", c.message);
    assert!(src.calls().is_empty(), "nothing done at the source: {:?}", src.calls());
    assert!(tgt.calls().is_empty(), "nothing created at the target: {:?}", tgt.calls());
}

#[tokio::test]
async fn a_delta_pass_into_a_self_importing_volume_fails_instead_of_dropping_changes() {
    let size = 2 * MIB;
    let src =
        Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[size]), vec![sparse_content(5, size)])]));
    let inner = MemTarget::new().importing_from(src.clone());
    let tgt = Arc::new(LyingTarget(inner));
    let exec = Executor::new(
        plan(&["vm1"], true),
        src.clone(),
        tgt.clone(),
        ExecutorOptions { cutover_now: true, ..Default::default() },
    );
    let st = tokio::time::timeout(Duration::from_secs(20), exec.run()).await.expect("ends").expect("runs");
    let vs = &st.vms[0];
    assert_eq!(vs.phase, Phase::Failed, "a dropped delta must never complete");
    let err = vs.error.as_ref().expect("cause");
    assert_eq!(err.code, ErrorCode::Unsupported as u32);
    assert!(err.message.contains("refusing to drop"), "{}", err.message);
    assert!(tgt.0.vm_names().is_empty(), "no target VM over a stale copy");
    // Cleanup undid the source changes: every snapshot removed, power restored.
    let calls = src.calls();
    let created = calls.iter().filter(|c| c.starts_with("create_snapshot")).count();
    let removed = calls.iter().filter(|c| c.starts_with("remove_snapshot")).count();
    assert_eq!(created, removed, "{calls:?}");
}

#[tokio::test]
async fn warm_never_holds_two_snapshots_and_each_pass_starts_from_a_fresh_one() {
    let size = 4 * MIB;
    let src =
        Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[size]), vec![sparse_content(9, size)])]));
    let tgt = Arc::new(MemTarget::new());
    let exec = Arc::new(Executor::new(plan(&["vm1"], true), src.clone(), tgt.clone(), ExecutorOptions::default()));
    let ctl = exec.controller();
    let e2 = exec.clone();
    let run = tokio::spawn(async move { e2.run().await });
    let disk = src.disk("vm-1", 2000).try_clone().await.expect("clone");
    for round in 0..3u8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        disk.write_at(u64::from(round) * MIB + 77, bytes::Bytes::from(vec![0x10 + round; 5000])).await.expect("write");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    ctl.cutover_now();
    let st = tokio::time::timeout(Duration::from_secs(20), run).await.expect("ends").expect("join").expect("run");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    assert!(st.vms[0].precopies >= 1);
    assert_eq!(tgt.volume("vm1-disk2000").expect("volume"), src.disk("vm-1", 2000).contents());
    // Forklift's order: the previous snapshot is removed (consolidated) before the next is taken.
    let mut live = 0i32;
    for c in src.calls() {
        if c.starts_with("create_snapshot") {
            live += 1;
            assert_eq!(live, 1, "a snapshot was created while another of ours existed: {:?}", src.calls());
        } else if c.starts_with("remove_snapshot") {
            live -= 1;
        }
    }
    assert_eq!(live, 0, "every snapshot removed");
    assert!(st.vms[0].source_changes.snapshots.is_empty());
}

#[tokio::test]
async fn warm_snapshots_are_quiesced_while_tools_run_and_fall_back_to_crash_consistent() {
    for fails in [false, true] {
        let size = 2 * MIB;
        let src =
            Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[size]), vec![sparse_content(2, size)])]));
        src.set_quiesce_fails(fails);
        let tgt = Arc::new(MemTarget::new());
        let opts = ExecutorOptions { cutover_now: true, ..Default::default() };
        let st = Executor::new(plan(&["vm1"], true), src.clone(), tgt.clone(), opts).run().await.expect("runs");
        assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
        assert_eq!(tgt.volume("vm1-disk2000").expect("volume"), src.disk("vm-1", 2000).contents());
        let calls = src.calls();
        // The first snapshot (VM running, Tools running) asks for quiescing; the cutover one, of
        // a VM already off, does not.
        assert!(calls.contains(&"quiesce=true vmigrate-p-0".to_string()), "{calls:?}");
        assert!(!calls.iter().any(|c| c == "quiesce=true vmigrate-p-1"), "{calls:?}");
        let created = calls.iter().filter(|c| c.starts_with("create_snapshot")).count();
        assert_eq!(created, 2, "one snapshot per pass, quiesced or not: {calls:?}");
    }
}

/// A target that runs every pass itself (like the transfer Job), copying from the in-memory
/// source's snapshots; `lie` makes its report wrong in one way.
#[derive(Debug)]
struct PassTarget {
    inner: MemTarget,
    src: Arc<MemSource>,
    lie: Option<&'static str>,
    passes: Mutex<Vec<vmigrate_core::provider::TargetPass>>,
}

#[async_trait]
impl TargetProvider for PassTarget {
    fn kind(&self) -> &'static str {
        "passes"
    }
    fn capabilities(&self) -> vmigrate_core::provider::TargetCapabilities {
        vmigrate_core::provider::TargetCapabilities { incremental: true }
    }
    async fn existing_vms(&self, ns: &str) -> Result<Vec<ExistingVm>> {
        self.inner.existing_vms(ns).await
    }
    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume> {
        self.inner.prepare_volume(vm, disk).await
    }
    async fn open_volume(&self, _vm: &TargetVm, _v: &PreparedVolume) -> Result<VolumeSink> {
        Ok(VolumeSink::Passes)
    }
    async fn run_pass(
        &self,
        vm: &TargetVm,
        v: &PreparedVolume,
        pass: &vmigrate_core::provider::TargetPass,
    ) -> Result<vmigrate_core::provider::PassReport> {
        self.passes.lock().expect("lock").push(pass.clone());
        let disk = vm.source.disks.iter().find(|d| d.key == v.disk_key).expect("disk");
        let content = match &pass.snapshot {
            Some(s) => self.src.snapshot_content(&s.id, disk.key).expect("snapshot content"),
            None => self.src.disk(&vm.source.id.source_ref, disk.key).contents(),
        };
        let changed_bytes = match (&pass.snapshot, &pass.changed_since) {
            (Some(s), Some(since)) => {
                let areas = self.src.changed_areas(&vm.source.id, disk, s, since, 0).await?;
                areas.extents.iter().map(|e| e.length).sum()
            }
            _ => content.len() as u64,
        };
        let vol = self.inner.volume_transport(&v.name).expect("volume");
        vol.write_at(0, bytes::Bytes::from(content.clone())).await?;
        let mut report = vmigrate_core::provider::PassReport {
            pass: pass.name.clone(),
            snapshot: pass.snapshot.as_ref().map(|s| s.id.clone()),
            changed_since: pass.changed_since.clone(),
            size: content.len() as u64,
            changed_bytes,
            bytes_read: changed_bytes,
            bytes_written: changed_bytes,
            ..Default::default()
        };
        match self.lie {
            Some("snapshot") => report.snapshot = Some("snap-from-an-earlier-attempt".into()),
            Some("bytes") => report.changed_bytes += CHANGE_BLOCK,
            Some("pass") => report.pass = "precopy-99".into(),
            _ => {}
        }
        Ok(report)
    }
    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()> {
        self.inner.create_vm(vm, volumes).await
    }
    async fn convert_guest(
        &self,
        vm: &TargetVm,
        volumes: &[PreparedVolume],
        req: &ConversionRequest,
    ) -> Result<GuestConversion> {
        self.inner.convert_guest(vm, volumes, req).await
    }
    async fn expose(&self, plan: &str, ns: &str, services: &[vmigrate_core::plan::ServiceSpec]) -> Result<()> {
        self.inner.expose(plan, ns, services).await
    }
    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        self.inner.cleanup(vm).await
    }
}

#[tokio::test]
async fn passes_run_by_the_target_are_taken_only_from_a_matching_report() {
    for lie in [None, Some("snapshot"), Some("bytes"), Some("pass")] {
        let size = 2 * MIB;
        let src =
            Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOn, &[size]), vec![sparse_content(6, size)])]));
        let tgt = Arc::new(PassTarget { inner: MemTarget::new(), src: src.clone(), lie, passes: Mutex::default() });
        let exec = Arc::new(Executor::new(plan(&["vm1"], true), src.clone(), tgt.clone(), ExecutorOptions::default()));
        let ctl = exec.controller();
        let e2 = exec.clone();
        let run = tokio::spawn(async move { e2.run().await });
        // A guest write after the full pass, so the delta passes have something to carry.
        let disk = src.disk("vm-1", 2000).try_clone().await.expect("clone");
        tokio::time::sleep(Duration::from_millis(120)).await;
        disk.write_at(MIB + 5, bytes::Bytes::from(vec![0x99; 3000])).await.expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        ctl.cutover_now();
        let st = tokio::time::timeout(Duration::from_secs(20), run).await.expect("ends").expect("join").expect("run");
        let vs = &st.vms[0];
        let passes = tgt.passes.lock().expect("lock").clone();
        assert_eq!(passes[0].name, "full");
        assert!(passes[0].snapshot.is_some() && passes[0].changed_since.is_none());
        match lie {
            None => {
                assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
                assert_eq!(tgt.inner.volume("vm1-disk2000").expect("volume"), src.disk("vm-1", 2000).contents());
                // The write went by a delta pass; a pass with no changed area runs nothing.
                assert!(passes[1..].iter().all(|p| p.changed_since.is_some() && p.snapshot.is_some()), "{passes:?}");
                assert!(passes.len() >= 2, "{passes:?}");
                // The target read the disk itself: the executor never opened it.
                assert_eq!(src.opens(), 0, "the executor opened the source disk");
            }
            Some(how) => {
                assert_eq!(vs.phase, Phase::Failed, "{how}: a report that does not match must fail the VM");
                assert!(tgt.inner.vm_names().is_empty(), "{how}: no VM over a doubtful copy");
            }
        }
    }
}

/// Issue 14 item 6: what a resumed copy phase finds in the status is bound to the source it was
/// made from. A disk marked done and a disk with a checkpoint, both recorded for another source
/// identity (the source changed between the runs), are copied again from the start; the
/// target equals the source as it is now, never stale units kept beside new ones.
#[tokio::test]
async fn a_resume_recopies_disks_recorded_for_another_source_identity() {
    let (c0, c1) = (sparse_content(4, 2 * MIB), sparse_content(5, MIB));
    let src = Arc::new(MemSource::new(vec![(
        mem_vm(1, PowerState::PoweredOff, &[2 * MIB, MIB]),
        vec![c0.clone(), c1.clone()],
    )]));
    let tgt = Arc::new(MemTarget::new());
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("status.json");
    let opts = || ExecutorOptions { status_path: Some(status_path.clone()), ..Default::default() };
    let st = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts()).run().await.expect("first run");
    assert_eq!(st.summary(), "1 of 1 VMs migrated");
    let recorded = st.vms[0].disks[0].copied_from.clone().expect("a done disk records its source");
    assert!(recorded.as_str().contains("disk=[ds] vm1/disk0.vmdk"), "{recorded}");

    // Rewind the status to the middle of CopyDisks, as a kill there leaves it, but with both
    // records made from another source state; the volumes hold that state's bytes.
    // A real engine checkpoint of this disk's copy, every unit done.
    let all_done = {
        let seen = Arc::new(Mutex::new(None));
        let keep = seen.clone();
        let ctl = CopyControl {
            progress: engine::Progress::default(),
            cancel: tokio_util::sync::CancellationToken::new(),
            on_checkpoint: Some(Arc::new(move |cp: &Checkpoint| *keep.lock().expect("lock") = Some(cp.clone()))),
        };
        let (from, to) = (MemoryTransport::from_bytes(c1.clone()), MemoryTransport::new(MIB));
        engine::copy(&from, &to, &CopyOptions::default(), &ctl).await.expect("copy");
        let cp = seen.lock().expect("lock").clone().expect("final checkpoint");
        assert!(cp.done_units() > 0);
        cp
    };
    let mut saved = PlanStatus::load(&status_path).expect("status");
    let stale = SourceIdentity::of_parts(["disk=[ds] vm1/disk0.vmdk".to_string(), "changeId=52 aa".to_string()]);
    {
        let vs = &mut saved.vms[0];
        vs.phase = Phase::CopyDisks;
        let at = vs.history.iter().position(|r| r.phase == Phase::CopyDisks).expect("copy record");
        vs.history.truncate(at);
        vs.disks[0].copied_from = Some(stale.clone());
        vs.disks[1].done = false;
        vs.disks[1].checkpoint = Some(DiskCheckpoint { copy: all_done.clone(), source: stale });
    }
    saved.completed = None;
    saved.save(&status_path).expect("rewound status");
    for (name, size) in [("vm1-disk2000", 2 * MIB), ("vm1-disk2001", MIB)] {
        // As a reopened volume is: written before, so not known to read as zeroes.
        tgt.put_volume(name, MemoryTransport::from_bytes(vec![0xEE; size as usize]));
    }
    let st = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts()).run().await.expect("resumed run");
    assert_eq!(st.summary(), "1 of 1 VMs migrated", "{:?}", st.vms[0].error);
    assert!(
        tgt.volume("vm1-disk2000").expect("volume") == c0,
        "the done disk of another source state was copied again"
    );
    assert!(
        tgt.volume("vm1-disk2001").expect("volume") == c1,
        "the checkpoint of another source state was not resumed"
    );
}

/// Issue 15: the plan's `options.verify` is applied by the executor itself, so a program that
/// builds an `Executor` with default options (the README's example) verifies when the plan says
/// so: a target that damages the bytes fails the VM with `VerifyMismatch`. Without `verify` the
/// same damage goes unnoticed, which is what the option is for.
#[tokio::test]
async fn the_plans_verify_option_is_applied_by_the_executor() {
    for verify in [false, true] {
        let src =
            Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOff, &[MIB]), vec![sparse_content(6, MIB)])]));
        let tgt = Arc::new(MemTarget::new().corrupting());
        let mut p = plan(&["vm1"], false);
        p.spec.options.verify = verify;
        let st = Executor::new(p, src, tgt, ExecutorOptions::default()).run().await.expect("plan runs");
        let vs = &st.vms[0];
        if verify {
            assert_eq!(vs.phase, Phase::Failed);
            let e = vs.error.as_ref().expect("error recorded");
            assert_eq!(e.code, ErrorCode::VerifyMismatch as u32, "{e:?}");
        } else {
            assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
        }
    }
}
