//! Offline validation runs the same provider rules as a run: the facade's rules by URL scheme
//! (`sources::source_rules`, `targets::target_rules`) give the concerns the opened providers'
//! `vm_rules` give, and the plan's own validation reports them.

use vmigrate::core::model::{PowerState, ToolsStatus, Vm};
use vmigrate::core::{Plan, SourceProvider, TargetProvider};
use vmigrate::sources::source_rules;
use vmigrate::targets::target_rules;

fn plan(source: &str, target: &str, warm: bool) -> Plan {
    Plan::from_yaml_str(&format!(
        "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: {{ name: p }}\nspec:\n  source: {{ url: \"{source}\" }}\n  target: {{ url: \"{target}\" }}\n  targetNamespace: ns\n  warm: {warm}\n  options: {{ transfer: upload }}\n  vms: [ {{ name: db }} ]\n"
    ))
    .expect("plan")
}

/// A VM that trips every VMware rule.
fn vmware_vm() -> Vm {
    Vm {
        name: "db".into(),
        power_state: PowerState::PoweredOn,
        guest_id: "darwin19_64Guest".into(),
        tools_status: ToolsStatus::NotRunning,
        fault_tolerance: true,
        drs_rules: vec!["apart".into()],
        ..Default::default()
    }
}

fn ids(c: &[vmigrate::core::Concern]) -> Vec<String> {
    let mut v: Vec<String> = c.iter().map(|c| c.id.clone()).collect();
    v.sort();
    v
}

#[test]
fn source_rules_by_scheme_are_the_providers_rules() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("vmx://{}", dir.path().display());
    let p = plan(&url, "dir:///tmp/out", false);
    let vm = vmware_vm();
    let opened = vmigrate::vsphere::local::LocalSource::from_url(&url).expect("vmx source");
    let from_provider = (opened.vm_rules())(&vm, &p);
    assert_eq!(
        ids(&from_provider),
        ["guest-os.unsupported", "tools.not-running", "vm.drs-affinity", "vm.fault-tolerance"]
    );
    assert_eq!(source_rules(&url)(&vm, &p), from_provider);
    // vSphere endpoints and OVA packages (VMware guest ids) get the same rules without a login.
    assert_eq!(source_rules("https://vcenter/sdk")(&vm, &p), from_provider);
    assert_eq!(ids(&source_rules("ova:///x.ova")(&vm, &p)), ids(&from_provider));
    // An unknown scheme has no rules (opening it fails with BadUrl instead).
    assert!(source_rules("nope://x")(&vm, &p).is_empty());
}

#[test]
fn target_rules_by_scheme_are_the_providers_rules() {
    let out = tempfile::tempdir().expect("tmp");
    let dir_url = format!("dir://{}", out.path().display());
    let warm = plan("vmx:///tmp/ds", "kubevirt://lab", true);
    let vm = Vm { name: "db".into(), ..Default::default() };
    // kubevirt:// with a transfer mode that cannot carry deltas refuses a warm plan offline.
    assert_eq!(ids(&target_rules("kubevirt://lab")(&vm, &warm)), ["warm.transfer-unsupported"]);
    assert!(target_rules("kubevirt://lab")(&vm, &plan("vmx:///tmp/ds", "kubevirt://lab", false)).is_empty());
    // dir:// applies deltas in place: its provider and the registry agree it has nothing to say.
    let dir = vmigrate::kubevirt::DirTarget::from_url(&dir_url).expect("dir target");
    assert!((dir.vm_rules())(&vm, &warm).is_empty());
    assert!(target_rules(&dir_url)(&vm, &warm).is_empty());
}

#[tokio::test]
async fn offline_validation_reports_the_provider_rules() {
    let p = plan("https://vcenter/sdk", "kubevirt://lab", true);
    let inv = vmigrate::core::Inventory { vms: vec![vmware_vm()], ..Default::default() };
    let v = vmigrate::validate_plan(&p, Some(&inv)).await.expect("validate");
    let got = ids(&v.vms[0].concerns);
    for id in [
        "guest-os.unsupported",
        "tools.not-running",
        "vm.fault-tolerance",
        "vm.drs-affinity",
        "warm.transfer-unsupported",
    ] {
        assert!(got.iter().any(|g| g == id), "{id} missing from {got:?}");
    }
}
