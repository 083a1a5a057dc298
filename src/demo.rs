//! The lab's application as a local VMware datastore, for the demo and for tests.
//!
//! It recreates, without a vCenter, what the MTV lab migrates: `haproxy`, `database` (Linux,
//! MariaDB), `winweb01` and `winweb02` (Windows Server 2019, IIS, UEFI), plus one VM whose name
//! needs renaming. Disks are real sparse VMDK files (monolithicSparse) with deterministic content:
//! a boot sector, scattered data runs, allocated zero runs and large holes, so a copy exercises
//! every path of the engine.

use std::path::{Path, PathBuf};

use vmigrate_core::plan::Plan;
use vmigrate_core::{Error, Result};

/// Name of the datastore folder, as the lab's storage map names it.
pub const DATASTORE: &str = "WorkloadDatastore";
/// The network segment of the lab.
pub const NETWORK: &str = "segment-migrating-to-ocpvirt";

/// One VM of the lab datastore.
#[derive(Debug, Clone)]
pub struct LabVm {
    /// Display name.
    pub name: &'static str,
    /// VMX guestOS value.
    pub guest_os: &'static str,
    /// `bios` or `efi`.
    pub firmware: &'static str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Disk sizes, GiB (virtual).
    pub disks_gib: &'static [u64],
    /// MAC of the one NIC.
    pub mac: &'static str,
}

/// The lab's VMs.
pub const LAB_VMS: &[LabVm] = &[
    LabVm {
        name: "haproxy",
        guest_os: "rhel8-64",
        firmware: "bios",
        vcpus: 1,
        memory_mib: 2048,
        disks_gib: &[4],
        mac: "00:50:56:a1:00:01",
    },
    LabVm {
        name: "database",
        guest_os: "rhel8-64",
        firmware: "bios",
        vcpus: 2,
        memory_mib: 4096,
        disks_gib: &[8, 4],
        mac: "00:50:56:a1:00:02",
    },
    LabVm {
        name: "winweb01",
        guest_os: "windows2019srv-64",
        firmware: "efi",
        vcpus: 2,
        memory_mib: 4096,
        disks_gib: &[8],
        mac: "00:50:56:a1:00:03",
    },
    LabVm {
        name: "winweb02",
        guest_os: "windows2019srv-64",
        firmware: "efi",
        vcpus: 2,
        memory_mib: 4096,
        disks_gib: &[8],
        mac: "00:50:56:a1:00:04",
    },
    LabVm {
        name: "Legacy CRM (구형)",
        guest_os: "centos7-64",
        firmware: "bios",
        vcpus: 1,
        memory_mib: 1024,
        disks_gib: &[2],
        mac: "00:50:56:a1:00:05",
    },
];

/// Small deterministic generator (xorshift64*), so every run writes the same disks.
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The content of one lab disk: `(offset, bytes)` runs; everything else is a hole.
pub fn disk_content(vm: &str, index: usize, capacity: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng::new(&format!("{vm}/{index}"));
    let mut runs = Vec::new();
    // A boot sector with a partition-table signature.
    let mut mbr = vec![0u8; 512];
    rng.fill(&mut mbr[..446]);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    runs.push((0, mbr));
    // Scattered data runs: random (incompressible) and text-like (compressible), 64 KiB..2 MiB,
    // about 24 MiB per 8 GiB, plus allocated zero runs the engine must turn back into holes.
    let n = (capacity >> 30).max(1) * 6;
    let stride = capacity / (n + 1);
    for i in 0..n {
        let off = ((i + 1) * stride + (rng.next() % (stride / 2))) & !0xffff;
        let len = (64 << 10) << (rng.next() % 6);
        let mut data = vec![0u8; len as usize];
        match i % 3 {
            0 => rng.fill(&mut data),
            1 => {
                let line = format!("{vm} row {i}: INSERT INTO visitors VALUES ({}, 'webapp');\n", rng.next() % 100_000);
                for (j, b) in data.iter_mut().enumerate() {
                    *b = line.as_bytes()[j % line.len()];
                }
            }
            _ => {} // allocated zeroes
        }
        if off + len <= capacity {
            runs.push((off, data));
        }
    }
    runs
}

