//! The migration plan: which VMs go where, and how.
//!
//! Shaped like Forklift's `Plan`, `NetworkMap` and `StorageMap` so that MTV users read it at a
//! glance, but as one self-contained document. Every struct rejects unknown fields: a typo in a
//! plan must fail loudly with its line, not be silently ignored. Credentials are never stored in
//! the plan; it names the environment variables that hold them.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};
use crate::naming::{is_dns1123_label, is_dns1123_subdomain};
pub use crate::times::{Duration, UtcTime};

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

/// Parse `90`, `90s`, `15m`, `1h`, `1h30m`, `500ms` into a duration (what a plan's durations
/// take, [`Duration`], for command-line options that take the same).
///
/// # Errors
/// [`ErrorCode::PlanInvalid`] naming the text and the accepted forms.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    Duration::parse(text).map(|d| d.get())
}

/// A plan's text that deserializes but holds a value [`Duration`] or [`UtcTime`] refuses is
/// [`ErrorCode::PlanInvalid`] (the value is wrong), anything else [`ErrorCode::PlanParse`].
fn deser_error(e: impl std::fmt::Display) -> Error {
    let message = e.to_string();
    let code = if crate::times::is_refused_value(&message) { ErrorCode::PlanInvalid } else { ErrorCode::PlanParse };
    Error::new(code, format!("invalid plan: {message}"))
}

impl Plan {
    /// Parse a plan from YAML (JSON is valid YAML too). Errors name the field and the line.
    pub fn from_yaml_str(text: &str) -> Result<Plan> {
        check_text(text, true)?;
        let plan: Plan = serde_yaml_ng::from_str(text).map_err(deser_error)?;
        plan.check()?;
        Ok(plan)
    }

    /// Parse a plan from JSON. Errors name the field, line and column.
    pub fn from_json_str(text: &str) -> Result<Plan> {
        check_text(text, false)?;
        let plan: Plan = serde_json::from_str(text).map_err(deser_error)?;
        plan.check()?;
        Ok(plan)
    }

