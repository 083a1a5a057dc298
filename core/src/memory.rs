//! An in-memory block transport: a real implementation used by tests, examples and benchmarks.
//!
//! It keeps the bytes in one shared buffer and tracks which 4 KiB blocks were ever written, so
//! [`extents`](crate::BlockTransport::extents) answers data/hole like a sparse file would and a
//! copy into it can be checked for sparseness. Clones made by
//! [`try_clone`](crate::BlockTransport::try_clone) share the same storage, as connections to the
//! same NBD export do.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, ErrorCode, Result};
use crate::transport::{coalesce, BlockTransport, Extent, ExtentKind};

/// Allocation granularity of the in-memory transport.
const BLOCK: u64 = 4096;

#[derive(Debug)]
struct Inner {
    data: Vec<u8>,
    /// One flag per [`BLOCK`]: whether the block is allocated.
    allocated: Vec<bool>,
}

/// A [`BlockTransport`] over bytes in memory; see the module documentation.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    inner: Arc<RwLock<Inner>>,
    size: u64,
    zero_initialized: bool,
}

impl MemoryTransport {
    /// An all-hole disk of `size` bytes that reports itself zero-initialised.
    pub fn new(size: u64) -> Self {
        let blocks = size.div_ceil(BLOCK) as usize;
        let data = vec![0u8; usize::try_from(size).expect("in-memory disk must fit in memory")];
        MemoryTransport {
            inner: Arc::new(RwLock::new(Inner { data, allocated: vec![false; blocks] })),
            size,
            zero_initialized: true,
        }
    }

    /// A fully allocated disk holding `bytes`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        let data: Vec<u8> = bytes.into();
        let size = data.len() as u64;
        let blocks = size.div_ceil(BLOCK) as usize;
        MemoryTransport {
            inner: Arc::new(RwLock::new(Inner { data, allocated: vec![true; blocks] })),
            size,
            zero_initialized: false,
        }
    }

    /// A copy of the whole content.
    pub fn contents(&self) -> Vec<u8> {
        self.read_inner().data.clone()
    }

    /// Bytes in allocated blocks: how sparse a copy into this transport stayed.
    pub fn allocated_bytes(&self) -> u64 {
        let inner = self.read_inner();
        let n = inner.allocated.iter().filter(|a| **a).count() as u64;
        (n * BLOCK).min(self.size)
    }

    /// Mark `[offset, offset + len)` unallocated (reads as zeroes): builds sparse test sources.
    pub fn punch(&self, offset: u64, len: u64) {
        let mut inner = self.write_inner();
        zero_range(&mut inner, offset, len.min(self.size.saturating_sub(offset)));
    }

    fn read_inner(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the bytes inconsistent in a way that
        // matters more than the panic itself; keep serving.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_inner(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::new(
                ErrorCode::OutOfBounds,
                format!("memory request {offset}+{len} past size {}", self.size),
            )),
        }
    }
}

fn zero_range(inner: &mut Inner, offset: u64, len: u64) {
    let (start, end) = (offset as usize, (offset + len) as usize);
    inner.data[start..end].fill(0);
    // Deallocate only whole blocks; partial edges stay allocated (and now hold zeroes).
    let first = offset.div_ceil(BLOCK);
    let last = (offset + len) / BLOCK;
    let size_blocks = inner.allocated.len() as u64;
    let last = if offset + len == inner.data.len() as u64 { size_blocks } else { last };
    for b in first..last {
        inner.allocated[b as usize] = false;
    }
}

#[async_trait]
impl BlockTransport for MemoryTransport {
    fn size(&self) -> u64 {
        self.size
    }

    fn max_connections(&self) -> usize {
        64
    }

    fn is_zero_initialized(&self) -> bool {
        self.zero_initialized
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.check(offset, len as u64)?;
        let inner = self.read_inner();
        Ok(Bytes::copy_from_slice(&inner.data[offset as usize..offset as usize + len]))
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        self.check(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let mut inner = self.write_inner();
        inner.data[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
        let first = offset / BLOCK;
        let last = (offset + data.len() as u64).div_ceil(BLOCK);
        for b in first..last {
            inner.allocated[b as usize] = true;
        }
        Ok(())
    }

    async fn zero(&self, offset: u64, len: u64) -> Result<bool> {
        self.check(offset, len)?;
        let mut inner = self.write_inner();
        zero_range(&mut inner, offset, len);
        Ok(true)
    }

    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        self.check(offset, len)?;
        if kind == ExtentKind::Changed || len == 0 {
            return Ok(vec![Extent::data(offset, len)]);
        }
        let inner = self.read_inner();
        let end = offset + len;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let b = pos / BLOCK;
            let block_end = ((b + 1) * BLOCK).min(end);
            let e = if inner.allocated[b as usize] {
                Extent::data(pos, block_end - pos)
            } else {
                Extent::hole(pos, block_end - pos)
            };
            out.push(e);
            pos = block_end;
        }
        Ok(coalesce(out))
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tracks_allocation_and_content() {
        let m = MemoryTransport::new(5 * BLOCK + 100);
        assert!(m.is_zero_initialized());
        m.write_at(BLOCK + 10, Bytes::from_static(b"hello")).await.expect("write");
        let ext = m.extents(0, m.size(), ExtentKind::Allocation).await.expect("extents");
        assert_eq!(
            ext,
            vec![Extent::hole(0, BLOCK), Extent::data(BLOCK, BLOCK), Extent::hole(2 * BLOCK, 3 * BLOCK + 100)]
        );
        assert_eq!(&m.read_at(BLOCK + 10, 5).await.expect("read")[..], b"hello");
        let c = m.try_clone().await.expect("clone");
        assert!(c.zero(BLOCK, BLOCK).await.expect("zero"));
        assert_eq!(m.allocated_bytes(), 0);
        assert_eq!(m.contents(), vec![0u8; (5 * BLOCK + 100) as usize]);
        let err = m.read_at(m.size() - 1, 2).await.expect_err("oob");
        assert_eq!(err.code(), ErrorCode::OutOfBounds);
    }
}
