//! Builders: a source VM and the plan's choices in, typed KubeVirt/CDI/Kubernetes objects out.
//!
//! Pure functions, no I/O: the cluster target applies what they return, the output folder
//! writes it to `manifests.yaml`, and `tests/schema.rs` validates every case against the
//! official OpenAPI specs.
//!
//! Naming: the volume of the N-th source disk (in source order, **counting from 0**) is the
//! DataVolume `<vm>-disk<N>`; inside the VM it is the disk/volume `disk<N>`.
//!
//! Sizing: DataVolumes use CDI's `storage` API with the exact source capacity. For `Filesystem`
//! volumes CDI itself adds the filesystem overhead of the storage class (its default is 5.5%),
//! and for storage-profile defaults (volume mode unset) only CDI knows the final mode, so adding
//! overhead here would either be wrong or counted twice.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec,
    IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use vmigrate_core::model::OsFamily;
use vmigrate_core::model::{Disk as SourceDisk, Firmware as SourceFirmware};
use vmigrate_core::plan::{AccessMode, NetworkDestination, ServiceSpec, StorageDestination, TargetDiskBus, VolumeMode};
use vmigrate_core::{PreparedVolume, TargetVm};

use crate::objects::*;

/// Label naming the plan, on every object we create.
pub const LABEL_PLAN: &str = "vmigrate.dev/plan";
/// Label naming the source VM (its moref, made a valid label value), on every per-VM object.
pub const LABEL_SOURCE_VM: &str = "vmigrate.dev/source-vm-id";
/// Annotation keeping the source VM's display name.
pub const ANNOTATION_SOURCE_NAME: &str = "vmigrate.dev/source-vm-name";
/// Annotation keeping the source VM's moref verbatim (label values cannot hold every moref).
pub const ANNOTATION_SOURCE_ID: &str = "vmigrate.dev/source-vm-id";
/// Annotation keeping the source VM's BIOS UUID.
pub const ANNOTATION_BIOS_UUID: &str = "vmigrate.dev/source-bios-uuid";
/// Annotation on a DataVolume naming the source disk key.
pub const ANNOTATION_DISK_KEY: &str = "vmigrate.dev/source-disk-key";
/// Label KubeVirt puts on VMI pods; we put it on the template too so selectors work from the start.
pub const LABEL_VM_NAME: &str = "vm.kubevirt.io/name";
/// Label naming the default preference (read by `virtctl` and the console).
pub const LABEL_DEFAULT_PREFERENCE: &str = "instancetype.kubevirt.io/default-preference";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "vmigrate";

/// How a DataVolume gets its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// Uploaded by us through the CDI upload proxy (or by `virtctl image-upload`).
    Upload,
    /// Imported by CDI through VDDK.
    Vddk(VddkSource),
    /// Imported by CDI from an HTTP(S) URL.
    Http(HttpSource),
    /// Blank, filled by an in-cluster transfer Job.
    Blank,
}

/// The KubeVirt OS defaults chosen for a guest: a cluster preference and the common-templates
/// OS label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestOs {
    /// `VirtualMachineClusterPreference` name, e.g. `windows.2k19`.
    pub preference: &'static str,
    /// The libosinfo short id of `os.template.kubevirt.io/<os>`, e.g. `win2k19`.
    pub os: String,
}

