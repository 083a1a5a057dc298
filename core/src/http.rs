//! HTTP(S) range reader transport: a read-only [`BlockTransport`] over `Range` GETs, as a
//! hypervisor's datastore file service serves disks.
//!
//! Every read is one `Range: bytes=a-b` GET whose `Content-Range` must match exactly; a server
//! that ignores `Range` (200 with the whole file) is an [`ErrorCode::HttpRange`] error, never
//! silently wrong data. Clones share one keep-alive pool, so parallel workers reuse connections.
//! 5xx answers and dropped connections are retried with backoff, then reported as the transient
//! [`ErrorCode::HttpStatus`] / [`ErrorCode::HttpConnect`].
//!
//! TLS ([`TlsOptions`], [`build_client`]) is shared with the sources' API clients: a CA bundle, a
//! pinned SHA-256 leaf thumbprint (accepts exactly that certificate, even self-signed), or, for
//! labs only, no verification. Plain `http://` is allowed only to loopback addresses.
//!
//! ```no_run
//! use vmigrate_core::http::{HttpOptions, HttpTransport};
//! use vmigrate_core::BlockTransport;
//! # async fn demo() -> vmigrate_core::Result<()> {
//! let mut opts = HttpOptions::default();
//! opts.tls.thumbprint_sha256 = Some("AB:CD:...".into());
//! let disk = HttpTransport::open("https://esxi.lab/folder/vm/vm-flat.vmdk?dsName=ds1", opts).await?;
//! let first = disk.read_at(0, 512).await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};

use crate::buf::{is_zero, shared_zeroes};
use crate::error::{Error, ErrorCode, Result};
use crate::tls::{normalise_thumbprint, LeafVerifier};
pub use crate::tls::{thumbprint_sha1, thumbprint_sha256, TlsOptions};
use crate::transport::BlockTransport;

/// Supplies fresh request headers when the server refuses the current ones with 401 or 403,
/// as a datastore file service does once the session cookie has expired.
///
/// The transport calls it at most once per request, then repeats the request with the
/// returned headers; every clone of the transport shares the refreshed headers.
#[async_trait]
pub trait HeaderRefresh: Send + Sync + fmt::Debug {
    /// Return the headers to use from now on. `rejected` holds the values that were refused, so
    /// an implementation shared by parallel readers can see whether another one already
    /// refreshed them and return the newer values without logging in twice.
    ///
    /// # Errors
    /// Whatever stops the refresh (a refused login); it is returned to the reader.
    async fn refresh(&self, rejected: &[(String, String)]) -> Result<Vec<(String, String)>>;
}

/// Options of [`HttpTransport::open`].
#[derive(Clone)]
pub struct HttpOptions {
    /// Extra request headers, e.g. a source's session cookie. Values are never logged.
    pub headers: Vec<(String, String)>,
    /// Certificate trust.
    pub tls: TlsOptions,
    /// Parallel connections the engine may use (default 4).
    pub connections: usize,
    /// Retries of a failed request (5xx, dropped connection) before giving up (default 5).
    pub retries: u32,
    /// Connect and per-read inactivity timeout (default 60 s).
    pub timeout: Duration,
    /// Called on 401/403 for new headers (an expired session cookie); `None` makes those
    /// answers plain [`ErrorCode::HttpStatus`] errors.
    pub refresh: Option<Arc<dyn HeaderRefresh>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            headers: Vec::new(),
            tls: TlsOptions::default(),
            connections: 4,
            retries: 5,
            timeout: Duration::from_secs(60),
            refresh: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values carry session cookies: show names only.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("HttpOptions")
            .field("headers", &names)
            .field("tls", &self.tls)
            .field("connections", &self.connections)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .field("refresh", &self.refresh.is_some())
            .finish()
    }
}

