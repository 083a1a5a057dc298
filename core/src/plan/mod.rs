//! The migration plan: which VMs go where, and how.
//!
//! Shaped like Forklift's `Plan`, `NetworkMap` and `StorageMap` so that MTV users read it at a
//! glance, but as one self-contained document. Every struct rejects unknown fields: a typo in a
//! plan must fail loudly with its line, not be silently ignored. Credentials are never stored in
//! the plan; it names the environment variables that hold them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
pub use crate::times::{Duration, UtcTime};
pub use parse::{
    check_name, looks_like_env_name, parse_duration, MAX_NAME_LEN, MAX_PLAN_BYTES, MAX_PLAN_DEPTH, MAX_PLAN_VMS,
};

mod parse;

/// The API version this crate reads and writes.
pub const API_VERSION: &str = "vmigrate.dev/v1alpha1";

/// A migration plan document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plan {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be `Plan`.
    pub kind: String,
    /// Name and labels.
    pub metadata: PlanMetadata,
    /// What to migrate and how.
    pub spec: PlanSpec,
}

/// Plan metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanMetadata {
    /// Plan name; becomes a label value on every object created, so a DNS-1123 label.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The plan body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanSpec {
    /// Where VMs come from.
    pub source: SourceSpec,
    /// Where VMs go.
    pub target: TargetSpec,
    /// Namespace the VMs land in.
    pub target_namespace: String,
    /// Warm migration (copy while running, short cutover) instead of cold.
    #[serde(default)]
    pub warm: bool,
    /// VMs to migrate.
    pub vms: Vec<VmSelector>,
    /// Source network to target network.
    #[serde(default)]
    pub network_map: Vec<NetworkMapping>,
    /// Source datastore to target storage.
    #[serde(default)]
    pub storage_map: Vec<StorageMapping>,
    /// Services (and routes) to create once the VMs are in place.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Plan-wide hooks.
    #[serde(default)]
    pub hooks: Vec<HookSpec>,
    /// Execution tunables.
    #[serde(default)]
    pub options: PlanOptions,
    /// Copy disks byte for byte without converting the guest (Forklift's field): the guest
    /// keeps the source hypervisor's drivers and initramfs, and may not boot at the target.
    #[serde(default)]
    pub skip_guest_conversion: bool,
    /// Carry every NIC's static IPs (as the source inventory reports them) over to the
    /// converted guest, keyed by MAC (Forklift's field; default true).
    #[serde(default = "yes", rename = "preserveStaticIPs")]
    pub preserve_static_ips: bool,
    /// Path of the virtio-win ISO used to install virtio drivers and the QEMU guest agent into
    /// Windows guests. Without it Windows guests stay on SATA disks and e1000e NICs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_win: Option<String>,
}

/// Source provider connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceSpec {
    /// `https://vcenter/sdk` or `vmx:///path/to/datastore-folder`.
    pub url: String,
    /// SHA-256 fingerprint of the server certificate, `AB:CD:...`; pins the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// PEM CA bundle to verify the server with instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Skip TLS verification. Only when asked, and logged as a warning.
    #[serde(default)]
    pub insecure: bool,
    /// Where the credentials come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
    /// Directory holding the VMware VDDK library; when set, disks are read through `nbdkit vddk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddk_lib_dir: Option<String>,
}

/// Names of environment variables holding credentials; the values never enter the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsRef {
    /// Variable holding the user name.
    pub username_env: String,
    /// Variable holding the password.
    pub password_env: String,
}

/// Resolved credentials. `Debug` redacts the password so it never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

impl CredentialsRef {
    /// Read the variables. Missing or empty variables are a typed error naming the variable,
    /// never its value.
    pub fn resolve(&self) -> Result<Credentials> {
        let get = |name: &str, shown: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::new(ErrorCode::CredentialsMissing, format!("environment variable {shown} is not set"))
            })
        };
        // People put the password itself in passwordEnv by mistake, and this message goes to
        // terminals and logs: the name is shown only when it looks like a variable name.
        let username = get(&self.username_env, &self.username_env)?;
        let shown = if looks_like_env_name(&self.password_env) {
            self.password_env.clone()
        } else {
            "named by credentials.passwordEnv (not shown: it does not look like a variable name; is it the password?)"
                .to_string()
        };
        let password = get(&self.password_env, &shown)?;
        Ok(Credentials { username, password })
    }
}