/// The KubeVirt common-instancetypes cluster preference (`rhel.8`, `windows.2k19`) for a
/// libosinfo short id (the model's OS id, or what the conversion inspected), if there is one.
pub fn preference_for_osinfo(osinfo: &str) -> Option<&'static str> {
    let o = osinfo.to_ascii_lowercase();
    const TABLE: &[(&str, &str)] = &[
        ("win2k25", "windows.2k25"),
        ("win2k22", "windows.2k22"),
        ("win2k19", "windows.2k19"),
        ("win2k16", "windows.2k16"),
        ("win2k12r2", "windows.2k12r2"),
        ("win11", "windows.11"),
        ("win10", "windows.10"),
        ("rhel10", "rhel.10"),
        ("rhel9", "rhel.9"),
        ("rhel8", "rhel.8"),
        ("rhel7", "rhel.7"),
        ("centos-stream10", "centos.stream10"),
        ("centos-stream9", "centos.stream9"),
        ("centos-stream8", "centos.stream8"),
        ("centos7", "centos.7"),
        ("ol9", "oraclelinux.9"),
        ("ol8", "oraclelinux.8"),
        ("fedora", "fedora"),
        ("ubuntu", "ubuntu"),
        ("debian", "debian"),
        ("opensuse", "opensuse.leap"),
        ("sles", "sles"),
        ("sle", "sles"),
    ];
    TABLE.iter().find(|(p, _)| o.starts_with(p)).map(|&(_, pref)| pref)
}

/// The preference and OS label for a guest's libosinfo short id (the model's
/// [`Vm::os_id`](vmigrate_core::Vm::os_id)), if KubeVirt has a preference for it.
pub fn guest_os(os_id: &str) -> Option<GuestOs> {
    let os = os_id.trim();
    preference_for_osinfo(os).map(|preference| GuestOs { preference, os: os.to_owned() })
}

/// A valid label value (≤ 63 chars of `[A-Za-z0-9._-]`, alphanumeric at both ends) for any
/// string: valid values stay as they are, others are cleaned and suffixed with a short hash so
/// two different ids never collide.
pub fn label_value(s: &str) -> String {
    let valid = s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (s.is_empty()
            || (s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if valid {
        return s.to_string();
    }
    let cleaned: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let cleaned: String = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(50).collect();
    let cleaned = cleaned.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = hex::encode(&Sha256::digest(s.as_bytes())[..4]);
    if cleaned.is_empty() {
        hash
    } else {
        format!("{cleaned}-{hash}")
    }
}

/// The labels every per-VM object carries.
pub fn vm_object_labels(t: &TargetVm) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PLAN.to_string(), label_value(&t.plan)),
        (LABEL_SOURCE_VM.to_string(), label_value(&t.source.id.source_ref)),
    ])
}

/// The label selector (`k=v,k=v`) matching every per-VM object of `t`.
pub fn vm_selector(t: &TargetVm) -> String {
    vm_object_labels(t).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn source_annotations(t: &TargetVm) -> BTreeMap<String, String> {
    let mut a = BTreeMap::from([
        (ANNOTATION_SOURCE_NAME.to_string(), t.source.name.clone()),
        (ANNOTATION_SOURCE_ID.to_string(), t.source.id.source_ref.clone()),
    ]);
    if let Some(u) = &t.source.id.bios_uuid {
        a.insert(ANNOTATION_BIOS_UUID.to_string(), u.clone());
    }
    a
}

/// Index of a source disk among the VM's disks (its `N` in `<vm>-disk<N>`).
pub fn disk_index(t: &TargetVm, disk_key: i32) -> usize {
    t.source.disks.iter().position(|d| d.key == disk_key).unwrap_or(t.source.disks.len())
}

/// DataVolume (and output-folder disk file) name of the N-th disk: `<vm>-disk<N>`, N from 0.
pub fn volume_name(vm_name: &str, index: usize) -> String {
    format!("{vm_name}-disk{index}")
}

/// Size of the volume for a disk: exactly the source capacity (what the copy writes, and what an
/// upload stream must carry).
pub fn volume_size(disk: &SourceDisk) -> u64 {
    disk.capacity_bytes.max(0) as u64
}

/// The storage request of a disk: its capacity rounded up to 1 MiB (provisioners round anyway;
/// a MiB multiple keeps the `Quantity` readable).
pub fn volume_request(disk: &SourceDisk) -> u64 {
    volume_size(disk).div_ceil(1 << 20) * (1 << 20)
}

/// `1024Mi`-style quantity for a byte count (exact bytes when not a MiB multiple).
pub fn quantity(bytes: u64) -> Quantity {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    Quantity(if bytes > 0 && bytes & (GI - 1) == 0 {
        format!("{}Gi", bytes / GI)
    } else if bytes > 0 && bytes & (MI - 1) == 0 {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    })
}

/// The bus disks get: the plan's override, else what the guest conversion installed drivers
/// for, else (not converted) SATA for Windows (no virtio drivers yet) and virtio otherwise.
pub fn disk_bus(t: &TargetVm) -> &'static str {
    let converted = t.conversion.as_ref().filter(|c| c.converted).and_then(|c| c.disk_bus);
    match t.disk_bus.or(converted) {
        Some(TargetDiskBus::Virtio) => "virtio",
        Some(TargetDiskBus::Sata) => "sata",
        Some(TargetDiskBus::Scsi) => "scsi",
        None if t.source.os_family() == OsFamily::Windows => "sata",
        None => "virtio",
    }
}

