//! One connection: the writer task, the reply reader task and the pending map between them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::handshake::protocol;
use super::proto::*;
use super::{ExportInfo, NbdOptions};
use crate::buf::AlignedBuf;
use crate::error::{Error, ErrorCode, Result};

/// What a completed request hands back.
pub(super) enum Completion {
    Unit,
    Data(Bytes),
    Extents(Vec<(u32, u32)>),
}

/// Per-request state the reader task fills in.
pub(super) enum Kind {
    Read { offset: u64, buf: AlignedBuf, covered: Vec<(usize, usize)>, simple_ok: bool },
    BlockStatus { context: u32, extents: Option<Vec<(u32, u32)>> },
    Other,
}

pub(super) struct Pending {
    pub(super) what: &'static str,
    pub(super) kind: Kind,
    pub(super) error: Option<Error>,
    pub(super) tx: oneshot::Sender<Result<Completion>>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) dead: Option<(ErrorCode, String)>,
    pub(super) map: HashMap<u64, Pending>,
}

pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fail every pending request (and the one being processed) with the connection's fatal error.
pub(super) fn fail_all(state: &Mutex<State>, current: Option<Pending>, err: &Error) {
    let pending: Vec<Pending> = {
        let mut st = lock(state);
        if st.dead.is_none() {
            st.dead = Some((err.code(), err.report()));
        }
        st.map.drain().map(|(_, p)| p).collect()
    };
    for p in current.into_iter().chain(pending) {
        let _ = p.tx.send(Err(Error::new(err.code(), format!("nbd {} aborted: {}", p.what, err.report()))));
    }
}

/// Complete a request whose last chunk arrived. A reply that breaks the protocol fails the
/// request and is returned so the connection is torn down too.
pub(super) fn finish(p: Pending) -> Result<()> {
    let mut fatal = None;
    let result = match p.error {
        Some(e) => Err(e),
        None => match p.kind {
            Kind::Read { buf, mut covered, simple_ok, .. } => {
                match if simple_ok { Ok(()) } else { check_coverage(&mut covered, buf.len()) } {
                    Ok(()) => Ok(Completion::Data(buf.freeze())),
                    Err(e) => {
                        fatal = Some(protocol(e.message()));
                        Err(e)
                    }
                }
            }
            Kind::BlockStatus { extents: Some(e), .. } => Ok(Completion::Extents(e)),
            Kind::BlockStatus { extents: None, .. } => {
                let msg = "nbd block status reply without extents for the requested context";
                fatal = Some(protocol(msg));
                Err(protocol(msg))
            }
            Kind::Other => Ok(Completion::Unit),
        },
    };
    let _ = p.tx.send(result);
    fatal.map_or(Ok(()), Err)
}

pub(super) fn read_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::new(ErrorCode::NbdConnect, "nbd server closed the connection")
    } else {
        Error::new(ErrorCode::NbdConnect, "lost the nbd connection").with_source(e)
    }
}

/// Capacity of the reply reader's buffer: headers and small replies go through it, payloads
/// straight into their destination ([`read_payload`]), so a read is not copied twice
/// (measured: docs/perf-notes.md, "NBD reply reader").
pub(super) const REPLY_BUFFER: usize = 16 << 10;

/// Fill `dst` from `r`: what the buffer already holds is copied, the rest is read from the
/// socket straight into `dst` (never into the buffer, even for a short tail).
pub(super) async fn read_payload<R: AsyncRead + Unpin>(r: &mut BufReader<R>, dst: &mut [u8]) -> std::io::Result<()> {
    let held = r.buffer();
    let n = held.len().min(dst.len());
    dst[..n].copy_from_slice(&held[..n]);
    std::pin::Pin::new(&mut *r).consume(n);
    if n < dst.len() {
        // The buffer is empty now: reading past it keeps the stream in order.
        r.get_mut().read_exact(&mut dst[n..]).await?;
    }
    Ok(())
}

