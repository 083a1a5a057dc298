//! SOAP → model: the inventory retrieval (one ContainerView, paged property collection) and
//! the mapping of VM, device and snapshot properties into [`vmigrate_core::model`].

use std::collections::HashMap;
use std::net::IpAddr;

use vmigrate_core::model::{
    Cdrom, Datastore, Disk, DiskBus, DiskMode, Firmware, Host, Inventory, Network, NetworkKind, Nic, NicModel,
    PowerState, Snapshot, ToolsStatus, Vm, VmId,
};

use crate::client::{Client, ObjectContent, PropSpec};
use crate::error::VsphereError;
use crate::soap::xml::Element;

use super::{vm_ref, VsphereSource, INVENTORY_PROPS, INVENTORY_VIEW_TYPES, VM_PROPS};

pub(super) fn text(e: Option<&Element>) -> String {
    e.map(|e| e.text.clone()).unwrap_or_default()
}

/// Split `[datastore] path/file.vmdk`.
pub fn split_datastore_path(file: &str) -> Option<(&str, &str)> {
    let rest = file.strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    Some((ds, path.trim_start()))
}

pub(super) struct Lookup {
    networks_by_ref: HashMap<String, String>,
    dvpg_by_key: HashMap<String, String>,
    opaque_by_id: HashMap<String, String>,
    datastores_by_ref: HashMap<String, String>,
    hosts: HashMap<String, (String, Option<String>)>,
    drs_rules: HashMap<String, Vec<String>>,
}

pub(super) fn controller_bus(kind: &str) -> Option<DiskBus> {
    let k = kind.to_ascii_lowercase();
    if k.contains("nvme") {
        Some(DiskBus::Nvme)
    } else if k.contains("ahci") || k.contains("sata") {
        Some(DiskBus::Sata)
    } else if k.contains("ide") {
        Some(DiskBus::Ide)
    } else if k.contains("scsi") || k.contains("lsilogic") || k.contains("buslogic") {
        Some(DiskBus::Scsi)
    } else {
        None
    }
}

pub(super) fn nic_model(kind: &str) -> Option<NicModel> {
    Some(match kind {
        "VirtualVmxnet3" | "VirtualVmxnet3Vrdma" => NicModel::Vmxnet3,
        "VirtualE1000" => NicModel::E1000,
        "VirtualE1000e" => NicModel::E1000e,
        "VirtualVmxnet" | "VirtualVmxnet2" | "VirtualPCNet32" | "VirtualSriovEthernetCard" => {
            NicModel::Other(kind.to_string())
        }
        _ => return None,
    })
}

pub(super) fn disk_mode(mode: &str) -> DiskMode {
    match mode {
        "persistent" | "" => DiskMode::Persistent,
        "independent_persistent" => DiskMode::IndependentPersistent,
        "independent_nonpersistent" => DiskMode::IndependentNonpersistent,
        _ => DiskMode::Other,
    }
}

pub(super) fn walk_snapshots(list: &Element, out: &mut Vec<Snapshot>) {
    for item in list.all("rootSnapshotList").chain(list.all("childSnapshotList")) {
        out.push(Snapshot { id: text(item.child("snapshot")), name: text(item.child("name")) });
        walk_snapshots(item, out);
    }
}

