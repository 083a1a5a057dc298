//! Executor tests over in-memory providers: real trait implementations backed by
//! [`MemoryTransport`], recording what the executor asked of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::convert::{ConversionRequest, GuestConversion};
use crate::engine::{Checkpoint, CopyControl};
use crate::memory::MemoryTransport;
use crate::model::{Datastore, Disk, Inventory, Network, Nic, ToolsStatus, VmId};
use crate::plan::{HookSpec, HookStep};
use crate::provider::{ChangedAreas, ExistingVm, PreparedVolume, SnapshotRef, SourceCapabilities, VolumeSink};
use crate::status::DiskCheckpoint;
use crate::transport::{BlockTransport, Extent, SourceIdentity};

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 64 << 10;

#[derive(Debug, Default)]
struct MemSource {
    vms: Mutex<Vec<Vm>>,
    disks: HashMap<(String, i32), MemoryTransport>,
    /// snapshot id -> disk key -> content
    snaps: Mutex<HashMap<String, HashMap<i32, Vec<u8>>>>,
    calls: Mutex<Vec<String>>,
    next_snap: AtomicUsize,
    slow_reads: AtomicBool,
    /// Quiesced snapshots fail (a guest freeze script error).
    quiesce_fails: AtomicBool,
    /// Disks opened for reading.
    opens: AtomicUsize,
}

impl MemSource {
    fn new(vms: Vec<(Vm, Vec<Vec<u8>>)>) -> Self {
        let mut disks = HashMap::new();
        let mut list = Vec::new();
        for (vm, contents) in vms {
            for (d, c) in vm.disks.iter().zip(contents) {
                disks.insert((vm.id.source_ref.clone(), d.key), MemoryTransport::from_bytes(c));
            }
            list.push(vm);
        }
        MemSource { vms: Mutex::new(list), disks, ..Default::default() }
    }
    fn call(&self, s: String) {
        self.calls.lock().expect("lock").push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
    fn disk(&self, source_ref: &str, key: i32) -> &MemoryTransport {
        &self.disks[&(source_ref.to_string(), key)]
    }
    fn power(&self, source_ref: &str) -> PowerState {
        self.vms.lock().expect("lock").iter().find(|v| v.id.source_ref == source_ref).expect("vm").power_state
    }
}

/// A transport wrapper that sleeps on every read, so tests can cancel mid-copy.
#[derive(Debug)]
struct Slow(Box<dyn BlockTransport>);

#[async_trait]
impl BlockTransport for Slow {
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(Slow(self.0.try_clone().await?)))
    }
    async fn read_at(&self, offset: u64, len: usize) -> Result<bytes::Bytes> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.0.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: bytes::Bytes) -> Result<()> {
        self.0.write_at(offset, data).await
    }
    async fn extents(&self, offset: u64, len: u64, kind: crate::ExtentKind) -> Result<Vec<Extent>> {
        self.0.extents(offset, len, kind).await
    }
    async fn flush(&self) -> Result<()> {
        self.0.flush().await
    }
}

