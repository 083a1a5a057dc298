//! The cluster target: KubeVirt and CDI through kube-rs, every write a server-side apply by the
//! field manager `vmigrate`, every object labelled with the plan and the source VM.
//!
//! Which path fills the disks (the plan's `options.transfer`):
//! - `upload` (default): a DataVolume with `source.upload`; we stream the disk through the copy
//!   engine to the CDI upload proxy. Works from anywhere that reaches the API and the proxy;
//!   the right choice for the demo, VMX folders and modest numbers of disks.
//! - `import`: CDI imports by itself (DataVolume `source.vddk`, or `source.http` when an URL
//!   template is configured), like MTV: data flows vCenter/ESXi -> cluster directly. Best when
//!   the cluster reaches vSphere and the VDDK image is available.
//! - `job`: one `batch/v1` Job per disk runs `vmigrate transfer` next to the PVC: many disks in
//!   parallel on many nodes, no traffic through the machine running vmigrate.
//!
//! Concern ids of [`TargetProvider::preflight`]: `target.kubevirt-missing`,
//! `target.cdi-missing`, `target.namespace-missing`, `target.storage-class-missing`,
//! `target.nad-missing`.
//!
//! Guest conversion runs in the cluster as a Job over the VM's PVCs (the `conversion` module), in
//! every transfer mode, after the last copy.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmigrate_core::model::Disk;
use vmigrate_core::plan::{NetworkDestination, ServiceSpec, SourceSpec, TransferMethod};
use vmigrate_core::provider::ImportHint;
use vmigrate_core::{
    Concern, ExistingVm, PassReport, Plan, PreparedVolume, Result, Severity, TargetPass, TargetProvider, TargetVm,
    VolumeSink,
};

use crate::builder::{self, VolumeSource, ANNOTATION_SOURCE_ID, FIELD_MANAGER};
use crate::error::KubevirtError;
use crate::objects::{DataVolume, HttpSource, UploadTokenRequest, UploadTokenRequestSpec, VirtualMachine};
use crate::upload::{UploadConfig, UploadSink, UploadStats};
use crate::wait::{await_condition, is_datavolume_succeeded, is_datavolume_upload_ready};

/// Tunables of the cluster target. [`TargetProvider::preflight`] adopts the plan's transfer
/// method and compression unless [`KubevirtOptions::adopt_plan_options`] is off.
#[derive(Debug, Clone)]
pub struct KubevirtOptions {
    /// How disks get into the cluster.
    pub transfer: TransferMethod,
    /// zstd-compress uploads.
    pub compression: bool,
    /// Take `transfer` and `compression` from the plan at preflight.
    pub adopt_plan_options: bool,
    /// Upload proxy base URL; when unset, CDIConfig's `status.uploadProxyURL` (https).
    pub upload_proxy_url: Option<String>,
    /// Longest wait for a DataVolume phase or a Job.
    pub timeout: Duration,
    /// Poll interval while waiting.
    pub poll_interval: Duration,
    /// Transfer Jobs running at once.
    pub max_jobs: usize,
    /// Image of the transfer worker.
    pub job_image: String,
    /// The transfer worker's `--checkpoint-interval` (its default, 5 s, when unset).
    pub job_checkpoint_interval: Option<Duration>,
    /// The transfer worker's `--work-unit` in bytes (its default, 128 MiB, when unset): the most
    /// a pass killed mid-way copies again.
    pub job_work_unit: Option<u64>,
    /// Image of the guest conversion Job (virt-v2v, `kubevirt/Containerfile.convert`).
    pub convert_image: String,
    /// VDDK init image for `import` through VDDK.
    pub vddk_init_image: Option<String>,
    /// For `import` over HTTP: URL with `{file}` (the disk's datastore path, URL-encoded).
    pub http_url_template: Option<String>,
    /// Take over fields another field manager owns (server-side apply `force`). Off: such an
    /// apply fails with KubeConflict naming the other manager, so nobody's settings are
    /// overwritten silently (`--force-conflicts` turns it on).
    pub force_conflicts: bool,
}

impl Default for KubevirtOptions {
    fn default() -> Self {
        KubevirtOptions {
            transfer: TransferMethod::Upload,
            compression: true,
            adopt_plan_options: true,
            upload_proxy_url: None,
            timeout: Duration::from_secs(30 * 60),
            poll_interval: Duration::from_secs(2),
            max_jobs: 4,
            job_image: "localhost/vmigrate-transfer:latest".into(),
            job_checkpoint_interval: None,
            job_work_unit: None,
            convert_image: "localhost/vmigrate-convert:latest".into(),
            vddk_init_image: None,
            http_url_template: None,
            force_conflicts: false,
        }
    }
}

