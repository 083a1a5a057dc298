//! The conformance suites against the reference providers and the local file transport, and
//! against deliberately broken implementations (a suite that cannot fail proves nothing).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vmigrate_core::file::{FileOptions, FileTransport};
use vmigrate_core::memory::MemoryTransport;
use vmigrate_core::model::PowerState;
use vmigrate_core::{BlockTransport, Extent, ExtentKind, Result, SourceProvider, TargetProvider};
use vmigrate_testkit::conformance::{self, target_vm};
use vmigrate_testkit::mem::{mem_vm, sparse_content};
use vmigrate_testkit::peers::pattern;
use vmigrate_testkit::{MemSource, MemTarget};

const MIB: u64 = 1 << 20;

fn source() -> Arc<MemSource> {
    Arc::new(MemSource::new(vec![
        (mem_vm(1, PowerState::PoweredOn, &[2 * MIB, MIB]), vec![sparse_content(1, 2 * MIB), sparse_content(2, MIB)]),
        (mem_vm(2, PowerState::PoweredOff, &[MIB]), vec![pattern(3, MIB as usize)]),
    ]))
}

#[tokio::test]
async fn memory_transport_conforms() {
    let content = sparse_content(7, 3 * MIB);
    let t = MemoryTransport::from_bytes(content.clone());
    t.punch(MIB, MIB);
    let mut expected = content;
    expected[MIB as usize..2 * MIB as usize].fill(0);
    let open = || {
        let t = t.clone();
        async move { Ok(Box::new(t) as Box<dyn BlockTransport>) }
    };
    conformance::readable_transport(open, Some(&expected)).await.expect("readable");
    conformance::writable_transport(|size| async move {
        Ok(Box::new(MemoryTransport::new(size)) as Box<dyn BlockTransport>)
    })
    .await
    .expect("writable");
}

