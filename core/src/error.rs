//! The one error type every vmigrate layer speaks, and the one code table.
//!
//! Providers keep their own rich error enums (`VsphereError`, `KubevirtError`) and convert into
//! [`Error`] at the trait seam, so the engine, the executor, C and Python all see the same
//! [`ErrorCode`] numbers. The numbers are part of the C ABI and of the Python exceptions: never
//! renumber, only add; a retired number stays as a `reserved` comment.

use std::fmt;

/// Boxed cause carried by an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across the core traits.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse classification callers match on, independent of which layer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The plan or other user input is malformed or inconsistent.
    InvalidInput,
    /// Validation found critical concerns; nothing was changed.
    Blocked,
    /// Something named does not exist (VM, datastore, file, object).
    NotFound,
    /// Credentials missing or refused.
    Auth,
    /// TLS verification failed (certificate or thumbprint mismatch).
    Tls,
    /// A peer could not be reached or dropped the connection; usually worth a retry.
    Connection,
    /// A peer answered in a way that breaks its protocol or format.
    Protocol,
    /// The remote side refused the operation in its current state.
    Conflict,
    /// The operation is not supported by this provider or transport.
    Unsupported,
    /// Local or remote I/O failed.
    Io,
    /// Out of space or over quota.
    NoSpace,
    /// Data verification failed: source and target differ.
    Corrupt,
    /// The caller cancelled.
    Cancelled,
    /// A deadline passed.
    Timeout,
    /// A bug: a panic caught at a boundary or a broken invariant.
    Internal,
}

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $num:literal => $kind:ident, )*) => {
        /// Stable numeric error codes, grouped by range: 1000 plan and validation, 2000 vSphere,
        /// 3000 KubeVirt, 4000 transport and copy, 5000 execution, 9000 internal.
        ///
        /// C returns these as `vmigrate_result`; Python raises one exception class per range
        /// carrying `.code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order: feeds documentation and the binding tables.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The kind callers should match on.
            pub fn kind(self) -> ErrorKind {
                match self { $(ErrorCode::$name => ErrorKind::$kind,)* }
            }

            /// The symbolic name, as used in the C header (`VMIGRATE_RESULT_<NAME>`) and Python.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$name => stringify!($name),)* }
            }

            /// Look a code up by number.
            pub fn from_u32(n: u32) -> Option<ErrorCode> {
                match n { $($num => Some(ErrorCode::$name),)* _ => None }
            }

            /// One-line description for documentation tables.
            pub fn description(self) -> &'static str {
                match self { $(ErrorCode::$name => concat!($($doc),*).trim_ascii(),)* }
            }
        }
    };
}

