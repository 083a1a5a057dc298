//! Shared helpers of the end-to-end tests (`tests/e2e_*.rs`): the lab simulator, plan text,
//! the `vmigrate` binary, independent checks (qemu-img, the official OpenAPI schemas) and
//! read-backs through the vSphere API.
#![allow(dead_code)]

pub mod boot;
pub mod guests;
pub mod kubelet;
pub mod warm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmigrate::core::model::{PowerState, Vm};
use vmigrate::core::{PlanStatus, SourceProvider};
use vmigrate::vsphere::soap::{method, MoRef};
use vmigrate::vsphere::vcsim::{Vcsim, VcsimOptions};
use vmigrate::vsphere::VsphereSource;

/// The lab's network and datastore, as the simulator names them.
pub const NETWORK: &str = "segment-migrating-to-ocpvirt";
/// The lab's datastore.
pub const DATASTORE: &str = "WorkloadDatastore";

/// Start the lab simulator with disks of `disk_size` bytes.
pub fn start_vcsim(disk_size: u64) -> Vcsim {
    Vcsim::start(VcsimOptions { disk_size, ..Default::default() })
}

/// Names of the environment variables a plan reads its credentials from, unique per test so
/// tests running in parallel threads of one binary never see each other's values.
pub struct CredEnv {
    /// Variable holding the user name.
    pub user: String,
    /// Variable holding the password.
    pub pass: String,
}

impl CredEnv {
    /// Fresh variable names for `tag`.
    pub fn new(tag: &str) -> CredEnv {
        let tag = tag.to_uppercase().replace('-', "_");
        CredEnv { user: format!("VMIGRATE_E2E_{tag}_USER"), pass: format!("VMIGRATE_E2E_{tag}_PASSWORD") }
    }

    /// Export the simulator's credentials in this process (library runs).
    pub fn export(&self, sim: &Vcsim) {
        std::env::set_var(&self.user, &sim.username);
        std::env::set_var(&self.pass, &sim.password);
    }

    /// Give the credentials to a child process (CLI runs).
    pub fn apply(&self, cmd: &mut Command, sim: &Vcsim) {
        cmd.env(&self.user, &sim.username).env(&self.pass, &sim.password);
    }
}

/// Plan text for `vms` of the simulator: TLS with the thumbprint pinned, credentials from `env`,
/// the lab's maps and services. `options` is extra YAML under `spec.options` (indented 4).
pub fn vcsim_plan(
    name: &str,
    sim: &Vcsim,
    env: &CredEnv,
    target_url: &str,
    vms: &[&str],
    warm: bool,
    options: &str,
) -> String {
    let mut vm_list = String::new();
    for vm in vms {
        vm_list.push_str(&format!("    - name: {vm}\n"));
        if vm.starts_with("winweb") {
            vm_list.push_str("      labels: { env: webapp }\n");
        }
    }
    format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: {name}
spec:
  source:
    url: "{url}"
    thumbprint: "{thumb}"
    credentials: {{ usernameEnv: {user}, passwordEnv: {pass} }}
  target:
    url: "{target_url}"
  targetNamespace: vmexamples
  skipGuestConversion: true # the simulator's disks hold no guest
  warm: {warm}
  vms:
{vm_list}  networkMap:
    - source: {{ name: {NETWORK} }}
      destination: {{ type: pod }}
  storageMap:
    - source: {{ name: {DATASTORE} }}
      destination: {{ storageClass: ocs-storagecluster-ceph-rbd-virtualization, volumeMode: Block, accessMode: ReadWriteMany }}
  services:
    - name: webapp
      selector: {{ env: webapp }}
      ports: [{{ protocol: TCP, port: 80, targetPort: 80 }}]
      route: {{ name: route-webapp }}
    - name: database
      selector: {{ vm.kubevirt.io/name: database }}
      ports: [{{ protocol: TCP, port: 3306, targetPort: 3306 }}]
  options:
    maxInFlight: 3
    shutdownTimeout: 5s
{options}"#,
        url = sim.url,
        thumb = sim.thumbprint,
        user = env.user,
        pass = env.pass,
    )
}

/// The namespace the lab plans ([`vcsim_plan`], [`vmx_plan`]) migrate into.
pub const NAMESPACE: &str = "vmexamples";
/// The storage class the lab plans' storage map names for the simulator's datastore.
pub const STORAGE_CLASS: &str = "ocs-storagecluster-ceph-rbd-virtualization";

