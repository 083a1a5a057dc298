//! Validation: turn (VM, plan, target state) into concerns before anything moves.
//!
//! Each rule has a stable id (`cdrom.iso-connected`) that users can grep for and scripts can
//! match on, a severity, and a message that says what to do. `critical` blocks the VM; the
//! executor refuses to start a VM with a critical concern.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{DiskMode, Inventory, OsFamily, PowerState, Vm};
use crate::naming::{assign_names, NameOrigin, NameRequest};
use crate::plan::{NetworkDestination, Plan, VmSelector};
use crate::provider::{ExistingVm, SourceCapabilities};

pub use crate::concern::{Concern, Severity};

pub use crate::provider::{no_rules, VmRules};

/// The facts validation needs beyond the VM itself.
#[derive(Debug, Clone)]
pub struct ValidationContext<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The source inventory (datastores, networks, other VMs).
    pub inventory: &'a Inventory,
    /// VMs already in the target namespace.
    pub existing: &'a [ExistingVm],
    /// What the source can do.
    pub capabilities: SourceCapabilities,
    /// The source's and the target's own rules ([`VmRules`]), run for every VM found.
    pub rules: &'a [VmRules],
}

/// The validation result of one VM of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmValidation {
    /// Source name (as in the plan when the VM was not found).
    pub name: String,
    /// Source reference ([`VmId::source_ref`](crate::model::VmId::source_ref)), when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Name at the target.
    pub target_name: String,
    /// Findings, most severe first.
    pub concerns: Vec<Concern>,
}

impl VmValidation {
    /// Whether any concern blocks the VM.
    pub fn blocked(&self) -> bool {
        self.concerns.iter().any(|c| c.severity == Severity::Critical)
    }
}

/// The validation result of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanValidation {
    /// One entry per plan VM, in plan order.
    pub vms: Vec<VmValidation>,
}

impl PlanValidation {
    /// Whether any VM is blocked.
    pub fn blocked(&self) -> bool {
        self.vms.iter().any(VmValidation::blocked)
    }
}

fn find_vm<'a>(inv: &'a Inventory, sel: &VmSelector) -> Option<&'a Vm> {
    match (&sel.id, &sel.name) {
        (Some(id), _) => inv.find_vm(id),
        (None, Some(name)) => inv.vms.iter().find(|v| &v.name == name),
        _ => None,
    }
}

/// Validate every VM of a plan, assigning target names on the way.
pub fn validate_plan(ctx: &ValidationContext<'_>) -> PlanValidation {
    let plan = ctx.plan;
    let found: Vec<Option<&Vm>> = plan.spec.vms.iter().map(|s| find_vm(ctx.inventory, s)).collect();
    // Names taken in the target by VMs that are not this plan's migration of the same source VM.
    let foreign = |vm: Option<&Vm>| -> Vec<String> {
        ctx.existing
            .iter()
            .filter(|e| {
                !(e.plan.as_deref() == Some(plan.metadata.name.as_str())
                    && vm.is_some_and(|v| e.source_id.as_deref() == Some(v.id.source_ref.as_str())))
            })
            .map(|e| e.name.clone())
            .collect()
    };
    let all_foreign: Vec<String> = {
        let ours: Vec<&str> = found.iter().flatten().map(|v| v.id.source_ref.as_str()).collect();
        ctx.existing
            .iter()
            .filter(|e| {
                !(e.plan.as_deref() == Some(plan.metadata.name.as_str())
                    && e.source_id.as_deref().is_some_and(|s| ours.contains(&s)))
            })
            .map(|e| e.name.clone())
            .collect()
    };
    let requests: Vec<NameRequest<'_>> = plan
        .spec
        .vms
        .iter()
        .zip(&found)
        .map(|(sel, vm)| NameRequest {
            source_name: vm.map(|v| v.name.as_str()).unwrap_or(sel.display()),
            identity: vm.map(|v| v.id.source_ref.as_str()).unwrap_or(sel.display()),
            explicit: sel.target_name.as_deref(),
        })
        .collect();
    let names = assign_names(&requests, &all_foreign);

    // One source VM listed twice (by name and by id, or by two ids): both would copy into one
    // set of disks. The later entries are blocked, naming the first (linear, by source reference).
    let mut first_of: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(plan.spec.vms.len());
    for (i, ((sel, vm), (target_name, origin))) in plan.spec.vms.iter().zip(&found).zip(names).enumerate() {
        let mut concerns = Vec::new();
        if let Some(v) = vm {
            let first = *first_of.entry(v.id.source_ref.as_str()).or_insert(i);
            if first != i {
                concerns.push(Concern::new(
                    "vm.duplicate-in-plan",
                    Severity::Critical,
                    format!(
                        "spec.vms[{i}] ({:?}) is the same source VM ({}) as spec.vms[{first}] ({:?}): list it once",
                        sel.display(),
                        v.id.source_ref,
                        plan.spec.vms[first].display()
                    ),
                ));
            }
        }
        match vm {
            None => concerns.push(Concern::new(
                "vm.not-found",
                Severity::Critical,
                format!("VM {:?} does not exist at the source: check the name or use its id", sel.display()),
            )),
            Some(vm) => {
                name_concerns(vm, &target_name, &origin, sel, &foreign(Some(vm)), &mut concerns);
                concerns.extend(validate_vm(vm, ctx));
                for rules in ctx.rules {
                    concerns.extend(rules(vm, plan));
                }
            }
        }
        concerns.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
        out.push(VmValidation {
            name: vm.map(|v| v.name.clone()).unwrap_or_else(|| sel.display().to_string()),
            source_id: vm.map(|v| v.id.source_ref.clone()),
            target_name,
            concerns,
        });
    }
    PlanValidation { vms: out }
}

