//! The local VMware datastore folder source (`vmx:///path`).
//!
//! A folder as it sits on a datastore, or was copied from one: `<vm>/<vm>.vmx` plus the `.vmdk`
//! descriptors and extents. It needs no server, so the demo and many tests use it. The source
//! is read-only: no power control, snapshots or changed-block tracking
//! ([`SourceCapabilities`] all false).
//!
//! ```no_run
//! # async fn demo() -> vmigrate_core::Result<()> {
//! use vmigrate_core::SourceProvider;
//! let src = vmigrate_vsphere::local::LocalSource::from_url("vmx:///srv/datastore1?datastore=WorkloadDatastore")?;
//! for vm in src.inventory().await?.vms {
//!     println!("{} ({} disks)", vm.name, vm.disks.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use vmigrate_core::model::{Datastore, Network, NetworkKind, PowerState};
use vmigrate_core::{
    BlockTransport, Disk, Error, ErrorCode, Inventory, Result, SnapshotRef, SourceCapabilities, SourceProvider, Vm,
    VmId,
};

use crate::beneath::{join_within, Beneath};
use crate::vmdk::{inspect_vmdk_at, open_vmdk_at, DirOpener, ExtentOpener};
use crate::vmx::{
    nic_is_distributed, nic_network, parse_vmx, vmsd_snapshots, vmx_devices, vmx_to_vm, DiskFileInfo, VmxLocation,
    MAX_VMX_BYTES,
};

/// File in the root folder whose first line names the datastore.
pub const DATASTORE_NAME_FILE: &str = ".vmigrate-datastore";

/// A local datastore folder as a read-only [`SourceProvider`].
#[derive(Debug, Clone)]
pub struct LocalSource {
    root: PathBuf,
    datastore: String,
    /// Every file the source reads is opened through this: it stays inside `root`.
    beneath: Beneath,
}

