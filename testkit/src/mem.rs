//! The reference providers: a [`SourceProvider`] and a [`TargetProvider`] over
//! [`MemoryTransport`]s, implementing every optional capability for real (power state,
//! snapshots with their own content, changed areas computed from that content, incremental
//! volumes, a self-importing mode) and recording what they were asked to do.
//!
//! They are what a new provider can be read against, what the conformance suites run on first,
//! and what executor tests drive migrations through without a server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use vmigrate_core::convert::{ConversionRequest, GuestConversion, InspectedOs};
use vmigrate_core::memory::MemoryTransport;
use vmigrate_core::model::{Datastore, Disk, Inventory, Network, Nic, PowerState, ToolsStatus, Vm, VmId};
use vmigrate_core::plan::{ServiceSpec, TargetDiskBus};
use vmigrate_core::transport::coalesce;
use vmigrate_core::{
    BlockTransport, ChangedAreas, Error, ErrorCode, ExistingVm, Extent, ExtentKind, PreparedVolume, Result,
    SnapshotRef, SourceCapabilities, SourceProvider, TargetCapabilities, TargetProvider, TargetVm, VolumeSink,
};

/// Granularity of [`MemSource::changed_areas`].
pub const CHANGE_BLOCK: u64 = 64 << 10;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A source whose VMs and disks live in memory. Snapshots copy the disks' content at the time
/// they are taken; [`changed_areas`](SourceProvider::changed_areas) compares two snapshots (or
/// reports the non-zero blocks for change id `*`), so warm migrations run for real.
#[derive(Debug, Default)]
pub struct MemSource {
    vms: Mutex<Vec<Vm>>,
    disks: HashMap<(String, i32), MemoryTransport>,
    /// snapshot id -> disk key -> content
    snaps: Mutex<HashMap<String, HashMap<i32, Vec<u8>>>>,
    calls: Mutex<Vec<String>>,
    next_snap: AtomicUsize,
    slow_reads: AtomicBool,
    quiesce_fails: AtomicBool,
    opens: AtomicUsize,
}

impl MemSource {
    /// VMs with the content of each of their disks (in disk order).
    pub fn new(vms: Vec<(Vm, Vec<Vec<u8>>)>) -> Self {
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
        lock(&self.calls).push(s);
    }

    /// What the source was asked to do, in order (`power_off vm-1`, `create_snapshot vm-1 name`...).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// The live disk `key` of VM `moref` (write to it to simulate guest writes between passes).
    ///
    /// # Panics
    /// When there is no such disk: a test bug.
    pub fn disk(&self, moref: &str, key: i32) -> &MemoryTransport {
        &self.disks[&(moref.to_string(), key)]
    }

    /// The power state of VM `moref`.
    ///
    /// # Panics
    /// When there is no such VM: a test bug.
    pub fn power(&self, moref: &str) -> PowerState {
        lock(&self.vms).iter().find(|v| v.id.source_ref == moref).map(|v| v.power_state).expect("no such vm")
    }

    /// How many disks were opened for reading.
    pub fn opens(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }

    /// Make every read sleep 50 ms, so a test can cancel mid-copy.
    pub fn set_slow_reads(&self, on: bool) {
        self.slow_reads.store(on, Ordering::SeqCst);
    }

    /// Make quiesced snapshots fail, as a guest's failing freeze script does.
    pub fn set_quiesce_fails(&self, on: bool) {
        self.quiesce_fails.store(on, Ordering::SeqCst);
    }

    /// The content disk `key` had when snapshot `id` was taken: what a target that runs its
    /// own passes (a transfer Job) reads for that snapshot.
    pub fn snapshot_content(&self, id: &str, key: i32) -> Option<Vec<u8>> {
        lock(&self.snaps).get(id).and_then(|s| s.get(&key)).cloned()
    }
}