error_codes! {
    /// The plan file could not be parsed (syntax, unknown field, wrong type).
    PlanParse = 1001 => InvalidInput,
    /// The plan parsed but is inconsistent (duplicate VM, bad map, bad value).
    PlanInvalid = 1002 => InvalidInput,
    /// Validation found critical concerns on at least one VM.
    ValidationBlocked = 1003 => Blocked,
    /// A VM named in the plan does not exist at the source.
    VmNotFound = 1004 => NotFound,
    /// Credentials were not given (environment variable unset or empty).
    CredentialsMissing = 1005 => Auth,
    /// The plan status file could not be read or written.
    StatusFile = 1006 => Io,
    /// A URL or option given by the user is malformed or unsupported.
    BadUrl = 1007 => InvalidInput,
    /// A required argument was missing (NULL) or malformed (not UTF-8, not JSON) at a C or Python call.
    InvalidArgument = 1008 => InvalidInput,
    /// The status file was written for another plan (another target, source, VMs or maps under
    /// the same name): resuming from it would skip work never done for this one.
    StatusPlanMismatch = 1009 => Conflict,
    /// The target (an output folder) is in use by another vmigrate run, in this or another
    /// process: two runs would write the same disks.
    TargetBusy = 1010 => Conflict,
    /// Could not connect to the vSphere endpoint.
    VsphereConnect = 2001 => Connection,
    /// The vSphere certificate did not verify or did not match the pinned thumbprint.
    VsphereTls = 2002 => Tls,
    /// vSphere refused the login (InvalidLogin).
    VsphereInvalidLogin = 2003 => Auth,
    /// The vSphere session is not (or no longer) authenticated (NotAuthenticated).
    VsphereNotAuthenticated = 2004 => Auth,
    /// A managed object no longer exists (ManagedObjectNotFound).
    VsphereNotFound = 2005 => NotFound,
    /// A vSphere task failed.
    VsphereTaskFailed = 2006 => Conflict,
    /// The object is in the wrong state for the operation (InvalidState, InvalidPowerState).
    VsphereInvalidState = 2007 => Conflict,
    /// Another task is already running on the object (TaskInProgress).
    VsphereTaskInProgress = 2008 => Conflict,
    /// Any other SOAP fault.
    VsphereFault = 2009 => Protocol,
    /// The server sent XML we cannot parse, or a response over the size limit.
    VsphereMalformed = 2010 => Protocol,
    /// A VMX file could not be parsed.
    VmxParse = 2011 => InvalidInput,
    /// A VMDK descriptor or sparse header is invalid or unsupported.
    VmdkFormat = 2012 => Protocol,
    /// A datastore file is missing.
    DatastoreFileMissing = 2013 => NotFound,
    /// A file a datastore names (VMX, descriptor, extent, delta parent) resolves outside the
    /// datastore folder (`..`, an absolute name, a symlink out) or is not a regular file.
    UnsafePath = 2014 => InvalidInput,
    /// Could not load or use the kubeconfig / cluster credentials.
    KubeConfig = 3001 => Auth,
    /// The Kubernetes API refused with 403.
    KubeForbidden = 3002 => Auth,
    /// A Kubernetes object or API is missing (404).
    KubeNotFound = 3003 => NotFound,
    /// A Kubernetes object conflicts (409).
    KubeConflict = 3004 => Conflict,
    /// The Kubernetes API rejected an object as invalid (422).
    KubeInvalid = 3005 => InvalidInput,
    /// KubeVirt or CDI custom resources are not installed.
    KubeMissingCrd = 3006 => Unsupported,
    /// A resource quota or limit was exceeded.
    KubeQuota = 3007 => NoSpace,
    /// The CDI upload failed.
    CdiUpload = 3008 => Io,
    /// A DataVolume or import failed.
    DataVolumeFailed = 3009 => Conflict,
    /// Any other Kubernetes API error.
    KubeApi = 3010 => Protocol,
    /// Local I/O failed.
    Io = 4001 => Io,
    /// The target is out of space.
    NoSpace = 4002 => NoSpace,
    /// An NBD server broke the protocol.
    NbdProtocol = 4003 => Protocol,
    /// Could not connect to, or lost the connection to, an NBD server.
    NbdConnect = 4004 => Connection,
    /// An NBD server returned an error for a request.
    NbdRequest = 4005 => Io,
    /// An HTTP server returned an error status.
    HttpStatus = 4006 => Io,
    /// An HTTP server ignored Range requests or answered with the wrong range.
    HttpRange = 4007 => Protocol,
    /// Could not connect to, or lost the connection to, an HTTP server.
    HttpConnect = 4008 => Connection,
    /// A request fell outside the transport's size.
    OutOfBounds = 4009 => InvalidInput,
    /// Verification found that source and target differ.
    VerifyMismatch = 4010 => Corrupt,
    /// A resume checkpoint is unreadable or does not belong to this copy.
    Checkpoint = 4011 => InvalidInput,
    /// The transport does not support the operation (e.g. writing to a read-only source).
    TransportUnsupported = 4012 => Unsupported,
    /// The source returned fewer bytes than asked.
    ShortRead = 4013 => Protocol,
    /// An HTTPS server's certificate did not verify or did not match the pinned thumbprint.
    HttpTls = 4014 => Tls,
    /// An `nbds://` server's certificate did not verify or match the pin, the TLS handshake
    /// failed, or a server requires TLS that the URI did not ask for.
    NbdTls = 4015 => Tls,
    /// Source and target of a copy are one disk (the same file through another path, the same
    /// block device, the same NBD export): copying would destroy it.
    SameDisk = 4016 => InvalidInput,
    /// The target file exists and is not empty; ask for `overwrite` to replace it.
    TargetExists = 4017 => Conflict,
    /// The operation was cancelled.
    Cancelled = 5001 => Cancelled,
    /// A deadline passed.
    Timeout = 5002 => Timeout,
    /// A pre or post hook failed.
    HookFailed = 5003 => Conflict,
    /// The provider does not support the operation the plan needs.
    Unsupported = 5004 => Unsupported,
    /// Guest conversion (virt-v2v) failed or could not run.
    ConversionFailed = 5005 => Conflict,
    /// A panic was caught at a binding boundary.
    Panic = 9001 => Internal,
    /// An internal invariant was broken.
    Internal = 9002 => Internal,
}

