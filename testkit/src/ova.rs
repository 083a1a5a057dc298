//! OVA packages made by real tools, laid out as VMware's ovftool writes them: the `.ovf` first,
//! then the `.mf`, then the disks, in a POSIX ustar archive (GNU tar `--format=ustar`); the disks
//! are streamOptimized VMDKs written by `qemu-img convert`, the manifest's digests come from
//! coreutils' `sha256sum`/`sha1sum`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::peers::{pattern, qemu_img_stream_optimized};

const MIB: u64 = 1 << 20;

/// What to put in a package.
#[derive(Debug, Clone)]
pub struct OvaSpec {
    /// VM (and file) name.
    pub name: String,
    /// Disk capacities in MiB (one VMDK each).
    pub disks_mib: Vec<u64>,
    /// Network of the one NIC.
    pub network: String,
    /// `sha256`, `sha1`, or `None` for no manifest.
    pub manifest: Option<&'static str>,
    /// Boot firmware written in the descriptor (`efi` or `bios`).
    pub firmware: &'static str,
}

impl OvaSpec {
    /// One VM with one disk of `mib` MiB on network `VM Network`, SHA-256 manifest, BIOS.
    pub fn new(name: &str, mib: u64) -> OvaSpec {
        OvaSpec {
            name: name.into(),
            disks_mib: vec![mib],
            network: "VM Network".into(),
            manifest: Some("sha256"),
            firmware: "bios",
        }
    }
}

/// A package made by [`build_ova`]: where it is and what went into it.
#[derive(Debug, Clone)]
pub struct BuiltOva {
    /// The `.ova`.
    pub ova: PathBuf,
    /// The folder holding the loose files (`.ovf`, `.mf`, `.vmdk`) it was made from.
    pub parts: PathBuf,
    /// Per disk: the raw image the VMDK was converted from, and the VMDK.
    pub disks: Vec<(PathBuf, PathBuf)>,
    /// Member names, in archive order.
    pub members: Vec<String>,
}

/// The raw content of disk `i` of a VM: data at the start, in the middle and at the end, holes
/// between (so streamOptimized grains and zero grains are both exercised).
pub fn disk_content(seed: u64, capacity: u64) -> Vec<u8> {
    let mut v = vec![0u8; capacity as usize];
    let chunks = [
        (0, MIB.min(capacity)),
        (capacity / 2, (MIB / 2).min(capacity / 4)),
        (capacity.saturating_sub(65_536), 65_536),
    ];
    for (i, (off, len)) in chunks.into_iter().enumerate() {
        let len = len.min(capacity - off) as usize;
        let p = pattern(seed * 7 + i as u64, len);
        v[off as usize..off as usize + len].copy_from_slice(&p);
    }
    v
}

/// The descriptor ovftool would write for `spec` (one VirtualSystem, an LSI SCSI controller, one
/// VMXNET3 NIC), naming `files` (member name, size).
pub fn ovf_descriptor(spec: &OvaSpec, files: &[(String, u64)]) -> String {
    let mut refs = String::new();
    let mut disks = String::new();
    let mut items = String::new();
    for (i, ((href, size), mib)) in files.iter().zip(&spec.disks_mib).enumerate() {
        let n = i + 1;
        refs.push_str(&format!("    <File ovf:href=\"{href}\" ovf:id=\"file{n}\" ovf:size=\"{size}\"/>\n"));
        disks.push_str(&format!(
            "    <Disk ovf:capacity=\"{mib}\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"vmdisk{n}\" ovf:fileRef=\"file{n}\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n"
        ));
        items.push_str(&format!(
            "      <Item>\n        <rasd:AddressOnParent>{i}</rasd:AddressOnParent>\n        <rasd:ElementName>Hard Disk {n}</rasd:ElementName>\n        <rasd:HostResource>ovf:/disk/vmdisk{n}</rasd:HostResource>\n        <rasd:InstanceID>{}</rasd:InstanceID>\n        <rasd:Parent>3</rasd:Parent>\n        <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>\n",
            10 + i
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope vmw:buildId="build-20012345" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
{refs}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disks}  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{net}">
      <Description>The {net} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="80" vmw:osType="rhel9_64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Red Hat Enterprise Linux 9 (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-19</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
        <vmw:CoresPerSocket ovf:required="false">2</vmw:CoresPerSocket>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>1024MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
{items}      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{net}</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on &quot;{net}&quot;</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{firmware}"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        name = spec.name,
        net = spec.network,
        firmware = spec.firmware,
    )
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ALGO(name)= hex` lines for `names` in `dir`, from coreutils' `sha256sum`/`sha1sum`.
///
/// # Errors
/// The tool failed.
pub fn manifest_lines(dir: &Path, algo: &str, names: &[&str]) -> Result<String, String> {
    let out = run(Command::new(format!("{algo}sum")).current_dir(dir).args(names))?;
    let tag = algo.to_ascii_uppercase();
    Ok(out.lines().filter_map(|l| l.split_once("  ")).map(|(hex, name)| format!("{tag}({name})= {hex}\n")).collect())
}

/// Write the `.ova` of `members` (files in `parts`, in this order) with GNU tar as ustar.
///
/// # Errors
/// tar failed.
pub fn tar_ustar(parts: &Path, ova: &Path, members: &[&str]) -> Result<(), String> {
    run(Command::new("tar").arg("--format=ustar").arg("-cf").arg(ova).arg("-C").arg(parts).args(members)).map(|_| ())
}

/// Make the package of `spec` in `dir` (`dir/<name>.ova`, loose parts in `dir/<name>.parts/`).
///
/// # Errors
/// A tool (qemu-img, sha256sum, tar) failed.
pub fn build_ova(dir: &Path, spec: &OvaSpec) -> Result<BuiltOva, String> {
    let parts = dir.join(format!("{}.parts", spec.name));
    std::fs::create_dir_all(&parts).map_err(|e| e.to_string())?;
    let mut disks = Vec::new();
    let mut files = Vec::new();
    for (i, mib) in spec.disks_mib.iter().enumerate() {
        let raw = parts.join(format!("{}-disk{}.raw", spec.name, i + 1));
        std::fs::write(&raw, disk_content(i as u64 + spec.name.len() as u64, mib * MIB)).map_err(|e| e.to_string())?;
        let href = format!("{}-disk{}.vmdk", spec.name, i + 1);
        let vmdk = parts.join(&href);
        qemu_img_stream_optimized(&raw, &vmdk)?;
        let size = std::fs::metadata(&vmdk).map_err(|e| e.to_string())?.len();
        files.push((href, size));
        disks.push((raw, vmdk));
    }
    let ovf = format!("{}.ovf", spec.name);
    std::fs::write(parts.join(&ovf), ovf_descriptor(spec, &files)).map_err(|e| e.to_string())?;
    let mut members = vec![ovf.clone()];
    if let Some(algo) = spec.manifest {
        let mf = format!("{}.mf", spec.name);
        let mut names = vec![ovf.as_str()];
        names.extend(files.iter().map(|(h, _)| h.as_str()));
        std::fs::write(parts.join(&mf), manifest_lines(&parts, algo, &names)?).map_err(|e| e.to_string())?;
        members.push(mf);
    }
    members.extend(files.iter().map(|(h, _)| h.clone()));
    let ova = dir.join(format!("{}.ova", spec.name));
    let m: Vec<&str> = members.iter().map(String::as_str).collect();
    tar_ustar(&parts, &ova, &m)?;
    Ok(BuiltOva { ova, parts, disks, members })
}
