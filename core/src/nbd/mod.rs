//! NBD client transport: fixed newstyle handshake, structured replies, `base:allocation` (and
//! optionally `qemu:dirty-bitmap:*`) block status, write zeroes and multi-connection.
//!
//! ```text
//!   read_at / write_at / zero / extents / flush
//!        │  insert cookie → oneshot in the pending map
//!        ▼
//!   ┌──────────┐  request headers + payloads   ┌────────────┐
//!   │ writer   │ ─────────────────────────────>│ NBD server │
//!   │ task     │                               │ (qemu-nbd, │
//!   └──────────┘  simple / structured replies  │  nbdkit)   │
//!   ┌──────────┐ <─────────────────────────────└────────────┘
//!   │ reader   │  cookie → pending entry: data lands straight in the request's buffer
//!   │ task     │  DONE → oneshot completes the caller's future
//!   └──────────┘
//! ```
//!
//! Many requests are in flight on one connection; [`NbdTransport::try_clone`] opens another
//! connection, and [`max_connections`](BlockTransport::max_connections) allows several only when
//! the server advertises `NBD_FLAG_CAN_MULTI_CONN`. Every byte from the server goes through the
//! pure parsers in [`proto`], which are fuzzed. A lost connection fails every pending request
//! with [`ErrorCode::NbdConnect`], a stalled one (no reply within
//! [`request_timeout`](NbdOptions::request_timeout)) with [`ErrorCode::Timeout`]: both are
//! transient, the engine retries, and the handle's next request first opens a new connection
//! (socket, handshake, same export, TLS if it was TLS), up to
//! [`reconnect_attempts`](NbdOptions::reconnect_attempts) times with backoff, then gives up with
//! [`ErrorCode::NbdConnect`]. Writes the server acknowledged on a lost connection but no flush
//! covered may be gone with it: every later [`flush`](BlockTransport::flush) then fails
//! ([`ErrorCode::NbdConnect`]) rather than call them durable. A server that breaks the protocol
//! fails requests with [`ErrorCode::NbdProtocol`] and is not reconnected.
//!
//! ```no_run
//! use vmigrate_core::nbd::NbdTransport;
//! use vmigrate_core::BlockTransport;
//! # async fn demo() -> vmigrate_core::Result<()> {
//! let disk = NbdTransport::connect("nbd+unix:///disk0?socket=/run/nbd.sock").await?;
//! let first = disk.read_at(0, 4096).await?;
//! assert_eq!(first.len(), 4096);
//! # Ok(()) }
//! ```

mod conn;
mod handshake;
mod options;
pub mod proto;
mod reconnect;
mod uri;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::buf::BufPool;
use crate::error::{Error, ErrorCode, Result};
pub use crate::tls::{ClientCertificate, TlsOptions};
use crate::transport::{coalesce, BlockTransport, Extent, ExtentKind};
use conn::{lock_opt, Completion, Conn, Kind};
pub use handshake::handshake;
use handshake::protocol;
pub use options::{ExportInfo, NbdOptions, NbdTls};
use proto::*;
use reconnect::{note_lost_writes, open_timed, reconnectable, Shared};
pub use uri::{parse_uri, parse_uri_tls, NbdAddr, TlsParams, DEFAULT_PORT};

/// Largest single write request: smaller pieces overlap the transfer with the server's writes
/// (measured: docs/perf-notes.md, "Writes to an NBD server").
const WRITE_PIECE: usize = 512 << 10;

/// Largest request the engine is offered ([`BlockTransport::max_request`]): the server copies
/// each read into a buffer of the request's size, and its CPU shares the machine with ours
/// (measured: docs/perf-notes.md, "Request sizes").
const REQUEST_PIECE: usize = 512 << 10;

