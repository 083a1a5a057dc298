//! route.openshift.io/v1 `Route`: how a service is exposed on OpenShift.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// An OpenShift `Route` (route.openshift.io/v1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `route.openshift.io/v1`.
    pub api_version: String,
    /// `Route`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// Desired state.
    pub spec: RouteSpec,
}
resource!(Route, "route.openshift.io", "v1", "Route", "routes");

/// `Route.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Public host name; the router assigns one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The Service behind the route.
    pub to: RouteTargetReference,
    /// Which port of the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<RoutePort>,
    /// TLS termination, only when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// `None` or `Subdomain`. The API server defaults it to `None`; we write it so the manifest
    /// also satisfies the CRD schema's host/wildcard rule before defaulting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wildcard_policy: Option<String>,
}

/// `spec.to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTargetReference {
    /// `Service`.
    pub kind: String,
    /// Service name.
    pub name: String,
    /// Share of traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// `spec.port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePort {
    /// Port number or name on the endpoints.
    pub target_port: IntOrString,
}

/// `spec.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// `edge`, `passthrough`, `reencrypt`.
    pub termination: String,
    /// `Redirect`, `Allow`, `None` for plain HTTP on an edge route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_edge_termination_policy: Option<String>,
}