/// A transport wrapper that sleeps on every read.
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
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.0.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        self.0.write_at(offset, data).await
    }
    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
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
            vms: lock(&self.vms).clone(),
            networks: vec![Network { id: "net-1".into(), name: "lan".into(), ..Default::default() }],
            datastores: vec![Datastore { id: "ds-1".into(), name: "ds".into(), ..Default::default() }],
            hosts: vec![],
        })
    }

    async fn vm(&self, id: &VmId) -> Result<Vm> {
        lock(&self.vms)
            .iter()
            .find(|v| v.id == *id)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::VmNotFound, format!("no vm {}", id.source_ref)))
    }

    async fn power_off(&self, vm: &VmId, _graceful: Option<Duration>) -> Result<()> {
        self.call(format!("power_off {}", vm.source_ref));
        for v in lock(&self.vms).iter_mut().filter(|v| v.id == *vm) {
            v.power_state = PowerState::PoweredOff;
        }
        Ok(())
    }

    async fn power_on(&self, vm: &VmId) -> Result<()> {
        self.call(format!("power_on {}", vm.source_ref));
        for v in lock(&self.vms).iter_mut().filter(|v| v.id == *vm) {
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
        lock(&self.snaps).insert(id.clone(), content);
        Ok(SnapshotRef { id, name: name.to_string(), change_ids })
    }

    async fn create_snapshot_quiesced(&self, vm: &VmId, name: &str, quiesce: bool) -> Result<SnapshotRef> {
        self.call(format!("quiesce={quiesce} {name}"));
        if quiesce && self.quiesce_fails.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorCode::Unsupported, "the guest's freeze script failed"));
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
        let snaps = lock(&self.snaps);
        let missing = |what: &str| Error::new(ErrorCode::Checkpoint, format!("unknown {what}"));
        let now = snaps.get(&snapshot.id).and_then(|s| s.get(&disk.key)).ok_or_else(|| missing("snapshot"))?;
        let base = if change_id == "*" {
            None
        } else {
            Some(snaps.get(change_id).and_then(|s| s.get(&disk.key)).ok_or_else(|| missing("change id"))?)
        };
        let mut extents = Vec::new();
        let mut off = offset;
        while off < now.len() as u64 {
            let r = off as usize..((off + CHANGE_BLOCK) as usize).min(now.len());
            let changed = match base {
                None => now[r.clone()].iter().any(|b| *b != 0),
                Some(b) => b.get(r.clone()).is_none_or(|old| now[r.clone()] != *old),
            };
            if changed {
                extents.push(Extent::data(off, (r.end - r.start) as u64));
            }
            off += CHANGE_BLOCK;
        }
        Ok(ChangedAreas { extents: coalesce(extents), end: now.len() as u64 })
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
                let snaps = lock(&self.snaps);
                let c = snaps.get(&s.id).and_then(|m| m.get(&disk.key)).ok_or_else(|| {
                    Error::new(ErrorCode::VmNotFound, format!("no snapshot {} of disk {}", s.id, disk.key))
                })?;
                Box::new(MemoryTransport::from_bytes(c.clone()))
            }
            None => match self.disks.get(&(vm.source_ref.clone(), disk.key)) {
                Some(d) => d.try_clone().await?,
                None => {
                    return Err(Error::new(
                        ErrorCode::VmNotFound,
                        format!("no disk {} of vm {}", disk.key, vm.source_ref),
                    ))
                }
            },
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
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.0.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        let mut bad = data.to_vec();
        if let Some(b) = bad.first_mut() {
            *b ^= 0xFF;
        }
        self.0.write_at(offset, Bytes::from(bad)).await
    }
    async fn flush(&self) -> Result<()> {
        self.0.flush().await
    }
}

/// A target whose volumes are [`MemoryTransport`]s. By default it takes scattered writes
/// (incremental, so warm migrations apply their delta passes); with
/// [`importing_from`](Self::importing_from) it "imports by itself" like CDI's importer.
#[derive(Debug, Default)]
pub struct MemTarget {
    volumes: Mutex<HashMap<String, MemoryTransport>>,
    vms: Mutex<Vec<String>>,
    calls: Mutex<Vec<String>>,
    fail_create: AtomicUsize,
    existing: Vec<ExistingVm>,
    importer: Option<Arc<MemSource>>,
    fail_convert: AtomicUsize,
    created: Mutex<Vec<TargetVm>>,
    corrupt: bool,
}

impl MemTarget {
    /// An empty target.
    pub fn new() -> Self {
        Self::default()
    }

    /// VMs that already exist in every namespace (for name and MAC conflicts).
    pub fn with_existing(mut self, existing: Vec<ExistingVm>) -> Self {
        self.existing = existing;
        self
    }

    /// Import every volume by itself from `source` ([`VolumeSink::SelfImport`]).
    pub fn importing_from(mut self, source: Arc<MemSource>) -> Self {
        self.importer = Some(source);
        self
    }

    /// Open every volume through a transport that damages each write (flips its first byte),
    /// so a test can show that verification catches what a faulty target does.
    pub fn corrupting(mut self) -> Self {
        self.corrupt = true;
        self
    }

    /// Fail the next `n` [`create_vm`](TargetProvider::create_vm) calls.
    pub fn fail_create(&self, n: usize) {
        self.fail_create.store(n, Ordering::SeqCst);
    }

    /// Fail the next `n` guest conversions.
    pub fn fail_convert(&self, n: usize) {
        self.fail_convert.store(n, Ordering::SeqCst);
    }

    fn call(&self, s: String) {
        lock(&self.calls).push(s);
    }