/// A KubeVirt cluster as a migration target.
pub struct KubevirtTarget {
    client: kube::Client,
    options: RwLock<KubevirtOptions>,
    source: RwLock<Option<SourceSpec>>,
    http: reqwest::Client,
    jobs: Arc<Semaphore>,
    permits: Mutex<HashMap<String, OwnedSemaphorePermit>>,
    uploads: Mutex<BTreeMap<String, Arc<UploadStats>>>,
    progress: Mutex<BTreeMap<String, f64>>,
    /// API group/version + resource pairs discovery found served (only positives are kept: an
    /// API installed later is found on the next look).
    served: Mutex<std::collections::BTreeSet<(String, String)>>,
    /// Objects this target created, per VM (`namespace/name`): what cleanup may delete.
    created: Mutex<BTreeMap<String, Vec<Created>>>,
}

/// An object created by this run, remembered by UID so cleanup deletes exactly it.
#[derive(Debug, Clone)]
struct Created {
    kind: &'static str,
    name: String,
    uid: String,
}

impl std::fmt::Debug for KubevirtTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubevirtTarget").field("options", &self.opts()).finish_non_exhaustive()
    }
}

fn ns_api<K>(client: &kube::Client, ns: &str) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    Api::namespaced(client.clone(), ns)
}

impl KubevirtTarget {
    /// Connect through a kubeconfig context (`None`: the current context, or the in-cluster
    /// service account when there is no kubeconfig).
    ///
    /// # Errors
    /// [`KubevirtError::Config`] when no configuration can be loaded.
    pub async fn connect(context: Option<&str>) -> Result<KubevirtTarget> {
        let cfg_err = |source| KubevirtError::Config { context: context.map(str::to_string), source };
        let config = match context {
            Some(c) => {
                let opts = kube::config::KubeConfigOptions { context: Some(c.to_string()), ..Default::default() };
                kube::Config::from_kubeconfig(&opts).await.map_err(|e| cfg_err(kube::Error::InferKubeconfig(e)))?
            }
            None => kube::Config::infer().await.map_err(|e| cfg_err(kube::Error::InferConfig(e)))?,
        };
        let client = kube::Client::try_from(config).map_err(cfg_err)?;
        Ok(KubevirtTarget::from_client(client))
    }

    /// Use an existing client (tests, callers with their own configuration).
    pub fn from_client(client: kube::Client) -> KubevirtTarget {
        let options = KubevirtOptions::default();
        KubevirtTarget {
            client,
            jobs: Arc::new(Semaphore::new(options.max_jobs.max(1))),
            options: RwLock::new(options),
            source: RwLock::new(None),
            http: reqwest::Client::new(),
            permits: Mutex::new(HashMap::new()),
            uploads: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(BTreeMap::new()),
            served: Mutex::new(Default::default()),
            created: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replace the options.
    pub fn with_options(mut self, options: KubevirtOptions) -> Self {
        self.jobs = Arc::new(Semaphore::new(options.max_jobs.max(1)));
        self.options = RwLock::new(options);
        self
    }

    /// Tell the target how to reach the source (import and job paths); preflight does this from
    /// the plan.
    pub fn set_source(&self, source: SourceSpec) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// The kube client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Bytes copied and sent of the upload into a volume, once it started.
    pub fn upload_stats(&self, volume: &str) -> Option<Arc<UploadStats>> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).get(volume).cloned()
    }

