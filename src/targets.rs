//! Open the target a plan names: the one registry of target URL schemes.
//!
//! `dir:///path` (a local output folder) or `kubevirt://[context]` (a cluster through kubeconfig
//! or in-cluster config). Every front end (the CLI, the C library, the Python module, the
//! [`session`](crate::session)) chooses a target here and nowhere else: [`TARGET_SCHEMES`] lists
//! what each scheme opens and whether it is a cluster, and [`open_target_with`] opens it. A new
//! target provider adds one row and one match arm (see `docs/architecture.md`).

use vmigrate_core::plan::TargetSpec;
use vmigrate_core::{Error, ErrorCode, Result, TargetProvider};
use vmigrate_kubevirt::{DirTarget, KubevirtOptions, KubevirtTarget};

/// Which provider a target URL scheme opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetKind {
    /// A local output folder (`dir:///path`): [`vmigrate_kubevirt::DirTarget`].
    Dir,
    /// A KubeVirt cluster (`kubevirt://[context]`): [`vmigrate_kubevirt::KubevirtTarget`].
    Kubevirt,
}

/// One row of the target registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetScheme {
    /// The URL scheme, lower case, without `:`.
    pub scheme: &'static str,
    /// The provider it opens.
    pub kind: TargetKind,
    /// How a URL of this scheme looks (for messages and help).
    pub example: &'static str,
    /// Whether the target is a cluster that answers a read-only preflight before a migration
    /// (`vmigrate validate` asks it); a folder has nothing to check beforehand.
    pub cluster: bool,
}

/// The registry: every target URL scheme vmigrate opens.
pub const TARGET_SCHEMES: &[TargetScheme] = &[
    TargetScheme { scheme: "dir", kind: TargetKind::Dir, example: "dir:///path", cluster: false },
    TargetScheme { scheme: "kubevirt", kind: TargetKind::Kubevirt, example: "kubevirt://[context]", cluster: true },
];

fn unknown(url: &str) -> Error {
    let supported = TARGET_SCHEMES.iter().map(|s| s.example).collect::<Vec<_>>().join(" or ");
    Error::new(ErrorCode::BadUrl, format!("unknown target {url:?}: use {supported}"))
}

/// The registry row for `url`'s scheme (the text before the first `:`, any case).
///
/// # Errors
/// [`ErrorCode::BadUrl`] for a URL without a scheme or with one no provider registers.
pub fn target_scheme(url: &str) -> Result<&'static TargetScheme> {
    let url = url.trim();
    let scheme = url.split_once(':').map(|(s, _)| s).ok_or_else(|| unknown(url))?;
    TARGET_SCHEMES.iter().find(|s| s.scheme.eq_ignore_ascii_case(scheme)).ok_or_else(|| unknown(url))
}

/// Choices about the target that come from the command line or the caller, not the plan.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TargetOptions {
    /// Cluster targets: take over fields another field manager owns (server-side apply
    /// `force`) instead of failing with a conflict that names it.
    pub force_conflicts: bool,
}

impl TargetOptions {
    /// Cluster targets: take over fields another field manager owns (see the field).
    #[must_use]
    pub fn force_conflicts(mut self, force: bool) -> Self {
        self.force_conflicts = force;
        self
    }
}

/// The validation rules of the target `url` names ([`TargetProvider::vm_rules`] of the
/// provider it opens), without opening it, so a plan validated offline gets the same concerns
/// as a run. Unknown schemes have none (opening them fails).
pub fn target_rules(url: &str) -> vmigrate_core::validate::VmRules {
    match target_scheme(url).map(|s| s.kind) {
        Ok(TargetKind::Kubevirt) => vmigrate_kubevirt::rules::kubevirt_vm,
        Ok(TargetKind::Dir) | Err(_) => vmigrate_core::validate::no_rules,
    }
}

/// Open the target of `spec`.
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unknown scheme; the target's own errors when it cannot be opened.
pub async fn open_target(spec: &TargetSpec) -> Result<Box<dyn TargetProvider>> {
    open_target_with(spec, &TargetOptions::default()).await
}

/// [`open_target`] with the caller's choices.
///
/// # Errors
/// As [`open_target`].
pub async fn open_target_with(spec: &TargetSpec, options: &TargetOptions) -> Result<Box<dyn TargetProvider>> {
    let url = spec.url.trim();
    match target_scheme(url)?.kind {
        TargetKind::Dir => Ok(Box::new(DirTarget::from_url(url)?)),
        TargetKind::Kubevirt => {
            // The scheme is matched in any case; the context after `//` keeps its own.
            let rest = url.get("kubevirt".len()..).and_then(|r| r.strip_prefix("://")).ok_or_else(|| unknown(url))?;
            let context = rest.trim_end_matches('/');
            let context = (!context.is_empty()).then_some(context);
            let opts = KubevirtOptions { force_conflicts: options.force_conflicts, ..Default::default() };
            Ok(Box::new(KubevirtTarget::connect(context).await?.with_options(opts)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_answers_for_every_scheme_and_refuses_others() {
        assert_eq!(target_scheme("dir:///out").map(|s| s.kind).ok(), Some(TargetKind::Dir));
        assert_eq!(target_scheme(" DIR:///out").map(|s| s.kind).ok(), Some(TargetKind::Dir));
        assert_eq!(target_scheme("kubevirt://").map(|s| s.kind).ok(), Some(TargetKind::Kubevirt));
        assert_eq!(target_scheme("kubevirt://kind-vmigrate").map(|s| s.cluster).ok(), Some(true));
        assert_eq!(target_scheme("dir:///out").map(|s| s.cluster).ok(), Some(false));
        for bad in ["/plain/path", "s3://bucket/x", ""] {
            let e = target_scheme(bad).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::BadUrl);
            assert!(e.message().contains("dir:///path or kubevirt://[context]"), "{}", e.message());
        }
    }

    #[tokio::test]
    async fn a_kubevirt_url_without_slashes_is_refused_before_any_connection() {
        let spec = TargetSpec { url: "kubevirt:ctx".into() };
        match open_target(&spec).await {
            Err(e) => assert_eq!(e.code(), ErrorCode::BadUrl),
            Ok(_) => panic!("kubevirt:ctx was opened"),
        }
    }
}
