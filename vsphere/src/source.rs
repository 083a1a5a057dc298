//! [`VsphereSource`]: the vCenter / ESXi implementation of [`SourceProvider`].
//!
//! Inventory comes from one ContainerView over the root folder and paged
//! `RetrievePropertiesEx` calls asking only for the properties the model needs, so thousands of
//! VMs cost a handful of round trips. Disks are read over HTTPS from the datastore `/folder`
//! endpoint with parallel Range requests (or through `nbdkit vddk` when a VDDK directory is
//! configured, see [`vddk_command`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info, warn};
use url::Url;
use vmigrate_core::model::{Disk, Inventory, Vm, VmId};
use vmigrate_core::provider::{ChangedAreas, SnapshotRef, SourceCapabilities, SourceProvider};
use vmigrate_core::transport::{BlockTransport, Extent};
use vmigrate_core::{Error, Result};

use crate::client::{Client, ConnectOptions};
use crate::error::VsphereError;
use crate::soap::MoRef;
use crate::vmdk::open_vmdk_at;

use datastore::{datastore_error, folder_url_of};
use inventory::map_vm;

mod datastore;
mod inventory;
mod vddk;
pub use datastore::{CbtMap, DatastoreDisk, DatastoreOpener};
pub use inventory::split_datastore_path;
pub use vddk::{open_nbdkit_disk, open_nbdkit_with_password, vddk_command, NbdkitProcess};

/// Properties read per VM.
pub const VM_PROPS: &[&str] = &[
    "name",
    "config.uuid",
    "config.instanceUuid",
    "config.guestId",
    "config.guestFullName",
    "config.firmware",
    "config.bootOptions",
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "config.template",
    "runtime.powerState",
    "runtime.host",
    "guest.net",
    "guest.toolsRunningStatus",
    "guest.toolsStatus",
    "snapshot",
    "summary.config.ftInfo",
];

/// Every type and property path the inventory asks for, in one ContainerView retrieval (the
/// view spans [`INVENTORY_VIEW_TYPES`]); public so benchmarks ask other clients for the same.
pub const INVENTORY_PROPS: &[(&str, &[&str])] = &[
    ("VirtualMachine", VM_PROPS),
    ("Network", &["name"]),
    ("DistributedVirtualPortgroup", &["name", "key", "config.uplink"]),
    ("OpaqueNetwork", &["name", "summary"]),
    ("Datastore", &["summary"]),
    ("HostSystem", &["name", "parent"]),
    ("ClusterComputeResource", &["name", "configurationEx"]),
    ("Datacenter", &["name", "datastore"]),
];

/// The managed object types of the inventory's ContainerView.
pub const INVENTORY_VIEW_TYPES: &[&str] =
    &["VirtualMachine", "Network", "Datastore", "HostSystem", "ClusterComputeResource", "Datacenter"];

