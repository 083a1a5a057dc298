//! The local output folder target (`dir:///path`): the objects a cluster migration would create,
//! written as files, like `virt-v2v -o kubevirt`.
//!
//! ```text
//! <root>/manifests.yaml        DataVolumes (source.upload), VirtualMachines, Services, Routes
//! <root>/disks/<vm>-disk<N>.img raw sparse images (or .qcow2 when asked)
//! <root>/NEXT-STEPS.txt        kubectl apply + virtctl image-upload commands, in order
//! ```
//!
//! `manifests.yaml` is rewritten whole (through a temporary file and a rename) after every
//! change, its documents sorted by kind (DataVolume, VirtualMachine, Service, Route, Ingress),
//! namespace and name, so a re-run produces the same bytes. qcow2 output is made with
//! `qemu-img convert` after the raw copy completes (`finish_volume`), then the raw file is
//! removed; raw is the default because `virtctl image-upload` streams it as it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use vmigrate_core::convert::{self, ConversionRequest, DiskImage, GuestConversion};
use vmigrate_core::file::FileTransport;
use vmigrate_core::model::Disk;
use vmigrate_core::plan::ServiceSpec;
use vmigrate_core::{Error, ErrorCode, ExistingVm, PreparedVolume, Result, TargetProvider, TargetVm, VolumeSink};

use crate::builder::{self, VolumeSource, ANNOTATION_SOURCE_ID, LABEL_PLAN};
use crate::error::KubevirtError;
use crate::objects::{DataVolume, VirtualMachine};

/// Choices of the output folder, from the URL query (`dir:///out?format=qcow2&expose=ingress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirOptions {
    /// Convert disks to qcow2 after copying (needs `qemu-img`).
    pub qcow2: bool,
    /// Write Ingresses instead of OpenShift Routes.
    pub ingress: bool,
}

/// Kinds in the order they are written (and applied).
const KIND_ORDER: &[&str] = &["DataVolume", "VirtualMachine", "Service", "Route", "Ingress"];

type Key = (usize, String, String);

/// The local output folder target. Cheap to open; all state lives in the folder.
#[derive(Debug)]
pub struct DirTarget {
    root: PathBuf,
    options: DirOptions,
    objects: Mutex<BTreeMap<Key, serde_json::Value>>,
    /// Volumes allocated (empty) by this process and not opened since.
    fresh: Mutex<std::collections::HashSet<String>>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| KubevirtError::io(context, e).into()
}

fn key_of(v: &serde_json::Value) -> Option<Key> {
    let kind = v.get("kind")?.as_str()?;
    let order = KIND_ORDER.iter().position(|k| *k == kind)?;
    let md = v.get("metadata")?;
    let ns = md.get("namespace").and_then(|n| n.as_str()).unwrap_or("").to_string();
    let name = md.get("name")?.as_str()?.to_string();
    Some((order, ns, name))
}

fn label<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get("labels")?.get(key)?.as_str()
}

fn annotation<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

impl DirTarget {
    /// Open (creating it if needed) an output folder with default options.
    ///
    /// # Errors
    /// The folder cannot be created, or an existing `manifests.yaml` does not parse.
    pub fn open(root: impl AsRef<Path>) -> Result<DirTarget> {
        DirTarget::with_options(root, DirOptions::default())
    }