/// A fake cluster (the in-process Kubernetes API, `token` its bearer token) holding what a lab
/// plan's preflight looks for: the [`NAMESPACE`] and the [`STORAGE_CLASS`] (made by
/// `provisioner`). Every cluster test starts here and adds what its path needs (DataVolume
/// statuses, CDI config).
pub async fn lab_cluster(token: &str, provisioner: &str) -> vmigrate::kubevirt::fake::FakeKube {
    let fake = vmigrate::kubevirt::fake::FakeKube::start(token).await;
    fake.insert(
        &format!("/api/v1/namespaces/{NAMESPACE}"),
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    );
    fake.insert(
        &format!("/apis/storage.k8s.io/v1/storageclasses/{STORAGE_CLASS}"),
        serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": STORAGE_CLASS}, "provisioner": provisioner}),
    );
    fake
}

/// Connect to the simulator (CA-verified) for read-backs and lab preparation.
pub async fn connect(sim: &Vcsim) -> VsphereSource {
    VsphereSource::connect(sim.connect_options()).await.expect("connect to vcsim")
}

/// Look a VM up by name.
pub async fn find_vm(src: &VsphereSource, name: &str) -> Vm {
    let inv = src.inventory().await.expect("inventory");
    inv.find_vm(name).unwrap_or_else(|| panic!("{name} not in the simulator")).clone()
}

/// The lab's first step for the Windows VMs: disconnect the installation ISO from the CD-ROM
/// (otherwise validation blocks them with `cdrom.iso-connected`), through `ReconfigVM_Task`.
pub async fn unmount_iso(src: &VsphereSource, vm: &Vm) {
    for cd in &vm.cdroms {
        let args = format!(
            concat!(
                "<spec><deviceChange><operation>edit</operation>",
                "<device xsi:type=\"VirtualCdrom\"><key>{key}</key><deviceInfo><label>CD/DVD drive 1</label><summary>ISO</summary></deviceInfo>",
                "<controllerKey>200</controllerKey><unitNumber>0</unitNumber>",
                "<backing xsi:type=\"VirtualCdromIsoBackingInfo\"><fileName>{iso}</fileName></backing>",
                "<connectable><startConnected>false</startConnected><allowGuestControl>false</allowGuestControl><connected>false</connected></connectable>",
                "</device></deviceChange></spec>"
            ),
            key = cd.key,
            iso = vmigrate::vsphere::soap::esc(cd.iso.as_deref().unwrap_or(""))
        );
        let this = MoRef::new("VirtualMachine", vm.id.source_ref.clone());
        let reply = src
            .client()
            .call("ReconfigVM_Task", &method("ReconfigVM_Task", &this, &args))
            .await
            .expect("ReconfigVM_Task");
        let task = find_child(&reply, "returnval").and_then(MoRef::from_element).expect("task reference");
        src.client().wait_task(&task, Duration::from_secs(30)).await.expect("reconfigure task");
    }
    let after = src.vm(&vm.id).await.expect("vm");
    assert!(
        after.cdroms.iter().all(|c| c.iso.is_none() || !(c.connected || c.start_connected)),
        "ISO still connected on {}: {:?}",
        vm.name,
        after.cdroms
    );
}

fn find_child<'a>(
    e: &'a vmigrate::vsphere::soap::xml::Element,
    name: &str,
) -> Option<&'a vmigrate::vsphere::soap::xml::Element> {
    if e.name == name {
        return Some(e);
    }
    e.children.iter().find_map(|c| find_child(c, name))
}

/// Power state as vSphere reports it now.
pub async fn power_state(src: &VsphereSource, vm: &Vm) -> PowerState {
    src.vm(&vm.id).await.expect("vm").power_state
}

/// Number of snapshots the VM has now, from its `snapshot` property.
pub async fn snapshot_count(src: &VsphereSource, vm: &Vm) -> usize {
    src.vm(&vm.id).await.expect("vm").snapshots.len()
}

/// Path of the `vmigrate` binary under test.
pub fn vmigrate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vmigrate")
}

/// `vmigrate <args>` with extra environment, waited for.
pub fn run_cli(args: &[&str], prepare: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = Command::new(vmigrate_bin());
    cmd.args(args).env_remove("VMIGRATE_LOG");
    prepare(&mut cmd);
    cmd.output().expect("run vmigrate")
}

/// Every stdout line as JSON (`--output json` prints nothing else there).
pub fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// `qemu-img compare` (an independent VMDK reader) of two images, and of two raw images: the
/// test kit's, shared by every crate's tests.
#[allow(unused_imports)] // not every test binary that includes this module compares images
pub use vmigrate_testkit::peers::{qemu_img_compare, qemu_img_compare_raw};

