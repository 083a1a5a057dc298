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

pub mod proto;
mod uri;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::buf::{AlignedBuf, BufPool};
use crate::error::{Error, ErrorCode, Result};
pub use crate::tls::{ClientCertificate, TlsOptions};
use crate::transport::{coalesce, BlockTransport, Extent, ExtentKind};
use proto::*;
pub use uri::{parse_uri, parse_uri_tls, NbdAddr, TlsParams, DEFAULT_PORT};

/// Largest single write request: smaller pieces overlap the transfer with the server's writes
/// (measured: docs/perf-notes.md, "Writes to an NBD server").
const WRITE_PIECE: usize = 512 << 10;

/// Largest request the engine is offered ([`BlockTransport::max_request`]): the server copies
/// each read into a buffer of the request's size, and its CPU shares the machine with ours
/// (measured: docs/perf-notes.md, "Request sizes").
const REQUEST_PIECE: usize = 512 << 10;

/// How to connect and what to negotiate.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    /// Connections the engine may open when the server allows multi-conn (default 4).
    pub connections: usize,
    /// Also negotiate `qemu:dirty-bitmap:<name>` so [`ExtentKind::Changed`] works (qemu-nbd
    /// `--bitmap`); connecting fails if the server does not offer it.
    pub dirty_bitmap: Option<String>,
    /// Ask for structured replies (sparse reads, block status). Off only to test old servers.
    pub structured_replies: bool,
    /// Limit for connecting plus the handshake.
    pub connect_timeout: Duration,
    /// Limit for one request's reply: a stalled server is an error ([`ErrorCode::Timeout`])
    /// after this long, not a wait forever (default 10 minutes).
    pub request_timeout: Duration,
    /// Upgrade every connection to TLS (`nbds://`) before negotiating.
    pub tls: Option<NbdTls>,
    /// Attempts to open a new connection after the current one was lost or stalled (default 6).
    /// The request that saw the failure fails (the engine retries it); the next request on this
    /// handle reconnects first: new socket, handshake, same export, TLS if it was TLS. After the
    /// last failed attempt the handle gives up for good with [`ErrorCode::NbdConnect`].
    pub reconnect_attempts: u32,
    /// Wait before the second reconnect attempt, doubled for each further one up to 5 s (default
    /// 250 ms: 6 attempts span about 8 s, long enough for a server to restart).
    pub reconnect_delay: Duration,
}

/// TLS for an NBD connection: `NBD_OPT_STARTTLS`, then the rest of the handshake and every
/// request inside TLS, trusting the server as [`TlsOptions`] says.
#[derive(Clone)]
pub struct NbdTls {
    config: Arc<rustls::ClientConfig>,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for NbdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl NbdTls {
    /// Trust as `trust` says (a CA bundle, a pin, or `insecure`), present `client` when the
    /// server asks for a certificate, and check the server certificate against `server_name`.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] when `trust` names no trust, for unparsable PEM or thumbprints, or an
    /// invalid server name.
    pub fn new(trust: &TlsOptions, client: Option<&ClientCertificate>, server_name: &str) -> Result<NbdTls> {
        let config = Arc::new(crate::tls::client_config(trust, client)?);
        let server_name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|_| Error::new(ErrorCode::BadUrl, format!("{server_name:?} is not a valid tls server name")))?;
        Ok(NbdTls { config, server_name })
    }