    /// Last import progress (0..=1) CDI reported for a volume.
    pub fn import_progress(&self, volume: &str) -> Option<f64> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).get(volume).copied()
    }

    /// The slots capping how many transfer Jobs run at once.
    pub(crate) fn job_slots(&self) -> Arc<Semaphore> {
        self.jobs.clone()
    }

    /// How to reach the source (adopted from the plan at preflight).
    pub(crate) fn source_spec(&self) -> SourceSpec {
        self.source.read().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
    }

    pub(crate) fn opts(&self) -> KubevirtOptions {
        self.options.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the API server serves a group/version (`kubevirt.io/v1`, `v1`).
    ///
    /// # Errors
    /// API errors other than 404.
    pub async fn has_api(&self, group_version: &str) -> Result<bool, KubevirtError> {
        let res = if group_version == "v1" {
            self.client.list_core_api_resources("v1").await.map(|_| ())
        } else {
            self.client.list_api_group_resources(group_version).await.map(|_| ())
        };
        match res {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(KubevirtError::from_kube("discover", group_version.to_string(), e)),
        }
    }

    /// Whether the API server serves `resource` (plural) in `group_version`, from discovery.
    /// A server answers paths of an API it does not serve with a plain-text
    /// `404 page not found`, indistinguishable from a missing object by status alone, so
    /// missing APIs are found here and never from error text.
    ///
    /// # Errors
    /// API errors other than 404.
    pub async fn serves(&self, group_version: &str, resource: &str) -> Result<bool, KubevirtError> {
        let key = (group_version.to_string(), resource.to_string());
        if self.served.lock().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return Ok(true);
        }
        let res = if group_version == "v1" {
            self.client.list_core_api_resources("v1").await
        } else {
            self.client.list_api_group_resources(group_version).await
        };
        match res {
            Ok(list) => {
                let found = list.resources.iter().any(|r| r.name == resource);
                if found {
                    self.served.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
                }
                Ok(found)
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(KubevirtError::from_kube("discover", group_version.to_string(), e)),
        }
    }

    /// [`KubevirtTarget::serves`], or [`KubevirtError::MissingCrd`] naming the API.
    async fn require(&self, group_version: &str, resource: &str) -> Result<(), KubevirtError> {
        if self.serves(group_version, resource).await? {
            Ok(())
        } else {
            Err(KubevirtError::MissingCrd { group: format!("{group_version} ({resource})") })
        }
    }

    pub(crate) async fn apply<K>(&self, api: &Api<K>, name: &str, what: &str, obj: &K) -> Result<K, KubevirtError>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let mut pp = PatchParams::apply(FIELD_MANAGER);
        if self.opts().force_conflicts {
            pp = pp.force();
        }
        api.patch(name, &pp, &Patch::Apply(obj)).await.map_err(|e| self.classify("apply", what, e))
    }

    pub(crate) fn classify(&self, verb: &'static str, what: &str, e: kube::Error) -> KubevirtError {
        KubevirtError::from_kube(verb, what.to_string(), e)
    }

    pub(crate) fn remember(&self, vm: &TargetVm, kind: &'static str, meta: &ObjectMeta) {
        let (Some(name), Some(uid)) = (meta.name.clone(), meta.uid.clone()) else { return };
        let key = format!("{}/{}", vm.namespace, vm.name);
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        let list = created.entry(key).or_default();
        list.retain(|c| !(c.kind == kind && c.name == name));
        list.push(Created { kind, name, uid });
    }

    /// Delete exactly the object this run created (UID precondition, background propagation:
    /// the garbage collector takes its dependents, e.g. the PVC CDI made for a DataVolume).
    async fn delete_uid<K>(&self, api: &Api<K>, c: &Created, what: &str) -> Result<(), KubevirtError>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(c.uid.clone()), resource_version: None }),
            ..DeleteParams::background()
        };
        match api.delete(&c.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone already, or a different object by now (UID precondition failed).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(self.classify("delete", what, e)),
        }
    }

    /// Wait until the object `name` with `uid` is gone (finalizers and the garbage collector
    /// can keep a deleted object for a while; an apply meanwhile would land on the dying one).
    pub(crate) async fn wait_deleted<K>(
        &self,
        api: &Api<K>,
        name: &str,
        uid: &str,
        what: &str,
    ) -> Result<(), KubevirtError>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let o = self.opts();
        let start = std::time::Instant::now();
        loop {
            match self.get_opt(api, name).await? {
                None => return Ok(()),
                Some(obj) if obj.meta().uid.as_deref() != Some(uid) => return Ok(()),
                Some(_) => {}
            }
            if start.elapsed() >= o.timeout {
                return Err(KubevirtError::Timeout {
                    what: format!("{what} to be deleted (finalizers: check its metadata.finalizers)"),
                    seconds: o.timeout.as_secs(),
                });
            }
            tokio::time::sleep(o.poll_interval).await;
        }
    }

    /// Delete `vm`'s source-credentials Secret: once its disks are copied (the VM exists) or
    /// its migration failed, nothing reads it, and a vCenter password left in the tenant's
    /// namespace is readable by everyone who may read Secrets there. Best effort with a warning
    /// naming it: the migration's outcome does not depend on it.
    async fn remove_source_secret(&self, vm: &TargetVm) {
        let api: Api<Secret> = ns_api(&self.client, &vm.namespace);
        let name = Self::source_secret_name(vm);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(secret = %name, "removed the source credentials Secret"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(
                secret = %name, namespace = %vm.namespace, error = %e,
                "could not remove the Secret with the source credentials; delete it by hand"
            ),
        }
    }

    /// Delete the transfer Jobs of `vm`'s copy passes once the VM exists: its volumes are
    /// complete and every pass's report was read, so the finished Jobs (and their pods, taken by
    /// the garbage collector: background propagation) would only clutter the namespace — one
    /// per volume and pass of a warm migration. Best effort: a VM that exists is migrated, so a
    /// failure here is a warning naming what is left, not a failed migration.
    ///
    /// A failed or cancelled VM loses its Jobs too, in [`cleanup`](TargetProvider::cleanup):
    /// the target keeps nothing half-made, a Job's pod still running would go on writing into
    /// the volume and keep it attached (the PVC protection finalizer holds a volume in use), and
    /// what a debugger needs of a failed pass — the worker's exit code and last words — is in
    /// the VM's error in the status file already.
    async fn remove_pass_jobs(&self, vm: &TargetVm) {
        let api: Api<Job> = ns_api(&self.client, &vm.namespace);
        let selector = format!("{},{}", builder::vm_selector(vm), crate::job::LABEL_PASS);
        match api.delete_collection(&DeleteParams::background(), &ListParams::default().labels(&selector)).await {
            Ok(_) => tracing::info!(vm = %vm.name, "removed the finished transfer Jobs"),
            Err(e) => tracing::warn!(
                vm = %vm.name, namespace = %vm.namespace, selector, error = %e,
                "could not remove the finished transfer Jobs; delete them by hand"
            ),
        }
    }

    async fn get_opt<K>(&self, api: &Api<K>, name: &str) -> Result<Option<K>, KubevirtError>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        api.get_opt(name).await.map_err(|e| self.classify("get", name, e))
    }

    async fn wait_dv(
        &self,
        ns: &str,
        name: &str,
        cond: fn(&DataVolume) -> crate::wait::Check,
    ) -> Result<DataVolume, KubevirtError> {
        let o = self.opts();
        let api: Api<DataVolume> = ns_api(&self.client, ns);
        await_condition(&api, name, &format!("DataVolume {ns}/{name}"), cond, o.timeout, o.poll_interval, |dv| {
            if let Some(p) = dv.progress() {
                self.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), p);
                tracing::debug!(volume = name, phase = dv.phase(), progress = p, "datavolume progress");
            }
        })
        .await
    }

    /// The name of the Secret with `t`'s source credentials: one per VM, so it can go as soon
    /// as that VM is migrated while other VMs of the plan still copy.
    fn source_secret_name(t: &TargetVm) -> String {
        format!("vmigrate-{}-{}-source", t.plan, t.name)
    }

    /// The Secret holding source credentials for CDI and the transfer worker
    /// (`accessKeyId`/`secretKey`), created from the plan's credential variables. Returns its
    /// name. It lives only as long as the VM's copy: [`create_vm`](TargetProvider::create_vm)
    /// and [`cleanup`](TargetProvider::cleanup) delete it ([`Self::remove_source_secret`]).
    pub(crate) async fn ensure_source_secret(&self, t: &TargetVm) -> Result<Option<String>> {
        let creds = self.source.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|s| s.credentials.clone());
        let Some(creds) = creds else { return Ok(None) };
        let c = creds.resolve()?;
        let name = Self::source_secret_name(t);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(t.namespace.clone()),
                labels: Some(builder::vm_object_labels(t)),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("accessKeyId".to_string(), ByteString(c.username.into_bytes())),
                ("secretKey".to_string(), ByteString(c.password.into_bytes())),
            ])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let api: Api<Secret> = ns_api(&self.client, &t.namespace);
        self.apply(&api, &name, &format!("Secret {}/{name}", t.namespace), &secret).await?;
        Ok(Some(name))
    }

    async fn import_source(&self, t: &TargetVm, disk: &Disk) -> Result<VolumeSource> {
        let o = self.opts();
        if let Some(tpl) = &o.http_url_template {
            let file: String = url::form_urlencoded::byte_serialize(disk.file.as_bytes()).collect();
            return Ok(VolumeSource::Http(HttpSource {
                url: tpl.replace("{file}", &file),
                secret_ref: self.ensure_source_secret(t).await?,
                cert_config_map: None,
            }));
        }
        let (url, thumbprint) = vddk_endpoint(t.import_hint.as_ref())?;
        let secret = self
            .ensure_source_secret(t)
            .await?
            .ok_or_else(|| KubevirtError::BadOption("VDDK import needs source credentials in the plan".into()))?;
        Ok(VolumeSource::Vddk(builder::vddk_source(t, disk, url, thumbprint, &secret, o.vddk_init_image.as_deref())))
    }

    async fn upload_base(&self) -> Result<String, KubevirtError> {
        if let Some(u) = self.opts().upload_proxy_url {
            return Ok(u.trim_end_matches('/').to_string());
        }
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("cdi.kubevirt.io", "v1beta1", "CDIConfig"),
            "cdiconfigs",
        );
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let cfg = api.get("config").await.map_err(|e| self.classify("get", "CDIConfig config", e))?;
        let url = cfg.data.pointer("/status/uploadProxyURL").and_then(|v| v.as_str()).ok_or_else(|| {
            KubevirtError::BadOption("CDIConfig has no status.uploadProxyURL: set upload_proxy_url".into())
        })?;
        Ok(if url.contains("://") { url.to_string() } else { format!("https://{url}") })
    }

    async fn get_object(&self, ar: &ApiResource, ns: Option<&str>, name: &str) -> Result<bool, KubevirtError> {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        match api.get_opt(name).await {
            Ok(o) => Ok(o.is_some()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(KubevirtError::from_kube("get", name.to_string(), e)),
        }
    }
}

