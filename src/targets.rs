//! Opening the target a plan names: `dir:///path` (a local output folder) or
//! `kubevirt://[context]` (a cluster through kubeconfig or in-cluster config).

use vmigrate_core::{Error, ErrorCode, Result, TargetProvider};
use vmigrate_kubevirt::{DirTarget, KubevirtTarget};

/// Open the target of `spec`.
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unknown scheme; the target's own errors when it cannot be opened.
pub async fn open_target(spec: &vmigrate_core::plan::TargetSpec) -> Result<Box<dyn TargetProvider>> {
    let url = spec.url.trim();
    if url.starts_with("dir:") {
        return Ok(Box::new(DirTarget::from_url(url)?));
    }
    if let Some(rest) = url.strip_prefix("kubevirt://") {
        let context = rest.trim_end_matches('/');
        let context = (!context.is_empty()).then_some(context);
        return Ok(Box::new(KubevirtTarget::connect(context).await?));
    }
    Err(Error::new(ErrorCode::BadUrl, format!("unknown target {url:?}: use dir:///path or kubevirt://[context]")))
}