    /// From an `nbds` URI's parameters: `ca-cert.pem` (and `client-cert.pem` / `client-key.pem`
    /// when present) from `tls-certificates=DIR`, a `tls-thumbprint` pin, or no verification with
    /// `tls-verify-peer=false`.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] when the URI gives no way to trust the server or the directory lacks
    /// `ca-cert.pem`; [`ErrorCode::Io`] when a file cannot be read; otherwise as [`NbdTls::new`].
    pub fn from_params(p: &TlsParams, addr: &NbdAddr) -> Result<NbdTls> {
        let read = |path: std::path::PathBuf| {
            std::fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
        };
        let mut trust =
            TlsOptions { insecure: !p.verify_peer, thumbprint_sha256: p.thumbprint.clone(), ..TlsOptions::default() };
        let mut client = None;
        if let Some(dir) = &p.certificates {
            let ca = dir.join("ca-cert.pem");
            if p.verify_peer && p.thumbprint.is_none() {
                if !ca.exists() {
                    return Err(Error::new(
                        ErrorCode::BadUrl,
                        format!("tls-certificates={} has no ca-cert.pem to trust the server with", dir.display()),
                    ));
                }
                trust.ca_pem = Some(read(ca)?);
            }
            let (cert, key) = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
            if cert.exists() && key.exists() {
                client = Some(ClientCertificate { chain_pem: read(cert)?, key_pem: read(key)? });
            }
        }
        if p.verify_peer && trust.ca_pem.is_none() && trust.thumbprint_sha256.is_none() {
            return Err(Error::new(
                ErrorCode::BadUrl,
                "nbds:// needs tls-certificates=DIR (with ca-cert.pem), tls-thumbprint=SHA256, or tls-verify-peer=false",
            ));
        }
        let name = match (&p.hostname, addr) {
            (Some(h), _) => h.clone(),
            (None, NbdAddr::Tcp { host, .. }) => host.clone(),
            (None, NbdAddr::Unix(_)) => "localhost".to_owned(),
        };
        NbdTls::new(&trust, client.as_ref(), &name)
    }
}

impl Default for NbdOptions {
    fn default() -> Self {
        NbdOptions {
            connections: 4,
            dirty_bitmap: None,
            structured_replies: true,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(600),
            tls: None,
            reconnect_attempts: 6,
            reconnect_delay: Duration::from_millis(250),
        }
    }
}

/// What the handshake negotiated for one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export size in bytes.
    pub size: u64,
    /// `NBD_FLAG_*` transmission flags.
    pub flags: u16,
    /// Block size constraints, when the server sent them.
    pub block_size: Option<BlockSize>,
    /// Whether structured replies are on.
    pub structured: bool,
    /// Context id of `base:allocation`, if granted.
    pub allocation_context: Option<u32>,
    /// Context id of the requested dirty bitmap, if granted.
    pub dirty_context: Option<u32>,
    /// Whether the export was selected with `NBD_OPT_GO` (else the old `EXPORT_NAME`).
    pub used_go: bool,
}

impl ExportInfo {
    /// Whether a transmission flag is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & TF_HAS_FLAGS != 0 && self.flags & flag != 0
    }

    /// Required alignment of offsets and lengths.
    pub fn min_block(&self) -> u64 {
        self.block_size.map_or(1, |b| u64::from(b.minimum))
    }

    /// Largest payload of one read or write request.
    pub fn max_payload(&self) -> u32 {
        let max = self.block_size.map_or(DEFAULT_MAX_PAYLOAD, |b| b.maximum.min(DEFAULT_MAX_PAYLOAD));
        let min = self.min_block() as u32;
        (max / min * min).max(min)
    }
}

fn io_connect(context: String, e: std::io::Error) -> Error {
    Error::new(ErrorCode::NbdConnect, context).with_source(e)
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::NbdProtocol, msg)
}

async fn read_option_reply<S: AsyncRead + Unpin>(s: &mut S, option: u32) -> Result<(OptionReplyHeader, Vec<u8>)> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).await.map_err(|e| io_connect("reading nbd option reply".into(), e))?;
    let h = parse_option_reply(&h, option)?;
    let mut data = vec![0u8; h.len as usize];
    s.read_exact(&mut data).await.map_err(|e| io_connect("reading nbd option reply".into(), e))?;
    Ok((h, data))
}

async fn send_option<S: AsyncWrite + Unpin>(s: &mut S, option: u32, data: &[u8]) -> Result<()> {
    s.write_all(&encode_option(option, data)).await.map_err(|e| io_connect("sending nbd option".into(), e))?;
    s.flush().await.map_err(|e| io_connect("sending nbd option".into(), e))
}

