//! [`OvaSource`]: a package file or a folder of them as a read-only [`SourceProvider`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use vmigrate_core::model::{Datastore, Network, NetworkKind};
use vmigrate_core::{
    BlockTransport, Disk, Error, ErrorCode, Inventory, Result, SnapshotRef, SourceCapabilities, SourceProvider, Vm,
    VmId,
};
use vmigrate_vsphere::beneath::Beneath;
use vmigrate_vsphere::vmdk::{inspect_vmdk_at, open_vmdk_at, ExtentOpener, LocalFile};

use crate::error::OvaError;
use crate::manifest::{check, parse_manifest, Manifest, MAX_MANIFEST_BYTES};
use crate::ovf::{is_vmdk_format, parse_envelope, to_vms, Envelope, MAX_OVF_BYTES};
use crate::tar::{normalise_name, scan, Entry, ScanError};

/// Bytes hashed per read while checking the manifest.
const HASH_CHUNK: usize = 1 << 20;

/// One opened package: its members, descriptor and manifest, and whether its digests were
/// checked. Every read goes through the one descriptor opened here, so what was checked is what
/// is copied even if the file is renamed or replaced meanwhile.
#[derive(Debug)]
struct Package {
    rel: String,
    raw: Arc<File>,
    file: LocalFile,
    entries: BTreeMap<String, Entry>,
    envelope: Envelope,
    manifest: Option<(String, Manifest)>,
    verified: tokio::sync::OnceCell<()>,
}

/// An OVA package (`ova:///path/vm.ova`) or a folder of them (`ova:///path/folder`) as a
/// read-only, cold-only source. See the crate documentation.
#[derive(Debug)]
pub struct OvaSource {
    root: PathBuf,
    beneath: Beneath,
    /// The one package of an `ova:///path/file.ova` source, relative to `root`.
    only: Option<String>,
    datastore: String,
    packages: Mutex<HashMap<String, Arc<Package>>>,
}

fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::new(ErrorCode::Internal, "ova task failed").with_source(e)
}

fn is_ova_name(name: &str) -> bool {
    name.len() > 4 && name[name.len() - 4..].eq_ignore_ascii_case(".ova")
}