fn vmx_text(vm: &LabVm, dir_name: &str, idx: usize) -> String {
    let mut s = String::new();
    let mut kv = |k: &str, v: &str| s.push_str(&format!("{k} = \"{v}\"\n"));
    kv(".encoding", "UTF-8");
    kv("config.version", "8");
    kv("virtualHW.version", "19");
    kv("displayName", vm.name);
    kv("guestOS", vm.guest_os);
    kv("firmware", vm.firmware);
    kv("numvcpus", &vm.vcpus.to_string());
    kv("cpuid.coresPerSocket", &vm.vcpus.to_string());
    kv("memSize", &vm.memory_mib.to_string());
    kv("uuid.bios", &format!("42 23 5e 1a 0b 7c 4d {idx:02x}-9a 01 22 33 44 55 66 {idx:02x}"));
    kv("vc.uuid", &format!("50 23 11 22 33 44 55 {idx:02x}-66 77 88 99 aa bb cc {idx:02x}"));
    kv("ctkEnabled", "TRUE");
    kv("tools.syncTime", "FALSE");
    kv("scsi0.present", "TRUE");
    kv("scsi0.virtualDev", "pvscsi");
    for (i, _) in vm.disks_gib.iter().enumerate() {
        kv(&format!("scsi0:{i}.present"), "TRUE");
        kv(&format!("scsi0:{i}.deviceType"), "scsi-hardDisk");
        kv(&format!("scsi0:{i}.fileName"), &disk_file(dir_name, i));
        kv(&format!("scsi0:{i}.ctkEnabled"), "TRUE");
    }
    kv("ethernet0.present", "TRUE");
    kv("ethernet0.virtualDev", "vmxnet3");
    kv("ethernet0.networkName", NETWORK);
    kv("ethernet0.addressType", "static");
    kv("ethernet0.address", vm.mac);
    kv("sata0.present", "TRUE");
    kv("sata0:0.present", "TRUE");
    kv("sata0:0.deviceType", "cdrom-raw");
    kv("sata0:0.fileName", "auto detect");
    kv("sata0:0.startConnected", "FALSE");
    s
}

fn disk_file(dir_name: &str, i: usize) -> String {
    if i == 0 {
        format!("{dir_name}.vmdk")
    } else {
        format!("{dir_name}_{i}.vmdk")
    }
}

/// Folder name of a VM on the datastore (VMware keeps the display name, spaces included).
fn dir_name(vm: &LabVm) -> String {
    vm.name.to_string()
}

/// Write the lab datastore under `root/WorkloadDatastore` and return that folder.
///
/// # Errors
/// I/O errors writing the files.
pub async fn create_lab_datastore(root: &Path) -> Result<PathBuf> {
    let ds = root.join(DATASTORE);
    for (idx, vm) in LAB_VMS.iter().enumerate() {
        let name = dir_name(vm);
        let dir = ds.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        for (i, gib) in vm.disks_gib.iter().enumerate() {
            let capacity = gib << 30;
            let path = dir.join(disk_file(&name, i));
            let runs = disk_content(vm.name, i, capacity);
            let p = path.clone();
            tokio::task::spawn_blocking(move || write_vmdk(&p, capacity, &runs)).await.map_err(|e| {
                Error::new(vmigrate_core::ErrorCode::Internal, "vmdk writer task failed").with_source(e)
            })??;
        }
        let vmx = dir.join(format!("{name}.vmx"));
        std::fs::write(&vmx, vmx_text(vm, &name, idx))
            .map_err(|e| Error::io(format!("writing {}", vmx.display()), e))?;
    }
    Ok(ds)
}

fn write_vmdk(path: &Path, capacity: u64, runs: &[(u64, Vec<u8>)]) -> Result<()> {
    vmigrate_vsphere::vmdk::write_monolithic_sparse(path, capacity, runs.iter().map(|(o, d)| (*o, d.as_slice())))
}

/// The plan of the lab (`move-webapp-vmware`): database, winweb01 and winweb02 into namespace
/// `vmexamples`, pod networking, the ODF storage class, Services `webapp` and `database` and the
/// Route `route-webapp`.
pub fn lab_plan(source_url: &str, target_url: &str) -> Plan {
    let text = format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: move-webapp-vmware
spec:
  source:
    url: "{source_url}"
  target:
    url: "{target_url}"
  targetNamespace: vmexamples
  skipGuestConversion: true # the demo's disks hold no bootable guest
  vms:
    - name: database
    - name: winweb01
      labels: {{ env: webapp }}
    - name: winweb02
      labels: {{ env: webapp }}
  networkMap:
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
"#
    );
    Plan::from_yaml_str(&text).expect("the lab plan is valid")
}
