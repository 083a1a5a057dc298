//! API discovery and object access: which APIs the server serves, server-side apply, reads,
//! and deleting exactly what this run created.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use vmigrate_core::{Result, TargetVm};

use crate::builder::{self, FIELD_MANAGER};
use crate::error::KubevirtError;

use super::{ns_api, Created, KubevirtTarget};

impl KubevirtTarget {
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
    pub(super) async fn require(&self, group_version: &str, resource: &str) -> Result<(), KubevirtError> {
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
    pub(super) async fn delete_uid<K>(&self, api: &Api<K>, c: &Created, what: &str) -> Result<(), KubevirtError>
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

    /// Delete the transfer Jobs of `vm`'s copy passes once the VM exists: its volumes are
    /// complete and every pass's report was read, so the finished Jobs (and their pods, taken by
    /// the garbage collector: background propagation) would only clutter the namespace — one
    /// per volume and pass of a warm migration. Best effort: a VM that exists is migrated, so a
    /// failure here is a warning naming what is left, not a failed migration.
    ///
    /// A failed or cancelled VM loses its Jobs too, in [`cleanup`](vmigrate_core::TargetProvider::cleanup):
    /// the target keeps nothing half-made, a Job's pod still running would go on writing into
    /// the volume and keep it attached (the PVC protection finalizer holds a volume in use), and
    /// what a debugger needs of a failed pass — the worker's exit code and last words — is in
    /// the VM's error in the status file already.
    pub(super) async fn remove_pass_jobs(&self, vm: &TargetVm) {
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

    pub(super) async fn get_opt<K>(&self, api: &Api<K>, name: &str) -> Result<Option<K>, KubevirtError>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        api.get_opt(name).await.map_err(|e| self.classify("get", name, e))
    }

    pub(super) async fn get_object(
        &self,
        ar: &ApiResource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<bool, KubevirtError> {
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