#[async_trait]
impl SourceProvider for MemSource {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities { power: true, snapshots: true, changed_blocks: true }
    }
    async fn inventory(&self) -> Result<Inventory> {
        Ok(Inventory {
            vms: self.vms.lock().expect("lock").clone(),
            networks: vec![Network { id: "net-1".into(), name: "lan".into(), ..Default::default() }],
            datastores: vec![Datastore { id: "ds-1".into(), name: "ds".into(), ..Default::default() }],
            hosts: vec![],
        })
    }
    async fn vm(&self, id: &VmId) -> Result<Vm> {
        let vms = self.vms.lock().expect("lock");
        vms.iter()
            .find(|v| v.id == *id)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::VsphereNotFound, format!("no vm {}", id.source_ref)))
    }
    async fn power_off(&self, vm: &VmId, _graceful: Option<Duration>) -> Result<()> {
        self.call(format!("power_off {}", vm.source_ref));
        for v in self.vms.lock().expect("lock").iter_mut().filter(|v| v.id == *vm) {
            v.power_state = PowerState::PoweredOff;
        }
        Ok(())
    }
    async fn power_on(&self, vm: &VmId) -> Result<()> {
        self.call(format!("power_on {}", vm.source_ref));
        for v in self.vms.lock().expect("lock").iter_mut().filter(|v| v.id == *vm) {
            v.power_state = PowerState::PoweredOn;
        }
        Ok(())
    }
    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotRef> {
        let n = self.next_snap.fetch_add(1, Ordering::SeqCst);
        let id = format!("snap-{n}");
        self.call(format!("create_snapshot {} {name}", vm.source_ref));
        let mut content = HashMap::new();
        let mut change_ids = BTreeMap::new();
        for ((m, key), t) in &self.disks {
            if *m == vm.source_ref {
                content.insert(*key, t.contents());
                change_ids.insert(*key, id.clone());
            }
        }
        self.snaps.lock().expect("lock").insert(id.clone(), content);
        Ok(SnapshotRef { id, name: name.to_string(), change_ids })
    }
    async fn create_snapshot_quiesced(&self, vm: &VmId, name: &str, quiesce: bool) -> Result<SnapshotRef> {
        self.call(format!("quiesce={quiesce} {name}"));
        if quiesce && self.quiesce_fails.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::VsphereFault, "the guest's freeze script failed"));
        }
        self.create_snapshot(vm, name).await
    }
    async fn remove_snapshot(&self, vm: &VmId, snapshot: &SnapshotRef) -> Result<()> {
        self.call(format!("remove_snapshot {} {}", vm.source_ref, snapshot.id));
        Ok(())
    }
    async fn changed_areas(
        &self,
        _vm: &VmId,
        disk: &Disk,
        snapshot: &SnapshotRef,
        change_id: &str,
        offset: u64,
    ) -> Result<ChangedAreas> {
        let snaps = self.snaps.lock().expect("lock");
        let now = &snaps[&snapshot.id][&disk.key];
        let base = if change_id == "*" { None } else { Some(&snaps[change_id][&disk.key]) };
        let mut extents = Vec::new();
        let mut off = offset;
        while off < now.len() as u64 {
            let r = off as usize..((off + BLOCK) as usize).min(now.len());
            let changed = match base {
                None => now[r.clone()].iter().any(|b| *b != 0),
                Some(b) => now[r.clone()] != b[r.clone()],
            };
            if changed {
                extents.push(Extent::data(off, (r.end - r.start) as u64));
            }
            off += BLOCK;
        }
        Ok(ChangedAreas { extents: crate::transport::coalesce(extents), end: now.len() as u64 })
    }
    async fn open_disk(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let t: Box<dyn BlockTransport> = match snapshot {
            Some(s) => {
                Box::new(MemoryTransport::from_bytes(self.snaps.lock().expect("lock")[&s.id][&disk.key].clone()))
            }
            None => self.disk(&vm.source_ref, disk.key).try_clone().await?,
        };
        if self.slow_reads.load(Ordering::SeqCst) {
            return Ok(Box::new(Slow(t)));
        }
        Ok(t)
    }
}

/// A target transport that damages every write (flips its first byte): what verification
/// exists to catch.
#[derive(Debug)]
struct Corrupting(Box<dyn BlockTransport>);

#[async_trait]
impl BlockTransport for Corrupting {
    fn size(&self) -> u64 {
        self.0.size()
    }
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(Corrupting(self.0.try_clone().await?)))
    }
    async fn read_at(&self, offset: u64, len: usize) -> Result<bytes::Bytes> {
        self.0.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: bytes::Bytes) -> Result<()> {
        let mut bad = data.to_vec();
        if let Some(b) = bad.first_mut() {
            *b ^= 0xFF;
        }
        self.0.write_at(offset, bytes::Bytes::from(bad)).await
    }
    async fn flush(&self) -> Result<()> {
        self.0.flush().await
    }
}

#[derive(Debug, Default)]
struct MemTarget {
    /// Volumes are opened through [`Corrupting`].
    corrupt: AtomicBool,
    volumes: Mutex<HashMap<String, MemoryTransport>>,
    vms: Mutex<Vec<String>>,
    calls: Mutex<Vec<String>>,
    fail_create: AtomicUsize,
    existing: Vec<ExistingVm>,
    /// When set, the target "imports by itself" from this source, like CDI's importer.
    importer: Option<Arc<MemSource>>,
    /// Conversions to fail before one succeeds.
    fail_convert: AtomicUsize,
    /// The VMs create_vm was given, with what the conversion decided.
    created: Mutex<Vec<TargetVm>>,
}

