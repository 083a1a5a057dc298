//! The hosted sparse extent header (`KDMV`), and the markers of streamOptimized files.
//!
//! ```text
//! off size field                off size field
//!   0  4   magic "KDMV"          44  4   numGTEsPerGT
//!   4  4   version (1..=3)       48  8   rgdOffset (sectors)
//!   8  4   flags                 56  8   gdOffset  (sectors, or GD_AT_END)
//!  12  8   capacity (sectors)    64  8   overHead  (sectors)
//!  20  8   grainSize (sectors)   72  1   uncleanShutdown
//!  28  8   descriptorOffset      73  4   "\n \r\n" newline check
//!  36  8   descriptorSize        77  2   compressAlgorithm
//! ```
//! All fields are little-endian. The parse is pure and bounds every size it returns, so callers
//! may allocate from the header's numbers.

use super::VmdkError;

/// Sector size every VMDK offset is counted in.
pub const SECTOR: u64 = 512;
/// `KDMV` read as a little-endian u32.
pub const SPARSE_MAGIC: u32 = 0x564d_444b;
/// `COWD`: the ESXi vmfsSparse format, which we do not read.
pub const COWD_MAGIC: u32 = 0x4457_4f43;
/// gdOffset of a streamOptimized file whose grain directory is in the footer.
pub const GD_AT_END: u64 = 0xffff_ffff_ffff_ffff;
/// Flag: the newline check bytes are valid.
pub const FLAG_NEWLINE_TEST: u32 = 1 << 0;
/// Flag: a redundant grain directory exists.
pub const FLAG_REDUNDANT_GT: u32 = 1 << 1;
/// Flag: grain table entry 1 means "a grain of zeroes".
pub const FLAG_ZERO_GRAIN_GTE: u32 = 1 << 2;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag: the file has markers (streamOptimized).
pub const FLAG_MARKERS: u32 = 1 << 17;
/// compressAlgorithm: deflate.
pub const COMPRESSION_DEFLATE: u16 = 1;
/// Largest virtual size we accept: 64 TiB (vSphere's limit is 62 TiB).
pub const MAX_CAPACITY_SECTORS: u64 = (64u64 << 40) / SECTOR;
/// Largest grain: 32 MiB (VMware writes 64 KiB).
pub const MAX_GRAIN_SECTORS: u64 = 65_536;
/// Largest grain table (VMware writes 512 entries).
pub const MAX_GTES_PER_GT: u32 = 65_536;
/// Largest grain directory we load (64 MiB of entries).
pub const MAX_GD_ENTRIES: u64 = 16 << 20;

/// A parsed and bounds-checked sparse header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// Flags (`FLAG_*`).
    pub flags: u32,
    /// Virtual size of this extent in sectors.
    pub capacity: u64,
    /// Grain size in sectors (a power of two).
    pub grain_size: u64,
    /// Embedded descriptor offset in sectors (0: none).
    pub descriptor_offset: u64,
    /// Embedded descriptor size in sectors.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Redundant grain directory offset in sectors.
    pub rgd_offset: u64,
    /// Grain directory offset in sectors, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub over_head: u64,
    /// The file was not closed cleanly.
    pub unclean_shutdown: bool,
    /// 0 none, 1 deflate.
    pub compress_algorithm: u16,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

impl SparseHeader {
    /// Size of the header on disk.
    pub const LEN: usize = 512;