/// Map the devices of `config.hardware.device` into disks, NICs, CD-ROMs and flags.
pub(super) fn map_devices(vm: &mut Vm, devices: &Element, lk: &Lookup) {
    let mut controllers: HashMap<i32, (DiskBus, i32)> = HashMap::new();
    for d in devices.children.iter() {
        let kind = d.xsi_type().unwrap_or("");
        if let (Some(bus), Some(key)) = (controller_bus(kind), d.num_at::<i32>(&["key"])) {
            if kind.contains("Controller") {
                controllers.insert(key, (bus, d.num_at(&["busNumber"]).unwrap_or(0)));
            }
        }
    }
    for d in devices.children.iter() {
        let kind = d.xsi_type().unwrap_or("");
        let key: i32 = d.num_at(&["key"]).unwrap_or(0);
        let label = d.text_at(&["deviceInfo", "label"]).unwrap_or("").to_string();
        let backing = d.child("backing");
        let btype = backing.and_then(|b| b.xsi_type()).unwrap_or("");
        if kind == "VirtualDisk" {
            let capacity = d
                .num_at::<i64>(&["capacityInBytes"])
                .filter(|b| *b > 0)
                .or_else(|| d.num_at::<i64>(&["capacityInKB"]).map(|kb| kb.saturating_mul(1024)))
                .unwrap_or(0);
            let file = backing.and_then(|b| b.text_at(&["fileName"])).unwrap_or("").to_string();
            let datastore = backing
                .and_then(|b| b.text_at(&["datastore"]))
                .and_then(|r| lk.datastores_by_ref.get(r).cloned())
                .or_else(|| split_datastore_path(&file).map(|(ds, _)| ds.to_string()));
            let (bus, bus_no) = d
                .num_at::<i32>(&["controllerKey"])
                .and_then(|c| controllers.get(&c).copied())
                .unwrap_or((DiskBus::Scsi, 0));
            let unit = d.num_at::<i32>(&["unitNumber"]).map(|u| format!("{bus_no}:{u}"));
            vm.disks.push(Disk {
                key,
                label,
                capacity_bytes: capacity,
                datastore,
                file,
                bus,
                unit,
                mode: disk_mode(backing.and_then(|b| b.text_at(&["diskMode"])).unwrap_or("")),
                shared: backing.and_then(|b| b.text_at(&["sharing"])) == Some("sharingMultiWriter"),
                rdm: btype.contains("RawDiskMapping"),
                thin: backing.and_then(|b| b.bool_at(&["thinProvisioned"])).unwrap_or(false),
                change_id: backing.and_then(|b| b.text_at(&["changeId"])).filter(|c| !c.is_empty()).map(str::to_string),
            });
        } else if let Some(model) = nic_model(kind) {
            let network = backing.and_then(|b| {
                if let Some(pg) = b.text_at(&["port", "portgroupKey"]) {
                    lk.dvpg_by_key.get(pg).cloned()
                } else if let Some(id) = b.text_at(&["opaqueNetworkId"]) {
                    lk.opaque_by_id.get(id).cloned()
                } else if let Some(net) = b.text_at(&["network"]).and_then(|r| lk.networks_by_ref.get(r)) {
                    Some(net.clone())
                } else {
                    b.text_at(&["deviceName"]).map(str::to_string)
                }
            });
            vm.nics.push(Nic {
                key,
                mac: d.text_at(&["macAddress"]).unwrap_or("").to_ascii_lowercase(),
                network,
                model,
                ip_addresses: Vec::new(),
                connected: d.bool_at(&["connectable", "connected"]).unwrap_or(true),
            });
        } else if kind == "VirtualCdrom" {
            vm.cdroms.push(Cdrom {
                key,
                connected: d.bool_at(&["connectable", "connected"]).unwrap_or(false),
                start_connected: d.bool_at(&["connectable", "startConnected"]).unwrap_or(false),
                iso: if btype == "VirtualCdromIsoBackingInfo" {
                    backing.and_then(|b| b.text_at(&["fileName"])).map(str::to_string)
                } else {
                    None
                },
            });
        } else if kind == "VirtualTPM" {
            vm.tpm = true;
        } else if kind.contains("PCIPassthrough") || kind == "VirtualUSB" || kind.contains("Vgpu") {
            vm.passthrough_devices.push(if label.is_empty() { kind.to_string() } else { label });
        }
    }
}

