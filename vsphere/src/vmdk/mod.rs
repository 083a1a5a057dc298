//! VMDK: descriptor parser, flat / sparse / streamOptimized readers, and a sparse writer.
//!
//! ```text
//!   open_vmdk(path) ─┐
//!   open_vmdk_at(name, opener) ──> VmdkDisk: BlockTransport (read-only)
//!   open_vmdk_with(descriptor, opener) ┘        │ one mapped extent per descriptor line
//!                                               ├─ Flat  (monolithicFlat, twoGbMaxExtentFlat, vmfs)
//!                                               ├─ Zero
//!                                               └─ Sparse (monolithicSparse, twoGbMaxExtentSparse,
//!                                                          streamOptimized): grain directory/tables
//! ```
//!
//! Extent files are opened through an [`ExtentOpener`], so the same reader works over local
//! files ([`DirOpener`]) and over a datastore's HTTPS `/folder` endpoint. The parsers
//! ([`descriptor::parse_descriptor`], [`header::SparseHeader::parse`]) are pure functions over
//! bytes and bound every size they return; everything read from a file is checked against the
//! file's size before it is used, so a corrupt file gives [`ErrorCode::SourceDiskFormat`], never a
//! panic, a huge allocation or a short read.
//!
//! ```no_run
//! # async fn demo() -> vmigrate_core::Result<()> {
//! let disk = vmigrate_vsphere::vmdk::open_vmdk(std::path::Path::new("web01/web01.vmdk")).await?;
//! let first_mib = disk.read_at(0, 1 << 20).await?;
//! # let _ = first_mib; Ok(()) }
//! ```

pub mod descriptor;
mod file;
pub mod header;
mod sparse;
mod writer;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use vmigrate_core::transport::coalesce;
use vmigrate_core::{BlockTransport, Error, ErrorCode, Extent, ExtentKind, Result};

pub use descriptor::{parse_descriptor, CreateType, Descriptor, ExtentLine, ExtentType};
pub use file::{DirOpener, LocalFile};
pub use header::SparseHeader;
pub use writer::{write_monolithic_sparse, SparseVmdkWriter, MAX_WRITER_CAPACITY};

use header::{COWD_MAGIC, SECTOR, SPARSE_MAGIC};
use sparse::SparseExtent;

/// Deepest parent chain (snapshot deltas) we follow.
pub const MAX_PARENT_DEPTH: usize = 32;

/// Why a VMDK could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VmdkError {
    /// The text descriptor is malformed.
    #[error("vmdk descriptor line {line}: {reason}")]
    Descriptor {
        /// 1-based line, 0 for the whole descriptor.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The sparse header (or a marker) is malformed.
    #[error("vmdk sparse header: {reason}")]
    Header {
        /// What is wrong.
        reason: &'static str,
    },
    /// A size in the file is beyond what we accept.
    #[error("vmdk {what} too large ({size})")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// The size seen.
        size: u64,
    },
    /// A valid VMDK feature we do not read.
    #[error("unsupported vmdk: {what}")]
    Unsupported {
        /// The feature.
        what: String,
    },
    /// Metadata points somewhere impossible (past the end of the file, overlapping the header).
    #[error("corrupt vmdk {file}: {what} (at byte {offset})")]
    Corrupt {
        /// Extent file name.
        file: String,
        /// What is wrong.
        what: &'static str,
        /// File offset involved.
        offset: u64,
    },
}

impl From<VmdkError> for Error {
    fn from(e: VmdkError) -> Self {
        Error::new(ErrorCode::SourceDiskFormat, "invalid vmdk").with_source(e)
    }
}

/// Opens the files a descriptor names (extents, parents) as random-access byte transports.
///
/// [`DirOpener`] reads them next to a local descriptor; a vSphere source implements this over the
/// datastore's `/folder` HTTPS endpoint.
#[async_trait]
pub trait ExtentOpener: Send + Sync + fmt::Debug {
    /// Open `name` as written in the descriptor (relative to the descriptor's folder).
    ///
    /// # Errors
    /// [`ErrorCode::SourceFileMissing`] when the file does not exist; transport errors.
    async fn open(&self, name: &str) -> Result<Box<dyn BlockTransport>>;

    /// An opener for the files the descriptor `name` names (a delta's parent names its own
    /// extents relative to its own folder), and the name to open it by there. `None`: this
    /// opener and `name` as they are.
    fn descend(&self, name: &str) -> Option<(Arc<dyn ExtentOpener>, String)> {
        let _ = name;
        None
    }
}