/// Normalise a thumbprint to lower-case hex without separators: 64 digits (SHA-256) or 40
/// (SHA-1).
/// Build the HTTP client every vmigrate HTTPS peer uses (datastore downloads, source APIs), so
/// CA files, thumbprint pins and `insecure` mean the same everywhere.
///
/// `timeout` bounds connecting and each wait for data; `max_idle` is the keep-alive pool size
/// per host. The client speaks HTTP/1.1 (parallel ranges go over parallel connections).
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unparsable CA bundle or thumbprint, [`ErrorCode::Internal`] if
/// the TLS stack cannot be set up.
pub fn build_client(tls: &TlsOptions, timeout: Duration, max_idle: usize) -> Result<reqwest::Client> {
    let b = reqwest::Client::builder()
        .http1_only()
        .connect_timeout(timeout)
        .read_timeout(timeout)
        .pool_max_idle_per_host(max_idle.max(1))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    apply_tls(b, tls)?.build().map_err(|e| Error::new(ErrorCode::Internal, "building http client").with_source(e))
}

/// Apply `tls` to a client builder whose other settings the caller chose (a SOAP client wants
/// longer reads for `WaitForUpdatesEx`, TLS info to learn the peer certificate, its own user
/// agent); the trust decision is the same code as [`build_client`].
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unparsable CA bundle or thumbprint, [`ErrorCode::Internal`] if
/// the TLS stack cannot be set up.
pub fn apply_tls(mut b: reqwest::ClientBuilder, tls: &TlsOptions) -> Result<reqwest::ClientBuilder> {
    if let Some(pin) = &tls.thumbprint_sha256 {
        let pin_hex = normalise_thumbprint(pin)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(LeafVerifier { pin_hex: Some(pin_hex), provider: provider.clone() });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::new(ErrorCode::Internal, "setting up tls").with_source(e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        b = b.use_preconfigured_tls(config);
    } else {
        if let Some(pem) = &tls.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::new(ErrorCode::BadUrl, "tls ca bundle is not valid pem").with_source(e))?;
            if certs.is_empty() {
                return Err(Error::new(ErrorCode::BadUrl, "tls ca bundle holds no certificate"));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if tls.insecure {
            tracing::warn!("tls verification disabled");
            b = b.danger_accept_invalid_certs(true);
        }
    }
    Ok(b)
}

/// Whether an error chain holds a TLS failure (rustls hides inside `std::io::Error`).
fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>() || is_tls_error(inner)) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Classify a `reqwest` error: TLS failures are [`ErrorCode::HttpTls`], everything on the way
/// (connect, timeout, reset, truncated body) [`ErrorCode::HttpConnect`], the rest
/// [`ErrorCode::HttpStatus`]. `context` says what was being done (no secrets).
pub fn classify_error(context: &str, e: reqwest::Error) -> Error {
    let code = if is_tls_error(&e) {
        ErrorCode::HttpTls
    } else if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() || e.is_decode() {
        ErrorCode::HttpConnect
    } else {
        ErrorCode::HttpStatus
    };
    Error::new(code, context.to_owned()).with_source(e.without_url())
}

/// The URL without user info, safe for messages.
fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

fn check_url(url: &str) -> Result<Url> {
    let u = Url::parse(url).map_err(|e| Error::new(ErrorCode::BadUrl, "bad http url").with_source(e))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" => {
            let host = u.host_str().unwrap_or("");
            let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
            let loopback = host.eq_ignore_ascii_case("localhost") || ip.is_ok_and(|a| a.is_loopback());
            if loopback {
                Ok(u)
            } else {
                Err(Error::new(
                    ErrorCode::BadUrl,
                    format!("plain http is only allowed to loopback, use https: {}", redacted(&u)),
                ))
            }
        }
        s => Err(Error::new(ErrorCode::BadUrl, format!("unsupported url scheme {s:?} (want http or https)"))),
    }
}

/// Parse `Content-Range: bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = if total == "*" { None } else { Some(total.parse().ok()?) };
    Some((a.parse().ok()?, b.parse().ok()?, total))
}

/// The request headers in force: refreshed in place (for every clone) by [`HeaderRefresh`].
struct Headers {
    map: HeaderMap,
    raw: Vec<(String, String)>,
}

