//! The block transport seam: everything the copy engine reads from or writes to.
//!
//! ```text
//!   local file ─┐                  ┌─ local file / block device
//!   NBD ────────┤   BlockTransport ├─ NBD (qemu-nbd, nbdkit)
//!   HTTP range ─┤ ──── engine ───> ├─ CDI upload stream
//!   VMDK ───────┘                  └─ memory (tests, examples)
//! ```
//!
//! The engine only knows this trait. Capabilities a transport lacks have defaults that mean
//! "not supported" (one connection, no extents = all data, zeroing declined) so a minimal
//! transport is four methods.

use std::fmt::Debug;
use std::os::fd::BorrowedFd;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode, Result};

/// What a range of a disk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExtentState {
    /// Allocated, may hold non-zero bytes: must be read.
    Data,
    /// Allocated but known to read as zeroes: never read, written as a zero request.
    Zero,
    /// Not allocated: reads as zeroes; the target should stay sparse here.
    Hole,
}

impl ExtentState {
    /// Whether the range reads as zeroes without being read.
    pub fn is_zero(self) -> bool {
        !matches!(self, ExtentState::Data)
    }
}

/// A contiguous range with one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extent {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes (never 0 in a well-formed map).
    pub length: u64,
    /// State.
    pub state: ExtentState,
}

impl Extent {
    /// A data extent.
    pub fn data(offset: u64, length: u64) -> Self {
        Extent { offset, length, state: ExtentState::Data }
    }

    /// A hole.
    pub fn hole(offset: u64, length: u64) -> Self {
        Extent { offset, length, state: ExtentState::Hole }
    }

    /// An allocated-zero extent.
    pub fn zero(offset: u64, length: u64) -> Self {
        Extent { offset, length, state: ExtentState::Zero }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Which map [`BlockTransport::extents`] answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExtentKind {
    /// Allocation: data, zero and hole extents (NBD `base:allocation`, SEEK_DATA, grain tables).
    Allocation,
    /// Changed since a reference point (CBT, `qemu:dirty-bitmap`): `Data` means changed.
    Changed,
}

/// What a transport finally reads or writes, so a copy can refuse to copy a disk onto itself
/// whatever the spelling (symlink, hard link, `/proc/self/fd/N`, bind mount, another device
/// node, another URI for one NBD export).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Backing {
    /// A regular file, by device and inode.
    File {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
    },
    /// A block device, by its device number (two nodes for one disk share it).
    BlockDevice {
        /// `st_rdev`.
        rdev: u64,
    },
    /// An NBD export: the server (a loopback address normalised, a Unix socket by device and
    /// inode) and the export name.
    Nbd {
        /// The server, normalised.
        server: String,
        /// The export name.
        export: String,
    },
}

impl Backing {
    /// The backing of an opened (or `stat`ed) local file.
    pub fn of_metadata(m: &std::fs::Metadata) -> Backing {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        if m.file_type().is_block_device() || m.file_type().is_char_device() {
            Backing::BlockDevice { rdev: m.rdev() }
        } else {
            Backing::File { dev: m.dev(), ino: m.ino() }
        }
    }
}

/// What a copy read its bytes from, as a resume checkpoint is bound to it: every file, device or
/// export behind a source (with a file's modification time), its size, and what the source
/// provider adds (a snapshot and change id, a disk's path). Two sources, or one source changed
/// since, have different identities, so a checkpoint of one is never resumed against the other
/// (which would mix the bytes of two disk states and still end "byte-equal" to neither).
///
/// Compared as a whole; the text is for messages and the status file, not for parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceIdentity(String);

impl SourceIdentity {
    /// An identity made of `parts` (sorted and deduplicated, so the order in which a transport
    /// lists its files does not matter).
    pub fn of_parts(parts: impl IntoIterator<Item = String>) -> SourceIdentity {
        let mut parts: Vec<String> = parts.into_iter().collect();
        parts.sort();
        parts.dedup();
        SourceIdentity(parts.join(";"))
    }

    /// The parts this identity is made of.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split(';').filter(|p| !p.is_empty())
    }

