//! Volumes: waiting on DataVolumes, the source-credentials Secret CDI and the transfer worker
//! read, and where imports and uploads go.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use vmigrate_core::model::Disk;
use vmigrate_core::provider::ImportHint;
use vmigrate_core::{Result, TargetVm};

use crate::builder::{self, VolumeSource};
use crate::error::KubevirtError;
use crate::objects::{DataVolume, HttpSource};
use crate::wait::await_condition;

use super::{ns_api, KubevirtTarget};

impl KubevirtTarget {
    /// Delete `vm`'s source-credentials Secret: once its disks are copied (the VM exists) or
    /// its migration failed, nothing reads it, and a vCenter password left in the tenant's
    /// namespace is readable by everyone who may read Secrets there. Best effort with a warning
    /// naming it: the migration's outcome does not depend on it.
    pub(super) async fn remove_source_secret(&self, vm: &TargetVm) {
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

    pub(super) async fn wait_dv(
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
    pub(super) fn source_secret_name(t: &TargetVm) -> String {
        format!("vmigrate-{}-{}-source", t.plan, t.name)
    }

    /// The Secret holding source credentials for CDI and the transfer worker
    /// (`accessKeyId`/`secretKey`), created from the plan's credential variables. Returns its
    /// name. It lives only as long as the VM's copy: [`create_vm`](vmigrate_core::TargetProvider::create_vm)
    /// and [`cleanup`](vmigrate_core::TargetProvider::cleanup) delete it ([`Self::remove_source_secret`]).
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

    pub(super) async fn import_source(&self, t: &TargetVm, disk: &Disk) -> Result<VolumeSource> {
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

    pub(super) async fn upload_base(&self) -> Result<String, KubevirtError> {
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