/// The NIC model: what the guest conversion chose for the guest's drivers; else (not
/// converted) e1000e for Windows (inbox driver) and virtio otherwise. When the plan forces a
/// virtio disk bus on Windows, the drivers are there, so NICs get virtio too.
pub fn nic_model(t: &TargetVm) -> String {
    if let Some(m) = t.conversion.as_ref().filter(|c| c.converted).and_then(|c| c.nic_model.clone()) {
        if t.disk_bus == Some(TargetDiskBus::Virtio) {
            return "virtio".into();
        }
        return m;
    }
    if t.source.os_family() == OsFamily::Windows && t.disk_bus != Some(TargetDiskBus::Virtio) {
        "e1000e".into()
    } else {
        "virtio".into()
    }
}

/// The OS defaults of a guest: from the conversion's inspection (libosinfo id) when the guest
/// was converted, else from the OS id the source gave.
pub fn guest_os_of(t: &TargetVm) -> Option<(String, String)> {
    if let Some(os) = t.conversion.as_ref().and_then(|c| c.os.as_ref()) {
        if let Some(p) = preference_for_osinfo(&os.osinfo) {
            return Some((p.to_string(), os.osinfo.clone()));
        }
    }
    guest_os(&t.source.os_id).map(|g| (g.preference.to_string(), g.os))
}

fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The `VirtualMachine` for `t` over its prepared volumes (see the module doc for names).
pub fn build_vm(t: &TargetVm, volumes: &[PreparedVolume]) -> VirtualMachine {
    let src = &t.source;
    let inspected = t.conversion.as_ref().and_then(|c| c.os.as_ref());
    let windows = inspected.map_or_else(|| src.os_family() == OsFamily::Windows, |o| o.is_windows());
    let os = guest_os_of(t);

    let mut labels = vm_object_labels(t);
    if let Some((preference, os)) = &os {
        labels.insert(format!("os.template.kubevirt.io/{os}"), "true".into());
        labels.insert(LABEL_DEFAULT_PREFERENCE.into(), preference.clone());
    }
    // The inspected OS picks KubeVirt's common preference for the VM; a guest id alone is too
    // coarse (and may be wrong) to commit the VM to one.
    let preference = inspected
        .and_then(|o| preference_for_osinfo(&o.osinfo))
        .map(|p| PreferenceMatcher { kind: Some("VirtualMachineClusterPreference".into()), name: p.into() });
    let mut metadata = meta(&t.name, &t.namespace, labels);
    metadata.annotations = Some(source_annotations(t));

    let mut template_labels = t.labels.clone();
    template_labels.insert(LABEL_VM_NAME.into(), t.name.clone());
    template_labels.insert("kubevirt.io/domain".into(), t.name.clone());
    template_labels.extend(vm_object_labels(t));

    // Disks and volumes, in source order.
    let bus = disk_bus(t);
    let mut disks = Vec::new();
    let mut vols = Vec::new();
    for (i, d) in src.disks.iter().enumerate() {
        let dv = volumes
            .iter()
            .find(|v| v.disk_key == d.key)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| volume_name(&t.name, i));
        let name = format!("disk{i}");
        disks.push(Disk {
            name: name.clone(),
            disk: Some(DiskTarget { bus: Some(bus.into()) }),
            boot_order: (i == 0).then_some(1),
        });
        vols.push(Volume { name, data_volume: Some(DataVolumeRef { name: dv }) });
    }

    // Interfaces and networks, in source order; one pod interface at most.
    let model = nic_model(t);
    let mut interfaces = Vec::new();
    let mut networks = Vec::new();
    let mut have_pod = false;
    for nic in &src.nics {
        let name = format!("net{}", interfaces.len());
        let (iface, net) = match t.networks.get(&nic.key) {
            Some(NetworkDestination::Pod) if !have_pod => {
                have_pod = true;
                (
                    Interface { masquerade: Some(Empty {}), ..Default::default() },
                    Network { pod: Some(Empty {}), ..Default::default() },
                )
            }
            Some(NetworkDestination::Multus { name: nad }) => (
                Interface { bridge: Some(Empty {}), ..Default::default() },
                Network { multus: Some(MultusNetwork { network_name: nad.clone() }), ..Default::default() },
            ),
            Some(NetworkDestination::Pod) => {
                tracing::warn!(vm = %t.name, mac = %nic.mac, "second NIC on the pod network dropped");
                continue;
            }
            Some(NetworkDestination::Ignored) | None => continue,
        };
        interfaces.push(Interface {
            name: name.clone(),
            mac_address: (!nic.mac.is_empty()).then(|| nic.mac.to_ascii_lowercase()),
            model: Some(model.clone()),
            ..iface
        });
        networks.push(Network { name, ..net });
    }

    let efi = src.firmware == SourceFirmware::Efi;
    let firmware = Firmware {
        bootloader: Some(if efi {
            Bootloader { efi: Some(Efi { secure_boot: Some(src.secure_boot) }), ..Default::default() }
        } else {
            Bootloader { bios: Some(Empty {}), ..Default::default() }
        }),
        uuid: src.id.bios_uuid.clone(),
    };

    let mut features = Features { acpi: FeatureState::on(), ..Default::default() };
    if efi && src.secure_boot {
        features.smm = FeatureState::on();
    }
    let mut clock = None;
    let mut inputs = Vec::new();
    if windows {
        features.apic = FeatureState::on();
        features.hyperv = Some(FeatureHyperv {
            relaxed: FeatureState::on(),
            vapic: FeatureState::on(),
            vpindex: FeatureState::on(),
            spinlocks: Some(FeatureSpinlocks { spinlocks: Some(8191) }),
            synic: FeatureState::on(),
            synictimer: Some(SynicTimer { direct: FeatureState::on() }),
            tlbflush: FeatureState::on(),
            frequencies: FeatureState::on(),
            reenlightenment: FeatureState::on(),
            ipi: FeatureState::on(),
            runtime: FeatureState::on(),
            reset: FeatureState::on(),
        });
        clock = Some(Clock {
            utc: Some(Empty {}),
            timezone: None,
            timer: Some(Timer {
                hpet: Some(TimerState { present: Some(false), tick_policy: None }),
                pit: Some(TimerState { present: None, tick_policy: Some("delay".into()) }),
                rtc: Some(TimerState { present: None, tick_policy: Some("catchup".into()) }),
                hyperv: Some(TimerState::default()),
            }),
        });
        inputs.push(Input { name: "tablet".into(), type_: "tablet".into(), bus: Some("usb".into()) });
    }

    let memory = (src.memory_mib > 0).then(|| Memory { guest: Some(Quantity(format!("{}Mi", src.memory_mib))) });

    VirtualMachine {
        api_version: VirtualMachine::API_VERSION.into(),
        kind: VirtualMachine::KIND.into(),
        metadata,
        spec: VirtualMachineSpec {
            run_strategy: Some(t.run_strategy.clone()),
            preference,
            template: VmiTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(template_labels), ..Default::default() }),
                spec: VmiSpec {
                    domain: DomainSpec {
                        cpu: Some(Cpu {
                            sockets: Some(src.cpu_sockets.max(1)),
                            cores: Some(src.cores_per_socket.max(1)),
                            threads: Some(1),
                        }),
                        memory,
                        firmware: Some(firmware),
                        features: Some(features),
                        clock,
                        devices: Devices {
                            disks,
                            interfaces,
                            inputs,
                            tpm: t.source.tpm.then_some(TpmDevice { persistent: Some(true) }),
                        },
                    },
                    networks,
                    volumes: vols,
                    termination_grace_period_seconds: Some(if windows { 3600 } else { 180 }),
                },
            },
        },
        status: None,
    }
}

