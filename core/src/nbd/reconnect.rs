//! Opening a connection (socket, TLS, handshake) and reopening a lost one, with the
//! bookkeeping that keeps a lost connection's unflushed writes from being called durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::conn::{lock_opt, Conn};
use super::handshake::{greet, handshake, io_connect, negotiate, protocol, starttls};
use super::proto::*;
use super::{ExportInfo, NbdAddr, NbdOptions, NbdTls, NbdTransport};
use crate::buf::BufPool;
use crate::error::{Error, ErrorCode, Result};

pub(super) struct Shared {
    pub(super) addr: NbdAddr,
    pub(super) export: String,
    pub(super) opts: NbdOptions,
    pub(super) info: ExportInfo,
    /// Read buffers of every connection: page aligned (a block-device target writes them with
    /// `O_DIRECT`) and reused (no 4 MiB memset and page faults per read).
    pub(super) pool: Arc<BufPool>,
    /// Acknowledged writes and zeroes of every connection, numbered in order.
    pub(super) acks: AtomicU64,
    /// Every connection opened for this export, to check at each flush whether one was lost
    /// with writes no flush covered. A flush on another connection does not count for a lost
    /// one: the server may have restarted in between, taking its unflushed writes with it.
    pub(super) conns: Mutex<Vec<std::sync::Weak<Conn>>>,
    /// Set once a connection was lost with acknowledged writes no flush covered: the server
    /// may have dropped them, so every later flush fails rather than call them durable.
    pub(super) lost_writes: Mutex<Option<String>>,
    /// Set once reconnecting failed [`NbdOptions::reconnect_attempts`] times: every handle
    /// then fails at once instead of trying again.
    pub(super) gave_up: Mutex<Option<String>>,
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
    pub(super) fn register(&self, conn: &Arc<Conn>) {
        let mut v = lock_opt(&self.conns);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(conn));
    }

    /// Note lost writes of every dead connection still held.
    pub(super) fn check_conns(&self) {
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
pub(super) fn note_lost_writes(shared: &Shared, c: &Conn, why: &str) {
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
pub(super) fn reconnectable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::NbdConnect | ErrorCode::Timeout)
}

/// [`open`] within [`NbdOptions::connect_timeout`], requests limited by its `request_timeout`.
pub(super) async fn open_timed(addr: &NbdAddr, export: &str, opts: &NbdOptions) -> Result<(ExportInfo, Conn)> {
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

impl NbdTransport {
    /// The connection to send on: the current one, or a new one when it was lost.
    pub(super) async fn live_conn(&self) -> Result<Arc<Conn>> {
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
}