fn option_refused(what: &str, reply_type: u32, data: &[u8]) -> Error {
    let text = String::from_utf8_lossy(&data[..data.len().min(256)]).into_owned();
    let mut msg = format!("nbd server refused {what}: {}", option_error_name(reply_type));
    if !text.is_empty() {
        msg.push_str(": ");
        msg.push_str(&text);
    }
    Error::new(ErrorCode::NbdRequest, msg)
}

/// Run the fixed newstyle handshake on `s` up to the transmission phase.
///
/// Asks for structured replies and the `base:allocation` context (plus the dirty bitmap from
/// `opts`), then selects `export` with `NBD_OPT_GO`, falling back to `NBD_OPT_EXPORT_NAME` only
/// when the server answers GO with `NBD_REP_ERR_UNSUP`. TLS (`opts.tls`) needs the stream to
/// change type mid-way: [`NbdTransport::connect_with`] does that.
///
/// # Errors
/// [`ErrorCode::NbdProtocol`] for a malformed or non-newstyle server, [`ErrorCode::NbdRequest`]
/// when the server refuses the export or the dirty bitmap, [`ErrorCode::NbdTls`] when it
/// requires TLS, [`ErrorCode::NbdConnect`] when the connection drops, [`ErrorCode::BadUrl`] for
/// an export name over 4096 bytes, [`ErrorCode::TransportUnsupported`] when `opts` asks for TLS.
///
/// # Cancel safety
/// Not cancel safe: a dropped handshake leaves the stream mid-negotiation; discard it.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    opts: &NbdOptions,
) -> Result<ExportInfo> {
    if opts.tls.is_some() {
        return Err(Error::new(ErrorCode::TransportUnsupported, "nbd tls needs NbdTransport::connect_with"));
    }
    let no_zeroes = greet(s).await?;
    negotiate(s, export, opts, no_zeroes).await
}

/// Read the greeting and answer with our flags; returns whether the server omits the 124 zero
/// bytes after `NBD_OPT_EXPORT_NAME`.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<bool> {
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).await.map_err(|e| io_connect("reading nbd greeting".into(), e))?;
    let server_flags = parse_greeting(&greeting)?;
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = u32::from(FLAG_FIXED_NEWSTYLE) | if no_zeroes { u32::from(FLAG_NO_ZEROES) } else { 0 };
    s.write_all(&client_flags.to_be_bytes()).await.map_err(|e| io_connect("sending nbd client flags".into(), e))?;
    Ok(no_zeroes)
}

fn tls_required() -> Error {
    Error::new(ErrorCode::NbdTls, "nbd server requires TLS: use an nbds:// or nbds+unix:// uri")
}

/// `NBD_OPT_STARTTLS`, after [`greet`]; the caller then runs the TLS handshake on `s`.
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<()> {
    send_option(s, OPT_STARTTLS, &[]).await?;
    let (h, data) = read_option_reply(s, OPT_STARTTLS).await?;
    match h.reply_type {
        REP_ACK => Ok(()),
        t if t & REP_FLAG_ERROR != 0 => {
            let text = String::from_utf8_lossy(&data[..data.len().min(256)]).into_owned();
            Err(Error::new(ErrorCode::NbdTls, format!("nbd server refused STARTTLS: {} {text}", option_error_name(t))))
        }
        t => Err(protocol(format!("unexpected reply {t} to NBD_OPT_STARTTLS"))),
    }
}