impl MemTarget {
    fn call(&self, s: String) {
        self.calls.lock().expect("lock").push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
    fn volume(&self, name: &str) -> Vec<u8> {
        self.volumes.lock().expect("lock")[name].contents()
    }
}

#[async_trait]
impl TargetProvider for MemTarget {
    fn kind(&self) -> &'static str {
        "memory"
    }
    fn capabilities(&self) -> crate::provider::TargetCapabilities {
        // The in-memory volumes take scattered writes; the self-importer copies once.
        crate::provider::TargetCapabilities { incremental: self.importer.is_none() }
    }
    async fn existing_vms(&self, _ns: &str) -> Result<Vec<ExistingVm>> {
        Ok(self.existing.clone())
    }
    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume> {
        let name = format!("{}-disk{}", vm.name, disk.key);
        self.call(format!("prepare {name}"));
        let size = disk.capacity_bytes as u64;
        self.volumes.lock().expect("lock").entry(name.clone()).or_insert_with(|| MemoryTransport::new(size));
        Ok(PreparedVolume { disk_key: disk.key, name, size })
    }
    async fn open_volume(&self, _vm: &TargetVm, v: &PreparedVolume) -> Result<VolumeSink> {
        if self.importer.is_some() {
            return Ok(VolumeSink::SelfImport);
        }
        let vol = self.volumes.lock().expect("lock")[&v.name].clone();
        if self.corrupt.load(Ordering::SeqCst) {
            return Ok(VolumeSink::Transport(Box::new(Corrupting(Box::new(vol)))));
        }
        Ok(VolumeSink::Transport(Box::new(vol)))
    }
    async fn finish_volume(&self, vm: &TargetVm, v: &PreparedVolume) -> Result<()> {
        if let Some(src) = &self.importer {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let data = src.disk(&vm.source.id.source_ref, v.disk_key).contents();
            let dst = self.volumes.lock().expect("lock")[&v.name].clone();
            dst.write_at(0, bytes::Bytes::from(data)).await?;
            self.call(format!("imported {}", v.name));
        }
        Ok(())
    }
    async fn import_progress(&self, _vm: &TargetVm, _v: &PreparedVolume) -> Option<f64> {
        Some(0.5)
    }
    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()> {
        if self.fail_create.load(Ordering::SeqCst) > 0 {
            self.fail_create.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(ErrorCode::KubeInvalid, format!("virtualmachine {} rejected", vm.name)));
        }
        self.call(format!("create_vm {} {}", vm.name, volumes.len()));
        self.vms.lock().expect("lock").push(vm.name.clone());
        self.created.lock().expect("lock").push(vm.clone());
        Ok(())
    }
    async fn convert_guest(
        &self,
        vm: &TargetVm,
        volumes: &[PreparedVolume],
        req: &ConversionRequest,
    ) -> Result<GuestConversion> {
        self.call(format!(
            "convert {} {} root={} static-ips={}",
            vm.name,
            volumes.len(),
            req.root_disk.as_deref().unwrap_or("first"),
            req.preserve_static_ips
        ));
        if self.fail_convert.load(Ordering::SeqCst) > 0 {
            self.fail_convert.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(ErrorCode::ConversionFailed, "virt-v2v-in-place failed: no root device found"));
        }
        Ok(GuestConversion {
            converted: true,
            os: Some(crate::convert::InspectedOs {
                kind: "linux".into(),
                distro: "rhel".into(),
                osinfo: "rhel9.4".into(),
                ..Default::default()
            }),
            disk_bus: Some(crate::plan::TargetDiskBus::Scsi),
            nic_model: Some("virtio".into()),
            guest_agent: true,
            ..Default::default()
        })
    }
    async fn expose(&self, plan: &str, ns: &str, services: &[crate::plan::ServiceSpec]) -> Result<()> {
        self.call(format!("expose {plan} {ns} {}", services.len()));
        Ok(())
    }
    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        self.call(format!("cleanup {}", vm.name));
        self.volumes.lock().expect("lock").retain(|k, _| !k.starts_with(&format!("{}-disk", vm.name)));
        self.vms.lock().expect("lock").retain(|v| v != &vm.name);
        Ok(())
    }
}

