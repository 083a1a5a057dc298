//! The provider traits: what a source (a hypervisor, a folder of VM files, a package) and a
//! target (a cluster, a local output folder) must do for the executor to migrate a VM.
//!
//! Optional capabilities (power control, snapshots, changed blocks) default to
//! [`ErrorCode::Unsupported`](crate::ErrorCode::Unsupported), so a read-only source such as a
//! copied datastore folder implements only inventory and disk access, and validation tells the
//! user when a plan (a warm one, say) needs more than the source can do.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::concern::Concern;
use crate::error::{Error, Result};
use crate::model::{Disk, Inventory, Vm, VmId};
use crate::plan::{NetworkDestination, Plan, ServiceSpec, StorageDestination, TargetDiskBus};
use crate::transport::{BlockTransport, Extent, SourceIdentity};

/// Validation rules a provider adds for one VM of a plan, beside core's own: what only that
/// kind of source or target knows (a hypervisor's guest tools and clustering features, which
/// guests a target runs, which transfer modes it can apply warm passes with).
///
/// A plain function of the VM and the plan, with no I/O, so validation gives the same answer
/// with the provider open ([`SourceProvider::vm_rules`],
/// [`TargetProvider::vm_rules`]) and without it (a plan
/// validated offline: the front end picks the same function by the plan's URL scheme).
pub type VmRules = fn(&Vm, &Plan) -> Vec<Concern>;

/// The rules of a provider that adds none.
pub fn no_rules(_vm: &Vm, _plan: &Plan) -> Vec<Concern> {
    Vec::new()
}

/// What a source can do beyond reading, so the executor and validation can decide up front.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCapabilities {
    /// Power off / on.
    pub power: bool,
    /// Create and remove snapshots.
    pub snapshots: bool,
    /// Changed block tracking queries (warm migration).
    pub changed_blocks: bool,
}

/// What a target can do, so validation and the executor refuse up front what would lose data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCapabilities {
    /// Applies the delta passes of a warm migration: writes exactly the given changed ranges
    /// into a volume that already holds the previous pass. Off by default: a target that cannot
    /// and still accepted a warm plan would finish with the first copy and lose every later
    /// write, so it must opt in.
    pub incremental: bool,
}

/// A snapshot we created, as the source names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRef {
    /// The source's opaque snapshot id.
    pub id: String,
    /// Name we gave it.
    pub name: String,
    /// Per disk key, the source's (opaque) changed-block id at this snapshot.
    #[serde(default)]
    pub change_ids: BTreeMap<i32, String>,
}

/// How a target that imports disks by itself (an importer next to the target pulling from the
/// source, rather than the executor writing them) can reach the source. The source hands it
/// over ([`SourceProvider::import_hint`]); a target matches on the protocols it speaks and
/// refuses the others, so it never guesses the source's kind from the plan's URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
#[non_exhaustive]
pub enum ImportHint {
    /// The source's disks are read through a VDDK endpoint (the seam's one provider-specific
    /// variant: a vSphere source hands its SDK URL).
    /// The importer logs in with the plan's source credentials and finds each disk by the VM's
    /// BIOS UUID and the disk's [`Disk::file`].
    Vddk {
        /// The endpoint URL (`https://vcenter/sdk`).
        url: String,
        /// The certificate thumbprint the importer pins, when the source pins one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thumbprint: Option<String>,
    },
}

/// Changed areas of one disk since a change id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedAreas {
    /// Changed (or, for change id `*`, allocated) extents, all `Data`.
    pub extents: Vec<Extent>,
    /// Where the query ended; callers ask again from here while it is below the disk size.
    pub end: u64,
}

/// A virtualization source.
///
/// # Cancel safety
/// Futures may be dropped; a dropped task-starting call (power, snapshot) may still complete at
/// the source, which is why the executor records what it asked for and undoes it on cleanup.
#[async_trait]
pub trait SourceProvider: Send + Sync + Debug {
    /// Short kind name for logs and status (e.g. `vmx`, `ova`).
    fn kind(&self) -> &'static str;

