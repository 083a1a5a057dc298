//! A monolithicSparse VMDK writer, so the demo and tests can make real VMware disks without
//! `qemu-img`.
//!
//! Layout (as VMware and qemu write it): header, embedded descriptor, redundant grain directory
//! and tables, grain directory and tables, then 64 KiB grains appended as data arrives. Grains
//! that would only hold zeroes are never allocated, so the result is as sparse as its data.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use vmigrate_core::{Error, ErrorCode, Result};

use super::header::{SparseHeader, FLAG_NEWLINE_TEST, FLAG_REDUNDANT_GT, MAX_CAPACITY_SECTORS, SECTOR};

const GRAIN_SECTORS: u64 = 128;
const GTES_PER_GT: u64 = 512;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
/// Largest disk the writer makes: its grain tables are kept in memory (4 bytes per 64 KiB).
pub const MAX_WRITER_CAPACITY: u64 = 16 << 40;

/// Writes a monolithicSparse VMDK. Blocking (plain file I/O): call it from a blocking context.
///
/// ```no_run
/// # fn demo() -> vmigrate_core::Result<()> {
/// let mut w = vmigrate_vsphere::vmdk::SparseVmdkWriter::create("disk.vmdk".as_ref(), 1 << 30)?;
/// w.write_at(0, b"boot sector")?;
/// w.finish()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SparseVmdkWriter {
    file: File,
    path: PathBuf,
    header: SparseHeader,
    gtes: Vec<u32>,
    gt_start: u64,
    rgt_start: u64,
    next_sector: u64,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

