//! Open a source provider from a plan's source URL.

use vmigrate_core::plan::SourceSpec;
use vmigrate_core::{Error, ErrorCode, Result, SourceProvider};

/// Open the source a plan names: `vmx:///path` (local datastore folder) or `https://host/sdk`
/// (vSphere).
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unknown scheme; connection and credential errors of the provider.
pub async fn open_source(spec: &SourceSpec) -> Result<Box<dyn SourceProvider>> {
    let scheme = spec.url.split_once("://").map(|(s, _)| s).unwrap_or("");
    Err(Error::new(ErrorCode::BadUrl, format!("source scheme {scheme:?} is not supported yet (url {})", spec.url)))
}
