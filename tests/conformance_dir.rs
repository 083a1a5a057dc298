//! The `dir://` output folder passes the target conformance suite, and its output disks the
//! writable-transport suite: the same contract the memory target and any new target meet.

use vmigrate::core::model::PowerState;
use vmigrate::core::{BlockTransport, TargetProvider, VolumeSink};
use vmigrate::kubevirt::DirTarget;
use vmigrate_testkit::conformance::{self, target_vm};
use vmigrate_testkit::mem::mem_vm;

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn the_output_folder_target_conforms() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("out");
    let vm = target_vm(mem_vm(1, PowerState::PoweredOff, &[2 * MIB, MIB]));
    conformance::target_provider(
        || {
            let r = root.clone();
            async move { Ok(Box::new(DirTarget::open(r)?) as Box<dyn TargetProvider>) }
        },
        vm,
    )
    .await
    .expect("dir target");
    let left: Vec<_> =
        std::fs::read_dir(root.join("disks")).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "cleanup left {left:?}");
}

#[tokio::test]
async fn its_volumes_are_conforming_writable_transports() {
    let dir = tempfile::tempdir().expect("tmp");
    let target = DirTarget::open(dir.path().join("out")).expect("target");
    let n = std::sync::atomic::AtomicU32::new(0);
    conformance::writable_transport(|size| {
        let vm = target_vm(mem_vm(
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 10,
            PowerState::PoweredOff,
            &[size],
        ));
        let t = &target;
        async move {
            let v = t.prepare_volume(&vm, &vm.source.disks[0]).await?;
            match t.open_volume(&vm, &v).await? {
                VolumeSink::Transport(w) => Ok(w as Box<dyn BlockTransport>),
                other => panic!("the output folder writes through a transport, not {other:?}"),
            }
        }
    })
    .await
    .expect("dir volume");
}
