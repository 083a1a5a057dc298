//! Conformance suites: the contract of each seam, as checks any implementation must pass.
//!
//! Each suite takes a factory (so it can open fresh handles, as the executor does) and returns
//! `Err` naming the first rule broken, so a provider's test is one line
//! (`conformance::source_provider(|| async { ... }).await.unwrap()`) and the suites themselves
//! can be tested against deliberately broken implementations.
//!
//! - [`readable_transport`]: sizes, exact reads, never a short buffer, extent maps that are
//!   ordered and gap-free and whose zero ranges read as zeroes, clones that read the same bytes.
//! - [`writable_transport`]: what is written and flushed reads back, from clones too; zeroing
//!   (when accepted) reads as zeroes; a zero-initialised device reads as zeroes.
//! - [`source_provider`]: the inventory is consistent, `vm` finds what it lists and refuses what
//!   it does not, every disk opens as a conforming readable transport no larger than its
//!   capacity, capabilities a source lacks answer `Unsupported`, and `close` may be called twice.
//! - [`target_provider`]: volumes are prepared idempotently and at least as large as the disk,
//!   a transport sink keeps what was written, `create_vm` and `cleanup` are idempotent, and a
//!   re-run after cleanup works, and `close` may be called twice.

use std::future::Future;

use bytes::Bytes;
use vmigrate_core::model::{Disk, Vm, VmId};
use vmigrate_core::{
    BlockTransport, ErrorKind, ExtentKind, Result, SnapshotRef, SourceProvider, TargetProvider, TargetVm, VolumeSink,
};

/// Largest disk read whole; larger ones are checked on samples.
const WHOLE_READ_LIMIT: u64 = 256 << 20;

type Check = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

fn ok<T>(r: Result<T>, what: &str) -> std::result::Result<T, String> {
    r.map_err(|e| format!("{what}: {}: {}", e.code().name(), e.report()))
}

/// Read `[offset, offset + len)` in requests no larger than the transport's `max_request`.
async fn read_range(t: &dyn BlockTransport, offset: u64, len: u64) -> std::result::Result<Vec<u8>, String> {
    let step = t.max_request().clamp(4096, 8 << 20) as u64;
    let mut out = Vec::with_capacity(len as usize);
    let mut off = offset;
    while off < offset + len {
        let n = step.min(offset + len - off) as usize;
        let b = ok(t.read_at(off, n).await, &format!("read_at({off}, {n})"))?;
        ensure!(b.len() == n, "read_at({off}, {n}) returned {} bytes: a short read must be an error", b.len());
        out.extend_from_slice(&b);
        off += n as u64;
    }
    Ok(out)
}

/// Offsets worth reading at: the edges, unaligned points, and the end.
fn sample_points(size: u64) -> Vec<(u64, usize)> {
    let mut v = vec![(0, 1), (0, 512.min(size) as usize), (1, 4095), (511, 1025), (4096, 4096), (65_535, 3)];
    if size > 2 {
        v.push((size / 2 - 1, 2));
        v.push((size - 1, 1));
        v.push((size.saturating_sub(4097), 4097));
    }
    v.into_iter().filter(|(o, l)| *l > 0 && o.checked_add(*l as u64).is_some_and(|e| e <= size)).collect()
}

/// The allocation map of the whole transport, asked again from where each answer ended.
async fn extent_map(t: &dyn BlockTransport) -> std::result::Result<Vec<vmigrate_core::Extent>, String> {
    let size = t.size();
    let mut out = Vec::new();
    let mut off = 0u64;
    let mut rounds = 0;
    while off < size {
        rounds += 1;
        ensure!(rounds < 1_000_000, "extents never reached the end of the disk");
        let ext = ok(t.extents(off, size - off, ExtentKind::Allocation).await, &format!("extents({off})"))?;
        ensure!(!ext.is_empty(), "extents({off}, {}) answered nothing: it must cover at least one byte", size - off);
        for e in ext {
            ensure!(
                e.offset == off,
                "extent at {} where {off} was expected: extents must be in order without gaps",
                e.offset
            );
            ensure!(e.length > 0, "an empty extent at {off}");
            ensure!(e.end() <= size, "extent {}+{} runs past the size {size}", e.offset, e.length);
            off = e.end();
            out.push(e);
            if off >= size {
                break;
            }
        }
    }
    Ok(out)
}

