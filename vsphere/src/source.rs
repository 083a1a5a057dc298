//! [`VsphereSource`]: the vCenter / ESXi implementation of [`SourceProvider`].
//!
//! Inventory comes from one ContainerView over the root folder and paged
//! `RetrievePropertiesEx` calls asking only for the properties the model needs, so thousands of
//! VMs cost a handful of round trips. Disks are read over HTTPS from the datastore `/folder`
//! endpoint with parallel Range requests (or through `nbdkit vddk` when a VDDK directory is
//! configured, see [`vddk_command`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{debug, info, warn};
use url::Url;
use vmigrate_core::model::{
    Cdrom, Datastore, Disk, DiskBus, DiskMode, Firmware, Host, Inventory, Network, NetworkKind, Nic, NicModel,
    PowerState, Snapshot, ToolsStatus, Vm, VmId,
};
use vmigrate_core::provider::{ChangedAreas, SnapshotRef, SourceCapabilities, SourceProvider};
use vmigrate_core::transport::{BlockTransport, Extent, ExtentKind};
use vmigrate_core::{Error, ErrorCode, Result};

use vmigrate_core::http::{http_status, HeaderRefresh, HttpOptions, HttpTransport};

use crate::client::{Client, ConnectOptions, ObjectContent, PropSpec};
use crate::error::VsphereError;
use crate::secret::SecretDir;
use crate::soap::xml::Element;
use crate::soap::MoRef;
use crate::vmdk::{open_vmdk_at, ExtentOpener};

/// Properties read per VM.
pub const VM_PROPS: &[&str] = &[
    "name",
    "config.uuid",
    "config.instanceUuid",
    "config.guestId",
    "config.guestFullName",
    "config.firmware",
    "config.bootOptions",
    "config.hardware.numCPU",
    "config.hardware.numCoresPerSocket",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.changeTrackingEnabled",
    "config.template",
    "runtime.powerState",
    "runtime.host",
    "guest.net",
    "guest.toolsRunningStatus",
    "guest.toolsStatus",
    "snapshot",
    "summary.config.ftInfo",
];

/// Every type and property path the inventory asks for, in one ContainerView retrieval (the
/// view spans [`INVENTORY_VIEW_TYPES`]); public so benchmarks ask other clients for the same.
pub const INVENTORY_PROPS: &[(&str, &[&str])] = &[
    ("VirtualMachine", VM_PROPS),
    ("Network", &["name"]),
    ("DistributedVirtualPortgroup", &["name", "key", "config.uplink"]),
    ("OpaqueNetwork", &["name", "summary"]),
    ("Datastore", &["summary"]),
    ("HostSystem", &["name", "parent"]),
    ("ClusterComputeResource", &["name", "configurationEx"]),
    ("Datacenter", &["name", "datastore"]),
];

/// The managed object types of the inventory's ContainerView.
pub const INVENTORY_VIEW_TYPES: &[&str] =
    &["VirtualMachine", "Network", "Datastore", "HostSystem", "ClusterComputeResource", "Datacenter"];

