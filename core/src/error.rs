//! The one error type every vmigrate layer speaks, and the one code table.
//!
//! Providers keep their own rich error enums (`VsphereError`, `KubevirtError`, `OvaError`) and
//! convert into [`Error`] at the trait seam, so the engine, the executor, C and Python all see the
//! same [`ErrorCode`] numbers. The numbers are part of the C ABI and of the Python exceptions: never
//! renumber, only add; a retired number stays as a `reserved` comment.
//!
//! The table is grouped by **role** ([`ErrorRange`]): plan, source, target, transport, execution,
//! internal. A code names what went wrong for the role (`SourceInvalidLogin`), not for one
//! provider, so a new source or target reuses the codes that exist. A failure that only one
//! provider can have gets a code in that provider's sub-range at the top of its role's range
//! (`docs/errors.md` allocates them); none is needed yet.
//!
//! Names are stable too. A renamed code keeps its number and its old name: a Rust associated
//! constant (`ErrorCode::VsphereConnect` is [`ErrorCode::SourceConnect`]), a C macro, a Python
//! alias, all listed in [`ErrorCode::OLD_NAMES`] and checked against a frozen list of every name
//! ever published.

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
        /// Stable numeric error codes, grouped by role ([`ErrorRange`]): 1000 plan and
        /// validation, 2000 source, 3000 target, 4000 transport and copy, 5000 execution,
        /// 9000 internal.
        ///
        /// C returns these as `vmigrate_result`; Python raises one exception class per range
        /// carrying `.code`. Codes renamed since their first release keep their old names as
        /// associated constants ([`ErrorCode::OLD_NAMES`]).
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
    // 2000-2999: the source (where VMs come from: a vCenter or ESXi host, a folder of VMX
    // datastores, OVA packages). 2900-2999 is reserved for codes only vSphere can raise, 2800-2899
    // for OVA-only codes (docs/errors.md); none exists yet.
    /// Could not connect to the source's endpoint.
    SourceConnect = 2001 => Connection,
    /// The source's certificate did not verify or did not match the pinned thumbprint.
    SourceTls = 2002 => Tls,
    /// The source refused the login (wrong user name or password).
    SourceInvalidLogin = 2003 => Auth,
    /// The session with the source is not (or no longer) authenticated.
    SourceNotAuthenticated = 2004 => Auth,
    /// An object the source was asked about does not exist there (any more).
    SourceNotFound = 2005 => NotFound,
    /// An operation the source ran for us (a task: power, snapshot, changed-block tracking) failed.
    SourceTaskFailed = 2006 => Conflict,
    /// The source object is in the wrong state for the operation (for example its power state).
    SourceInvalidState = 2007 => Conflict,
    /// Another operation is already running on the source object.
    SourceTaskInProgress = 2008 => Conflict,
    /// The source's API reported any other failure.
    SourceFault = 2009 => Protocol,
    /// The source sent a response we cannot parse, or one over the size limit.
    SourceMalformed = 2010 => Protocol,
    /// A VM description the source reads (a VM configuration file, a package descriptor, index or
    /// manifest) could not be parsed.
    SourceDescriptorParse = 2011 => InvalidInput,
    /// A disk image's format (a descriptor or sparse header) is invalid or unsupported.
    SourceDiskFormat = 2012 => Protocol,
    /// A file the source names (a VM configuration, a disk descriptor or extent, a package
    /// member) is missing.
    SourceFileMissing = 2013 => NotFound,
    /// A file the source names (a VM configuration, a disk descriptor, extent or delta parent, a
    /// package member) resolves outside the source's folder or package (`..`, an absolute name, a
    /// symlink out) or is not a regular file.
    UnsafePath = 2014 => InvalidInput,
    // 3000-3999: the target (where VMs go: a cluster, an output folder). 3900-3999 is reserved
    // for codes only the Kubernetes target can raise (docs/errors.md); none exists yet.
    /// Could not load or use the target's configuration or credentials.
    TargetConfig = 3001 => Auth,
    /// The target refused the operation for lack of permission (HTTP 403).
    TargetForbidden = 3002 => Auth,
    /// An object or API is missing at the target (HTTP 404).
    TargetNotFound = 3003 => NotFound,
    /// An object at the target conflicts with ours (HTTP 409).
    TargetConflict = 3004 => Conflict,
    /// The target rejected an object as invalid (HTTP 422).
    TargetInvalid = 3005 => InvalidInput,
    /// The target lacks an API or component the migration needs (its custom resources are not
    /// installed).
    TargetMissingApi = 3006 => Unsupported,
    /// A quota or limit of the target was exceeded.
    TargetQuota = 3007 => NoSpace,
    /// Uploading a disk to the target failed.
    TargetUploadFailed = 3008 => Io,
    /// An import the target ran for a volume failed.
    TargetImportFailed = 3009 => Conflict,
    /// The target's API reported any other failure.
    TargetFault = 3010 => Protocol,
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