fn content(seed: u8, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; size as usize];
    // Data in a few scattered blocks, holes elsewhere.
    for (i, chunk) in v.chunks_mut(BLOCK as usize).enumerate() {
        if i % 5 == 0 || i % 7 == 3 {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = seed.wrapping_add((i * 31 + j) as u8) | 1;
            }
        }
    }
    v
}

fn vm(n: u32, power: PowerState, disks: &[u64]) -> Vm {
    Vm {
        id: VmId { source_ref: format!("vm-{n}"), ..Default::default() },
        name: format!("vm{n}"),
        power_state: power,
        guest_id: "rhel9_64Guest".into(),
        os_id: "rhel9.0".into(),
        disks: disks
            .iter()
            .enumerate()
            .map(|(i, s)| Disk {
                key: 2000 + i as i32,
                capacity_bytes: *s as i64,
                datastore: Some("ds".into()),
                file: format!("[ds] vm{n}/disk{i}.vmdk"),
                ..Default::default()
            })
            .collect(),
        nics: vec![Nic {
            key: 4000,
            mac: format!("00:50:56:00:00:{n:02x}"),
            network: Some("lan".into()),
            ..Default::default()
        }],
        cbt_enabled: true,
        tools_status: ToolsStatus::Running,
        ..Default::default()
    }
}

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
    let c1 = content(1, 2 * MIB);
    let c2a = content(2, 3 * MIB);
    let c2b = content(3, MIB);
    let src = Arc::new(MemSource::new(vec![
        (vm(1, PowerState::PoweredOn, &[2 * MIB]), vec![c1.clone()]),
        (vm(2, PowerState::PoweredOff, &[3 * MIB, MIB]), vec![c2a.clone(), c2b.clone()]),
    ]));
    let tgt = Arc::new(MemTarget::default());
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("status.json");
    let (sink, evs) = events();
    let opts = ExecutorOptions { status_path: Some(status_path.clone()), events: Some(sink), ..Default::default() };
    let exec = Executor::new(plan(&["vm1", "vm2"], false), src.clone(), tgt.clone(), opts);
    let st = exec.run().await.expect("plan runs");
    assert_eq!(st.summary(), "2 of 2 VMs migrated");
    assert_eq!(tgt.volume("vm1-disk2000"), c1);
    assert_eq!(tgt.volume("vm2-disk2000"), c2a);
    assert_eq!(tgt.volume("vm2-disk2001"), c2b);
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
    assert!(conv.converted && conv.disk_bus == Some(crate::plan::TargetDiskBus::Scsi));
    let created = tgt.created.lock().expect("lock");
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
        (vm(1, PowerState::PoweredOn, &[MIB]), vec![content(1, MIB)]),
        (vm(2, PowerState::PoweredOn, &[MIB]), vec![content(2, MIB)]),
    ]));
    let tgt = Arc::new(MemTarget { fail_create: AtomicUsize::new(1), ..Default::default() });
    let mut p = plan(&["vm1", "vm2"], false);
    p.spec.options.max_in_flight = 1;
    let exec = Executor::new(p, src.clone(), tgt.clone(), ExecutorOptions::default());
    let st = exec.run().await.expect("plan runs");
    assert_eq!(st.summary(), "1 of 2 VMs migrated");
    let failed = st.vms.iter().find(|v| v.phase == Phase::Failed).expect("one failed");
    let err = failed.error.as_ref().expect("error recorded");
    assert_eq!(err.code, ErrorCode::KubeInvalid as u32);
    let source_ref = failed.source_id.clone();
    assert_eq!(src.power(&source_ref), PowerState::PoweredOn, "source powered back on after failure");
    assert!(tgt.calls().contains(&format!("cleanup {}", failed.target_name)));
    assert!(
        !tgt.volumes.lock().expect("lock").keys().any(|k| k.starts_with(&failed.target_name)),
        "target volumes removed"
    );
}