/// Where CDI's VDDK importer reads a VM's disks: the endpoint the source handed over
/// ([`ImportHint::Vddk`]), over HTTPS only (the importer sends the source credentials there).
fn vddk_endpoint(hint: Option<&ImportHint>) -> Result<(&str, Option<&str>)> {
    match hint {
        Some(ImportHint::Vddk { url, thumbprint }) if url.trim().starts_with("https://") => {
            Ok((url.trim(), thumbprint.as_deref()))
        }
        Some(ImportHint::Vddk { url, .. }) => {
            Err(KubevirtError::BadOption(format!("import needs an https:// VDDK endpoint, not {url:?}")).into())
        }
        _ => Err(KubevirtError::BadOption(
            "transfer: import needs a source that CDI can import from (a vSphere source, for VDDK) or an HTTP URL template"
                .into(),
        )
        .into()),
    }
}

#[async_trait]
impl TargetProvider for KubevirtTarget {
    fn kind(&self) -> &'static str {
        "kubevirt"
    }

    /// [`crate::rules::kubevirt_vm`]: warm plans need a transfer mode that applies deltas.
    fn vm_rules(&self) -> vmigrate_core::validate::VmRules {
        crate::rules::kubevirt_vm
    }

    /// Names the transfer mode, which decides what the target can do.
    fn describe(&self) -> String {
        format!("the kubevirt target with transfer: {}", self.opts().transfer)
    }

    /// Incremental (warm) passes only in the transfer modes that apply them
    /// ([`TransferMethod::supports_warm`]); preflight adopts the plan's mode first.
    fn capabilities(&self) -> vmigrate_core::TargetCapabilities {
        vmigrate_core::TargetCapabilities { incremental: self.opts().transfer.supports_warm() }
    }

    async fn existing_vms(&self, namespace: &str) -> Result<Vec<ExistingVm>> {
        if !self.serves("kubevirt.io/v1", "virtualmachines").await? {
            // No KubeVirt: no VMs exist; preflight reports `target.kubevirt-missing`.
            return Ok(Vec::new());
        }
        let api: Api<VirtualMachine> = ns_api(&self.client, namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.classify("list", &format!("VirtualMachines in {namespace} (kubevirt.io/v1)"), e))?;
        Ok(list.items.iter().map(builder::existing_from_vm).collect())
    }

    async fn preflight(&self, plan: &Plan) -> Result<Vec<Concern>> {
        {
            let mut o = self.options.write().unwrap_or_else(|p| p.into_inner());
            if o.adopt_plan_options {
                o.transfer = plan.spec.options.transfer;
                o.compression = plan.spec.options.compression;
            }
        }
        self.set_source(plan.spec.source.clone());
        let ns = &plan.spec.target_namespace;
        let mut c = Vec::new();
        if !self.has_api("kubevirt.io/v1").await? {
            c.push(Concern::new(
                "target.kubevirt-missing",
                Severity::Critical,
                "KubeVirt (kubevirt.io/v1) is not installed on the target cluster",
            ));
        }
        if !self.has_api("cdi.kubevirt.io/v1beta1").await? {
            c.push(Concern::new(
                "target.cdi-missing",
                Severity::Critical,
                "CDI (cdi.kubevirt.io/v1beta1) is not installed: DataVolumes cannot be created",
            ));
        }
        let nsapi: Api<Namespace> = Api::all(self.client.clone());
        if self.get_opt(&nsapi, ns).await?.is_none() {
            c.push(Concern::new(
                "target.namespace-missing",
                Severity::Critical,
                format!("namespace {ns} does not exist: create it first"),
            ));
        }
        let scapi: Api<StorageClass> = Api::all(self.client.clone());
        let mut seen = std::collections::BTreeSet::new();
        for m in &plan.spec.storage_map {
            let sc = &m.destination.storage_class;
            if seen.insert(sc.clone()) && self.get_opt(&scapi, sc).await?.is_none() {
                c.push(Concern::new(
                    "target.storage-class-missing",
                    Severity::Critical,
                    format!("storage class {sc} does not exist on the target cluster"),
                ));
            }
        }
        let nad = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("k8s.cni.cncf.io", "v1", "NetworkAttachmentDefinition"),
            "network-attachment-definitions",
        );
        let multus = self.has_api("k8s.cni.cncf.io/v1").await?;
        for m in &plan.spec.network_map {
            if let NetworkDestination::Multus { name } = &m.destination {
                let (nns, n) = name.split_once('/').unwrap_or((ns.as_str(), name.as_str()));
                if !multus || !self.get_object(&nad, Some(nns), n).await? {
                    c.push(Concern::new(
                        "target.nad-missing",
                        Severity::Critical,
                        format!("NetworkAttachmentDefinition {nns}/{n} does not exist"),
                    ));
                }
            }
        }
        Ok(c)
    }

    async fn prepare_volume(&self, vm: &TargetVm, disk: &Disk) -> Result<PreparedVolume> {
        let o = self.opts();
        let source = match o.transfer {
            TransferMethod::Upload => VolumeSource::Upload,
            TransferMethod::Import => self.import_source(vm, disk).await?,
            TransferMethod::Job => VolumeSource::Blank,
        };
        let dv = builder::build_datavolume(vm, disk, &source);
        let name = dv.metadata.name.clone().unwrap_or_default();
        let what = format!("DataVolume {}/{name}", vm.namespace);
        self.require("cdi.kubevirt.io/v1beta1", "datavolumes").await?;
        let api: Api<DataVolume> = ns_api(&self.client, &vm.namespace);
        let old = self.get_opt(&api, &name).await?;
        let mut fresh = old.is_none();
        if let (TransferMethod::Upload, Some(old)) = (o.transfer, &old) {
            if old.phase() == "Succeeded" || old.phase() == "Failed" || old.metadata.deletion_timestamp.is_some() {
                // A re-run copies again: an upload DataVolume takes data only once. Delete the
                // old object (exactly it: UID precondition) and wait until it is gone, so the
                // apply below creates a new one instead of landing on the dying one.
                let uid = old.metadata.uid.clone().unwrap_or_default();
                tracing::info!(volume = %name, phase = old.phase(), "recreating upload DataVolume");
                if old.metadata.deletion_timestamp.is_none() {
                    let dp = DeleteParams {
                        preconditions: Some(kube::api::Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..DeleteParams::foreground()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(self.classify("delete", &what, e).into()),
                    }
                }
                self.wait_deleted(&api, &name, &uid, &what).await?;
                fresh = true;
            }
        }
        let applied = self.apply(&api, &name, &what, &dv).await?;
        if fresh {
            self.remember(vm, "DataVolume", &applied.metadata);
        }
        match o.transfer {
            TransferMethod::Upload => {
                self.wait_dv(&vm.namespace, &name, is_datavolume_upload_ready).await?;
            }
            TransferMethod::Job => {
                self.wait_dv(&vm.namespace, &name, is_datavolume_succeeded).await?;
            }
            TransferMethod::Import => {}
        }
        Ok(PreparedVolume { disk_key: disk.key, name, size: builder::volume_size(disk) })
    }

    async fn open_volume(&self, vm: &TargetVm, volume: &PreparedVolume) -> Result<VolumeSink> {
        let o = self.opts();
        match o.transfer {
            TransferMethod::Upload => {
                // Served by cdi-apiserver (an aggregated API), not by a CRD.
                self.require("upload.cdi.kubevirt.io/v1beta1", "uploadtokenrequests").await?;
                let api: Api<UploadTokenRequest> = ns_api(&self.client, &vm.namespace);
                let req = UploadTokenRequest {
                    api_version: UploadTokenRequest::API_VERSION.into(),
                    kind: UploadTokenRequest::KIND.into(),
                    metadata: ObjectMeta {
                        name: Some(volume.name.clone()),
                        namespace: Some(vm.namespace.clone()),
                        ..Default::default()
                    },
                    spec: UploadTokenRequestSpec { pvc_name: volume.name.clone() },
                    status: Default::default(),
                };
                let what = format!("UploadTokenRequest for {}/{}", vm.namespace, volume.name);
                let resp =
                    api.create(&PostParams::default(), &req).await.map_err(|e| self.classify("create", &what, e))?;
                let token = resp.status.token.filter(|t| !t.is_empty()).ok_or_else(|| KubevirtError::Upload {
                    volume: volume.name.clone(),
                    reason: "the token request returned no token".into(),
                })?;
                let url = format!("{}/v1beta1/upload", self.upload_base().await?);
                let sink = UploadSink::start(
                    self.http.clone(),
                    volume.size,
                    UploadConfig::new(url, token, volume.name.clone(), o.compression),
                );
                self.uploads.lock().unwrap_or_else(|p| p.into_inner()).insert(volume.name.clone(), sink.stats());
                Ok(VolumeSink::Transport(Box::new(sink)))
            }
            TransferMethod::Import => Ok(VolumeSink::SelfImport),
            // Each pass is its own Job, created by run_pass.
            TransferMethod::Job => Ok(VolumeSink::Passes),
        }
    }

    async fn finish_volume(&self, vm: &TargetVm, volume: &PreparedVolume) -> Result<()> {
        let o = self.opts();
        if o.transfer == TransferMethod::Job {
            // Passes were followed (and their reports read) by run_pass.
            return Ok(());
        }
        self.wait_dv(&vm.namespace, &volume.name, is_datavolume_succeeded).await?;
        Ok(())
    }

    async fn run_pass(&self, vm: &TargetVm, volume: &PreparedVolume, pass: &TargetPass) -> Result<PassReport> {
        let o = self.opts();
        if o.transfer != TransferMethod::Job {
            return Err(vmigrate_core::Error::unsupported(format!(
                "transfer: {} does not run copy passes in the cluster",
                o.transfer
            )));
        }
        crate::passes::run_job_pass(self, vm, volume, pass).await
    }

    /// Runs the conversion Job (`virt-v2v-in-place` over the VM's PVCs, see
    /// the `conversion` module) and decides the VM from its report.
    async fn convert_guest(
        &self,
        vm: &TargetVm,
        volumes: &[PreparedVolume],
        request: &vmigrate_core::convert::ConversionRequest,
    ) -> Result<vmigrate_core::convert::GuestConversion> {
        crate::conversion::run_conversion_job(self, vm, volumes, request).await
    }

    async fn create_vm(&self, vm: &TargetVm, volumes: &[PreparedVolume]) -> Result<()> {
        self.require("kubevirt.io/v1", "virtualmachines").await?;
        let api: Api<VirtualMachine> = ns_api(&self.client, &vm.namespace);
        let what = format!("VirtualMachine {}/{}", vm.namespace, vm.name);
        let old = self.get_opt(&api, &vm.name).await?;
        if let Some(old) = &old {
            let ours = old.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_SOURCE_ID))
                == Some(&vm.source.id.source_ref);
            if !ours && !vm.overwrite {
                return Err(KubevirtError::Conflict {
                    what: format!("{what} exists and was not migrated from this source VM"),
                }
                .into());
            }
        }
        let applied = self.apply(&api, &vm.name, &what, &builder::build_vm(vm, volumes)).await?;
        if old.is_none() {
            self.remember(vm, "VirtualMachine", &applied.metadata);
        }
        if self.opts().transfer == TransferMethod::Job {
            self.remove_pass_jobs(vm).await;
        }
        if self.opts().transfer != TransferMethod::Upload {
            self.remove_source_secret(vm).await;
        }
        Ok(())
    }

    async fn expose(&self, plan: &str, namespace: &str, services: &[ServiceSpec]) -> Result<()> {
        // `expose` has no plan preflight of its own: check the namespace here, the way
        // `migrate`'s preflight does, rather than fail on the first object with a 404.
        let nsapi: Api<Namespace> = Api::all(self.client.clone());
        let missing = match self.get_opt(&nsapi, namespace).await {
            Ok(ns) => ns.is_none(),
            // A user with rights in the namespace only may not read Namespaces: go on, the
            // applies below tell.
            Err(KubevirtError::Forbidden { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if missing {
            return Err(vmigrate_core::Error::new(
                vmigrate_core::ErrorCode::ValidationBlocked,
                format!("target.namespace-missing: namespace {namespace} does not exist: create it first"),
            ));
        }
        let routes = self.serves("route.openshift.io/v1", "routes").await?;
        for s in services {
            let svc = builder::build_service(plan, namespace, s);
            let api: Api<Service> = ns_api(&self.client, namespace);
            self.apply(&api, &s.name, &format!("Service {namespace}/{}", s.name), &svc).await?;
            if routes {
                if let Some(r) = builder::build_route(plan, namespace, s) {
                    let name = r.metadata.name.clone().unwrap_or_default();
                    let api: Api<crate::objects::Route> = ns_api(&self.client, namespace);
                    self.apply(&api, &name, &format!("Route {namespace}/{name}"), &r).await?;
                }
            } else if let Some(i) = builder::build_ingress(plan, namespace, s) {
                let name = i.metadata.name.clone().unwrap_or_default();
                let api: Api<Ingress> = ns_api(&self.client, namespace);
                self.apply(&api, &name, &format!("Ingress {namespace}/{name}"), &i).await?;
            }
        }
        Ok(())
    }

    async fn cleanup(&self, vm: &TargetVm) -> Result<()> {
        let ns = &vm.namespace;
        if self.opts().transfer != TransferMethod::Upload {
            self.remove_source_secret(vm).await;
        }
        let mine = self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{ns}/{}", vm.name))
            .unwrap_or_default();
        // The VM of a completed earlier run of this plan (same source, not created by this run):
        // then delete exactly what this run created, by UID, and leave the earlier run's VM,
        // DataVolumes and Jobs alone. Otherwise (no VM, or ours) everything with the VM's
        // labels goes, which also covers objects of an interrupted earlier attempt.
        let earlier = if self.serves("kubevirt.io/v1", "virtualmachines").await? {
            let api: Api<VirtualMachine> = ns_api(&self.client, ns);
            self.get_opt(&api, &vm.name).await?.is_some_and(|o| {
                let same_source = o.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_SOURCE_ID))
                    == Some(&vm.source.id.source_ref);
                let by_us = mine.iter().any(|c| c.kind == "VirtualMachine" && o.metadata.uid.as_ref() == Some(&c.uid));
                same_source && !by_us
            })
        } else {
            false
        };
        if earlier {
            tracing::info!(vm = %vm.name, objects = mine.len(), "cleanup: an earlier run's VM exists; deleting only this run's objects");
            for c in &mine {
                let what = format!("{} {ns}/{}", c.kind, c.name);
                match c.kind {
                    "VirtualMachine" => self.delete_uid(&ns_api::<VirtualMachine>(&self.client, ns), c, &what).await?,
                    "DataVolume" => self.delete_uid(&ns_api::<DataVolume>(&self.client, ns), c, &what).await?,
                    "ConfigMap" => self.delete_uid(&ns_api::<ConfigMap>(&self.client, ns), c, &what).await?,
                    _ => self.delete_uid(&ns_api::<Job>(&self.client, ns), c, &what).await?,
                }
            }
            let mut permits = self.permits.lock().unwrap_or_else(|p| p.into_inner());
            permits.retain(|k, _| !k.starts_with(&format!("{}-disk", vm.name)));
            return Ok(());
        }
        let lp = ListParams::default().labels(&builder::vm_selector(vm));
        let dp = DeleteParams::background();
        macro_rules! wipe {
            ($ty:ty, $what:literal) => {{
                let api: Api<$ty> = ns_api(&self.client, ns);
                match api.delete_collection(&dp, &lp).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(KubevirtError::from_kube("delete", format!("{} in {ns}", $what), e).into()),
                }
            }};
        }
        wipe!(VirtualMachine, "VirtualMachines");
        wipe!(DataVolume, "DataVolumes");
        wipe!(PersistentVolumeClaim, "PersistentVolumeClaims");
        wipe!(Job, "Jobs");
        wipe!(ConfigMap, "ConfigMaps");
        let mut permits = self.permits.lock().unwrap_or_else(|p| p.into_inner());
        permits.retain(|k, _| !k.starts_with(&format!("{}-disk", vm.name)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vddk_imports_read_the_endpoint_the_source_handed_over() {
        let hint = ImportHint::Vddk { url: "https://vcenter/sdk".into(), thumbprint: Some("AB:CD".into()) };
        assert_eq!(vddk_endpoint(Some(&hint)).expect("https"), ("https://vcenter/sdk", Some("AB:CD")));
        let plain = ImportHint::Vddk { url: "http://vcenter/sdk".into(), thumbprint: None };
        let err = vddk_endpoint(Some(&plain)).expect_err("credentials never go over plain HTTP");
        assert!(err.to_string().contains("https://"), "{err}");
        // A source without an import path (a folder, an OVA) is refused with what would work.
        let err = vddk_endpoint(None).expect_err("no hint");
        assert!(err.to_string().contains("HTTP URL template"), "{err}");
    }
}