/// Renamed codes: the old name becomes an associated constant equal to the code, so code written
/// against it keeps compiling, and a row of [`ErrorCode::OLD_NAMES`], from which the C header's
/// aliases and Python's are generated.
macro_rules! old_names {
    ($( $old:ident => $new:ident, )*) => {
        #[allow(non_upper_case_globals)]
        impl ErrorCode {
            $(
                #[doc = concat!("Old name of [`ErrorCode::", stringify!($new), "`], kept for source compatibility.")]
                pub const $old: ErrorCode = ErrorCode::$new;
            )*

            /// Every old name of a renamed code, with the code it names (the same number it
            /// always had), in numeric order. Old names are never reused for another code.
            pub const OLD_NAMES: &'static [(&'static str, ErrorCode)] = &[$((stringify!($old), ErrorCode::$new),)*];
        }
    };
}

// The ranges were named after providers (2000 `vsphere`, 3000 `kubevirt`) until they were named
// by role: the codes kept their numbers and took names any source or target can use.
old_names! {
    VsphereConnect => SourceConnect,
    VsphereTls => SourceTls,
    VsphereInvalidLogin => SourceInvalidLogin,
    VsphereNotAuthenticated => SourceNotAuthenticated,
    VsphereNotFound => SourceNotFound,
    VsphereTaskFailed => SourceTaskFailed,
    VsphereInvalidState => SourceInvalidState,
    VsphereTaskInProgress => SourceTaskInProgress,
    VsphereFault => SourceFault,
    VsphereMalformed => SourceMalformed,
    VmxParse => SourceDescriptorParse,
    VmdkFormat => SourceDiskFormat,
    DatastoreFileMissing => SourceFileMissing,
    KubeConfig => TargetConfig,
    KubeForbidden => TargetForbidden,
    KubeNotFound => TargetNotFound,
    KubeConflict => TargetConflict,
    KubeInvalid => TargetInvalid,
    KubeMissingCrd => TargetMissingApi,
    KubeQuota => TargetQuota,
    CdiUpload => TargetUploadFailed,
    DataVolumeFailed => TargetImportFailed,
    KubeApi => TargetFault,
}

impl ErrorCode {
    /// The role range of this code; C and Python group codes (and Python's exception classes)
    /// by it.
    pub fn error_range(self) -> ErrorRange {
        ErrorRange::of(self as u32)
    }

    /// The name of the code's range, as C's documentation and Python's `ErrorCode.range` give it
    /// (`plan`, `source`, `target`, `transport`, `execution`, `internal`).
    pub fn range(self) -> &'static str {
        self.error_range().name()
    }

    /// Look a code up by its name or by an old name ([`ErrorCode::OLD_NAMES`]).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .find(|c| c.name() == name)
            .or_else(|| ErrorCode::OLD_NAMES.iter().find(|(old, _)| *old == name).map(|(_, c)| c))
            .copied()
    }
}

