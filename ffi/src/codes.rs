//! The C result codes, generated from `vmigrate_core::ErrorCode::ALL`; do not edit.
//! Regenerate with `VMIGRATE_BLESS=1 cargo test -p vmigrate-ffi --test header`.

use std::ffi::CStr;

use vmigrate_core::ErrorCode;

/// The result of every vmigrate call: `VMIGRATE_RESULT_OK` (0) or a code of the one error-code
/// table shared with Rust (`vmigrate_core::ErrorCode`) and Python (`vmigrate.error_codes()`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vmigrate_result {
    /// Success.
    Ok = 0,
    /// The plan file could not be parsed (syntax, unknown field, wrong type). (range `plan`, kind `InvalidInput`)
    PlanParse = 1001,
    /// The plan parsed but is inconsistent (duplicate VM, bad map, bad value). (range `plan`, kind `InvalidInput`)
    PlanInvalid = 1002,
    /// Validation found critical concerns on at least one VM. (range `plan`, kind `Blocked`)
    ValidationBlocked = 1003,
    /// A VM named in the plan does not exist at the source. (range `plan`, kind `NotFound`)
    VmNotFound = 1004,
    /// Credentials were not given (environment variable unset or empty). (range `plan`, kind `Auth`)
    CredentialsMissing = 1005,
    /// The plan status file could not be read or written. (range `plan`, kind `Io`)
    StatusFile = 1006,
    /// A URL or option given by the user is malformed or unsupported. (range `plan`, kind `InvalidInput`)
    BadUrl = 1007,
    /// A required argument was missing (NULL) or malformed (not UTF-8, not JSON) at a C or Python call. (range `plan`, kind `InvalidInput`)
    InvalidArgument = 1008,
    /// The status file was written for another plan (another target, source, VMs or maps under the same name): resuming from it would skip work never done for this one. (range `plan`, kind `Conflict`)
    StatusPlanMismatch = 1009,
    /// The target (an output folder) is in use by another vmigrate run, in this or another process: two runs would write the same disks. (range `plan`, kind `Conflict`)
    TargetBusy = 1010,
    /// Could not connect to the source's endpoint. (range `source`, kind `Connection`)
    SourceConnect = 2001,
    /// The source's certificate did not verify or did not match the pinned thumbprint. (range `source`, kind `Tls`)
    SourceTls = 2002,
    /// The source refused the login (wrong user name or password). (range `source`, kind `Auth`)
    SourceInvalidLogin = 2003,
    /// The session with the source is not (or no longer) authenticated. (range `source`, kind `Auth`)
    SourceNotAuthenticated = 2004,
    /// An object the source was asked about does not exist there (any more). (range `source`, kind `NotFound`)
    SourceNotFound = 2005,
    /// An operation the source ran for us (a task: power, snapshot, changed-block tracking) failed. (range `source`, kind `Conflict`)
    SourceTaskFailed = 2006,
    /// The source object is in the wrong state for the operation (for example its power state). (range `source`, kind `Conflict`)
    SourceInvalidState = 2007,
    /// Another operation is already running on the source object. (range `source`, kind `Conflict`)
    SourceTaskInProgress = 2008,
    /// The source's API reported any other failure. (range `source`, kind `Protocol`)
    SourceFault = 2009,
    /// The source sent a response we cannot parse, or one over the size limit. (range `source`, kind `Protocol`)
    SourceMalformed = 2010,
    /// A VM description the source reads (a VM configuration file, a package descriptor, index or manifest) could not be parsed. (range `source`, kind `InvalidInput`)
    SourceDescriptorParse = 2011,
    /// A disk image's format (a descriptor or sparse header) is invalid or unsupported. (range `source`, kind `Protocol`)
    SourceDiskFormat = 2012,
    /// A file the source names (a VM configuration, a disk descriptor or extent, a package member) is missing. (range `source`, kind `NotFound`)
    SourceFileMissing = 2013,
    /// A file the source names (a VM configuration, a disk descriptor, extent or delta parent, a package member) resolves outside the source's folder or package (`..`, an absolute name, a symlink out) or is not a regular file. (range `source`, kind `InvalidInput`)
    UnsafePath = 2014,
    /// Could not load or use the target's configuration or credentials. (range `target`, kind `Auth`)
    TargetConfig = 3001,
    /// The target refused the operation for lack of permission (HTTP 403). (range `target`, kind `Auth`)
    TargetForbidden = 3002,
    /// An object or API is missing at the target (HTTP 404). (range `target`, kind `NotFound`)
    TargetNotFound = 3003,
    /// An object at the target conflicts with ours (HTTP 409). (range `target`, kind `Conflict`)
    TargetConflict = 3004,
    /// The target rejected an object as invalid (HTTP 422). (range `target`, kind `InvalidInput`)
    TargetInvalid = 3005,
    /// The target lacks an API or component the migration needs (its custom resources are not installed). (range `target`, kind `Unsupported`)
    TargetMissingApi = 3006,
    /// A quota or limit of the target was exceeded. (range `target`, kind `NoSpace`)
    TargetQuota = 3007,
    /// Uploading a disk to the target failed. (range `target`, kind `Io`)
    TargetUploadFailed = 3008,
    /// An import the target ran for a volume failed. (range `target`, kind `Conflict`)
    TargetImportFailed = 3009,
    /// The target's API reported any other failure. (range `target`, kind `Protocol`)
    TargetFault = 3010,
    /// Local I/O failed. (range `transport`, kind `Io`)
    Io = 4001,
    /// The target is out of space. (range `transport`, kind `NoSpace`)
    NoSpace = 4002,
    /// An NBD server broke the protocol. (range `transport`, kind `Protocol`)
    NbdProtocol = 4003,
    /// Could not connect to, or lost the connection to, an NBD server. (range `transport`, kind `Connection`)
    NbdConnect = 4004,
    /// An NBD server returned an error for a request. (range `transport`, kind `Io`)
    NbdRequest = 4005,
    /// An HTTP server returned an error status. (range `transport`, kind `Io`)
    HttpStatus = 4006,
    /// An HTTP server ignored Range requests or answered with the wrong range. (range `transport`, kind `Protocol`)
    HttpRange = 4007,
    /// Could not connect to, or lost the connection to, an HTTP server. (range `transport`, kind `Connection`)
    HttpConnect = 4008,
    /// A request fell outside the transport's size. (range `transport`, kind `InvalidInput`)
    OutOfBounds = 4009,
    /// Verification found that source and target differ. (range `transport`, kind `Corrupt`)
    VerifyMismatch = 4010,
    /// A resume checkpoint is unreadable or does not belong to this copy. (range `transport`, kind `InvalidInput`)
    Checkpoint = 4011,
    /// The transport does not support the operation (e.g. writing to a read-only source). (range `transport`, kind `Unsupported`)
    TransportUnsupported = 4012,
    /// The source returned fewer bytes than asked. (range `transport`, kind `Protocol`)
    ShortRead = 4013,
    /// An HTTPS server's certificate did not verify or did not match the pinned thumbprint. (range `transport`, kind `Tls`)
    HttpTls = 4014,
    /// An `nbds://` server's certificate did not verify or match the pin, the TLS handshake failed, or a server requires TLS that the URI did not ask for. (range `transport`, kind `Tls`)
    NbdTls = 4015,
    /// Source and target of a copy are one disk (the same file through another path, the same block device, the same NBD export): copying would destroy it. (range `transport`, kind `InvalidInput`)
    SameDisk = 4016,
    /// The target file exists and is not empty; ask for `overwrite` to replace it. (range `transport`, kind `Conflict`)
    TargetExists = 4017,
    /// The operation was cancelled. (range `execution`, kind `Cancelled`)
    Cancelled = 5001,
    /// A deadline passed. (range `execution`, kind `Timeout`)
    Timeout = 5002,
    /// A pre or post hook failed. (range `execution`, kind `Conflict`)
    HookFailed = 5003,
    /// The provider does not support the operation the plan needs. (range `execution`, kind `Unsupported`)
    Unsupported = 5004,
    /// Guest conversion (virt-v2v) failed or could not run. (range `execution`, kind `Conflict`)
    ConversionFailed = 5005,
    /// A panic was caught at a binding boundary. (range `internal`, kind `Internal`)
    Panic = 9001,
    /// An internal invariant was broken. (range `internal`, kind `Internal`)
    Internal = 9002,
}

