//! The facade's migration session (`vmigrate::session::Migration`), which the CLI, C and Python
//! all run plans through: events reach the caller's closure, a second concurrent run is refused,
//! and a cancel ends in `Cancelled` with the cleaned-up status still readable. Run against the
//! test kit's reference providers, so the outcomes (volume bytes, phases) are real.

use std::sync::Arc;

use vmigrate::core::executor::Event;
use vmigrate::core::model::PowerState;
use vmigrate::core::{ErrorCode, Phase, Plan};
use vmigrate::session::{Migration, MigrationOptions};
use vmigrate_testkit::mem::{mem_vm, sparse_content};
use vmigrate_testkit::{MemSource, MemTarget};

const MIB: u64 = 1 << 20;

fn plan() -> Plan {
    Plan::from_yaml_str(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata: { name: session }
spec:
  source: { url: "mem://" }
  target: { url: "mem://" }
  targetNamespace: ns
  vms: [{ name: vm1 }]
  networkMap: [{ source: { name: lan }, destination: { type: pod } }]
  storageMap: [{ source: { name: ds }, destination: { storageClass: sc } }]
"#,
    )
    .expect("test plan")
}

fn providers(size: u64) -> (Arc<MemSource>, Arc<MemTarget>, Vec<u8>) {
    let content = sparse_content(7, size);
    let src = Arc::new(MemSource::new(vec![(mem_vm(1, PowerState::PoweredOff, &[size]), vec![content.clone()])]));
    (src, Arc::new(MemTarget::new()), content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_hands_every_event_to_the_caller_and_leaves_the_status_readable() {
    let (src, tgt, content) = providers(4 * MIB);
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("status.json");
    let opts = MigrationOptions::default().status_path(&status_path);
    let m = Migration::with_providers(plan(), src, tgt.clone(), opts);
    let mut events = Vec::new();
    let status = m.run(|e| events.push(e.clone())).await.expect("runs");
    assert_eq!(status.summary(), "1 of 1 VMs migrated");
    assert_eq!(tgt.volume("vm1-disk2000").expect("volume"), content, "the disk arrived byte for byte");
    assert!(events.iter().any(|e| matches!(e, Event::Phase { phase: Phase::CopyDisks, .. })), "{events:?}");
    assert!(
        matches!(events.last(), Some(Event::Plan { migrated: 1, .. }) | Some(Event::VmDone { .. })),
        "the run's last events arrive before run returns: {events:?}"
    );
    assert_eq!(m.status(), status);
    assert_eq!(vmigrate::core::PlanStatus::load(&status_path).expect("saved").summary(), status.summary());
    m.close().await.expect("close");
    m.close().await.expect("a second close is harmless");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_while_one_runs_is_refused_and_cancel_ends_in_cancelled() {
    // Large and slow enough that the copy spans several progress ticks (250 ms).
    let (src, tgt, _) = providers(256 * MIB);
    src.set_slow_reads(true);
    let m = Migration::with_providers(plan(), src, tgt.clone(), MigrationOptions::default());
    let ctl = m.controller();
    let started = tokio::sync::Notify::new();
    let refused = std::sync::atomic::AtomicBool::new(false);
    let first = m.run(|e| {
        started.notify_one();
        // Cancel from inside the callback, as C and Python callers may: once the second run was
        // refused, at the copy's start or at one of its progress events (never after the copy,
        // when there would be nothing left to cancel).
        if refused.load(std::sync::atomic::Ordering::SeqCst)
            && matches!(e, Event::Phase { phase: Phase::CopyDisks, .. } | Event::Disk { .. })
        {
            ctl.cancel();
        }
    });
    let second = async {
        started.notified().await;
        let r = m.run(|_| {}).await;
        refused.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(second.expect_err("refused").code(), ErrorCode::Unsupported);
    assert_eq!(first.expect_err("cancelled").code(), ErrorCode::Cancelled);
    let st = m.status();
    assert_eq!(st.vms[0].phase, Phase::Canceled, "{}", st.summary());
    assert!(tgt.volume_names().is_empty(), "the half-copied volume was removed: {:?}", tgt.volume_names());
    // After a run ends, the session can be asked again (the resume path of the bindings).
    let again = m.run(|_| {}).await;
    assert!(!matches!(again, Err(ref e) if e.code() == ErrorCode::Unsupported), "{again:?}");
}