    /// What this source can do beyond reading.
    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities::default()
    }

    /// VMs, networks, datastores and hosts, in as few round trips as the source allows.
    async fn inventory(&self) -> Result<Inventory>;

    /// This source's own validation rules for a VM of a plan, beside core's: what only this
    /// kind of source knows (its guest ids, guest tools, clustering features). Plain functions
    /// of the VM and the plan ([`VmRules`]), so a front end validating a plan offline runs the
    /// same ones, chosen by the source URL's scheme. Default: none.
    fn vm_rules(&self) -> VmRules {
        no_rules
    }

    /// End the source's session now (log out). Every front end calls it when it is done,
    /// because a hypervisor manager may cap concurrent sessions per user and keep an abandoned
    /// one until its idle timeout: a tool that leaks a session per run locks automation out. Later calls on this provider may fail; a second `close` is a no-op.
    /// Default: nothing to end.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// How an importer next to the target can reach this source's disks by itself, when it
    /// can ([`ImportHint`]). Default: `None` (only the executor reads the disks).
    fn import_hint(&self) -> Option<ImportHint> {
        None
    }

    /// Fresh detail of one VM (by its [`VmId::source_ref`]), e.g. after a power change.
    async fn vm(&self, id: &VmId) -> Result<Vm>;

    /// Shut the guest down; after `graceful` without success (or at once when `None`), hard
    /// power-off. Already off is success.
    async fn power_off(&self, vm: &VmId, graceful: Option<Duration>) -> Result<()> {
        let _ = (vm, graceful);
        Err(Error::unsupported(format!("{} sources cannot change power state", self.kind())))
    }

    /// Power on. Already on is success.
    async fn power_on(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported(format!("{} sources cannot change power state", self.kind())))
    }

    /// Turn on changed block tracking (takes effect at the next snapshot).
    async fn enable_cbt(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported(format!("{} sources have no changed block tracking", self.kind())))
    }

    /// Turn changed block tracking off again (undoing [`enable_cbt`](Self::enable_cbt) after a
    /// failed or cancelled warm migration).
    async fn disable_cbt(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported(format!("{} sources have no changed block tracking", self.kind())))
    }

    /// Create a snapshot without memory and without quiescing.
    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotRef> {
        let _ = (vm, name);
        Err(Error::unsupported(format!("{} sources have no snapshots", self.kind())))
    }

    /// Create a snapshot without memory, quiesced when `quiesce` (the guest tools flush the guest's
    /// file systems and run its freeze scripts first: an application-consistent copy).
    /// Sources without quiescing take a crash-consistent one, as
    /// [`create_snapshot`](Self::create_snapshot) does.
    async fn create_snapshot_quiesced(&self, vm: &VmId, name: &str, quiesce: bool) -> Result<SnapshotRef> {
        let _ = quiesce;
        self.create_snapshot(vm, name).await
    }

    /// Remove a snapshot we created (consolidating its delta into the base). Missing is success.
    async fn remove_snapshot(&self, vm: &VmId, snapshot: &SnapshotRef) -> Result<()> {
        let _ = (vm, snapshot);
        Err(Error::unsupported(format!("{} sources have no snapshots", self.kind())))
    }

    /// Areas of `disk` changed between `change_id` and `snapshot`, starting at `offset`.
    /// `change_id` `*` asks for all allocated areas.
    async fn changed_areas(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: &SnapshotRef,
        change_id: &str,
        offset: u64,
    ) -> Result<ChangedAreas> {
        let _ = (vm, disk, snapshot, change_id, offset);
        Err(Error::unsupported(format!("{} sources have no changed block tracking", self.kind())))
    }

    /// What a copy of `disk` opened as `opened` reads, as the executor binds the disk's resume
    /// checkpoint to it: a checkpoint recorded for another identity is never resumed (the disk
    /// is copied again from the start), so one disk never mixes two source states.
    ///
    /// The default: at a snapshot, the snapshot id and the disk's change id there (a warm pass
    /// reads exactly that state); else what the transport says
    /// ([`BlockTransport::identity`]: files with their modification times, exports, size) with
    /// the disk's file name and change id. A source whose transport identity changes from run to
    /// run for the same bytes (a fresh local socket per open) overrides this with what it knows
    /// of the disk.
    fn disk_identity(
        &self,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
        opened: &dyn BlockTransport,
    ) -> SourceIdentity {
        let change_id = |c: Option<&String>| format!("changeId={}", c.map_or("-", String::as_str));
        match snapshot {
            Some(s) => SourceIdentity::of_parts([
                format!("snapshot={}", s.id),
                change_id(s.change_ids.get(&disk.key)),
                format!("disk={}", disk.file),
                format!("size={}", opened.size()),
            ]),
            None => opened.identity().with([format!("disk={}", disk.file), change_id(disk.change_id.as_ref())]),
        }
    }

    /// The VM's disks as local files (VMDK descriptors, in disk order) that a guest inspection
    /// can open read-only before anything is copied; `None` when the source has no local file
    /// access (vCenter: the disks are read over the network, so the guest is inspected by the
    /// conversion, after the copy).
    fn local_disk_files(&self, vm: &crate::model::Vm) -> Option<Vec<std::path::PathBuf>> {
        let _ = vm;
        None
    }

    /// Open a disk for reading, at a snapshot if given (warm), else its current state (cold,
    /// VM powered off).
    async fn open_disk(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>>;
}