    /// Open an output folder with options.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn with_options(root: impl AsRef<Path>, options: DirOptions) -> Result<DirTarget> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(root.join("disks")).map_err(io(format!("creating {}", root.display())))?;
        // Disks are written under disks/: a link there would send them elsewhere.
        let disks =
            std::fs::symlink_metadata(root.join("disks")).map_err(io(format!("stat {}/disks", root.display())))?;
        if !disks.file_type().is_dir() {
            return Err(Error::new(
                ErrorCode::Io,
                format!(
                    "{}/disks is not a folder (a symbolic link?); refusing to write disks through it",
                    root.display()
                ),
            ));
        }
        let objects = Self::load(&root.join("manifests.yaml"))?;
        Ok(DirTarget { root, options, objects: Mutex::new(objects), fresh: Mutex::default() })
    }

    /// Parse a `dir://` URL: `dir:///abs/path[?format=qcow2&expose=ingress]`.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] for another scheme, a relative path or an unknown option.
    pub fn from_url(url: &str) -> Result<DirTarget> {
        let bad = |m: String| Error::from(KubevirtError::BadOption(m));
        let u = url::Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL ({e})")))?;
        if u.scheme() != "dir" {
            return Err(bad(format!("{url:?} is not a dir:// URL")));
        }
        let path = u.to_file_path().map_err(|()| bad(format!("{url:?} has no absolute path")))?;
        let mut opts = DirOptions::default();
        for (k, v) in u.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("format", "raw") => opts.qcow2 = false,
                ("format", "qcow2") => opts.qcow2 = true,
                ("expose", "route") => opts.ingress = false,
                ("expose", "ingress") => opts.ingress = true,
                _ => return Err(bad(format!("unknown dir:// option {k}={v}"))),
            }
        }
        DirTarget::with_options(path, opts)
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of `manifests.yaml`.
    pub fn manifests_path(&self) -> PathBuf {
        self.root.join("manifests.yaml")
    }

    /// Path of a volume's disk file (raw, or the qcow2 it is converted to).
    pub fn disk_path(&self, volume: &str) -> PathBuf {
        let ext = if self.options.qcow2 { "qcow2" } else { "img" };
        self.root.join("disks").join(format!("{volume}.{ext}"))
    }

    fn raw_path(&self, volume: &str) -> PathBuf {
        self.root.join("disks").join(format!("{volume}.img"))
    }

    fn load(path: &Path) -> Result<BTreeMap<Key, serde_json::Value>> {
        let mut out = BTreeMap::new();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).map_err(|e| {
                Error::from(KubevirtError::Parse { what: path.display().to_string(), source: Box::new(e) })
            })?;
            if v.is_null() {
                continue;
            }
            let key = key_of(&v).ok_or_else(|| {
                Error::from(KubevirtError::BadOption(format!(
                    "{}: a document without a known kind or a name",
                    path.display()
                )))
            })?;
            out.insert(key, v);
        }
        Ok(out)
    }

    /// Every document, in file order.
    pub fn documents(&self) -> Vec<serde_json::Value> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, serde_json::Value>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Insert or replace objects and rewrite the files.
    fn put(&self, objs: Vec<serde_json::Value>) -> Result<()> {
        let mut map = self.lock();
        for v in objs {
            let key =
                key_of(&v).ok_or_else(|| Error::new(ErrorCode::Internal, "built an object without kind or name"))?;
            map.insert(key, v);
        }
        self.write_files(&map)
    }

    fn write_files(&self, map: &BTreeMap<Key, serde_json::Value>) -> Result<()> {
        let mut text = String::from("# Written by vmigrate. Apply with: kubectl apply -f manifests.yaml\n");
        for v in map.values() {
            text.push_str("---\n");
            let doc = serde_yaml_ng::to_string(v)
                .map_err(|e| Error::new(ErrorCode::Internal, "serialising a manifest").with_source(e))?;
            text.push_str(&doc);
        }
        atomic_write(&self.manifests_path(), text.as_bytes())?;
        atomic_write(&self.root.join("NEXT-STEPS.txt"), self.next_steps(map).as_bytes())
    }

    fn next_steps(&self, map: &BTreeMap<Key, serde_json::Value>) -> String {
        let mut s = String::new();
        let namespaces: std::collections::BTreeSet<&str> = map.keys().map(|k| k.1.as_str()).collect();
        let _ = writeln!(s, "Next steps: move the migrated VMs into a cluster with KubeVirt and CDI.\n");
        let _ = writeln!(s, "1. Create the namespace(s) if needed:");
        for ns in &namespaces {
            let _ = writeln!(s, "   kubectl create namespace {ns}");
        }
        let _ = writeln!(
            s,
            "\n2. Create the DataVolumes (waiting for upload), halted VirtualMachines, Services and Routes:"
        );
        let _ = writeln!(s, "   kubectl apply -f {}", self.manifests_path().display());
        let _ = writeln!(s, "\n3. Upload every disk into its DataVolume:");
        for ((kind, ns, name), v) in map {
            if KIND_ORDER[*kind] != "DataVolume" {
                continue;
            }
            let size = v.pointer("/spec/storage/resources/requests/storage").and_then(|q| q.as_str()).unwrap_or("0");
            let _ = writeln!(
                s,
                "   virtctl image-upload dv {name} --namespace {ns} --size {size} --image-path {} --no-create",
                self.disk_path(name).display()
            );
        }
        let _ = writeln!(s, "\n4. Start the VirtualMachines:");
        for (kind, ns, name) in map.keys() {
            if KIND_ORDER[*kind] == "VirtualMachine" {
                let _ = writeln!(s, "   virtctl start {name} --namespace {ns}");
            }
        }
        s
    }

    fn vm_keys(&self, map: &BTreeMap<Key, serde_json::Value>, vm: &TargetVm) -> Vec<Key> {
        let want = builder::vm_object_labels(vm);
        map.iter()
            .filter(|(k, v)| {
                k.1 == vm.namespace
                    && matches!(KIND_ORDER[k.0], "DataVolume" | "VirtualMachine")
                    && want.iter().all(|(lk, lv)| label(v, lk) == Some(lv.as_str()))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn to_value<T: Serialize>(t: &T) -> Result<serde_json::Value> {
    serde_json::to_value(t).map_err(|e| Error::new(ErrorCode::Internal, "serialising an object").with_source(e))
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    // Exclusive, no link followed, 0600 (vmigrate_core::safe_fs).
    vmigrate_core::safe_fs::write_atomic(path, &tmp, bytes, false).map_err(io(format!("writing {}", path.display())))
}

#[async_trait]
impl TargetProvider for DirTarget {
    fn kind(&self) -> &'static str {
        "dir"
    }

    /// Volumes are sparse files written in place, so a delta pass writes just its ranges.
    fn capabilities(&self) -> vmigrate_core::TargetCapabilities {
        vmigrate_core::TargetCapabilities { incremental: true }
    }

    async fn existing_vms(&self, namespace: &str) -> Result<Vec<ExistingVm>> {
        let map = self.lock();
        let mut out = Vec::new();
        for ((kind, ns, name), v) in map.iter() {
            if KIND_ORDER[*kind] != "VirtualMachine" || ns != namespace {
                continue;
            }
            let vm: VirtualMachine = serde_json::from_value(v.clone()).map_err(|e| {
                Error::from(KubevirtError::Parse { what: format!("VirtualMachine {ns}/{name}"), source: Box::new(e) })
            })?;
            out.push(builder::existing_from_vm(&vm));
        }
        Ok(out)
    }

    /// `<root>/.vmigrate.lock`: two runs writing one folder would write the same disks (the
    /// executor holds it for the run, whichever front end started it).
    fn run_lock(&self) -> Option<PathBuf> {
        Some(self.root.join(".vmigrate.lock"))
    }

    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume> {
        let dv = builder::build_datavolume(vm, disk, &VolumeSource::Upload);
        let name = dv.metadata.name.clone().unwrap_or_default();
        self.put(vec![to_value(&dv)?])?;
        let size = builder::volume_size(disk);
        // Allocation starts from an empty sparse file: stale data of an earlier attempt would
        // otherwise survive in the holes of the new copy. Resumed copies and warm delta passes
        // skip allocation and reopen this file as it is (see open_volume).
        let path = self.raw_path(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing stale {}", path.display()))(e)),
        }
        FileTransport::open_output(&path, Some(size)).await?;
        self.fresh.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone());
        Ok(PreparedVolume { disk_key: disk.key, name, size })
    }

    async fn open_volume(&self, vm: &TargetVm, volume: &PreparedVolume) -> Result<VolumeSink> {
        let path = self.raw_path(&volume.name);
        tracing::debug!(vm = %vm.name, path = %path.display(), "opening output disk");
        // Keep what is there: a resumed copy continues from its checkpoint and a warm delta pass
        // writes only changed extents over the earlier passes. A file allocated by this process
        // and not opened since is still empty: recreating it tells the engine the target reads
        // as zeroes, so it skips holes instead of punching them again.
        let fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner()).remove(&volume.name);
        // A link planted here is refused, not followed (open_output), also when resuming.
        let exists = std::fs::symlink_metadata(&path).is_ok();
        let create_size = (fresh || !exists).then_some(volume.size);
        let t = FileTransport::open_output(&path, create_size).await?;
        Ok(VolumeSink::Transport(Box::new(t)))
    }

    async fn finish_volume(&self, vm: &TargetVm, volume: &PreparedVolume) -> Result<()> {
        if !self.options.qcow2 {
            return Ok(());
        }
        let raw = self.raw_path(&volume.name);
        let qcow = self.disk_path(&volume.name);
        tracing::info!(vm = %vm.name, disk = %volume.name, "converting to qcow2");
        // qemu-img would write through a link planted at the output name: remove whatever is there.
        match std::fs::remove_file(&qcow) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing stale {}", qcow.display()))(e)),
        }
        let out = tokio::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&qcow)
            .output()
            .await
            .map_err(io("running qemu-img convert".into()))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorCode::Io,
                format!("qemu-img convert {} failed: {}", raw.display(), String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        std::fs::remove_file(&raw).map_err(io(format!("removing {}", raw.display())))
    }

    /// Runs `virt-v2v-in-place` on the VM's output images (in source disk order), with its
    /// input description and log in `<root>/conversion/`.
    async fn convert_guest(
        &self,
        vm: &TargetVm,
        volumes: &[PreparedVolume],
        request: &ConversionRequest,
    ) -> Result<GuestConversion> {
        let mut disks = Vec::new();
        for d in &vm.source.disks {
            let vol = volumes.iter().find(|v| v.disk_key == d.key).ok_or_else(|| {
                Error::new(ErrorCode::Internal, format!("no output volume for disk {} of {}", d.key, vm.name))
            })?;
            let format = if self.options.qcow2 { "qcow2" } else { "raw" };
            disks.push(DiskImage { path: self.disk_path(&vol.name), format: format.into() });
        }
        let cancel = tokio_util::sync::CancellationToken::new();
        convert::run_in_place(&self.root.join("conversion"), &vm.name, &vm.source, &disks, request, &cancel).await
    }

    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()> {
        let built = builder::build_vm(vm, volumes);
        {
            let map = self.lock();
            let key = (1, vm.namespace.clone(), vm.name.clone());
            if let Some(existing) = map.get(&key) {
                let same_source = annotation(existing, ANNOTATION_SOURCE_ID) == Some(vm.source.id.source_ref.as_str())
                    && label(existing, LABEL_PLAN) == Some(builder::label_value(&vm.plan).as_str());
                if !same_source && !vm.overwrite {
                    return Err(KubevirtError::Conflict {
                        what: format!(
                            "VirtualMachine {}/{} exists and belongs to another source VM",
                            vm.namespace, vm.name
                        ),
                    }
                    .into());
                }
            }
        }
        self.put(vec![to_value(&built)?])
    }

    async fn expose(&self, plan: &str, namespace: &str, services: &[ServiceSpec]) -> Result<()> {
        let mut objs = Vec::new();
        for s in services {
            objs.push(to_value(&builder::build_service(plan, namespace, s))?);
            if self.options.ingress {
                if let Some(i) = builder::build_ingress(plan, namespace, s) {
                    objs.push(to_value(&i)?);
                }
            } else if let Some(r) = builder::build_route(plan, namespace, s) {
                objs.push(to_value(&r)?);
            }
        }
        // Typed core objects serialise without apiVersion/kind: add them.
        for v in &mut objs {
            if v.get("kind").is_none() {
                let (api, kind) = if v.pointer("/spec/rules").is_some() {
                    ("networking.k8s.io/v1", "Ingress")
                } else {
                    ("v1", "Service")
                };
                v["apiVersion"] = api.into();
                v["kind"] = kind.into();
            }
        }
        self.put(objs)
    }

    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        let mut map = self.lock();
        for key in self.vm_keys(&map, vm) {
            if let Some(v) = map.remove(&key) {
                if KIND_ORDER[key.0] == "DataVolume" {
                    let _: Option<DataVolume> = serde_json::from_value(v).ok();
                    for p in [self.raw_path(&key.2), self.root.join("disks").join(format!("{}.qcow2", key.2))] {
                        match std::fs::remove_file(&p) {
                            Ok(()) => tracing::info!(path = %p.display(), "removed disk file"),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(io(format!("removing {}", p.display()))(e)),
                        }
                    }
                }
            }
        }
        self.write_files(&map)
    }
}
