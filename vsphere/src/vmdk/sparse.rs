//! Hosted sparse extents (`KDMV`): plain (monolithicSparse, twoGbMaxExtentSparse) and
//! streamOptimized (deflate-compressed grains behind markers, grain directory in the footer).
//!
//! The grain directory is read at open; grain tables are read on first use and cached as
//! `Arc<[u32]>` under a byte budget. No lock is held across I/O or decompression, so concurrent
//! reads on one handle proceed in parallel. Compressed grains are inflated on the blocking pool,
//! straight into the read's output buffer: one task per read (the engine keeps several reads in
//! flight, which is where the parallelism comes from), no buffer per grain.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use vmigrate_core::buf::BufPool;
use vmigrate_core::{BlockTransport, Error, Extent, Result};

use super::header::{marker, Marker, SparseHeader, FLAG_ZERO_GRAIN_GTE, GD_AT_END, SECTOR};
use super::{VmdkDisk, VmdkError};

/// Cached grain tables beyond this many bytes are dropped (64 MiB covers 1 TiB of 64 KiB grains).
const GT_CACHE_BYTES: usize = 64 << 20;
/// Most grain tables one `extents` call loads before answering short.
const EXTENTS_GT_LIMIT: u64 = 64;
/// Largest span read in one request when fetching a run of compressed grains.
const MAX_COMPRESSED_SPAN: u64 = 64 << 20;

/// What a grain holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grain {
    /// Not allocated: zeroes, or the parent's data for a delta.
    Unallocated,
    /// Allocated as zeroes (GTE 1 with the zero-grain flag).
    Zero,
    /// At this file sector (the grain, or its marker when compressed).
    At(u64),
}

#[derive(Debug, Default)]
struct GtCache {
    tables: HashMap<u64, Arc<[u32]>>,
    bytes: usize,
}

/// One sparse extent file.
#[derive(Debug)]
pub(super) struct SparseExtent {
    name: String,
    file: Arc<dyn BlockTransport>,
    file_size: u64,
    h: SparseHeader,
    gd: Vec<u32>,
    cache: Mutex<GtCache>,
    /// Page-aligned, reused output buffers for reads assembled from several grains.
    pool: Arc<BufPool>,
}

/// A compressed grain fetched for a read: where its bytes go and its deflate stream.
struct CompressedGrain {
    at: usize,
    len: usize,
    in_grain: usize,
    grain_len: usize,
    marker_off: u64,
    data: Bytes,
}

/// One piece of a read, in virtual order.
enum Seg {
    Zero,
    Parent { at: usize, len: usize, virt: u64 },
    Raw { at: usize, len: usize, file_off: u64 },
    Compressed { at: usize, len: usize, marker_off: u64, in_grain: usize, lba: u64, grain_len: usize },
}