impl OvaSource {
    /// Open a package file or a folder of packages.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] when `path` is neither a readable folder nor a readable file.
    pub fn open(path: &Path) -> Result<OvaSource> {
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::new(ErrorCode::BadUrl, format!("ova source {} is not readable", path.display())).with_source(e)
        })?;
        let (root, only) = if meta.is_dir() {
            (path.to_path_buf(), None)
        } else if meta.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (parent.to_path_buf(), Some(name))
        } else {
            return Err(Error::new(ErrorCode::BadUrl, format!("{} is neither a file nor a folder", path.display())));
        };
        let beneath = Beneath::new(&root)?;
        let datastore =
            beneath.root().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ova".into());
        Ok(OvaSource { root, beneath, only, datastore, packages: Mutex::new(HashMap::new()) })
    }

    /// Parse `ova:///absolute/path[?datastore=NAME]`: a `.ova` file or a folder of them.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] for another scheme, a host part, an unknown parameter, or a path
    /// that is not readable.
    pub fn from_url(url: &str) -> Result<OvaSource> {
        let bad = |why: &str| Error::new(ErrorCode::BadUrl, format!("bad ova url {url:?}: {why}"));
        let u = url::Url::parse(url).map_err(|e| bad("not a url").with_source(e))?;
        if u.scheme() != "ova" {
            return Err(bad("scheme must be ova"));
        }
        let path = u.to_file_path().map_err(|_| bad("expected ova:///absolute/path (no host)"))?;
        let mut src = OvaSource::open(&path)?;
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "datastore" if !v.is_empty() => src.datastore = v.into_owned(),
                other => return Err(bad(&format!("unknown query parameter {other:?}"))),
            }
        }
        Ok(src)
    }

    /// The datastore name every disk of this source is reported on (the folder's name, or
    /// `?datastore=`): what a plan's storage map names.
    pub fn datastore_name(&self) -> &str {
        &self.datastore
    }

    /// Packages relative to the root: the one file, or the `.ova` files in the folder and one
    /// level of sub-folders.
    async fn scan_root(&self) -> Result<Vec<String>> {
        if let Some(one) = &self.only {
            return Ok(vec![one.clone()]);
        }
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
                    if ft.is_dir() && depth < 1 {
                        dirs.push((entry.path(), depth + 1));
                    } else if ft.is_file() && is_ova_name(&name) {
                        if let Ok(rel) = entry.path().strip_prefix(&root) {
                            found.push(rel.to_string_lossy().into_owned());
                        }
                    }
                }
            }
            found.sort();
            Ok(found)
        })
        .await
        .map_err(task_failed)?
    }

    /// The package `rel`, opened and indexed once per source.
    async fn package(&self, rel: &str) -> Result<Arc<Package>> {
        if let Some(p) = self.packages.lock().unwrap_or_else(|p| p.into_inner()).get(rel) {
            return Ok(p.clone());
        }
        let (beneath, r) = (self.beneath.clone(), rel.to_owned());
        let pkg =
            Arc::new(tokio::task::spawn_blocking(move || load_package(&beneath, &r)).await.map_err(task_failed)??);
        let mut map = self.packages.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry(rel.to_owned()).or_insert(pkg).clone())
    }

    /// The VMs of one package, with disk capacities read from the VMDKs themselves.
    async fn package_vms(&self, pkg: &Package) -> Result<Vec<Vm>> {
        let mut vms = to_vms(&pkg.envelope, &pkg.rel, &self.datastore).map_err(|e| e.at(format!("ova {}", pkg.rel)))?;
        let opener = TarOpener::new(pkg);
        for vm in &mut vms {
            for d in &mut vm.disks {
                // The target volume is sized from this; the bytes copied are the VMDK's.
                match inspect_vmdk_at(&d.file, &opener).await {
                    Ok(info) => {
                        let actual = i64::try_from(info.capacity_bytes).unwrap_or(i64::MAX);
                        if actual != d.capacity_bytes {
                            tracing::warn!(ova = %pkg.rel, disk = %d.file, ovf = d.capacity_bytes, vmdk = actual,
                                "disk capacity in the descriptor differs from the VMDK's; using the VMDK's");
                            d.capacity_bytes = actual;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(ova = %pkg.rel, disk = %d.file, error = %e.report(), "cannot read disk header")
                    }
                }
            }
        }
        Ok(vms)
    }

    /// Check every digest of the manifest against the archive, once per package. Without a
    /// manifest nothing can be checked (warned once).
    async fn verify(&self, pkg: &Arc<Package>) -> Result<()> {
        pkg.verified
            .get_or_try_init(|| async {
                let p = pkg.clone();
                tokio::task::spawn_blocking(move || verify_package(&p)).await.map_err(task_failed)?
            })
            .await
            .map(|_| ())
    }

    fn split_id<'a>(&self, id: &'a VmId) -> Result<&'a str> {
        let rel = id.source_ref.split_once('#').map(|(p, _)| p).unwrap_or(&id.source_ref);
        let ok = normalise_name(rel).is_ok_and(|n| n == rel)
            && is_ova_name(rel)
            && self.only.as_deref().is_none_or(|o| o == rel);
        if ok {
            Ok(rel)
        } else {
            Err(Error::new(ErrorCode::VmNotFound, format!("vm id {:?} is not a package of this source", id.source_ref)))
        }
    }
}

