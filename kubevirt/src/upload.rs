//! The CDI upload stream as a [`BlockTransport`].
//!
//! The copy engine writes at offsets, in parallel and out of order; an upload to the CDI upload
//! proxy (`POST /v1beta1/upload`, `Authorization: Bearer <token>`) is one sequential stream. The
//! sink bridges the two: writes at the stream position go out at once, writes further ahead
//! wait in a bounded reorder window (zero ranges cost no memory there), and a write that does
//! not fit waits for the gap before it to be filled. `zero()` emits zeroes into the stream.
//!
//! With compression on, the stream is one zstd frame. CDI does not look at `Content-Encoding`:
//! it sniffs the first bytes of the upload (`pkg/image/filefmt.go`, whose known headers include
//! `zst`, magic `28 b5 2f fd`, next to `gz` and `xz`), decompresses, then detects raw or qcow2
//! inside. Older CDI releases knew only gz and xz and would store the zstd bytes as a raw
//! image, so the plan's `compression: false` is the switch for them. Zero runs compress to
//! almost nothing, so sparse disks cross the network in a fraction of their size; [`UploadStats`]
//! reports bytes copied next to bytes sent.
//!
//! The proxy answers 503 until the upload pod is ready. The sink keeps what it has sent (up to
//! [`UploadConfig::replay_limit`]) and replays it on a new request after a backoff; a failure
//! later than that (a cut connection, the pod restarting) is an error, and the caller retries the
//! disk with a fresh sink (CDI restarts the upload pod after a failed upload).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;
use vmigrate_core::{BlockTransport, Error, ErrorCode, Result};

use crate::error::KubevirtError;

/// Bytes counted by an upload: what the engine gave us and what went over the wire.
#[derive(Debug, Default)]
pub struct UploadStats {
    copied: AtomicU64,
    sent: AtomicU64,
    attempts: AtomicU64,
}

impl UploadStats {
    /// Logical disk bytes streamed (data and zeroes).
    pub fn bytes_copied(&self) -> u64 {
        self.copied.load(Ordering::Relaxed)
    }

    /// Bytes sent to the proxy after compression (replays after a 503 not counted twice).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// HTTP requests made (1 + retries).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }
}

/// Where and how to upload. `Debug` redacts the token.
#[derive(Clone)]
pub struct UploadConfig {
    /// Full upload URL, e.g. `https://cdi-uploadproxy.example.com/v1beta1/upload`.
    pub url: String,
    /// Bearer token from an `UploadTokenRequest`.
    pub token: String,
    /// DataVolume name, for messages.
    pub volume: String,
    /// zstd-compress the stream.
    pub compression: bool,
    /// Reorder window in bytes for writes ahead of the stream position.
    pub window: usize,
    /// How much sent data is kept to replay after a 503.
    pub replay_limit: usize,
    /// Attempts while the proxy answers 503.
    pub max_attempts: u32,
    /// First backoff delay (doubles, capped at 5 s).
    pub backoff: Duration,
}

impl std::fmt::Debug for UploadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("volume", &self.volume)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl UploadConfig {
    /// Defaults: 256 MiB window, 64 MiB replay, 30 attempts from 200 ms.
    pub fn new(url: impl Into<String>, token: impl Into<String>, volume: impl Into<String>, compression: bool) -> Self {
        UploadConfig {
            url: url.into(),
            token: token.into(),
            volume: volume.into(),
            compression,
            window: 256 << 20,
            replay_limit: 64 << 20,
            max_attempts: 30,
            backoff: Duration::from_millis(200),
        }
    }
}

enum Piece {
    Data(Bytes),
    Zero(u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Data(b) => b.len() as u64,
            Piece::Zero(n) => *n,
        }
    }
}

struct State {
    next: u64,
    pending: BTreeMap<u64, Piece>,
    pending_bytes: usize,
    tx: Option<mpsc::Sender<Piece>>,
}

struct Inner {
    size: u64,
    cfg: UploadConfig,
    state: Mutex<State>,
    space: Notify,
    pump: Mutex<Option<JoinHandle<std::result::Result<(), KubevirtError>>>>,
    outcome: std::sync::Mutex<Option<(ErrorCode, String)>>,
    stats: Arc<UploadStats>,
}

/// A sequential upload stream that accepts out-of-order writes. Clones share the stream.
#[derive(Clone)]
pub struct UploadSink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UploadSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadSink").field("size", &self.inner.size).field("cfg", &self.inner.cfg).finish()
    }
}

static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

