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
    /// Could not connect to the vSphere endpoint. (range `vsphere`, kind `Connection`)
    VsphereConnect = 2001,
    /// The vSphere certificate did not verify or did not match the pinned thumbprint. (range `vsphere`, kind `Tls`)
    VsphereTls = 2002,
    /// vSphere refused the login (InvalidLogin). (range `vsphere`, kind `Auth`)
    VsphereInvalidLogin = 2003,
    /// The vSphere session is not (or no longer) authenticated (NotAuthenticated). (range `vsphere`, kind `Auth`)
    VsphereNotAuthenticated = 2004,
    /// A managed object no longer exists (ManagedObjectNotFound). (range `vsphere`, kind `NotFound`)
    VsphereNotFound = 2005,
    /// A vSphere task failed. (range `vsphere`, kind `Conflict`)
    VsphereTaskFailed = 2006,
    /// The object is in the wrong state for the operation (InvalidState, InvalidPowerState). (range `vsphere`, kind `Conflict`)
    VsphereInvalidState = 2007,
    /// Another task is already running on the object (TaskInProgress). (range `vsphere`, kind `Conflict`)
    VsphereTaskInProgress = 2008,
    /// Any other SOAP fault. (range `vsphere`, kind `Protocol`)
    VsphereFault = 2009,
    /// The server sent XML we cannot parse, or a response over the size limit. (range `vsphere`, kind `Protocol`)
    VsphereMalformed = 2010,
    /// A VMX file could not be parsed. (range `vsphere`, kind `InvalidInput`)
    VmxParse = 2011,
    /// A VMDK descriptor or sparse header is invalid or unsupported. (range `vsphere`, kind `Protocol`)
    VmdkFormat = 2012,
    /// A datastore file is missing. (range `vsphere`, kind `NotFound`)
    DatastoreFileMissing = 2013,
    /// A file a datastore names (VMX, descriptor, extent, delta parent) resolves outside the datastore folder (`..`, an absolute name, a symlink out) or is not a regular file. (range `vsphere`, kind `InvalidInput`)
    UnsafePath = 2014,
    /// Could not load or use the kubeconfig / cluster credentials. (range `kubevirt`, kind `Auth`)
    KubeConfig = 3001,
    /// The Kubernetes API refused with 403. (range `kubevirt`, kind `Auth`)
    KubeForbidden = 3002,
    /// A Kubernetes object or API is missing (404). (range `kubevirt`, kind `NotFound`)
    KubeNotFound = 3003,
    /// A Kubernetes object conflicts (409). (range `kubevirt`, kind `Conflict`)
    KubeConflict = 3004,
    /// The Kubernetes API rejected an object as invalid (422). (range `kubevirt`, kind `InvalidInput`)
    KubeInvalid = 3005,
    /// KubeVirt or CDI custom resources are not installed. (range `kubevirt`, kind `Unsupported`)
    KubeMissingCrd = 3006,
    /// A resource quota or limit was exceeded. (range `kubevirt`, kind `NoSpace`)
    KubeQuota = 3007,
    /// The CDI upload failed. (range `kubevirt`, kind `Io`)
    CdiUpload = 3008,
    /// A DataVolume or import failed. (range `kubevirt`, kind `Conflict`)
    DataVolumeFailed = 3009,
    /// Any other Kubernetes API error. (range `kubevirt`, kind `Protocol`)
    KubeApi = 3010,
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
            ErrorCode::VsphereConnect => vmigrate_result::VsphereConnect,
            ErrorCode::VsphereTls => vmigrate_result::VsphereTls,
            ErrorCode::VsphereInvalidLogin => vmigrate_result::VsphereInvalidLogin,
            ErrorCode::VsphereNotAuthenticated => vmigrate_result::VsphereNotAuthenticated,
            ErrorCode::VsphereNotFound => vmigrate_result::VsphereNotFound,
            ErrorCode::VsphereTaskFailed => vmigrate_result::VsphereTaskFailed,
            ErrorCode::VsphereInvalidState => vmigrate_result::VsphereInvalidState,
            ErrorCode::VsphereTaskInProgress => vmigrate_result::VsphereTaskInProgress,
            ErrorCode::VsphereFault => vmigrate_result::VsphereFault,
            ErrorCode::VsphereMalformed => vmigrate_result::VsphereMalformed,
            ErrorCode::VmxParse => vmigrate_result::VmxParse,
            ErrorCode::VmdkFormat => vmigrate_result::VmdkFormat,
            ErrorCode::DatastoreFileMissing => vmigrate_result::DatastoreFileMissing,
            ErrorCode::UnsafePath => vmigrate_result::UnsafePath,
            ErrorCode::KubeConfig => vmigrate_result::KubeConfig,
            ErrorCode::KubeForbidden => vmigrate_result::KubeForbidden,
            ErrorCode::KubeNotFound => vmigrate_result::KubeNotFound,
            ErrorCode::KubeConflict => vmigrate_result::KubeConflict,
            ErrorCode::KubeInvalid => vmigrate_result::KubeInvalid,
            ErrorCode::KubeMissingCrd => vmigrate_result::KubeMissingCrd,
            ErrorCode::KubeQuota => vmigrate_result::KubeQuota,
            ErrorCode::CdiUpload => vmigrate_result::CdiUpload,
            ErrorCode::DataVolumeFailed => vmigrate_result::DataVolumeFailed,
            ErrorCode::KubeApi => vmigrate_result::KubeApi,
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
        2001 => Some(c"VsphereConnect"),
        2002 => Some(c"VsphereTls"),
        2003 => Some(c"VsphereInvalidLogin"),
        2004 => Some(c"VsphereNotAuthenticated"),
        2005 => Some(c"VsphereNotFound"),
        2006 => Some(c"VsphereTaskFailed"),
        2007 => Some(c"VsphereInvalidState"),
        2008 => Some(c"VsphereTaskInProgress"),
        2009 => Some(c"VsphereFault"),
        2010 => Some(c"VsphereMalformed"),
        2011 => Some(c"VmxParse"),
        2012 => Some(c"VmdkFormat"),
        2013 => Some(c"DatastoreFileMissing"),
        2014 => Some(c"UnsafePath"),
        3001 => Some(c"KubeConfig"),
        3002 => Some(c"KubeForbidden"),
        3003 => Some(c"KubeNotFound"),
        3004 => Some(c"KubeConflict"),
        3005 => Some(c"KubeInvalid"),
        3006 => Some(c"KubeMissingCrd"),
        3007 => Some(c"KubeQuota"),
        3008 => Some(c"CdiUpload"),
        3009 => Some(c"DataVolumeFailed"),
        3010 => Some(c"KubeApi"),
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