fn load_package(beneath: &Beneath, rel: &str) -> Result<Package> {
    let ctx = || format!("ova {rel}");
    let file = beneath.open(Path::new(rel))?;
    let size = file.metadata().map_err(|e| Error::io(format!("stat {rel}"), e))?.len();
    let entries = scan(&file, size).map_err(|e| match e {
        ScanError::Ova(e) => e.at(ctx()),
        ScanError::Io(e) => Error::io(format!("reading {rel}"), e),
    })?;
    let top = |ext: &str| -> Vec<&Entry> {
        entries.iter().filter(|e| !e.name.contains('/') && e.name.to_ascii_lowercase().ends_with(ext)).collect()
    };
    let read = |e: &Entry, limit: usize| -> Result<Vec<u8>> {
        if e.size > limit as u64 {
            return Err(
                OvaError::Unsupported { what: format!("{} is {} bytes (at most {limit})", e.name, e.size) }.at(ctx())
            );
        }
        let mut buf = vec![0u8; e.size as usize];
        file.read_exact_at(&mut buf, e.offset).map_err(|err| Error::io(format!("reading {} in {rel}", e.name), err))?;
        Ok(buf)
    };
    let ovf = match top(".ovf").as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(
                OvaError::MissingFile { file: rel.to_owned(), why: "the archive holds no .ovf descriptor" }.at(ctx())
            )
        }
        _ => return Err(OvaError::Ovf { reason: "the archive holds several .ovf descriptors".into() }.at(ctx())),
    };
    if entries.first().map(|e| &e.name) != Some(&ovf.name) {
        tracing::warn!(ova = rel, "the .ovf descriptor is not the first member (ovftool writes it first)");
    }
    let ovf_bytes = read(&ovf, MAX_OVF_BYTES)?;
    let manifest = match top(".mf").as_slice() {
        [] => None,
        [one] => {
            let m = parse_manifest(&read(one, MAX_MANIFEST_BYTES)?).map_err(|e| e.at(ctx()))?;
            Some((one.name.clone(), m))
        }
        _ => {
            return Err(
                OvaError::Manifest { line: 0, reason: "the archive holds several .mf manifests".into() }.at(ctx())
            )
        }
    };
    let by_name: BTreeMap<String, Entry> = entries.iter().map(|e| (e.name.clone(), e.clone())).collect();
    if let Some((_, m)) = &manifest {
        // The descriptor first: a tampered descriptor is refused before it is even parsed.
        let sum = m.sums.get(&ovf.name).ok_or_else(|| {
            OvaError::MissingFile { file: ovf.name.clone(), why: "the descriptor is not listed in the manifest" }
                .at(ctx())
        })?;
        let mut h = sum.algorithm.hasher();
        h.update(&ovf_bytes);
        check(&ovf.name, sum, h.finish()).map_err(|e| e.at(ctx()))?;
        for name in m.sums.keys() {
            let known = normalise_name(name).ok().is_some_and(|n| by_name.contains_key(&n));
            if !known {
                return Err(OvaError::MissingFile {
                    file: name.clone(),
                    why: "listed in the manifest but not in the archive",
                }
                .at(ctx()));
            }
        }
    } else {
        tracing::warn!(ova = rel, "no manifest (.mf): the package's contents cannot be checked");
    }
    let envelope = parse_envelope(&ovf_bytes).map_err(|e| e.at(ctx()))?;
    for f in &envelope.files {
        if f.href.contains("://") {
            return Err(OvaError::Unsupported { what: format!("{} is an external reference", f.href) }.at(ctx()));
        }
        let name = normalise_name(&f.href)
            .map_err(|reason| OvaError::UnsafeEntry { name: f.href.clone(), offset: 0, reason }.at(ctx()))?;
        if f.compression.is_some() || f.chunked {
            return Err(OvaError::Unsupported { what: format!("{} is compressed or chunked", f.href) }.at(ctx()));
        }
        let entry = by_name.get(&name).ok_or_else(|| {
            OvaError::MissingFile { file: f.href.clone(), why: "named by the descriptor but not in the archive" }
                .at(ctx())
        })?;
        if let Some((_, m)) = &manifest {
            if !m.sums.keys().any(|k| normalise_name(k).ok().as_deref() == Some(name.as_str())) {
                return Err(OvaError::MissingFile {
                    file: f.href.clone(),
                    why: "named by the descriptor but not in the manifest",
                }
                .at(ctx()));
            }
        }
        if f.size.is_some_and(|s| s != entry.size) {
            tracing::warn!(ova = rel, file = %f.href, "the descriptor's ovf:size differs from the member's size");
        }
    }
    let raw = Arc::new(file.try_clone().map_err(|e| Error::io(format!("reopening {rel}"), e))?);
    let file = LocalFile::from_file(file, &beneath.root().join(rel))?;
    Ok(Package {
        rel: rel.to_owned(),
        raw,
        file,
        entries: by_name,
        envelope,
        manifest,
        verified: tokio::sync::OnceCell::new(),
    })
}