#[tokio::test]
async fn file_transport_conforms() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src.raw");
    let content = pattern(11, (2 * MIB + 12_345) as usize);
    std::fs::write(&src, &content).expect("write");
    let open = || {
        let p = src.clone();
        async move { Ok(Box::new(FileTransport::open(p, FileOptions::default()).await?) as Box<dyn BlockTransport>) }
    };
    conformance::readable_transport(open, Some(&content)).await.expect("readable");
    let n = std::sync::atomic::AtomicUsize::new(0);
    let create = |size| {
        let p = dir.path().join(format!("out{}.raw", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        async move { Ok(Box::new(FileTransport::open_output(p, Some(size)).await?) as Box<dyn BlockTransport>) }
    };
    conformance::writable_transport(create).await.expect("writable");
}

#[tokio::test]
async fn memory_source_conforms() {
    let src = source();
    conformance::source_provider(|| {
        let s = src.clone();
        async move { Ok(Box::new(ArcSource(s)) as Box<dyn SourceProvider>) }
    })
    .await
    .expect("source");
}

#[tokio::test]
async fn memory_target_conforms_in_both_modes() {
    let vm = target_vm(mem_vm(1, PowerState::PoweredOff, &[2 * MIB, MIB]));
    let t = Arc::new(MemTarget::new());
    conformance::target_provider(
        || {
            let t = t.clone();
            async move { Ok(Box::new(ArcTarget(t)) as Box<dyn TargetProvider>) }
        },
        vm.clone(),
    )
    .await
    .expect("target");
    assert!(t.volume_names().is_empty(), "cleanup left {:?}", t.volume_names());
    let importing = Arc::new(MemTarget::new().importing_from(source()));
    conformance::target_provider(
        || {
            let t = importing.clone();
            async move { Ok(Box::new(ArcTarget(t)) as Box<dyn TargetProvider>) }
        },
        vm,
    )
    .await
    .expect("self-importing target");
}

/// Shares one provider between the suite's "fresh connections".
#[derive(Debug)]
struct ArcSource(Arc<MemSource>);
#[derive(Debug)]
struct ArcTarget(Arc<MemTarget>);

macro_rules! delegate_source {
    ($($m:ident($($a:ident: $t:ty),*) -> $r:ty;)*) => {
        #[async_trait]
        impl SourceProvider for ArcSource {
            fn kind(&self) -> &'static str { self.0.kind() }
            fn capabilities(&self) -> vmigrate_core::SourceCapabilities { self.0.capabilities() }
            $(async fn $m(&self, $($a: $t),*) -> $r { self.0.$m($($a),*).await })*
        }
    };
}
delegate_source! {
    inventory() -> Result<vmigrate_core::Inventory>;
    vm(id: &vmigrate_core::VmId) -> Result<vmigrate_core::Vm>;
    power_on(vm: &vmigrate_core::VmId) -> Result<()>;
    create_snapshot(vm: &vmigrate_core::VmId, name: &str) -> Result<vmigrate_core::SnapshotRef>;
    changed_areas(vm: &vmigrate_core::VmId, disk: &vmigrate_core::Disk, s: &vmigrate_core::SnapshotRef, c: &str, o: u64) -> Result<vmigrate_core::ChangedAreas>;
    open_disk(vm: &vmigrate_core::VmId, disk: &vmigrate_core::Disk, s: Option<&vmigrate_core::SnapshotRef>) -> Result<Box<dyn BlockTransport>>;
}

#[async_trait]
impl TargetProvider for ArcTarget {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn capabilities(&self) -> vmigrate_core::TargetCapabilities {
        self.0.capabilities()
    }
    async fn existing_vms(&self, ns: &str) -> Result<Vec<vmigrate_core::ExistingVm>> {
        self.0.existing_vms(ns).await
    }
    async fn prepare_volume(
        &self,
        vm: &vmigrate_core::TargetVm,
        d: &vmigrate_core::Disk,
    ) -> Result<vmigrate_core::PreparedVolume> {
        self.0.prepare_volume(vm, d).await
    }
    async fn open_volume(
        &self,
        vm: &vmigrate_core::TargetVm,
        v: &vmigrate_core::PreparedVolume,
    ) -> Result<vmigrate_core::VolumeSink> {
        self.0.open_volume(vm, v).await
    }
    async fn finish_volume(&self, vm: &vmigrate_core::TargetVm, v: &vmigrate_core::PreparedVolume) -> Result<()> {
        self.0.finish_volume(vm, v).await
    }
    async fn create_vm(&self, vm: &vmigrate_core::TargetVm, v: &[vmigrate_core::PreparedVolume]) -> Result<()> {
        self.0.create_vm(vm, v).await
    }
    async fn expose(&self, p: &str, ns: &str, s: &[vmigrate_core::plan::ServiceSpec]) -> Result<()> {
        self.0.expose(p, ns, s).await
    }
    async fn cleanup(&self, vm: &vmigrate_core::TargetVm) -> Result<()> {
        self.0.cleanup(vm).await
    }
}

/// A transport with one bug, to show the suite catches it.
#[derive(Debug, Clone)]
struct Broken {
    inner: MemoryTransport,
    bug: Bug,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bug {
    ShortRead,
    GapInExtents,
    HoleOverData,
    LostWrite,
}

#[async_trait]
impl BlockTransport for Broken {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let b = self.inner.read_at(offset, len).await?;
        Ok(if self.bug == Bug::ShortRead && len > 4096 { b.slice(..len - 1) } else { b })
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        if self.bug == Bug::LostWrite && offset == 65_536 {
            return Ok(());
        }
        self.inner.write_at(offset, data).await
    }
    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        match self.bug {
            Bug::GapInExtents => Ok(vec![Extent::data(offset + 1, len - 1)]),
            Bug::HoleOverData => Ok(vec![Extent::hole(offset, len)]),
            _ => self.inner.extents(offset, len, kind).await,
        }
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_transport_suites_catch_broken_transports() {
    let content = pattern(5, MIB as usize);
    for bug in [Bug::ShortRead, Bug::GapInExtents, Bug::HoleOverData] {
        let t = Broken { inner: MemoryTransport::from_bytes(content.clone()), bug };
        let open = || {
            let t = t.clone();
            async move { Ok(Box::new(t) as Box<dyn BlockTransport>) }
        };
        let e = conformance::readable_transport(open, Some(&content)).await.expect_err("a broken transport passed");
        eprintln!("{bug:?}: {e}");
    }
    let e = conformance::writable_transport(|size| async move {
        Ok(Box::new(Broken { inner: MemoryTransport::new(size), bug: Bug::LostWrite }) as Box<dyn BlockTransport>)
    })
    .await
    .expect_err("a transport that drops a write passed");
    assert!(e.contains("after flush"), "{e}");
}

/// A target whose prepare_volume is not idempotent and whose volumes are too small.
#[derive(Debug, Default)]
struct SloppyTarget(std::sync::atomic::AtomicU64);

#[async_trait]
impl TargetProvider for SloppyTarget {
    fn kind(&self) -> &'static str {
        "sloppy"
    }
    async fn existing_vms(&self, _ns: &str) -> Result<Vec<vmigrate_core::ExistingVm>> {
        Ok(vec![])
    }
    async fn prepare_volume(
        &self,
        _vm: &vmigrate_core::TargetVm,
        d: &vmigrate_core::Disk,
    ) -> Result<vmigrate_core::PreparedVolume> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(vmigrate_core::PreparedVolume { disk_key: d.key, name: format!("vol-{n}"), size: d.capacity_bytes as u64 })
    }
    async fn open_volume(
        &self,
        _vm: &vmigrate_core::TargetVm,
        _v: &vmigrate_core::PreparedVolume,
    ) -> Result<vmigrate_core::VolumeSink> {
        Ok(vmigrate_core::VolumeSink::SelfImport)
    }
    async fn create_vm(&self, _vm: &vmigrate_core::TargetVm, _v: &[vmigrate_core::PreparedVolume]) -> Result<()> {
        Ok(())
    }
    async fn expose(&self, _p: &str, _ns: &str, _s: &[vmigrate_core::plan::ServiceSpec]) -> Result<()> {
        Ok(())
    }
    async fn cleanup(&self, _vm: &vmigrate_core::TargetVm) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_provider_suites_catch_broken_providers() {
    let vm = target_vm(mem_vm(1, PowerState::PoweredOff, &[MIB]));
    let e =
        conformance::target_provider(|| async { Ok(Box::new(SloppyTarget::default()) as Box<dyn TargetProvider>) }, vm)
            .await
            .expect_err("a non-idempotent target passed");
    assert!(e.contains("idempotent"), "{e}");
    // A source whose disk reads more bytes than its capacity says.
    let mut v = mem_vm(3, PowerState::PoweredOff, &[MIB]);
    let big = MemSource::new(vec![(v.clone(), vec![pattern(1, 2 * MIB as usize)])]);
    let big = Arc::new(big);
    let e = conformance::source_provider(|| {
        let s = big.clone();
        async move { Ok(Box::new(ArcSource(s)) as Box<dyn SourceProvider>) }
    })
    .await
    .expect_err("a disk larger than its capacity passed");
    assert!(e.contains("more than its capacity"), "{e}");
    // Two VMs with one id.
    v.disks.clear();
    let twins = Arc::new(MemSource::new(vec![(v.clone(), vec![]), (v, vec![])]));
    let e = conformance::source_provider(|| {
        let s = twins.clone();
        async move { Ok(Box::new(ArcSource(s)) as Box<dyn SourceProvider>) }
    })
    .await
    .expect_err("duplicate ids passed");
    assert!(e.contains("share the id"), "{e}");
}