const TASK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parallel HTTPS connections per datastore disk (the engine's workers share them).
pub const DISK_CONNECTIONS: usize = 8;

/// The vSphere source.
#[derive(Debug, Clone)]
pub struct VsphereSource {
    client: Client,
    opts: Arc<ConnectOptions>,
    /// Datastore name -> datacenter inventory path, filled by inventory().
    datacenters: Arc<Mutex<HashMap<String, String>>>,
}

fn vm_ref(id: &VmId) -> MoRef {
    MoRef::new("VirtualMachine", id.source_ref.clone())
}

fn snap_ref(s: &SnapshotRef) -> MoRef {
    MoRef::new("VirtualMachineSnapshot", s.id.clone())
}

impl VsphereSource {
    /// Connect and log in.
    ///
    /// # Errors
    /// [`ErrorCode::SourceConnect`], [`ErrorCode::SourceTls`], [`ErrorCode::SourceInvalidLogin`],
    /// [`ErrorCode::BadUrl`], ...
    ///
    /// [`ErrorCode::SourceConnect`]: vmigrate_core::ErrorCode::SourceConnect
    /// [`ErrorCode::SourceTls`]: vmigrate_core::ErrorCode::SourceTls
    /// [`ErrorCode::SourceInvalidLogin`]: vmigrate_core::ErrorCode::SourceInvalidLogin
    /// [`ErrorCode::BadUrl`]: vmigrate_core::ErrorCode::BadUrl
    pub async fn connect(opts: ConnectOptions) -> Result<VsphereSource> {
        let client = Client::connect(&opts).await?;
        Ok(VsphereSource { client, opts: Arc::new(opts), datacenters: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// The underlying API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Log out now (also attempted on drop).
    ///
    /// # Errors
    /// Transport errors of `Logout`.
    pub async fn close(&self) -> Result<()> {
        Ok(self.client.logout().await?)
    }

    async fn power_state(&self, vm: &MoRef) -> std::result::Result<String, VsphereError> {
        Ok(self
            .client
            .object_properties(vm, &["runtime.powerState"])
            .await?
            .text("runtime.powerState")
            .unwrap_or("")
            .to_string())
    }

    async fn datacenter_of(&self, datastore: &str) -> std::result::Result<String, VsphereError> {
        if let Some(dc) = self.datacenters.lock().ok().and_then(|g| g.get(datastore).cloned()) {
            return Ok(dc);
        }
        self.lookup_and_vms().await?;
        self.datacenters
            .lock()
            .ok()
            .and_then(|g| g.get(datastore).cloned())
            .ok_or_else(|| VsphereError::NotFound { object: format!("datastore {datastore}") })
    }

    /// URL of a datastore file on the `/folder` endpoint.
    ///
    /// # Errors
    /// [`VsphereError::NotFound`] for an unknown datastore; [`VsphereError::BadUrl`] for a file
    /// name without `[datastore]`.
    pub async fn folder_url(&self, file: &str) -> std::result::Result<Url, VsphereError> {
        let (ds, path) = split_datastore_path(file)
            .ok_or_else(|| VsphereError::BadUrl { url: file.to_string(), reason: "not a [datastore] path".into() })?;
        let dc = self.datacenter_of(ds).await?;
        Ok(folder_url_of(self.client.url(), &dc, ds, path))
    }

    /// The backing file of `disk` at `snapshot` (the snapshot's own view of the disk).
    async fn disk_file_at(
        &self,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> std::result::Result<String, VsphereError> {
        let Some(s) = snapshot else { return Ok(disk.file.clone()) };
        let o = self.client.object_properties(&snap_ref(s), &["config"]).await?;
        let devs = o.get("config").and_then(|c| c.path(&["hardware"]));
        let file = devs
            .and_then(|d| d.all("device").find(|c| c.num_at::<i32>(&["key"]) == Some(disk.key)))
            .and_then(|d| d.text_at(&["backing", "fileName"]))
            .map(str::to_string);
        Ok(file.unwrap_or_else(|| disk.file.clone()))
    }
}

#[async_trait]
impl SourceProvider for VsphereSource {
    fn kind(&self) -> &'static str {
        "vsphere"
    }

    async fn close(&self) -> Result<()> {
        VsphereSource::close(self).await
    }

    /// The disk as vCenter names it: its datastore path, the snapshot a warm pass reads, and
    /// the CBT change id at that snapshot (or the disk's current one for a cold copy of a VM
    /// that is off), with its size. Not the transport's own identity: the datastore is read
    /// over HTTP (no file to stat) or through nbdkit on a fresh socket per open, which would
    /// make every resume start over.
    fn disk_identity(
        &self,
        disk: &vmigrate_core::Disk,
        snapshot: Option<&SnapshotRef>,
        opened: &dyn BlockTransport,
    ) -> vmigrate_core::SourceIdentity {
        let change_id = match snapshot {
            Some(s) => s.change_ids.get(&disk.key),
            None => disk.change_id.as_ref(),
        };
        vmigrate_core::SourceIdentity::of_parts([
            format!("vsphere={}", disk.file),
            format!("snapshot={}", snapshot.map_or("-", |s| s.id.as_str())),
            format!("changeId={}", change_id.map_or("-", String::as_str)),
            format!("size={}", opened.size()),
        ])
    }

    /// CDI's VDDK importer reads this endpoint's disks (with the plan's source credentials).
    fn import_hint(&self) -> Option<vmigrate_core::provider::ImportHint> {
        Some(vmigrate_core::provider::ImportHint::Vddk {
            url: self.opts.url.clone(),
            thumbprint: self.opts.thumbprint.clone(),
        })
    }

    /// VMware's guest ids, Tools, fault tolerance and DRS rules ([`crate::rules`]).
    fn vm_rules(&self) -> vmigrate_core::validate::VmRules {
        crate::rules::validate_vm
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities { power: true, snapshots: true, changed_blocks: true }
    }

    async fn inventory(&self) -> Result<Inventory> {
        let (lk, vms, mut inv) = self.lookup_and_vms().await?;
        inv.vms = vms.iter().map(|o| map_vm(o, &lk)).collect();
        inv.vms.sort_by(|a, b| a.name.cmp(&b.name));
        info!(vms = inv.vms.len(), round_trips = self.client.round_trips(), "vsphere inventory read");
        Ok(inv)
    }

    async fn vm(&self, id: &VmId) -> Result<Vm> {
        Ok(self.fetch_vm(id).await?)
    }

    async fn power_off(&self, vm: &VmId, graceful: Option<Duration>) -> Result<()> {
        let r = vm_ref(vm);
        if self.power_state(&r).await? == "poweredOff" {
            return Ok(());
        }
        if let Some(timeout) = graceful {
            match self.client.shutdown_guest(&r).await {
                Ok(()) => {
                    let waited = self
                        .client
                        .wait_for(&r, &["runtime.powerState"], timeout, |v| {
                            v.iter().any(|(n, e)| n == "runtime.powerState" && e.text == "poweredOff")
                        })
                        .await;
                    match waited {
                        Ok(_) => return Ok(()),
                        Err(VsphereError::Timeout { .. }) => {
                            warn!(vm = %vm.source_ref, "graceful shutdown timed out; powering off")
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e @ (VsphereError::InvalidState { .. } | VsphereError::Fault { .. })) => {
                    debug!(vm = %vm.source_ref, error = %e, "graceful shutdown refused; powering off");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.power_state(&r).await? == "poweredOff" {
            return Ok(());
        }
        let task = self.client.power_off_vm(&r).await?;
        match self.client.wait_task(&task, TASK_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(VsphereError::InvalidState { .. }) if self.power_state(&r).await? == "poweredOff" => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn power_on(&self, vm: &VmId) -> Result<()> {
        let r = vm_ref(vm);
        if self.power_state(&r).await? == "poweredOn" {
            return Ok(());
        }
        let task = self.client.power_on_vm(&r).await?;
        self.client.wait_task(&task, TASK_TIMEOUT).await?;
        Ok(())
    }

    async fn enable_cbt(&self, vm: &VmId) -> Result<()> {
        let task = self.client.set_change_tracking(&vm_ref(vm), true).await?;
        self.client.wait_task(&task, TASK_TIMEOUT).await?;
        Ok(())
    }

    async fn disable_cbt(&self, vm: &VmId) -> Result<()> {
        let task = self.client.set_change_tracking(&vm_ref(vm), false).await?;
        self.client.wait_task(&task, TASK_TIMEOUT).await?;
        Ok(())
    }

    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotRef> {
        self.create_snapshot_quiesced(vm, name, false).await
    }

    async fn create_snapshot_quiesced(&self, vm: &VmId, name: &str, quiesce: bool) -> Result<SnapshotRef> {
        let task = self.client.create_snapshot(&vm_ref(vm), name, "created by vmigrate", quiesce).await?;
        let result = self.client.wait_task(&task, TASK_TIMEOUT).await?;
        let snap = result.as_ref().and_then(MoRef::from_element).ok_or_else(|| {
            Error::from(VsphereError::Malformed {
                method: "CreateSnapshot_Task".into(),
                detail: "no snapshot in task result".into(),
            })
        })?;
        let o = self.client.object_properties(&snap, &["config"]).await?;
        let mut change_ids = BTreeMap::new();
        if let Some(hw) = o.get("config").and_then(|c| c.child("hardware")) {
            for d in hw.all("device").filter(|d| d.xsi_type() == Some("VirtualDisk")) {
                if let (Some(key), Some(id)) = (d.num_at::<i32>(&["key"]), d.text_at(&["backing", "changeId"])) {
                    if !id.is_empty() {
                        change_ids.insert(key, id.to_string());
                    }
                }
            }
        }
        Ok(SnapshotRef { id: snap.value, name: name.to_string(), change_ids })
    }

    async fn remove_snapshot(&self, _vm: &VmId, snapshot: &SnapshotRef) -> Result<()> {
        let task = match self.client.remove_snapshot(&snap_ref(snapshot)).await {
            Ok(t) => t,
            Err(VsphereError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match self.client.wait_task(&task, TASK_TIMEOUT).await {
            Ok(_) | Err(VsphereError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn changed_areas(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: &SnapshotRef,
        change_id: &str,
        offset: u64,
    ) -> Result<ChangedAreas> {
        let info = self
            .client
            .query_changed_disk_areas(&vm_ref(vm), Some(&snap_ref(snapshot)), disk.key, offset, change_id)
            .await?;
        Ok(ChangedAreas {
            extents: info.areas.iter().map(|(s, l)| Extent::data(*s, *l)).collect(),
            end: info.start_offset + info.length,
        })
    }

    async fn open_disk(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        if let Some(libdir) = &self.opts.vddk_lib_dir {
            return self.open_disk_vddk(Path::new(libdir), vm, disk, snapshot).await;
        }
        // The VM must still exist: a deleted VM is a typed NotFound, not a 404 later.
        let props = self.client.object_properties(&vm_ref(vm), &["config.changeTrackingEnabled"]).await?;
        let cbt_on = props.text("config.changeTrackingEnabled") == Some("true");
        let file = self.disk_file_at(disk, snapshot).await?;
        let (ds, _) = split_datastore_path(&file)
            .ok_or_else(|| VsphereError::BadUrl { url: file.clone(), reason: "not a [datastore] path".into() })?;
        let dc = self.datacenter_of(ds).await?;
        let opener = DatastoreOpener::new(self.client.clone(), &dc, &file, DISK_CONNECTIONS)
            .ok_or_else(|| VsphereError::BadUrl { url: file.clone(), reason: "not a [datastore] path".into() })?;
        let name = file.rsplit(['/', ']']).next().unwrap_or(&file).trim().to_string();
        // The reader tells a text descriptor from a sparse file with an embedded one, then opens
        // every extent (and the parents of a delta) through the same opener.
        let inner = open_vmdk_at(&name, Arc::new(opener)).await.map_err(|e| datastore_error(&file, e))?;
        let cbt = cbt_on.then(|| {
            Arc::new(CbtMap {
                client: self.client.clone(),
                vm: vm_ref(vm),
                snapshot: snapshot.map(snap_ref),
                key: disk.key,
                cache: Mutex::new(None),
            })
        });
        debug!(file = %file, size = inner.size(), cbt = cbt_on, "opened datastore disk");
        Ok(Box::new(DatastoreDisk { inner, file: Arc::from(file.as_str()), cbt }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_paths_split() {
        assert_eq!(split_datastore_path("[WorkloadDatastore] db/db.vmdk"), Some(("WorkloadDatastore", "db/db.vmdk")));
        assert_eq!(split_datastore_path("db.vmdk"), None);
    }

    /// The password file nbdkit is given is readable by it, gone once it serves, and its
    /// private folder is gone when the disk is dropped; on a failed start nothing is left.
    #[tokio::test]
    async fn nbdkit_password_file_is_private_and_short_lived() {
        let out = tempfile::tempdir().expect("tmp");
        let seen = out.path().join("seen");
        let mut where_pw = None;
        // The child copies what it finds in the file (proving it could read it), then serves.
        let disk = open_nbdkit_with_password("s3cret", |pw, socket| {
            where_pw = Some(pw.to_path_buf());
            vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "stat -c %a {pw} > {seen}.mode && cat {pw} > {seen} && exec nbdkit --exit-with-parent --foreground --unix {socket} memory 1M",
                    pw = pw.display(),
                    seen = seen.display(),
                    socket = socket.display()
                ),
            ]
        })
        .await
        .expect("nbdkit serves");
        let pw = where_pw.expect("built");
        let dir = pw.parent().expect("folder").to_path_buf();
        assert_eq!(std::fs::read(&seen).expect("child read it"), b"s3cret");
        assert_eq!(std::fs::read_to_string(format!("{}.mode", seen.display())).expect("mode").trim(), "600");
        assert!(!pw.exists(), "the password file outlives nbdkit's start");
        assert_eq!(disk.size(), 1 << 20);
        drop(disk);
        assert!(!dir.exists(), "the private folder outlives the disk");

        // A child that fails to start: the folder and the secret are removed too.
        let mut failed_dir = None;
        let e = open_nbdkit_with_password("s3cret", |pw, _socket| {
            failed_dir = pw.parent().map(Path::to_path_buf);
            vec!["sh".into(), "-c".into(), "exit 3".into()]
        })
        .await
        .expect_err("the child exits");
        assert!(e.to_string().contains("exited"), "{e}");
        assert!(!failed_dir.expect("built").exists(), "secret left behind after a failure");
    }

    #[test]
    fn vddk_argv_is_exact_and_has_no_password() {
        let argv = vddk_command(
            Path::new("/opt/vmware-vix-disklib-distrib"),
            "vcenter.example.com",
            "administrator@vsphere.local",
            Path::new("/run/vmigrate/pw"),
            "AB:CD",
            "vm-42",
            "[WorkloadDatastore] database/database.vmdk",
            Some("snapshot-7"),
            Path::new("/run/vmigrate/nbd.sock"),
        );
        assert_eq!(
            argv,
            [
                "nbdkit",
                "--exit-with-parent",
                "--readonly",
                "--foreground",
                "--unix",
                "/run/vmigrate/nbd.sock",
                "vddk",
                "libdir=/opt/vmware-vix-disklib-distrib",
                "server=vcenter.example.com",
                "user=administrator@vsphere.local",
                "password=+/run/vmigrate/pw",
                "thumbprint=AB:CD",
                "vm=moref=vm-42",
                "snapshot=snapshot-7",
                "transports=nbdssl:nbd",
                "file=[WorkloadDatastore] database/database.vmdk",
            ]
        );
    }
}
