use super::*;
use crate::model::*;
use crate::plan::Plan;

const PLAN: &str = r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata: { name: move-webapp }
spec:
  source: { url: "vmx:///tmp/ds" }
  target: { url: "dir:///tmp/out" }
  targetNamespace: vmexamples
  vms:
    - name: database
  networkMap:
    - source: { name: segment-migrating-to-ocpvirt }
      destination: { type: pod }
    - source: { name: storage-net }
      destination: { type: multus, name: vmexamples/storage }
  storageMap:
    - source: { name: WorkloadDatastore }
      destination: { storageClass: ocs-storagecluster-ceph-rbd-virtualization }
"#;

fn plan() -> Plan {
    Plan::from_yaml_str(PLAN).expect("test plan")
}

fn good_vm() -> Vm {
    Vm {
        id: VmId { source_ref: "vm-42".into(), bios_uuid: Some("4223-aaaa".into()), instance_uuid: None },
        name: "database".into(),
        power_state: PowerState::PoweredOn,
        guest_id: "rhel9_64Guest".into(),
        os_id: "rhel9.0".into(),
        guest_full_name: "Red Hat Enterprise Linux 9 (64-bit)".into(),
        cpu_sockets: 1,
        cores_per_socket: 2,
        memory_mib: 4096,
        disks: vec![Disk {
            key: 2000,
            label: "Hard disk 1".into(),
            capacity_bytes: 10 << 30,
            datastore: Some("WorkloadDatastore".into()),
            file: "[WorkloadDatastore] database/database.vmdk".into(),
            thin: true,
            ..Default::default()
        }],
        nics: vec![Nic {
            key: 4000,
            mac: "00:50:56:01:02:03".into(),
            network: Some("segment-migrating-to-ocpvirt".into()),
            ip_addresses: vec!["192.168.1.10".parse().expect("ip"), "fe80::1".parse().expect("ip")],
            connected: true,
            ..Default::default()
        }],
        cdroms: vec![Cdrom { key: 3000, connected: false, start_connected: false, iso: None }],
        cbt_enabled: true,
        tools_status: ToolsStatus::Running,
        ..Default::default()
    }
}

fn inventory(vm: Vm) -> Inventory {
    Inventory {
        vms: vec![vm],
        networks: vec![
            Network { id: "network-1".into(), name: "segment-migrating-to-ocpvirt".into(), kind: NetworkKind::Opaque },
            Network { id: "network-2".into(), name: "storage-net".into(), kind: NetworkKind::Distributed },
        ],
        datastores: vec![Datastore {
            id: "datastore-1".into(),
            name: "WorkloadDatastore".into(),
            ..Default::default()
        }],
        hosts: vec![],
    }
}

const FULL: SourceCapabilities = SourceCapabilities { power: true, snapshots: true, changed_blocks: true };

fn run(plan: &Plan, vm: Vm, existing: &[ExistingVm], caps: SourceCapabilities) -> VmValidation {
    let inv = inventory(vm);
    let ctx = ValidationContext { plan, inventory: &inv, existing, capabilities: caps, rules: &[] };
    validate_plan(&ctx).vms.remove(0)
}

fn concerns_of(vm: Vm) -> Vec<Concern> {
    run(&plan(), vm, &[], FULL).concerns
}

fn has(c: &[Concern], id: &str, sev: Severity) -> bool {
    c.iter().any(|x| x.id == id && x.severity == sev)
}

#[test]
fn good_vm_passes_every_rule() {
    let v = run(&plan(), good_vm(), &[], FULL);
    assert_eq!(v.concerns, vec![], "good VM has concerns");
    assert_eq!(v.target_name, "database");
    assert!(!v.blocked());
}

