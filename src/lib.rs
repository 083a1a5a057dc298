//! vmigrate: move VMware vSphere virtual machines to KubeVirt, as a library.
//!
//! This facade re-exports the crates of the workspace so that most users depend on `vmigrate`
//! alone: [`core`] (model, plans, validation, the copy engine), [`vsphere`] (the vSphere and
//! local VMX sources), [`ova`] (the OVA package source) and [`kubevirt`] (the KubeVirt and
//! local-folder targets). [`sources`] and [`targets`] are the one registries of source and target
//! URL schemes; [`session`] runs a plan for every front end (CLI, C, Python); [`wire`] writes the
//! JSON documents they hand out.
//!
//! ```no_run
//! # async fn demo() -> vmigrate::core::Result<()> {
//! let plan = vmigrate::core::Plan::from_file("plan.yaml")?;
//! let validation = vmigrate::validate_plan(&plan, None).await?;
//! println!("{} VM(s), blocked: {}", validation.vms.len(), validation.blocked());
//! # Ok(()) }
//! ```

pub use vmigrate_core as core;
pub use vmigrate_kubevirt as kubevirt;
pub use vmigrate_ova as ova;
pub use vmigrate_vsphere as vsphere;

pub mod copy;
pub mod demo;
pub mod logging;
pub mod session;
pub mod sources;
pub mod targets;
pub mod transport_url;
pub mod wire;

use vmigrate_core::validate::{validate_plan as run_rules, PlanValidation, ValidationContext};
use vmigrate_core::{Inventory, Plan, Result};

/// Validate a plan against its source (or a given inventory) and an empty target namespace.
///
/// # Errors
/// Connecting to or reading the source fails; the plan's own problems come back as concerns.
pub async fn validate_plan(plan: &Plan, inventory: Option<&Inventory>) -> Result<PlanValidation> {
    let (inventory, caps) = inventory_for(plan, inventory).await?;
    let ctx = ValidationContext { plan, inventory: &inventory, existing: &[], capabilities: caps, rules: &rules(plan) };
    Ok(run_rules(&ctx))
}

/// The inventory validation reads: the one given (completed where an older vmigrate saved less,
/// see [`sources::complete_saved_inventory`]), else the source's own.
async fn inventory_for(
    plan: &Plan,
    inventory: Option<&Inventory>,
) -> Result<(Inventory, vmigrate_core::SourceCapabilities)> {
    match inventory {
        Some(inv) => {
            let mut inv = inv.clone();
            sources::complete_saved_inventory(&plan.spec.source.url, &mut inv);
            Ok((inv, vmigrate_core::SourceCapabilities::default()))
        }
        None => sources::read_inventory(&plan.spec.source).await,
    }
}

/// The source's and the target's own validation rules, chosen by the plan's URLs (the same a
/// run gets from the opened providers).
fn rules(plan: &Plan) -> [vmigrate_core::validate::VmRules; 2] {
    [sources::source_rules(&plan.spec.source.url), targets::target_rules(&plan.spec.target.url)]
}

/// What [`validate_plan_with_target`] learned from the plan's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCheck {
    /// The cluster answered: its read-only preflight (KubeVirt and CDI installed, namespace,
    /// storage classes, NetworkAttachmentDefinitions) and its existing VMs are in the result.
    Checked,
    /// A local output folder: nothing on it to check before a migration.
    NotACluster,
    /// The cluster could not be asked; why. The result then holds the plan's own concerns only.
    NotChecked(String),
}

/// How long `validate` waits for the target before it reports it as not checked.
const TARGET_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// [`validate_plan`], plus the target's read-only preflight when the target is a reachable
/// cluster, so `validate` shows what `migrate` would be blocked by (a missing storage class,
/// NetworkAttachmentDefinition or namespace, a name already taken). Nothing is written to the
/// target.
///
/// # Errors
/// As [`validate_plan`]; a target that cannot be reached is [`TargetCheck::NotChecked`], not an
/// error.
pub async fn validate_plan_with_target(
    plan: &Plan,
    inventory: Option<&Inventory>,
) -> Result<(PlanValidation, TargetCheck)> {
    let (inventory, caps) = inventory_for(plan, inventory).await?;
    if !targets::target_scheme(&plan.spec.target.url).is_ok_and(|s| s.cluster) {
        let ctx =
            ValidationContext { plan, inventory: &inventory, existing: &[], capabilities: caps, rules: &rules(plan) };
        return Ok((run_rules(&ctx), TargetCheck::NotACluster));
    }
    let ask = async {
        let target = targets::open_target(&plan.spec.target).await?;
        let existing = target.existing_vms(&plan.spec.target_namespace).await?;
        let concerns = target.preflight(plan).await?;
        Ok::<_, vmigrate_core::Error>((existing, concerns))
    };
    let (existing, preflight, check) = match tokio::time::timeout(TARGET_CHECK_TIMEOUT, ask).await {
        Ok(Ok((existing, concerns))) => (existing, concerns, TargetCheck::Checked),
        Ok(Err(e)) => (Vec::new(), Vec::new(), TargetCheck::NotChecked(format!("{}: {}", e.code().name(), e.report()))),
        Err(_) => (
            Vec::new(),
            Vec::new(),
            TargetCheck::NotChecked(format!("no answer within {} s", TARGET_CHECK_TIMEOUT.as_secs())),
        ),
    };
    let ctx =
        ValidationContext { plan, inventory: &inventory, existing: &existing, capabilities: caps, rules: &rules(plan) };
    let mut v = run_rules(&ctx);
    // The target's concerns hold for every VM of the plan (as `migrate` records them).
    for vm in &mut v.vms {
        vm.concerns.extend(preflight.iter().cloned());
    }
    Ok((v, check))
}