#[tokio::test]
async fn cancel_mid_copy_cleans_up() {
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[64 * MIB]), vec![content(9, 64 * MIB)])]));
    src.slow_reads.store(true, Ordering::SeqCst);
    let tgt = Arc::new(MemTarget::default());
    let mut opts = ExecutorOptions::default();
    // Few requests in flight over a slow source: the copy takes seconds, so the cancel lands mid-way.
    opts.copy.connections = 1;
    opts.copy.request_size = 256 << 10;
    opts.copy.max_buffer_bytes = 512 << 10;
    opts.copy.buffer_budget = Some(crate::engine::BufferBudget::new(512 << 10));
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
    assert!(tgt.volumes.lock().expect("lock").is_empty(), "target has nothing left");
    assert!(tgt.vms.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn a_phase_in_progress_reaches_the_status_file() {
    // Records are saved at most every SAVE_DEBOUNCE; the start of a long phase must still be
    // written (by the deferred save) while the phase runs, not only when it ends.
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[8 * MIB]), vec![content(3, 8 * MIB)])]));
    src.slow_reads.store(true, Ordering::SeqCst);
    let tgt = Arc::new(MemTarget::default());
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("s.json");
    let mut opts = ExecutorOptions { status_path: Some(status_path.clone()), ..Default::default() };
    opts.copy.connections = 1;
    opts.copy.request_size = 256 << 10;
    opts.copy.buffer_budget = Some(crate::engine::BufferBudget::new(512 << 10));
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
    let mut v = vm(1, PowerState::PoweredOn, &[MIB]);
    v.disks[0].rdm = true;
    let src = Arc::new(MemSource::new(vec![(v, vec![content(1, MIB)])]));
    let tgt = Arc::new(MemTarget::default());
    let exec = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), ExecutorOptions::default());
    let err = exec.run().await.expect_err("blocked");
    assert_eq!(err.code(), ErrorCode::ValidationBlocked);
    assert!(src.calls().is_empty(), "source untouched");
    assert!(tgt.calls().is_empty(), "target untouched");
    assert!(exec.status().vms[0].concerns.iter().any(|c| c.id == "disk.rdm"));
}

#[tokio::test]
async fn resume_skips_completed_phases_and_copies() {
    let c = content(5, 4 * MIB);
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[4 * MIB]), vec![c.clone()])]));
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("s.json");
    // First run: the copy completes, then the process "dies" before CreateVm: simulate by a
    // status file that records phases up to CopyDisks as done.
    let tgt = Arc::new(MemTarget::default());
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
    assert_eq!(tgt.volume("vm1-disk2000"), c);
    // The conversion completed before the "crash": it is not redone, and its outcome (from the
    // status file) still shapes the VM.
    assert_eq!(tgt.calls().iter().filter(|c| c.starts_with("convert ")).count(), 1, "{:?}", tgt.calls());
    let created = tgt.created.lock().expect("lock");
    assert_eq!(
        created.last().and_then(|t| t.conversion.as_ref()).and_then(|c| c.disk_bus),
        Some(crate::plan::TargetDiskBus::Scsi)
    );
}

#[tokio::test]
async fn resume_before_conversion_converts_once() {
    let c = content(6, 2 * MIB);
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[2 * MIB]), vec![c.clone()])]));
    let dir = tempfile::tempdir().expect("tmp");
    let status_path = dir.path().join("s.json");
    let tgt = Arc::new(MemTarget::default());
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
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[MIB]), vec![content(1, MIB)])]));
    let tgt = Arc::new(MemTarget::default());
    let mut p = plan(&["vm1"], false);
    p.spec.skip_guest_conversion = true;
    p.spec.vms[0].target_power_state = Some(crate::plan::TargetPowerState::Off);
    let st = Executor::new(p, src, tgt.clone(), ExecutorOptions::default()).run().await.expect("runs");
    assert_eq!(st.summary(), "1 of 1 VMs migrated");
    assert!(!tgt.calls().iter().any(|c| c.starts_with("convert ")), "{:?}", tgt.calls());
    let conv = st.vms[0].conversion.as_ref().expect("recorded");
    assert!(!conv.converted);
    assert!(conv.summary().contains("skipGuestConversion"), "{}", conv.summary());
    assert!(st.vms[0].history.iter().any(|r| r.phase == Phase::ConvertGuest && r.completed.is_some()));
    let created = tgt.created.lock().expect("lock");
    assert_eq!(created[0].run_strategy, "Halted", "targetPowerState off wins over the source's power");
}

#[tokio::test]
async fn failed_conversion_fails_the_vm_and_cleans_up() {
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[MIB]), vec![content(1, MIB)])]));
    let tgt = Arc::new(MemTarget { fail_convert: AtomicUsize::new(1), ..Default::default() });
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
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[MIB]), vec![content(1, MIB)])]));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("s.json");
    let mut other = new_status(&plan(&["vm1"], false));
    other.plan = "other".into();
    other.save(&path).expect("save");
    let opts = ExecutorOptions { status_path: Some(path), ..Default::default() };
    let exec = Executor::new(plan(&["vm1"], false), src, Arc::new(MemTarget::default()), opts);
    assert_eq!(exec.run().await.expect_err("refused").code(), ErrorCode::StatusFile);
}

