//! What a hook receives: [`HookInput`].
//!
//! Hooks are user programs (a local command, or an image a target runs), so what they receive is
//! an interface users depend on: the same JSON document on stdin (or however a target hands it
//! over) and the same `VMIGRATE_*` environment variables, both made from one [`HookInput`].
//! Fields may be added; none is renamed or removed.

use serde::{Deserialize, Serialize};

use crate::model::Vm;
use crate::plan::HookStep;

/// The context of one hook run. Serialized, it is the JSON document a hook reads:
///
/// ```json
/// {"hook": "drain", "namespace": "vmexamples", "plan": "move-webapp", "step": "pre",
///  "targetName": "database", "vm": { "id": { "sourceRef": "vm-42", "moref": "vm-42" }, "name": "database", ... }}
/// ```
///
/// Every object's keys are in alphabetical order at every level (the VM's too), which is the
/// order hooks have always received them in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookInput {
    /// The hook's name (`spec.hooks[].name`).
    pub hook: String,
    /// The target namespace.
    pub namespace: String,
    /// The plan's name (`metadata.name`).
    pub plan: String,
    /// Before or after the migration.
    pub step: HookStep,
    /// The VM's name at the target.
    pub target_name: String,
    /// The source VM, as the source described it.
    #[serde(serialize_with = "keys_sorted")]
    pub vm: Vm,
}

/// `vm` with its keys sorted at every level, as a `serde_json::Value` (a map ordered by key)
/// writes it.
fn keys_sorted<S: serde::Serializer>(vm: &Vm, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(vm).map_err(serde::ser::Error::custom)?.serialize(s)
}

impl HookInput {
    /// The environment variables a local hook gets, beside the JSON on its stdin: `VMIGRATE_PLAN`,
    /// `VMIGRATE_NAMESPACE`, `VMIGRATE_HOOK`, `VMIGRATE_HOOK_STEP` (`pre`/`post`),
    /// `VMIGRATE_TARGET_NAME`, `VMIGRATE_VM` (the source VM's name) and `VMIGRATE_VM_ID` (its
    /// source id).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let step = match self.step {
            HookStep::Pre => "pre",
            HookStep::Post => "post",
        };
        vec![
            ("VMIGRATE_PLAN", self.plan.clone()),
            ("VMIGRATE_NAMESPACE", self.namespace.clone()),
            ("VMIGRATE_HOOK", self.hook.clone()),
            ("VMIGRATE_HOOK_STEP", step.to_string()),
            ("VMIGRATE_TARGET_NAME", self.target_name.clone()),
            ("VMIGRATE_VM", self.vm.name.clone()),
            ("VMIGRATE_VM_ID", self.vm.id.source_ref.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VmId;

    fn input() -> HookInput {
        let vm = Vm {
            id: VmId { source_ref: "vm-42".into(), bios_uuid: Some("4211-aa".into()), ..Default::default() },
            name: "database".into(),
            ..Default::default()
        };
        HookInput {
            hook: "drain".into(),
            namespace: "vmexamples".into(),
            plan: "move-webapp".into(),
            step: HookStep::Pre,
            target_name: "database-1".into(),
            vm,
        }
    }

    /// The JSON a hook reads is what the executor built with `json!` before this type existed,
    /// byte for byte (keys in the same order), and reads back into the same value.
    #[test]
    fn hook_json_is_unchanged() {
        let i = input();
        let before = serde_json::json!({
            "plan": i.plan,
            "namespace": i.namespace,
            "step": i.step,
            "hook": i.hook,
            "targetName": i.target_name,
            "vm": i.vm,
        });
        let text = serde_json::to_string(&i).expect("json");
        assert_eq!(text, serde_json::to_string(&before).expect("json"));
        let head = r#"{"hook":"drain","namespace":"vmexamples","plan":"move-webapp","step":"pre","targetName":"database-1","vm":{"#;
        assert!(text.starts_with(head), "{text}");
        assert_eq!(serde_json::from_str::<HookInput>(&text).expect("reads back"), i);
    }

    #[test]
    fn env_comes_from_the_same_input() {
        let mut i = input();
        i.step = HookStep::Post;
        let env: std::collections::BTreeMap<_, _> = i.env().into_iter().collect();
        assert_eq!(env["VMIGRATE_PLAN"], "move-webapp");
        assert_eq!(env["VMIGRATE_NAMESPACE"], "vmexamples");
        assert_eq!(env["VMIGRATE_HOOK"], "drain");
        assert_eq!(env["VMIGRATE_HOOK_STEP"], "post");
        assert_eq!(env["VMIGRATE_TARGET_NAME"], "database-1");
        assert_eq!(env["VMIGRATE_VM"], "database");
        assert_eq!(env["VMIGRATE_VM_ID"], "vm-42");
        assert_eq!(env.len(), 7);
    }
}
