//! Opening the target a plan names: `dir:///path` (a local output folder) or
//! `kubevirt://[context]` (a cluster through kubeconfig or in-cluster config).

use vmigrate_core::{Error, ErrorCode, Result, TargetProvider};
use vmigrate_kubevirt::{DirTarget, KubevirtOptions, KubevirtTarget};

/// Choices about the target that come from the command line, not the plan.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// Cluster targets: take over fields another field manager owns (server-side apply
    /// `force`) instead of failing with a conflict that names it.
    pub force_conflicts: bool,
}

/// The validation rules of the target `url` names ([`TargetProvider::vm_rules`] of the
/// provider it opens), without opening it, so a plan validated offline gets the same concerns
/// as a run.
pub fn target_rules(url: &str) -> vmigrate_core::validate::VmRules {
    if url.trim().starts_with("kubevirt://") {
        vmigrate_kubevirt::rules::kubevirt_vm
    } else {
        vmigrate_core::validate::no_rules
    }
}

/// Open the target of `spec`.
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unknown scheme; the target's own errors when it cannot be opened.
pub async fn open_target(spec: &vmigrate_core::plan::TargetSpec) -> Result<Box<dyn TargetProvider>> {
    open_target_with(spec, &TargetOptions::default()).await
}

/// [`open_target`] with command-line choices.
///
/// # Errors
/// As [`open_target`].
pub async fn open_target_with(
    spec: &vmigrate_core::plan::TargetSpec,
    options: &TargetOptions,
) -> Result<Box<dyn TargetProvider>> {
    let url = spec.url.trim();
    if url.starts_with("dir:") {
        return Ok(Box::new(DirTarget::from_url(url)?));
    }
    if let Some(rest) = url.strip_prefix("kubevirt://") {
        let context = rest.trim_end_matches('/');
        let context = (!context.is_empty()).then_some(context);
        let opts = KubevirtOptions { force_conflicts: options.force_conflicts, ..Default::default() };
        return Ok(Box::new(KubevirtTarget::connect(context).await?.with_options(opts)));
    }
    Err(Error::new(ErrorCode::BadUrl, format!("unknown target {url:?}: use dir:///path or kubevirt://[context]")))
}