/// A VM that already exists in the target namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExistingVm {
    /// Name.
    pub name: String,
    /// MAC addresses of its interfaces.
    #[serde(default)]
    pub macs: Vec<String>,
    /// The plan that created it, when vmigrate did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The source reference ([`VmId::source_ref`]) of the VM it was migrated from, when
    /// vmigrate did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

/// Everything the target needs to know about one VM being migrated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetVm {
    /// Plan name (labels every object).
    pub plan: String,
    /// Namespace.
    pub namespace: String,
    /// Target VM name (DNS-1123).
    pub name: String,
    /// The source VM.
    pub source: Vm,
    /// Extra template labels from the plan.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Per source NIC key, the destination network (`None`: dropped).
    pub networks: BTreeMap<i32, NetworkDestination>,
    /// Per source disk key, the target storage.
    pub storage: BTreeMap<i32, StorageDestination>,
    /// Disk bus override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bus: Option<TargetDiskBus>,
    /// The target VM's run strategy after the migration (`Always`, `Halted`, ...: the plan's
    /// `runStrategy`).
    pub run_strategy: String,
    /// Replace an existing VM of the same name.
    #[serde(default)]
    pub overwrite: bool,
    /// The result of the guest conversion, once it ran: the disk bus, NIC model, guest agent
    /// and OS the converted guest needs (`None`: decide from the source's OS id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<crate::convert::GuestConversion>,
    /// How an importer can reach the source's disks ([`SourceProvider::import_hint`]), for a
    /// target that imports by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_hint: Option<ImportHint>,
}

/// A target volume prepared for one source disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedVolume {
    /// Source disk key.
    pub disk_key: i32,
    /// Volume (DataVolume / file) name.
    pub name: String,
    /// Size in bytes, at least the source capacity.
    pub size: u64,
}

/// How the bytes of a disk reach a prepared volume.
#[derive(Debug)]
pub enum VolumeSink {
    /// Write through this transport with the copy engine.
    Transport(Box<dyn BlockTransport>),
    /// The target imports by itself (CDI importer); the executor follows its progress. Copies
    /// once: it cannot apply a warm delta pass.
    SelfImport,
    /// The target runs each copy pass itself, next to the volume (the transfer Job's worker):
    /// the executor calls [`TargetProvider::run_pass`] once per pass and gets its report.
    Passes,
}

/// One copy pass a [`VolumeSink::Passes`] target runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetPass {
    /// `full`, `precopy-N` or `cutover`; names the pass's objects (one Job per pass).
    pub name: String,
    /// Read the disk at this snapshot (warm); `None`: its current state (cold, VM off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRef>,
    /// Copy only the areas changed since this CBT change id (a delta pass); `None`: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<String>,
}

/// What a pass run by the target did, as its worker reported it (not inferred from the pass
/// having ended).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    /// The pass name the worker ran (must be the one asked for).
    pub pass: String,
    /// The snapshot it read (must be the pass's: a report of an earlier attempt at another
    /// snapshot is stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The change id its areas were changed since (must be the pass's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_since: Option<String>,
    /// Disk size in bytes.
    pub size: u64,
    /// Changed ranges the pass was given (delta), or `0` for a full pass.
    pub ranges: u64,
    /// Bytes in those ranges (delta), or the disk size (full).
    pub changed_bytes: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the volume.
    pub bytes_written: u64,
    /// Bytes zeroed in the volume.
    pub bytes_zeroed: u64,
    /// Whether the worker resumed from a checkpoint.
    #[serde(default)]
    pub resumed: bool,
    /// SHA-256 of the volume after the pass, when verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
}

/// A migration target.
#[async_trait]
pub trait TargetProvider: Send + Sync + Debug {
    /// Short kind name (e.g. `dir`).
    fn kind(&self) -> &'static str;