/// The contract of a readable [`BlockTransport`]. `open` gives a fresh handle on the same
/// content each time; `expected` is that content when the test knows it (else the first full
/// read is the reference every other read must agree with).
///
/// # Errors
/// The first rule broken.
pub async fn readable_transport<F, Fut>(open: F, expected: Option<&[u8]>) -> Check
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Box<dyn BlockTransport>>>,
{
    let t = ok(open().await, "opening the transport")?;
    let size = t.size();
    if let Some(e) = expected {
        ensure!(size == e.len() as u64, "size() is {size}, the content is {} bytes", e.len());
    }
    ensure!(t.max_connections() >= 1, "max_connections() must be at least 1");
    ensure!(t.max_request() >= 4096, "max_request() {} is below 4 KiB", t.max_request());
    let whole = size <= WHOLE_READ_LIMIT;
    let reference: Vec<u8> = match expected {
        Some(e) if whole => {
            let got = read_range(t.as_ref(), 0, size).await?;
            if let Some(at) = got.iter().zip(e).position(|(a, b)| a != b) {
                return Err(format!("a full read differs from the content at byte {at}"));
            }
            got
        }
        Some(e) => e.to_vec(),
        None if whole => read_range(t.as_ref(), 0, size).await?,
        None => Vec::new(),
    };
    if !reference.is_empty() {
        for (off, len) in sample_points(size) {
            let b = ok(t.read_at(off, len).await, &format!("read_at({off}, {len})"))?;
            ensure!(b.len() == len, "read_at({off}, {len}) returned {} bytes", b.len());
            ensure!(
                b[..] == reference[off as usize..off as usize + len],
                "read_at({off}, {len}) disagrees with a full read"
            );
        }
    }
    // Past the end: an error, or (for transports that pad) exactly the length asked; never short.
    if let Ok(b) = t.read_at(size.saturating_sub(1), 2).await {
        ensure!(b.len() == 2, "a read across the end returned {} bytes instead of an error", b.len());
    }
    // Extents: ordered, gap-free, and zero ranges read as zeroes.
    let map = extent_map(t.as_ref()).await?;
    for e in map.iter().filter(|e| e.state.is_zero()) {
        if !reference.is_empty() {
            let r = &reference[e.offset as usize..e.end() as usize];
            ensure!(r.iter().all(|b| *b == 0), "extent {}+{} is {:?} but holds data", e.offset, e.length, e.state);
        }
    }
    // Clones and a second open read the same bytes, also concurrently.
    if let Ok(c) = t.try_clone().await {
        ensure!(c.size() == size, "a clone has size {}, not {size}", c.size());
        if !reference.is_empty() {
            let pts = sample_points(size);
            let reads = futures::future::join_all(pts.iter().map(|(o, l)| c.read_at(*o, *l))).await;
            for ((off, len), r) in pts.iter().zip(reads) {
                let b = ok(r, &format!("clone read_at({off}, {len})"))?;
                ensure!(
                    b[..] == reference[*off as usize..*off as usize + len],
                    "a clone's read_at({off}, {len}) differs"
                );
            }
        }
    }
    let again = ok(open().await, "opening the transport a second time")?;
    ensure!(again.size() == size, "a second open has size {}, not {size}", again.size());
    if !reference.is_empty() {
        let n = size.min(1 << 20);
        ensure!(read_range(again.as_ref(), 0, n).await? == reference[..n as usize], "a second open reads other bytes");
    }
    Ok(())
}

