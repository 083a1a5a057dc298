//! `VsphereError`: everything the vSphere client and source can fail with, converted into
//! [`vmigrate_core::Error`] (2000-range codes) at the provider seam.
//!
//! No variant carries a password: the client never formats credentials, and URLs are stored
//! without user info.

use vmigrate_core::{Error, ErrorCode};

/// A failure of the vSphere API client or source provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VsphereError {
    /// The endpoint URL is malformed or uses a scheme we refuse (plain http to a non-loopback host).
    #[error("bad vsphere url {url}: {reason}")]
    BadUrl {
        /// The URL, without user info.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP connection failed (refused, reset, DNS, timeout).
    #[error("cannot reach vsphere at {url}")]
    Connect {
        /// The URL, without user info.
        url: String,
        /// The transport error, as classified by the shared HTTP code (`vmigrate_core::http`).
        #[source]
        source: Error,
    },
    /// TLS verification failed: certificate untrusted or not matching the pinned thumbprint.
    /// The shared HTTP code reports these as [`ErrorCode::HttpTls`]; at the vSphere seam they
    /// become [`ErrorCode::SourceTls`] so users see that the source's certificate was refused,
    /// not some transport's.
    #[error("tls verification of {url} failed")]
    Tls {
        /// The URL, without user info.
        url: String,
        /// The transport error carrying the rustls cause.
        #[source]
        source: Error,
    },
    /// Login refused (wrong user or password).
    #[error("vsphere refused the login of user {username}")]
    InvalidLogin {
        /// The user name (never the password).
        username: String,
    },
    /// The session is not (or no longer) authenticated and re-login did not help.
    #[error("vsphere session is not authenticated")]
    NotAuthenticated,
    /// A managed object no longer exists.
    #[error("vsphere object {object} not found")]
    NotFound {
        /// The moref or name.
        object: String,
    },
    /// Another task runs on the object.
    #[error("another task is in progress on {object}: {message}")]
    TaskInProgress {
        /// The object, when known.
        object: String,
        /// Server message.
        message: String,
    },
    /// The object is in the wrong state (InvalidState, InvalidPowerState, ...).
    #[error("{fault}: {message}")]
    InvalidState {
        /// Fault type name.
        fault: String,
        /// Server message.
        message: String,
    },
    /// Any other SOAP fault.
    #[error("vsphere fault {fault}: {message}")]
    Fault {
        /// Fault type name (`InvalidArgument`).
        fault: String,
        /// `faultstring` or localized message.
        message: String,
    },
    /// A task ended in error with a fault we do not classify further.
    #[error("vsphere task {task} failed with {fault}: {message}")]
    TaskFailed {
        /// Task moref.
        task: String,
        /// Fault type name.
        fault: String,
        /// Localized message.
        message: String,
    },
    /// The server answered with something that is not the SOAP we expect, or too much of it.
    #[error("malformed vsphere response to {method}: {detail}")]
    Malformed {
        /// The method (or URL) that got the answer.
        method: String,
        /// What was wrong.
        detail: String,
    },
    /// An HTTP status we cannot interpret as SOAP (e.g. a proxy's 502).
    #[error("vsphere answered {method} with http status {status}")]
    HttpStatus {
        /// Method or datastore path.
        method: String,
        /// Status code.
        status: u16,
    },
    /// A datastore file is missing (404 on `/folder`).
    #[error("datastore file {path} is missing")]
    DatastoreFileMissing {
        /// `[ds] path`.
        path: String,
    },
    /// A deadline passed (graceful shutdown, task wait).
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// Starting or talking to a helper process (nbdkit) failed.
    #[error("{what}")]
    Process {
        /// What was being done.
        what: String,
        /// The I/O cause.
        #[source]
        source: std::io::Error,
    },
}

impl VsphereError {
    /// The stable code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            VsphereError::BadUrl { .. } => ErrorCode::BadUrl,
            VsphereError::Connect { .. } => ErrorCode::SourceConnect,
            VsphereError::Tls { .. } => ErrorCode::SourceTls,
            VsphereError::InvalidLogin { .. } => ErrorCode::SourceInvalidLogin,
            VsphereError::NotAuthenticated => ErrorCode::SourceNotAuthenticated,
            VsphereError::NotFound { .. } => ErrorCode::SourceNotFound,
            VsphereError::TaskInProgress { .. } => ErrorCode::SourceTaskInProgress,
            VsphereError::InvalidState { .. } => ErrorCode::SourceInvalidState,
            VsphereError::Fault { .. } => ErrorCode::SourceFault,
            VsphereError::TaskFailed { .. } => ErrorCode::SourceTaskFailed,
            VsphereError::Malformed { .. } => ErrorCode::SourceMalformed,
            VsphereError::HttpStatus { .. } => ErrorCode::HttpStatus,
            VsphereError::DatastoreFileMissing { .. } => ErrorCode::SourceFileMissing,
            VsphereError::Timeout { .. } => ErrorCode::Timeout,
            VsphereError::Process { .. } => ErrorCode::Io,
        }
    }

    /// Build the typed error for a SOAP fault type name and message.
    pub fn from_fault(fault: &str, message: &str, object: Option<&str>, username: &str) -> Self {
        let message = message.to_string();
        match fault {
            "InvalidLogin" => VsphereError::InvalidLogin { username: username.to_string() },
            "NotAuthenticated" => VsphereError::NotAuthenticated,
            "ManagedObjectNotFound" => {
                VsphereError::NotFound { object: object.map(str::to_string).unwrap_or_else(|| message.clone()) }
            }
            "TaskInProgress" => VsphereError::TaskInProgress { object: object.unwrap_or("").to_string(), message },
            "InvalidState"
            | "InvalidPowerState"
            | "InvalidDatastoreState"
            | "InvalidHostState"
            | "InvalidVmState"
            | "ToolsUnavailable"
            | "VmConfigIncompatibleForFaultTolerance" => {
                VsphereError::InvalidState { fault: fault.to_string(), message }
            }
            _ => VsphereError::Fault { fault: fault.to_string(), message },
        }
    }
}

impl From<VsphereError> for Error {
    fn from(e: VsphereError) -> Error {
        let code = e.code();
        let message = e.to_string();
        Error::new(code, message).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_classify_into_codes() {
        let cases = [
            ("InvalidLogin", ErrorCode::SourceInvalidLogin),
            ("NotAuthenticated", ErrorCode::SourceNotAuthenticated),
            ("ManagedObjectNotFound", ErrorCode::SourceNotFound),
            ("TaskInProgress", ErrorCode::SourceTaskInProgress),
            ("InvalidPowerState", ErrorCode::SourceInvalidState),
            ("InvalidState", ErrorCode::SourceInvalidState),
            ("InvalidArgument", ErrorCode::SourceFault),
        ];
        for (fault, code) in cases {
            assert_eq!(VsphereError::from_fault(fault, "m", Some("vm-1"), "u").code(), code, "{fault}");
        }
        let e: Error = VsphereError::InvalidLogin { username: "admin".into() }.into();
        assert_eq!(e.code(), ErrorCode::SourceInvalidLogin);
        assert!(e.report().contains("admin"));
    }
}