impl SparseExtent {
    /// What the extent file is (see [`BlockTransport::backing`]).
    pub(super) fn backing(&self) -> Vec<vmigrate_core::Backing> {
        self.file.backing()
    }
    /// What the extent file is, with its modification time (see [`BlockTransport::identity`]).
    pub(super) fn identity(&self) -> vmigrate_core::SourceIdentity {
        self.file.identity()
    }
    /// Open an extent; `header` when the caller already parsed the first sector.
    pub(super) async fn open(
        name: String,
        file: Arc<dyn BlockTransport>,
        header: Option<SparseHeader>,
    ) -> Result<SparseExtent> {
        let file_size = file.size();
        let corrupt = |what, offset| VmdkError::Corrupt { file: name.clone(), what, offset };
        let mut h = match header {
            Some(h) => h,
            None => {
                if file_size < SparseHeader::LEN as u64 {
                    return Err(VmdkError::Header { reason: "sparse header is truncated" }.into());
                }
                SparseHeader::parse(&file.read_at(0, SparseHeader::LEN).await?).map_err(Error::from)?
            }
        };
        if h.gd_offset == GD_AT_END {
            // streamOptimized: footer marker, footer (a header with the real gdOffset), EOS.
            if file_size < 3 * SECTOR + SparseHeader::LEN as u64 {
                return Err(corrupt("file too short for a stream footer", file_size).into());
            }
            let tail = file.read_at(file_size - 3 * SECTOR, 3 * SECTOR as usize).await?;
            let fm = Marker::parse(&tail[..16]).map_err(Error::from)?;
            let eos = Marker::parse(&tail[1024..1040]).map_err(Error::from)?;
            if fm.size != 0 || fm.kind != marker::FOOTER || eos.size != 0 || eos.kind != marker::EOS {
                return Err(corrupt("missing stream footer", file_size - 3 * SECTOR).into());
            }
            let footer = SparseHeader::parse(&tail[512..1024]).map_err(Error::from)?;
            if footer.gd_offset == GD_AT_END || footer.capacity != h.capacity || footer.grain_size != h.grain_size {
                return Err(corrupt("stream footer disagrees with the header", file_size - 2 * SECTOR).into());
            }
            h = footer;
        }
        if let Some(what) = h.flags_disagree() {
            // The flags field of the header in effect (the footer's for a stream).
            return Err(corrupt(what, 8).into());
        }
        let entries = h.gd_entries();
        let gd_off = h.gd_offset.checked_mul(SECTOR).ok_or_else(|| corrupt("grain directory offset overflows", 0))?;
        let gd_bytes = entries * 4;
        if gd_off.checked_add(gd_bytes).is_none_or(|e| e > file_size) {
            return Err(corrupt("grain directory past the end of the file", gd_off).into());
        }
        let raw = if gd_bytes == 0 { Bytes::new() } else { file.read_at(gd_off, gd_bytes as usize).await? };
        let gd: Vec<u32> = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tracing::debug!(
            name,
            capacity = h.capacity * SECTOR,
            grain = h.grain_bytes(),
            compressed = h.is_compressed(),
            "opened sparse extent"
        );
        Ok(SparseExtent { name, file, file_size, h, gd, cache: Mutex::new(GtCache::default()), pool: BufPool::new() })
    }

    pub(super) fn capacity_bytes(&self) -> u64 {
        self.h.capacity * SECTOR
    }

    fn corrupt(&self, what: &'static str, offset: u64) -> Error {
        VmdkError::Corrupt { file: self.name.clone(), what, offset }.into()
    }