/// Each case: a mutation of the good VM, the id it must raise, and the severity.
#[test]
fn each_rule_fails_when_it_should() {
    type Mutate = fn(&mut Vm);
    let cases: Vec<(&str, Severity, Mutate)> = vec![
        ("cdrom.iso-connected", Severity::Critical, |v| {
            v.cdroms[0].iso = Some("[ds] iso/win.iso".into());
            v.cdroms[0].connected = true;
        }),
        ("nic.multiple-ips", Severity::Warning, |v| v.nics[0].ip_addresses.push("192.168.1.11".parse().expect("ip"))),
        ("network.unmapped", Severity::Critical, |v| v.nics[0].network = Some("VM Network".into())),
        ("network.unmapped", Severity::Critical, |v| v.nics[0].network = None),
        ("network.multiple-pod", Severity::Critical, |v| {
            let mut n = v.nics[0].clone();
            n.mac = "00:50:56:01:02:04".into();
            n.ip_addresses.clear();
            v.nics.push(n);
        }),
        ("storage.unmapped", Severity::Critical, |v| v.disks[0].datastore = Some("OtherDatastore".into())),
        ("datastore.missing", Severity::Critical, |v| v.disks[0].datastore = Some("OtherDatastore".into())),
        ("datastore.missing", Severity::Critical, |v| v.disks[0].datastore = None),
        ("disk.shared", Severity::Critical, |v| v.disks[0].shared = true),
        ("disk.rdm", Severity::Critical, |v| v.disks[0].rdm = true),
        ("disk.independent", Severity::Critical, |v| v.disks[0].mode = DiskMode::IndependentPersistent),
        ("disk.capacity-invalid", Severity::Critical, |v| v.disks[0].capacity_bytes = 0),
        ("disk.none", Severity::Warning, |v| v.disks.clear()),
        ("snapshot.present", Severity::Warning, |v| {
            v.snapshots.push(Snapshot { id: "snapshot-1".into(), name: "before-patch".into() })
        }),
        ("firmware.secure-boot", Severity::Warning, |v| {
            v.firmware = Firmware::Efi;
            v.secure_boot = true;
        }),
        ("device.tpm", Severity::Warning, |v| v.tpm = true),
        ("device.passthrough", Severity::Warning, |v| v.passthrough_devices.push("NVIDIA GRID vGPU".into())),
        ("vm.template", Severity::Critical, |v| v.template = true),
        ("conversion.unsupported-os", Severity::Critical, |v| v.os_id = "freebsd13.0".into()),
        ("conversion.unsupported-os", Severity::Critical, |v| v.os_id = String::new()),
        ("power.suspended", Severity::Warning, |v| v.power_state = PowerState::Suspended),
        ("name.dns1123", Severity::Info, |v| v.name = "Database_01".into()),
    ];
    for (id, sev, mutate) in cases {
        let mut vm = good_vm();
        mutate(&mut vm);
        let mut p = plan();
        p.spec.vms[0].name = Some(vm.name.clone());
        let v = run(&p, vm, &[], FULL);
        assert!(has(&v.concerns, id, sev), "{id}/{sev} not raised: {:?}", v.concerns);
        assert_eq!(v.blocked(), v.concerns.iter().any(|c| c.severity == Severity::Critical));
        for c in &v.concerns {
            assert!(CONCERN_IDS.contains(&c.id.as_str()), "undocumented id {}", c.id);
            assert!(!c.message.is_empty());
        }
    }
}

#[test]
fn disconnected_iso_is_fine_but_start_connected_is_not() {
    let mut vm = good_vm();
    vm.cdroms[0].iso = Some("[ds] iso/x.iso".into());
    assert!(!has(&concerns_of(vm.clone()), "cdrom.iso-connected", Severity::Critical));
    vm.cdroms[0].start_connected = true;
    assert!(has(&concerns_of(vm), "cdrom.iso-connected", Severity::Critical));
}

#[test]
fn link_local_v6_does_not_count_and_one_of_each_is_fine() {
    let mut vm = good_vm();
    vm.nics[0].ip_addresses.push("2001:db8::5".parse().expect("ip"));
    vm.nics[0].ip_addresses.push("fe80::2".parse().expect("ip"));
    assert!(!has(&concerns_of(vm.clone()), "nic.multiple-ips", Severity::Warning));
    vm.nics[0].ip_addresses.push("2001:db8::6".parse().expect("ip"));
    assert!(has(&concerns_of(vm), "nic.multiple-ips", Severity::Warning));
}

