//! Typed KubeVirt, CDI and OpenShift objects we write: only the fields vmigrate sets or reads.
//!
//! Field names follow the official OpenAPI specs (camelCase); every optional field is skipped when
//! unset so the manifests stay minimal and validate against the specs (see `tests/schema.rs`).
//! Unknown fields in objects read back from a cluster are ignored. Core Kubernetes types
//! (`ObjectMeta`, `Service`, `Ingress`, `Job`) come from `k8s-openapi`.
//!
//! One file per API group: `vm` (kubevirt.io/v1 VirtualMachine), `cdi` (cdi.kubevirt.io
//! DataVolume and upload.cdi.kubevirt.io UploadTokenRequest), `route` (route.openshift.io
//! Route). Their types are re-exported here, so every path stays `objects::Type`.

use serde::{Deserialize, Serialize};

/// An empty object (`{}`): KubeVirt and CDI use them as "this variant is chosen" markers
/// (`masquerade: {}`, `source.upload: {}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

macro_rules! resource {
    ($ty:ident, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($kind)
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($group)
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($version)
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($plural)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }

        impl $ty {
            /// `apiVersion` of this kind.
            pub const API_VERSION: &'static str = concat!($group, "/", $version);
            /// `kind` of this kind.
            pub const KIND: &'static str = $kind;
        }
    };
}

mod cdi;
mod route;
mod vm;

pub use cdi::*;
pub use route::*;
pub use vm::*;