#[tokio::test]
async fn warm_migration_copies_deltas_and_ends_equal() {
    let size = 8 * MIB;
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[size]), vec![content(7, size)])]));
    let tgt = Arc::new(MemTarget::default());
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
    assert_eq!(tgt.volume("vm1-disk2000"), src.disk("vm-1", 2000).contents(), "target equals final source");
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
                assert!(progress.bytes_read <= 4 * BLOCK, "{pass} read {} bytes", progress.bytes_read);
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
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[MIB]), vec![content(1, MIB)])]));
    let mut p = plan(&["vm1"], false);
    p.spec.hooks.push(HookSpec {
        name: "drain".into(),
        step: HookStep::Pre,
        command: vec!["sh".into(), "-c".into(), "echo cannot drain $VMIGRATE_VM >&2; exit 3".into()],
        image: None,
        timeout: None,
    });
    let tgt = Arc::new(MemTarget::default());
    let st = Executor::new(p, src.clone(), tgt, ExecutorOptions::default()).run().await.expect("runs");
    let err = st.vms[0].error.as_ref().expect("failed");
    assert_eq!(err.code, ErrorCode::HookFailed as u32);
    assert!(err.message.contains("cannot drain vm1"), "{}", err.message);
    assert!(src.calls().is_empty(), "the pre hook failed before the source was touched");
}

#[tokio::test]
async fn self_importing_target_is_followed_to_the_end() {
    let c = content(4, 2 * MIB);
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[2 * MIB]), vec![c.clone()])]));
    let tgt = Arc::new(MemTarget { importer: Some(src.clone()), ..Default::default() });
    let (sink, evs) = events();
    let opts =
        ExecutorOptions { events: Some(sink), progress_interval: Duration::from_millis(100), ..Default::default() };
    let st = Executor::new(plan(&["vm1"], false), src, tgt.clone(), opts).run().await.expect("runs");
    assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
    assert_eq!(tgt.volume("vm1-disk2000"), c);
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
    fn capabilities(&self) -> crate::provider::TargetCapabilities {
        crate::provider::TargetCapabilities { incremental: true }
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
    async fn expose(&self, plan: &str, ns: &str, services: &[crate::plan::ServiceSpec]) -> Result<()> {
        self.0.expose(plan, ns, services).await
    }
    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        self.0.cleanup(vm).await
    }
}

#[tokio::test]
async fn warm_plan_into_a_target_without_incremental_passes_is_blocked_before_the_source_is_touched() {
    let size = 2 * MIB;
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[size]), vec![content(3, size)])]));
    let tgt = Arc::new(MemTarget { importer: Some(src.clone()), ..Default::default() });
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
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[size]), vec![content(5, size)])]));
    let inner = MemTarget { importer: Some(src.clone()), ..Default::default() };
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
    assert!(tgt.0.vms.lock().expect("lock").is_empty(), "no target VM over a stale copy");
    // Cleanup undid the source changes: every snapshot removed, power restored.
    let calls = src.calls();
    let created = calls.iter().filter(|c| c.starts_with("create_snapshot")).count();
    let removed = calls.iter().filter(|c| c.starts_with("remove_snapshot")).count();
    assert_eq!(created, removed, "{calls:?}");
}

#[tokio::test]
async fn warm_never_holds_two_snapshots_and_each_pass_starts_from_a_fresh_one() {
    let size = 4 * MIB;
    let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[size]), vec![content(9, size)])]));
    let tgt = Arc::new(MemTarget::default());
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
    assert_eq!(tgt.volume("vm1-disk2000"), src.disk("vm-1", 2000).contents());
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
        let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[size]), vec![content(2, size)])]));
        src.quiesce_fails.store(fails, Ordering::SeqCst);
        let tgt = Arc::new(MemTarget::default());
        let opts = ExecutorOptions { cutover_now: true, ..Default::default() };
        let st = Executor::new(plan(&["vm1"], true), src.clone(), tgt.clone(), opts).run().await.expect("runs");
        assert_eq!(st.vms[0].phase, Phase::Completed, "{:?}", st.vms[0].error);
        assert_eq!(tgt.volume("vm1-disk2000"), src.disk("vm-1", 2000).contents());
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
    passes: Mutex<Vec<crate::provider::TargetPass>>,
}