fn name_concerns(
    vm: &Vm,
    target: &str,
    origin: &NameOrigin,
    sel: &VmSelector,
    foreign: &[String],
    out: &mut Vec<Concern>,
) {
    match origin {
        NameOrigin::Unchanged => {}
        NameOrigin::Explicit => {
            if foreign.iter().any(|n| n == target) && !sel.overwrite {
                out.push(Concern::new(
                    "name.duplicate-in-target",
                    Severity::Critical,
                    format!(
                        "a VM named {target:?} already exists in the target namespace: choose another targetName or set overwrite: true"
                    ),
                ));
            }
        }
        NameOrigin::Sanitized => out.push(Concern::new(
            "name.dns1123",
            Severity::Info,
            format!(
                "{:?} is not a valid DNS-1123 name: the VM will be named {target:?} (set targetName to choose another)",
                vm.name
            ),
        )),
        NameOrigin::Deduplicated => out.push(Concern::new(
            "name.duplicate-in-target",
            Severity::Warning,
            format!(
                "the name for {:?} is already used in the target namespace or by another VM of the plan: it will be named {target:?}; update Service selectors that use the VM name, or set targetName",
                vm.name
            ),
        )),
    }
}

/// The rules that look at one VM (everything but naming).
pub fn validate_vm(vm: &Vm, ctx: &ValidationContext<'_>) -> Vec<Concern> {
    let plan = ctx.plan;
    let warm = plan.spec.warm;
    let mut c = Vec::new();
    let mut push = |id: &str, sev: Severity, msg: String| c.push(Concern::new(id, sev, msg));

    if vm.template {
        push("vm.template", Severity::Critical, "the VM is a template: convert it to a VM first".into());
    }
    for cd in &vm.cdroms {
        if let Some(iso) = &cd.iso {
            if cd.connected || cd.start_connected {
                push(
                    "cdrom.iso-connected",
                    Severity::Critical,
                    format!("ISO/CD-ROM disks must be unmounted: disconnect {iso} from CD-ROM {}", cd.key),
                );
            }
        }
    }
    for nic in &vm.nics {
        let v4 = nic.ip_addresses.iter().filter(|ip| matches!(ip, IpAddr::V4(_))).count();
        let v6 = nic
            .ip_addresses
            .iter()
            .filter(|ip| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80))
            .count();
        if v4 > 1 || v6 > 1 {
            push(
                "nic.multiple-ips",
                Severity::Warning,
                format!(
                    "NIC {} has {v4} IPv4 and {v6} IPv6 addresses: each NIC should carry one IPv4 and/or one IPv6; only the first is kept reachable",
                    nic.mac
                ),
            );
        }
    }
    // Guest conversion (virt-v2v converts Linux and Windows guests only).
    if !plan.spec.skip_guest_conversion {
        let family = vm.os_family();
        if !matches!(family, OsFamily::Windows | OsFamily::Linux) {
            push(
                "conversion.unsupported-os",
                Severity::Critical,
                format!(
                    "virt-v2v converts only Linux and Windows guests, not {:?} ({}): set spec.skipGuestConversion: true to copy it as it is (it keeps the source hypervisor's drivers)",
                    if vm.os_id.is_empty() { "an unknown OS" } else { vm.os_id.as_str() },
                    vm.guest_id
                ),
            );
        } else if family == OsFamily::Windows && plan.spec.virtio_win.is_none() {
            push(
                "conversion.no-virtio-win",
                Severity::Warning,
                "Windows guest without spec.virtioWin: no virtio drivers or guest agent are installed, so it stays on SATA disks and e1000e NICs (slower); give the virtio-win ISO".into(),
            );
        }
    }
    // Networks.
    let mut pod_nics = 0;
    for nic in &vm.nics {
        let Some(net) = &nic.network else {
            push("network.unmapped", Severity::Critical, format!("NIC {} is not attached to any network", nic.mac));
            continue;
        };
        let id = ctx.inventory.networks.iter().find(|n| &n.name == net).map(|n| n.id.as_str());
        match plan.network_for(net, id) {
            None => push(
                "network.unmapped",
                Severity::Critical,
                format!(
                    "network {net:?} (NIC {}) is not in the network map: map it to pod, multus or ignored",
                    nic.mac
                ),
            ),
            Some(NetworkDestination::Pod) => pod_nics += 1,
            Some(_) => {}
        }
    }
    if pod_nics > 1 {
        push(
            "network.multiple-pod",
            Severity::Critical,
            format!("{pod_nics} NICs map to the pod network, but a VM can have only one pod interface: map the others to Multus"),
        );
    }
    // MAC conflicts with VMs already in the target.
    for nic in &vm.nics {
        let mac = nic.mac.to_ascii_lowercase();
        if let Some(other) = ctx.existing.iter().find(|e| {
            e.source_id.as_deref() != Some(vm.id.source_ref.as_str())
                && e.macs.iter().any(|m| m.to_ascii_lowercase() == mac)
        }) {
            push(
                "nic.mac-conflict",
                Severity::Critical,
                format!("MAC {} is already used by VM {:?} in the target namespace", nic.mac, other.name),
            );
        }
    }
    // Disks and storage.
    if vm.disks.is_empty() {
        push("disk.none", Severity::Warning, "the VM has no disks: only its definition will be migrated".into());
    }
    let mut unmapped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &vm.disks {
        if d.capacity_bytes <= 0 {
            push(
                "disk.capacity-invalid",
                Severity::Critical,
                format!("{} reports a capacity of {} bytes: fix the disk at the source", label(d), d.capacity_bytes),
            );
        }
        if d.shared {
            push(
                "disk.shared",
                Severity::Critical,
                format!("{} is shared (multi-writer): shared disks cannot be copied consistently", label(d)),
            );
        }
        if d.rdm {
            push(
                "disk.rdm",
                Severity::Critical,
                format!("{} is a raw device mapping: migrate the LUN separately", label(d)),
            );
        }
        if d.mode.is_independent() || d.mode == DiskMode::Other {
            push(
                "disk.independent",
                Severity::Critical,
                format!(
                    "{} is in {:?} mode: snapshots skip it, so it cannot be copied faithfully; make it dependent",
                    label(d),
                    d.mode
                ),
            );
        }
        match &d.datastore {
            None => {
                if !d.rdm {
                    push("datastore.missing", Severity::Critical, format!("{} is on no known datastore", label(d)));
                }
            }
            Some(ds) => {
                let known = ctx.inventory.datastores.iter().find(|x| &x.name == ds);
                if known.is_none() {
                    push(
                        "datastore.missing",
                        Severity::Critical,
                        format!("{} is on datastore {ds:?}, which the source does not list", label(d)),
                    );
                }
                if plan.storage_for(ds, known.map(|k| k.id.as_str())).is_none() {
                    unmapped.entry(ds.clone()).or_default().push(label(d));
                }
            }
        }
    }
    for (ds, disks) in unmapped {
        push(
            "storage.unmapped",
            Severity::Critical,
            format!("datastore {ds:?} ({}) is not in the storage map: map it to a storage class", disks.join(", ")),
        );
    }
    if !vm.snapshots.is_empty() {
        push(
            "snapshot.present",
            Severity::Warning,
            format!(
                "the VM has {} snapshot(s): the current state is migrated, snapshot history is not; consolidate first to speed up the copy",
                vm.snapshots.len()
            ),
        );
    }
    if warm {
        if !vm.cbt_enabled {
            let sev = if plan.spec.options.enable_cbt { Severity::Info } else { Severity::Critical };
            let msg = if plan.spec.options.enable_cbt {
                "changed block tracking is off: vmigrate will enable it before the first snapshot".to_string()
            } else {
                "warm migration needs changed block tracking: enable CBT on the VM (ctkEnabled) or set options.enableCbt".to_string()
            };
            push("cbt.disabled", sev, msg);
        }
        if !ctx.capabilities.snapshots || !ctx.capabilities.changed_blocks {
            push(
                "warm.unsupported-source",
                Severity::Critical,
                "this source cannot take snapshots or report changed blocks: use a cold plan".into(),
            );
        }
    }
    if !warm && vm.power_state == PowerState::PoweredOn && !ctx.capabilities.power {
        push(
            "power.cannot-stop",
            Severity::Critical,
            "the VM is running and this source cannot power it off: stop it before a cold migration".into(),
        );
    }
    if vm.power_state == PowerState::Suspended {
        push(
            "power.suspended",
            Severity::Warning,
            "the VM is suspended: its memory state is lost; it boots fresh at the target".into(),
        );
    }
    if vm.secure_boot {
        push(
            "firmware.secure-boot",
            Severity::Warning,
            "UEFI secure boot is on: the target VM gets secure boot with SMM; check the guest's boot loader is signed"
                .into(),
        );
    }
    if vm.tpm {
        push(
            "device.tpm",
            Severity::Warning,
            "the VM has a vTPM: the target VM gets a new persistent vTPM, but its contents (e.g. BitLocker keys) are not migrated: have recovery keys at hand"
                .into(),
        );
    }
    for dev in &vm.passthrough_devices {
        push("device.passthrough", Severity::Warning, format!("passthrough device {dev:?} is not migrated"));
    }
    c
}