/// A [`BlockTransport`] over one NBD connection, reopened when it is lost
/// ([`NbdOptions::reconnect_attempts`]).
pub struct NbdTransport {
    shared: Arc<Shared>,
    conn: Mutex<Arc<Conn>>,
    /// Held while reconnecting, so concurrent requests that all saw the loss open one connection.
    reconnecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for NbdTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdTransport")
            .field("addr", &self.shared.addr)
            .field("export", &self.shared.export)
            .field("size", &self.shared.info.size)
            .field("flags", &format_args!("{:#06x}", self.shared.info.flags))
            .finish()
    }
}

fn out_of_bounds(what: &str, offset: u64, len: u64, size: u64) -> Error {
    Error::new(ErrorCode::OutOfBounds, format!("nbd {what} [{offset}, +{len}) beyond export size {size}"))
}

impl NbdTransport {
    /// Connect to an NBD URI (`nbd://host[:port]/export`, `nbd+unix:///export?socket=/path`, or
    /// their TLS forms `nbds://` and `nbds+unix://`, see [`parse_uri_tls`]) with default options.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] for a malformed URI or TLS settings, otherwise as
    /// [`connect_with`](Self::connect_with).
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped connect closes its socket.
    pub async fn connect(uri: &str) -> Result<NbdTransport> {
        Self::connect_uri(uri, NbdOptions::default()).await
    }

