//! The crate's error type, converted into [`vmigrate_core::Error`] at the trait seam.

use vmigrate_core::{Error, ErrorCode};

/// Everything that can go wrong talking to a cluster or writing the output folder.
///
/// Messages are short and lower-case and never repeat their `#[source]`; upload tokens and
/// credentials never appear in them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubevirtError {
    /// The kubeconfig could not be read, or the context does not exist.
    #[error("cannot load kubernetes config (context {context:?})")]
    Config {
        /// Requested context (`None`: current context or in-cluster).
        context: Option<String>,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The API server refused with 403.
    #[error("forbidden: {verb} {what}")]
    Forbidden {
        /// Operation attempted.
        verb: &'static str,
        /// Object or collection.
        what: String,
        /// Server message.
        #[source]
        source: kube::Error,
    },
    /// The object or API does not exist (404).
    #[error("not found: {what}")]
    NotFound {
        /// Object or collection.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The object conflicts with one that exists (409), or belongs to someone else.
    #[error("conflict: {what}")]
    Conflict {
        /// Object and why.
        what: String,
    },
    /// The API server rejected the object (422).
    #[error("invalid object: {what}")]
    Invalid {
        /// Object.
        what: String,
        /// Server message.
        #[source]
        source: kube::Error,
    },
    /// A resource quota or limit range refused the object.
    #[error("quota exceeded creating {what}")]
    Quota {
        /// Object.
        what: String,
        /// Server message.
        #[source]
        source: kube::Error,
    },
    /// KubeVirt, CDI or another needed API group is not installed.
    #[error("api {group} is not installed on the cluster")]
    MissingCrd {
        /// API group/version, e.g. `kubevirt.io/v1`.
        group: String,
    },
    /// Any other API failure.
    #[error("kubernetes api error: {verb} {what}")]
    Api {
        /// Operation attempted.
        verb: &'static str,
        /// Object or collection.
        what: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The CDI upload failed.
    #[error("upload of {volume} failed: {reason}")]
    Upload {
        /// DataVolume name.
        volume: String,
        /// What went wrong (never the token).
        reason: String,
    },
    /// A DataVolume (import or upload) ended in phase `Failed`, or a transfer Job failed.
    #[error("{what} failed: {reason}")]
    TransferFailed {
        /// `DataVolume ns/name` or `Job ns/name`.
        what: String,
        /// Condition message or reason.
        reason: String,
    },
    /// Waiting for a condition took too long.
    #[error("timed out after {seconds}s waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        seconds: u64,
    },
    /// Local file or manifest I/O failed (output folder target).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest or object could not be (de)serialised.
    #[error("cannot parse {what}")]
    Parse {
        /// Which document.
        what: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A target URL or option is malformed.
    #[error("bad target option: {0}")]
    BadOption(String),
}

impl KubevirtError {
    /// The stable code this error crosses the seam with.
    pub fn code(&self) -> ErrorCode {
        match self {
            KubevirtError::Config { .. } => ErrorCode::TargetConfig,
            KubevirtError::Forbidden { .. } => ErrorCode::TargetForbidden,
            KubevirtError::NotFound { .. } => ErrorCode::TargetNotFound,
            KubevirtError::Conflict { .. } => ErrorCode::TargetConflict,
            KubevirtError::Invalid { .. } => ErrorCode::TargetInvalid,
            KubevirtError::Quota { .. } => ErrorCode::TargetQuota,
            KubevirtError::MissingCrd { .. } => ErrorCode::TargetMissingApi,
            KubevirtError::Api { .. } => ErrorCode::TargetFault,
            KubevirtError::Upload { .. } => ErrorCode::TargetUploadFailed,
            KubevirtError::TransferFailed { .. } => ErrorCode::TargetImportFailed,
            KubevirtError::Timeout { .. } => ErrorCode::Timeout,
            KubevirtError::Io { source, .. } => match source.raw_os_error() {
                Some(28) | Some(122) => ErrorCode::NoSpace,
                _ => ErrorCode::Io,
            },
            KubevirtError::Parse { .. } => ErrorCode::TargetFault,
            KubevirtError::BadOption(_) => ErrorCode::BadUrl,
        }
    }

    /// Classify a kube-rs error from `verb` on `what` by its HTTP status.
    pub fn from_kube(verb: &'static str, what: impl Into<String>, source: kube::Error) -> Self {
        let what = what.into();
        match &source {
            kube::Error::Api(resp) => match resp.code {
                403 if resp.message.contains("exceeded quota")
                    || resp.reason == "Forbidden" && resp.message.contains("quota") =>
                {
                    KubevirtError::Quota { what, source }
                }
                403 => KubevirtError::Forbidden { verb, what, source },
                404 => KubevirtError::NotFound { what, source },
                // Server-side apply names the other field manager in its message
                // (`conflict with "helm" using v1: .spec.ports...`).
                409 if resp.message.contains("Apply failed") => KubevirtError::Conflict {
                    what: format!(
                        "{what}: {}; another field manager owns these fields: change it there, or re-run \
                         with --force-conflicts to take them over",
                        resp.message
                    ),
                },
                409 => KubevirtError::Conflict { what: format!("{what}: {}", resp.message) },
                422 => KubevirtError::Invalid { what, source },
                // An apply with a field the schema does not declare is refused with 500
                // ("failed to create typed patch object ...: .spec.x: field not declared in
                // schema"): the object is invalid, not the server broken.
                500 if resp.message.contains("field not declared in schema")
                    || resp.message.contains("failed to create typed patch object") =>
                {
                    KubevirtError::Invalid { what, source }
                }
                _ => KubevirtError::Api { verb, what, source },
            },
            _ => KubevirtError::Api { verb, what, source },
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        KubevirtError::Io { context: context.into(), source }
    }
}

impl From<KubevirtError> for Error {
    fn from(e: KubevirtError) -> Error {
        let code = e.code();
        let message = e.to_string();
        Error::new(code, message).with_source(e)
    }
}

/// Crate result alias.
pub type Result<T, E = KubevirtError> = std::result::Result<T, E>;
