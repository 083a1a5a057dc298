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
//! Concern ids of [`TargetProvider::preflight`](vmigrate_core::TargetProvider::preflight):
//! `target.kubevirt-missing`, `target.cdi-missing`, `target.namespace-missing`,
//! `target.storage-class-missing`, `target.nad-missing`.
//!
//! Guest conversion runs in the cluster as a Job over the VM's PVCs (the `conversion` module), in
//! every transfer mode, after the last copy.
//!
//! The module is split by concern: `access` discovers APIs and applies, reads and deletes
//! objects; `volumes` waits on DataVolumes and holds the source-credentials Secret and the
//! import and upload endpoints; `provider` implements
//! [`TargetProvider`](vmigrate_core::TargetProvider) on top of them. This file holds the options
//! and the target's state.

mod access;
mod conversion;
mod passes;
mod provider;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::api::Api;
use kube::Resource;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vmigrate_core::plan::{SourceSpec, TransferMethod};
use vmigrate_core::Result;

use crate::error::KubevirtError;
use crate::upload::UploadStats;

/// Tunables of the cluster target.
/// [`TargetProvider::preflight`](vmigrate_core::TargetProvider::preflight) adopts the plan's
/// transfer method and compression unless [`KubevirtOptions::adopt_plan_options`] is off.
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
}