/// The ranges of the code table, by the role of the part that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorRange {
    /// 1000-1999: the plan, user input and validation.
    Plan,
    /// 2000-2999: the source the VMs come from, whichever provider it is.
    Source,
    /// 3000-3999: the target the VMs go to, whichever provider it is.
    Target,
    /// 4000-4999: transports and the copy engine.
    Transport,
    /// 5000-5999: running the plan (cancellation, deadlines, hooks, conversion).
    Execution,
    /// 9000-9999: bugs.
    Internal,
}

impl ErrorRange {
    /// Every range, in numeric order.
    pub const ALL: &'static [ErrorRange] = &[
        ErrorRange::Plan,
        ErrorRange::Source,
        ErrorRange::Target,
        ErrorRange::Transport,
        ErrorRange::Execution,
        ErrorRange::Internal,
    ];

    /// The range a number falls in (anything outside the others is `Internal`).
    pub fn of(number: u32) -> ErrorRange {
        match number {
            1000..=1999 => ErrorRange::Plan,
            2000..=2999 => ErrorRange::Source,
            3000..=3999 => ErrorRange::Target,
            4000..=4999 => ErrorRange::Transport,
            5000..=5999 => ErrorRange::Execution,
            _ => ErrorRange::Internal,
        }
    }

    /// The numbers of the range.
    pub fn numbers(self) -> std::ops::RangeInclusive<u32> {
        match self {
            ErrorRange::Plan => 1000..=1999,
            ErrorRange::Source => 2000..=2999,
            ErrorRange::Target => 3000..=3999,
            ErrorRange::Transport => 4000..=4999,
            ErrorRange::Execution => 5000..=5999,
            ErrorRange::Internal => 9000..=9999,
        }
    }

    /// The name C's documentation and Python use.
    pub fn name(self) -> &'static str {
        match self {
            ErrorRange::Plan => "plan",
            ErrorRange::Source => "source",
            ErrorRange::Target => "target",
            ErrorRange::Transport => "transport",
            ErrorRange::Execution => "execution",
            ErrorRange::Internal => "internal",
        }
    }

    /// The names the range had when ranges were named after providers, still accepted by
    /// [`ErrorRange::from_name`].
    pub fn old_names(self) -> &'static [&'static str] {
        match self {
            ErrorRange::Source => &["vsphere"],
            ErrorRange::Target => &["kubevirt"],
            _ => &[],
        }
    }

    /// Look a range up by its name or an old name (`vsphere` is `source`, `kubevirt` is `target`).
    pub fn from_name(name: &str) -> Option<ErrorRange> {
        ErrorRange::ALL.iter().copied().find(|r| r.name() == name || r.old_names().contains(&name))
    }

    /// The codes of the range, in numeric order.
    pub fn codes(self) -> impl Iterator<Item = ErrorCode> {
        ErrorCode::ALL.iter().copied().filter(move |c| c.error_range() == self)
    }
}