impl SparseVmdkWriter {
    /// Create (truncate) `path` for a disk of `capacity` bytes (rounded up to 512).
    ///
    /// # Errors
    /// [`ErrorCode::Io`] when the file cannot be created; [`ErrorCode::SourceDiskFormat`] for a
    /// capacity over [`MAX_WRITER_CAPACITY`].
    pub fn create(path: &Path, capacity: u64) -> Result<SparseVmdkWriter> {
        if capacity > MAX_WRITER_CAPACITY {
            return Err(Error::new(
                ErrorCode::SourceDiskFormat,
                format!("capacity {capacity} over the writer's limit"),
            ));
        }
        let sectors = capacity.div_ceil(SECTOR);
        let grains = sectors.div_ceil(GRAIN_SECTORS);
        let gd_entries = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (gd_entries * 4).div_ceil(SECTOR);
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        let rgd = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
        let rgt_start = rgd + gd_sectors;
        let gd = rgt_start + gd_entries * gt_sectors;
        let gt_start = gd + gd_sectors;
        let over_head = (gt_start + gd_entries * gt_sectors).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;
        debug_assert!(sectors <= MAX_CAPACITY_SECTORS);
        let header = SparseHeader {
            version: 1,
            flags: FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GT,
            capacity: sectors,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: DESCRIPTOR_OFFSET,
            descriptor_size: DESCRIPTOR_SECTORS,
            num_gtes_per_gt: GTES_PER_GT as u32,
            rgd_offset: rgd,
            gd_offset: gd,
            over_head,
            unclean_shutdown: false,
            compress_algorithm: 0,
        };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io(path, "creating", e))?;
        file.set_len(over_head * SECTOR).map_err(|e| io(path, "sizing", e))?;
        Ok(SparseVmdkWriter {
            file,
            path: path.to_path_buf(),
            header,
            gtes: vec![0; (gd_entries * GTES_PER_GT) as usize],
            gt_start,
            rgt_start,
            next_sector: over_head,
        })
    }

    /// Virtual size in bytes.
    pub fn capacity(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    /// Write `data` at virtual `offset`. All-zero data over unallocated grains allocates nothing.
    ///
    /// # Errors
    /// [`ErrorCode::OutOfBounds`] past the capacity; [`ErrorCode::Io`] on write failure.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset.checked_add(data.len() as u64).is_none_or(|e| e > self.capacity()) {
            return Err(Error::new(
                ErrorCode::OutOfBounds,
                format!("write of {} bytes at {offset} past the disk size {}", data.len(), self.capacity()),
            ));
        }
        let gb = GRAIN_SECTORS * SECTOR;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let g = (pos / gb) as usize;
            let in_grain = pos % gb;
            let n = ((gb - in_grain) as usize).min(data.len() - done);
            let piece = &data[done..done + n];
            if self.gtes[g] == 0 {
                if piece.iter().all(|b| *b == 0) {
                    done += n;
                    continue;
                }
                let sector = self.next_sector;
                let sector32 = u32::try_from(sector).map_err(|_| {
                    Error::new(ErrorCode::SourceDiskFormat, "sparse vmdk grew past 2 TiB of allocated data")
                })?;
                let mut grain = vec![0u8; gb as usize];
                grain[in_grain as usize..in_grain as usize + n].copy_from_slice(piece);
                self.file.write_all_at(&grain, sector * SECTOR).map_err(|e| io(&self.path, "writing", e))?;
                self.gtes[g] = sector32;
                self.next_sector += GRAIN_SECTORS;
            } else {
                let at = u64::from(self.gtes[g]) * SECTOR + in_grain;
                self.file.write_all_at(piece, at).map_err(|e| io(&self.path, "writing", e))?;
            }
            done += n;
        }
        Ok(())
    }

    /// Write the grain directories, tables, header and descriptor, and sync the file.
    ///
    /// # Errors
    /// [`ErrorCode::Io`] on write or sync failure.
    pub fn finish(self) -> Result<()> {
        let h = self.header;
        let gd_entries = self.gtes.len() as u64 / GTES_PER_GT;
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        let table = |start: u64| -> Vec<u8> {
            (0..gd_entries).flat_map(|i| ((start + i * gt_sectors) as u32).to_le_bytes()).collect()
        };
        let gts: Vec<u8> = self.gtes.iter().flat_map(|g| g.to_le_bytes()).collect();
        let w = |buf: &[u8], sector: u64| {
            self.file.write_all_at(buf, sector * SECTOR).map_err(|e| io(&self.path, "writing metadata of", e))
        };
        w(&table(self.rgt_start), h.rgd_offset)?;
        w(&gts, self.rgt_start)?;
        w(&table(self.gt_start), h.gd_offset)?;
        w(&gts, self.gt_start)?;
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("disk.vmdk");
        let desc = descriptor_text(name, h.capacity);
        if desc.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            return Err(Error::new(ErrorCode::SourceDiskFormat, "file name too long for the embedded descriptor"));
        }
        w(desc.as_bytes(), DESCRIPTOR_OFFSET)?;
        w(&h.to_bytes(), 0)?;
        self.file.sync_all().map_err(|e| io(&self.path, "syncing", e))?;
        tracing::debug!(path = %self.path.display(), capacity = h.capacity * SECTOR, grains = self.gtes.iter().filter(|g| **g != 0).count(), "wrote sparse vmdk");
        Ok(())
    }
}

fn descriptor_text(name: &str, sectors: u64) -> String {
    let cylinders = (sectors / (255 * 63)).clamp(1, 65535);
    // The content id only has to change when the content does; derive it from the size.
    let cid = (sectors as u32) ^ 0x5f3a_9c21;
    let name = name.replace('"', "_");
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\n\n\
         # Extent description\nRW {sectors} SPARSE \"{name}\"\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\nddb.adapterType = \"lsilogic\"\n"
    )
}

/// Write a whole monolithicSparse VMDK from `(offset, bytes)` chunks in one call.
///
/// # Errors
/// As [`SparseVmdkWriter::create`] and [`SparseVmdkWriter::write_at`].
pub fn write_monolithic_sparse<'a>(
    path: &Path,
    capacity: u64,
    chunks: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<()> {
    let mut w = SparseVmdkWriter::create(path, capacity)?;
    for (off, data) in chunks {
        w.write_at(off, data)?;
    }
    w.finish()
}
