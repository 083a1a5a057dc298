//! Open a [`BlockTransport`] from what a user types: a path, an NBD URI or an HTTP(S) URL.
//!
//! | spec                                   | transport                                   |
//! |----------------------------------------|---------------------------------------------|
//! | `nbd://host[:port]/export`             | NBD client over TCP                         |
//! | `nbd+unix:///export?socket=/path`      | NBD client over a Unix socket               |
//! | `nbds://…`, `nbds+unix://…`            | the same over TLS (`tls-certificates=DIR`, `tls-thumbprint=`, `tls-verify-peer=false`) |
//! | `http://…`, `https://…` (source only)  | HTTP Range reader                           |
//! | `….vmdk` (source only)                 | VMDK reader (descriptor, sparse, stream)    |
//! | anything else                          | raw file or block device                    |
//!
//! This is the one place that maps user text to transports, so `vmigrate copy`, the examples
//! and the bindings accept the same forms.

use vmigrate_core::file::{FileOptions, FileTransport};
use vmigrate_core::{BlockTransport, Error, ErrorCode, Result};

/// What the transport will be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read from.
    Source,
    /// Written to. A file target is created (or truncated) sparse at `create_size` when given,
    /// otherwise opened as it is (resuming, or a block device).
    Target {
        /// Size to create a file target at.
        create_size: Option<u64>,
    },
}

/// How to open transports, beyond what the spec says: the settings a user may tune on the
/// command line (`vmigrate copy --nbd-timeout`) or in the copy options of the bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportOptions {
    /// Deadline for one NBD request's reply (`None`: [`NbdOptions`]'s default, 10 minutes): a
    /// stalled server is then a [`ErrorCode::Timeout`] instead of a wait without end.
    ///
    /// [`NbdOptions`]: vmigrate_core::nbd::NbdOptions
    pub nbd_request_timeout: Option<std::time::Duration>,
}

impl TransportOptions {
    /// These options with an NBD request deadline.
    #[must_use]
    pub fn with_nbd_request_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.nbd_request_timeout = timeout;
        self
    }
}

/// The kind of transport a spec names, decided without opening anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecKind {
    /// An NBD URI.
    Nbd,
    /// An HTTP(S) URL.
    Http,
    /// A VMDK file.
    Vmdk,
    /// A raw file or block device path.
    File,
}

/// Classify a spec (see the module table).
pub fn spec_kind(spec: &str) -> SpecKind {
    let lower = spec.to_ascii_lowercase();
    if ["nbd://", "nbd+unix://", "nbds://", "nbds+unix://"].iter().any(|p| lower.starts_with(p)) {
        SpecKind::Nbd
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        SpecKind::Http
    } else if lower.ends_with(".vmdk") {
        SpecKind::Vmdk
    } else {
        SpecKind::File
    }
}

/// Open the transport `spec` names for `role`.
///
/// # Errors
/// [`ErrorCode::BadUrl`] for a malformed or unsupported spec (an HTTP or VMDK target, an
/// unknown scheme, a transport not built in); otherwise the transport's own open errors.
///
/// # Cancel safety
/// Dropping the future may leave a created target file behind.
pub async fn open_transport(spec: &str, role: Role) -> Result<Box<dyn BlockTransport>> {
    open_transport_with(spec, role, &TransportOptions::default()).await
}

/// [`open_transport`] with [`TransportOptions`].
///
/// # Errors
/// As [`open_transport`].
pub async fn open_transport_with(
    spec: &str,
    role: Role,
    options: &TransportOptions,
) -> Result<Box<dyn BlockTransport>> {
    let target = matches!(role, Role::Target { .. });
    match spec_kind(spec) {
        SpecKind::Nbd => open_nbd(spec, options).await,
        SpecKind::Http if target => Err(Error::new(ErrorCode::BadUrl, "an http(s) url can only be a source")),
        SpecKind::Http => open_http(spec).await,
        SpecKind::Vmdk if target => {
            Err(Error::new(ErrorCode::BadUrl, format!("{spec}: writing vmdk is not supported; use a raw target")))
        }
        SpecKind::Vmdk => vmigrate_vsphere::vmdk::open_vmdk(std::path::Path::new(spec)).await,
        SpecKind::File => {
            if spec.contains("://") {
                return Err(Error::new(ErrorCode::BadUrl, format!("unsupported url scheme in {spec}")));
            }
            let opts = match role {
                Role::Source => FileOptions::default(),
                Role::Target { create_size } => FileOptions { write: true, create_size, direct: false },
            };
            Ok(Box::new(FileTransport::open(spec, opts).await?))
        }
    }
}

async fn open_nbd(spec: &str, options: &TransportOptions) -> Result<Box<dyn BlockTransport>> {
    let mut opts = vmigrate_core::nbd::NbdOptions::default();
    if let Some(t) = options.nbd_request_timeout {
        opts.request_timeout = t;
    }
    Ok(Box::new(vmigrate_core::nbd::NbdTransport::connect_uri(spec, opts).await?))
}

async fn open_http(spec: &str) -> Result<Box<dyn BlockTransport>> {
    let opts = vmigrate_core::http::HttpOptions::default();
    Ok(Box::new(vmigrate_core::http::HttpTransport::open(spec, opts).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_specs() {
        assert_eq!(spec_kind("nbd://localhost:10809/disk"), SpecKind::Nbd);
        assert_eq!(spec_kind("nbd+unix:///disk?socket=/tmp/s"), SpecKind::Nbd);
        assert_eq!(spec_kind("nbds://h/disk?tls-thumbprint=AB"), SpecKind::Nbd);
        assert_eq!(spec_kind("nbds+unix:///disk?socket=/tmp/s"), SpecKind::Nbd);
        assert_eq!(spec_kind("HTTPS://h/x.raw"), SpecKind::Http);
        assert_eq!(spec_kind("/data/vm-flat.vmdk"), SpecKind::Vmdk);
        assert_eq!(spec_kind("/dev/sdb"), SpecKind::File);
    }

    #[tokio::test]
    async fn refuses_bad_roles_and_schemes() {
        let t = Role::Target { create_size: Some(1) };
        let e = open_transport("http://x/y", t).await.expect_err("http target");
        assert_eq!(e.code(), ErrorCode::BadUrl);
        let e = open_transport("ftp://x/y", Role::Source).await.expect_err("ftp");
        assert_eq!(e.code(), ErrorCode::BadUrl);
        let e = open_transport("a.vmdk", t).await.expect_err("vmdk target");
        assert_eq!(e.code(), ErrorCode::BadUrl);
    }
}
