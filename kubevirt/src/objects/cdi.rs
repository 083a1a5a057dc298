//! CDI: cdi.kubevirt.io/v1beta1 `DataVolume` and upload.cdi.kubevirt.io/v1beta1
//! `UploadTokenRequest`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::Empty;

/// A CDI `DataVolume` (cdi.kubevirt.io/v1beta1): a PVC plus how to fill it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    /// `cdi.kubevirt.io/v1beta1`.
    pub api_version: String,
    /// `DataVolume`.
    pub kind: String,
    /// Name, namespace, labels, annotations.
    pub metadata: ObjectMeta,
    /// Desired state.
    pub spec: DataVolumeSpec,
    /// Status as read back (never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DataVolumeStatus>,
}
resource!(DataVolume, "cdi.kubevirt.io", "v1beta1", "DataVolume", "datavolumes");

/// `DataVolumeSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSpec {
    /// Where the data comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    /// The volume (CDI's `storage` API: fills in storage-profile defaults and filesystem overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
}

/// `DataVolumeSource`: exactly one variant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSource {
    /// Filled by an upload through the CDI upload proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<Empty>,
    /// Imported by CDI from an HTTP(S) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSource>,
    /// Imported by CDI from vSphere through VDDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vddk: Option<VddkSource>,
    /// Left blank (zeroes) for an in-cluster transfer Job to fill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank: Option<Empty>,
}

/// `DataVolumeSourceHTTP`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSource {
    /// Image URL.
    pub url: String,
    /// Secret with `accessKeyId`/`secretKey` for basic auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// ConfigMap holding the CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_config_map: Option<String>,
}

/// `DataVolumeSourceVDDK`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VddkSource {
    /// vCenter or ESXi SDK URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// VM BIOS UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// SHA-1 thumbprint of the server certificate (what VDDK pins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Secret with `accessKeyId` (user) and `secretKey` (password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
    /// `[datastore] folder/disk.vmdk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_file: Option<String>,
    /// Image holding the VDDK library.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "initImageURL")]
    pub init_image_url: Option<String>,
}

/// `StorageSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Access modes (storage profile decides when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_modes: Vec<String>,
    /// `Block` or `Filesystem` (storage profile decides when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mode: Option<String>,
    /// Storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Requested size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<StorageResources>,
}

/// `VolumeResourceRequirements`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageResources {
    /// `storage: <size>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

/// `DataVolumeStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeStatus {
    /// `Pending`, `ImportScheduled`, `ImportInProgress`, `UploadScheduled`, `UploadReady`,
    /// `Succeeded`, `Failed`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `"42.50%"` or `N/A`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Conditions (`Ready`, `Bound`, `Running`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DataVolumeCondition>,
    /// Restarts of the importer pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
}

/// `DataVolumeCondition`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeCondition {
    /// `Ready`, `Bound`, `Running`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False`, `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DataVolume {
    /// The phase, or `""` before CDI reported one.
    pub fn phase(&self) -> &str {
        self.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
    }

    /// Progress as a fraction 0..=1 when CDI reports a percentage.
    pub fn progress(&self) -> Option<f64> {
        let p = self.status.as_ref()?.progress.as_deref()?;
        let v: f64 = p.trim().trim_end_matches('%').parse().ok()?;
        Some((v / 100.0).clamp(0.0, 1.0))
    }

    /// The most telling message among the conditions (for failure reports).
    pub fn failure_message(&self) -> String {
        let Some(st) = &self.status else { return "no status".into() };
        st.conditions
            .iter()
            .filter_map(|c| c.message.as_deref().filter(|m| !m.is_empty()))
            .next()
            .unwrap_or("failed without a message")
            .to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// upload.cdi.kubevirt.io/v1beta1 UploadTokenRequest
// ---------------------------------------------------------------------------------------------

/// An `UploadTokenRequest`: asks CDI for a short-lived token to upload into one PVC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTokenRequest {
    /// `upload.cdi.kubevirt.io/v1beta1`.
    pub api_version: String,
    /// `UploadTokenRequest`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// Which PVC.
    pub spec: UploadTokenRequestSpec,
    /// The token, filled by the server (the schema requires the field, so `{}` when asking).
    #[serde(default)]
    pub status: UploadTokenRequestStatus,
}
resource!(UploadTokenRequest, "upload.cdi.kubevirt.io", "v1beta1", "UploadTokenRequest", "uploadtokenrequests");

/// `UploadTokenRequestSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTokenRequestSpec {
    /// PVC (= DataVolume) name.
    pub pvc_name: String,
}

/// `UploadTokenRequestStatus`. `Debug` redacts the token.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadTokenRequestStatus {
    /// Bearer token for the upload proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for UploadTokenRequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadTokenRequestStatus").field("token", &self.token.as_ref().map(|_| "<redacted>")).finish()
    }
}