/// The contract of a writable [`BlockTransport`]. `create(size)` makes a new, empty device of
/// `size` bytes (at least 1 MiB is asked for) and returns a handle on it.
///
/// # Errors
/// The first rule broken.
pub async fn writable_transport<F, Fut>(create: F) -> Check
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<Box<dyn BlockTransport>>>,
{
    let size: u64 = (1 << 20) + 4096;
    let t = ok(create(size).await, "creating the device")?;
    ensure!(t.size() >= size, "size() {} is below the {size} asked for", t.size());
    let size = t.size();
    if t.is_zero_initialized() {
        let all = read_range(t.as_ref(), 0, size).await?;
        ensure!(all.iter().all(|b| *b == 0), "is_zero_initialized() but the new device holds data");
    }
    let mut model = read_range(t.as_ref(), 0, size).await?;
    let writes: [(u64, usize, u8); 5] =
        [(0, 4096, 1), (4096 * 3 + 17, 9000, 2), (65_536, 65_536, 3), (size - 4096, 4096, 4), (100, 5, 5)];
    for (off, len, seed) in writes {
        let data: Vec<u8> = (0..len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8) | 1).collect();
        ok(t.write_at(off, Bytes::from(data.clone())).await, &format!("write_at({off}, {len})"))?;
        // Writes are idempotent: the same write twice leaves the same bytes.
        ok(t.write_at(off, Bytes::from(data.clone())).await, &format!("repeated write_at({off}, {len})"))?;
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    // Concurrent writes through clones to disjoint ranges.
    if let Ok(c) = t.try_clone().await {
        let data = vec![9u8; 8192];
        let (a, b) = (c.write_at(200_000, Bytes::from(data.clone())), t.write_at(300_000, Bytes::from(data.clone())));
        let (ra, rb) = tokio::join!(a, b);
        ok(ra, "clone write")?;
        ok(rb, "write beside a clone")?;
        model[200_000..208_192].copy_from_slice(&data);
        model[300_000..308_192].copy_from_slice(&data);
        ok(c.flush().await, "flush of a clone")?;
    }
    if ok(t.zero(65_536 + 4096, 8192).await, "zero")? {
        model[65_536 + 4096..65_536 + 4096 + 8192].fill(0);
    }
    ok(t.flush().await, "flush")?;
    let got = read_range(t.as_ref(), 0, size).await?;
    if let Some(at) = got.iter().zip(&model).position(|(a, b)| a != b) {
        return Err(format!("after flush, byte {at} reads {} where {} was written", got[at], model[at]));
    }
    let map = extent_map(t.as_ref()).await?;
    for e in map.iter().filter(|e| e.state.is_zero()) {
        ensure!(
            got[e.offset as usize..e.end() as usize].iter().all(|b| *b == 0),
            "extent {}+{} is {:?} but holds written data",
            e.offset,
            e.length,
            e.state
        );
    }
    Ok(())
}