fn verify_package(p: &Package) -> Result<()> {
    let ctx = || format!("ova {}", p.rel);
    let Some((mf_name, m)) = &p.manifest else { return Ok(()) };
    let mut buf = vec![0u8; HASH_CHUNK];
    for (name, sum) in &m.sums {
        let Some(e) = normalise_name(name).ok().and_then(|n| p.entries.get(&n)) else {
            return Err(OvaError::MissingFile {
                file: name.clone(),
                why: "listed in the manifest but not in the archive",
            }
            .at(ctx()));
        };
        if e.name == *mf_name {
            continue;
        }
        let mut h = sum.algorithm.hasher();
        let mut done = 0u64;
        while done < e.size {
            let n = (e.size - done).min(HASH_CHUNK as u64) as usize;
            p.raw
                .read_exact_at(&mut buf[..n], e.offset + done)
                .map_err(|err| Error::io(format!("reading {} in {}", e.name, p.rel), err))?;
            h.update(&buf[..n]);
            done += n as u64;
        }
        check(name, sum, h.finish()).map_err(|e| e.at(ctx()))?;
    }
    tracing::debug!(ova = %p.rel, files = m.sums.len(), "manifest digests match");
    Ok(())
}

/// One member of the archive as a read-only [`BlockTransport`]: reads at `offset` are reads at
/// `base + offset` of the package file, checked to stay inside the member.
#[derive(Debug, Clone)]
pub struct Member {
    file: LocalFile,
    base: u64,
    size: u64,
    name: Arc<str>,
}

#[async_trait]
impl BlockTransport for Member {
    fn size(&self) -> u64 {
        self.size
    }