fn volume_mode_str(m: VolumeMode) -> &'static str {
    match m {
        VolumeMode::Block => "Block",
        VolumeMode::Filesystem => "Filesystem",
    }
}

fn access_mode_str(m: AccessMode) -> &'static str {
    match m {
        AccessMode::ReadWriteOnce => "ReadWriteOnce",
        AccessMode::ReadWriteMany => "ReadWriteMany",
        AccessMode::ReadOnlyMany => "ReadOnlyMany",
        AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
    }
}

/// The DataVolume for one source disk: `<vm>-disk<N>`, sized from the source capacity, with the
/// storage class, volume mode and access mode of the storage map (storage-profile defaults when
/// unmapped), filled from `source`.
pub fn build_datavolume(t: &TargetVm, disk: &SourceDisk, source: &VolumeSource) -> DataVolume {
    let index = disk_index(t, disk.key);
    let name = volume_name(&t.name, index);
    let st: Option<&StorageDestination> = t.storage.get(&disk.key);
    let mut metadata = meta(&name, &t.namespace, vm_object_labels(t));
    let mut ann = source_annotations(t);
    ann.insert(ANNOTATION_DISK_KEY.into(), disk.key.to_string());
    if matches!(source, VolumeSource::Upload | VolumeSource::Blank) {
        // Bind now even on WaitForFirstConsumer classes: the upload / Job pod is the consumer.
        ann.insert("cdi.kubevirt.io/storage.bind.immediate.requested".into(), "true".into());
    }
    metadata.annotations = Some(ann);
    let src = match source {
        VolumeSource::Upload => DataVolumeSource { upload: Some(Empty {}), ..Default::default() },
        VolumeSource::Vddk(v) => DataVolumeSource { vddk: Some(v.clone()), ..Default::default() },
        VolumeSource::Http(h) => DataVolumeSource { http: Some(h.clone()), ..Default::default() },
        VolumeSource::Blank => DataVolumeSource { blank: Some(Empty {}), ..Default::default() },
    };
    DataVolume {
        api_version: DataVolume::API_VERSION.into(),
        kind: DataVolume::KIND.into(),
        metadata,
        spec: DataVolumeSpec {
            source: Some(src),
            storage: Some(StorageSpec {
                access_modes: st
                    .and_then(|s| s.access_mode)
                    .map(|m| vec![access_mode_str(m).to_string()])
                    .unwrap_or_default(),
                volume_mode: st.and_then(|s| s.volume_mode).map(|m| volume_mode_str(m).to_string()),
                storage_class_name: st.map(|s| s.storage_class.clone()),
                resources: Some(StorageResources {
                    requests: BTreeMap::from([("storage".to_string(), quantity(volume_request(disk)))]),
                }),
            }),
        },
        status: None,
    }
}

/// The VDDK source of a disk, from the connection facts the plan gives.
pub fn vddk_source(
    t: &TargetVm,
    disk: &SourceDisk,
    url: &str,
    thumbprint: Option<&str>,
    secret: &str,
    init_image: Option<&str>,
) -> VddkSource {
    VddkSource {
        url: Some(url.to_string()),
        uuid: t.source.id.bios_uuid.clone(),
        thumbprint: thumbprint.map(str::to_string),
        secret_ref: Some(secret.to_string()),
        backing_file: Some(disk.file.clone()),
        init_image_url: init_image.map(str::to_string),
    }
}