/// What [`inspect_vmdk`] learns without opening every extent: enough for an inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmdkInfo {
    /// Virtual size in bytes.
    pub capacity_bytes: u64,
    /// The descriptor (synthesised for a sparse file without an embedded one).
    pub descriptor: Descriptor,
}

impl VmdkInfo {
    /// Raw device mapping.
    pub fn is_rdm(&self) -> bool {
        self.descriptor.create_type.is_rdm()
            || self.descriptor.extents.iter().any(|e| matches!(e.kind, ExtentType::VmfsRdm | ExtentType::VmfsRaw))
    }
}

/// Open a VMDK (text descriptor or monolithic sparse / streamOptimized file) at `path`, with its
/// extents and parents resolved next to it. This is what `vmigrate copy x.vmdk out.raw` calls.
///
/// # Errors
/// [`ErrorCode::SourceFileMissing`] for a missing descriptor or extent,
/// [`ErrorCode::SourceDiskFormat`] for anything malformed or unsupported (RDM, vmfsSparse, seSparse).
///
/// # Cancel safety
/// Cancel-safe: dropping the future leaves nothing behind.
pub async fn open_vmdk(path: &Path) -> Result<Box<dyn BlockTransport>> {
    Ok(Box::new(VmdkDisk::open_path(path).await?))
}

/// Open the VMDK named `name` through `opener`, detecting whether it is a text descriptor or a
/// sparse file with an embedded descriptor.
///
/// # Errors
/// As [`open_vmdk`].
pub async fn open_vmdk_at(name: &str, opener: Arc<dyn ExtentOpener>) -> Result<Box<dyn BlockTransport>> {
    Ok(Box::new(VmdkDisk::open(name, opener).await?))
}

/// Open a VMDK from its text descriptor (already fetched) and an opener for its extents.
///
/// # Errors
/// As [`open_vmdk`].
pub async fn open_vmdk_with(descriptor: &[u8], opener: Arc<dyn ExtentOpener>) -> Result<Box<dyn BlockTransport>> {
    let d = parse_descriptor(descriptor).map_err(Error::from)?;
    Ok(Box::new(VmdkDisk::from_descriptor(d, opener, None, 0).await?))
}

/// Read a VMDK's descriptor (and sparse header) to learn its capacity and kind, without opening
/// its extents; works for RDM mapping files too.
///
/// # Errors
/// As [`open_vmdk`] for the descriptor file itself.
pub async fn inspect_vmdk(path: &Path) -> Result<VmdkInfo> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    inspect_vmdk_at(name, &DirOpener::new(dir)?).await
}

/// [`inspect_vmdk`] of the file `name` opened through `opener`.
///
/// # Errors
/// As [`inspect_vmdk`].
pub async fn inspect_vmdk_at(name: &str, opener: &dyn ExtentOpener) -> Result<VmdkInfo> {
    let file: Arc<dyn BlockTransport> = Arc::from(opener.open(name).await?);
    let (descriptor, header) = read_descriptor(name, &file).await?;
    let capacity_bytes = match (&header, descriptor.capacity_bytes()) {
        (Some(h), 0) => h.capacity * SECTOR,
        (_, c) => c,
    };
    Ok(VmdkInfo { capacity_bytes, descriptor })
}

/// Read what a VMDK file starts with: a sparse header (and its embedded descriptor) or a text
/// descriptor.
async fn read_descriptor(name: &str, file: &Arc<dyn BlockTransport>) -> Result<(Descriptor, Option<SparseHeader>)> {
    let size = file.size();
    let head = file.read_at(0, size.min(SparseHeader::LEN as u64) as usize).await?;
    let magic = head.get(0..4).map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    if magic == Some(SPARSE_MAGIC) || magic == Some(COWD_MAGIC) {
        let h = SparseHeader::parse(&head).map_err(Error::from)?;
        let d = if h.descriptor_offset > 0 && h.descriptor_size > 0 {
            let off = h.descriptor_offset * SECTOR;
            let len = h.descriptor_size * SECTOR;
            if off.checked_add(len).is_none_or(|end| end > size) {
                return Err(VmdkError::Corrupt {
                    file: name.to_owned(),
                    what: "embedded descriptor past the end of the file",
                    offset: off,
                }
                .into());
            }
            parse_descriptor(&file.read_at(off, len as usize).await?).map_err(Error::from)?
        } else {
            synthesized_descriptor(name, &h)
        };
        return Ok((d, Some(h)));
    }
    if size > descriptor::MAX_DESCRIPTOR_BYTES as u64 {
        return Err(
            VmdkError::Header { reason: "neither a sparse vmdk nor a descriptor (no KDMV magic, too large)" }.into()
        );
    }
    let text = if size as usize == head.len() { head } else { file.read_at(0, size as usize).await? };
    Ok((parse_descriptor(&text).map_err(Error::from)?, None))
}