/// The descriptor of a simulator VM's disk (`<ds>/<vm>/<vm>.vmdk`).
pub fn vcsim_descriptor(sim: &Vcsim, vm: &str) -> PathBuf {
    sim.datastore_dir.join(vm).join(format!("{vm}.vmdk"))
}

/// The documents of a `manifests.yaml`.
pub fn manifests(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("each document is YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// Poll `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read a status file if it exists and parses (it is replaced atomically, so it always does).
pub fn read_status(path: &Path) -> Option<PlanStatus> {
    PlanStatus::load(path).ok()
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openapi")
}

/// The official schemas of the objects vmigrate writes (KubeVirt, CDI, OpenShift Route; Services
/// are typed by k8s-openapi already).
pub struct Schemas(vmigrate_kubevirt::schema::Schemas);

impl Schemas {
    /// Load and compile the fixtures.
    pub fn load() -> Schemas {
        Schemas(vmigrate_kubevirt::schema::Schemas::load(&fixtures_dir()).expect("schemas load"))
    }

    /// Validate one document by kind; `Ok(false)` for kinds without a schema here.
    pub fn check(&self, doc: &Value) -> Result<bool, String> {
        match doc["kind"].as_str() {
            Some(k) if vmigrate_kubevirt::schema::Schemas::has_schema(k) => self.0.check(doc).map(|()| true),
            _ => Ok(false),
        }
    }
}

/// A one-VM local datastore (`vmx://`) whose disk holds `data_mib` MiB of incompressible,
/// never-zero data spread over `capacity` (a sparse monolithicSparse VMDK written with
/// vmigrate's writer). Returns the datastore folder and the VMDK path.
pub fn big_vmx_datastore(root: &Path, vm: &str, capacity: u64, data_mib: u64) -> (PathBuf, PathBuf) {
    let ds = root.join(DATASTORE);
    let dir = ds.join(vm);
    std::fs::create_dir_all(&dir).expect("vm folder");
    let vmdk = dir.join(format!("{vm}.vmdk"));
    let mut w = vmigrate::vsphere::vmdk::SparseVmdkWriter::create(&vmdk, capacity).expect("create vmdk");
    // One random MiB, varied per MiB by a counter in every 4 KiB block: cheap to make, and no two
    // MiB are alike.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ vm.len() as u64;
    let mut base = vec![0u8; 1 << 20];
    for c in base.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        c.copy_from_slice(&(seed | 1).to_le_bytes());
    }
    let runs = 16u64.min(data_mib).max(1);
    let per_run = data_mib / runs;
    let stride = capacity / runs;
    let mut mib = 0u64;
    for r in 0..runs {
        for i in 0..per_run {
            let mut buf = base.clone();
            for b in buf.chunks_mut(4096) {
                b[..8].copy_from_slice(&(mib | 1 << 63).to_le_bytes());
            }
            w.write_at(r * stride + (i << 20), &buf).expect("write grain data");
            mib += 1;
        }
    }
    w.finish().expect("finish vmdk");
    let vmx = format!(
        concat!(
            ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n",
            "displayName = \"{vm}\"\nguestOS = \"rhel8-64\"\nfirmware = \"bios\"\nnumvcpus = \"2\"\nmemSize = \"2048\"\n",
            "uuid.bios = \"42 23 5e 1a 0b 7c 4d 01-9a 01 22 33 44 55 66 01\"\n",
            "scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n",
            "scsi0:0.present = \"TRUE\"\nscsi0:0.deviceType = \"scsi-hardDisk\"\nscsi0:0.fileName = \"{vm}.vmdk\"\n",
            "ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"{net}\"\n",
            "ethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:a1:00:09\"\n"
        ),
        vm = vm,
        net = NETWORK
    );
    std::fs::write(dir.join(format!("{vm}.vmx")), vmx).expect("write vmx");
    (ds, vmdk)
}

/// Plan text for one VM of a `vmx://` datastore into `target_url`.
pub fn vmx_plan(name: &str, ds: &Path, target_url: &str, vms: &[&str]) -> String {
    let list: String = vms.iter().map(|v| format!("    - name: {v}\n")).collect();
    format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: {name}
spec:
  source:
    url: "vmx://{ds}?datastore={DATASTORE}"
  target:
    url: "{target_url}"
  targetNamespace: vmexamples
  skipGuestConversion: true # the simulator's disks hold no guest
  vms:
{list}  networkMap:
    - source: {{ name: {NETWORK} }}
      destination: {{ type: pod }}
  storageMap:
    - source: {{ name: {DATASTORE} }}
      destination: {{ storageClass: standard }}
  options:
    maxInFlight: 4
"#,
        ds = ds.display()
    )
}
