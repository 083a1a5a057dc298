//! Open a target provider from a plan's target URL.

use vmigrate_core::plan::TargetSpec;
use vmigrate_core::{Error, ErrorCode, Result, TargetProvider};

/// Open the target a plan names: `dir:///path` (manifests + disk images in a folder) or
/// `kubevirt://[context]` (a cluster through the kubeconfig, or in-cluster config).
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unknown scheme; configuration and connection errors of the target.
pub async fn open_target(spec: &TargetSpec) -> Result<Box<dyn TargetProvider>> {
    let (scheme, rest) = spec.url.split_once("://").unwrap_or(("", ""));
    match scheme {
        "dir" => Ok(Box::new(vmigrate_kubevirt::DirTarget::from_url(&spec.url)?)),
        "kubevirt" => {
            let context = rest.trim_matches('/');
            Err(Error::new(
                ErrorCode::BadUrl,
                format!("kubevirt targets are not wired into this build yet (context {context:?})"),
            ))
        }
        _ => {
            Err(Error::new(ErrorCode::BadUrl, format!("target scheme {scheme:?} is not supported (url {})", spec.url)))
        }
    }
}