    /// [`connect`](Self::connect) with options; the URI's TLS settings replace `opts.tls`.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_uri(uri: &str, mut opts: NbdOptions) -> Result<NbdTransport> {
        let (addr, export, tls) = parse_uri_tls(uri)?;
        if let Some(p) = tls {
            let (p, a) = (p.clone(), addr.clone());
            opts.tls = Some(
                tokio::task::spawn_blocking(move || NbdTls::from_params(&p, &a))
                    .await
                    .map_err(|e| Error::new(ErrorCode::Internal, "reading tls files").with_source(e))??,
            );
        }
        Self::connect_with(addr, &export, opts).await
    }

    /// Connect to `export` at `addr` and negotiate as `opts` says.
    ///
    /// # Errors
    /// [`ErrorCode::NbdConnect`] when the server cannot be reached or hangs up (also on timeout),
    /// [`ErrorCode::NbdRequest`] when it refuses the export, [`ErrorCode::NbdProtocol`] when it
    /// breaks the handshake, [`ErrorCode::NbdTls`] when TLS fails or the server wants TLS that
    /// `opts` does not give.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped connect closes its socket.
    pub async fn connect_with(addr: NbdAddr, export: &str, opts: NbdOptions) -> Result<NbdTransport> {
        let (info, conn) = open_timed(&addr, export, &opts).await?;
        tracing::debug!(%addr, export, size = info.size, flags = info.flags, structured = info.structured,
            go = info.used_go, "nbd connected");
        let pool = BufPool::new();
        let shared = Shared {
            addr,
            export: export.to_owned(),
            opts,
            info,
            pool,
            acks: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
            lost_writes: Mutex::new(None),
            gave_up: Mutex::new(None),
        };
        Ok(NbdTransport::with_conn(Arc::new(shared), conn))
    }

    fn with_conn(shared: Arc<Shared>, conn: Conn) -> NbdTransport {
        let conn = Arc::new(conn);
        shared.register(&conn);
        NbdTransport { shared, conn: Mutex::new(conn), reconnecting: tokio::sync::Mutex::new(()) }
    }

    fn current(&self) -> Arc<Conn> {
        lock_opt(&self.conn).clone()
    }

    /// Send one request on a live connection. A lost or stalled connection fails the request
    /// (transient: the caller retries) and is ended, so the next request reconnects.
    #[allow(clippy::too_many_arguments)] // one field per NBD request header field
    async fn call(
        &self,
        what: &'static str,
        typ: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: Option<Bytes>,
        kind: impl FnOnce(&ExportInfo) -> Kind,
    ) -> Result<Completion> {
        let conn = self.live_conn().await?;
        let flush_covers = self.shared.acks.load(Ordering::Acquire);
        let r = conn.request(what, typ, flags, offset, len, payload, kind(&conn.info)).await;
        match &r {
            Ok(_) if matches!(typ, CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM) => {
                let n = self.shared.acks.fetch_add(1, Ordering::AcqRel) + 1;
                conn.last_ack.fetch_max(n, Ordering::AcqRel);
                // Lost between its reply and now: nobody else may look at this connection again.
                if let Some((_, why)) = conn.dead() {
                    note_lost_writes(&self.shared, &conn, &why);
                }
            }
            Ok(_) if typ == CMD_FLUSH => {
                conn.flushed.fetch_max(flush_covers, Ordering::AcqRel);
            }
            Err(e) if reconnectable(e.code()) => conn.kill(e),
            _ => {}
        }
        r
    }

    /// What the handshake negotiated.
    pub fn info(&self) -> &ExportInfo {
        &self.shared.info
    }

    /// Send `NBD_CMD_DISC` after all queued requests and close the connection. Dropping the
    /// transport does the same without waiting.
    pub async fn close(self) {
        let conn = self.current();
        lock_opt(&conn.tx).take();
        let writer = lock_opt(&conn.writer).take();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }

    fn check_writable(&self, what: &str) -> Result<()> {
        if self.shared.info.has(TF_READ_ONLY) {
            return Err(Error::new(
                ErrorCode::TransportUnsupported,
                format!("nbd {what} refused: export {:?} is read-only", self.shared.export),
            ));
        }
        Ok(())
    }

    fn check_bounds(&self, what: &str, offset: u64, len: u64) -> Result<()> {
        let size = self.shared.info.size;
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(out_of_bounds(what, offset, len, size)),
        }
    }

    /// Read an aligned range that fits one request.
    async fn read_one(&self, offset: u64, len: u32) -> Result<Bytes> {
        let buf = self.shared.pool.take(len as usize);
        let kind = |_: &ExportInfo| Kind::Read { offset, buf, covered: Vec::new(), simple_ok: false };
        match self.call("read", CMD_READ, 0, offset, len, None, kind).await? {
            Completion::Data(b) => Ok(b),
            _ => Err(Error::new(ErrorCode::Internal, "nbd read completed without data")),
        }
    }

    /// Read an aligned range of any length, in parallel pieces.
    async fn read_aligned(&self, offset: u64, len: u64) -> Result<Bytes> {
        let max = u64::from(self.shared.info.max_payload());
        if len <= max {
            return self.read_one(offset, len as u32).await;
        }
        let pieces = (0..len).step_by(max as usize).map(|at| self.read_one(offset + at, (len - at).min(max) as u32));
        let parts = futures::future::try_join_all(pieces).await?;
        let mut out = BytesMut::with_capacity(len as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out.freeze())
    }

    /// Write an aligned range in pieces of at most [`WRITE_PIECE`] (and the maximum payload), all
    /// in flight at once.
    async fn write_aligned(&self, offset: u64, data: Bytes) -> Result<()> {
        let max = (self.shared.info.max_payload() as usize).min(WRITE_PIECE);
        let pieces = (0..data.len()).step_by(max).map(|at| {
            let piece = data.slice(at..(at + max).min(data.len()));
            let len = piece.len() as u32;
            self.call("write", CMD_WRITE, 0, offset + at as u64, len, Some(piece), |_: &ExportInfo| Kind::Other)
        });
        futures::future::try_join_all(pieces).await?;
        Ok(())
    }

    /// Read-modify-write so an unaligned write becomes aligned (servers with a minimum block).
    async fn write_unaligned(&self, offset: u64, data: Bytes) -> Result<()> {
        let min = self.shared.info.min_block();
        let start = offset / min * min;
        let end = (offset + data.len() as u64).div_ceil(min) * min;
        let end = end.min(self.shared.info.size);
        let mut buf = BytesMut::from(&self.read_aligned(start, min.min(end - start)).await?[..]);
        buf.resize((end - start) as usize, 0);
        if end - start > min {
            let tail_start = end - min;
            let tail = self.read_aligned(tail_start, min).await?;
            buf[(tail_start - start) as usize..].copy_from_slice(&tail);
        }
        let at = (offset - start) as usize;
        buf[at..at + data.len()].copy_from_slice(&data);
        self.write_aligned(start, buf.freeze()).await
    }
}

