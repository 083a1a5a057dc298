//! vmigrate: move VMware vSphere virtual machines to KubeVirt, as a library.
//!
//! This facade re-exports the crates of the workspace so that most users depend on `vmigrate`
//! alone: [`core`] (model, plans, validation, the copy engine), [`vsphere`] (the vSphere and
//! local VMX sources) and [`kubevirt`] (the KubeVirt and local-folder targets).
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
pub use vmigrate_vsphere as vsphere;

pub mod copy;
pub mod demo;
pub mod logging;
pub mod sources;
pub mod targets;
pub mod transport_url;

use vmigrate_core::validate::{validate_plan as run_rules, PlanValidation, ValidationContext};
use vmigrate_core::{Inventory, Plan, Result};

/// Validate a plan against its source (or a given inventory) and an empty target namespace.
///
/// # Errors
/// Connecting to or reading the source fails; the plan's own problems come back as concerns.
pub async fn validate_plan(plan: &Plan, inventory: Option<&Inventory>) -> Result<PlanValidation> {
    let (inventory, caps) = match inventory {
        Some(inv) => (inv.clone(), vmigrate_core::SourceCapabilities::default()),
        None => {
            let source = sources::open_source(&plan.spec.source).await?;
            (source.inventory().await?, source.capabilities())
        }
    };
    let ctx = ValidationContext { plan, inventory: &inventory, existing: &[], capabilities: caps };
    Ok(run_rules(&ctx))
}