#[async_trait]
impl TargetProvider for PassTarget {
    fn kind(&self) -> &'static str {
        "passes"
    }
    fn capabilities(&self) -> crate::provider::TargetCapabilities {
        crate::provider::TargetCapabilities { incremental: true }
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
        pass: &crate::provider::TargetPass,
    ) -> Result<crate::provider::PassReport> {
        self.passes.lock().expect("lock").push(pass.clone());
        let disk = vm.source.disks.iter().find(|d| d.key == v.disk_key).expect("disk");
        let content = match &pass.snapshot {
            Some(s) => self.src.snaps.lock().expect("lock")[&s.id][&disk.key].clone(),
            None => self.src.disk(&vm.source.id.source_ref, disk.key).contents(),
        };
        let changed_bytes = match (&pass.snapshot, &pass.changed_since) {
            (Some(s), Some(since)) => {
                let areas = self.src.changed_areas(&vm.source.id, disk, s, since, 0).await?;
                areas.extents.iter().map(|e| e.length).sum()
            }
            _ => content.len() as u64,
        };
        let vol = self.inner.volumes.lock().expect("lock")[&v.name].clone();
        vol.write_at(0, bytes::Bytes::from(content.clone())).await?;
        let mut report = crate::provider::PassReport {
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
            Some("bytes") => report.changed_bytes += BLOCK,
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
    async fn expose(&self, plan: &str, ns: &str, services: &[crate::plan::ServiceSpec]) -> Result<()> {
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
        let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOn, &[size]), vec![content(6, size)])]));
        let tgt = Arc::new(PassTarget { inner: MemTarget::default(), src: src.clone(), lie, passes: Mutex::default() });
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
                assert_eq!(tgt.inner.volume("vm1-disk2000"), src.disk("vm-1", 2000).contents());
                // The write went by a delta pass; a pass with no changed area runs nothing.
                assert!(passes[1..].iter().all(|p| p.changed_since.is_some() && p.snapshot.is_some()), "{passes:?}");
                assert!(passes.len() >= 2, "{passes:?}");
                // The target read the disk itself: the executor never opened it.
                assert_eq!(src.opens.load(Ordering::SeqCst), 0, "the executor opened the source disk");
            }
            Some(how) => {
                assert_eq!(vs.phase, Phase::Failed, "{how}: a report that does not match must fail the VM");
                assert!(tgt.inner.vms.lock().expect("lock").is_empty(), "{how}: no VM over a doubtful copy");
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
    let (c0, c1) = (content(4, 2 * MIB), content(5, MIB));
    let src =
        Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[2 * MIB, MIB]), vec![c0.clone(), c1.clone()])]));
    let tgt = Arc::new(MemTarget::default());
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
            cancel: CancellationToken::new(),
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
        tgt.volumes.lock().expect("lock").insert(name.into(), MemoryTransport::from_bytes(vec![0xEE; size as usize]));
    }
    let st = Executor::new(plan(&["vm1"], false), src.clone(), tgt.clone(), opts()).run().await.expect("resumed run");
    assert_eq!(st.summary(), "1 of 1 VMs migrated", "{:?}", st.vms[0].error);
    assert!(tgt.volume("vm1-disk2000") == c0, "the done disk of another source state was copied again");
    assert!(tgt.volume("vm1-disk2001") == c1, "the checkpoint of another source state was not resumed");
}

/// Issue 15: the plan's `options.verify` is applied by the executor itself, so a program that
/// builds an `Executor` with default options (the README's example) verifies when the plan says
/// so: a target that damages the bytes fails the VM with `VerifyMismatch`. Without `verify` the
/// same damage goes unnoticed, which is what the option is for.
#[tokio::test]
async fn the_plans_verify_option_is_applied_by_the_executor() {
    for verify in [false, true] {
        let src = Arc::new(MemSource::new(vec![(vm(1, PowerState::PoweredOff, &[MIB]), vec![content(6, MIB)])]));
        let tgt = Arc::new(MemTarget { corrupt: AtomicBool::new(true), ..Default::default() });
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