impl vmigrate_result {
    /// The C code of a Rust error code.
    pub(crate) fn from_code(code: ErrorCode) -> Self {
        match code {
            ErrorCode::PlanParse => vmigrate_result::PlanParse,
            ErrorCode::PlanInvalid => vmigrate_result::PlanInvalid,
            ErrorCode::ValidationBlocked => vmigrate_result::ValidationBlocked,
            ErrorCode::VmNotFound => vmigrate_result::VmNotFound,
            ErrorCode::CredentialsMissing => vmigrate_result::CredentialsMissing,
            ErrorCode::StatusFile => vmigrate_result::StatusFile,
            ErrorCode::BadUrl => vmigrate_result::BadUrl,
            ErrorCode::InvalidArgument => vmigrate_result::InvalidArgument,
            ErrorCode::StatusPlanMismatch => vmigrate_result::StatusPlanMismatch,
            ErrorCode::TargetBusy => vmigrate_result::TargetBusy,
            ErrorCode::SourceConnect => vmigrate_result::SourceConnect,
            ErrorCode::SourceTls => vmigrate_result::SourceTls,
            ErrorCode::SourceInvalidLogin => vmigrate_result::SourceInvalidLogin,
            ErrorCode::SourceNotAuthenticated => vmigrate_result::SourceNotAuthenticated,
            ErrorCode::SourceNotFound => vmigrate_result::SourceNotFound,
            ErrorCode::SourceTaskFailed => vmigrate_result::SourceTaskFailed,
            ErrorCode::SourceInvalidState => vmigrate_result::SourceInvalidState,
            ErrorCode::SourceTaskInProgress => vmigrate_result::SourceTaskInProgress,
            ErrorCode::SourceFault => vmigrate_result::SourceFault,
            ErrorCode::SourceMalformed => vmigrate_result::SourceMalformed,
            ErrorCode::SourceDescriptorParse => vmigrate_result::SourceDescriptorParse,
            ErrorCode::SourceDiskFormat => vmigrate_result::SourceDiskFormat,
            ErrorCode::SourceFileMissing => vmigrate_result::SourceFileMissing,
            ErrorCode::UnsafePath => vmigrate_result::UnsafePath,
            ErrorCode::TargetConfig => vmigrate_result::TargetConfig,
            ErrorCode::TargetForbidden => vmigrate_result::TargetForbidden,
            ErrorCode::TargetNotFound => vmigrate_result::TargetNotFound,
            ErrorCode::TargetConflict => vmigrate_result::TargetConflict,
            ErrorCode::TargetInvalid => vmigrate_result::TargetInvalid,
            ErrorCode::TargetMissingApi => vmigrate_result::TargetMissingApi,
            ErrorCode::TargetQuota => vmigrate_result::TargetQuota,
            ErrorCode::TargetUploadFailed => vmigrate_result::TargetUploadFailed,
            ErrorCode::TargetImportFailed => vmigrate_result::TargetImportFailed,
            ErrorCode::TargetFault => vmigrate_result::TargetFault,
            ErrorCode::Io => vmigrate_result::Io,
            ErrorCode::NoSpace => vmigrate_result::NoSpace,
            ErrorCode::NbdProtocol => vmigrate_result::NbdProtocol,
            ErrorCode::NbdConnect => vmigrate_result::NbdConnect,
            ErrorCode::NbdRequest => vmigrate_result::NbdRequest,
            ErrorCode::HttpStatus => vmigrate_result::HttpStatus,
            ErrorCode::HttpRange => vmigrate_result::HttpRange,
            ErrorCode::HttpConnect => vmigrate_result::HttpConnect,
            ErrorCode::OutOfBounds => vmigrate_result::OutOfBounds,
            ErrorCode::VerifyMismatch => vmigrate_result::VerifyMismatch,
            ErrorCode::Checkpoint => vmigrate_result::Checkpoint,
            ErrorCode::TransportUnsupported => vmigrate_result::TransportUnsupported,
            ErrorCode::ShortRead => vmigrate_result::ShortRead,
            ErrorCode::HttpTls => vmigrate_result::HttpTls,
            ErrorCode::NbdTls => vmigrate_result::NbdTls,
            ErrorCode::SameDisk => vmigrate_result::SameDisk,
            ErrorCode::TargetExists => vmigrate_result::TargetExists,
            ErrorCode::Cancelled => vmigrate_result::Cancelled,
            ErrorCode::Timeout => vmigrate_result::Timeout,
            ErrorCode::HookFailed => vmigrate_result::HookFailed,
            ErrorCode::Unsupported => vmigrate_result::Unsupported,
            ErrorCode::ConversionFailed => vmigrate_result::ConversionFailed,
            ErrorCode::Panic => vmigrate_result::Panic,
            ErrorCode::Internal => vmigrate_result::Internal,
            _ => vmigrate_result::Internal,
        }
    }
}