/// Everything after the greeting (and after TLS, if any): options, then the export.
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    opts: &NbdOptions,
    no_zeroes: bool,
) -> Result<ExportInfo> {
    if export.len() > 4096 {
        return Err(Error::new(ErrorCode::BadUrl, "nbd export name longer than 4096 bytes"));
    }
    let mut structured = false;
    if opts.structured_replies {
        send_option(s, OPT_STRUCTURED_REPLY, &[]).await?;
        let (h, _) = read_option_reply(s, OPT_STRUCTURED_REPLY).await?;
        match h.reply_type {
            REP_ACK => structured = true,
            REP_ERR_TLS_REQD => return Err(tls_required()),
            t if t & REP_FLAG_ERROR != 0 => tracing::debug!("nbd server declined structured replies"),
            t => return Err(protocol(format!("unexpected reply {t} to NBD_OPT_STRUCTURED_REPLY"))),
        }
    }

    let mut allocation_context = None;
    let mut dirty_context = None;
    let dirty_query = opts.dirty_bitmap.as_ref().map(|b| format!("qemu:dirty-bitmap:{b}"));
    if structured {
        let mut queries = vec!["base:allocation"];
        if let Some(q) = &dirty_query {
            queries.push(q);
        }
        send_option(s, OPT_SET_META_CONTEXT, &encode_set_meta_context(export, &queries)).await?;
        loop {
            let (h, data) = read_option_reply(s, OPT_SET_META_CONTEXT).await?;
            match h.reply_type {
                REP_META_CONTEXT => {
                    let (id, name) = parse_meta_context(&data)?;
                    if name == "base:allocation" {
                        allocation_context = Some(id);
                    } else if Some(&name) == dirty_query.as_ref() {
                        dirty_context = Some(id);
                    } else {
                        tracing::debug!(context = %name, "nbd server granted a context we did not ask for");
                    }
                }
                REP_ACK => break,
                REP_ERR_TLS_REQD => return Err(tls_required()),
                t if t & REP_FLAG_ERROR != 0 => {
                    tracing::debug!(reply = option_error_name(t), "nbd server declined meta contexts");
                    break;
                }
                t => return Err(protocol(format!("unexpected reply {t} to NBD_OPT_SET_META_CONTEXT"))),
            }
        }
    }
    if let (Some(q), None) = (&dirty_query, dirty_context) {
        return Err(Error::new(ErrorCode::NbdRequest, format!("nbd server does not offer meta context {q}")));
    }

    send_option(s, OPT_GO, &encode_go(export)).await?;
    let mut export_info = None;
    let mut block_size = None;
    loop {
        let (h, data) = read_option_reply(s, OPT_GO).await?;
        match h.reply_type {
            REP_INFO => match parse_info(&data)? {
                Info::Export { size, flags } => export_info = Some((size, flags)),
                Info::BlockSize(b) => block_size = Some(b),
                Info::Other(_) => {}
            },
            REP_ACK => break,
            REP_ERR_UNSUP => {
                tracing::debug!("nbd server lacks NBD_OPT_GO, falling back to NBD_OPT_EXPORT_NAME");
                send_option(s, OPT_EXPORT_NAME, export.as_bytes()).await?;
                let mut b = [0u8; 10 + 124];
                let n = if no_zeroes { 10 } else { 134 };
                s.read_exact(&mut b[..n])
                    .await
                    .map_err(|e| io_connect(format!("nbd server closed the connection on export {export:?}"), e))?;
                let (size, flags) = parse_export_name_reply(&b[..10])?;
                return Ok(ExportInfo {
                    size,
                    flags,
                    block_size: None,
                    structured,
                    allocation_context,
                    dirty_context,
                    used_go: false,
                });
            }
            REP_ERR_TLS_REQD => return Err(tls_required()),
            t if t & REP_FLAG_ERROR != 0 => return Err(option_refused(&format!("export {export:?}"), t, &data)),
            t => return Err(protocol(format!("unexpected reply {t} to NBD_OPT_GO"))),
        }
    }
    let (size, flags) = export_info.ok_or_else(|| protocol("nbd server acknowledged GO without export info"))?;
    Ok(ExportInfo { size, flags, block_size, structured, allocation_context, dirty_context, used_go: true })
}

/// What a completed request hands back.
enum Completion {
    Unit,
    Data(Bytes),
    Extents(Vec<(u32, u32)>),
}

