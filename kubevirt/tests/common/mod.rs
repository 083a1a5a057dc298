//! Shared test fixtures: lab-shaped VMs and the official OpenAPI schemas as JSON Schema.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use vmigrate_core::model::{Disk, Firmware, Nic, Vm, VmId};
use vmigrate_core::plan::{
    AccessMode, NetworkDestination, RouteSpec, ServicePort, ServiceSpec, StorageDestination, VolumeMode,
};
use vmigrate_core::{PreparedVolume, TargetVm};
use vmigrate_kubevirt::builder;

pub const GIB: i64 = 1 << 30;

pub fn disk(key: i32, cap: i64, file: &str) -> Disk {
    Disk {
        key,
        capacity_bytes: cap,
        file: file.into(),
        datastore: Some("WorkloadDatastore".into()),
        ..Default::default()
    }
}

pub fn nic(key: i32, mac: &str, net: &str) -> Nic {
    Nic { key, mac: mac.into(), network: Some(net.into()), connected: true, ..Default::default() }
}

/// A target VM shaped like the lab's: the given guest, disks and NICs.
pub fn target(name: &str, os_id: &str, disks: Vec<Disk>, nics: Vec<(Nic, NetworkDestination)>) -> TargetVm {
    let storage = disks
        .iter()
        .map(|d| {
            (
                d.key,
                StorageDestination {
                    storage_class: "ocs-storagecluster-ceph-rbd-virtualization".into(),
                    volume_mode: Some(VolumeMode::Block),
                    access_mode: Some(AccessMode::ReadWriteMany),
                },
            )
        })
        .collect();
    let networks = nics.iter().map(|(n, d)| (n.key, d.clone())).collect();
    TargetVm {
        plan: "move-webapp-vmware".into(),
        namespace: "vmexamples".into(),
        name: name.into(),
        source: Vm {
            id: VmId {
                source_ref: format!("vm-{name}"),
                bios_uuid: Some(format!("4211{:04}-aaaa-bbbb-cccc-0123456789ab", name.len())),
                instance_uuid: None,
            },
            name: name.to_string(),
            os_id: os_id.into(),
            cpu_sockets: 2,
            cores_per_socket: 2,
            memory_mib: 4096,
            disks,
            nics: nics.into_iter().map(|(n, _)| n).collect(),
            ..Default::default()
        },
        labels: BTreeMap::new(),
        networks,
        storage,
        disk_bus: None,
        run_strategy: "Halted".into(),
        conversion: None,
        overwrite: false,
        import_hint: None,
    }
}

/// What a conversion of `osinfo` (a libosinfo id) reported: virt-v2v's block bus and NIC model
/// mapped to KubeVirt's.
pub fn converted(
    kind: &str,
    osinfo: &str,
    bus: vmigrate_core::plan::TargetDiskBus,
    nic: &str,
    agent: bool,
) -> vmigrate_core::convert::GuestConversion {
    vmigrate_core::convert::GuestConversion {
        converted: true,
        os: Some(vmigrate_core::convert::InspectedOs {
            kind: kind.into(),
            osinfo: osinfo.into(),
            ..Default::default()
        }),
        disk_bus: Some(bus),
        nic_model: Some(nic.into()),
        guest_agent: agent,
        ..Default::default()
    }
}

/// The lab's `database` VM: RHEL 9, BIOS, one disk, pod network.
pub fn database() -> TargetVm {
    target(
        "database",
        "rhel9.0",
        vec![disk(2000, 20 * GIB, "[WorkloadDatastore] database/database.vmdk")],
        vec![(nic(4000, "00:50:56:AA:00:01", "segment-migrating-to-ocpvirt"), NetworkDestination::Pod)],
    )
}

/// The lab's `winweb01`: Windows Server 2019, EFI with secure boot, two disks, pod + Multus.
pub fn winweb01() -> TargetVm {
    let mut t = target(
        "winweb01",
        "win2k19",
        vec![
            disk(2000, 40 * GIB, "[WorkloadDatastore] winweb01/winweb01.vmdk"),
            disk(2001, 10 * GIB + 512, "[WorkloadDatastore] winweb01/winweb01_1.vmdk"),
        ],
        vec![
            (nic(4000, "00:50:56:aa:00:02", "segment-migrating-to-ocpvirt"), NetworkDestination::Pod),
            (
                nic(4001, "00:50:56:aa:00:03", "backend"),
                NetworkDestination::Multus { name: "vmexamples/backend".into() },
            ),
        ],
    );
    t.source.firmware = Firmware::Efi;
    t.source.secure_boot = true;
    t.labels.insert("env".into(), "webapp".into());
    t
}

/// The lab's services: `webapp` with a route, `database` without.
pub fn lab_services(tls: Option<&str>, host: Option<&str>) -> Vec<ServiceSpec> {
    vec![
        ServiceSpec {
            name: "webapp".into(),
            selector: BTreeMap::from([("env".into(), "webapp".into())]),
            ports: vec![ServicePort { name: None, protocol: "TCP".into(), port: 80, target_port: Some(80) }],
            route: Some(RouteSpec {
                name: "route-webapp".into(),
                host: host.map(str::to_string),
                target_port: None,
                tls: tls.map(str::to_string),
            }),
        },
        ServiceSpec {
            name: "database".into(),
            selector: BTreeMap::from([("vm.kubevirt.io/name".into(), "database".into())]),
            ports: vec![ServicePort { name: None, protocol: "TCP".into(), port: 3306, target_port: Some(3306) }],
            route: None,
        },
    ]
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openapi")
}

/// The official schemas, loaded from the fixtures copied into the repository (`tests/fixtures/openapi`).
pub struct Schemas(vmigrate_kubevirt::schema::Schemas);

impl Schemas {
    pub fn load() -> Schemas {
        Schemas(vmigrate_kubevirt::schema::Schemas::load(&fixtures_dir()).expect("schemas load"))
    }

    /// Validate by kind; the error lists every violation with its path.
    pub fn check(&self, doc: &Value) -> Result<(), String> {
        self.0.check(doc)
    }
}

/// The volumes the executor would prepare for `t` (one per source disk, named and sized by the
/// builder): what the builder tests hand to `build_vm` and the conversion Job, written once.
pub fn volumes(t: &vmigrate_core::TargetVm) -> Vec<PreparedVolume> {
    t.source
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| PreparedVolume {
            disk_key: d.key,
            name: builder::volume_name(&t.name, i),
            size: builder::volume_size(d),
        })
        .collect()
}