    /// This identity with more parts (a provider adds what it knows of the disk).
    #[must_use]
    pub fn with(self, more: impl IntoIterator<Item = String>) -> SourceIdentity {
        let mine: Vec<String> = self.parts().map(str::to_owned).collect();
        SourceIdentity::of_parts(mine.into_iter().chain(more))
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part naming a local file or device (its [`Backing`]) with its modification time:
    /// a file rewritten in place keeps device and inode but not its `mtime`.
    pub fn file_part(m: &std::fs::Metadata) -> String {
        use std::os::unix::fs::MetadataExt;
        format!("{:?}@mtime={}.{:09}", Backing::of_metadata(m), m.mtime(), m.mtime_nsec())
    }
}

impl std::fmt::Display for SourceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A disk-like object the copy engine can read and write at byte offsets.
///
/// # Contract
/// - Offsets and lengths are bytes; requests never cross [`size`](Self::size). Transports with
///   alignment needs (O_DIRECT, 512-byte NBD minimum block) handle unaligned edges themselves.
/// - Requests on one handle may be issued concurrently and complete in any order; the engine never
///   issues overlapping writes at the same time. For more parallelism the engine opens further
///   handles with [`try_clone`](Self::try_clone), up to [`max_connections`](Self::max_connections).
/// - Writes are durable only after [`flush`](Self::flush) returns: a copy that reports success has
///   flushed.
/// - Reads and writes are idempotent: retrying after a transient error is always safe, which is
///   what makes resume work.
/// - Cancellation: every method is cancel-safe in the sense that dropping its future leaves the
///   transport usable, but a dropped write may or may not have reached the target.
/// - Capabilities are asked for, never inferred from a concrete type: the engine knows only this
///   trait. Each optional one has a default meaning "unsupported" (one connection, all data,
///   zeroing declined, no in-kernel copy, no writeback of its own), so a minimal transport or a
///   wrapper never claims one by accident. A wrapper that changes what is read or written keeps
///   the defaults of [`local_fd`](Self::local_fd) and [`copy_from`](Self::copy_from) rather than
///   forwarding them.
#[async_trait]
pub trait BlockTransport: Send + Sync + Debug {
    /// Virtual size in bytes.
    fn size(&self) -> u64;

    /// How many handles may be used in parallel with consistent results (NBD `can_multi_conn`).
    fn max_connections(&self) -> usize {
        1
    }

    /// Whether the whole device is known to read as zeroes before we write (a new sparse file, a
    /// freshly created volume). The engine then skips zeroing holes, like
    /// `nbdcopy --destination-is-zero`.
    fn is_zero_initialized(&self) -> bool {
        false
    }

    /// Largest request the engine should make in one call: a protocol limit, or the size the
    /// transport serves best when that is smaller. The engine never asks for more.
    fn max_request(&self) -> usize {
        32 << 20
    }

    /// Open another independent handle on the same object for a parallel worker.
    ///
    /// # Errors
    /// [`ErrorCode::TransportUnsupported`] when the
    /// transport cannot have a second handle; the engine then uses one.
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>>;

    /// Read exactly `len` bytes at `offset`.
    ///
    /// # Errors
    /// A short read is an error ([`ErrorCode::ShortRead`]), never a
    /// shorter buffer.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes>;

    /// Write `data` at `offset`.
    ///
    /// # Errors
    /// Read-only transports answer
    /// [`ErrorCode::TransportUnsupported`].
    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()>;

    /// Write every `(offset, data)` of `runs` (disjoint ranges): the engine hands over all the
    /// data runs of one read at once, so a transport that queues writes (a local file's writer
    /// thread) or pipelines them (NBD) takes them in one go. The default writes them in turn.
    ///
    /// # Errors
    /// As [`write_at`](Self::write_at); runs before the failing one may have been written.
    async fn write_runs(&self, runs: Vec<(u64, Bytes)>) -> Result<()> {
        for (offset, data) in runs {
            self.write_at(offset, data).await?;
        }
        Ok(())
    }

