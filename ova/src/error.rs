//! What can be wrong with an OVA, and how it maps onto the core error codes.

use vmigrate_core::{Error, ErrorCode};

/// Why an OVA package could not be read. Carried as the cause of the [`Error`] the provider seam
/// returns, so callers can match the exact problem (`err.source()` downcasts to this) while C and
/// Python see the stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OvaError {
    /// A tar header is malformed (bad checksum, bad size field, an unknown entry type).
    #[error("tar header at byte {offset}: {reason}")]
    TarHeader {
        /// Offset of the header in the OVA file.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file ends before a header or an entry's data does.
    #[error("ova is truncated: {what} at byte {offset} needs {needed} bytes, the file has {size}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file's size.
        size: u64,
    },
    /// An entry whose name or type could reach outside the package (`..`, an absolute name, a
    /// link, a device) or is ambiguous (a duplicate).
    #[error("tar entry {name:?} at byte {offset}: {reason}")]
    UnsafeEntry {
        /// The name as written.
        name: String,
        /// Offset of its header.
        offset: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The OVF descriptor is not XML we understand or breaks the OVF structure.
    #[error("ovf descriptor: {reason}")]
    Ovf {
        /// What is wrong.
        reason: String,
    },
    /// The manifest (`.mf`) is malformed.
    #[error("manifest line {line}: {reason}")]
    Manifest {
        /// 1-based line (0: the whole manifest).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file's digest differs from the manifest's: the package was altered or damaged.
    #[error("{file}: {algorithm} digest {actual} does not match the manifest's {expected}")]
    DigestMismatch {
        /// Entry name.
        file: String,
        /// `SHA256`, `SHA1` or `SHA512`.
        algorithm: &'static str,
        /// The manifest's hex digest.
        expected: String,
        /// The digest of the bytes in the archive.
        actual: String,
    },
    /// A file the descriptor or manifest names is not in the archive (or not in the manifest).
    #[error("{file}: {why}")]
    MissingFile {
        /// The name.
        file: String,
        /// Who names it and where it is missing.
        why: &'static str,
    },
    /// A valid OVF feature this source does not read (compressed files, chunked files, disk
    /// formats other than VMDK).
    #[error("unsupported ova: {what}")]
    Unsupported {
        /// The feature.
        what: String,
    },
}

impl OvaError {
    /// The stable code this error crosses the provider seam with: the source range's generic
    /// codes, as for any source (OVA-only codes would take the 2800-2899 sub-range of
    /// `docs/errors.md`; none is needed). A malformed package is
    /// [`ErrorCode::SourceDescriptorParse`] (the source's VM description is unreadable), a cut
    /// file [`ErrorCode::ShortRead`], a digest mismatch [`ErrorCode::VerifyMismatch`], an entry
    /// reaching outside the package [`ErrorCode::UnsafePath`], a missing file
    /// [`ErrorCode::SourceFileMissing`].
    pub fn code(&self) -> ErrorCode {
        match self {
            OvaError::TarHeader { .. } | OvaError::Ovf { .. } | OvaError::Manifest { .. } => {
                ErrorCode::SourceDescriptorParse
            }
            OvaError::Truncated { .. } => ErrorCode::ShortRead,
            OvaError::UnsafeEntry { .. } => ErrorCode::UnsafePath,
            OvaError::DigestMismatch { .. } => ErrorCode::VerifyMismatch,
            OvaError::MissingFile { .. } => ErrorCode::SourceFileMissing,
            OvaError::Unsupported { .. } => ErrorCode::Unsupported,
        }
    }

    /// This error as the core [`Error`], with `context` (usually the OVA's name) as its message.
    pub fn at(self, context: impl Into<String>) -> Error {
        Error::new(self.code(), context).with_source(self)
    }
}

impl From<OvaError> for Error {
    fn from(e: OvaError) -> Self {
        Error::new(e.code(), "invalid ova").with_source(e)
    }
}

/// The [`OvaError`] behind a core error, if there is one (for tests and callers that want the
/// exact problem).
pub fn ova_error(e: &Error) -> Option<&OvaError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(o) = c.downcast_ref::<OvaError>() {
            return Some(o);
        }
        cur = c.source();
    }
    None
}
