//! Bootable Debian test guests and the VMware datastore folders made from them.
//!
//! [`guests`] runs `tests/guests/build-guests.sh` once per test process: it builds the guests the
//! first time (debootstrap, a few minutes) and then only prints its cache folder
//! (`${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/guests/<recipe hash>/`). [`vmware_datastore`] puts
//! them into a `vmx://` datastore folder the way vSphere lays VMs out, in any of the VMDK formats
//! vmigrate reads; the derived VMDKs are cached next to the raw images.
//!
//! A missing tool or a failed build panics (the tests fail, never skip).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde_json::Value;

use super::{DATASTORE, NETWORK};

/// Boot firmware of a guest (and of the VM booting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS (SeaBIOS), GRUB for i386-pc in the MBR.
    Bios,
    /// UEFI (OVMF), GRUB as `EFI/BOOT/BOOTX64.EFI` on an EFI system partition.
    Efi,
}

/// One built guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// `bios-generic`, `uefi-generic` or `bios-hostonly`.
    pub name: String,
    /// The raw disk image in the cache (never boot it writable: see `boot::Drive`).
    pub image: PathBuf,
    /// What it boots with.
    pub firmware: Firmware,
    /// Its initramfs holds only VMware's storage drivers (no virtio, no ahci).
    pub hostonly: bool,
    /// The line its init prints on the serial console once the root file system runs.
    pub marker: String,
    /// Disk size in bytes.
    pub size_bytes: u64,
}

/// The built guests.
#[derive(Debug)]
pub struct GuestSet {
    /// The cache folder holding the images and `guests.json`.
    pub dir: PathBuf,
    /// Every guest, in build order.
    pub guests: Vec<Guest>,
    /// Seconds the builder took in this process (a cached build: well under one).
    pub build_seconds: f64,
}

impl GuestSet {
    /// The guest called `name`.
    pub fn get(&self, name: &str) -> &Guest {
        self.guests.iter().find(|g| g.name == name).unwrap_or_else(|| panic!("no guest {name} in {:?}", self.dir))
    }
}

/// The builder script, found from the crate that compiles this file (the root crate's tests, or
/// the benches crate that shares it) up to the workspace root.
pub fn builder_script() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|d| d.join("tests/guests/build-guests.sh"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("tests/guests/build-guests.sh not found above {}", here.display()))
}

/// Build (or find in the cache) the guests, once per process.
pub fn guests() -> &'static GuestSet {
    static SET: OnceLock<GuestSet> = OnceLock::new();
    SET.get_or_init(|| {
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(builder_script())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", builder_script().display()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "building the test guests failed ({}):\n{stderr}", out.status);
        eprint!("{stderr}");
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        let build_seconds = start.elapsed().as_secs_f64();
        let json: Value = serde_json::from_slice(
            &std::fs::read(dir.join("guests.json")).unwrap_or_else(|e| panic!("{}/guests.json: {e}", dir.display())),
        )
        .expect("guests.json is JSON");
        let guests = json["guests"]
            .as_array()
            .expect("guests.json lists guests")
            .iter()
            .map(|g| Guest {
                name: g["name"].as_str().expect("name").to_owned(),
                image: dir.join(g["image"].as_str().expect("image")),
                firmware: if g["firmware"] == "efi" { Firmware::Efi } else { Firmware::Bios },
                hostonly: g["initramfs"] == "hostonly",
                marker: g["marker"].as_str().expect("marker").to_owned(),
                size_bytes: g["size_bytes"].as_u64().expect("size_bytes"),
            })
            .collect();
        GuestSet { dir, guests, build_seconds }
    })
}

/// How a disk sits on the datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmdkFormat {
    /// What vSphere writes on VMFS: a `createType="vmfs"` descriptor and a raw `-flat.vmdk`.
    VmfsFlat,
    /// One hosted sparse file with an embedded descriptor (Workstation / OVF exports).
    MonolithicSparse,
    /// Compressed grains, as in OVA / OVF exports.
    StreamOptimized,
}

/// One VM of a datastore folder made by [`vmware_datastore`].
#[derive(Debug, Clone)]
pub struct DatastoreVm<'a> {
    /// VM (and folder) name.
    pub name: &'a str,
    /// The guest on its disk.
    pub guest: &'a Guest,
    /// How the disk is stored.
    pub format: VmdkFormat,
    /// Last byte of its MAC address and BIOS UUID (unique per datastore).
    pub index: u8,
}