    /// Make `len` bytes at `offset` read as zeroes, deallocating them if the transport can.
    /// Returns `false` when the transport declines; the engine then writes zero bytes.
    async fn zero(&self, offset: u64, len: u64) -> Result<bool> {
        let _ = (offset, len);
        Ok(false)
    }

    /// The extents of `kind` covering `[offset, offset + len)`, in order and without gaps. The
    /// answer may stop short of `offset + len` (the engine asks again from where it ended) but
    /// must cover at least one byte. The default says "all data".
    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        let _ = kind;
        Ok(vec![Extent::data(offset, len)])
    }

    /// Make every completed write durable.
    async fn flush(&self) -> Result<()>;

    /// The open local file whose byte at every offset is this transport's byte at that offset, so
    /// that another local transport can copy from it inside the kernel
    /// ([`copy_from`](Self::copy_from)). The default (`None`) says there is none.
    fn local_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Whether [`copy_from`](Self::copy_from) can take the bytes of `src` without them passing
    /// through the engine (two local files: `copy_file_range`, which reflinks where the filesystem
    /// can). The engine asks once per copy, before any data moves; the default says no.
    fn can_copy_from(&self, src: &dyn BlockTransport) -> bool {
        let _ = src;
        false
    }

    /// Copy `len` bytes at `offset` of `src` to the same offset of this transport without passing
    /// them through the engine. The engine calls it only when
    /// [`can_copy_from`](Self::can_copy_from) said yes for handles of the same two transports.
    ///
    /// # Errors
    /// [`ErrorCode::TransportUnsupported`] by default;
    /// [`ErrorCode::ShortRead`] when `src` ends early.
    async fn copy_from(&self, src: &dyn BlockTransport, offset: u64, len: u64) -> Result<()> {
        let _ = (src, offset, len);
        Err(Error::new(ErrorCode::TransportUnsupported, format!("{self:?} cannot copy from another transport")))
    }

    /// Told once before the engine writes a whole copy into this transport; `durable` when the
    /// copy ends with a [`flush`](Self::flush). A transport that can schedule the writeback of a
    /// long write itself (a local file: write-behind, or `O_DIRECT` on a block device) arranges it
    /// and answers `true`; the engine then leaves out its own flush after each work unit, which
    /// otherwise keeps the final flush short. The default answers `false`.
    fn prepare_bulk_write(&self, durable: bool) -> bool {
        let _ = durable;
        false
    }

    /// Every file, device or export this transport reads or writes (a VMDK: all its extents and
    /// parents). Empty when unknown (HTTP, memory). Copy front ends refuse a copy whose source
    /// and target share one.
    fn backing(&self) -> Vec<Backing> {
        Vec::new()
    }

    /// What this transport reads, as a resume checkpoint is bound to it ([`SourceIdentity`]):
    /// by default its [`backing`](Self::backing) and size. Transports over local files add each
    /// file's modification time ([`SourceIdentity::file_part`]), so a file changed in place since
    /// is another source; wrappers over such transports forward it.
    fn identity(&self) -> SourceIdentity {
        SourceIdentity::of_parts(
            self.backing().iter().map(|b| format!("{b:?}")).chain([format!("size={}", self.size())]),
        )
    }
}

/// Normalise an extent list: drop empty extents and merge neighbours of the same state.
pub fn coalesce(extents: impl IntoIterator<Item = Extent>) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for e in extents.into_iter().filter(|e| e.length > 0) {
        match out.last_mut() {
            Some(last) if last.state == e.state && last.end() == e.offset => last.length += e.length,
            _ => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_merges_adjacent_same_state() {
        let v = coalesce([
            Extent::data(0, 10),
            Extent::data(10, 5),
            Extent::hole(15, 0),
            Extent::hole(15, 5),
            Extent::zero(20, 5),
            Extent::data(30, 1),
        ]);
        assert_eq!(v, vec![Extent::data(0, 15), Extent::hole(15, 5), Extent::zero(20, 5), Extent::data(30, 1)]);
        assert!(ExtentState::Hole.is_zero() && !ExtentState::Data.is_zero());
    }
}