    /// Parse and validate the first 512 bytes of a sparse extent.
    ///
    /// # Errors
    /// [`VmdkError::Header`] for a short buffer, a wrong magic, an unknown version or
    /// compression, or sizes outside the bounds above.
    pub fn parse(b: &[u8]) -> Result<SparseHeader, VmdkError> {
        let err = |reason| VmdkError::Header { reason };
        if b.len() < 79 {
            return Err(err("sparse header is truncated"));
        }
        match u32_at(b, 0) {
            SPARSE_MAGIC => {}
            COWD_MAGIC => return Err(VmdkError::Unsupported { what: "vmfsSparse (COWD) extents".into() }),
            _ => return Err(err("bad magic (not KDMV)")),
        }
        let h = SparseHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_size: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_size: u64_at(b, 36),
            num_gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            over_head: u64_at(b, 64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<(), VmdkError> {
        let err = |reason| VmdkError::Header { reason };
        if !(1..=3).contains(&self.version) {
            return Err(err("unsupported sparse version"));
        }
        if self.capacity > MAX_CAPACITY_SECTORS {
            return Err(VmdkError::TooLarge { what: "capacity", size: self.capacity.saturating_mul(SECTOR) });
        }
        if self.grain_size == 0 || !self.grain_size.is_power_of_two() || self.grain_size > MAX_GRAIN_SECTORS {
            return Err(err("grain size is not a power of two up to 32 MiB"));
        }
        if self.num_gtes_per_gt == 0 || self.num_gtes_per_gt > MAX_GTES_PER_GT {
            return Err(err("bad number of entries per grain table"));
        }
        if self.gd_entries() > MAX_GD_ENTRIES {
            return Err(VmdkError::TooLarge { what: "grain directory", size: self.gd_entries() });
        }
        if self.descriptor_size > (super::descriptor::MAX_DESCRIPTOR_BYTES as u64) / SECTOR {
            return Err(VmdkError::TooLarge { what: "embedded descriptor", size: self.descriptor_size * SECTOR });
        }
        if self.compress_algorithm > COMPRESSION_DEFLATE && self.flags & FLAG_COMPRESSED != 0 {
            return Err(VmdkError::Unsupported { what: format!("compression algorithm {}", self.compress_algorithm) });
        }
        if self.gd_offset == 0 && self.capacity > 0 {
            return Err(err("grain directory offset is zero"));
        }
        Ok(())
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_size * SECTOR
    }

    /// Bytes of virtual disk one grain table covers.
    pub fn gt_coverage(&self) -> u64 {
        self.grain_bytes() * u64::from(self.num_gtes_per_gt)
    }

    /// Number of grain directory entries for the capacity.
    pub fn gd_entries(&self) -> u64 {
        let grains = self.capacity.div_ceil(self.grain_size);
        grains.div_ceil(u64::from(self.num_gtes_per_gt))
    }

    /// Grains are deflate-compressed (streamOptimized). Decided by compressAlgorithm, as qemu-img
    /// does, so both read a file the same way; [`SparseHeader::flags_disagree`] refuses the files
    /// where the flags say otherwise and the two readers would part.
    pub fn is_compressed(&self) -> bool {
        self.compress_algorithm == COMPRESSION_DEFLATE
    }

    /// Why this (effective) header's flags disagree with how its grains are stored, or `None`.
    ///
    /// A compressed-flag without deflate means the grains hold markers and deflate data that a
    /// plain read would copy as disk bytes; markers without compression, or compression without
    /// markers, likewise make the grain offsets point at something other than what is read there.
    /// qemu-img either refuses these files or reads such bytes as data: we refuse.
    pub fn flags_disagree(&self) -> Option<&'static str> {
        let flag = self.flags & FLAG_COMPRESSED != 0;
        if flag && !self.is_compressed() {
            return Some("the compressed flag is set but compressAlgorithm is not deflate");
        }
        if self.has_markers() && !self.is_compressed() {
            return Some("the markers flag is set but the grains are not compressed");
        }
        if self.is_compressed() && !self.has_markers() {
            return Some("the grains are compressed but the markers flag is clear");
        }
        None
    }

    /// Grains are preceded by markers.
    pub fn has_markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Serialize (used by the writer).
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(&SPARSE_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.over_head.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        b[73..77].copy_from_slice(b"\n \r\n");
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }
}

/// Marker types of streamOptimized files.
pub mod marker {
    /// End of stream.
    pub const EOS: u32 = 0;
    /// A grain table follows.
    pub const GT: u32 = 1;
    /// The grain directory follows.
    pub const GD: u32 = 2;
    /// The footer (a copy of the header with the real gdOffset) follows.
    pub const FOOTER: u32 = 3;
}

/// A streamOptimized marker: a grain marker (`size > 0`: LBA and compressed size) or a metadata
/// marker (`size == 0`: sector count and type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// LBA of a grain, or the number of metadata sectors that follow.
    pub value: u64,
    /// Compressed size of a grain; 0 for metadata markers.
    pub size: u32,
    /// Metadata marker type (meaningless for grain markers).
    pub kind: u32,
}

impl Marker {
    /// Bytes of a grain marker before the compressed data.
    pub const GRAIN_HEADER: usize = 12;

    /// Parse a marker from at least 16 bytes.
    ///
    /// # Errors
    /// [`VmdkError::Header`] when the buffer is shorter than 16 bytes.
    pub fn parse(b: &[u8]) -> Result<Marker, VmdkError> {
        if b.len() < 16 {
            return Err(VmdkError::Header { reason: "marker is truncated" });
        }
        Ok(Marker { value: u64_at(b, 0), size: u32_at(b, 8), kind: u32_at(b, 12) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SparseHeader {
        SparseHeader {
            version: 1,
            flags: FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GT,
            capacity: 2048 * 1024,
            grain_size: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            num_gtes_per_gt: 512,
            rgd_offset: 21,
            gd_offset: 100,
            over_head: 256,
            unclean_shutdown: false,
            compress_algorithm: 0,
        }
    }

    #[test]
    fn round_trips_and_bounds() {
        let h = header();
        assert_eq!(SparseHeader::parse(&h.to_bytes()), Ok(h));
        assert_eq!(h.gd_entries(), 32);
        let mut b = h.to_bytes();
        b[0] = b'X';
        assert!(matches!(SparseHeader::parse(&b), Err(VmdkError::Header { .. })));
        assert!(SparseHeader::parse(&h.to_bytes()[..40]).is_err());
        let bad = SparseHeader { grain_size: 100, ..h };
        assert!(SparseHeader::parse(&bad.to_bytes()).is_err());
        let huge = SparseHeader { capacity: u64::MAX / 2, ..h };
        assert!(matches!(SparseHeader::parse(&huge.to_bytes()), Err(VmdkError::TooLarge { .. })));
        let tiny_gt = SparseHeader { num_gtes_per_gt: 1, grain_size: 1, capacity: MAX_CAPACITY_SECTORS, ..h };
        assert!(matches!(SparseHeader::parse(&tiny_gt.to_bytes()), Err(VmdkError::TooLarge { .. })));
    }
}