/// Read replies until the connection fails; returns the error that ended it. `current` holds the
/// request whose reply is being read, so the caller can fail it too.
pub(super) async fn read_replies<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    state: &Mutex<State>,
    structured: bool,
    contexts: &[u32],
    current: &mut Option<Pending>,
) -> Error {
    match read_replies_inner(r, state, structured, contexts, current).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn read_replies_inner<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    state: &Mutex<State>,
    structured: bool,
    contexts: &[u32],
    current: &mut Option<Pending>,
) -> Result<std::convert::Infallible> {
    let mut hdr = [0u8; STRUCTURED_REPLY_LEN];
    loop {
        r.read_exact(&mut hdr[..4]).await.map_err(read_err)?;
        let magic = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let n = reply_header_len(magic, structured)?;
        r.read_exact(&mut hdr[4..n]).await.map_err(read_err)?;
        let h = parse_reply_header(&hdr[..n], structured)?;
        let cookie = h.cookie();
        let p = lock(state).map.remove(&cookie);
        let p = current.insert(p.ok_or_else(|| protocol(format!("nbd reply for unknown cookie {cookie}")))?);
        match h {
            ReplyHeader::Simple { error, .. } => {
                if error != 0 {
                    p.error = Some(request_error(error, p.what, ""));
                } else {
                    match &mut p.kind {
                        Kind::Read { buf, covered, simple_ok, .. } => {
                            if !covered.is_empty() {
                                return Err(protocol("nbd simple reply after structured chunks"));
                            }
                            read_payload(r, &mut buf[..]).await.map_err(read_err)?;
                            *simple_ok = true;
                        }
                        Kind::BlockStatus { .. } => return Err(protocol("nbd simple reply to block status")),
                        Kind::Other => {}
                    }
                }
                if let Some(p) = current.take() {
                    finish(p)?;
                }
            }
            ReplyHeader::Structured { flags, typ, len, .. } => {
                if typ == REPLY_TYPE_OFFSET_DATA {
                    let Kind::Read { offset, buf, covered, .. } = &mut p.kind else {
                        return Err(protocol(format!("nbd data chunk in reply to {}", p.what)));
                    };
                    if len <= 8 {
                        return Err(protocol("nbd data chunk without data"));
                    }
                    let mut off = [0u8; 8];
                    r.read_exact(&mut off).await.map_err(read_err)?;
                    let Chunk::Data { offset: at, len: n } = parse_chunk(flags, typ, len, &off)? else {
                        return Err(protocol("nbd data chunk misparsed"));
                    };
                    let req_len = u32::try_from(buf.len()).map_err(|_| protocol("read too large"))?;
                    let start = chunk_range(*offset, req_len, at, n)?;
                    read_payload(r, &mut buf[start..start + n as usize]).await.map_err(read_err)?;
                    covered.push((start, n as usize));
                } else {
                    let mut payload = vec![0u8; len as usize];
                    read_payload(r, &mut payload).await.map_err(read_err)?;
                    match parse_chunk(flags, typ, len, &payload)? {
                        Chunk::None | Chunk::Data { .. } => {}
                        Chunk::Hole { offset: at, len: n } => {
                            let Kind::Read { offset, buf, covered, .. } = &mut p.kind else {
                                return Err(protocol(format!("nbd hole chunk in reply to {}", p.what)));
                            };
                            let req_len = u32::try_from(buf.len()).map_err(|_| protocol("read too large"))?;
                            let start = chunk_range(*offset, req_len, at, n)?;
                            // Pooled buffers are reused, not zeroed.
                            buf[start..start + n as usize].fill(0);
                            covered.push((start, n as usize));
                        }
                        Chunk::BlockStatus { context, extents: got } => {
                            if !contexts.contains(&context) {
                                return Err(protocol(format!("nbd block status for unknown context {context}")));
                            }
                            let Kind::BlockStatus { context: want, extents } = &mut p.kind else {
                                return Err(protocol(format!("nbd block status chunk in reply to {}", p.what)));
                            };
                            if context == *want {
                                if extents.is_some() {
                                    return Err(protocol("nbd block status repeated for one context"));
                                }
                                *extents = Some(got);
                            }
                        }
                        Chunk::Error { errno, message, offset } => {
                            let detail = match offset {
                                Some(o) => format!("{message} (at offset {o})"),
                                None => message,
                            };
                            if p.error.is_none() {
                                p.error = Some(request_error(errno, p.what, &detail));
                            }
                        }
                    }
                }
                if flags & REPLY_FLAG_DONE != 0 {
                    if let Some(p) = current.take() {
                        finish(p)?;
                    }
                } else if let Some(p) = current.take() {
                    lock(state).map.insert(cookie, p);
                }
            }
        }
    }
}

pub(super) struct Outgoing {
    pub(super) header: [u8; REQUEST_LEN],
    pub(super) payload: Option<Bytes>,
}

async fn write_one<W: AsyncWrite + Unpin>(w: &mut W, m: Outgoing) -> std::io::Result<()> {
    w.write_all(&m.header).await?;
    if let Some(p) = m.payload {
        w.write_all(&p).await?;
    }
    Ok(())
}

