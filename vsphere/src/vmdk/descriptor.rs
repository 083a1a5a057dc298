//! The VMDK text descriptor: `createType`, extent lines and the disk database (`ddb.*`).
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=fffffffe
//! parentCID=ffffffff
//! createType="monolithicFlat"
//! RW 2097152 FLAT "disk-flat.vmdk" 0
//! ddb.adapterType = "lsilogic"
//! ```

use std::collections::BTreeMap;

use super::VmdkError;

/// Largest descriptor we parse; real ones are well under 10 KiB.
pub const MAX_DESCRIPTOR_BYTES: usize = 1 << 20;
/// Most extent lines we accept (a 62 TiB twoGbMaxExtent disk has about 32,000).
pub const MAX_EXTENTS: usize = 65_536;
/// `parentCID` of a disk without a parent.
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// How the disk is laid out (`createType`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateType {
    /// One sparse file with the descriptor embedded.
    MonolithicSparse,
    /// A descriptor plus one flat extent.
    MonolithicFlat,
    /// A descriptor plus sparse extents of at most 2 GiB.
    TwoGbMaxExtentSparse,
    /// A descriptor plus flat extents of at most 2 GiB.
    TwoGbMaxExtentFlat,
    /// ESXi thick disk: a descriptor plus a `-flat.vmdk` extent.
    Vmfs,
    /// ESXi thin disk.
    VmfsThin,
    /// ESXi snapshot delta (`COWD` extents).
    VmfsSparse,
    /// ESXi space-efficient sparse delta.
    SeSparse,
    /// Compressed, stream-friendly sparse file (OVF exports).
    StreamOptimized,
    /// Virtual-compatibility raw device mapping.
    VmfsRawDeviceMap,
    /// Physical-compatibility raw device mapping.
    VmfsPassthroughRawDeviceMap,
    /// Anything else, by its name.
    Other(String),
}

impl CreateType {
    fn parse(s: &str) -> CreateType {
        match s.to_ascii_lowercase().as_str() {
            "monolithicsparse" => CreateType::MonolithicSparse,
            "monolithicflat" => CreateType::MonolithicFlat,
            "twogbmaxextentsparse" => CreateType::TwoGbMaxExtentSparse,
            "twogbmaxextentflat" => CreateType::TwoGbMaxExtentFlat,
            "vmfs" => CreateType::Vmfs,
            "vmfsthin" => CreateType::VmfsThin,
            "vmfssparse" => CreateType::VmfsSparse,
            "sesparse" => CreateType::SeSparse,
            "streamoptimized" => CreateType::StreamOptimized,
            "vmfsrawdevicemap" => CreateType::VmfsRawDeviceMap,
            "vmfspassthroughrawdevicemap" => CreateType::VmfsPassthroughRawDeviceMap,
            _ => CreateType::Other(s.to_owned()),
        }
    }

    /// Whether this is a raw device mapping.
    pub fn is_rdm(&self) -> bool {
        matches!(self, CreateType::VmfsRawDeviceMap | CreateType::VmfsPassthroughRawDeviceMap)
    }
}

/// Access mode of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `RW`.
    ReadWrite,
    /// `RDONLY`.
    ReadOnly,
    /// `NOACCESS`.
    NoAccess,
}

/// Kind of an extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// Raw bytes at an offset of a file.
    Flat,
    /// A hosted sparse (`KDMV`) file.
    Sparse,
    /// Reads as zeroes, no file.
    Zero,
    /// ESXi flat extent.
    Vmfs,
    /// ESXi sparse delta (`COWD`).
    VmfsSparse,
    /// RDM mapping (virtual compatibility).
    VmfsRdm,
    /// RDM mapping (physical compatibility).
    VmfsRaw,
    /// Space-efficient sparse.
    SeSparse,
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access.
    pub access: Access,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Kind.
    pub kind: ExtentType,
    /// File name, relative to the descriptor (absent for `ZERO`).
    pub file: Option<String>,
    /// Start of the extent inside the file, in sectors (`FLAT`/`VMFS` only).
    pub offset_sectors: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// `version`.
    pub version: u32,
    /// Content id.
    pub cid: u32,
    /// Parent content id ([`NO_PARENT_CID`] when there is no parent).
    pub parent_cid: u32,
    /// Layout.
    pub create_type: CreateType,
    /// Parent file of a delta disk, relative to this descriptor.
    pub parent_file_name_hint: Option<String>,
    /// Extents, in disk order.
    pub extents: Vec<ExtentLine>,
    /// The disk database, keys lower-cased without the `ddb.` prefix (`adaptertype`).
    pub ddb: BTreeMap<String, String>,
}