impl fmt::Display for ErrorRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
        assert_eq!(ErrorCode::SourceTls.range(), "source");
        assert_eq!(ErrorCode::TargetFault.range(), "target");
        assert_eq!(ErrorCode::Panic.range(), "internal");
        assert_eq!(ErrorCode::from_u32(42), None);
        for r in ErrorRange::ALL {
            assert!(r.codes().next().is_some(), "range {r} has no code");
            assert!(r.codes().all(|c| r.numbers().contains(&(c as u32))), "range {r}");
        }
    }

    /// Every name ever published (in a release, the C header or Python), with its number. A name
    /// here must keep resolving to its number forever: rename a code only by adding the old name
    /// to `old_names!`, and add every new code here.
    const PUBLISHED: &[(&str, u32)] = &[
        ("PlanParse", 1001),
        ("PlanInvalid", 1002),
        ("ValidationBlocked", 1003),
        ("VmNotFound", 1004),
        ("CredentialsMissing", 1005),
        ("StatusFile", 1006),
        ("BadUrl", 1007),
        ("InvalidArgument", 1008),
        ("StatusPlanMismatch", 1009),
        ("TargetBusy", 1010),
        ("VsphereConnect", 2001),
        ("VsphereTls", 2002),
        ("VsphereInvalidLogin", 2003),
        ("VsphereNotAuthenticated", 2004),
        ("VsphereNotFound", 2005),
        ("VsphereTaskFailed", 2006),
        ("VsphereInvalidState", 2007),
        ("VsphereTaskInProgress", 2008),
        ("VsphereFault", 2009),
        ("VsphereMalformed", 2010),
        ("VmxParse", 2011),
        ("VmdkFormat", 2012),
        ("DatastoreFileMissing", 2013),
        ("UnsafePath", 2014),
        ("KubeConfig", 3001),
        ("KubeForbidden", 3002),
        ("KubeNotFound", 3003),
        ("KubeConflict", 3004),
        ("KubeInvalid", 3005),
        ("KubeMissingCrd", 3006),
        ("KubeQuota", 3007),
        ("CdiUpload", 3008),
        ("DataVolumeFailed", 3009),
        ("KubeApi", 3010),
        ("Io", 4001),
        ("NoSpace", 4002),
        ("NbdProtocol", 4003),
        ("NbdConnect", 4004),
        ("NbdRequest", 4005),
        ("HttpStatus", 4006),
        ("HttpRange", 4007),
        ("HttpConnect", 4008),
        ("OutOfBounds", 4009),
        ("VerifyMismatch", 4010),
        ("Checkpoint", 4011),
        ("TransportUnsupported", 4012),
        ("ShortRead", 4013),
        ("HttpTls", 4014),
        ("NbdTls", 4015),
        ("SameDisk", 4016),
        ("TargetExists", 4017),
        ("Cancelled", 5001),
        ("Timeout", 5002),
        ("HookFailed", 5003),
        ("Unsupported", 5004),
        ("ConversionFailed", 5005),
        ("Panic", 9001),
        ("Internal", 9002),
        // Role names of the source and target ranges.
        ("SourceConnect", 2001),
        ("SourceTls", 2002),
        ("SourceInvalidLogin", 2003),
        ("SourceNotAuthenticated", 2004),
        ("SourceNotFound", 2005),
        ("SourceTaskFailed", 2006),
        ("SourceInvalidState", 2007),
        ("SourceTaskInProgress", 2008),
        ("SourceFault", 2009),
        ("SourceMalformed", 2010),
        ("SourceDescriptorParse", 2011),
        ("SourceDiskFormat", 2012),
        ("SourceFileMissing", 2013),
        ("TargetConfig", 3001),
        ("TargetForbidden", 3002),
        ("TargetNotFound", 3003),
        ("TargetConflict", 3004),
        ("TargetInvalid", 3005),
        ("TargetMissingApi", 3006),
        ("TargetQuota", 3007),
        ("TargetUploadFailed", 3008),
        ("TargetImportFailed", 3009),
        ("TargetFault", 3010),
    ];

    #[test]
    fn every_published_name_keeps_its_number() {
        for (name, n) in PUBLISHED {
            let code = ErrorCode::from_name(name).unwrap_or_else(|| panic!("{name} ({n}) no longer resolves"));
            assert_eq!(code as u32, *n, "{name} was {n}");
        }
        // Every code and every old name is published (frozen) here.
        for c in ErrorCode::ALL {
            assert!(PUBLISHED.contains(&(c.name(), *c as u32)), "{c} is not in PUBLISHED: add it");
        }
        for (old, c) in ErrorCode::OLD_NAMES {
            assert!(PUBLISHED.contains(&(old, *c as u32)), "old name {old} is not in PUBLISHED");
            assert!(ErrorCode::ALL.iter().all(|c| c.name() != *old), "{old} is both an old and a current name");
        }
        assert_eq!(PUBLISHED.len(), ErrorCode::ALL.len() + ErrorCode::OLD_NAMES.len(), "a name twice in PUBLISHED");
        assert_eq!(ErrorCode::from_name("NoSuchCode"), None);
    }

    #[test]
    fn old_names_are_constants_equal_to_the_new_codes() {
        // Written out, so that removing or repointing one of the constants fails to compile or here.
        let old = [
            (ErrorCode::VsphereConnect, ErrorCode::SourceConnect, 2001),
            (ErrorCode::VsphereTls, ErrorCode::SourceTls, 2002),
            (ErrorCode::VsphereInvalidLogin, ErrorCode::SourceInvalidLogin, 2003),
            (ErrorCode::VsphereNotAuthenticated, ErrorCode::SourceNotAuthenticated, 2004),
            (ErrorCode::VsphereNotFound, ErrorCode::SourceNotFound, 2005),
            (ErrorCode::VsphereTaskFailed, ErrorCode::SourceTaskFailed, 2006),
            (ErrorCode::VsphereInvalidState, ErrorCode::SourceInvalidState, 2007),
            (ErrorCode::VsphereTaskInProgress, ErrorCode::SourceTaskInProgress, 2008),
            (ErrorCode::VsphereFault, ErrorCode::SourceFault, 2009),
            (ErrorCode::VsphereMalformed, ErrorCode::SourceMalformed, 2010),
            (ErrorCode::VmxParse, ErrorCode::SourceDescriptorParse, 2011),
            (ErrorCode::VmdkFormat, ErrorCode::SourceDiskFormat, 2012),
            (ErrorCode::DatastoreFileMissing, ErrorCode::SourceFileMissing, 2013),
            (ErrorCode::KubeConfig, ErrorCode::TargetConfig, 3001),
            (ErrorCode::KubeForbidden, ErrorCode::TargetForbidden, 3002),
            (ErrorCode::KubeNotFound, ErrorCode::TargetNotFound, 3003),
            (ErrorCode::KubeConflict, ErrorCode::TargetConflict, 3004),
            (ErrorCode::KubeInvalid, ErrorCode::TargetInvalid, 3005),
            (ErrorCode::KubeMissingCrd, ErrorCode::TargetMissingApi, 3006),
            (ErrorCode::KubeQuota, ErrorCode::TargetQuota, 3007),
            (ErrorCode::CdiUpload, ErrorCode::TargetUploadFailed, 3008),
            (ErrorCode::DataVolumeFailed, ErrorCode::TargetImportFailed, 3009),
            (ErrorCode::KubeApi, ErrorCode::TargetFault, 3010),
        ];
        assert_eq!(old.len(), ErrorCode::OLD_NAMES.len());
        for ((old, new, n), (old_name, listed)) in old.iter().zip(ErrorCode::OLD_NAMES) {
            assert_eq!(old, new);
            assert_eq!(*new as u32, *n);
            assert_eq!(listed, new, "{old_name}");
            // The name a code reports is its current one.
            assert_eq!(old.name(), new.name());
        }
        // Old names work in patterns too.
        assert!(matches!(ErrorCode::SourceTls, ErrorCode::VsphereTls));
    }

    #[test]
    fn docs_list_every_renamed_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/errors.md");
        let docs = std::fs::read_to_string(path).expect("read docs/errors.md");
        for (old, c) in ErrorCode::OLD_NAMES {
            let row = format!("| `{old}` | `{}` | {} |", c.name(), *c as u32);
            assert!(docs.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }

    #[test]
    fn ranges_are_named_by_role_and_old_range_names_resolve() {
        assert_eq!(ErrorRange::from_name("source"), Some(ErrorRange::Source));
        assert_eq!(ErrorRange::from_name("vsphere"), Some(ErrorRange::Source));
        assert_eq!(ErrorRange::from_name("kubevirt"), Some(ErrorRange::Target));
        assert_eq!(ErrorRange::from_name("target"), Some(ErrorRange::Target));
        assert_eq!(ErrorRange::from_name("ova"), None);
        let names: Vec<&str> = ErrorRange::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["plan", "source", "target", "transport", "execution", "internal"]);
        assert_eq!(ErrorCode::TargetBusy.error_range(), ErrorRange::Plan);
        assert_eq!(ErrorRange::of(2950), ErrorRange::Source);
        assert_eq!(ErrorRange::Source.codes().count(), 14);
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
