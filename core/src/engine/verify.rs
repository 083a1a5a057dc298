//! Content digests for verification, independent of sparseness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::worker::{open_handles, retry, FutSet};
use super::{BufferBudget, CopyOptions, DIGEST_CHUNK};
use crate::error::{Error, ErrorCode, Result};
use crate::transport::{BlockTransport, ExtentKind, ExtentState};

/// Content digest of `t` over its virtual size: sha256 over the size and the sha256 of every
/// 4 MiB chunk. Chunks the allocation map says read as zeroes are not read, yet hash exactly like
/// read zeroes, so equal content gives equal digests whatever the sparseness.
///
/// # Errors
/// The transport's read/extent errors; [`ErrorCode::Cancelled`] when cancelled.
///
/// # Cancel safety
/// Read-only; dropping the future is harmless.
pub async fn digest(t: &dyn BlockTransport, opts: &CopyOptions, cancel: &CancellationToken) -> Result<String> {
    digest_sized(t, t.size(), opts, cancel).await
}

/// [`digest`] of the first `size` bytes (a target larger than its source).
pub(super) async fn digest_sized(
    t: &dyn BlockTransport,
    size: u64,
    opts: &CopyOptions,
    cancel: &CancellationToken,
) -> Result<String> {
    let chunks = size.div_ceil(DIGEST_CHUNK);
    let hashes: Mutex<Vec<[u8; 32]>> = Mutex::new(vec![[0u8; 32]; chunks as usize]);
    let zero_full: [u8; 32] = Sha256::digest(&vec![0u8; DIGEST_CHUNK as usize][..]).into();
    let budget = opts.buffer_budget.clone().unwrap_or_else(|| BufferBudget::new(opts.max_buffer_bytes));
    let window = opts.work_unit.max(DIGEST_CHUNK) / DIGEST_CHUNK * DIGEST_CHUNK;
    let next = AtomicU64::new(0);
    let handles = open_handles(t, None, opts.connections).await;

    let dw = DigestWork { size, window, zero_full, opts, hashes: &hashes, budget: &budget, next: &next };
    let body = async {
        let mut set: FutSet<'_, Result<()>> = FutSet::new();
        for (h, _) in &handles {
            set.push(dw.worker(h.get()));
        }
        set.drain().await
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::cancelled()),
        r = body => r?,
    }
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    for c in hashes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        h.update(c);
    }
    Ok(hex::encode(h.finalize()))
}

pub(super) struct DigestWork<'a> {
    pub(super) size: u64,
    pub(super) window: u64,
    pub(super) zero_full: [u8; 32],
    pub(super) opts: &'a CopyOptions,
    pub(super) hashes: &'a Mutex<Vec<[u8; 32]>>,
    pub(super) budget: &'a BufferBudget,
    pub(super) next: &'a AtomicU64,
}

impl DigestWork<'_> {
    pub(super) async fn worker(&self, h: &dyn BlockTransport) -> Result<()> {
        let (size, window, zero_full, opts, hashes, budget, next) =
            (self.size, self.window, self.zero_full, self.opts, self.hashes, self.budget, self.next);
        loop {
            let w = next.fetch_add(1, Ordering::Relaxed);
            let start = w * window;
            if start >= size {
                return Ok::<(), Error>(());
            }
            let end = (start + window).min(size);
            // Which chunks of the window read as zeroes.
            let mut zero_chunk = vec![true; ((end - start).div_ceil(DIGEST_CHUNK)) as usize];
            let mut pos = start;
            while pos < end {
                let exts = retry(opts.retries, "extents", || h.extents(pos, end - pos, ExtentKind::Allocation)).await?;
                let mut advanced = false;
                for e in exts {
                    let (a, b) = (e.offset.max(pos), e.end().min(end));
                    if b <= a {
                        continue;
                    }
                    if e.state == ExtentState::Data {
                        for c in (a - start) / DIGEST_CHUNK..=(b - 1 - start) / DIGEST_CHUNK {
                            zero_chunk[c as usize] = false;
                        }
                    }
                    pos = pos.max(b);
                    advanced = true;
                }
                if !advanced {
                    return Err(Error::new(ErrorCode::Internal, format!("no extents answered at {pos}")));
                }
            }
            let mut set: FutSet<'_, Result<()>> = FutSet::new();
            for (i, z) in zero_chunk.iter().enumerate() {
                let off = start + i as u64 * DIGEST_CHUNK;
                let len = (end - off).min(DIGEST_CHUNK) as usize;
                let idx = (off / DIGEST_CHUNK) as usize;
                if *z {
                    let hsh =
                        if len as u64 == DIGEST_CHUNK { zero_full } else { Sha256::digest(&vec![0u8; len][..]).into() };
                    hashes.lock().unwrap_or_else(|p| p.into_inner())[idx] = hsh;
                    continue;
                }
                while set.len() >= 8 {
                    if let Some(r) = set.next().await {
                        r?;
                    }
                }
                set.push(async move {
                    let permit = budget.acquire(len).await;
                    let data = retry(opts.retries, "read", || h.read_at(off, len)).await?;
                    if data.len() != len {
                        return Err(Error::new(ErrorCode::ShortRead, format!("short read at {off}")));
                    }
                    let hsh = tokio::task::spawn_blocking(move || -> [u8; 32] { Sha256::digest(&data[..]).into() })
                        .await
                        .map_err(|e| Error::new(ErrorCode::Internal, "hash task failed").with_source(e))?;
                    drop(permit);
                    hashes.lock().unwrap_or_else(|p| p.into_inner())[idx] = hsh;
                    Ok(())
                });
            }
            set.drain().await?;
        }
    }
}
