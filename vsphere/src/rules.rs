//! The validation rules of the vSphere and VMX sources (and of any source whose guest ids are
//! VMware's, such as an OVA's `vmw:osType`): what only a VMware inventory tells, beside core's
//! provider-neutral rules. [`validate_vm`] is what
//! [`SourceProvider::vm_rules`](vmigrate_core::SourceProvider::vm_rules) returns for these
//! sources, and what a front end runs when it validates a plan offline.

use vmigrate_core::model::{PowerState, ToolsStatus, Vm};
use vmigrate_core::validate::{Concern, Severity};
use vmigrate_core::Plan;

/// Guest OS ids KubeVirt cannot run (legacy or non-x86-PC operating systems).
const UNSUPPORTED_GUESTS: &[&str] = &[
    "darwin",
    "netware",
    "os2",
    "dos",
    "win31",
    "win95",
    "win98",
    "winme",
    "winnt",
    "win2000",
    "solaris",
    "vmkernel",
    "other",
    "unixware",
    "openserver",
    "sco",
    "ecomstation",
];

/// Guest OS id prefixes known to run on KubeVirt (certified or widely used).
const SUPPORTED_GUESTS: &[&str] = &[
    "windows7",
    "windows8",
    "windows9",
    "windows11",
    "windows12",
    "windows2019",
    "windows2022",
    "windows10",
    "windowsHyperV",
    "winNetEnterprise",
    "winNetStandard",
    "winLonghorn",
    "winVista",
    "winXPPro",
    "rhel",
    "centos",
    "oracleLinux",
    "ubuntu",
    "debian",
    "sles",
    "opensuse",
    "fedora",
    "rockylinux",
    "almalinux",
    "coreos",
    "amazonlinux",
    "freebsd",
    "otherLinux",
    "other3xLinux",
    "other4xLinux",
    "other5xLinux",
    "other6xLinux",
    "otherLinux64",
    "asianux",
    "photon",
    "mandriva",
    "suse",
];

/// How a VMware guest id is judged: `Info` known to run on KubeVirt, `Critical` a legacy or
/// non-PC OS that cannot, `Warning` not known.
pub fn guest_support(guest_id: &str) -> Severity {
    let lower = guest_id.to_ascii_lowercase();
    if SUPPORTED_GUESTS.iter().any(|p| lower.starts_with(&p.to_ascii_lowercase())) {
        return Severity::Info;
    }
    if UNSUPPORTED_GUESTS.iter().any(|p| lower.starts_with(p)) {
        return Severity::Critical;
    }
    Severity::Warning
}

/// The concern ids these rules report.
pub const CONCERN_IDS: &[&str] =
    &["guest-os.unsupported", "tools.not-running", "vm.fault-tolerance", "vm.drs-affinity"];

/// The rules for one VM of a VMware inventory: the guest id judged against the guests KubeVirt
/// runs, VMware Tools (graceful shutdown, guest IPs), fault tolerance and DRS rules (not
/// migrated).
pub fn validate_vm(vm: &Vm, plan: &Plan) -> Vec<Concern> {
    let mut c = Vec::new();
    let mut push = |id: &str, sev: Severity, msg: String| c.push(Concern::new(id, sev, msg));
    match guest_support(&vm.guest_id) {
        Severity::Critical => push(
            "guest-os.unsupported",
            Severity::Critical,
            format!("guest OS {:?} ({}) cannot run on KubeVirt", vm.guest_id, vm.guest_full_name),
        ),
        Severity::Warning => push(
            "guest-os.unsupported",
            Severity::Warning,
            format!(
                "guest OS {:?} is not known to be supported on KubeVirt: check the certified guest list before relying on it",
                vm.guest_id
            ),
        ),
        Severity::Info => {}
    }
    if vm.power_state == PowerState::PoweredOn && vm.tools_status != ToolsStatus::Running {
        let why = if plan.spec.warm { "the cutover shutdown" } else { "the shutdown" };
        push(
            "tools.not-running",
            Severity::Warning,
            format!("VMware Tools are not running: guest IPs cannot be read and {why} will be a hard power-off"),
        );
    }
    if vm.fault_tolerance {
        push(
            "vm.fault-tolerance",
            Severity::Info,
            "fault tolerance is configured: KubeVirt has no equivalent; use live migration and node HA".into(),
        );
    }
    for rule in &vm.drs_rules {
        push(
            "vm.drs-affinity",
            Severity::Info,
            format!("DRS rule {rule:?} is not migrated: express it as KubeVirt (anti-)affinity"),
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::from_yaml_str(
            "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: { name: p }\nspec:\n  source: { url: \"vmx:///tmp/ds\" }\n  target: { url: \"dir:///tmp/out\" }\n  targetNamespace: ns\n  vms: [ { name: db } ]\n",
        )
        .expect("plan")
    }

    fn good_vm() -> Vm {
        Vm {
            name: "db".into(),
            power_state: PowerState::PoweredOn,
            guest_id: "rhel9_64Guest".into(),
            tools_status: ToolsStatus::Running,
            ..Default::default()
        }
    }

    #[test]
    fn good_vm_passes() {
        assert_eq!(validate_vm(&good_vm(), &plan()), vec![]);
    }

    #[test]
    fn each_rule_fails_when_it_should() {
        type Mutate = fn(&mut Vm);
        let cases: Vec<(&str, Severity, Mutate)> = vec![
            ("guest-os.unsupported", Severity::Critical, |v| v.guest_id = "darwin19_64Guest".into()),
            ("guest-os.unsupported", Severity::Warning, |v| v.guest_id = "zzFutureOsGuest".into()),
            ("tools.not-running", Severity::Warning, |v| v.tools_status = ToolsStatus::NotRunning),
            ("vm.fault-tolerance", Severity::Info, |v| v.fault_tolerance = true),
            ("vm.drs-affinity", Severity::Info, |v| v.drs_rules.push("keep-db-apart".into())),
        ];
        for (id, sev, mutate) in cases {
            let mut vm = good_vm();
            mutate(&mut vm);
            let c = validate_vm(&vm, &plan());
            assert!(c.iter().any(|x| x.id == id && x.severity == sev), "{id}/{sev} not raised: {c:?}");
            for x in &c {
                assert!(CONCERN_IDS.contains(&x.id.as_str()), "undocumented id {}", x.id);
            }
        }
        // Tools matter only for a running VM.
        let mut off = good_vm();
        off.power_state = PowerState::PoweredOff;
        off.tools_status = ToolsStatus::NotInstalled;
        assert_eq!(validate_vm(&off, &plan()), vec![]);
    }

    #[test]
    fn known_guests_classified() {
        for ok in [
            "windows2019srv_64Guest",
            "windows9Server64Guest",
            "rhel8_64Guest",
            "ubuntu64Guest",
            "centos7_64Guest",
            "sles15_64Guest",
            "debian11_64Guest",
        ] {
            assert_eq!(guest_support(ok), Severity::Info, "{ok}");
        }
        for bad in ["win98Guest", "darwin20_64Guest", "netware6Guest", "dosGuest", "winNTGuest", "otherGuest"] {
            assert_eq!(guest_support(bad), Severity::Critical, "{bad}");
        }
    }
}