fn synthesized_descriptor(name: &str, h: &SparseHeader) -> Descriptor {
    Descriptor {
        version: 1,
        cid: 0,
        parent_cid: descriptor::NO_PARENT_CID,
        create_type: if h.is_compressed() { CreateType::StreamOptimized } else { CreateType::MonolithicSparse },
        parent_file_name_hint: None,
        extents: vec![ExtentLine {
            access: descriptor::Access::ReadWrite,
            sectors: h.capacity,
            kind: ExtentType::Sparse,
            file: Some(name.to_owned()),
            offset_sectors: 0,
        }],
        ddb: Default::default(),
    }
}

/// Where one descriptor extent's bytes come from.
#[derive(Debug)]
enum Backend {
    Flat { file: Arc<dyn BlockTransport>, base: u64 },
    Zero,
    Sparse(Arc<SparseExtent>),
}

#[derive(Debug)]
struct Mapped {
    start: u64,
    len: u64,
    backend: Backend,
}

#[derive(Debug)]
struct DiskInner {
    size: u64,
    descriptor: Descriptor,
    extents: Vec<Mapped>,
    parent: Option<VmdkDisk>,
}

/// A whole VMDK (every extent, and its parents for a delta) as a read-only [`BlockTransport`].
///
/// Clones are cheap and share the extent handles and the grain-table cache; reads on one handle
/// may run concurrently (no lock is held across I/O or decompression).
#[derive(Debug, Clone)]
pub struct VmdkDisk {
    inner: Arc<DiskInner>,
}