struct Inner {
    client: reqwest::Client,
    url: Url,
    shown: String,
    headers: std::sync::RwLock<Headers>,
    size: u64,
    opts: HttpOptions,
    /// Bodies land in page-aligned, reused buffers: a block-device target writes them with
    /// `O_DIRECT`, and no request pays a fresh allocation.
    pool: Arc<crate::buf::BufPool>,
}

impl Inner {
    fn header_map(&self) -> HeaderMap {
        self.headers.read().map(|h| h.map.clone()).unwrap_or_default()
    }

    /// Ask the [`HeaderRefresh`] for new headers after a 401/403 and install them.
    async fn refresh_headers(&self) -> Result<()> {
        let Some(r) = &self.opts.refresh else { return Ok(()) };
        let rejected = self.headers.read().map(|h| h.raw.clone()).unwrap_or_default();
        let fresh = r.refresh(&rejected).await?;
        let map = header_map(&fresh)?;
        if let Ok(mut h) = self.headers.write() {
            *h = Headers { map, raw: fresh };
        }
        tracing::debug!(url = %self.shown, "http headers refreshed after an authentication refusal");
        Ok(())
    }
}

fn header_map(raw: &[(String, String)]) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (k, v) in raw {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| Error::new(ErrorCode::BadUrl, format!("invalid http header name {k:?}")))?;
        let mut value = HeaderValue::from_str(v)
            .map_err(|_| Error::new(ErrorCode::BadUrl, format!("invalid value for http header {k:?}")))?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// A read-only [`BlockTransport`] over HTTP(S) `Range` requests.
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport").field("url", &self.inner.shown).field("size", &self.inner.size).finish()
    }
}

/// One failed attempt: the error and whether trying again may help.
struct Attempt {
    error: Error,
    retry: bool,
    /// 401/403: new headers (a fresh session cookie) may help.
    unauthorized: bool,
}

impl Attempt {
    fn fatal(error: Error) -> Self {
        Attempt { error, retry: false, unauthorized: false }
    }
    fn transient(error: Error) -> Self {
        Attempt { error, retry: true, unauthorized: false }
    }
}

/// The status of a refused HTTP request, attached as the cause of [`ErrorCode::HttpStatus`]
/// errors so callers (a source mapping 404 to a missing datastore file) can tell a 404
/// from a 503 without reading messages. Find it with [`http_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStatusError {
    /// The status code.
    pub status: u16,
}

impl fmt::Display for HttpStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match StatusCode::from_u16(self.status) {
            Ok(s) => write!(f, "{s}"),
            Err(_) => write!(f, "{}", self.status),
        }
    }
}

impl std::error::Error for HttpStatusError {}

/// The HTTP status behind an error of this module, if it was a refused request.
pub fn http_status(e: &Error) -> Option<u16> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<HttpStatusError>() {
            return Some(s.status);
        }
        cur = err.source();
    }
    None
}

fn status_error(what: &str, shown: &str, status: StatusCode) -> Attempt {
    let e = Error::new(ErrorCode::HttpStatus, format!("http {what} {shown}: server answered {status}"))
        .with_source(HttpStatusError { status: status.as_u16() });
    let retry =
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    let unauthorized = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    Attempt { error: e, retry, unauthorized }
}

async fn with_retries<T, F, Fut>(t: &Inner, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Attempt>>,
{
    let retries = t.opts.retries;
    let mut attempt = 0u32;
    let mut refreshed = false;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(a) if a.unauthorized && !refreshed && t.opts.refresh.is_some() => {
                tracing::debug!(error = %a.error.report(), "http {what} refused; refreshing headers");
                refreshed = true;
                t.refresh_headers().await?;
            }
            Err(a) if a.retry && attempt < retries => {
                let delay = Duration::from_millis(100u64 << attempt.min(6)).min(Duration::from_secs(5));
                tracing::debug!(attempt, ?delay, error = %a.error.report(), "retrying http {what}");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(a) => return Err(a.error),
        }
    }
}

