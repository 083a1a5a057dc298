//! NBD URIs as libnbd and qemu spell them: `nbd://host[:port]/export` and
//! `nbd+unix:///export?socket=/path`, and their TLS forms `nbds://` and `nbds+unix://` with
//! libnbd's `tls-certificates=DIR`, `tls-verify-peer=false` and `tls-hostname=NAME`, plus
//! `tls-thumbprint=SHA256` (ours: pin the server certificate, as for an HTTPS source).

use std::path::PathBuf;

use crate::error::{Error, ErrorCode, Result};

/// The IANA port for NBD, used when a `nbd://` URI names none.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddr {
    /// TCP host (name or address; IPv6 without brackets) and port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for NbdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            NbdAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            NbdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The TLS part of an `nbds` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// `tls-certificates=DIR`: `ca-cert.pem` to trust, and `client-cert.pem` / `client-key.pem`
    /// when the server wants a client certificate (the layout qemu and nbdkit use).
    pub certificates: Option<PathBuf>,
    /// `tls-verify-peer=false` turns certificate verification off.
    pub verify_peer: bool,
    /// `tls-hostname=NAME`: the name the server certificate must carry (default: the URI's
    /// host; `localhost` for a Unix socket).
    pub hostname: Option<String>,
    /// `tls-thumbprint=SHA256`: accept exactly the certificate with this digest.
    pub thumbprint: Option<String>,
}

fn bad(uri: &str, why: &str) -> Error {
    Error::new(ErrorCode::BadUrl, format!("bad nbd uri {uri:?}: {why}"))
}