const TASK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Parallel HTTPS connections per datastore disk (the engine's workers share them).
pub const DISK_CONNECTIONS: usize = 8;

/// The vSphere source.
#[derive(Debug, Clone)]
pub struct VsphereSource {
    client: Client,
    opts: Arc<ConnectOptions>,
    /// Datastore name -> datacenter inventory path, filled by inventory().
    datacenters: Arc<Mutex<HashMap<String, String>>>,
}

fn text(e: Option<&Element>) -> String {
    e.map(|e| e.text.clone()).unwrap_or_default()
}

/// Split `[datastore] path/file.vmdk`.
pub fn split_datastore_path(file: &str) -> Option<(&str, &str)> {
    let rest = file.strip_prefix('[')?;
    let (ds, path) = rest.split_once(']')?;
    Some((ds, path.trim_start()))
}

struct Lookup {
    networks_by_ref: HashMap<String, String>,
    dvpg_by_key: HashMap<String, String>,
    opaque_by_id: HashMap<String, String>,
    datastores_by_ref: HashMap<String, String>,
    hosts: HashMap<String, (String, Option<String>)>,
    drs_rules: HashMap<String, Vec<String>>,
}

fn controller_bus(kind: &str) -> Option<DiskBus> {
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

fn nic_model(kind: &str) -> Option<NicModel> {
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

fn disk_mode(mode: &str) -> DiskMode {
    match mode {
        "persistent" | "" => DiskMode::Persistent,
        "independent_persistent" => DiskMode::IndependentPersistent,
        "independent_nonpersistent" => DiskMode::IndependentNonpersistent,
        _ => DiskMode::Other,
    }
}

fn walk_snapshots(list: &Element, out: &mut Vec<Snapshot>) {
    for item in list.all("rootSnapshotList").chain(list.all("childSnapshotList")) {
        out.push(Snapshot { id: text(item.child("snapshot")), name: text(item.child("name")) });
        walk_snapshots(item, out);
    }
}

/// Map the devices of `config.hardware.device` into disks, NICs, CD-ROMs and flags.
fn map_devices(vm: &mut Vm, devices: &Element, lk: &Lookup) {
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

fn map_vm(o: &ObjectContent, lk: &Lookup) -> Vm {
    let mut vm = Vm {
        id: VmId {
            moref: o.obj.value.clone(),
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

fn vm_ref(id: &VmId) -> MoRef {
    MoRef::new("VirtualMachine", id.moref.clone())
}

fn snap_ref(s: &SnapshotRef) -> MoRef {
    MoRef::new("VirtualMachineSnapshot", s.id.clone())
}

impl VsphereSource {
    /// Connect and log in.
    ///
    /// # Errors
    /// [`ErrorCode::VsphereConnect`], [`ErrorCode::VsphereTls`], [`ErrorCode::VsphereInvalidLogin`],
    /// [`ErrorCode::BadUrl`], ...
    pub async fn connect(opts: ConnectOptions) -> Result<VsphereSource> {
        let client = Client::connect(&opts).await?;
        Ok(VsphereSource { client, opts: Arc::new(opts), datacenters: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// The underlying API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Log out now (also attempted on drop).
    ///
    /// # Errors
    /// Transport errors of `Logout`.
    pub async fn close(&self) -> Result<()> {
        Ok(self.client.logout().await?)
    }

    async fn lookup_and_vms(&self) -> std::result::Result<(Lookup, Vec<ObjectContent>, Inventory), VsphereError> {
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

    async fn fetch_vm(&self, id: &VmId) -> std::result::Result<Vm, VsphereError> {
        let (lk, _, _) = self.lookup_cached().await?;
        let o = self.client.object_properties(&vm_ref(id), VM_PROPS).await?;
        Ok(map_vm(&o, &lk))
    }

    async fn lookup_cached(&self) -> std::result::Result<(Lookup, Vec<ObjectContent>, Inventory), VsphereError> {
        // Networks and datastores are few; one bulk call keeps names right after changes.
        self.lookup_and_vms().await
    }

    async fn power_state(&self, vm: &MoRef) -> std::result::Result<String, VsphereError> {
        Ok(self
            .client
            .object_properties(vm, &["runtime.powerState"])
            .await?
            .text("runtime.powerState")
            .unwrap_or("")
            .to_string())
    }

    async fn datacenter_of(&self, datastore: &str) -> std::result::Result<String, VsphereError> {
        if let Some(dc) = self.datacenters.lock().ok().and_then(|g| g.get(datastore).cloned()) {
            return Ok(dc);
        }
        self.lookup_and_vms().await?;
        self.datacenters
            .lock()
            .ok()
            .and_then(|g| g.get(datastore).cloned())
            .ok_or_else(|| VsphereError::NotFound { object: format!("datastore {datastore}") })
    }

    /// URL of a datastore file on the `/folder` endpoint.
    ///
    /// # Errors
    /// [`VsphereError::NotFound`] for an unknown datastore; [`VsphereError::BadUrl`] for a file
    /// name without `[datastore]`.
    pub async fn folder_url(&self, file: &str) -> std::result::Result<Url, VsphereError> {
        let (ds, path) = split_datastore_path(file)
            .ok_or_else(|| VsphereError::BadUrl { url: file.to_string(), reason: "not a [datastore] path".into() })?;
        let dc = self.datacenter_of(ds).await?;
        Ok(folder_url_of(self.client.url(), &dc, ds, path))
    }

    /// The backing file of `disk` at `snapshot` (the snapshot's own view of the disk).
    async fn disk_file_at(
        &self,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> std::result::Result<String, VsphereError> {
        let Some(s) = snapshot else { return Ok(disk.file.clone()) };
        let o = self.client.object_properties(&snap_ref(s), &["config"]).await?;
        let devs = o.get("config").and_then(|c| c.path(&["hardware"]));
        let file = devs
            .and_then(|d| d.all("device").find(|c| c.num_at::<i32>(&["key"]) == Some(disk.key)))
            .and_then(|d| d.text_at(&["backing", "fileName"]))
            .map(str::to_string);
        Ok(file.unwrap_or_else(|| disk.file.clone()))
    }
}

impl VsphereSource {
    async fn open_disk_vddk(
        &self,
        libdir: &Path,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        let sha1 = match (self.client.peer_certificate(), &self.opts.thumbprint) {
            (Some(der), _) => vmigrate_core::http::thumbprint_sha1(&der),
            (None, Some(t)) if t.chars().filter(char::is_ascii_hexdigit).count() == 40 => t.clone(),
            _ => {
                return Err(Error::new(
                    ErrorCode::VsphereTls,
                    "VDDK needs the server certificate's SHA-1 thumbprint, which is unknown",
                ))
            }
        };
        let server = self.client.url().host_str().unwrap_or("").to_string();
        let file = self.disk_file_at(disk, snapshot).await?;
        let (opts, moref) = (&self.opts, vm.moref.as_str());
        open_nbdkit_with_password(&opts.password, |pw, socket| {
            vddk_command(
                libdir,
                &server,
                &opts.username,
                pw,
                &sha1,
                moref,
                &file,
                snapshot.map(|s| s.id.as_str()),
                socket,
            )
        })
        .await
    }
}

/// Start the nbdkit command `build(password_file, socket)` returns, with `password` in a file
/// of a fresh private folder ([`SecretDir`]): the file is removed as soon as nbdkit serves (it
/// reads `password=+FILE` while configuring), the folder with the socket when the returned
/// transport and its clones are dropped, and both at once on any failure.
///
/// # Errors
/// The folder or file cannot be created; nbdkit failing to start; NBD connection errors.
pub async fn open_nbdkit_with_password(
    password: &str,
    build: impl FnOnce(&Path, &Path) -> Vec<String>,
) -> Result<Box<dyn BlockTransport>> {
    let dir = SecretDir::new("vmigrate-vddk-")?;
    let pw = dir.write("password", password)?;
    let socket = dir.path().join("nbd.sock");
    let argv = build(&pw, &socket);
    let mut proc = NbdkitProcess::spawn(&argv, &socket).await?;
    // Serving means configured: the password has been read.
    let _ = std::fs::remove_file(&pw);
    proc.dir = Some(dir);
    let proc = Arc::new(proc);
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    let nbd = vmigrate_core::nbd::NbdTransport::connect(&uri).await?;
    Ok(Box::new(NbdkitDisk { inner: Box::new(nbd), _proc: proc }))
}

/// Start an nbdkit command line serving on `socket` and open it with the NBD client. The
/// returned transport keeps nbdkit running until it and all its clones are dropped.
///
/// # Errors
/// nbdkit failing to start; NBD connection errors.
pub async fn open_nbdkit_disk(argv: &[String], socket: &Path) -> Result<Box<dyn BlockTransport>> {
    let proc = Arc::new(NbdkitProcess::spawn(argv, socket).await?);
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    let nbd = vmigrate_core::nbd::NbdTransport::connect(&uri).await?;
    Ok(Box::new(NbdkitDisk { inner: Box::new(nbd), _proc: proc }))
}

/// An NBD transport whose server is a child nbdkit we own.
#[derive(Debug)]
struct NbdkitDisk {
    inner: Box<dyn BlockTransport>,
    _proc: Arc<NbdkitProcess>,
}

#[async_trait]
impl BlockTransport for NbdkitDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn max_connections(&self) -> usize {
        self.inner.max_connections()
    }
    fn max_request(&self) -> usize {
        self.inner.max_request()
    }
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(NbdkitDisk { inner: self.inner.try_clone().await?, _proc: self._proc.clone() }))
    }
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.inner.read_at(offset, len).await
    }
    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "vddk disks are read-only"))
    }
    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        self.inner.extents(offset, len, kind).await
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Answers 401/403 on datastore reads with a fresh session cookie: the [`Client`] logs in
/// again (once for all parallel readers) and every clone of the transport uses the new cookie.
#[derive(Debug)]
struct SessionCookie {
    client: Client,
}

#[async_trait]
impl HeaderRefresh for SessionCookie {
    async fn refresh(&self, rejected: &[(String, String)]) -> Result<Vec<(String, String)>> {
        let stale = rejected.iter().find(|(k, _)| k.eq_ignore_ascii_case("cookie")).map(|(_, v)| v.as_str());
        let cookie = self.client.refresh_session(stale).await?;
        Ok(vec![("Cookie".to_string(), cookie)])
    }
}

/// Map an error of the shared HTTP transport into the vSphere range where it means something
/// vSphere-specific: a 404 is a missing datastore file, a refused certificate is `VsphereTls`.
fn datastore_error(file: &str, e: Error) -> Error {
    match (http_status(&e), e.code()) {
        (Some(404), _) => Error::from(VsphereError::DatastoreFileMissing { path: file.to_string() }).with_source(e),
        (_, ErrorCode::HttpTls) => {
            Error::new(ErrorCode::VsphereTls, format!("tls verification of {file} failed")).with_source(e)
        }
        _ => e,
    }
}

/// Opens the files a VMDK descriptor names (flat extents, sparse extents, delta parents) on a
/// datastore's `/folder` endpoint as [`HttpTransport`]s: the session cookie as a header
/// (refreshed on 401), the session's TLS trust, parallel connections.
///
/// Names are resolved as VMware does: `[ds] path` is a datastore path, `/vmfs/volumes/<ds>/path`
/// an absolute one, anything else is relative to the descriptor's folder.
#[derive(Debug, Clone)]
pub struct DatastoreOpener {
    client: Client,
    /// Datacenter inventory path (`dcPath`).
    datacenter: String,
    /// Datastore of the descriptor.
    datastore: String,
    /// The descriptor's folder in the datastore, with a trailing `/` (or empty).
    dir: String,
    /// Parallel connections per opened file.
    connections: usize,
}

impl DatastoreOpener {
    /// An opener for files next to the datastore file `[datastore] dir/name.vmdk`.
    pub fn new(client: Client, datacenter: &str, datastore_path: &str, connections: usize) -> Option<Self> {
        let (ds, path) = split_datastore_path(datastore_path)?;
        let dir = path.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
        Some(DatastoreOpener {
            client,
            datacenter: datacenter.to_string(),
            datastore: ds.to_string(),
            dir,
            connections: connections.max(1),
        })
    }

    /// `(datastore, path)` of a descriptor-relative name.
    fn resolve(&self, name: &str) -> (String, String) {
        if let Some((ds, path)) = split_datastore_path(name) {
            return (ds.to_string(), path.to_string());
        }
        if let Some(rest) = name.strip_prefix("/vmfs/volumes/") {
            if let Some((ds, path)) = rest.split_once('/') {
                return (ds.to_string(), path.to_string());
            }
        }
        (self.datastore.clone(), format!("{}{name}", self.dir))
    }

    /// The `/folder` URL of `[ds] path`.
    pub fn url(&self, ds: &str, path: &str) -> Url {
        folder_url_of(self.client.url(), &self.datacenter, ds, path)
    }

    /// Options of every transport this opener makes.
    pub fn http_options(&self) -> HttpOptions {
        HttpOptions {
            headers: self.client.cookie().map(|c| vec![("Cookie".to_string(), c)]).unwrap_or_default(),
            tls: self.client.tls_options().clone(),
            connections: self.connections,
            refresh: Some(Arc::new(SessionCookie { client: self.client.clone() })),
            ..HttpOptions::default()
        }
    }
}

fn folder_url_of(sdk: &Url, datacenter: &str, ds: &str, path: &str) -> Url {
    let mut url = sdk.clone();
    url.set_path(&format!("/folder/{path}"));
    url.query_pairs_mut().clear().append_pair("dcPath", datacenter).append_pair("dsName", ds);
    url
}

#[async_trait]
impl ExtentOpener for DatastoreOpener {
    async fn open(&self, name: &str) -> Result<Box<dyn BlockTransport>> {
        let (ds, path) = self.resolve(name);
        let file = format!("[{ds}] {path}");
        let url = self.url(&ds, &path);
        let t = HttpTransport::open(url.as_str(), self.http_options()).await.map_err(|e| datastore_error(&file, e))?;
        debug!(file = %file, size = t.size(), "opened datastore file over https");
        Ok(Box::new(t))
    }
}

/// A datastore disk read over HTTPS: the VMDK reader over [`HttpTransport`]s from a
/// [`DatastoreOpener`], with the allocation map from `QueryChangedDiskAreas("*")` when CBT is
/// on (asked per work range), else from the format (grain tables; flat extents are all data).
#[derive(Debug)]
pub struct DatastoreDisk {
    inner: Box<dyn BlockTransport>,
    file: Arc<str>,
    cbt: Option<Arc<CbtMap>>,
}

/// One cached `QueryChangedDiskAreas` answer: (start, length, areas).
type CachedAreas = (u64, u64, Vec<(u64, u64)>);

/// Allocation answers from `QueryChangedDiskAreas(changeId="*")`, cached per answered range.
#[derive(Debug)]
pub struct CbtMap {
    client: Client,
    vm: MoRef,
    snapshot: Option<MoRef>,
    key: i32,
    cache: Mutex<Option<CachedAreas>>,
}

impl CbtMap {
    async fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let cached = self.cache.lock().ok().and_then(|g| g.clone());
        let (start, length, areas) = match cached {
            Some(c) if c.0 <= offset && offset < c.0 + c.1 => c,
            _ => {
                let info = self
                    .client
                    .query_changed_disk_areas(&self.vm, self.snapshot.as_ref(), self.key, offset, "*")
                    .await?;
                let c = (info.start_offset, info.length, info.areas);
                if let Ok(mut g) = self.cache.lock() {
                    *g = Some(c.clone());
                }
                c
            }
        };
        let end = (offset + len).min(start + length.max(1));
        if end <= offset {
            return Ok(vec![Extent::data(offset, len)]);
        }
        let mut out = Vec::new();
        let mut pos = offset;
        for (s, l) in areas {
            let (s, e) = (s.max(offset), (s + l).min(end));
            if s >= e {
                continue;
            }
            if s > pos {
                out.push(Extent::hole(pos, s - pos));
            }
            out.push(Extent::data(s, e - s));
            pos = e;
        }
        if pos < end {
            out.push(Extent::hole(pos, end - pos));
        }
        Ok(vmigrate_core::transport::coalesce(out))
    }
}

#[async_trait]
impl BlockTransport for DatastoreDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn max_connections(&self) -> usize {
        self.inner.max_connections()
    }

    fn max_request(&self) -> usize {
        self.inner.max_request()
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(DatastoreDisk {
            inner: self.inner.try_clone().await?,
            file: self.file.clone(),
            cbt: self.cbt.clone(),
        }))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.inner.read_at(offset, len).await.map_err(|e| datastore_error(&self.file, e))
    }

    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "vsphere datastore disks are read-only"))
    }

    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        match (&self.cbt, kind) {
            (Some(cbt), ExtentKind::Allocation) => cbt.extents(offset, len).await,
            _ => self.inner.extents(offset, len, kind).await.map_err(|e| datastore_error(&self.file, e)),
        }
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The `nbdkit vddk` command line for one disk (VDDK reads the disk over NBD/NFC at the
/// snapshot). The password is passed as `password=+FILE` so it never shows in `ps`.
///
/// `thumbprint_sha1` is the server certificate's SHA-1 thumbprint, the form VDDK wants.
#[allow(clippy::too_many_arguments)]
pub fn vddk_command(
    libdir: &Path,
    server: &str,
    user: &str,
    password_file: &Path,
    thumbprint_sha1: &str,
    vm_moref: &str,
    file: &str,
    snapshot: Option<&str>,
    socket: &Path,
) -> Vec<String> {
    let mut argv = vec![
        "nbdkit".to_string(),
        "--exit-with-parent".into(),
        "--readonly".into(),
        "--foreground".into(),
        "--unix".into(),
        socket.display().to_string(),
        "vddk".into(),
        format!("libdir={}", libdir.display()),
        format!("server={server}"),
        format!("user={user}"),
        format!("password=+{}", password_file.display()),
        format!("thumbprint={thumbprint_sha1}"),
        format!("vm=moref={vm_moref}"),
    ];
    if let Some(s) = snapshot {
        argv.push(format!("snapshot={s}"));
    }
    argv.push("transports=nbdssl:nbd".into());
    argv.push(format!("file={file}"));
    argv
}

/// A running `nbdkit` child serving one disk on a unix socket; killed on drop.
#[derive(Debug)]
pub struct NbdkitProcess {
    child: tokio::process::Child,
    /// The socket path.
    pub socket: PathBuf,
    /// The private folder holding the socket (and the secret until it was read); removed
    /// after the child when this is dropped.
    dir: Option<SecretDir>,
}

impl Drop for NbdkitProcess {
    fn drop(&mut self) {
        // The folder goes after the child: kill it first so nothing is left using it.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

impl NbdkitProcess {
    /// Start `argv` (an nbdkit command line with `--unix socket`) and wait for the socket.
    ///
    /// # Errors
    /// [`VsphereError::Process`] when nbdkit cannot start or exits; [`VsphereError::Timeout`]
    /// when the socket does not appear.
    pub async fn spawn(argv: &[String], socket: &Path) -> std::result::Result<NbdkitProcess, VsphereError> {
        let (prog, args) = argv.split_first().ok_or_else(|| VsphereError::Process {
            what: "empty nbdkit command".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VsphereError::Process { what: format!("cannot start {prog}"), source: e })?;
        for _ in 0..200 {
            if socket.exists() {
                return Ok(NbdkitProcess { child, socket: socket.to_path_buf(), dir: None });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(VsphereError::Process {
                    what: format!("{prog} exited with {status} before serving"),
                    source: std::io::Error::other("nbdkit exited"),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.start_kill();
        Err(VsphereError::Timeout { what: format!("{prog} socket {}", socket.display()), seconds: 5 })
    }

    /// Stop the server (and remove its private folder, if it has one).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        drop(self.dir.take());
    }
}

#[async_trait]
impl SourceProvider for VsphereSource {
    fn kind(&self) -> &'static str {
        "vsphere"
    }

    async fn close(&self) -> Result<()> {
        VsphereSource::close(self).await
    }

    /// The disk as vCenter names it: its datastore path, the snapshot a warm pass reads, and
    /// the CBT change id at that snapshot (or the disk's current one for a cold copy of a VM
    /// that is off), with its size. Not the transport's own identity: the datastore is read
    /// over HTTP (no file to stat) or through nbdkit on a fresh socket per open, which would
    /// make every resume start over.
    fn disk_identity(
        &self,
        disk: &vmigrate_core::Disk,
        snapshot: Option<&SnapshotRef>,
        opened: &dyn BlockTransport,
    ) -> vmigrate_core::SourceIdentity {
        let change_id = match snapshot {
            Some(s) => s.change_ids.get(&disk.key),
            None => disk.change_id.as_ref(),
        };
        vmigrate_core::SourceIdentity::of_parts([
            format!("vsphere={}", disk.file),
            format!("snapshot={}", snapshot.map_or("-", |s| s.id.as_str())),
            format!("changeId={}", change_id.map_or("-", String::as_str)),
            format!("size={}", opened.size()),
        ])
    }

    fn capabilities(&self) -> SourceCapabilities {
        SourceCapabilities { power: true, snapshots: true, changed_blocks: true }
    }

    async fn inventory(&self) -> Result<Inventory> {
        let (lk, vms, mut inv) = self.lookup_and_vms().await?;
        inv.vms = vms.iter().map(|o| map_vm(o, &lk)).collect();
        inv.vms.sort_by(|a, b| a.name.cmp(&b.name));
        info!(vms = inv.vms.len(), round_trips = self.client.round_trips(), "vsphere inventory read");
        Ok(inv)
    }

    async fn vm(&self, id: &VmId) -> Result<Vm> {
        Ok(self.fetch_vm(id).await?)
    }

    async fn power_off(&self, vm: &VmId, graceful: Option<Duration>) -> Result<()> {
        let r = vm_ref(vm);
        if self.power_state(&r).await? == "poweredOff" {
            return Ok(());
        }
        if let Some(timeout) = graceful {
            match self.client.shutdown_guest(&r).await {
                Ok(()) => {
                    let waited = self
                        .client
                        .wait_for(&r, &["runtime.powerState"], timeout, |v| {
                            v.iter().any(|(n, e)| n == "runtime.powerState" && e.text == "poweredOff")
                        })
                        .await;
                    match waited {
                        Ok(_) => return Ok(()),
                        Err(VsphereError::Timeout { .. }) => {
                            warn!(vm = %vm.moref, "graceful shutdown timed out; powering off")
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e @ (VsphereError::InvalidState { .. } | VsphereError::Fault { .. })) => {
                    debug!(vm = %vm.moref, error = %e, "graceful shutdown refused; powering off");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.power_state(&r).await? == "poweredOff" {
            return Ok(());
        }
        let task = self.client.power_off_vm(&r).await?;
        match self.client.wait_task(&task, TASK_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err(VsphereError::InvalidState { .. }) if self.power_state(&r).await? == "poweredOff" => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn power_on(&self, vm: &VmId) -> Result<()> {
        let r = vm_ref(vm);
        if self.power_state(&r).await? == "poweredOn" {
            return Ok(());
        }
        let task = self.client.power_on_vm(&r).await?;
        self.client.wait_task(&task, TASK_TIMEOUT).await?;
        Ok(())
    }

    async fn enable_cbt(&self, vm: &VmId) -> Result<()> {
        let task = self.client.set_change_tracking(&vm_ref(vm), true).await?;
        self.client.wait_task(&task, TASK_TIMEOUT).await?;
        Ok(())
    }

    async fn disable_cbt(&self, vm: &VmId) -> Result<()> {
        let task = self.client.set_change_tracking(&vm_ref(vm), false).await?;
        self.client.wait_task(&task, TASK_TIMEOUT).await?;
        Ok(())
    }

    async fn create_snapshot(&self, vm: &VmId, name: &str) -> Result<SnapshotRef> {
        self.create_snapshot_quiesced(vm, name, false).await
    }

    async fn create_snapshot_quiesced(&self, vm: &VmId, name: &str, quiesce: bool) -> Result<SnapshotRef> {
        let task = self.client.create_snapshot(&vm_ref(vm), name, "created by vmigrate", quiesce).await?;
        let result = self.client.wait_task(&task, TASK_TIMEOUT).await?;
        let snap = result.as_ref().and_then(MoRef::from_element).ok_or_else(|| {
            Error::from(VsphereError::Malformed {
                method: "CreateSnapshot_Task".into(),
                detail: "no snapshot in task result".into(),
            })
        })?;
        let o = self.client.object_properties(&snap, &["config"]).await?;
        let mut change_ids = BTreeMap::new();
        if let Some(hw) = o.get("config").and_then(|c| c.child("hardware")) {
            for d in hw.all("device").filter(|d| d.xsi_type() == Some("VirtualDisk")) {
                if let (Some(key), Some(id)) = (d.num_at::<i32>(&["key"]), d.text_at(&["backing", "changeId"])) {
                    if !id.is_empty() {
                        change_ids.insert(key, id.to_string());
                    }
                }
            }
        }
        Ok(SnapshotRef { id: snap.value, name: name.to_string(), change_ids })
    }

    async fn remove_snapshot(&self, _vm: &VmId, snapshot: &SnapshotRef) -> Result<()> {
        let task = match self.client.remove_snapshot(&snap_ref(snapshot)).await {
            Ok(t) => t,
            Err(VsphereError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match self.client.wait_task(&task, TASK_TIMEOUT).await {
            Ok(_) | Err(VsphereError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn changed_areas(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: &SnapshotRef,
        change_id: &str,
        offset: u64,
    ) -> Result<ChangedAreas> {
        let info = self
            .client
            .query_changed_disk_areas(&vm_ref(vm), Some(&snap_ref(snapshot)), disk.key, offset, change_id)
            .await?;
        Ok(ChangedAreas {
            extents: info.areas.iter().map(|(s, l)| Extent::data(*s, *l)).collect(),
            end: info.start_offset + info.length,
        })
    }

    async fn open_disk(
        &self,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        if let Some(libdir) = &self.opts.vddk_lib_dir {
            return self.open_disk_vddk(Path::new(libdir), vm, disk, snapshot).await;
        }
        // The VM must still exist: a deleted VM is a typed NotFound, not a 404 later.
        let props = self.client.object_properties(&vm_ref(vm), &["config.changeTrackingEnabled"]).await?;
        let cbt_on = props.text("config.changeTrackingEnabled") == Some("true");
        let file = self.disk_file_at(disk, snapshot).await?;
        let (ds, _) = split_datastore_path(&file)
            .ok_or_else(|| VsphereError::BadUrl { url: file.clone(), reason: "not a [datastore] path".into() })?;
        let dc = self.datacenter_of(ds).await?;
        let opener = DatastoreOpener::new(self.client.clone(), &dc, &file, DISK_CONNECTIONS)
            .ok_or_else(|| VsphereError::BadUrl { url: file.clone(), reason: "not a [datastore] path".into() })?;
        let name = file.rsplit(['/', ']']).next().unwrap_or(&file).trim().to_string();
        // The reader tells a text descriptor from a sparse file with an embedded one, then opens
        // every extent (and the parents of a delta) through the same opener.
        let inner = open_vmdk_at(&name, Arc::new(opener)).await.map_err(|e| datastore_error(&file, e))?;
        let cbt = cbt_on.then(|| {
            Arc::new(CbtMap {
                client: self.client.clone(),
                vm: vm_ref(vm),
                snapshot: snapshot.map(snap_ref),
                key: disk.key,
                cache: Mutex::new(None),
            })
        });
        debug!(file = %file, size = inner.size(), cbt = cbt_on, "opened datastore disk");
        Ok(Box::new(DatastoreDisk { inner, file: Arc::from(file.as_str()), cbt }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_paths_split() {
        assert_eq!(split_datastore_path("[WorkloadDatastore] db/db.vmdk"), Some(("WorkloadDatastore", "db/db.vmdk")));
        assert_eq!(split_datastore_path("db.vmdk"), None);
    }

    /// The password file nbdkit is given is readable by it, gone once it serves, and its
    /// private folder is gone when the disk is dropped; on a failed start nothing is left.
    #[tokio::test]
    async fn nbdkit_password_file_is_private_and_short_lived() {
        let out = tempfile::tempdir().expect("tmp");
        let seen = out.path().join("seen");
        let mut where_pw = None;
        // The child copies what it finds in the file (proving it could read it), then serves.
        let disk = open_nbdkit_with_password("s3cret", |pw, socket| {
            where_pw = Some(pw.to_path_buf());
            vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "stat -c %a {pw} > {seen}.mode && cat {pw} > {seen} && exec nbdkit --exit-with-parent --foreground --unix {socket} memory 1M",
                    pw = pw.display(),
                    seen = seen.display(),
                    socket = socket.display()
                ),
            ]
        })
        .await
        .expect("nbdkit serves");
        let pw = where_pw.expect("built");
        let dir = pw.parent().expect("folder").to_path_buf();
        assert_eq!(std::fs::read(&seen).expect("child read it"), b"s3cret");
        assert_eq!(std::fs::read_to_string(format!("{}.mode", seen.display())).expect("mode").trim(), "600");
        assert!(!pw.exists(), "the password file outlives nbdkit's start");
        assert_eq!(disk.size(), 1 << 20);
        drop(disk);
        assert!(!dir.exists(), "the private folder outlives the disk");

        // A child that fails to start: the folder and the secret are removed too.
        let mut failed_dir = None;
        let e = open_nbdkit_with_password("s3cret", |pw, _socket| {
            failed_dir = pw.parent().map(Path::to_path_buf);
            vec!["sh".into(), "-c".into(), "exit 3".into()]
        })
        .await
        .expect_err("the child exits");
        assert!(e.to_string().contains("exited"), "{e}");
        assert!(!failed_dir.expect("built").exists(), "secret left behind after a failure");
    }

    #[test]
    fn vddk_argv_is_exact_and_has_no_password() {
        let argv = vddk_command(
            Path::new("/opt/vmware-vix-disklib-distrib"),
            "vcenter.example.com",
            "administrator@vsphere.local",
            Path::new("/run/vmigrate/pw"),
            "AB:CD",
            "vm-42",
            "[WorkloadDatastore] database/database.vmdk",
            Some("snapshot-7"),
            Path::new("/run/vmigrate/nbd.sock"),
        );
        assert_eq!(
            argv,
            [
                "nbdkit",
                "--exit-with-parent",
                "--readonly",
                "--foreground",
                "--unix",
                "/run/vmigrate/nbd.sock",
                "vddk",
                "libdir=/opt/vmware-vix-disklib-distrib",
                "server=vcenter.example.com",
                "user=administrator@vsphere.local",
                "password=+/run/vmigrate/pw",
                "thumbprint=AB:CD",
                "vm=moref=vm-42",
                "snapshot=snapshot-7",
                "transports=nbdssl:nbd",
                "file=[WorkloadDatastore] database/database.vmdk",
            ]
        );
    }
}