impl HttpTransport {
    /// Open `url` (https, or http to loopback) and learn its size.
    ///
    /// The size comes from a HEAD's `Content-Length`, or else from a one-byte range GET's
    /// `Content-Range`.
    ///
    /// # Errors
    /// [`ErrorCode::BadUrl`] for bad URLs, headers or TLS options; [`ErrorCode::HttpTls`] when the
    /// certificate is refused; [`ErrorCode::HttpStatus`] (404 and others, status in the message);
    /// [`ErrorCode::HttpConnect`] when the server cannot be reached after retries;
    /// [`ErrorCode::HttpRange`] when the server does not serve byte ranges.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn open(url: &str, opts: HttpOptions) -> Result<HttpTransport> {
        let url = check_url(url)?;
        let shown = redacted(&url);
        let headers = std::sync::RwLock::new(Headers { map: header_map(&opts.headers)?, raw: opts.headers.clone() });
        let client = build_client(&opts.tls, opts.timeout, opts.connections)?;
        let mut t = Inner { client, url, shown, headers, size: 0, opts, pool: crate::buf::BufPool::new() };
        t.size = with_retries(&t, "size", || probe_size(&t)).await?;
        tracing::debug!(url = %t.shown, size = t.size, "http source opened");
        Ok(HttpTransport { inner: Arc::new(t) })
    }
}

async fn probe_size(t: &Inner) -> std::result::Result<u64, Attempt> {
    let head = t.client.head(t.url.clone()).headers(t.header_map()).send().await;
    let head = head.map_err(|e| retry_on_connect(classify_error(&format!("http HEAD {}", t.shown), e)))?;
    let status = head.status();
    if status.is_success() {
        let len = head.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = len {
            return Ok(len);
        }
    } else if status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::NOT_IMPLEMENTED {
        return Err(status_error("HEAD", &t.shown, status));
    }
    // No usable HEAD: ask for one byte and read the total from Content-Range.
    let resp = t.client.get(t.url.clone()).headers(t.header_map()).header(RANGE, "bytes=0-0").send().await;
    let resp = resp.map_err(|e| retry_on_connect(classify_error(&format!("http GET {}", t.shown), e)))?;
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        if resp.status().is_success() {
            return Err(Attempt::fatal(range_error(&t.shown, "answered a range request with the whole file")));
        }
        return Err(status_error("GET", &t.shown, resp.status()));
    }
    let cr = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range);
    match cr {
        Some((_, _, Some(total))) => Ok(total),
        _ => Err(Attempt::fatal(range_error(&t.shown, "sent no total size in Content-Range"))),
    }
}

fn retry_on_connect(e: Error) -> Attempt {
    let retry = e.code() == ErrorCode::HttpConnect;
    Attempt { error: e, retry, unauthorized: false }
}

fn range_error(shown: &str, what: &str) -> Error {
    Error::new(ErrorCode::HttpRange, format!("http server for {shown} {what}"))
}

/// Largest range asked in one GET: at 1 MiB a body is still in the CPU cache through the HTTP
/// stack's buffer, ours, the zero scan and the write (measured: docs/perf-notes.md,
/// "Request sizes").
const RANGE_MAX: usize = 1 << 20;

