//! What to negotiate and how to connect ([`NbdOptions`], [`NbdTls`]), and what the handshake
//! negotiated ([`ExportInfo`]).

use std::sync::Arc;
use std::time::Duration;

use super::proto::*;
use super::{ClientCertificate, NbdAddr, TlsOptions, TlsParams};
use crate::error::{Error, ErrorCode, Result};

/// How to connect and what to negotiate.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    /// Connections the engine may open when the server allows multi-conn (default 4).
    pub connections: usize,
    /// Also negotiate `qemu:dirty-bitmap:<name>` so
    /// [`ExtentKind::Changed`](crate::transport::ExtentKind::Changed) works (qemu-nbd
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
    pub(super) config: Arc<rustls::ClientConfig>,
    pub(super) server_name: rustls::pki_types::ServerName<'static>,
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
