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
    match scheme {
        "vmx" => Ok(Box::new(vmigrate_vsphere::local::LocalSource::from_url(&spec.url)?)),
        "https" | "http" => {
            let creds = source_credentials(spec)?;
            Ok(Box::new(open_vsphere(spec, creds).await?))
        }
        "" => Err(Error::new(
            ErrorCode::BadUrl,
            format!(
                "source {:?} has no scheme: a datastore folder is vmx:///absolute/path, a vCenter https://host/sdk",
                spec.url
            ),
        )),
        _ => Err(Error::new(
            ErrorCode::BadUrl,
            format!(
                "source scheme {scheme:?} is not supported (url {}): use vmx:///path (a datastore folder) or https://host/sdk (vCenter)",
                spec.url
            ),
        )),
    }
}

/// Credentials for a vSphere source: the plan's `credentials` variables, else
/// `VMIGRATE_SOURCE_USERNAME` / `VMIGRATE_SOURCE_PASSWORD`, else govc's `GOVC_USERNAME` /
/// `GOVC_PASSWORD`.
///
/// # Errors
/// [`ErrorCode::CredentialsMissing`] naming the variables (never their values).
pub fn source_credentials(spec: &SourceSpec) -> Result<vmigrate_core::Credentials> {
    if let Some(r) = &spec.credentials {
        return r.resolve();
    }
    let get = |a: &str, b: &str| {
        std::env::var(a).ok().filter(|v| !v.is_empty()).or_else(|| std::env::var(b).ok().filter(|v| !v.is_empty()))
    };
    match (get("VMIGRATE_SOURCE_USERNAME", "GOVC_USERNAME"), get("VMIGRATE_SOURCE_PASSWORD", "GOVC_PASSWORD")) {
        (Some(username), Some(password)) => Ok(vmigrate_core::Credentials { username, password }),
        _ => Err(Error::new(
            ErrorCode::CredentialsMissing,
            "vsphere credentials missing: set VMIGRATE_SOURCE_USERNAME and VMIGRATE_SOURCE_PASSWORD (or GOVC_USERNAME/GOVC_PASSWORD)",
        )),
    }
}

/// Connect to a vSphere source with explicit credentials (TLS options from the spec; the CA
/// file is read here).
///
/// # Errors
/// Reading the CA file; the connection and login errors of
/// [`VsphereSource::connect`](vmigrate_vsphere::VsphereSource::connect).
pub async fn open_vsphere(
    spec: &SourceSpec,
    creds: vmigrate_core::Credentials,
) -> Result<vmigrate_vsphere::VsphereSource> {
    let ca_pem = match &spec.ca_file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| Error::io(format!("reading CA file {p}"), e))?),
        None => None,
    };
    vmigrate_vsphere::VsphereSource::connect(vmigrate_vsphere::ConnectOptions {
        url: spec.url.clone(),
        username: creds.username,
        password: creds.password,
        thumbprint: spec.thumbprint.clone(),
        ca_pem,
        insecure: spec.insecure,
        vddk_lib_dir: spec.vddk_lib_dir.clone(),
    })
    .await
}

/// The inventory and capabilities of the source a plan names, with the source's session ended
/// before returning (whatever the outcome): what `validate` needs, without leaving a vCenter
/// session behind until its idle timeout.
///
/// # Errors
/// As [`open_source`], and reading the inventory.
pub async fn read_inventory(
    spec: &SourceSpec,
) -> Result<(vmigrate_core::Inventory, vmigrate_core::SourceCapabilities)> {
    let source = open_source(spec).await?;
    let inventory = source.inventory().await;
    let caps = source.capabilities();
    close_quietly(source.as_ref()).await;
    Ok((inventory?, caps))
}

/// End a source's session, logging (never failing on) an error: used on the way out of a run
/// whose own outcome matters more than a failed logout.
pub async fn close_quietly(source: &dyn SourceProvider) {
    if let Err(e) = source.close().await {
        tracing::warn!(source = source.kind(), error = %e.report(), "ending the source session failed");
    }
}