    async fn table(&self, gd_index: usize) -> Result<Option<Arc<[u32]>>> {
        let sector = u64::from(self.gd[gd_index]);
        if sector == 0 {
            return Ok(None);
        }
        if let Some(t) = self.lock().tables.get(&sector) {
            return Ok(Some(t.clone()));
        }
        let n = self.h.num_gtes_per_gt as usize;
        let off = sector * SECTOR;
        if off + (n as u64) * 4 > self.file_size {
            return Err(self.corrupt("grain table past the end of the file", off));
        }
        let raw = self.file.read_at(off, n * 4).await?;
        let t: Arc<[u32]> = raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut cache = self.lock();
        if cache.bytes + n * 4 > GT_CACHE_BYTES {
            cache.tables.clear();
            cache.bytes = 0;
        }
        if cache.tables.insert(sector, t.clone()).is_none() {
            cache.bytes += n * 4;
        }
        Ok(Some(t))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GtCache> {
        // A panic while holding this lock cannot leave the cache inconsistent (inserts are
        // single calls), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn grain(&self, g: u64) -> Result<Grain> {
        let per = u64::from(self.h.num_gtes_per_gt);
        let gdi = (g / per) as usize;
        if gdi >= self.gd.len() {
            return Err(self.corrupt("grain beyond the grain directory", g));
        }
        let Some(t) = self.table(gdi).await? else { return Ok(Grain::Unallocated) };
        let gte = u64::from(t[(g % per) as usize]);
        Ok(match gte {
            0 => Grain::Unallocated,
            1 if self.h.flags & FLAG_ZERO_GRAIN_GTE != 0 => Grain::Zero,
            s => {
                let off = s * SECTOR;
                if off >= self.file_size || s < 1 {
                    return Err(self.corrupt("grain table entry points past the end of the file", off));
                }
                Grain::At(s)
            }
        })
    }

    /// Read `len` bytes at extent offset `off`; `disk`/`virt` locate the parent for delta holes.
    pub(super) async fn read(&self, off: u64, len: usize, disk: &VmdkDisk, virt: u64) -> Result<Bytes> {
        let gb = self.h.grain_bytes();
        let compressed = self.h.is_compressed();
        let mut segs: Vec<Seg> = Vec::new();
        let mut pos = off;
        let end = off + len as u64;
        while pos < end {
            let g = pos / gb;
            let in_grain = pos % gb;
            let n = (gb - in_grain).min(end - pos) as usize;
            let at = (pos - off) as usize;
            match self.grain(g).await? {
                Grain::Zero => push_zero(&mut segs),
                Grain::Unallocated if disk.parent().is_some() => match segs.last_mut() {
                    Some(Seg::Parent { len, .. }) => *len += n,
                    _ => segs.push(Seg::Parent { at, len: n, virt: virt + (pos - off) }),
                },
                Grain::Unallocated => push_zero(&mut segs),
                Grain::At(s) if compressed => {
                    let grain_len = (gb.min(self.capacity_bytes() - g * gb)) as usize;
                    segs.push(Seg::Compressed {
                        at,
                        len: n,
                        marker_off: s * SECTOR,
                        in_grain: in_grain as usize,
                        lba: g * self.h.grain_size,
                        grain_len,
                    })
                }
                Grain::At(s) => {
                    let file_off = s * SECTOR + in_grain;
                    if file_off + n as u64 > self.file_size {
                        return Err(self.corrupt("grain extends past the end of the file", file_off));
                    }
                    match segs.last_mut() {
                        Some(Seg::Raw { len, file_off: fo, .. }) if *fo + *len as u64 == file_off => *len += n,
                        _ => segs.push(Seg::Raw { at, len: n, file_off }),
                    }
                }
            }
            pos += n as u64;
        }
        if let [Seg::Raw { len: l, file_off, .. }] = segs.as_slice() {
            return self.file.read_at(*file_off, *l).await;
        }
        let mut out = self.pool.take(len);
        if segs.iter().any(|s| matches!(s, Seg::Zero)) {
            // Pooled buffers are reused, not zeroed; every other segment fills its range.
            out.fill(0);
        }
        let mut jobs = Vec::new();
        let mut compressed_segs = Vec::new();
        for s in segs {
            match s {
                Seg::Zero => {}
                Seg::Parent { at, len, virt } => jobs.push(futures::future::Either::Left(async move {
                    Ok::<_, Error>((at, disk.read_parent(virt, len).await?))
                })),
                Seg::Raw { at, len, file_off } => jobs.push(futures::future::Either::Right(async move {
                    Ok::<_, Error>((at, self.file.read_at(file_off, len).await?))
                })),
                c @ Seg::Compressed { .. } => compressed_segs.push(c),
            }
        }
        let (plain, compressed) =
            futures::future::try_join(futures::future::try_join_all(jobs), self.fetch_compressed(compressed_segs))
                .await?;
        for (at, data) in plain {
            out[at..at + data.len()].copy_from_slice(&data);
        }
        if !compressed.is_empty() {
            let (name, gb) = (self.name.clone(), gb as usize);
            out = tokio::task::spawn_blocking(move || -> Result<_> {
                let mut inflater = Decompress::new(true);
                let mut scratch = Vec::new();
                for c in compressed {
                    let dst = &mut out[c.at..c.at + c.len];
                    inflate_into(&mut inflater, &c.data, gb, c.grain_len, c.in_grain, dst, &mut scratch).map_err(
                        |what| Error::from(VmdkError::Corrupt { file: name.clone(), what, offset: c.marker_off }),
                    )?;
                }
                Ok(out)
            })
            .await
            .map_err(|e| {
                Error::new(vmigrate_core::ErrorCode::Internal, "grain inflate task failed").with_source(e)
            })??;
        }
        Ok(out.freeze())
    }

    /// Fetch the compressed grains: one file read per run of neighbouring markers, each marker
    /// checked against the grain it should hold.
    async fn fetch_compressed(&self, segs: Vec<Seg>) -> Result<Vec<CompressedGrain>> {
        if segs.is_empty() {
            return Ok(Vec::new());
        }
        let gb = self.h.grain_bytes();
        // Worst-case deflate output for a grain, plus the marker header, rounded to sectors.
        let slack = (gb + gb / 1000 + 64 + 12).div_ceil(SECTOR) * SECTOR;
        let mut windows: Vec<(u64, u64, Vec<Seg>)> = Vec::new();
        for s in segs {
            let Seg::Compressed { marker_off, .. } = s else { continue };
            let want_end = (marker_off + slack).min(self.file_size);
            match windows.last_mut() {
                Some((start, end, v)) if marker_off >= *start && want_end.max(*end) - *start <= MAX_COMPRESSED_SPAN => {
                    *end = (*end).max(want_end);
                    v.push(s);
                }
                _ => windows.push((marker_off, want_end, vec![s])),
            }
        }
        let fetched = futures::future::try_join_all(windows.into_iter().map(|(start, end, v)| async move {
            let buf = self.file.read_at(start, (end - start) as usize).await?;
            let mut items = Vec::with_capacity(v.len());
            for s in v {
                let Seg::Compressed { at, len, marker_off, in_grain, lba, grain_len } = s else { continue };
                let rel = (marker_off - start) as usize;
                let m = Marker::parse(buf.get(rel..).unwrap_or_default())
                    .map_err(|_| self.corrupt("grain marker past the end of the file", marker_off))?;
                if m.value != lba {
                    return Err(self.corrupt("grain marker names another sector", marker_off));
                }
                let size = m.size as u64;
                // qemu-img reads at most two grains behind a marker: a larger size is refused there.
                if size == 0 || size > 2 * gb {
                    return Err(self.corrupt("bad compressed grain size", marker_off));
                }
                let data_off = marker_off + Marker::GRAIN_HEADER as u64;
                if data_off + size > self.file_size {
                    return Err(self.corrupt("compressed grain past the end of the file", marker_off));
                }
                let data_rel = rel + Marker::GRAIN_HEADER;
                let data = if data_rel + size as usize <= buf.len() {
                    buf.slice(data_rel..data_rel + size as usize)
                } else {
                    self.file.read_at(data_off, size as usize).await?
                };
                items.push(CompressedGrain { at, len, in_grain, grain_len, marker_off, data });
            }
            Ok::<_, Error>(items)
        }))
        .await?;
        Ok(fetched.into_iter().flatten().collect())
    }

    /// Allocation map of `[off, off + len)` in extent offsets, at grain granularity.
    pub(super) async fn extents(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        let gb = self.h.grain_bytes();
        let coverage = self.h.gt_coverage();
        let end = off + len;
        let limit_end = end.min((off / coverage + EXTENTS_GT_LIMIT) * coverage);
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = off;
        while pos < limit_end {
            let g = pos / gb;
            let n = (gb - pos % gb).min(limit_end - pos);
            let e = match self.grain(g).await? {
                Grain::Unallocated => Extent::hole(pos, n),
                Grain::Zero => Extent::zero(pos, n),
                Grain::At(_) => Extent::data(pos, n),
            };
            match out.last_mut() {
                Some(last) if last.state == e.state && last.end() == e.offset => last.length += e.length,
                _ => out.push(e),
            }
            pos += n;
        }
        Ok(out)
    }
}

fn push_zero(segs: &mut Vec<Seg>) {
    if !matches!(segs.last(), Some(Seg::Zero)) {
        segs.push(Seg::Zero);
    }
}

/// Inflate one zlib-wrapped grain of at most `grain_bytes` and put bytes `[in_grain, in_grain +
/// dst.len())` of it into `dst`. The grain must end exactly and cover at least the `need` bytes of
/// the disk it holds (the last grain of a disk may be shorter). A whole grain goes straight into
/// `dst`; part of one goes through `scratch` (reused between calls).
fn inflate_into(
    d: &mut Decompress,
    data: &[u8],
    grain_bytes: usize,
    need: usize,
    in_grain: usize,
    dst: &mut [u8],
    scratch: &mut Vec<u8>,
) -> std::result::Result<(), &'static str> {
    d.reset(true);
    let whole = in_grain == 0 && dst.len() == grain_bytes;
    if !whole {
        scratch.resize(grain_bytes, 0);
    }
    let out: &mut [u8] = if whole { &mut *dst } else { &mut scratch[..] };
    let status = d.decompress(data, out, FlushDecompress::Finish).map_err(|_| "compressed grain is corrupt")?;
    let produced = d.total_out() as usize;
    match status {
        Status::StreamEnd if produced >= need && produced >= in_grain + dst.len() => {}
        Status::StreamEnd => return Err("compressed grain is shorter than a grain"),
        _ if produced == grain_bytes => return Err("compressed grain is longer than a grain"),
        _ => return Err("compressed grain is truncated"),
    }
    if !whole {
        dst.copy_from_slice(&scratch[in_grain..in_grain + dst.len()]);
    }
    Ok(())
}