    /// What this target can do (after [`preflight`](Self::preflight), which may adopt the
    /// plan's options). Default: nothing beyond a cold copy.
    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::default()
    }

    /// A file the executor holds an exclusive lock on for the whole of a run, so two runs (two
    /// processes, or a C and a Python program, with different status files) never write this
    /// target at once: the second is [`ErrorCode::TargetBusy`](crate::ErrorCode::TargetBusy).
    /// `None` (the default): the target needs no such lock (a cluster's objects carry the plan
    /// that owns them).
    fn run_lock(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// VMs that already exist in `namespace` (names and MACs feed validation).
    async fn existing_vms(&self, namespace: &str) -> Result<Vec<ExistingVm>>;

    /// Release what the target holds open (sessions, locks) now rather than at drop, which a
    /// binding may reach without a runtime. A second `close` is a no-op. Default: nothing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// This target's own validation rules for a VM of a plan, beside core's (which guests it
    /// runs, which transfer modes apply warm passes): plain functions of the VM and the plan
    /// ([`VmRules`]), so a plan validated offline gets the same ones, chosen by the target URL's
    /// scheme. Default: none.
    fn vm_rules(&self) -> VmRules {
        no_rules
    }

    /// How messages name this target, e.g. when it refuses a warm plan. Default: `the <kind>
    /// target`; a target whose abilities depend on its options names them.
    fn describe(&self) -> String {
        format!("the {} target", self.kind())
    }

    /// Problems of the target itself for this plan (missing namespace, storage class,
    /// NetworkAttachmentDefinition, CRDs), reported before anything is created.
    async fn preflight(&self, plan: &Plan) -> Result<Vec<Concern>> {
        let _ = plan;
        Ok(Vec::new())
    }

    /// Create (or find, on a re-run) the volume for one disk. Idempotent.
    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume>;

    /// Open a prepared volume for writing, or say the target imports it by itself.
    async fn open_volume(&self, vm: &TargetVm, volume: &PreparedVolume) -> Result<VolumeSink>;

    /// For a volume opened as [`VolumeSink::Passes`]: run one copy pass next to it and return
    /// the worker's own report once it is durable. The executor drops the older snapshot only
    /// after this returns.
    async fn run_pass(&self, vm: &TargetVm, volume: &PreparedVolume, pass: &TargetPass) -> Result<PassReport> {
        let _ = (vm, volume);
        Err(Error::unsupported(format!("the {} target cannot run copy pass {}", self.kind(), pass.name)))
    }

    /// Called once the copy into a volume has completed and been flushed (e.g. finish an upload).
    async fn finish_volume(&self, vm: &TargetVm, volume: &PreparedVolume) -> Result<()> {
        let _ = (vm, volume);
        Ok(())
    }

    /// For a volume the target imports by itself ([`VolumeSink::SelfImport`]): the fraction done
    /// (0.0 to 1.0), when the target reports one. The executor polls it for progress while
    /// [`finish_volume`](Self::finish_volume) waits for the import to end.
    async fn import_progress(&self, vm: &TargetVm, volume: &PreparedVolume) -> Option<f64> {
        let _ = (vm, volume);
        None
    }

    /// Create (or update, on a re-run) the target VM over its prepared volumes. Idempotent.
    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()>;

    /// Create the Services (and Routes) of the plan in `namespace`. Idempotent.
    async fn expose(&self, plan: &str, namespace: &str, services: &[ServiceSpec]) -> Result<()>;

    /// Run a container-image hook (e.g. an Ansible playbook image) as a Job next to the VM and
    /// return its log, handing it `input` as JSON, the same document a local hook reads on its
    /// stdin ([`HookInput`](crate::hook::HookInput)). Targets without a cluster cannot.
    async fn run_hook(
        &self,
        vm: &TargetVm,
        hook: &crate::plan::HookSpec,
        input: &crate::hook::HookInput,
    ) -> Result<String> {
        let _ = (vm, input);
        Err(Error::unsupported(format!("the {} target cannot run image hooks ({})", self.kind(), hook.name)))
    }

    /// Convert the guest on its copied volumes (virt-v2v-in-place: virtio drivers, initramfs,
    /// bootloader, guest agent, static IPs) and say what the converted guest needs. Runs after
    /// the last copy and before [`create_vm`](Self::create_vm); idempotent enough to be run
    /// again after a crash (virt-v2v converts an already converted guest without harm).
    async fn convert_guest(
        &self,
        vm: &TargetVm,
        volumes: &[PreparedVolume],
        request: &crate::convert::ConversionRequest,
    ) -> Result<crate::convert::GuestConversion> {
        let _ = (vm, volumes, request);
        Err(Error::unsupported(format!(
            "the {} target cannot convert guests; set spec.skipGuestConversion to copy them as they are",
            self.kind()
        )))
    }

    /// Remove everything created for this VM by this plan (after failure or cancel).
    async fn cleanup(&self, vm: &TargetVm) -> Result<()>;
}