impl VmdkDisk {
    /// Open a local VMDK (see [`open_vmdk`]).
    ///
    /// # Errors
    /// As [`open_vmdk`].
    pub async fn open_path(path: &Path) -> Result<VmdkDisk> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::new(ErrorCode::BadUrl, format!("{} is not a vmdk file path", path.display())))?;
        VmdkDisk::open(name, Arc::new(DirOpener::new(dir)?)).await
    }

    /// Open `name` through `opener` (see [`open_vmdk_at`]).
    ///
    /// # Errors
    /// As [`open_vmdk`].
    pub async fn open(name: &str, opener: Arc<dyn ExtentOpener>) -> Result<VmdkDisk> {
        Self::open_depth(name.to_owned(), opener, 0).await
    }

    fn open_depth(
        name: String,
        opener: Arc<dyn ExtentOpener>,
        depth: usize,
    ) -> futures::future::BoxFuture<'static, Result<VmdkDisk>> {
        Box::pin(async move {
            let file: Arc<dyn BlockTransport> = Arc::from(opener.open(&name).await?);
            let (d, header) = read_descriptor(&name, &file).await?;
            let own = header.map(|h| (name.clone(), file, h));
            VmdkDisk::from_descriptor(d, opener, own, depth).await
        })
    }

    async fn from_descriptor(
        d: Descriptor,
        opener: Arc<dyn ExtentOpener>,
        own: Option<(String, Arc<dyn BlockTransport>, SparseHeader)>,
        depth: usize,
    ) -> Result<VmdkDisk> {
        if d.create_type.is_rdm() {
            return Err(
                VmdkError::Unsupported { what: "raw device mapping (the LUN is not in the datastore)".into() }.into()
            );
        }
        let mut extents = Vec::with_capacity(d.extents.len());
        let mut start = 0u64;
        for line in &d.extents {
            let len = line.sectors.checked_mul(SECTOR).ok_or(VmdkError::TooLarge { what: "extent", size: u64::MAX })?;
            let name = line.file.clone().unwrap_or_default();
            let backend = match line.kind {
                ExtentType::Zero => Backend::Zero,
                ExtentType::Flat | ExtentType::Vmfs => {
                    let file: Arc<dyn BlockTransport> = Arc::from(opener.open(&name).await?);
                    let base = line.offset_sectors.saturating_mul(SECTOR);
                    if base.checked_add(len).is_none_or(|end| end > file.size()) {
                        return Err(VmdkError::Corrupt {
                            file: name,
                            what: "flat extent file is shorter than the descriptor says",
                            offset: file.size(),
                        }
                        .into());
                    }
                    Backend::Flat { file, base }
                }
                ExtentType::Sparse => {
                    // An embedded descriptor always describes the file it sits in, whatever
                    // name it gives (files get renamed); errors name the file opened.
                    let (file, h, name) = match &own {
                        Some((own_name, f, h)) if d.extents.len() == 1 => (f.clone(), Some(*h), own_name.clone()),
                        _ => (Arc::from(opener.open(&name).await?) as Arc<dyn BlockTransport>, None, name),
                    };
                    let ext = SparseExtent::open(name.clone(), file, h).await?;
                    if ext.capacity_bytes() < len {
                        return Err(VmdkError::Corrupt {
                            file: name,
                            what: "sparse extent is smaller than the descriptor says",
                            offset: 0,
                        }
                        .into());
                    }
                    Backend::Sparse(Arc::new(ext))
                }
                ExtentType::VmfsRdm | ExtentType::VmfsRaw => {
                    return Err(VmdkError::Unsupported { what: "raw device mapping extents".into() }.into())
                }
                ExtentType::VmfsSparse => {
                    return Err(VmdkError::Unsupported { what: "vmfsSparse (COWD) delta extents".into() }.into())
                }
                ExtentType::SeSparse => return Err(VmdkError::Unsupported { what: "seSparse extents".into() }.into()),
            };
            extents.push(Mapped { start, len, backend });
            start = start.checked_add(len).ok_or(VmdkError::TooLarge { what: "capacity", size: u64::MAX })?;
        }
        if start > header::MAX_CAPACITY_SECTORS * SECTOR {
            return Err(VmdkError::TooLarge { what: "capacity", size: start }.into());
        }
        let parent = if d.has_parent() {
            if depth >= MAX_PARENT_DEPTH {
                return Err(VmdkError::TooLarge { what: "parent chain", size: depth as u64 }.into());
            }
            let hint = d.parent_file_name_hint.clone().unwrap_or_default();
            // The parent's own extents are named relative to the parent's folder.
            let (opener, hint) = opener.descend(&hint).unwrap_or((opener, hint));
            Some(VmdkDisk::open_depth(hint, opener, depth + 1).await?)
        } else {
            None
        };
        tracing::debug!(create_type = ?d.create_type, size = start, extents = extents.len(), "opened vmdk");
        Ok(VmdkDisk { inner: Arc::new(DiskInner { size: start, descriptor: d, extents, parent }) })
    }

    /// The descriptor the disk was opened from.
    pub fn descriptor(&self) -> &Descriptor {
        &self.inner.descriptor
    }

    /// The parent disk of a delta, if any.
    pub fn parent(&self) -> Option<&VmdkDisk> {
        self.inner.parent.as_ref()
    }

    /// Read `len` bytes at `offset` of the parent, zeroes where the parent is smaller or absent.
    async fn read_parent(&self, offset: u64, len: usize) -> Result<Bytes> {
        match &self.inner.parent {
            Some(p) if offset < p.inner.size => {
                let n = (p.inner.size - offset).min(len as u64) as usize;
                let b = p.read_range(offset, n).await?;
                if n == len {
                    return Ok(b);
                }
                let mut out = BytesMut::zeroed(len);
                out[..n].copy_from_slice(&b);
                Ok(out.freeze())
            }
            _ => Ok(Bytes::from(vec![0u8; len])),
        }
    }

    fn read_range(&self, offset: u64, len: usize) -> futures::future::BoxFuture<'_, Result<Bytes>> {
        Box::pin(async move {
            let end = offset + len as u64;
            let mut pieces = Vec::new();
            for m in self.inner.extents.iter().filter(|m| m.start < end && m.start + m.len > offset) {
                let s = offset.max(m.start);
                let e = end.min(m.start + m.len);
                pieces.push(async move {
                    let n = (e - s) as usize;
                    let data = match &m.backend {
                        Backend::Zero => Bytes::from(vec![0u8; n]),
                        Backend::Flat { file, base } => file.read_at(base + (s - m.start), n).await?,
                        Backend::Sparse(x) => x.read(s - m.start, n, self, s).await?,
                    };
                    Ok::<_, Error>((s - offset, data))
                });
            }
            let mut parts = futures::future::try_join_all(pieces).await?;
            if parts.len() == 1 && parts[0].1.len() == len {
                return Ok(parts.swap_remove(0).1);
            }
            let mut out = BytesMut::zeroed(len);
            for (at, data) in parts {
                out[at as usize..at as usize + data.len()].copy_from_slice(&data);
            }
            Ok(out.freeze())
        })
    }

    fn extents_range(&self, offset: u64, len: u64) -> futures::future::BoxFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            let end = offset + len;
            let mut out = Vec::new();
            for m in self.inner.extents.iter().filter(|m| m.start < end && m.start + m.len > offset) {
                let s = offset.max(m.start);
                let e = end.min(m.start + m.len);
                let (part, complete) = match &m.backend {
                    Backend::Zero => (vec![Extent::hole(s, e - s)], true),
                    Backend::Flat { file, base } => {
                        let got = file.extents(base + (s - m.start), e - s, ExtentKind::Allocation).await?;
                        let shifted: Vec<Extent> = got
                            .into_iter()
                            .filter_map(|x| {
                                let xs = x.offset.checked_sub(*base)? + m.start;
                                let xe = (xs + x.length).min(e);
                                (xe > xs && xs >= s).then_some(Extent { offset: xs, length: xe - xs, state: x.state })
                            })
                            .collect();
                        let complete = shifted.last().is_some_and(|x| x.end() == e);
                        (shifted, complete)
                    }
                    Backend::Sparse(x) => {
                        let part = x.extents(s - m.start, e - s).await?;
                        let part: Vec<Extent> =
                            part.into_iter().map(|x| Extent { offset: x.offset + m.start, ..x }).collect();
                        let complete = part.last().is_some_and(|x| x.end() == e);
                        (part, complete)
                    }
                };
                // Holes of a delta disk show the parent through.
                for x in part {
                    if x.state == vmigrate_core::ExtentState::Hole && self.inner.parent.is_some() {
                        out.extend(self.parent_extents(x.offset, x.length).await?);
                    } else {
                        out.push(x);
                    }
                }
                if !complete {
                    break;
                }
            }
            // Keep the answer contiguous from `offset`.
            let mut contiguous = Vec::new();
            let mut at = offset;
            for x in coalesce(out) {
                if x.offset != at {
                    break;
                }
                at = x.end();
                contiguous.push(x);
            }
            if contiguous.is_empty() {
                return Ok(vec![Extent::data(offset, len)]);
            }
            Ok(contiguous)
        })
    }

    async fn parent_extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let Some(p) = &self.inner.parent else { return Ok(vec![Extent::hole(offset, len)]) };
        let mut out = Vec::new();
        let end = offset + len;
        let mut at = offset;
        while at < end {
            if at >= p.inner.size {
                out.push(Extent::hole(at, end - at));
                break;
            }
            let part_end = end.min(p.inner.size);
            let got = p.extents_range(at, part_end - at).await?;
            let Some(last) = got.last().map(Extent::end) else { break };
            out.extend(got);
            if last <= at {
                break;
            }
            at = last;
        }
        Ok(out)
    }
}