fn percent_decode(s: &str, uri: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or_else(|| bad(uri, "truncated percent escape"))?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad(uri, "bad percent escape"));
            }
            let hex = std::str::from_utf8(hex).map_err(|_| bad(uri, "bad percent escape"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(uri, "bad percent escape"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad(uri, "escaped bytes are not utf-8"))
}

/// Parse an NBD URI into an address and export name (see [`parse_uri_tls`] for `nbds`).
///
/// # Errors
/// As [`parse_uri_tls`].
pub fn parse_uri(uri: &str) -> Result<(NbdAddr, String)> {
    parse_uri_tls(uri).map(|(a, e, _)| (a, e))
}

/// Parse an NBD URI into an address, an export name and, for `nbds` schemes, its TLS settings.
///
/// # Errors
/// [`ErrorCode::BadUrl`] for other schemes (vsock and TLS pre-shared keys are not supported),
/// TLS parameters on a plain `nbd` URI, a missing `socket=` for `nbd+unix`, a host given with
/// `nbd+unix`, or malformed ports, escapes and booleans.
pub fn parse_uri_tls(uri: &str) -> Result<(NbdAddr, String, Option<TlsParams>)> {
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad(uri, "missing scheme"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let export = percent_decode(path, uri)?;
    let mut socket = None;
    let mut tls = TlsParams { certificates: None, verify_peer: true, hostname: None, thumbprint: None };
    let mut tls_given = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v, uri)?;
        tls_given |= k.starts_with("tls-");
        match k {
            "socket" => socket = Some(v),
            "tls-certificates" => tls.certificates = Some(PathBuf::from(v)),
            "tls-verify-peer" => {
                tls.verify_peer = match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" => false,
                    _ => return Err(bad(uri, "tls-verify-peer wants true or false")),
                }
            }
            "tls-hostname" => tls.hostname = Some(v),
            "tls-thumbprint" => tls.thumbprint = Some(v),
            "tls-psk-file" => return Err(bad(uri, "tls pre-shared keys are not supported; use certificates")),
            _ => {}
        }
    }
    let scheme = scheme.to_ascii_lowercase();
    let (plain, tls) = match scheme.as_str() {
        "nbds" => ("nbd", Some(tls)),
        "nbds+unix" => ("nbd+unix", Some(tls)),
        s if tls_given && matches!(s, "nbd" | "nbd+tcp" | "nbd+unix") => {
            return Err(bad(uri, "tls parameters need an nbds:// or nbds+unix:// uri"))
        }
        s => (s, None),
    };
    let (addr, export) = match plain {
        "nbd" | "nbd+tcp" => {
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
                let (h, tail) = v6.split_once(']').ok_or_else(|| bad(uri, "unclosed [ in host"))?;
                (h, tail.strip_prefix(':'))
            } else {
                match authority.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                }
            };
            if host.is_empty() {
                return Err(bad(uri, "missing host"));
            }
            let port = match port {
                Some(p) if !p.is_empty() => p.parse::<u16>().map_err(|_| bad(uri, "bad port"))?,
                _ => DEFAULT_PORT,
            };
            (NbdAddr::Tcp { host: host.to_owned(), port }, export)
        }
        "nbd+unix" => {
            if !authority.is_empty() && !authority.ends_with('@') {
                return Err(bad(uri, "nbd+unix takes no host"));
            }
            let socket = socket.filter(|s| !s.is_empty()).ok_or_else(|| bad(uri, "nbd+unix needs ?socket=PATH"))?;
            (NbdAddr::Unix(PathBuf::from(socket)), export)
        }
        "nbd+vsock" | "nbds+vsock" => return Err(bad(uri, "vsock nbd transports are not supported")),
        _ => return Err(bad(uri, "scheme is not nbd://, nbd+unix://, nbds:// or nbds+unix://")),
    };
    Ok((addr, export, tls))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_forms() {
        assert_eq!(
            parse_uri("nbd://example.com").unwrap(),
            (NbdAddr::Tcp { host: "example.com".into(), port: 10809 }, String::new())
        );
        assert_eq!(
            parse_uri("nbd://10.0.0.1:1234/disk%200").unwrap(),
            (NbdAddr::Tcp { host: "10.0.0.1".into(), port: 1234 }, "disk 0".into())
        );
        assert_eq!(parse_uri("nbd://[::1]:99/x").unwrap(), (NbdAddr::Tcp { host: "::1".into(), port: 99 }, "x".into()));
        assert_eq!(
            parse_uri("nbd+unix:///foo?socket=/tmp/nbd.sock").unwrap(),
            (NbdAddr::Unix("/tmp/nbd.sock".into()), "foo".into())
        );
        assert_eq!(
            parse_uri("nbd+unix:///?socket=/tmp/a%20b.sock").unwrap(),
            (NbdAddr::Unix("/tmp/a b.sock".into()), String::new())
        );
        assert_eq!(NbdAddr::Tcp { host: "::1".into(), port: 5 }.to_string(), "[::1]:5");
    }

    #[test]
    fn parses_tls_forms() {
        let (a, e, t) = parse_uri_tls("nbds://h:1/x?tls-certificates=/pki%20dir&tls-hostname=nbd.lab").unwrap();
        assert_eq!((a, e), (NbdAddr::Tcp { host: "h".into(), port: 1 }, "x".into()));
        let t = t.unwrap();
        assert_eq!(t.certificates, Some(PathBuf::from("/pki dir")));
        assert_eq!(t.hostname.as_deref(), Some("nbd.lab"));
        assert!(t.verify_peer && t.thumbprint.is_none());
        let (a, _, t) = parse_uri_tls("nbds+unix:///?socket=/s&tls-verify-peer=false&tls-thumbprint=AB:CD").unwrap();
        assert_eq!(a, NbdAddr::Unix("/s".into()));
        let t = t.unwrap();
        assert!(!t.verify_peer && t.thumbprint.as_deref() == Some("AB:CD"));
        assert_eq!(parse_uri_tls("nbd://h/x").unwrap().2, None);
    }

    #[test]
    fn rejects_bad_forms_with_bad_url() {
        for u in [
            "nbd+unix:///foo",
            "nbds://host/x?tls-psk-file=/k",
            "nbd://host/x?tls-certificates=/d",
            "nbds://host/x?tls-verify-peer=maybe",
            "nbd+vsock://1/x",
            "http://host/x",
            "nbd://:12/x",
            "nbd://h:99999/x",
            "nbd://h/%zz",
            "nbd+unix://host/x?socket=/s",
            "nbd",
        ] {
            let e = parse_uri(u).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadUrl, "{u}");
        }
    }
}