impl ErrorCode {
    /// The range name shared by C and Python (`plan`, `vsphere`, `kubevirt`, `transport`,
    /// `execution`, `internal`).
    pub fn range(self) -> &'static str {
        match self as u32 {
            1000..=1999 => "plan",
            2000..=2999 => "vsphere",
            3000..=3999 => "kubevirt",
            4000..=4999 => "transport",
            5000..=5999 => "execution",
            _ => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u32)
    }
}

/// The error crossing every trait seam: a code, a short message with context, and an
/// optional cause.
///
/// Like `std::io::Error`, it is deliberately one struct so that providers can add detail
/// without widening the core API. The message never contains secrets: constructors take
/// already-redacted text.
pub struct Error {
    code: ErrorCode,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// A new error with a message that says what was being done.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into(), source: None }
    }

    /// Attach the underlying cause; reporters walk the chain, so the message should not repeat it.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// An I/O error with context, classifying ENOSPC/EDQUOT as [`ErrorCode::NoSpace`].
    pub fn io(context: impl Into<String>, err: std::io::Error) -> Self {
        let code = match err.raw_os_error() {
            Some(28) | Some(122) => ErrorCode::NoSpace,
            _ if err.kind() == std::io::ErrorKind::StorageFull => ErrorCode::NoSpace,
            _ => ErrorCode::Io,
        };
        Error::new(code, context).with_source(err)
    }

    /// The cancellation error every cancellable operation returns.
    pub fn cancelled() -> Self {
        Error::new(ErrorCode::Cancelled, "operation cancelled")
    }

    /// An operation the provider or transport does not implement.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unsupported, what)
    }

    /// Change the code, keeping message and cause.
    pub(crate) fn set_code(&mut self, code: ErrorCode) {
        self.code = code;
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The kind callers should match on.
    pub fn kind(&self) -> ErrorKind {
        self.code.kind()
    }

    /// The message without the cause chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by every cause, separated by `: ` — what a CLI prints.
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            let text = e.to_string();
            if !text.is_empty() && !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cur = e.source();
        }
        out
    }

    /// Whether retrying the same operation may succeed (dropped connections, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Connection | ErrorKind::Timeout)
            || matches!(self.code, ErrorCode::HttpStatus | ErrorCode::NbdConnect)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_sorted_and_ranged() {
        let mut last = 0;
        for c in ErrorCode::ALL {
            let n = *c as u32;
            assert!(n > last, "{c} out of order");
            last = n;
            assert_eq!(ErrorCode::from_u32(n), Some(*c));
            assert!(!c.description().is_empty(), "{c} undocumented");
        }
        assert_eq!(ErrorCode::VsphereTls.range(), "vsphere");
        assert_eq!(ErrorCode::Panic.range(), "internal");
        assert_eq!(ErrorCode::from_u32(42), None);
    }

    #[test]
    fn io_errors_classify_enospc() {
        let e = Error::io("writing target", std::io::Error::from_raw_os_error(28));
        assert_eq!(e.code(), ErrorCode::NoSpace);
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert!(e.report().starts_with("writing target: "));
    }

    #[test]
    fn report_walks_chain_without_repeating() {
        let inner = Error::new(ErrorCode::Io, "disk gone");
        let outer = Error::new(ErrorCode::Internal, "copying disk 0").with_source(inner);
        assert_eq!(outer.report(), "copying disk 0: disk gone");
    }
}