impl LocalSource {
    /// Use the folder `root`. The datastore is named by a `.vmigrate-datastore` file in it, or
    /// else after the folder.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] when `root` is not a readable directory.
    pub fn open(root: &Path) -> Result<LocalSource> {
        let meta = std::fs::metadata(root).map_err(|e| {
            Error::new(ErrorCode::BadUrl, format!("datastore folder {} is not readable", root.display())).with_source(e)
        })?;
        if !meta.is_dir() {
            return Err(Error::new(ErrorCode::BadUrl, format!("{} is not a directory", root.display())));
        }
        let from_file = std::fs::read_to_string(root.join(DATASTORE_NAME_FILE))
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_owned()))
            .filter(|s| !s.is_empty());
        let datastore = from_file.unwrap_or_else(|| {
            root.canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "datastore".to_owned())
        });
        Ok(LocalSource { root: root.to_path_buf(), datastore, beneath: Beneath::new(root)? })
    }

    /// Parse `vmx:///absolute/path[?datastore=NAME]` (`datastore.name=` is accepted too).
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] for another scheme, a host part, or a folder that is not readable.
    pub fn from_url(url: &str) -> Result<LocalSource> {
        let bad = |why: &str| Error::new(ErrorCode::BadUrl, format!("bad vmx url {url:?}: {why}"));
        let u = url::Url::parse(url).map_err(|e| bad("not a url").with_source(e))?;
        if u.scheme() != "vmx" {
            return Err(bad("scheme must be vmx"));
        }
        let root = u.to_file_path().map_err(|_| bad("expected vmx:///absolute/path (no host)"))?;
        let mut src = LocalSource::open(&root)?;
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "datastore" | "datastore.name" if !v.is_empty() => src.datastore = v.into_owned(),
                other => return Err(bad(&format!("unknown query parameter {other:?}"))),
            }
        }
        Ok(src)
    }

    /// Override the datastore name.
    pub fn with_datastore(mut self, name: impl Into<String>) -> Self {
        self.datastore = name.into();
        self
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The datastore name used in `[name] path` file names.
    pub fn datastore_name(&self) -> &str {
        &self.datastore
    }

    /// VMX (and template `.vmtx`) files zero, one or two folders down, relative to the root.
    async fn scan(&self) -> Result<Vec<String>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let mut dirs = vec![(root.clone(), 0usize)];
            while let Some((dir, depth)) = dirs.pop() {
                let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
                for entry in rd {
                    let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') {
                        continue;
                    }
                    let ft = entry.file_type().map_err(|e| Error::io(format!("stat {name}"), e))?;
                    let path = entry.path();
                    if ft.is_dir() && depth < 2 && !name.ends_with(".lck") {
                        dirs.push((path, depth + 1));
                    } else if ft.is_file() && (name.ends_with(".vmx") || name.ends_with(".vmtx")) {
                        if let Ok(rel) = path.strip_prefix(&root) {
                            found.push(rel.to_string_lossy().replace('\\', "/"));
                        }
                    }
                }
            }
            found.sort();
            Ok(found)
        })
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, "scan task failed").with_source(e))?
    }

    /// A path below the root from a relative name, refusing `..` and absolute names.
    fn below_root(&self, rel: &str) -> Option<PathBuf> {
        let p = Path::new(rel);
        if p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
            Some(self.root.join(p))
        } else {
            None
        }
    }

    /// Resolve a file a VMX names: relative to the VM folder; an absolute datastore path
    /// falls back to its file name in the VM folder (folders copied off a datastore).
    /// The result is relative to the root; `None` when a relative name climbs out of it.
    fn resolve_in_vm_dir(&self, vm_dir: &Path, name: &str) -> Option<PathBuf> {
        let p = Path::new(name);
        if p.is_absolute() {
            if let Some(rel) = self.beneath.relative(p) {
                return Some(rel.into_owned());
            }
            return Some(vm_dir.join(p.file_name().unwrap_or_default()));
        }
        join_within(vm_dir, p)
    }

    /// The path (relative to the root) of a VM's disk descriptor.
    fn disk_rel_path(&self, vm: &VmId, disk: &Disk) -> Result<PathBuf> {
        let escapes = || Error::new(ErrorCode::UnsafePath, format!("disk file {:?} escapes the datastore", disk.file));
        if self.below_root(&vm.source_ref).is_none() {
            return Err(Error::new(
                ErrorCode::VmNotFound,
                format!("vm id {:?} is not inside the datastore", vm.source_ref),
            ));
        }
        let vm_rel_dir = Path::new(&vm.source_ref).parent().map(Path::to_path_buf).unwrap_or_default();
        match disk.file.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            Some((ds, rel)) if ds == self.datastore => join_within(Path::new(""), Path::new(rel)).ok_or_else(escapes),
            Some((ds, _)) => Err(Error::new(
                ErrorCode::SourceFileMissing,
                format!("disk {:?} is on datastore {ds:?}, not {:?}", disk.file, self.datastore),
            )),
            None => self.resolve_in_vm_dir(&vm_rel_dir, &disk.file).ok_or_else(escapes),
        }
    }

    /// Read a small file inside the root (a VMX, a `.vmsd`), at most `limit` bytes.
    async fn read_small(&self, rel: &Path, limit: usize) -> Result<Vec<u8>> {
        let (beneath, rel) = (self.beneath.clone(), rel.to_path_buf());
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let f = beneath.open(&rel)?;
            let mut buf = Vec::new();
            f.take(limit as u64 + 1)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(format!("reading {}", rel.display()), e))?;
            Ok(buf)
        })
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, "read task failed").with_source(e))?
    }

    /// Open a VMDK (relative to the root) with its extents and parents inside the root.
    fn opener_for(&self, rel: &Path) -> (DirOpener, String) {
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (DirOpener::beneath(self.beneath.clone(), dir), name)
    }

    async fn load_vm(&self, rel: &str) -> Result<Vm> {
        let path = self.below_root(rel).ok_or_else(|| {
            Error::new(ErrorCode::VmNotFound, format!("vm id {rel:?} is not a path inside the datastore"))
        })?;
        let bytes = match self.read_small(Path::new(rel), MAX_VMX_BYTES).await {
            Ok(b) => b,
            Err(e) if e.code() == ErrorCode::SourceFileMissing => {
                return Err(Error::new(ErrorCode::VmNotFound, format!("no vmx file {rel}")).with_source(e))
            }
            Err(e) => return Err(e),
        };
        if bytes.len() > MAX_VMX_BYTES {
            return Err(Error::new(ErrorCode::SourceDescriptorParse, format!("{rel} is too large for a vmx file")));
        }
        let text = String::from_utf8_lossy(&bytes);
        let vmx = parse_vmx(&text)
            .map_err(|e| Error::new(ErrorCode::SourceDescriptorParse, format!("parsing {rel}")).with_source(e))?;
        let vm_dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let vm_rel_dir = Path::new(rel).parent().map(Path::to_path_buf).unwrap_or_default();
        let folder = Path::new(rel).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();

        let mut infos: HashMap<String, DiskFileInfo> = HashMap::new();
        for dev in vmx_devices(&vmx).into_iter().filter(|d| !d.cdrom && !d.file_name.is_empty()) {
            let Some(disk_path) = self.resolve_in_vm_dir(&vm_rel_dir, &dev.file_name) else {
                tracing::warn!(vm = rel, disk = %dev.file_name, "disk file escapes the datastore; ignored");
                continue;
            };
            let (opener, name) = self.opener_for(&disk_path);
            match inspect_vmdk_at(&name, &opener).await {
                Ok(info) => {
                    let rdm = info.is_rdm();
                    let thin = info.descriptor.is_thin();
                    infos
                        .insert(dev.file_name.clone(), DiskFileInfo { capacity_bytes: info.capacity_bytes, rdm, thin });
                }
                Err(e) => {
                    tracing::warn!(vm = rel, disk = %disk_path.display(), error = %e.report(), "cannot read disk descriptor")
                }
            }
        }
        let loc = VmxLocation { datastore: &self.datastore, folder: &folder };
        let mut vm = vmx_to_vm(&vmx, rel, loc, &|name| infos.get(name).copied());
        // Names are bounded where they enter (the tables, the target names, the status).
        vmigrate_core::plan::check_name(&vm.name, &format!("displayName in {rel}"))
            .map_err(|e| Error::new(ErrorCode::SourceDescriptorParse, e.message().to_string()))?;
        if rel.ends_with(".vmtx") {
            vm.template = true;
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let vmsd = vm_rel_dir.join(format!("{stem}.vmsd"));
        if let Ok(bytes) = self.read_small(&vmsd, MAX_VMX_BYTES).await {
            let text = String::from_utf8_lossy(&bytes);
            match parse_vmx(&text) {
                Ok(v) => vm.snapshots = vmsd_snapshots(&v),
                Err(e) => tracing::warn!(vm = rel, error = %e, "ignoring unreadable snapshot list"),
            }
        }
        vm.power_state = power_state(&path, &vm_dir, &stem).await;
        Ok(vm)
    }
}