#[async_trait]
impl BlockTransport for NbdTransport {
    fn size(&self) -> u64 {
        self.shared.info.size
    }

    fn backing(&self) -> Vec<crate::transport::Backing> {
        let server = match &self.shared.addr {
            NbdAddr::Unix(p) => match std::fs::metadata(p) {
                Ok(m) => {
                    use std::os::unix::fs::MetadataExt;
                    format!("unix:{}:{}", m.dev(), m.ino())
                }
                Err(_) => format!("unix:{}", p.display()),
            },
            NbdAddr::Tcp { host, port } => {
                let h = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
                let loopback = h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
                format!("tcp:{}:{port}", if loopback { "loopback" } else { h.as_str() })
            }
        };
        vec![crate::transport::Backing::Nbd { server, export: self.shared.export.clone() }]
    }

    fn max_connections(&self) -> usize {
        if self.shared.info.has(TF_CAN_MULTI_CONN) {
            self.shared.opts.connections.max(1)
        } else {
            1
        }
    }

    fn max_request(&self) -> usize {
        (self.shared.info.max_payload() as usize).min(REQUEST_PIECE)
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        let s = &self.shared;
        if let Some(msg) = lock_opt(&s.gave_up).clone() {
            return Err(Error::new(ErrorCode::NbdConnect, msg));
        }
        let (info, conn) = open_timed(&s.addr, &s.export, &s.opts).await?;
        if info.size != s.info.size {
            return Err(protocol(format!("nbd export size changed from {} to {}", s.info.size, info.size)));
        }
        Ok(Box::new(NbdTransport::with_conn(self.shared.clone(), conn)))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.check_bounds("read", offset, len as u64)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let min = self.shared.info.min_block();
        let start = offset / min * min;
        let end = ((offset + len as u64).div_ceil(min) * min).min(self.shared.info.size);
        let data = self.read_aligned(start, end - start).await?;
        let at = (offset - start) as usize;
        Ok(data.slice(at..at + len))
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        self.check_writable("write")?;
        self.check_bounds("write", offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let min = self.shared.info.min_block();
        let end = offset + data.len() as u64;
        // `min` is a power of two (checked when parsed).
        if offset & (min - 1) != 0 || (end & (min - 1) != 0 && end != self.shared.info.size) {
            return self.write_unaligned(offset, data).await;
        }
        self.write_aligned(offset, data).await
    }

    async fn write_runs(&self, runs: Vec<(u64, Bytes)>) -> Result<()> {
        futures::future::try_join_all(runs.into_iter().map(|(offset, data)| self.write_at(offset, data))).await?;
        Ok(())
    }

    async fn zero(&self, offset: u64, len: u64) -> Result<bool> {
        self.check_writable("write zeroes")?;
        self.check_bounds("write zeroes", offset, len)?;
        if !self.shared.info.has(TF_SEND_WRITE_ZEROES) {
            return Ok(false);
        }
        if len == 0 {
            return Ok(true);
        }
        let min = self.shared.info.min_block();
        let end = offset + len;
        let a_start = offset.div_ceil(min) * min;
        let a_end = if end == self.shared.info.size { end } else { end / min * min };
        if a_start >= a_end {
            return Ok(false);
        }
        // Unaligned edges become zero-byte writes; the aligned middle may be punched.
        if a_start > offset {
            self.write_unaligned(offset, Bytes::from(vec![0u8; (a_start - offset) as usize])).await?;
        }
        if end > a_end {
            self.write_unaligned(a_end, Bytes::from(vec![0u8; (end - a_end) as usize])).await?;
        }
        // NO_HOLE stays unset so the server may deallocate. Lengths are u32; keep pieces aligned.
        let max = (1u64 << 30) / min * min;
        let pieces = (a_start..a_end).step_by(max as usize).map(|at| {
            let n = (a_end - at).min(max) as u32;
            self.call("write zeroes", CMD_WRITE_ZEROES, 0, at, n, None, |_: &ExportInfo| Kind::Other)
        });
        futures::future::try_join_all(pieces).await?;
        Ok(true)
    }

    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        self.check_bounds("block status", offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let info = &self.shared.info;
        match kind {
            ExtentKind::Allocation if info.allocation_context.is_none() => return Ok(vec![Extent::data(offset, len)]),
            ExtentKind::Changed if info.dirty_context.is_none() => {
                return Err(Error::new(
                    ErrorCode::TransportUnsupported,
                    "nbd changed extents need NbdOptions::dirty_bitmap",
                ))
            }
            _ => {}
        }
        // Context ids are per connection: take the one the connection in use negotiated.
        let context = move |i: &ExportInfo| match kind {
            ExtentKind::Allocation => i.allocation_context,
            ExtentKind::Changed => i.dirty_context,
        };
        let min = info.min_block();
        let start = offset / min * min;
        let max = u64::from(u32::MAX) / min * min;
        let end = ((offset + len).div_ceil(min) * min).min(info.size).min(start + max);
        let req_len = (end - start) as u32;
        let k = move |i: &ExportInfo| Kind::BlockStatus { context: context(i).unwrap_or(u32::MAX), extents: None };
        let Completion::Extents(descs) =
            self.call("block status", CMD_BLOCK_STATUS, 0, start, req_len, None, k).await?
        else {
            return Err(Error::new(ErrorCode::Internal, "nbd block status completed without extents"));
        };
        let want_end = offset + len;
        let mut out = Vec::with_capacity(descs.len());
        let mut at = start;
        for (n, flags) in descs {
            if n == 0 {
                return Err(protocol("nbd block status extent of length 0"));
            }
            let e_end = (at + u64::from(n)).min(want_end);
            let s = at.max(offset);
            if e_end > s {
                let state = match kind {
                    ExtentKind::Allocation => match flags & (STATE_HOLE | STATE_ZERO) {
                        f if f == STATE_HOLE | STATE_ZERO => crate::ExtentState::Hole,
                        STATE_ZERO => crate::ExtentState::Zero,
                        _ => crate::ExtentState::Data,
                    },
                    // Unchanged ranges are reported as holes: "nothing to copy here".
                    ExtentKind::Changed if flags & STATE_DIRTY != 0 => crate::ExtentState::Data,
                    ExtentKind::Changed => crate::ExtentState::Hole,
                };
                out.push(Extent { offset: s, length: e_end - s, state });
            }
            at += u64::from(n);
            if at >= want_end {
                break;
            }
        }
        if out.is_empty() {
            return Err(protocol("nbd block status covered none of the requested range"));
        }
        Ok(coalesce(out))
    }

    async fn flush(&self) -> Result<()> {
        if !self.shared.info.has(TF_SEND_FLUSH) {
            return Ok(());
        }
        let lost = || lock_opt(&self.shared.lost_writes).clone().map(|m| Error::new(ErrorCode::NbdConnect, m));
        if let Some(e) = lost() {
            return Err(e);
        }
        self.call("flush", CMD_FLUSH, 0, 0, 0, None, |_: &ExportInfo| Kind::Other).await?;
        // Any connection of this export lost with writes no flush covered (a reconnect while
        // this flush waited, or another handle's connection) makes the flush a lie.
        self.shared.check_conns();
        lost().map_or(Ok(()), Err)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
