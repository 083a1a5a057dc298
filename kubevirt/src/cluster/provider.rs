//! [`TargetProvider`] for [`KubevirtTarget`]: preflight, volumes, passes, conversion, the VM,
//! its services, and cleanup.

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use vmigrate_core::model::Disk;
use vmigrate_core::plan::{NetworkDestination, ServiceSpec, TransferMethod};
use vmigrate_core::{
    Concern, ExistingVm, PassReport, Plan, PreparedVolume, Result, Severity, TargetPass, TargetProvider, TargetVm,
    VolumeSink,
};

use crate::builder::{self, VolumeSource, ANNOTATION_SOURCE_ID};
use crate::error::KubevirtError;
use crate::objects::{DataVolume, UploadTokenRequest, UploadTokenRequestSpec, VirtualMachine};
use crate::upload::{UploadConfig, UploadSink};
use crate::wait::{is_datavolume_succeeded, is_datavolume_upload_ready};

use super::{ns_api, KubevirtTarget};

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
        super::passes::run_job_pass(self, vm, volume, pass).await
    }

    /// Runs the conversion Job (`virt-v2v-in-place` over the VM's PVCs, see
    /// the `conversion` module) and decides the VM from its report.
    async fn convert_guest(
        &self,
        vm: &TargetVm,
        volumes: &[PreparedVolume],
        request: &vmigrate_core::convert::ConversionRequest,
    ) -> Result<vmigrate_core::convert::GuestConversion> {
        super::conversion::run_conversion_job(self, vm, volumes, request).await
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