    fn max_connections(&self) -> usize {
        8
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.size) {
            return Err(Error::new(
                ErrorCode::ShortRead,
                format!("read of {len} bytes at {offset} past the end of member {} ({} bytes)", self.name, self.size),
            ));
        }
        self.file.read_at(self.base + offset, len).await
    }

    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "ova members are read-only"))
    }

    fn backing(&self) -> Vec<vmigrate_core::Backing> {
        self.file.backing()
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Opens the files a VMDK names as members of the archive.
#[derive(Debug, Clone)]
struct TarOpener {
    file: LocalFile,
    entries: Arc<BTreeMap<String, Entry>>,
    rel: String,
}

impl TarOpener {
    fn new(p: &Package) -> Self {
        TarOpener { file: p.file.clone(), entries: Arc::new(p.entries.clone()), rel: p.rel.clone() }
    }
}

#[async_trait]
impl ExtentOpener for TarOpener {
    async fn open(&self, name: &str) -> Result<Box<dyn BlockTransport>> {
        let n = normalise_name(name).map_err(|reason| {
            OvaError::UnsafeEntry { name: name.to_owned(), offset: 0, reason }.at(format!("ova {}", self.rel))
        })?;
        let e = self.entries.get(&n).ok_or_else(|| {
            OvaError::MissingFile { file: name.to_owned(), why: "not in the archive" }.at(format!("ova {}", self.rel))
        })?;
        Ok(Box::new(Member { file: self.file.clone(), base: e.offset, size: e.size, name: Arc::from(n) }))
    }
}

#[async_trait]
impl SourceProvider for OvaSource {
    fn kind(&self) -> &'static str {
        "ova"
    }

    /// Read-only and cold-only: no power control, snapshots or changed blocks, so validation
    /// blocks a warm plan before anything runs.
    /// An OVF's guest ids are VMware's: the vSphere rules judge them
    /// ([`vmigrate_vsphere::rules`]).
    fn vm_rules(&self) -> vmigrate_core::validate::VmRules {
        vmigrate_vsphere::rules::validate_vm
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities::default()
    }

    async fn inventory(&self) -> Result<Inventory> {
        let mut inv = Inventory::default();
        let mut networks = BTreeSet::new();
        for rel in self.scan_root().await? {
            let loaded = match self.package(&rel).await {
                Ok(p) => self.package_vms(&p).await.map(|vms| (p, vms)),
                Err(e) => Err(e),
            };
            let (pkg, vms) = match loaded {
                Ok(x) => x,
                // In a folder, one bad package does not hide the others; a single package's
                // problem is the answer.
                Err(e) if self.only.is_none() && crate::error::ova_error(&e).is_some() => {
                    tracing::warn!(ova = rel, error = %e.report(), "skipping unreadable package");
                    continue;
                }
                Err(e) => return Err(e),
            };
            networks.extend(pkg.envelope.networks.iter().cloned());
            networks.extend(vms.iter().flat_map(|v| v.nics.iter().filter_map(|n| n.network.clone())));
            inv.vms.extend(vms);
        }
        inv.networks =
            networks.into_iter().map(|name| Network { id: name.clone(), name, kind: NetworkKind::Standard }).collect();
        inv.datastores = vec![Datastore {
            id: self.datastore.clone(),
            name: self.datastore.clone(),
            kind: "ova".into(),
            ..Default::default()
        }];
        Ok(inv)
    }

    /// The VM, after every digest of its package's manifest was checked: the executor asks for
    /// it before it prepares any volume, so a damaged package is refused before anything is
    /// written.
    async fn vm(&self, id: &VmId) -> Result<Vm> {
        let rel = self.split_id(id)?;
        let pkg = self.package(rel).await?;
        self.verify(&pkg).await?;
        self.package_vms(&pkg)
            .await?
            .into_iter()
            .find(|v| v.id.source_ref == id.source_ref)
            .ok_or_else(|| Error::new(ErrorCode::VmNotFound, format!("no virtual system {:?} in {rel}", id.source_ref)))
    }

    async fn open_disk(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        if snapshot.is_some() {
            return Err(Error::unsupported("ova sources have no snapshots (cold migration only)"));
        }
        let rel = self.split_id(vm)?;
        let pkg = self.package(rel).await?;
        self.verify(&pkg).await?;
        let file_ref = pkg.envelope.files.iter().find(|f| f.href == disk.file).ok_or_else(|| {
            OvaError::MissingFile { file: disk.file.clone(), why: "not a file the descriptor references" }
                .at(format!("ova {rel}"))
        })?;
        let format = pkg
            .envelope
            .disks
            .iter()
            .find(|d| d.file_ref.as_deref() == Some(file_ref.id.as_str()))
            .map(|d| d.format.clone())
            .unwrap_or_default();
        if !is_vmdk_format(&format) {
            return Err(OvaError::Unsupported {
                what: format!("disk {} has format {format:?} (only VMDK is read)", disk.file),
            }
            .at(format!("ova {rel}")));
        }
        let t = open_vmdk_at(&disk.file, Arc::new(TarOpener::new(&pkg)) as Arc<dyn ExtentOpener>).await?;
        if i64::try_from(t.size()).unwrap_or(i64::MAX) > disk.capacity_bytes {
            return Err(Error::new(
                ErrorCode::SourceDiskFormat,
                format!(
                    "disk {} in {rel} holds {} bytes, more than the {} the VM was planned with",
                    disk.file,
                    t.size(),
                    disk.capacity_bytes
                ),
            ));
        }
        Ok(t)
    }
}
