//! The validation rules of the KubeVirt target: what only a cluster target knows, beside
//! core's provider-neutral rules. [`kubevirt_vm`] is what
//! [`KubevirtTarget`](crate::KubevirtTarget)'s
//! [`vm_rules`](vmigrate_core::TargetProvider::vm_rules) returns, and what a front end runs when
//! it validates a `kubevirt://` plan offline (without asking the cluster).

use vmigrate_core::model::Vm;
use vmigrate_core::validate::{warm_transfer_message, Concern, Severity};
use vmigrate_core::Plan;

/// The concern ids of the KubeVirt target: its rules and its preflight.
pub const CONCERN_IDS: &[&str] = &[
    "warm.transfer-unsupported",
    "target.kubevirt-missing",
    "target.cdi-missing",
    "target.namespace-missing",
    "target.storage-class-missing",
    "target.nad-missing",
];

/// Why a warm plan's transfer mode cannot carry delta passes into the cluster, when it cannot.
/// Decided from the plan alone so that `vmigrate validate` refuses the plan without connecting
/// to the cluster; the executor checks the target's own
/// [`TargetCapabilities`](vmigrate_core::TargetCapabilities) too.
pub fn warm_transfer_concern(plan: &Plan) -> Option<String> {
    if !plan.spec.warm {
        return None;
    }
    let mode = plan.spec.options.transfer;
    if mode.supports_warm() {
        return None;
    }
    Some(warm_transfer_message(&format!("transfer: {mode}")))
}

/// The KubeVirt target's rules for one VM of a plan: a warm plan needs a transfer mode that
/// applies delta passes (`warm.transfer-unsupported`).
pub fn kubevirt_vm(vm: &Vm, plan: &Plan) -> Vec<Concern> {
    let _ = vm;
    warm_transfer_concern(plan)
        .map(|msg| Concern::new("warm.transfer-unsupported", Severity::Critical, msg))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmigrate_core::plan::TransferMethod;

    fn plan() -> Plan {
        Plan::from_yaml_str(
            "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: { name: p }\nspec:\n  source: { url: \"vmx:///tmp/ds\" }\n  target: { url: \"kubevirt://lab\" }\n  targetNamespace: ns\n  vms: [ { name: db } ]\n",
        )
        .expect("plan")
    }

    #[test]
    fn warm_into_a_cluster_needs_a_transfer_mode_that_applies_deltas() {
        let mut p = plan();
        p.spec.warm = true;
        for mode in TransferMethod::ALL {
            p.spec.options.transfer = mode;
            let concerns = kubevirt_vm(&Vm::default(), &p);
            let refused =
                concerns.iter().any(|c| c.id == "warm.transfer-unsupported" && c.severity == Severity::Critical);
            assert_eq!(refused, !mode.supports_warm(), "{mode}: {concerns:?}");
            if refused {
                let msg = &concerns[0].message;
                assert!(msg.contains(&format!("transfer: {mode}")), "{msg}");
                for ok in TransferMethod::warm_capable() {
                    assert!(msg.contains(&format!("transfer: {ok}")), "names the modes that work: {msg}");
                }
            }
            for c in &concerns {
                assert!(CONCERN_IDS.contains(&c.id.as_str()), "undocumented id {}", c.id);
            }
            // Cold plans into a cluster are fine in every mode.
            let mut cold = p.clone();
            cold.spec.warm = false;
            assert_eq!(kubevirt_vm(&Vm::default(), &cold), vec![]);
        }
        // Upload can never carry a delta: it is always refused.
        assert!(!TransferMethod::Upload.supports_warm());
    }
}