async fn read_range(t: &Inner, offset: u64, len: usize) -> std::result::Result<Bytes, Attempt> {
    let last = offset + len as u64 - 1;
    let resp = t
        .client
        .get(t.url.clone())
        .headers(t.header_map())
        .header(RANGE, format!("bytes={offset}-{last}"))
        .send()
        .await
        .map_err(|e| retry_on_connect(classify_error(&format!("http GET {} at {offset}", t.shown), e)))?;
    let status = resp.status();
    if status == StatusCode::OK {
        return Err(Attempt::fatal(range_error(&t.shown, "ignored the Range header (200 instead of 206)")));
    }
    if status != StatusCode::PARTIAL_CONTENT {
        return Err(status_error("GET", &t.shown, status));
    }
    let cr = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(parse_content_range);
    match cr {
        Some((a, b, _)) if a == offset && b == last => {}
        other => {
            return Err(Attempt::fatal(range_error(
                &t.shown,
                &format!("answered bytes {offset}-{last} with Content-Range {other:?}"),
            )))
        }
    }
    let mut resp = resp;
    let mut buf = t.pool.take(len);
    let mut got = 0;
    // While every chunk so far was zeroes nothing is copied: a range of zeroes (a disk's
    // unallocated space, which HTTP cannot tell apart) comes back as the shared zero buffer.
    // The check runs on each chunk while it is still in the CPU cache.
    let mut all_zero = true;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if got + chunk.len() > len {
                    return Err(Attempt::fatal(range_error(
                        &t.shown,
                        &format!("sent more than the {len} bytes asked"),
                    )));
                }
                if all_zero {
                    if is_zero(&chunk) {
                        got += chunk.len();
                        continue;
                    }
                    all_zero = false;
                    buf[..got].fill(0);
                }
                buf[got..got + chunk.len()].copy_from_slice(&chunk);
                got += chunk.len();
            }
            Ok(None) => break,
            Err(e) => {
                let ctx = format!("http GET {} at {offset}: body interrupted after {got} bytes", t.shown);
                return Err(Attempt::transient(classify_error(&ctx, e)));
            }
        }
    }
    if got < len {
        return Err(Attempt::fatal(Error::new(
            ErrorCode::ShortRead,
            format!("http GET {} at {offset}: got {got} of {len} bytes", t.shown),
        )));
    }
    if all_zero {
        if let Some(z) = shared_zeroes(len) {
            return Ok(z);
        }
        buf.fill(0);
    }
    Ok(buf.freeze())
}

#[async_trait]
impl BlockTransport for HttpTransport {
    fn size(&self) -> u64 {
        self.inner.size
    }

    fn max_connections(&self) -> usize {
        self.inner.opts.connections.max(1)
    }

    fn max_request(&self) -> usize {
        RANGE_MAX
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let t = &self.inner;
        match offset.checked_add(len as u64) {
            Some(end) if end <= t.size => {}
            _ => {
                return Err(Error::new(
                    ErrorCode::OutOfBounds,
                    format!("http read [{offset}, +{len}) beyond size {}", t.size),
                ))
            }
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        with_retries(t, "read", || read_range(t, offset, len)).await
    }

    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, format!("http source {} is read-only", self.inner.shown)))
    }

    async fn zero(&self, _offset: u64, _len: u64) -> Result<bool> {
        Err(Error::new(ErrorCode::TransportUnsupported, format!("http source {} is read-only", self.inner.shown)))
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_http_only_to_loopback() {
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://[::1]/x").is_ok());
        assert!(check_url("https://esxi.example/folder/x").is_ok());
        for bad in ["http://10.0.0.1/x", "http://esxi.example/x", "ftp://127.0.0.1/x", "not a url"] {
            assert_eq!(check_url(bad).unwrap_err().code(), ErrorCode::BadUrl, "{bad}");
        }
        let e = check_url("http://user:secret@10.1.1.1/x").unwrap_err();
        assert!(!e.report().contains("secret"));
    }

    #[test]
    fn content_range_and_thumbprints() {
        assert_eq!(parse_content_range("bytes 0-0/1234"), Some((0, 0, Some(1234))));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19, None)));
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        let t = thumbprint_sha256(b"abc");
        assert!(t.starts_with("BA:78:16:BF") && t.len() == 95);
        assert_eq!(normalise_thumbprint(&t).unwrap(), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"abc")));
        assert_eq!(normalise_thumbprint("AB:CD").unwrap_err().code(), ErrorCode::BadUrl);
        assert_eq!(thumbprint_sha1(b"abc"), "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D");
        assert_eq!(normalise_thumbprint(&thumbprint_sha1(b"abc")).unwrap(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn options_debug_hides_header_values() {
        let o = HttpOptions { headers: vec![("Cookie".into(), "soap_session=SECRET".into())], ..Default::default() };
        let d = format!("{o:?}");
        assert!(d.contains("Cookie") && !d.contains("SECRET"));
    }
}