    /// What the target was asked to do, in order.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.calls).clone()
    }

    /// The content of volume `name`, if it exists.
    pub fn volume(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.volumes).get(name).map(MemoryTransport::contents)
    }

    /// A handle on volume `name` sharing its bytes (writes through it land in the volume), if
    /// it exists: for a wrapping target that fills volumes itself.
    pub fn volume_transport(&self, name: &str) -> Option<MemoryTransport> {
        lock(&self.volumes).get(name).cloned()
    }

    /// Put volume `name` in place (replacing one of that name), as a volume left by an earlier
    /// run is found by the next.
    pub fn put_volume(&self, name: &str, volume: MemoryTransport) {
        lock(&self.volumes).insert(name.to_string(), volume);
    }

    /// Names of the volumes that exist.
    pub fn volume_names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.volumes).keys().cloned().collect();
        v.sort();
        v
    }

    /// Names of the VMs created (and not cleaned up).
    pub fn vm_names(&self) -> Vec<String> {
        lock(&self.vms).clone()
    }

    /// The VMs [`create_vm`](TargetProvider::create_vm) was given, with what conversion decided.
    pub fn created(&self) -> Vec<TargetVm> {
        lock(&self.created).clone()
    }
}

#[async_trait]
impl TargetProvider for MemTarget {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> TargetCapabilities {
        // The in-memory volumes take scattered writes; the self-importer copies once.
        TargetCapabilities { incremental: self.importer.is_none() }
    }

    async fn existing_vms(&self, _ns: &str) -> Result<Vec<ExistingVm>> {
        Ok(self.existing.clone())
    }

    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume> {
        let name = format!("{}-disk{}", vm.name, disk.key);
        self.call(format!("prepare {name}"));
        let size = u64::try_from(disk.capacity_bytes)
            .map_err(|_| Error::new(ErrorCode::PlanInvalid, format!("disk {} has no capacity", disk.key)))?;
        lock(&self.volumes).entry(name.clone()).or_insert_with(|| MemoryTransport::new(size));
        Ok(PreparedVolume { disk_key: disk.key, name, size })
    }

    async fn open_volume(&self, _vm: &TargetVm, v: &PreparedVolume) -> Result<VolumeSink> {
        if self.importer.is_some() {
            return Ok(VolumeSink::SelfImport);
        }
        let vol = lock(&self.volumes)
            .get(&v.name)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::TargetNotFound, format!("volume {} was not prepared", v.name)))?;
        if self.corrupt {
            return Ok(VolumeSink::Transport(Box::new(Corrupting(Box::new(vol)))));
        }
        Ok(VolumeSink::Transport(Box::new(vol)))
    }

    async fn finish_volume(&self, vm: &TargetVm, v: &PreparedVolume) -> Result<()> {
        if let Some(src) = &self.importer {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let data = src.disk(&vm.source.id.source_ref, v.disk_key).contents();
            let dst = lock(&self.volumes).get(&v.name).cloned();
            if let Some(dst) = dst {
                dst.write_at(0, Bytes::from(data)).await?;
            }
            self.call(format!("imported {}", v.name));
        }
        Ok(())
    }

    async fn import_progress(&self, _vm: &TargetVm, _v: &PreparedVolume) -> Option<f64> {
        self.importer.as_ref().map(|_| 0.5)
    }

    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()> {
        if self.fail_create.load(Ordering::SeqCst) > 0 {
            self.fail_create.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(ErrorCode::TargetInvalid, format!("virtualmachine {} rejected", vm.name)));
        }
        self.call(format!("create_vm {} {}", vm.name, volumes.len()));
        let mut vms = lock(&self.vms);
        if !vms.contains(&vm.name) {
            vms.push(vm.name.clone());
        }
        lock(&self.created).push(vm.clone());
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
            os: Some(InspectedOs {
                kind: "linux".into(),
                distro: "rhel".into(),
                osinfo: "rhel9.4".into(),
                ..Default::default()
            }),
            disk_bus: Some(TargetDiskBus::Scsi),
            nic_model: Some("virtio".into()),
            guest_agent: true,
            ..Default::default()
        })
    }

    async fn expose(&self, plan: &str, ns: &str, services: &[ServiceSpec]) -> Result<()> {
        self.call(format!("expose {plan} {ns} {}", services.len()));
        Ok(())
    }

    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        self.call(format!("cleanup {}", vm.name));
        let prefix = format!("{}-disk", vm.name);
        lock(&self.volumes).retain(|k, _| !k.starts_with(&prefix));
        lock(&self.vms).retain(|v| v != &vm.name);
        Ok(())
    }
}

/// Disk content with data in a few scattered [`CHANGE_BLOCK`]s and holes elsewhere, different
/// per `seed`.
pub fn sparse_content(seed: u8, size: u64) -> Vec<u8> {
    let mut v = vec![0u8; usize::try_from(size).unwrap_or(0)];
    for (i, chunk) in v.chunks_mut(CHANGE_BLOCK as usize).enumerate() {
        if i % 5 == 0 || i % 7 == 3 {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = seed.wrapping_add((i * 31 + j) as u8) | 1;
            }
        }
    }
    v
}

/// A VM `vm-N` named `vmN` with disks of the given sizes on datastore `ds` and one NIC on
/// network `lan`: what [`MemSource::inventory`] lists them on.
pub fn mem_vm(n: u32, power: PowerState, disks: &[u64]) -> Vm {
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
                capacity_bytes: i64::try_from(*s).unwrap_or(i64::MAX),
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