/// A `vmx://` datastore folder `<root>/WorkloadDatastore/<vm>/` with every VM of `vms`: a
/// `.vmx` as vSphere writes it (PVSCSI controller, VMXNET3 NIC on the lab network,
/// `firmware = "efi"` for UEFI guests) and the guest's disk in the VM's format. Flat extents are
/// hard links to the cached image where the file system allows (a sparse copy otherwise); the
/// sparse VMDKs are converted with `qemu-img` once and cached. Returns the datastore folder.
pub fn vmware_datastore(root: &Path, vms: &[DatastoreVm<'_>]) -> PathBuf {
    let ds = root.join(DATASTORE);
    for vm in vms {
        let dir = ds.join(vm.name);
        std::fs::create_dir_all(&dir).expect("vm folder");
        let vmdk = dir.join(format!("{}.vmdk", vm.name));
        match vm.format {
            VmdkFormat::VmfsFlat => {
                let flat = format!("{}-flat.vmdk", vm.name);
                link_or_copy(&vm.guest.image, &dir.join(&flat));
                std::fs::write(&vmdk, vmfs_descriptor(&flat, vm.guest.size_bytes, vm.index)).expect("write descriptor");
            }
            VmdkFormat::MonolithicSparse => link_or_copy(&cached_vmdk(vm.guest, "monolithicSparse"), &vmdk),
            VmdkFormat::StreamOptimized => link_or_copy(&cached_vmdk(vm.guest, "streamOptimized"), &vmdk),
        }
        std::fs::write(dir.join(format!("{}.vmx", vm.name)), vmx(vm)).expect("write vmx");
    }
    ds
}

/// Plan text migrating `vms` (name, optional `diskBus`) of the `vmx://` datastore `ds` into the
/// `dir://` folder `out`, cold, as a byte copy (`skipGuestConversion: true`; the conversion test
/// swaps it for `false`). `options` is extra YAML under `spec.options`, each line indented four
/// spaces (e.g. `"    verify: true\n"`).
pub fn boot_plan(name: &str, ds: &Path, out: &Path, vms: &[(&str, Option<&str>)], options: &str) -> String {
    let mut list = String::new();
    for (vm, bus) in vms {
        list.push_str(&format!("    - name: {vm}\n"));
        if let Some(bus) = bus {
            list.push_str(&format!("      diskBus: {bus}\n"));
        }
    }
    format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: {name}
spec:
  source:
    url: "vmx://{ds}?datastore={DATASTORE}"
  target:
    url: "dir://{out}"
  targetNamespace: vmexamples
  skipGuestConversion: true
  vms:
{list}  networkMap:
    - source: {{ name: {NETWORK} }}
      destination: {{ type: pod }}
  storageMap:
    - source: {{ name: {DATASTORE} }}
      destination: {{ storageClass: standard }}
  options:
    maxInFlight: 2
{options}"#,
        ds = ds.display(),
        out = out.display()
    )
}

/// The `.vmx` of `vm`, in the shape vSphere 7/8 writes for a Linux guest on PVSCSI.
pub fn vmx(vm: &DatastoreVm<'_>) -> String {
    let firmware = match vm.guest.firmware {
        Firmware::Bios => "bios",
        Firmware::Efi => "efi",
    };
    format!(
        concat!(
            ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n",
            "displayName = \"{name}\"\nguestOS = \"debian12-64\"\nfirmware = \"{firmware}\"\n",
            "numvcpus = \"1\"\nmemSize = \"1024\"\n",
            "uuid.bios = \"42 23 5e 1a 0b 7c 4d 02-9a 01 22 33 44 55 66 {idx:02x}\"\n",
            "scsi0.present = \"TRUE\"\nscsi0.virtualDev = \"pvscsi\"\n",
            "scsi0:0.present = \"TRUE\"\nscsi0:0.deviceType = \"scsi-hardDisk\"\nscsi0:0.fileName = \"{name}.vmdk\"\n",
            "ethernet0.present = \"TRUE\"\nethernet0.virtualDev = \"vmxnet3\"\nethernet0.networkName = \"{net}\"\n",
            "ethernet0.addressType = \"static\"\nethernet0.address = \"00:50:56:a2:00:{idx:02x}\"\n"
        ),
        name = vm.name,
        firmware = firmware,
        idx = vm.index,
        net = NETWORK
    )
}

/// A vSphere VMFS descriptor for a raw extent `flat` of `size` bytes.
pub fn vmfs_descriptor(flat: &str, size: u64, index: u8) -> String {
    let sectors = size / 512;
    let cylinders = (sectors / (255 * 63)).min(65535);
    format!(
        concat!(
            "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=7a3c{idx:02x}11\nparentCID=ffffffff\n",
            "createType=\"vmfs\"\n\n# Extent description\nRW {sectors} VMFS \"{flat}\"\n\n",
            "# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"{cyl}\"\n",
            "ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\nddb.longContentID = \"8d1e5b7f0c2a4e6b9f3d1c5a7a3c{idx:02x}11\"\n",
            "ddb.thinProvisioned = \"1\"\nddb.uuid = \"60 00 C2 9a 41 7e 2b 3c-5d 6e 7f 80 91 a2 b3 {idx:02x}\"\n",
            "ddb.virtualHWVersion = \"19\"\n"
        ),
        idx = index,
        sectors = sectors,
        flat = flat,
        cyl = cylinders
    )
}

/// `<cache>/<guest>.<subformat>.vmdk`, converted from the raw image the first time.
fn cached_vmdk(guest: &Guest, subformat: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = guest.image.with_file_name(format!("{}.{subformat}.vmdk", guest.name));
    if path.exists() {
        return path;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let start = Instant::now();
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(&guest.image)
        .arg(&tmp)
        .output()
        .expect("qemu-img is installed (qemu-utils)");
    assert!(out.status.success(), "qemu-img convert to {subformat}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&tmp, &path).expect("rename converted vmdk");
    eprintln!("guests: {} as {subformat} in {:.1} s", guest.name, start.elapsed().as_secs_f64());
    path
}

/// Hard-link `from` to `to`, or make a sparse copy when they are on different file systems.
fn link_or_copy(from: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_ok() {
        return;
    }
    let out = Command::new("cp").arg("--sparse=always").arg(from).arg(to).output().expect("cp");
    assert!(out.status.success(), "cp {} {}: {}", from.display(), to.display(), String::from_utf8_lossy(&out.stderr));
}
