//! Shared helpers of the copy-engine tests: deterministic images and a fault-injecting wrapper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use vmigrate_core::{BlockTransport, Error, ErrorCode, Extent, ExtentKind, Result};

/// `have` and `pattern` are the test kit's, shared by every crate's tests.
#[allow(unused_imports)] // not every test binary that includes this module uses both
pub use vmigrate_testkit::peers::{have, pattern};

/// Faults a [`Faulty`] wrapper injects; shared by its clones.
#[derive(Debug, Default)]
pub struct Faults {
    /// Sleep before each read.
    pub read_delay: Option<Duration>,
    /// Reads allowed before every further read fails with a non-transient I/O error.
    pub fail_after_reads: Option<u64>,
    /// Reads that fail with a transient (connection) error first.
    pub transient_reads: AtomicU64,
    /// Return one byte less on reads at this offset.
    pub short_read_at: Option<u64>,
    /// Flip the first byte of every write at this offset.
    pub corrupt_write_at: Option<u64>,
    /// Writes fail with ENOSPC.
    pub enospc: bool,
    /// Reads seen.
    pub reads: AtomicU64,
    /// Bytes read through the wrapper.
    pub bytes_read: AtomicU64,
    /// Flushes seen.
    pub flushes: AtomicU64,
}

/// A transport wrapper injecting [`Faults`].
#[derive(Debug, Clone)]
pub struct Faulty {
    pub inner: Arc<dyn BlockTransport>,
    pub faults: Arc<Faults>,
}

impl Faulty {
    pub fn new(inner: impl BlockTransport + 'static, faults: Faults) -> Self {
        Faulty { inner: Arc::new(inner), faults: Arc::new(faults) }
    }
}

#[async_trait]
impl BlockTransport for Faulty {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn max_connections(&self) -> usize {
        self.inner.max_connections()
    }
    fn is_zero_initialized(&self) -> bool {
        self.inner.is_zero_initialized()
    }
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(Faulty { inner: Arc::from(self.inner.try_clone().await?), faults: self.faults.clone() }))
    }
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let f = &self.faults;
        if let Some(d) = f.read_delay {
            tokio::time::sleep(d).await;
        }
        let n = f.reads.fetch_add(1, Ordering::SeqCst);
        if f.transient_reads.load(Ordering::SeqCst) > 0 {
            f.transient_reads.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::new(ErrorCode::NbdConnect, "injected dropped connection"));
        }
        if matches!(f.fail_after_reads, Some(max) if n >= max) {
            return Err(Error::new(ErrorCode::Io, "injected read failure"));
        }
        let mut b = self.inner.read_at(offset, len).await?;
        if f.short_read_at == Some(offset) {
            b.truncate(len - 1);
        }
        f.bytes_read.fetch_add(b.len() as u64, Ordering::SeqCst);
        Ok(b)
    }
    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        if self.faults.enospc {
            return Err(Error::io("injected write", std::io::Error::from_raw_os_error(28)));
        }
        if self.faults.corrupt_write_at == Some(offset) {
            let mut v = data.to_vec();
            v[0] ^= 0xff;
            return self.inner.write_at(offset, Bytes::from(v)).await;
        }
        self.inner.write_at(offset, data).await
    }
    async fn zero(&self, offset: u64, len: u64) -> Result<bool> {
        self.inner.zero(offset, len).await
    }
    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        self.inner.extents(offset, len, kind).await
    }
    async fn flush(&self) -> Result<()> {
        self.faults.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.flush().await
    }
}