/// The contract of a [`SourceProvider`]. `open` connects a fresh provider on the same source.
///
/// # Errors
/// The first rule broken.
pub async fn source_provider<F, Fut>(open: F) -> Check
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Box<dyn SourceProvider>>>,
{
    let src = ok(open().await, "opening the source")?;
    ensure!(!src.kind().is_empty(), "kind() is empty");
    let inv = ok(src.inventory().await, "inventory")?;
    ensure!(!inv.vms.is_empty(), "the inventory lists no VM (give the suite a source with one)");
    let mut ids = std::collections::BTreeSet::new();
    for vm in &inv.vms {
        ensure!(!vm.name.is_empty(), "a VM without a name ({:?})", vm.id);
        ensure!(ids.insert(vm.id.source_ref.clone()), "two VMs share the id {:?}", vm.id.source_ref);
        let mut keys = std::collections::BTreeSet::new();
        for d in &vm.disks {
            ensure!(keys.insert(d.key), "{}: two devices share the key {}", vm.name, d.key);
            ensure!(d.capacity_bytes > 0, "{}: disk {} has capacity {}", vm.name, d.key, d.capacity_bytes);
            if let Some(ds) = &d.datastore {
                ensure!(
                    inv.datastores.iter().any(|x| &x.name == ds),
                    "{}: disk {} is on datastore {ds:?}, which the inventory does not list",
                    vm.name,
                    d.key
                );
            }
        }
        for n in &vm.nics {
            ensure!(keys.insert(n.key), "{}: two devices share the key {}", vm.name, n.key);
            if let Some(net) = &n.network {
                ensure!(
                    inv.networks.iter().any(|x| &x.name == net),
                    "{}: NIC {} is on network {net:?}, which the inventory does not list",
                    vm.name,
                    n.key
                );
            }
        }
    }
    let caps = src.capabilities();
    for listed in &inv.vms {
        let vm: Vm = ok(src.vm(&listed.id).await, &format!("vm({:?})", listed.id.source_ref))?;
        ensure!(
            vm.id.source_ref == listed.id.source_ref && vm.name == listed.name,
            "vm({:?}) answered another VM ({:?})",
            listed.id.source_ref,
            vm.id.source_ref
        );
        let k1: Vec<i32> = vm.disks.iter().map(|d| d.key).collect();
        let k2: Vec<i32> = listed.disks.iter().map(|d| d.key).collect();
        ensure!(k1 == k2, "{}: vm() lists disks {k1:?}, the inventory {k2:?}", vm.name);
        for disk in &vm.disks {
            let open_disk = || src.open_disk(&vm.id, disk, None);
            let t = ok(open_disk().await, &format!("{}: open_disk({})", vm.name, disk.key))?;
            ensure!(
                t.size() <= disk.capacity_bytes as u64,
                "{}: disk {} reads {} bytes, more than its capacity {} (the target volume is sized from it)",
                vm.name,
                disk.key,
                t.size(),
                disk.capacity_bytes
            );
            drop(t);
            readable_transport(open_disk, None).await.map_err(|e| format!("{}: disk {}: {e}", vm.name, disk.key))?;
        }
        if !caps.snapshots {
            let fake = SnapshotRef { id: "snapshot-1".into(), name: "x".into(), change_ids: Default::default() };
            let e = src.create_snapshot(&vm.id, "vmigrate-conformance").await;
            ensure!(
                e.as_ref().is_err_and(|e| e.kind() == ErrorKind::Unsupported),
                "{}: snapshots are not a capability, yet create_snapshot answered {:?}",
                vm.name,
                e.map(|_| ())
            );
            if let Some(d) = vm.disks.first() {
                ensure!(
                    src.open_disk(&vm.id, d, Some(&fake)).await.is_err(),
                    "{}: open_disk at a snapshot of a source without snapshots succeeded",
                    vm.name
                );
            }
        }
        if !caps.changed_blocks {
            if let Some(d) = vm.disks.first() {
                let fake = SnapshotRef { id: "snapshot-1".into(), name: "x".into(), change_ids: Default::default() };
                let e = src.changed_areas(&vm.id, d, &fake, "*", 0).await;
                ensure!(
                    e.as_ref().is_err_and(|e| e.kind() == ErrorKind::Unsupported),
                    "{}: changed blocks are not a capability, yet changed_areas answered",
                    vm.name
                );
            }
        }
        if !caps.power {
            let e = src.power_on(&vm.id).await;
            ensure!(
                e.as_ref().is_err_and(|e| e.kind() == ErrorKind::Unsupported),
                "{}: power is not a capability, yet power_on answered {:?}",
                vm.name,
                e.map(|_| ())
            );
        }
    }
    let unknown = VmId { source_ref: "vmigrate-conformance-no-such-vm.ova".into(), ..Default::default() };
    let e = src.vm(&unknown).await;
    ensure!(
        e.as_ref().is_err_and(|e| e.kind() == ErrorKind::NotFound),
        "vm() of an unknown id answered {:?} instead of a NotFound error",
        e.map(|v| v.name)
    );
    let any_disk = Disk { key: 2000, capacity_bytes: 1 << 20, file: "no-such-disk.vmdk".into(), ..Default::default() };
    ensure!(src.open_disk(&unknown, &any_disk, None).await.is_err(), "open_disk of an unknown VM succeeded");
    ok(src.close().await, "close")?;
    ok(src.close().await, "a second close (it must be a no-op)")?;
    Ok(())
}

