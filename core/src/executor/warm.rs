//! Guards of the warm pipeline: a warm plan whose target cannot apply delta passes is refused
//! before anything is touched at the source, and a delta pass that reaches such a target anyway
//! fails loudly instead of "succeeding" with the changed ranges dropped (issue 12: warm into a
//! cluster used to end with exit 0 and a target frozen at the first copy).

use crate::error::{Error, ErrorCode, Result};
use crate::plan::Plan;
use crate::provider::TargetProvider;
use crate::validate::{warm_transfer_message, Concern, Severity};

/// The concern id of a warm plan whose target cannot take delta passes.
pub const WARM_TRANSFER_UNSUPPORTED: &str = "warm.transfer-unsupported";

fn target_label(plan: &Plan, target: &dyn TargetProvider) -> String {
    if target.kind() == "kubevirt" {
        format!("the kubevirt target with transfer: {}", plan.spec.options.transfer)
    } else {
        format!("the {} target", target.kind())
    }
}

/// The blocking concern for a warm plan into `target` when the target (after preflight) says it
/// cannot apply incremental passes; `None` for cold plans and capable targets.
pub(super) fn target_concern(plan: &Plan, target: &dyn TargetProvider) -> Option<Concern> {
    if !plan.spec.warm || target.capabilities().incremental {
        return None;
    }
    Some(Concern::new(
        WARM_TRANSFER_UNSUPPORTED,
        Severity::Critical,
        warm_transfer_message(&target_label(plan, target)),
    ))
}

/// Add `extra` unless a concern with its id is there already (plan-level validation finds the
/// same refusal for `kubevirt://` plans).
pub(super) fn add_once(concerns: &mut Vec<Concern>, extra: Option<&Concern>) {
    if let Some(c) = extra {
        if !concerns.iter().any(|x| x.id == c.id) {
            concerns.push(c.clone());
        }
    }
}

/// Defense in depth before a delta pass: the target must apply it.
pub(super) fn ensure_incremental(plan: &Plan, target: &dyn TargetProvider) -> Result<()> {
    if target.capabilities().incremental {
        return Ok(());
    }
    Err(Error::new(ErrorCode::Unsupported, warm_transfer_message(&target_label(plan, target))))
}

/// A delta pass met a volume the target fills by itself in one go: following that import would
/// return at once and drop the changed ranges, so this is an error, never a success.
pub(super) fn self_import_delta(volume: &str, pass: &str) -> Error {
    Error::new(
        ErrorCode::Unsupported,
        format!(
            "{pass}: the target imports volume {volume} by itself and cannot apply changed ranges; refusing to drop them"
        ),
    )
}