impl UploadSink {
    /// Start an upload of `size` bytes. The HTTP request starts at once (the proxy may answer
    /// 503 until the upload pod is ready; the sink retries).
    pub fn start(client: reqwest::Client, size: u64, cfg: UploadConfig) -> UploadSink {
        let (tx, rx) = mpsc::channel(4);
        let stats = Arc::new(UploadStats::default());
        let pump = tokio::spawn(pump(client, cfg.clone(), rx, stats.clone()));
        UploadSink {
            inner: Arc::new(Inner {
                size,
                cfg,
                state: Mutex::new(State { next: 0, pending: BTreeMap::new(), pending_bytes: 0, tx: Some(tx) }),
                space: Notify::new(),
                pump: Mutex::new(Some(pump)),
                outcome: std::sync::Mutex::new(None),
                stats,
            }),
        }
    }

    /// The byte counters of this upload.
    pub fn stats(&self) -> Arc<UploadStats> {
        self.inner.stats.clone()
    }

    /// Wait for the stream's end and the proxy's answer. Idempotent.
    async fn finish(&self) -> Result<()> {
        if let Some(res) = self.cached() {
            return res;
        }
        let handle = self.inner.pump.lock().await.take();
        if let Some(h) = handle {
            let res = match h.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some((e.code(), e.to_string())),
                Err(e) => Some((ErrorCode::Internal, format!("upload task of {} died: {e}", self.inner.cfg.volume))),
            };
            *self.inner.outcome.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(res.unwrap_or((ErrorCode::Io, String::new())));
        }
        self.cached().unwrap_or_else(|| Err(Error::new(ErrorCode::Internal, "upload finished without an outcome")))
    }

    fn cached(&self) -> Option<Result<()>> {
        let g = self.inner.outcome.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().map(|(code, msg)| if msg.is_empty() { Ok(()) } else { Err(Error::new(*code, msg.clone())) })
    }

    /// The stream broke (the pump ended early): report why.
    async fn broken(&self) -> Error {
        // Close our side so the pump cannot wait for more input.
        self.inner.state.lock().await.tx = None;
        match self.finish().await {
            Err(e) => e,
            Ok(()) => Error::new(
                ErrorCode::TargetUploadFailed,
                format!("upload of {} ended before all data was written", self.inner.cfg.volume),
            ),
        }
    }

    async fn put(&self, offset: u64, piece: Piece) -> Result<()> {
        let len = piece.len();
        if offset + len > self.inner.size {
            return Err(Error::new(
                ErrorCode::OutOfBounds,
                format!("write at {offset}+{len} past {}", self.inner.size),
            ));
        }
        let mut piece = Some(piece);
        loop {
            let notified = self.inner.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.inner.state.lock().await;
                if offset + len <= st.next {
                    return Ok(()); // already streamed: a retried write
                }
                if offset < st.next {
                    return Err(Error::new(
                        ErrorCode::TransportUnsupported,
                        format!("write at {offset} overlaps the upload stream position {}", st.next),
                    ));
                }
                let Some(p) = piece.take() else { return Err(Error::new(ErrorCode::Internal, "lost a write")) };
                let fits = matches!(p, Piece::Zero(_)) || st.pending_bytes + len as usize <= self.inner.cfg.window;
                if offset == st.next || fits {
                    if let Piece::Data(_) = p {
                        if offset != st.next {
                            st.pending_bytes += len as usize;
                        }
                    }
                    st.pending.insert(offset, p);
                    let ok = self.drain(&mut st).await;
                    drop(st);
                    self.inner.space.notify_waiters();
                    return if ok { Ok(()) } else { Err(self.broken().await) };
                }
                piece = Some(p);
            }
            notified.await;
        }
    }

    /// Send every piece that continues the stream. False when the pump is gone.
    async fn drain(&self, st: &mut State) -> bool {
        while let Some(p) = st.pending.remove(&st.next) {
            let len = p.len();
            let Some(tx) = st.tx.clone() else { return false };
            if tx.send(p).await.is_err() {
                return false;
            }
            self.inner.stats.copied.fetch_add(len, Ordering::Relaxed);
            st.next += len;
            st.pending_bytes = st.pending.values().map(|p| if let Piece::Data(b) = p { b.len() } else { 0 }).sum();
        }
        true
    }
}

#[async_trait]
impl BlockTransport for UploadSink {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn max_connections(&self) -> usize {
        4
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }

    async fn read_at(&self, _offset: u64, _len: usize) -> Result<Bytes> {
        Err(Error::new(ErrorCode::TransportUnsupported, "an upload stream cannot be read"))
    }

    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.put(offset, Piece::Data(data)).await
    }

    async fn zero(&self, offset: u64, len: u64) -> Result<bool> {
        if len > 0 {
            self.put(offset, Piece::Zero(len)).await?;
        }
        Ok(true)
    }

    /// Before the whole disk has been written there is nothing to make durable (the stream is
    /// not finished); once it has, this ends the stream and waits for the proxy's answer.
    async fn flush(&self) -> Result<()> {
        let complete = {
            let mut st = self.inner.state.lock().await;
            if st.next == self.inner.size {
                st.tx = None;
                true
            } else {
                false
            }
        };
        if complete {
            self.finish().await
        } else {
            Ok(())
        }
    }
}