pub(super) fn map_vm(o: &ObjectContent, lk: &Lookup) -> Vm {
    let mut vm = Vm {
        id: VmId {
            source_ref: o.obj.value.clone(),
            bios_uuid: o.text("config.uuid").filter(|s| !s.is_empty()).map(str::to_string),
            instance_uuid: o.text("config.instanceUuid").filter(|s| !s.is_empty()).map(str::to_string),
        },
        name: o.text("name").unwrap_or("").to_string(),
        power_state: match o.text("runtime.powerState") {
            Some("poweredOn") => PowerState::PoweredOn,
            Some("suspended") => PowerState::Suspended,
            _ => PowerState::PoweredOff,
        },
        guest_id: o.text("config.guestId").unwrap_or("").to_string(),
        guest_full_name: o.text("config.guestFullName").unwrap_or("").to_string(),
        os_id: crate::osinfo::os_id_from_guest_id(o.text("config.guestId").unwrap_or("")).unwrap_or_default(),
        firmware: if o.text("config.firmware") == Some("efi") { Firmware::Efi } else { Firmware::Bios },
        secure_boot: o.get("config.bootOptions").and_then(|b| b.bool_at(&["efiSecureBootEnabled"])).unwrap_or(false),
        cpu_sockets: 1,
        cores_per_socket: 1,
        memory_mib: o.text("config.hardware.memoryMB").and_then(|m| m.parse().ok()).unwrap_or(0),
        cbt_enabled: o.text("config.changeTrackingEnabled") == Some("true"),
        template: o.text("config.template") == Some("true"),
        fault_tolerance: o
            .get("summary.config.ftInfo")
            .map(|f| f.text_at(&["role"]).is_some() || !f.children.is_empty())
            .unwrap_or(false),
        tools_status: match (o.text("guest.toolsRunningStatus"), o.text("guest.toolsStatus")) {
            (_, Some("toolsNotInstalled")) => ToolsStatus::NotInstalled,
            (Some("guestToolsRunning"), _) => ToolsStatus::Running,
            (Some("guestToolsNotRunning"), _) | (Some("guestToolsExecutingScripts"), _) => ToolsStatus::NotRunning,
            _ => ToolsStatus::Unknown,
        },
        ..Default::default()
    };
    let cpus: u32 = o.text("config.hardware.numCPU").and_then(|c| c.parse().ok()).unwrap_or(1).max(1);
    let cores: u32 = o.text("config.hardware.numCoresPerSocket").and_then(|c| c.parse().ok()).unwrap_or(1).max(1);
    if cpus.is_multiple_of(cores) {
        vm.cores_per_socket = cores;
        vm.cpu_sockets = cpus / cores;
    } else {
        vm.cpu_sockets = cpus;
    }
    if let Some(devs) = o.get("config.hardware.device") {
        map_devices(&mut vm, devs, lk);
    }
    if let Some(net) = o.get("guest.net") {
        for g in net.children.iter() {
            let ips: Vec<IpAddr> = g.all("ipAddress").filter_map(|ip| ip.text.parse().ok()).collect();
            let dev: Option<i32> = g.num_at(&["deviceConfigId"]);
            let mac = g.text_at(&["macAddress"]).unwrap_or("").to_ascii_lowercase();
            if let Some(nic) = vm.nics.iter_mut().find(|n| Some(n.key) == dev || (!mac.is_empty() && n.mac == mac)) {
                for ip in ips {
                    if !nic.ip_addresses.contains(&ip) {
                        nic.ip_addresses.push(ip);
                    }
                }
            }
        }
    }
    if let Some(s) = o.get("snapshot") {
        walk_snapshots(s, &mut vm.snapshots);
    }
    if let Some(h) = o.text("runtime.host").and_then(|h| lk.hosts.get(h)) {
        vm.host = Some(h.0.clone());
        vm.cluster = h.1.clone();
    }
    vm.drs_rules = lk.drs_rules.get(&o.obj.value).cloned().unwrap_or_default();
    vm
}