/// Target provider connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// `kubevirt://` (current kubeconfig context), `kubevirt://CONTEXT`, or `dir:///path`.
    pub url: String,
}

/// One VM of the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSelector {
    /// Source VM name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Source VM reference (as the source names it) or BIOS UUID, when names are ambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Target name, overriding the automatic DNS-1123 rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// Labels added to the VM template (what Services select on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Per-VM hooks, in addition to the plan's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookSpec>,
    /// Disk bus at the target, overriding the choice by guest OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bus: Option<TargetDiskBus>,
    /// Replace an existing VM of the same name in the target namespace.
    #[serde(default)]
    pub overwrite: bool,
    /// Root file system the conversion works on, as virt-v2v's `--root` takes it (`first`,
    /// `/dev/sda2`, `/dev/VG/LV`); virt-v2v's `first` when unset (Forklift's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk: Option<String>,
    /// Power state of the migrated VM (Forklift's field): `on`, `off`, or `auto` (the
    /// default: as the source VM was before the migration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_power_state: Option<TargetPowerState>,
    /// Warm: RFC 3339 UTC time (`2026-06-01T02:00:00Z`) to cut this VM over at, instead of
    /// `spec.options.cutover` (each VM of a plan may have its own maintenance window). `--cutover now` still cuts over at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<UtcTime>,
}

/// Power state of a migrated VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetPowerState {
    /// Running (`runStrategy: Always`).
    On,
    /// Stopped (`runStrategy: Halted`).
    Off,
    /// As the source VM was before the migration; `spec.options.runStrategy` wins when set.
    #[default]
    Auto,
}

impl VmSelector {
    /// What the user called this VM, for messages.
    pub fn display(&self) -> &str {
        self.name.as_deref().or(self.id.as_deref()).unwrap_or("<unnamed>")
    }
}

/// Disk bus at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetDiskBus {
    /// virtio-blk: fastest, needs guest drivers.
    Virtio,
    /// SATA: works without virtio drivers (fresh Windows guests).
    Sata,
    /// virtio-scsi.
    Scsi,
}

/// A reference to a source network or datastore, by name or id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceRef {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The source's id of the network or datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl SourceRef {
    /// Whether this reference designates the object with this name and id.
    pub fn matches(&self, name: &str, id: Option<&str>) -> bool {
        match (&self.name, &self.id) {
            (Some(n), _) if n == name => true,
            (_, Some(i)) => Some(i.as_str()) == id,
            _ => false,
        }
    }
}

/// One network mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkMapping {
    /// Source network.
    pub source: SourceRef,
    /// Target network.
    pub destination: NetworkDestination,
}

/// Where a source network lands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum NetworkDestination {
    /// The pod network (masquerade).
    Pod,
    /// A Multus NetworkAttachmentDefinition `namespace/name` (bridge binding).
    Multus {
        /// `namespace/name`, or `name` for the target namespace.
        name: String,
    },
    /// Drop NICs on this network.
    Ignored,
}

/// One storage mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageMapping {
    /// Source datastore.
    pub source: SourceRef,
    /// Target storage.
    pub destination: StorageDestination,
}

/// Target storage for the disks of one datastore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageDestination {
    /// Storage class name.
    pub storage_class: String,
    /// `Block` or `Filesystem`; the storage profile decides when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<VolumeMode>,
    /// Access mode; the storage profile decides when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_mode: Option<AccessMode>,
}

/// PVC volume mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeMode {
    /// Raw block device.
    Block,
    /// A filesystem holding `disk.img`.
    Filesystem,
}

/// PVC access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessMode {
    /// RWO.
    ReadWriteOnce,
    /// RWX (needed for live migration).
    ReadWriteMany,
    /// ROX.
    ReadOnlyMany,
    /// RWOP.
    ReadWriteOncePod,
}

/// A Service to create after migration, optionally with a Route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Service name (becomes a DNS name in the namespace).
    pub name: String,
    /// Label selector on the VM pods.
    pub selector: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Expose outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
}

/// A service port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port name (needed when a service has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP`, `UDP` or `SCTP`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Service port.
    pub port: u16,
    /// Port on the VM; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
}

fn tcp() -> String {
    "TCP".to_string()
}

/// An OpenShift Route (or Ingress where there is no Route API) for a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Route name.
    pub name: String,
    /// Host name; the router assigns one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Target port on the service; the first port when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// TLS termination (`edge`, `passthrough`, `reencrypt`); none unless asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookStep {
    /// Before the VM is touched (after validation).
    Pre,
    /// After the target VM exists.
    Post,
}