fn plan_labels(plan: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_PLAN.to_string(), label_value(plan))])
}

/// The Service of one plan entry (ClusterIP, TCP/UDP ports as given).
pub fn build_service(plan: &str, namespace: &str, s: &ServiceSpec) -> Service {
    Service {
        metadata: meta(&s.name, namespace, plan_labels(plan)),
        spec: Some(K8sServiceSpec {
            selector: Some(s.selector.clone()),
            ports: Some(
                s.ports
                    .iter()
                    .map(|p| K8sServicePort {
                        name: p.name.clone(),
                        protocol: Some(p.protocol.clone()),
                        port: i32::from(p.port),
                        target_port: Some(IntOrString::Int(i32::from(p.target_port.unwrap_or(p.port)))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// The endpoint port a route or ingress for `s` targets.
fn route_target_port(s: &ServiceSpec) -> u16 {
    let r = s.route.as_ref();
    r.and_then(|r| r.target_port).or_else(|| s.ports.first().map(|p| p.target_port.unwrap_or(p.port))).unwrap_or(80)
}

/// The Route of one plan entry, when it asks for one: to the Service, on its target port, no TLS
/// unless asked (edge routes redirect plain HTTP).
pub fn build_route(plan: &str, namespace: &str, s: &ServiceSpec) -> Option<Route> {
    let r = s.route.as_ref()?;
    Some(Route {
        api_version: Route::API_VERSION.into(),
        kind: Route::KIND.into(),
        metadata: meta(&r.name, namespace, plan_labels(plan)),
        spec: RouteSpec {
            host: r.host.clone(),
            to: RouteTargetReference { kind: "Service".into(), name: s.name.clone(), weight: Some(100) },
            port: Some(RoutePort { target_port: IntOrString::Int(i32::from(route_target_port(s))) }),
            tls: r.tls.as_ref().map(|t| TlsConfig {
                termination: t.clone(),
                insecure_edge_termination_policy: (t == "edge").then(|| "Redirect".to_string()),
            }),
            wildcard_policy: Some("None".into()),
        },
    })
}

/// The Ingress fallback for clusters without the Route API: path `/` to the service port that
/// maps to the route's target port.
pub fn build_ingress(plan: &str, namespace: &str, s: &ServiceSpec) -> Option<Ingress> {
    let r = s.route.as_ref()?;
    let target = route_target_port(s);
    let port = s.ports.iter().find(|p| p.target_port.unwrap_or(p.port) == target).or(s.ports.first())?;
    Some(Ingress {
        metadata: meta(&r.name, namespace, plan_labels(plan)),
        spec: Some(IngressSpec {
            rules: Some(vec![IngressRule {
                host: r.host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: s.name.clone(),
                                port: Some(ServiceBackendPort { number: Some(i32::from(port.port)), name: None }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            tls: match (&r.tls, &r.host) {
                (Some(_), Some(h)) => Some(vec![IngressTLS { hosts: Some(vec![h.clone()]), secret_name: None }]),
                _ => None,
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// What validation needs to know about a VirtualMachine already in the target: its name, its
/// interfaces' MACs and, when vmigrate made it, the plan and source VM.
pub fn existing_from_vm(vm: &VirtualMachine) -> vmigrate_core::ExistingVm {
    let md = &vm.metadata;
    vmigrate_core::ExistingVm {
        name: md.name.clone().unwrap_or_default(),
        macs: vm
            .spec
            .template
            .spec
            .domain
            .devices
            .interfaces
            .iter()
            .filter_map(|i| i.mac_address.as_ref().map(|m| m.to_ascii_lowercase()))
            .collect(),
        plan: md.labels.as_ref().and_then(|l| l.get(LABEL_PLAN).cloned()),
        source_id: md
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SOURCE_ID).cloned())
            .or_else(|| md.labels.as_ref().and_then(|l| l.get(LABEL_SOURCE_VM).cloned())),
    }
}