/// Running VMs hold lock files (`x.vmx.lck`, `disk.vmdk.lck`); a `.vmss` without locks is a
/// suspended VM.
async fn power_state(vmx: &Path, vm_dir: &Path, stem: &str) -> PowerState {
    let mut lck = vmx.as_os_str().to_owned();
    lck.push(".lck");
    if tokio::fs::try_exists(Path::new(&lck)).await.unwrap_or(false) {
        return PowerState::PoweredOn;
    }
    let mut suspended = false;
    if let Ok(mut rd) = tokio::fs::read_dir(vm_dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".lck") || n.starts_with(".lck-") {
                return PowerState::PoweredOn;
            }
            if n == format!("{stem}.vmss") {
                suspended = true;
            }
        }
    }
    if suspended {
        PowerState::Suspended
    } else {
        PowerState::PoweredOff
    }
}

#[async_trait]
impl SourceProvider for LocalSource {
    fn kind(&self) -> &'static str {
        "vmx"
    }

    /// VMware's guest ids, Tools, fault tolerance and DRS rules ([`crate::rules`]).
    fn vm_rules(&self) -> vmigrate_core::validate::VmRules {
        crate::rules::validate_vm
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities::default()
    }

    async fn inventory(&self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        let mut networks: BTreeMap<String, NetworkKind> = BTreeMap::new();
        for rel in self.scan().await? {
            let vm = match self.load_vm(&rel).await {
                Ok(vm) => vm,
                Err(e) if e.code() == ErrorCode::SourceDescriptorParse => {
                    tracing::warn!(vmx = rel, error = %e.report(), "skipping unparsable vmx");
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Network kinds need the raw keys; re-derive from the NIC names we mapped.
            let bytes = self.read_small(Path::new(&rel), MAX_VMX_BYTES).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            let vmx = parse_vmx(&text).unwrap_or_default();
            for n in crate::vmx::ethernet_indices(&vmx) {
                let p = format!("ethernet{n}");
                if let Some(name) = nic_network(&vmx, &p) {
                    let kind =
                        if nic_is_distributed(&vmx, &p) { NetworkKind::Distributed } else { NetworkKind::Standard };
                    networks.entry(name).or_insert(kind);
                }
            }
            inv.vms.push(vm);
        }
        inv.networks = networks.into_iter().map(|(name, kind)| Network { id: name.clone(), name, kind }).collect();
        // The folder's file system, as vCenter reports a datastore's capacity and free space.
        let (capacity_bytes, free_bytes) = match rustix::fs::statvfs(&self.root) {
            Ok(st) => (st.f_blocks.saturating_mul(st.f_frsize), st.f_bavail.saturating_mul(st.f_frsize)),
            Err(_) => (0, 0),
        };
        inv.datastores = vec![Datastore {
            id: self.datastore.clone(),
            name: self.datastore.clone(),
            kind: "local".into(),
            capacity_bytes,
            free_bytes,
        }];
        tracing::debug!(root = %self.root.display(), vms = inv.vms.len(), "scanned local datastore");
        Ok(inv)
    }

    async fn vm(&self, id: &VmId) -> Result<Vm> {
        self.load_vm(&id.source_ref).await
    }

    /// The VMDK descriptors in the datastore folder (what a guest inspection opens read-only),
    /// when every disk resolves inside it and none is a raw device mapping.
    fn local_disk_files(&self, vm: &vmigrate_core::model::Vm) -> Option<Vec<PathBuf>> {
        vm.disks
            .iter()
            .map(|d| if d.rdm { None } else { self.disk_rel_path(&vm.id, d).ok().map(|p| self.root.join(p)) })
            .collect()
    }

    async fn open_disk(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        if snapshot.is_some() {
            return Err(Error::unsupported("vmx sources have no snapshots"));
        }
        let path = self.disk_rel_path(vm, disk)?;
        if disk.rdm {
            return Err(Error::new(
                ErrorCode::SourceDiskFormat,
                format!("{} is a raw device mapping: its LUN is not in the datastore folder", disk.file),
            ));
        }
        let (opener, name) = self.opener_for(&path);
        open_vmdk_at(&name, std::sync::Arc::new(opener) as std::sync::Arc<dyn ExtentOpener>).await
    }
}