#[async_trait]
impl BlockTransport for VmdkDisk {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn max_connections(&self) -> usize {
        8
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        if offset.checked_add(len as u64).is_none_or(|e| e > self.inner.size) {
            return Err(Error::new(
                ErrorCode::OutOfBounds,
                format!("read of {len} bytes at {offset} past the vmdk size {}", self.inner.size),
            ));
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        self.read_range(offset, len).await
    }

    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "the vmdk reader is read-only"))
    }

    fn backing(&self) -> Vec<vmigrate_core::Backing> {
        let mut out = Vec::new();
        for m in &self.inner.extents {
            match &m.backend {
                Backend::Flat { file, .. } => out.extend(file.backing()),
                Backend::Sparse(ext) => out.extend(ext.backing()),
                Backend::Zero => {}
            }
        }
        if let Some(p) = &self.inner.parent {
            out.extend(p.backing());
        }
        out
    }

    fn identity(&self) -> vmigrate_core::SourceIdentity {
        // Every extent and parent file with its modification time: a delta or extent rewritten
        // in place is another source for a checkpoint.
        let mut parts = vec![format!("size={}", self.inner.size)];
        let mut add = |id: vmigrate_core::SourceIdentity| {
            parts.extend(id.parts().filter(|p| !p.starts_with("size=")).map(str::to_owned));
        };
        for m in &self.inner.extents {
            match &m.backend {
                Backend::Flat { file, .. } => add(file.identity()),
                Backend::Sparse(ext) => add(ext.identity()),
                Backend::Zero => {}
            }
        }
        if let Some(p) = &self.inner.parent {
            add(p.identity());
        }
        vmigrate_core::SourceIdentity::of_parts(parts)
    }

    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        let len = len.min(self.inner.size.saturating_sub(offset));
        if len == 0 || kind == ExtentKind::Changed {
            return Ok(vec![Extent::data(offset, len)]);
        }
        self.extents_range(offset, len).await
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