/// Per-request state the reader task fills in.
enum Kind {
    Read { offset: u64, buf: AlignedBuf, covered: Vec<(usize, usize)>, simple_ok: bool },
    BlockStatus { context: u32, extents: Option<Vec<(u32, u32)>> },
    Other,
}

struct Pending {
    what: &'static str,
    kind: Kind,
    error: Option<Error>,
    tx: oneshot::Sender<Result<Completion>>,
}

#[derive(Default)]
struct State {
    dead: Option<(ErrorCode, String)>,
    map: HashMap<u64, Pending>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fail every pending request (and the one being processed) with the connection's fatal error.
fn fail_all(state: &Mutex<State>, current: Option<Pending>, err: &Error) {
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
fn finish(p: Pending) -> Result<()> {
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

fn read_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::new(ErrorCode::NbdConnect, "nbd server closed the connection")
    } else {
        Error::new(ErrorCode::NbdConnect, "lost the nbd connection").with_source(e)
    }
}

/// Capacity of the reply reader's buffer: headers and small replies go through it, payloads
/// straight into their destination ([`read_payload`]), so a read is not copied twice
/// (measured: docs/perf-notes.md, "NBD reply reader").
const REPLY_BUFFER: usize = 16 << 10;

/// Fill `dst` from `r`: what the buffer already holds is copied, the rest is read from the
/// socket straight into `dst` (never into the buffer, even for a short tail).
async fn read_payload<R: AsyncRead + Unpin>(r: &mut BufReader<R>, dst: &mut [u8]) -> std::io::Result<()> {
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
async fn read_replies<R: AsyncRead + Unpin>(
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

struct Outgoing {
    header: [u8; REQUEST_LEN],
    payload: Option<Bytes>,
}

async fn write_one<W: AsyncWrite + Unpin>(w: &mut W, m: Outgoing) -> std::io::Result<()> {
    w.write_all(&m.header).await?;
    if let Some(p) = m.payload {
        w.write_all(&p).await?;
    }
    Ok(())
}

async fn writer_task<W: AsyncWrite + Unpin>(w: W, mut rx: mpsc::UnboundedReceiver<Outgoing>, state: Arc<Mutex<State>>) {
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
struct Conn {
    state: Arc<Mutex<State>>,
    tx: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    next_cookie: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
    reader: JoinHandle<()>,
    /// [`NbdOptions::request_timeout`].
    timeout: Duration,
    /// What this connection's handshake negotiated (context ids may differ between connections).
    info: ExportInfo,
    /// Sequence number ([`Shared::acks`]) of the last write or zero this connection's server
    /// acknowledged, and the highest one a flush on it covered: a connection lost with
    /// `last_ack > flushed` may have lost acknowledged writes.
    last_ack: AtomicU64,
    flushed: AtomicU64,
}

impl Conn {
    fn spawn<R, W>(r: R, w: W, info: &ExportInfo) -> Conn
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
    fn dead(&self) -> Option<(ErrorCode, String)> {
        lock(&self.state).dead.clone()
    }

    /// End the connection after a stall: fail what is pending and close the socket, so the next
    /// request reconnects instead of queueing behind a server that does not answer.
    fn kill(&self, err: &Error) {
        fail_all(&self.state, None, err);
        self.reader.abort();
        if let Some(w) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.abort();
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    #[allow(clippy::too_many_arguments)] // one field per NBD request header field
    async fn request(
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

fn lock_opt<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer sends NBD_CMD_DISC once `tx` is dropped; the reader would otherwise wait for
        // the server to hang up.
        self.reader.abort();
    }
}

struct Shared {
    addr: NbdAddr,
    export: String,
    opts: NbdOptions,
    info: ExportInfo,
    /// Read buffers of every connection: page aligned (a block-device target writes them with
    /// `O_DIRECT`) and reused (no 4 MiB memset and page faults per read).
    pool: Arc<BufPool>,
    /// Acknowledged writes and zeroes of every connection, numbered in order.
    acks: AtomicU64,
    /// Every connection opened for this export, to check at each flush whether one was lost
    /// with writes no flush covered. A flush on another connection does not count for a lost
    /// one: the server may have restarted in between, taking its unflushed writes with it.
    conns: Mutex<Vec<std::sync::Weak<Conn>>>,
    /// Set once a connection was lost with acknowledged writes no flush covered: the server
    /// may have dropped them, so every later flush fails rather than call them durable.
    lost_writes: Mutex<Option<String>>,
    /// Set once reconnecting failed [`NbdOptions::reconnect_attempts`] times: every handle
    /// then fails at once instead of trying again.
    gave_up: Mutex<Option<String>>,
}

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

/// Greet, upgrade to TLS, negotiate, and start the connection's tasks over the TLS stream.
async fn open_tls<S>(
    mut s: S,
    addr: &NbdAddr,
    export: &str,
    opts: &NbdOptions,
    tls: &NbdTls,
) -> Result<(ExportInfo, Conn)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let no_zeroes = greet(&mut s).await?;
    starttls(&mut s).await?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let mut t = connector.connect(tls.server_name.clone(), s).await.map_err(|e| {
        Error::new(ErrorCode::NbdTls, format!("tls handshake with nbd server {addr} failed")).with_source(e)
    })?;
    let info = match negotiate(&mut t, export, opts, no_zeroes).await {
        Ok(info) => info,
        // With TLS 1.3 the server checks our certificate after our side of the handshake has
        // finished: its refusal shows as a dropped connection. Its alert says why.
        Err(e) if e.code() == ErrorCode::NbdConnect => {
            let mut byte = [0u8; 1];
            let why = match t.read(&mut byte).await {
                Err(io) => io.to_string(),
                Ok(_) => e.report(),
            };
            return Err(Error::new(
                ErrorCode::NbdTls,
                format!(
                    "nbd server {addr} dropped the tls connection after the handshake: {why} (a server that verifies \
                     clients wants client-cert.pem and client-key.pem in tls-certificates=DIR)"
                ),
            ));
        }
        Err(e) => return Err(e),
    };
    let (r, w) = tokio::io::split(t);
    let conn = Conn::spawn(r, w, &info);
    Ok((info, conn))
}

impl Shared {
    fn register(&self, conn: &Arc<Conn>) {
        let mut v = lock_opt(&self.conns);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(conn));
    }

    /// Note lost writes of every dead connection still held.
    fn check_conns(&self) {
        let conns: Vec<Arc<Conn>> = lock_opt(&self.conns).iter().filter_map(std::sync::Weak::upgrade).collect();
        for c in conns {
            if let Some((_, why)) = c.dead() {
                note_lost_writes(self, &c, &why);
            }
        }
    }
}

/// A connection lost with acknowledged writes that no flush on it covered: remember it, so no
/// later flush calls them durable.
fn note_lost_writes(shared: &Shared, c: &Conn, why: &str) {
    if c.last_ack.load(Ordering::Acquire) <= c.flushed.load(Ordering::Acquire) {
        return;
    }
    let mut lost = lock_opt(&shared.lost_writes);
    if lost.is_none() {
        tracing::warn!(addr = %shared.addr, "nbd connection lost with unflushed writes");
        *lost = Some(format!(
            "the connection to nbd server {} was lost ({why}) after writes it acknowledged but had not flushed; \
             they may not have reached its disk: copy again (a resume starts from the last checkpoint)",
            shared.addr
        ));
    }
}

/// Whether a connection that died with `code` is worth reopening: lost or stalled, not refused.
fn reconnectable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NbdConnect | ErrorCode::Timeout)
}

/// [`open`] within [`NbdOptions::connect_timeout`], requests limited by its `request_timeout`.
async fn open_timed(addr: &NbdAddr, export: &str, opts: &NbdOptions) -> Result<(ExportInfo, Conn)> {
    let (info, mut conn) = tokio::time::timeout(opts.connect_timeout, open(addr, export, opts))
        .await
        .map_err(|_| Error::new(ErrorCode::NbdConnect, format!("nbd connect to {addr} timed out")))??;
    conn.timeout = opts.request_timeout;
    Ok((info, conn))
}

async fn open(addr: &NbdAddr, export: &str, opts: &NbdOptions) -> Result<(ExportInfo, Conn)> {
    match addr {
        NbdAddr::Tcp { host, port } => {
            let mut s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| io_connect(format!("connecting to nbd server {addr}"), e))?;
            let _ = s.set_nodelay(true);
            if let Some(tls) = &opts.tls {
                return open_tls(s, addr, export, opts, tls).await;
            }
            let info = handshake(&mut s, export, opts).await?;
            let (r, w) = s.into_split();
            let conn = Conn::spawn(r, w, &info);
            Ok((info, conn))
        }
        NbdAddr::Unix(path) => {
            let mut s = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| io_connect(format!("connecting to nbd server {addr}"), e))?;
            if let Some(tls) = &opts.tls {
                return open_tls(s, addr, export, opts, tls).await;
            }
            let info = handshake(&mut s, export, opts).await?;
            let (r, w) = s.into_split();
            let conn = Conn::spawn(r, w, &info);
            Ok((info, conn))
        }
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