    /// Read a plan file: `.json` as JSON, anything else as YAML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Plan> {
        let path = path.as_ref();
        // A plan that cannot be read is a plan error (Python: PlanError), not an I/O error of a
        // transport; the cause stays attached.
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorCode::PlanParse, format!("cannot read plan {}: {e}", path.display())).with_source(e)
        })?;
        let res = if path.extension().is_some_and(|e| e == "json") {
            Plan::from_json_str(&text)
        } else {
            Plan::from_yaml_str(&text)
        };
        res.map_err(|e| {
            let msg = format!("{}: {}", path.display(), e.message());
            Error::new(e.code(), msg)
        })
    }

    /// The plan as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a plan always serializes")
    }

    /// Semantic checks that the schema cannot express. Runs on every parse.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorCode::PlanInvalid, msg));
        if self.api_version != API_VERSION {
            return bad(format!("apiVersion must be {API_VERSION}, not {:?}", self.api_version));
        }
        if self.kind != "Plan" {
            return bad(format!("kind must be Plan, not {:?}", self.kind));
        }
        if !is_dns1123_label(&self.metadata.name) {
            return bad(format!(
                "metadata.name {:?} must be a DNS-1123 label (lower-case a-z, 0-9, '-', at most 63)",
                self.metadata.name
            ));
        }
        let spec = &self.spec;
        if !is_dns1123_label(&spec.target_namespace) {
            return bad(format!("spec.targetNamespace {:?} must be a DNS-1123 label", spec.target_namespace));
        }
        if spec.source.url.trim().is_empty() {
            return bad("spec.source.url is empty".into());
        }
        if spec.target.url.trim().is_empty() {
            return bad("spec.target.url is empty".into());
        }
        if spec.vms.is_empty() {
            return bad("spec.vms is empty: name at least one VM".into());
        }
        if spec.vms.len() > MAX_PLAN_VMS {
            return bad(format!("spec.vms lists {} VMs; at most {MAX_PLAN_VMS} per plan", spec.vms.len()));
        }
        let mut seen = HashSet::new();
        for (i, vm) in spec.vms.iter().enumerate() {
            if vm.name.is_none() && vm.id.is_none() {
                return bad(format!("spec.vms[{i}] needs a name or an id"));
            }
            for (field, v) in [("name", &vm.name), ("id", &vm.id)] {
                if let Some(v) = v {
                    check_name(v, &format!("spec.vms[{i}].{field}"))?;
                }
            }
            if !seen.insert(vm.display().to_string()) {
                return bad(format!("spec.vms[{i}]: VM {:?} is listed twice", vm.display()));
            }
            if let Some(t) = &vm.target_name {
                if !is_dns1123_label(t) {
                    return bad(format!("spec.vms[{i}].targetName {t:?} must be a DNS-1123 label"));
                }
            }
            for hook in &vm.hooks {
                check_hook(hook, &format!("spec.vms[{i}].hooks"))?;
            }
            if let Some(root) = &vm.root_disk {
                let ok = matches!(root.as_str(), "first" | "single")
                    || (root.starts_with("/dev/") && root.len() > 5 && !root.contains(char::is_whitespace));
                if !ok {
                    return bad(format!(
                        "spec.vms[{i}].rootDisk {root:?} must be `first` or a device such as /dev/sda2 or /dev/VG/LV"
                    ));
                }
            }
        }
        for (i, m) in spec.network_map.iter().enumerate() {
            if m.source.name.is_none() && m.source.id.is_none() {
                return bad(format!("spec.networkMap[{i}].source needs a name or an id"));
            }
            if let NetworkDestination::Multus { name } = &m.destination {
                let ok = match name.split_once('/') {
                    Some((ns, n)) => is_dns1123_label(ns) && is_dns1123_subdomain(n),
                    None => is_dns1123_subdomain(name),
                };
                if !ok {
                    return bad(format!(
                        "spec.networkMap[{i}].destination.name {name:?} must be namespace/name of a NetworkAttachmentDefinition"
                    ));
                }
            }
        }
        let pods = spec.network_map.iter().filter(|m| m.destination == NetworkDestination::Pod).count();
        if pods > 1 {
            // Several source networks may map to the pod network, but a VM can only have one
            // pod interface: this is reported per VM by validation, not here.
        }
        for (i, m) in spec.storage_map.iter().enumerate() {
            if m.source.name.is_none() && m.source.id.is_none() {
                return bad(format!("spec.storageMap[{i}].source needs a name or an id"));
            }
            if !is_dns1123_subdomain(&m.destination.storage_class) {
                return bad(format!(
                    "spec.storageMap[{i}].destination.storageClass {:?} is not a valid name",
                    m.destination.storage_class
                ));
            }
        }
        let mut svc_names = HashSet::new();
        for (i, s) in spec.services.iter().enumerate() {
            if !is_dns1123_label(&s.name) {
                return bad(format!("spec.services[{i}].name {:?} must be a DNS-1123 label", s.name));
            }
            if !svc_names.insert(&s.name) {
                return bad(format!("spec.services[{i}]: service {:?} is listed twice", s.name));
            }
            if s.selector.is_empty() {
                return bad(format!("spec.services[{i}].selector is empty: it would select nothing"));
            }
            if s.ports.is_empty() {
                return bad(format!("spec.services[{i}].ports is empty"));
            }
            for (j, p) in s.ports.iter().enumerate() {
                if p.port == 0 || p.target_port == Some(0) {
                    return bad(format!("spec.services[{i}].ports[{j}]: port 0 is not valid"));
                }
                if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                    return bad(format!("spec.services[{i}].ports[{j}].protocol must be TCP, UDP or SCTP"));
                }
            }
            if s.ports.len() > 1 && s.ports.iter().any(|p| p.name.is_none()) {
                return bad(format!("spec.services[{i}]: every port needs a name when there are several"));
            }
            if let Some(r) = &s.route {
                if !is_dns1123_subdomain(&r.name) {
                    return bad(format!("spec.services[{i}].route.name {:?} is not a valid name", r.name));
                }
                if let Some(t) = &r.tls {
                    if !matches!(t.as_str(), "edge" | "passthrough" | "reencrypt") {
                        return bad(format!("spec.services[{i}].route.tls must be edge, passthrough or reencrypt"));
                    }
                }
            }
        }
        for hook in &spec.hooks {
            check_hook(hook, "spec.hooks")?;
        }
        let o = &spec.options;
        if o.max_in_flight == 0 {
            return bad("spec.options.maxInFlight must be at least 1".into());
        }
        // Durations and cutover times were parsed when the plan was read (`Duration`, `UtcTime`),
        // not first at the cutover hours or days later.
        if let Some(rs) = &o.run_strategy {
            if !matches!(rs.as_str(), "Always" | "Halted" | "Manual" | "RerunOnFailure" | "Once") {
                return bad(format!("spec.options.runStrategy {rs:?} is not a run strategy (Always, Halted, Manual, RerunOnFailure, Once)"));
            }
        }
        if let Some(path) = &spec.virtio_win {
            if path.trim().is_empty() {
                return bad("spec.virtioWin is empty: give the path of the virtio-win ISO or leave it out".into());
            }
        }
        Ok(())
    }

    /// The target storage for a datastore, if mapped.
    pub fn storage_for(&self, datastore: &str, id: Option<&str>) -> Option<&StorageDestination> {
        self.spec.storage_map.iter().find(|m| m.source.matches(datastore, id)).map(|m| &m.destination)
    }

    /// The target network for a source network, if mapped.
    pub fn network_for(&self, network: &str, id: Option<&str>) -> Option<&NetworkDestination> {
        self.spec.network_map.iter().find(|m| m.source.matches(network, id)).map(|m| &m.destination)
    }
}