pub(super) async fn writer_task<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    state: Arc<Mutex<State>>,
) {
    let mut w = BufWriter::with_capacity(64 << 10, w);
    while let Some(m) = rx.recv().await {
        let mut res = write_one(&mut w, m).await;
        // Batch whatever else is queued before one flush.
        while res.is_ok() {
            match rx.try_recv() {
                Ok(m) => res = write_one(&mut w, m).await,
                Err(_) => break,
            }
        }
        if let Err(e) = res.and(w.flush().await) {
            let err = Error::new(ErrorCode::NbdConnect, "lost the nbd connection while sending").with_source(e);
            fail_all(&state, None, &err);
            return;
        }
    }
    // Every handle is gone: say goodbye so the server does not log an abrupt disconnect.
    let disc = encode_request(0, CMD_DISC, 0, 0, 0);
    let _ = w.write_all(&disc).await;
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

/// One connection: a writer task, a reader task and the pending map between them.
pub(super) struct Conn {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) tx: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    pub(super) next_cookie: AtomicU64,
    pub(super) writer: Mutex<Option<JoinHandle<()>>>,
    pub(super) reader: JoinHandle<()>,
    /// [`NbdOptions::request_timeout`].
    pub(super) timeout: Duration,
    /// What this connection's handshake negotiated (context ids may differ between connections).
    pub(super) info: ExportInfo,
    /// Sequence number ([`Shared::acks`]) of the last write or zero this connection's server
    /// acknowledged, and the highest one a flush on it covered: a connection lost with
    /// `last_ack > flushed` may have lost acknowledged writes.
    pub(super) last_ack: AtomicU64,
    pub(super) flushed: AtomicU64,
}

impl Conn {
    pub(super) fn spawn<R, W>(r: R, w: W, info: &ExportInfo) -> Conn
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(writer_task(w, rx, state.clone()));
        let contexts: Vec<u32> = info.allocation_context.into_iter().chain(info.dirty_context).collect();
        let structured = info.structured;
        let rstate = state.clone();
        let reader = tokio::spawn(async move {
            let mut r = BufReader::with_capacity(REPLY_BUFFER, r);
            let mut current = None;
            let err = read_replies(&mut r, &rstate, structured, &contexts, &mut current).await;
            tracing::debug!(error = %err.report(), "nbd reader stopped");
            fail_all(&rstate, current, &err);
        });
        Conn {
            state,
            tx: Mutex::new(Some(tx)),
            next_cookie: AtomicU64::new(1),
            writer: Mutex::new(Some(writer)),
            reader,
            timeout: NbdOptions::default().request_timeout,
            info: info.clone(),
            last_ack: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        }
    }

    /// The error that ended this connection, if it is dead.
    pub(super) fn dead(&self) -> Option<(ErrorCode, String)> {
        lock(&self.state).dead.clone()
    }

    /// End the connection after a stall: fail what is pending and close the socket, so the next
    /// request reconnects instead of queueing behind a server that does not answer.
    pub(super) fn kill(&self, err: &Error) {
        fail_all(&self.state, None, err);
        self.reader.abort();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.abort();
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    #[allow(clippy::too_many_arguments)] // one field per NBD request header field
    pub(super) async fn request(
        &self,
        what: &'static str,
        typ: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: Option<Bytes>,
        kind: Kind,
    ) -> Result<Completion> {
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            if let Some((code, msg)) = &st.dead {
                return Err(Error::new(*code, format!("nbd {what} refused: connection is dead: {msg}")));
            }
            st.map.insert(cookie, Pending { what, kind, error: None, tx });
        }
        let header = encode_request(flags, typ, cookie, offset, len);
        let sent = lock_opt(&self.tx).as_ref().map(|tx| tx.send(Outgoing { header, payload }).is_ok()).unwrap_or(false);
        if !sent {
            lock(&self.state).map.remove(&cookie);
            return Err(Error::new(ErrorCode::NbdConnect, format!("nbd {what} refused: connection closed")));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(r) => {
                r.unwrap_or_else(|_| Err(Error::new(ErrorCode::NbdConnect, format!("nbd {what}: connection lost"))))
            }
            Err(_) => {
                lock(&self.state).map.remove(&cookie);
                Err(Error::new(
                    ErrorCode::Timeout,
                    format!("nbd {what} at {offset}: no reply within {:?} (server stalled?)", self.timeout),
                ))
            }
        }
    }
}

pub(super) fn lock_opt<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer sends NBD_CMD_DISC once `tx` is dropped; the reader would otherwise wait for
        // the server to hang up.
        self.reader.abort();
    }
}