/// A hook: a local command, or a Kubernetes Job image on cluster targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookSpec {
    /// Name, for status and logs.
    pub name: String,
    /// Pre or post.
    pub step: HookStep,
    /// Local command and arguments; receives the VM as JSON on stdin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Container image run as a Job in the target namespace (cluster targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Deadline, e.g. `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// How disk data reaches a cluster target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransferMethod {
    /// vmigrate streams the disk to the CDI upload proxy.
    #[default]
    Upload,
    /// CDI imports by itself (VDDK or HTTP DataVolume source), like MTV.
    Import,
    /// One in-cluster Job per disk runs `vmigrate transfer`.
    Job,
}

impl TransferMethod {
    /// Every mode, in documentation order.
    pub const ALL: [TransferMethod; 3] = [TransferMethod::Upload, TransferMethod::Import, TransferMethod::Job];

    /// The name used in plans (`upload`, `import`, `job`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMethod::Upload => "upload",
            TransferMethod::Import => "import",
            TransferMethod::Job => "job",
        }
    }

    /// Whether a warm migration into a cluster can use this mode: every delta pass must write
    /// exactly the ranges changed since the previous snapshot into the volume that holds the
    /// earlier copy. A mode that cannot would finish "successfully" with a target frozen at
    /// the first copy, so validation refuses it (`warm.transfer-unsupported`).
    ///
    /// - `upload`: CDI's upload proxy takes one sequential image into a DataVolume that then
    ///   succeeds and accepts nothing more; a delta is scattered ranges. Refused.
    /// - `import`: needs CDI's multi-stage import (`spec.checkpoints`), not wired yet. Refused.
    /// - `job`: each pass is its own Job whose worker copies, from the pass's snapshot, only the
    ///   areas changed since the previous change id into the PVC, and reports what it did.
    pub fn supports_warm(self) -> bool {
        matches!(self, TransferMethod::Job)
    }

    /// The modes for which [`supports_warm`](Self::supports_warm) holds.
    pub fn warm_capable() -> Vec<TransferMethod> {
        TransferMethod::ALL.into_iter().filter(|m| m.supports_warm()).collect()
    }
}

impl std::fmt::Display for TransferMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Execution tunables, all optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanOptions {
    /// VMs migrated at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Warm: time between precopies, e.g. `60m` (MTV's default), `30s` for tests.
    #[serde(default = "default_precopy_interval")]
    pub precopy_interval: Duration,
    /// Warm: RFC 3339 UTC time to cut over at; waits for `--cutover now` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<UtcTime>,
    /// Graceful guest shutdown timeout before a hard power-off, e.g. `5m`.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Duration,
    /// Warm: enable CBT on VMs that lack it (changes the source config).
    #[serde(default)]
    pub enable_cbt: bool,
    /// How disks reach a cluster target.
    #[serde(default)]
    pub transfer: TransferMethod,
    /// Compress uploads with zstd.
    #[serde(default = "yes")]
    pub compression: bool,
    /// Verify every disk by digest after copying.
    #[serde(default)]
    pub verify: bool,
    /// `runStrategy` of the VMs once migrated (`Always`, `Halted`, `Manual`, `RerunOnFailure`);
    /// when unset, each VM's `targetPowerState` decides (by default: as the source was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    /// Power the source VM back on after a successful cold migration? (MTV: keep off.)
    #[serde(default)]
    pub restore_power_state: bool,
    /// Inspect guests on their source disks before anything moves (libguestfs inspection,
    /// `virt-inspector`, for sources with local disk files), so an OS virt-v2v cannot convert
    /// is refused at validation. Only when guests are converted. Under TCG ~1-2 minutes per VM.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub inspect_guests: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn default_max_in_flight() -> usize {
    2
}
fn default_precopy_interval() -> Duration {
    Duration::parse("60m").expect("a valid duration")
}
fn default_shutdown_timeout() -> Duration {
    Duration::parse("5m").expect("a valid duration")
}
fn yes() -> bool {
    true
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_in_flight: default_max_in_flight(),
            precopy_interval: default_precopy_interval(),
            cutover: None,
            shutdown_timeout: default_shutdown_timeout(),
            enable_cbt: false,
            transfer: TransferMethod::default(),
            compression: true,
            verify: false,
            run_strategy: None,
            restore_power_state: false,
            inspect_guests: true,
        }
    }
}

#[cfg(test)]
mod tests;