/// `[A-Z_][A-Z0-9_]*`: the shape of an environment variable name, which a password rarely has.
pub fn looks_like_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase() || f == '_')
        && c.all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '_')
}

/// Largest plan file accepted (a plan of 10,000 VMs is well under this).
pub const MAX_PLAN_BYTES: usize = 4 << 20;
/// Deepest `[`/`{` nesting accepted in a plan (a real plan needs 4).
pub const MAX_PLAN_DEPTH: usize = 32;
/// Most VMs in one plan.
pub const MAX_PLAN_VMS: usize = 10_000;

/// Cheap checks before a plan is parsed, so that hostile text cannot take minutes or gigabytes:
/// its size, its flow nesting depth, and (YAML) no anchors/aliases, whose expansion is the
/// "billion laughs" bomb. Quoted strings and comments are skipped.
fn check_text(text: &str, yaml: bool) -> Result<()> {
    let bad = |msg: String| Err(Error::new(ErrorCode::PlanParse, msg));
    if text.len() > MAX_PLAN_BYTES {
        return bad(format!("the plan is {} bytes; at most {MAX_PLAN_BYTES} are accepted", text.len()));
    }
    let (mut depth, mut quote, mut comment, mut prev) = (0usize, None::<char>, false, ' ');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if c == '\\' && q == '"' {
                chars.next();
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '"' | '\'' if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
                '#' if yaml && prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_PLAN_DEPTH {
                        return bad(format!("the plan nests deeper than {MAX_PLAN_DEPTH} levels"));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                '&' | '*'
                    if yaml
                        && (prev.is_whitespace() || "[{,".contains(prev))
                        && chars.peek().is_some_and(|n| n.is_alphanumeric() || *n == '_' || *n == '-') =>
                {
                    return bad("YAML anchors and aliases (&name, *name) are not accepted in plans".into());
                }
                _ => {}
            }
        }
        prev = c;
    }
    Ok(())
}

/// Longest VM name or id accepted (sources allow 80 characters or more).
pub const MAX_NAME_LEN: usize = 1024;