#[test]
fn multus_mapped_second_nic_is_fine() {
    let mut vm = good_vm();
    let mut n = vm.nics[0].clone();
    n.mac = "00:50:56:01:02:05".into();
    n.network = Some("storage-net".into());
    vm.nics.push(n);
    assert_eq!(concerns_of(vm), vec![]);
}

#[test]
fn warm_needs_cbt_and_capable_source() {
    let mut p = plan();
    p.spec.warm = true;
    let mut vm = good_vm();
    assert_eq!(run(&p, vm.clone(), &[], FULL).concerns, vec![]);
    vm.cbt_enabled = false;
    assert!(has(&run(&p, vm.clone(), &[], FULL).concerns, "cbt.disabled", Severity::Critical));
    p.spec.options.enable_cbt = true;
    assert!(has(&run(&p, vm.clone(), &[], FULL).concerns, "cbt.disabled", Severity::Info));
    let ro = SourceCapabilities::default();
    assert!(has(&run(&p, vm.clone(), &[], ro).concerns, "warm.unsupported-source", Severity::Critical));
    // Cold plans never raise CBT concerns.
    let cold = plan();
    assert!(!run(&cold, vm, &[], FULL).concerns.iter().any(|c| c.id == "cbt.disabled"));
}

/// A provider's own rules run for every VM found (not for one that is missing), after core's,
/// and their concerns are sorted in with core's.
#[test]
fn provider_rules_run_for_found_vms() {
    fn source(vm: &Vm, _: &Plan) -> Vec<Concern> {
        vec![Concern::new("source.rule", Severity::Info, format!("seen {}", vm.id.source_ref))]
    }
    fn target(_: &Vm, plan: &Plan) -> Vec<Concern> {
        vec![Concern::new("target.rule", Severity::Critical, format!("plan {}", plan.metadata.name))]
    }
    let text = PLAN.replace("    - name: database\n", "    - name: database\n    - name: missing\n");
    let plan = Plan::from_yaml_str(&text).expect("plan");
    let inv = inventory(good_vm());
    let ctx =
        ValidationContext { plan: &plan, inventory: &inv, existing: &[], capabilities: FULL, rules: &[source, target] };
    let v = validate_plan(&ctx);
    let ids: Vec<&str> = v.vms[0].concerns.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["target.rule", "source.rule"], "most severe first");
    assert_eq!(v.vms[0].concerns[1].message, "seen vm-42");
    assert!(v.vms[1].concerns.iter().all(|c| c.id == "vm.not-found"), "{:?}", v.vms[1].concerns);
}

#[test]
fn running_vm_on_read_only_source_blocks_cold() {
    let ro = SourceCapabilities::default();
    let v = run(&plan(), good_vm(), &[], ro);
    assert!(has(&v.concerns, "power.cannot-stop", Severity::Critical));
    let mut off = good_vm();
    off.power_state = PowerState::PoweredOff;
    assert_eq!(run(&plan(), off, &[], ro).concerns, vec![]);
}

#[test]
fn duplicate_in_target_renames_or_blocks() {
    let existing = vec![ExistingVm { name: "database".into(), ..Default::default() }];
    let v = run(&plan(), good_vm(), &existing, FULL);
    assert!(has(&v.concerns, "name.duplicate-in-target", Severity::Warning), "{:?}", v.concerns);
    assert!(v.target_name.starts_with("database-") && v.target_name != "database");
    let again = run(&plan(), good_vm(), &existing, FULL);
    assert_eq!(again.target_name, v.target_name, "rename is stable");

    let mut p = plan();
    p.spec.vms[0].target_name = Some("database".into());
    let v = run(&p, good_vm(), &existing, FULL);
    assert!(has(&v.concerns, "name.duplicate-in-target", Severity::Critical));
    assert!(v.blocked());
    p.spec.vms[0].overwrite = true;
    assert!(!run(&p, good_vm(), &existing, FULL).blocked());
}