impl Descriptor {
    /// Virtual size: the sum of the extents.
    pub fn capacity_bytes(&self) -> u64 {
        self.extents.iter().fold(0u64, |acc, e| acc.saturating_add(e.sectors.saturating_mul(512)))
    }

    /// A `ddb.*` value by its name without the prefix, any case (`adapterType`).
    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb.get(&key.to_ascii_lowercase()).map(String::as_str)
    }

    /// The controller the disk was created for (`ide`, `lsilogic`, `buslogic`, `pvscsi`).
    pub fn adapter_type(&self) -> Option<&str> {
        self.ddb("adapterType")
    }

    /// Whether the disk has a parent (a snapshot delta or linked clone).
    pub fn has_parent(&self) -> bool {
        self.parent_cid != NO_PARENT_CID && self.parent_file_name_hint.is_some()
    }

    /// Whether the extents are sparse (thin) rather than preallocated.
    pub fn is_thin(&self) -> bool {
        self.ddb("thinProvisioned") == Some("1")
            || matches!(
                self.create_type,
                CreateType::MonolithicSparse
                    | CreateType::TwoGbMaxExtentSparse
                    | CreateType::StreamOptimized
                    | CreateType::VmfsThin
                    | CreateType::VmfsSparse
                    | CreateType::SeSparse
            )
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

fn parse_hex_u32(s: &str, line: usize) -> Result<u32, VmdkError> {
    u32::from_str_radix(unquote(s), 16).map_err(|_| VmdkError::Descriptor { line, reason: "bad hexadecimal id" })
}

/// Parse a text descriptor (bytes may end with NUL padding, as embedded descriptors do).
///
/// # Errors
/// [`VmdkError::Descriptor`] with the line and reason, [`VmdkError::TooLarge`] over
/// [`MAX_DESCRIPTOR_BYTES`].
pub fn parse_descriptor(bytes: &[u8]) -> Result<Descriptor, VmdkError> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        return Err(VmdkError::TooLarge { what: "descriptor", size: bytes.len() as u64 });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| VmdkError::Descriptor { line: 0, reason: "not utf-8" })?;
    let mut d = Descriptor {
        version: 1,
        cid: 0,
        parent_cid: NO_PARENT_CID,
        create_type: CreateType::Other(String::new()),
        parent_file_name_hint: None,
        extents: Vec::new(),
        ddb: BTreeMap::new(),
    };
    let mut saw_create_type = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let first = l.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(VmdkError::TooLarge { what: "extent list", size: d.extents.len() as u64 });
            }
            d.extents.push(parse_extent(l, line)?);
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            return Err(VmdkError::Descriptor { line, reason: "expected `key=value` or an extent line" });
        };
        let key = k.trim().to_ascii_lowercase();
        let v = unquote(v);
        match key.as_str() {
            "version" => {
                d.version = v.parse().map_err(|_| VmdkError::Descriptor { line, reason: "bad version" })?;
            }
            "cid" => d.cid = parse_hex_u32(v, line)?,
            "parentcid" => d.parent_cid = parse_hex_u32(v, line)?,
            "createtype" => {
                d.create_type = CreateType::parse(v);
                saw_create_type = true;
            }
            "parentfilenamehint" => d.parent_file_name_hint = Some(v.to_owned()),
            k if k.starts_with("ddb.") => {
                d.ddb.insert(k["ddb.".len()..].to_owned(), v.to_owned());
            }
            _ => {}
        }
    }
    if !saw_create_type {
        return Err(VmdkError::Descriptor { line: 0, reason: "no createType" });
    }
    if d.extents.is_empty() {
        return Err(VmdkError::Descriptor { line: 0, reason: "no extents" });
    }
    Ok(d)
}