/// The message of `warm.transfer-unsupported` for a target (or transfer mode) described by `what`.
pub fn warm_transfer_message(what: &str) -> String {
    let works: Vec<String> =
        crate::plan::TransferMethod::warm_capable().iter().map(|m| format!("transfer: {m}")).collect();
    let instead = if works.is_empty() {
        "no transfer mode into a cluster supports warm migration yet: use a cold plan, or a dir:// target".to_string()
    } else {
        format!("warm migration into a cluster works with {}, or use a cold plan", works.join(", "))
    };
    format!(
        "{what} cannot apply the delta passes of a warm migration (the target would keep the first copy and lose every later write): {instead}"
    )
}

fn label(d: &crate::model::Disk) -> String {
    if d.label.is_empty() {
        format!("disk {}", d.key)
    } else {
        d.label.clone()
    }
}

/// The concern ids core's own rules report, for documentation and bindings. Providers list
/// the ids of their [`VmRules`] and preflight next to them.
pub const CONCERN_IDS: &[&str] = &[
    "vm.not-found",
    "vm.duplicate-in-plan",
    "vm.template",
    "name.dns1123",
    "name.duplicate-in-target",
    "cdrom.iso-connected",
    "nic.multiple-ips",
    "nic.mac-conflict",
    "conversion.unsupported-os",
    "conversion.no-virtio-win",
    "network.unmapped",
    "network.multiple-pod",
    "storage.unmapped",
    "datastore.missing",
    "disk.none",
    "disk.capacity-invalid",
    "disk.shared",
    "disk.rdm",
    "disk.independent",
    "snapshot.present",
    "cbt.disabled",
    "warm.unsupported-source",
    "power.cannot-stop",
    "power.suspended",
    "firmware.secure-boot",
    "device.tpm",
    "device.passthrough",
];

/// Counts of concerns per severity, for summaries.
pub fn severity_counts(v: &PlanValidation) -> HashMap<Severity, usize> {
    let mut m = HashMap::new();
    for vm in &v.vms {
        for c in &vm.concerns {
            *m.entry(c.severity).or_insert(0) += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests;