impl VsphereSource {
    pub(super) async fn lookup_and_vms(
        &self,
    ) -> std::result::Result<(Lookup, Vec<ObjectContent>, Inventory), VsphereError> {
        let c = &self.client;
        let root = c.service_content().root_folder.clone();
        let view = c.create_container_view(&root, INVENTORY_VIEW_TYPES, true).await?;
        let props: Vec<PropSpec<'_>> = INVENTORY_PROPS.iter().map(|(kind, paths)| PropSpec { kind, paths }).collect();
        let spec = Client::view_spec(&view, &props);
        let objects = c.retrieve_all(&spec).await;
        let _ = c.destroy_view(&view).await;
        let objects = objects?;
        let mut lk = Lookup {
            networks_by_ref: HashMap::new(),
            dvpg_by_key: HashMap::new(),
            opaque_by_id: HashMap::new(),
            datastores_by_ref: HashMap::new(),
            hosts: HashMap::new(),
            drs_rules: HashMap::new(),
        };
        let mut inv = Inventory::default();
        let mut clusters: HashMap<String, String> = HashMap::new();
        let mut host_parent: Vec<(String, String, String)> = Vec::new();
        let mut vms = Vec::new();
        let mut dcs = self.datacenters.lock().map_err(|_| VsphereError::NotAuthenticated)?.clone();
        let mut ds_dc: Vec<(String, String)> = Vec::new();
        for o in objects {
            match o.obj.kind.as_str() {
                "VirtualMachine" => vms.push(o),
                "Network" | "DistributedVirtualPortgroup" | "OpaqueNetwork" => {
                    let name = o.text("name").unwrap_or("").to_string();
                    if o.get("config.uplink").map(|u| u.text == "true").unwrap_or(false) {
                        continue; // DVS uplink portgroups carry no VM traffic
                    }
                    let kind = match o.obj.kind.as_str() {
                        "DistributedVirtualPortgroup" => {
                            let key = o.text("key").unwrap_or(&o.obj.value).to_string();
                            lk.dvpg_by_key.insert(key, name.clone());
                            NetworkKind::Distributed
                        }
                        "OpaqueNetwork" => {
                            if let Some(id) = o.get("summary").and_then(|s| s.text_at(&["opaqueNetworkId"])) {
                                lk.opaque_by_id.insert(id.to_string(), name.clone());
                            }
                            NetworkKind::Opaque
                        }
                        _ => NetworkKind::Standard,
                    };
                    lk.networks_by_ref.insert(o.obj.value.clone(), name.clone());
                    inv.networks.push(Network { id: o.obj.value.clone(), name, kind });
                }
                "Datastore" => {
                    let s = o.get("summary");
                    let name = s.and_then(|s| s.text_at(&["name"])).unwrap_or("").to_string();
                    lk.datastores_by_ref.insert(o.obj.value.clone(), name.clone());
                    inv.datastores.push(Datastore {
                        id: o.obj.value.clone(),
                        name,
                        kind: s.and_then(|s| s.text_at(&["type"])).unwrap_or("").to_string(),
                        capacity_bytes: s.and_then(|s| s.num_at(&["capacity"])).unwrap_or(0),
                        free_bytes: s.and_then(|s| s.num_at(&["freeSpace"])).unwrap_or(0),
                    });
                }
                "HostSystem" => {
                    let parent = o.get("parent");
                    host_parent.push((
                        o.obj.value.clone(),
                        o.text("name").unwrap_or("").to_string(),
                        parent
                            .filter(|p| p.attr("type") == Some("ClusterComputeResource"))
                            .map(|p| p.text.clone())
                            .unwrap_or_default(),
                    ));
                }
                "ClusterComputeResource" => {
                    let name = o.text("name").unwrap_or("").to_string();
                    if let Some(cfg) = o.get("configurationEx") {
                        for rule in cfg.all("rule") {
                            let rname = rule.text_at(&["name"]).unwrap_or("").to_string();
                            for v in rule.all("vm") {
                                lk.drs_rules.entry(v.text.clone()).or_default().push(rname.clone());
                            }
                        }
                    }
                    clusters.insert(o.obj.value.clone(), name);
                }
                "Datacenter" => {
                    let name = o.text("name").unwrap_or("").to_string();
                    if let Some(list) = o.get("datastore") {
                        for d in list.children.iter() {
                            ds_dc.push((d.text.clone(), name.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        for (id, name, parent) in host_parent {
            let cluster = clusters.get(&parent).cloned();
            lk.hosts.insert(id.clone(), (name.clone(), cluster.clone()));
            inv.hosts.push(Host { id, name, cluster });
        }
        for (ds, dc) in ds_dc {
            if let Some(name) = lk.datastores_by_ref.get(&ds) {
                dcs.insert(name.clone(), dc);
            }
        }
        if let Ok(mut g) = self.datacenters.lock() {
            *g = dcs;
        }
        Ok((lk, vms, inv))
    }

    pub(super) async fn fetch_vm(&self, id: &VmId) -> std::result::Result<Vm, VsphereError> {
        let (lk, _, _) = self.lookup_cached().await?;
        let o = self.client.object_properties(&vm_ref(id), VM_PROPS).await?;
        Ok(map_vm(&o, &lk))
    }

    pub(super) async fn lookup_cached(
        &self,
    ) -> std::result::Result<(Lookup, Vec<ObjectContent>, Inventory), VsphereError> {
        // Networks and datastores are few; one bulk call keeps names right after changes.
        self.lookup_and_vms().await
    }
}