/// A VM name or id from a plan, a VMX or an inventory: at most [`MAX_NAME_LEN`] bytes, no
/// control characters (NUL, terminal escapes). The error quotes only the start of the name.
///
/// # Errors
/// [`ErrorCode::PlanInvalid`] naming `at`.
pub fn check_name(name: &str, at: &str) -> Result<()> {
    let start: String = name.chars().take(40).collect::<String>().escape_debug().to_string();
    if name.len() > MAX_NAME_LEN {
        return Err(Error::new(
            ErrorCode::PlanInvalid,
            format!("{at} is {} bytes long (at most {MAX_NAME_LEN}): \"{start}...\"", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::new(ErrorCode::PlanInvalid, format!("{at} \"{start}\" holds control characters")));
    }
    Ok(())
}

fn check_hook(hook: &HookSpec, at: &str) -> Result<()> {
    let bad = |msg: String| Err(Error::new(ErrorCode::PlanInvalid, msg));
    match (hook.command.is_empty(), &hook.image) {
        (true, None) => return bad(format!("{at}: hook {:?} needs a command or an image", hook.name)),
        (false, Some(_)) => return bad(format!("{at}: hook {:?} has both a command and an image", hook.name)),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the foundation issue, verbatim.
    pub(crate) const LAB_PLAN: &str = r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: move-webapp-vmware
spec:
  source:
    url: https://vcenter.example.com/sdk      # or vmx:///path/to/datastore-folder
    thumbprint: "AB:CD:..."                     # SHA-256 of the server certificate (optional)
    insecure: false
    credentials: { usernameEnv: VMIGRATE_SOURCE_USERNAME, passwordEnv: VMIGRATE_SOURCE_PASSWORD }
  target:
    url: kubevirt://                            # current kubeconfig context; or dir:///path/to/output
  targetNamespace: vmexamples
  warm: false
  vms:
    - name: database
    - name: winweb01
      labels: { env: webapp }                   # added to the VM template's labels
    - name: winweb02
      targetName: winweb02                      # optional override
      labels: { env: webapp }
  networkMap:
    - source: { name: "segment-migrating-to-ocpvirt" }
      destination: { type: pod }                # or { type: multus, name: ns/nad-name }
  storageMap:
    - source: { name: WorkloadDatastore }
      destination: { storageClass: ocs-storagecluster-ceph-rbd-virtualization, volumeMode: Block, accessMode: ReadWriteMany }
  services:                                     # exposure after the move (lab section 3.4)
    - name: webapp
      selector: { env: webapp }
      ports: [{ protocol: TCP, port: 80, targetPort: 80 }]
      route: { name: route-webapp }             # optional: reachable from outside the cluster
    - name: database
      selector: { vm.kubevirt.io/name: database }
      ports: [{ protocol: TCP, port: 3306, targetPort: 3306 }]
  hooks: []
"#;

    /// Issue 12: cutover times (the plan's and each VM's own) are RFC 3339, checked when the
    /// plan is read rather than at the cutover hours later.
    #[test]
    fn cutover_times_are_checked_up_front() {
        let warm = LAB_PLAN.replace("warm: false", "warm: true");
        // Times go in as text, the way users write them: `spec.vms[1]` (winweb01) and
        // `spec.options`.
        let at = |vm: &str, plan: &str| {
            let mut text = warm.clone();
            if !vm.is_empty() {
                text = text.replacen(
                    "    - name: winweb01\n",
                    &format!("    - name: winweb01\n      cutover: {vm:?}\n"),
                    1,
                );
            }
            if !plan.is_empty() {
                text = text.replacen("  hooks: []\n", &format!("  hooks: []\n  options:\n    cutover: {plan:?}\n"), 1);
            }
            Plan::from_yaml_str(&text)
        };
        let p = at("2026-06-01T02:00:00Z", "2026-06-02T02:00:00Z").expect("valid times");
        // Parsed once, here: the executor only reads the value.
        let vm_at = p.spec.vms[1].cutover.as_ref().expect("the VM's time");
        assert_eq!(vm_at.get(), std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_780_279_200));
        assert_eq!(p.spec.options.cutover.as_ref().map(|t| t.as_str()), Some("2026-06-02T02:00:00Z"));
        // What humantime takes (UTC), so an offset is refused when the plan is read.
        assert!(at("2026-06-01T02:00:00+02:00", "").is_err());
        let e = at("tonight", "").expect_err("a VM's bad time");
        assert_eq!(e.code(), ErrorCode::PlanInvalid);
        assert!(e.to_string().contains("spec.vms[1].cutover") && e.to_string().contains("tonight"), "{e}");
        let e = at("", "2026-13-01T00:00:00Z").expect_err("the plan's bad time");
        assert_eq!(e.code(), ErrorCode::PlanInvalid);
        assert!(e.to_string().contains("spec.options.cutover"), "{e}");
        let p = Plan::from_yaml_str(&warm.replacen(
            "    - name: database\n",
            "    - name: database\n      cutover: \"2026-06-01T02:00:00Z\"\n",
            1,
        ))
        .expect("a VM's cutover field parses");
        assert_eq!(p.spec.vms[0].cutover.as_ref().map(|t| t.as_str()), Some("2026-06-01T02:00:00Z"));
        // Written back as it was read: the plan digest of a status file does not move.
        let again = Plan::from_json_str(&serde_json::to_string(&p).expect("json")).expect("round trip");
        assert_eq!(again, p);
        assert!(serde_json::to_string(&p).expect("json").contains("\"cutover\":\"2026-06-01T02:00:00Z\""));
    }

    /// Durations are typed when the plan is read: a bad one is `PlanInvalid` naming the field
    /// and its line; a good one is written back as it was written.
    #[test]
    fn plan_durations_are_parsed_when_read() {
        let with = |opts: &str| {
            Plan::from_yaml_str(&LAB_PLAN.replacen("  hooks: []\n", &format!("  hooks: []\n  options:\n{opts}"), 1))
        };
        let p = with("    precopyInterval: 1h30m\n    shutdownTimeout: 45\n").expect("plan");
        assert_eq!(p.spec.options.precopy_interval.get(), std::time::Duration::from_secs(5400));
        assert_eq!(p.spec.options.shutdown_timeout.get(), std::time::Duration::from_secs(45));
        let json = serde_json::to_value(&p.spec.options).expect("json");
        assert_eq!((json["precopyInterval"].as_str(), json["shutdownTimeout"].as_str()), (Some("1h30m"), Some("45")));
        let defaults = Plan::from_yaml_str(LAB_PLAN).expect("plan");
        assert_eq!(defaults.spec.options.precopy_interval.as_str(), "60m");
        assert_eq!(defaults.spec.options.shutdown_timeout.get(), std::time::Duration::from_secs(300));
        for (opts, field) in [
            ("    precopyInterval: soon\n", "spec.options.precopyInterval"),
            ("    shutdownTimeout: 5x\n", "spec.options.shutdownTimeout"),
        ] {
            let e = with(opts).expect_err(opts);
            assert_eq!(e.code(), ErrorCode::PlanInvalid, "{e}");
            assert!(e.to_string().contains(field) && e.to_string().contains("invalid duration"), "{e}");
            assert!(e.to_string().contains("line "), "{e}");
        }
        let hook = "  hooks:\n    - { name: h, step: pre, command: [\"true\"], timeout: 10 minutes }\n";
        let e = Plan::from_yaml_str(&LAB_PLAN.replacen("  hooks: []\n", hook, 1)).expect_err("bad hook timeout");
        assert_eq!(e.code(), ErrorCode::PlanInvalid, "{e}");
        assert!(e.to_string().contains("spec.hooks[0].timeout") && e.to_string().contains("10 minutes"), "{e}");
        // A value of the wrong kind is still a parse error.
        let e = with("    precopyInterval: [1]\n").expect_err("a list");
        assert_eq!(e.code(), ErrorCode::PlanParse, "{e}");
    }

    /// Issue 14 item 11: hostile plan text is refused quickly and cheaply: deep nesting, alias
    /// bombs, oversize files, too many VMs; the name-clash check of a large plan is linear.
    #[test]
    fn plan_size_depth_and_alias_limits() {
        let head = "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: { name: p }\nspec:\n  source: { url: \"vmx:///d\" }\n  target: { url: \"dir:///o\" }\n  targetNamespace: ns\n";
        let t = std::time::Instant::now();
        let deep = format!("{head}  vms: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = Plan::from_yaml_str(&deep).expect_err("deep");
        assert!(e.to_string().contains("nests deeper"), "{e}");
        let bomb = format!(
            "{head}  vms:\n    - name: a\nx: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\ny: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        );
        let e = Plan::from_yaml_str(&bomb).expect_err("alias bomb");
        assert!(e.to_string().contains("anchors"), "{e}");
        let e = Plan::from_yaml_str(&" ".repeat(MAX_PLAN_BYTES + 1)).expect_err("huge");
        assert!(e.to_string().contains("bytes"), "{e}");
        let many: String = (0..MAX_PLAN_VMS + 1).map(|i| format!("    - name: vm{i}\n")).collect();
        let e = Plan::from_yaml_str(&format!("{head}  vms:\n{many}")).expect_err("too many");
        assert_eq!(e.code(), ErrorCode::PlanInvalid);
        // Quoted text and comments with the same characters are fine.
        let ok = format!("{head}  vms:\n    - name: \"a&b *c [[[[\" # &x *y\n");
        Plan::from_yaml_str(&ok).expect("quoted");
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
        // 80,000 names through the clash check.
        let names: Vec<String> = (0..80_000).map(|i| format!("vm{}", i % 40_000)).collect();
        let reqs: Vec<crate::naming::NameRequest<'_>> =
            names.iter().map(|n| crate::naming::NameRequest { source_name: n, identity: n, explicit: None }).collect();
        let t = std::time::Instant::now();
        let out = crate::naming::assign_names(&reqs, &[]);
        assert_eq!(out.len(), 80_000);
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "clash check took {:?}", t.elapsed());
    }

    /// Issue 14 item 16: a password put in `passwordEnv` by mistake is not echoed.
    #[test]
    fn a_password_in_password_env_is_not_echoed() {
        let r = CredentialsRef { username_env: "PATH".into(), password_env: "hunter2-Secret!".into() };
        let e = r.resolve().expect_err("no such variable");
        assert_eq!(e.code(), ErrorCode::CredentialsMissing);
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn lab_plan_parses_as_written() {
        let plan = Plan::from_yaml_str(LAB_PLAN).expect("lab plan parses");
        assert_eq!(plan.metadata.name, "move-webapp-vmware");
        assert_eq!(plan.spec.target_namespace, "vmexamples");
        assert_eq!(plan.spec.vms.len(), 3);
        assert_eq!(plan.spec.vms[1].labels.get("env").map(String::as_str), Some("webapp"));
        assert_eq!(plan.spec.network_map[0].destination, NetworkDestination::Pod);
        let st = plan.storage_for("WorkloadDatastore", None).expect("mapped");
        assert_eq!(st.volume_mode, Some(VolumeMode::Block));
        assert_eq!(st.access_mode, Some(AccessMode::ReadWriteMany));
        assert_eq!(plan.spec.services[0].route.as_ref().map(|r| r.name.as_str()), Some("route-webapp"));
        assert_eq!(plan.spec.services[1].selector.get("vm.kubevirt.io/name").map(String::as_str), Some("database"));
        assert_eq!(plan.spec.options, PlanOptions::default());
        // Round trip through YAML and JSON.
        let again = Plan::from_yaml_str(&plan.to_yaml()).expect("round trip yaml");
        assert_eq!(again, plan);
        let json = serde_json::to_string(&plan).expect("json");
        assert_eq!(Plan::from_json_str(&json).expect("round trip json"), plan);
    }

    #[test]
    fn conversion_options_with_forklift_names() {
        let plan = Plan::from_yaml_str(LAB_PLAN).expect("lab plan");
        assert!(!plan.spec.skip_guest_conversion, "guests are converted by default");
        assert!(plan.spec.preserve_static_ips, "static IPs are kept by default");
        assert_eq!(plan.spec.virtio_win, None);
        assert_eq!(plan.spec.vms[0].target_power_state, None);
        let text = LAB_PLAN
            .replace(
                "  warm: false\n",
                "  warm: false\n  skipGuestConversion: true\n  preserveStaticIPs: false\n  virtioWin: /isos/virtio-win.iso\n",
            )
            .replacen("    - name: database\n", "    - name: database\n      rootDisk: /dev/sda2\n      targetPowerState: on\n", 1);
        let plan = Plan::from_yaml_str(&text).expect("conversion options parse");
        assert!(plan.spec.skip_guest_conversion);
        assert!(!plan.spec.preserve_static_ips);
        assert_eq!(plan.spec.virtio_win.as_deref(), Some("/isos/virtio-win.iso"));
        assert_eq!(plan.spec.vms[0].root_disk.as_deref(), Some("/dev/sda2"));
        assert_eq!(plan.spec.vms[0].target_power_state, Some(TargetPowerState::On));
        assert_eq!(Plan::from_yaml_str(&plan.to_yaml()).expect("round trip"), plan);
        // Misspellings and bad values are errors, not silently ignored.
        let typo = LAB_PLAN.replace("  warm: false\n", "  warm: false\n  preserveStaticIps: true\n");
        assert_eq!(Plan::from_yaml_str(&typo).expect_err("typo").code(), ErrorCode::PlanParse);
        let bad =
            LAB_PLAN.replacen("    - name: database\n", "    - name: database\n      targetPowerState: running\n", 1);
        assert_eq!(Plan::from_yaml_str(&bad).expect_err("bad state").code(), ErrorCode::PlanParse);
        let bad = LAB_PLAN.replacen("    - name: database\n", "    - name: database\n      rootDisk: sda2\n", 1);
        let err = Plan::from_yaml_str(&bad).expect_err("bad root");
        assert!(err.to_string().contains("rootDisk"), "{err}");
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let text = LAB_PLAN.replace("  warm: false\n", "  warm: false\n  wram: true\n");
        let err = Plan::from_yaml_str(&text).expect_err("unknown field");
        assert_eq!(err.code(), ErrorCode::PlanParse);
        let msg = err.to_string();
        assert!(msg.contains("wram"), "{msg}");
        assert!(msg.contains("line 15"), "{msg}");
    }

    #[test]
    fn unknown_nested_field_and_password_rejected() {
        let text = LAB_PLAN.replace("passwordEnv: VMIGRATE_SOURCE_PASSWORD", "password: hunter2");
        let err = Plan::from_yaml_str(&text).expect_err("password in plan");
        let msg = err.to_string();
        assert!(msg.contains("password"), "{msg}");
        assert!(msg.contains("line 10"), "{msg}");
        assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let err = Plan::from_json_str("{\n \"apiVersion\": \"vmigrate.dev/v1alpha1\",\n \"kind\": 3\n}")
            .expect_err("bad type");
        assert_eq!(err.code(), ErrorCode::PlanParse);
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn semantic_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("name: move-webapp-vmware", "name: Move_Webapp", "metadata.name"),
            ("targetNamespace: vmexamples", "targetNamespace: VM Examples", "targetNamespace"),
            (
                "    - name: winweb02\n      targetName: winweb02",
                "    - name: database\n      targetName: winweb02",
                "listed twice",
            ),
            ("targetName: winweb02", "targetName: Win_Web", "targetName"),
            ("{ type: pod }", "{ type: multus, name: \"bad/ns/x\" }", "NetworkAttachmentDefinition"),
            ("port: 3306, targetPort", "port: 0, targetPort", "port 0"),
            ("selector: { env: webapp }", "selector: {}", "selector is empty"),
            ("route: { name: route-webapp }", "route: { name: route-webapp, tls: strange }", "tls"),
            ("apiVersion: vmigrate.dev/v1alpha1", "apiVersion: forklift.konveyor.io/v1beta1", "apiVersion"),
            ("hooks: []", "hooks: [{ name: h, step: pre }]", "needs a command"),
        ];
        for (from, to, want) in cases {
            assert!(LAB_PLAN.contains(from), "fixture lacks {from}");
            let err = Plan::from_yaml_str(&LAB_PLAN.replacen(from, to, 1)).expect_err(want);
            assert_eq!(err.code(), ErrorCode::PlanInvalid, "{want}: {err}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("60m").expect("ok"), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").expect("ok"), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").expect("ok"), Duration::from_secs(45));
        assert_eq!(parse_duration("250ms").expect("ok"), Duration::from_millis(250));
        for bad in ["", "m", "5x", "1h5", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_resolve_and_redact() {
        let r = CredentialsRef { username_env: "VMIGRATE_TEST_U_1".into(), password_env: "VMIGRATE_TEST_P_1".into() };
        let err = r.resolve().expect_err("unset");
        assert_eq!(err.code(), ErrorCode::CredentialsMissing);
        assert!(err.to_string().contains("VMIGRATE_TEST_U_1"));
        let c = Credentials { username: "u".into(), password: "s3cret".into() };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