#[test]
fn our_own_previous_run_is_not_a_clash() {
    let existing = vec![ExistingVm {
        name: "database".into(),
        macs: vec!["00:50:56:01:02:03".into()],
        plan: Some("move-webapp".into()),
        source_id: Some("vm-42".into()),
    }];
    let v = run(&plan(), good_vm(), &existing, FULL);
    assert_eq!(v.target_name, "database");
    assert_eq!(v.concerns, vec![]);
}

#[test]
fn mac_conflict_with_foreign_vm() {
    let existing =
        vec![ExistingVm { name: "other".into(), macs: vec!["00:50:56:01:02:03".into()], ..Default::default() }];
    assert!(has(&run(&plan(), good_vm(), &existing, FULL).concerns, "nic.mac-conflict", Severity::Critical));
}

#[test]
fn unknown_vm_is_critical() {
    let mut p = plan();
    p.spec.vms[0].name = Some("nope".into());
    let v = run(&p, good_vm(), &[], FULL);
    assert!(has(&v.concerns, "vm.not-found", Severity::Critical));
    assert_eq!(v.source_id, None);
}

#[test]
fn concerns_sorted_most_severe_first() {
    let mut vm = good_vm();
    vm.tpm = true;
    vm.disks[0].rdm = true;
    vm.snapshots.push(Snapshot { id: "snapshot-1".into(), name: "s".into() });
    let c = concerns_of(vm);
    let sev: Vec<Severity> = c.iter().map(|c| c.severity).collect();
    let mut sorted = sev.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(sev, sorted);
}

/// Issue 14 item 10: the same VM by name and by id is blocked (it would share disk files).
#[test]
fn same_vm_by_name_and_by_id_is_blocked() {
    let text = PLAN.replace("    - name: database\n", "    - name: database\n    - id: vm-42\n");
    let plan = Plan::from_yaml_str(&text).expect("plan");
    let inv = inventory(good_vm());
    let ctx = ValidationContext { plan: &plan, inventory: &inv, existing: &[], capabilities: FULL, rules: &[] };
    let v = validate_plan(&ctx);
    assert!(!v.vms[0].concerns.iter().any(|c| c.id == "vm.duplicate-in-plan"), "{:?}", v.vms[0].concerns);
    assert!(has(&v.vms[1].concerns, "vm.duplicate-in-plan", Severity::Critical), "{:?}", v.vms[1].concerns);
    assert!(v.blocked());
}

#[test]
fn conversion_concerns() {
    let p = plan();
    // Linux converts; Windows without virtio-win is a warning; other OSes cannot be converted.
    let c = run(&p, good_vm(), &[], SourceCapabilities::default()).concerns;
    assert!(!c.iter().any(|x| x.id.starts_with("conversion.")), "{c:?}");
    let mut win = good_vm();
    win.os_id = "win2k19".into();
    let c = run(&p, win.clone(), &[], SourceCapabilities::default()).concerns;
    assert!(has(&c, "conversion.no-virtio-win", Severity::Warning), "{c:?}");
    let mut with_iso = plan();
    with_iso.spec.virtio_win = Some("/isos/virtio-win.iso".into());
    let c = run(&with_iso, win, &[], SourceCapabilities::default()).concerns;
    assert!(!c.iter().any(|x| x.id.starts_with("conversion.")), "{c:?}");
    let mut bsd = good_vm();
    bsd.os_id = "freebsd13.0".into();
    let c = run(&p, bsd.clone(), &[], SourceCapabilities::default()).concerns;
    let concern = c.iter().find(|x| x.id == "conversion.unsupported-os").expect("critical concern");
    assert_eq!(concern.severity, Severity::Critical);
    assert!(concern.message.contains("skipGuestConversion"), "the raw-copy fallback is offered");
    // The raw copy needs no conversion, so nothing to say.
    let mut raw = plan();
    raw.spec.skip_guest_conversion = true;
    let c = run(&raw, bsd, &[], SourceCapabilities::default()).concerns;
    assert!(!c.iter().any(|x| x.id.starts_with("conversion.")), "{c:?}");
}