/// The contract of a [`TargetProvider`]. `open` connects a fresh provider on the same target;
/// `vm` is the VM to migrate (with at least one disk of at most a few MiB).
///
/// # Errors
/// The first rule broken.
pub async fn target_provider<F, Fut>(open: F, vm: TargetVm) -> Check
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Box<dyn TargetProvider>>>,
{
    let t = ok(open().await, "opening the target")?;
    ensure!(!t.kind().is_empty(), "kind() is empty");
    ensure!(!vm.source.disks.is_empty(), "give the suite a VM with a disk");
    ok(t.existing_vms(&vm.namespace).await, "existing_vms")?;
    let mut volumes = Vec::new();
    for disk in &vm.source.disks {
        let v1 = ok(t.prepare_volume(&vm, disk).await, &format!("prepare_volume({})", disk.key))?;
        let v2 = ok(t.prepare_volume(&vm, disk).await, &format!("prepare_volume({}) again", disk.key))?;
        ensure!(v1 == v2, "prepare_volume is not idempotent: {v1:?} then {v2:?}");
        ensure!(v1.disk_key == disk.key, "volume for disk {} says disk {}", disk.key, v1.disk_key);
        ensure!(
            v1.size >= disk.capacity_bytes as u64,
            "volume of {} bytes for a disk of {}",
            v1.size,
            disk.capacity_bytes
        );
        volumes.push(v1);
    }
    ensure!(
        volumes.iter().map(|v| &v.name).collect::<std::collections::BTreeSet<_>>().len() == volumes.len(),
        "two disks got one volume name"
    );
    for v in &volumes {
        match ok(t.open_volume(&vm, v).await, &format!("open_volume({})", v.name))? {
            VolumeSink::Transport(w) => {
                ensure!(w.size() >= v.size, "volume {} opens with size {} < {}", v.name, w.size(), v.size);
                let data: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8 | 1).collect();
                ok(w.write_at(4096, Bytes::from(data.clone())).await, "writing the volume")?;
                if t.capabilities().incremental {
                    // A delta pass writes scattered ranges into what the first pass left.
                    ok(w.write_at(4096 + 100, Bytes::from_static(b"delta")).await, "a delta write")?;
                }
                ok(w.flush().await, "flushing the volume")?;
                let mut want = data;
                if t.capabilities().incremental {
                    want[100..105].copy_from_slice(b"delta");
                }
                let got = ok(w.read_at(4096, 65_536).await, "reading the volume back")?;
                ensure!(got[..] == want[..], "volume {} does not read back what was written and flushed", v.name);
                drop(w);
                // A second open (a resumed run) sees the same bytes.
                if let VolumeSink::Transport(again) = ok(t.open_volume(&vm, v).await, "open_volume again")? {
                    let got = ok(again.read_at(4096, 65_536).await, "reading the reopened volume")?;
                    ensure!(got[..] == want[..], "volume {} lost its bytes when opened again", v.name);
                }
            }
            VolumeSink::SelfImport | VolumeSink::Passes => {}
        }
        ok(t.finish_volume(&vm, v).await, &format!("finish_volume({})", v.name))?;
    }
    ok(t.create_vm(&vm, &volumes).await, "create_vm")?;
    ok(t.create_vm(&vm, &volumes).await, "create_vm again (it must be idempotent)")?;
    ok(t.cleanup(&vm).await, "cleanup")?;
    ok(t.cleanup(&vm).await, "cleanup again (missing is success)")?;
    // A re-run after cleanup starts over.
    let t2 = ok(open().await, "opening the target again")?;
    let v = ok(t2.prepare_volume(&vm, &vm.source.disks[0]).await, "prepare_volume after cleanup")?;
    ensure!(v.size >= vm.source.disks[0].capacity_bytes as u64, "re-prepared volume too small");
    ok(t2.cleanup(&vm).await, "final cleanup")?;
    ok(t2.close().await, "close")?;
    ok(t2.close().await, "a second close (it must be a no-op)")?;
    Ok(())
}

/// A [`TargetVm`] for `source` as the executor would build it from a plain plan: every disk on
/// storage class `standard`, every NIC on the pod network, halted after the migration.
pub fn target_vm(source: Vm) -> TargetVm {
    use vmigrate_core::plan::{NetworkDestination, StorageDestination};
    let storage = source
        .disks
        .iter()
        .map(|d| (d.key, StorageDestination { storage_class: "standard".into(), ..Default::default() }))
        .collect();
    let networks = source.nics.iter().map(|n| (n.key, NetworkDestination::Pod)).collect();
    TargetVm {
        plan: "conformance".into(),
        namespace: "vmigrate-conformance".into(),
        name: vmigrate_core::naming::sanitize_name(&source.name),
        source,
        labels: Default::default(),
        networks,
        storage,
        disk_bus: None,
        run_strategy: "Halted".into(),
        overwrite: false,
        conversion: None,
        import_hint: None,
    }
}