    /// The connection to send on: the current one, or a new one when it was lost.
    async fn live_conn(&self) -> Result<Arc<Conn>> {
        let c = self.current();
        match c.dead() {
            None => return Ok(c),
            Some((code, msg)) if !reconnectable(code) => {
                return Err(Error::new(code, format!("nbd connection is dead: {msg}")));
            }
            Some(_) => {}
        }
        let _g = self.reconnecting.lock().await;
        let c = self.current();
        let Some((_, why)) = c.dead() else { return Ok(c) };
        note_lost_writes(&self.shared, &c, &why);
        if let Some(msg) = lock_opt(&self.shared.gave_up).clone() {
            return Err(Error::new(ErrorCode::NbdConnect, msg));
        }
        let s = &self.shared;
        let started = std::time::Instant::now();
        let attempts = s.opts.reconnect_attempts.max(1);
        let mut delay = s.opts.reconnect_delay;
        let mut last = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            match open_timed(&s.addr, &s.export, &s.opts).await {
                Ok((info, conn)) => {
                    if let Err(e) = self.same_export(&info) {
                        last = Some(e);
                        break;
                    }
                    tracing::info!(addr = %s.addr, export = %s.export, attempt, lost = %why, "nbd reconnected");
                    let conn = Arc::new(conn);
                    s.register(&conn);
                    *lock_opt(&self.conn) = conn.clone();
                    return Ok(conn);
                }
                Err(e) if reconnectable(e.code()) => {
                    tracing::debug!(attempt, error = %e.report(), "nbd reconnect attempt failed");
                    last = Some(e);
                }
                // A refused export or a TLS failure will not heal by trying again.
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        let last = last.map_or_else(String::new, |e| e.report());
        let msg = format!(
            "nbd server {} lost ({why}) and not back after {attempts} reconnect attempt(s) over {:.1} s: {last}",
            s.addr,
            started.elapsed().as_secs_f64()
        );
        *lock_opt(&s.gave_up) = Some(msg.clone());
        Err(Error::new(ErrorCode::NbdConnect, msg))
    }

    /// A reconnection must reach the same disk: same size, same writability.
    fn same_export(&self, info: &ExportInfo) -> Result<()> {
        let was = &self.shared.info;
        if info.size != was.size || info.has(TF_READ_ONLY) != was.has(TF_READ_ONLY) {
            return Err(protocol(format!(
                "nbd export {:?} changed across a reconnect: size {} -> {}, flags {:#x} -> {:#x}",
                self.shared.export, was.size, info.size, was.flags, info.flags
            )));
        }
        if info.structured != was.structured || info.allocation_context.is_some() != was.allocation_context.is_some() {
            return Err(protocol("nbd server negotiated differently across a reconnect"));
        }
        Ok(())
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