type Encoder = zstd::stream::write::Encoder<'static, Vec<u8>>;

/// Turn pieces into wire bytes (compressed or not) off the async threads.
async fn encode(
    enc: Option<Encoder>,
    piece: Option<Piece>,
) -> std::result::Result<(Option<Encoder>, Vec<Bytes>), String> {
    tokio::task::spawn_blocking(move || {
        let mut enc = enc;
        let mut out = Vec::new();
        match (&mut enc, piece) {
            (None, Some(Piece::Data(b))) => out.push(b),
            (None, Some(Piece::Zero(mut n))) => {
                while n > 0 {
                    let k = n.min(ZEROES.len() as u64) as usize;
                    out.push(Bytes::from_static(&ZEROES[..k]));
                    n -= k as u64;
                }
            }
            (None, None) => {}
            (Some(e), Some(p)) => {
                match p {
                    Piece::Data(b) => e.write_all(&b).map_err(|e| e.to_string())?,
                    Piece::Zero(mut n) => {
                        while n > 0 {
                            let k = n.min(ZEROES.len() as u64) as usize;
                            e.write_all(&ZEROES[..k]).map_err(|e| e.to_string())?;
                            n -= k as u64;
                        }
                    }
                }
                let buf = std::mem::take(e.get_mut());
                if !buf.is_empty() {
                    out.push(Bytes::from(buf));
                }
            }
            (Some(_), None) => {
                let e = enc.take().ok_or("encoder vanished")?;
                let buf = e.finish().map_err(|e| e.to_string())?;
                if !buf.is_empty() {
                    out.push(Bytes::from(buf));
                }
            }
        }
        Ok((enc, out))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The one task that owns the HTTP request(s).
async fn pump(
    client: reqwest::Client,
    cfg: UploadConfig,
    mut rx: mpsc::Receiver<Piece>,
    stats: Arc<UploadStats>,
) -> std::result::Result<(), KubevirtError> {
    let fail = |reason: String| KubevirtError::Upload { volume: cfg.volume.clone(), reason };
    let mut enc: Option<Encoder> = if cfg.compression {
        Some(Encoder::new(Vec::new(), 3).map_err(|e| fail(format!("zstd init: {e}")))?)
    } else {
        None
    };
    let mut replay: Vec<Bytes> = Vec::new();
    let mut replay_bytes = 0usize;
    let mut replayable = true;
    let mut input_done = false;
    let mut delay = cfg.backoff;
    for attempt in 1..=cfg.max_attempts.max(1) {
        stats.attempts.fetch_add(1, Ordering::Relaxed);
        let (btx, brx) = mpsc::channel::<std::result::Result<Bytes, std::io::Error>>(4);
        let body = reqwest::Body::wrap_stream(tokio_stream_from(brx));
        let req = client
            .post(&cfg.url)
            .bearer_auth(&cfg.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send();
        let resp = tokio::spawn(req);
        let mut fed = true;
        for b in &replay {
            if btx.send(Ok(b.clone())).await.is_err() {
                fed = false;
                break;
            }
        }
        while fed && !input_done {
            let piece = rx.recv().await;
            if piece.is_none() {
                input_done = true;
            }
            let (e, out) = encode(enc.take(), piece).await.map_err(|e| fail(format!("compressing: {e}")))?;
            enc = e;
            for b in out {
                stats.sent.fetch_add(b.len() as u64, Ordering::Relaxed);
                if replayable {
                    replay_bytes += b.len();
                    if replay_bytes > cfg.replay_limit {
                        replayable = false;
                        replay = Vec::new();
                    } else {
                        replay.push(b.clone());
                    }
                }
                if btx.send(Ok(b)).await.is_err() {
                    fed = false;
                    break;
                }
            }
        }
        drop(btx);
        let answer = resp.await.map_err(|e| fail(format!("request task: {e}")))?;
        match answer {
            Ok(r) if r.status().is_success() && input_done && fed => {
                tracing::info!(volume = %cfg.volume, copied = stats.bytes_copied(), sent = stats.bytes_sent(), "upload complete");
                return Ok(());
            }
            Ok(r)
                if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    && replayable
                    && attempt < cfg.max_attempts =>
            {
                tracing::debug!(volume = %cfg.volume, attempt, "upload proxy not ready (503), retrying");
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                return Err(fail(format!("proxy answered {status}: {}", text.trim())));
            }
            // A proxy that answers 503 early and closes may surface as a broken pipe while we
            // still write the body: while everything sent can be replayed, any failure is retried.
            Err(e) if replayable && attempt < cfg.max_attempts => {
                tracing::debug!(volume = %cfg.volume, attempt, error = %e, "upload request failed, retrying");
            }
            Err(e) => return Err(fail(format!("connection failed: {}", without_url(&e)))),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Err(fail("upload proxy stayed unavailable".into()))
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