fn parse_extent(l: &str, line: usize) -> Result<ExtentLine, VmdkError> {
    let err = |reason| VmdkError::Descriptor { line, reason };
    // ACCESS SECTORS TYPE ["file name" [offset]]; the file name may hold spaces.
    let (head, quoted, tail) = match (l.find('"'), l.rfind('"')) {
        (Some(a), Some(b)) if b > a => (&l[..a], Some(&l[a + 1..b]), &l[b + 1..]),
        (Some(_), _) => return Err(err("unterminated file name")),
        _ => (l, None, ""),
    };
    let mut it = head.split_whitespace();
    let access = match it.next() {
        Some("RW") => Access::ReadWrite,
        Some("RDONLY") => Access::ReadOnly,
        Some("NOACCESS") => Access::NoAccess,
        _ => return Err(err("bad extent access")),
    };
    let sectors: u64 = it.next().and_then(|s| s.parse().ok()).ok_or_else(|| err("bad extent size"))?;
    if sectors == 0 {
        // qemu-img refuses it too; copying it would make an empty disk and exit 0.
        return Err(err("extent of zero sectors"));
    }
    let kind = match it.next().map(str::to_ascii_uppercase).as_deref() {
        Some("FLAT") => ExtentType::Flat,
        Some("SPARSE") => ExtentType::Sparse,
        Some("ZERO") => ExtentType::Zero,
        Some("VMFS") => ExtentType::Vmfs,
        Some("VMFSSPARSE") => ExtentType::VmfsSparse,
        Some("VMFSRDM") => ExtentType::VmfsRdm,
        Some("VMFSRAW") => ExtentType::VmfsRaw,
        Some("SESPARSE") => ExtentType::SeSparse,
        _ => return Err(err("unknown extent type")),
    };
    if it.next().is_some() {
        return Err(err("unexpected field before the file name"));
    }
    let offset_sectors = match tail.split_whitespace().next() {
        Some(o) => o.parse().map_err(|_| err("bad extent offset"))?,
        None => 0,
    };
    if tail.split_whitespace().nth(1).is_some() {
        return Err(err("unexpected field after the extent offset"));
    }
    if kind != ExtentType::Zero && quoted.is_none_or(str::is_empty) {
        return Err(err("extent without a file name"));
    }
    Ok(ExtentLine { access, sectors, kind, file: quoted.map(str::to_owned), offset_sectors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_two_gb_flat() {
        let d = parse_descriptor(
            b"# Disk DescriptorFile\nversion=1\nCID=52c0a1f3\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentFlat\"\n\n\
              # Extent description\nRW 4192256 FLAT \"my disk-f001.vmdk\" 0\nRW 8192 FLAT \"my disk-f002.vmdk\" 0\n\
              RW 100 ZERO\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"2088\"\n\
              ddb.adapterType = \"ide\"\n\0\0\0",
        )
        .expect("valid descriptor");
        assert_eq!(d.create_type, CreateType::TwoGbMaxExtentFlat);
        assert_eq!(d.cid, 0x52c0a1f3);
        assert!(!d.has_parent());
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("my disk-f001.vmdk"));
        assert_eq!(d.extents[2].kind, ExtentType::Zero);
        assert_eq!(d.capacity_bytes(), (4192256 + 8192 + 100) * 512);
        assert_eq!(d.adapter_type(), Some("ide"));
        assert_eq!(d.ddb("virtualhwversion"), Some("4"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            parse_descriptor(b"createType=\"x\"\nRW x FLAT \"a\" 0"),
            Err(VmdkError::Descriptor { line: 2, .. })
        ));
        assert!(parse_descriptor(b"createType=\"vmfs\"\n").is_err());
        assert!(parse_descriptor(b"RW 1 FLAT \"a\" 0\n").is_err());
        assert!(parse_descriptor(b"createType=\"vmfs\"\nRW 1 FLAT\n").is_err());
        assert!(parse_descriptor(b"createType=\"vmfs\"\nRW 1 FLAT \"a\" 0 9\n").is_err());
        assert!(parse_descriptor(b"\xff\xfe").is_err());
        // Issue 14 item 12: `RW 0` is refused, not read as an empty disk.
        assert!(matches!(
            parse_descriptor(b"createType=\"monolithicFlat\"\nRW 0 FLAT \"a\" 0\n"),
            Err(VmdkError::Descriptor { line: 2, .. })
        ));
    }
}