/// The symbolic name of a code as a static C string.
pub(crate) fn static_name(code: u32) -> Option<&'static CStr> {
    match code {
        0 => Some(c"Ok"),
        1001 => Some(c"PlanParse"),
        1002 => Some(c"PlanInvalid"),
        1003 => Some(c"ValidationBlocked"),
        1004 => Some(c"VmNotFound"),
        1005 => Some(c"CredentialsMissing"),
        1006 => Some(c"StatusFile"),
        1007 => Some(c"BadUrl"),
        1008 => Some(c"InvalidArgument"),
        1009 => Some(c"StatusPlanMismatch"),
        1010 => Some(c"TargetBusy"),
        2001 => Some(c"SourceConnect"),
        2002 => Some(c"SourceTls"),
        2003 => Some(c"SourceInvalidLogin"),
        2004 => Some(c"SourceNotAuthenticated"),
        2005 => Some(c"SourceNotFound"),
        2006 => Some(c"SourceTaskFailed"),
        2007 => Some(c"SourceInvalidState"),
        2008 => Some(c"SourceTaskInProgress"),
        2009 => Some(c"SourceFault"),
        2010 => Some(c"SourceMalformed"),
        2011 => Some(c"SourceDescriptorParse"),
        2012 => Some(c"SourceDiskFormat"),
        2013 => Some(c"SourceFileMissing"),
        2014 => Some(c"UnsafePath"),
        3001 => Some(c"TargetConfig"),
        3002 => Some(c"TargetForbidden"),
        3003 => Some(c"TargetNotFound"),
        3004 => Some(c"TargetConflict"),
        3005 => Some(c"TargetInvalid"),
        3006 => Some(c"TargetMissingApi"),
        3007 => Some(c"TargetQuota"),
        3008 => Some(c"TargetUploadFailed"),
        3009 => Some(c"TargetImportFailed"),
        3010 => Some(c"TargetFault"),
        4001 => Some(c"Io"),
        4002 => Some(c"NoSpace"),
        4003 => Some(c"NbdProtocol"),
        4004 => Some(c"NbdConnect"),
        4005 => Some(c"NbdRequest"),
        4006 => Some(c"HttpStatus"),
        4007 => Some(c"HttpRange"),
        4008 => Some(c"HttpConnect"),
        4009 => Some(c"OutOfBounds"),
        4010 => Some(c"VerifyMismatch"),
        4011 => Some(c"Checkpoint"),
        4012 => Some(c"TransportUnsupported"),
        4013 => Some(c"ShortRead"),
        4014 => Some(c"HttpTls"),
        4015 => Some(c"NbdTls"),
        4016 => Some(c"SameDisk"),
        4017 => Some(c"TargetExists"),
        5001 => Some(c"Cancelled"),
        5002 => Some(c"Timeout"),
        5003 => Some(c"HookFailed"),
        5004 => Some(c"Unsupported"),
        5005 => Some(c"ConversionFailed"),
        9001 => Some(c"Panic"),
        9002 => Some(c"Internal"),
        _ => None,
    }
}
