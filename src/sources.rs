//! Open a source provider from a plan's source URL: the one registry of source URL schemes.
//!
//! Every front end (the CLI, the C library, the Python module) chooses a source here and
//! nowhere else: [`SOURCE_SCHEMES`] lists what each scheme opens and whether it logs in, and
//! [`open_source_with`] opens it. A new source provider adds one row and one match arm (see
//! `docs/architecture.md`).

use vmigrate_core::plan::SourceSpec;
use vmigrate_core::{Credentials, Error, ErrorCode, Result, SourceProvider};

/// Which provider a source URL scheme opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// A vCenter or ESXi endpoint (`https://host/sdk`): `vmigrate_vsphere::VsphereSource`.
    Vsphere,
    /// A local copy of a datastore folder (`vmx:///path`): `vmigrate_vsphere::local::LocalSource`.
    Vmx,
    /// An OVA package or a folder of them (`ova:///path`): [`vmigrate_ova::OvaSource`].
    Ova,
}

/// One row of the source registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceScheme {
    /// The URL scheme, lower case, without `://`.
    pub scheme: &'static str,
    /// The provider it opens.
    pub kind: SourceKind,
    /// How a URL of this scheme looks (for messages and help).
    pub example: &'static str,
    /// Whether opening it logs in (credentials from the plan, the environment or the caller).
    pub needs_credentials: bool,
}

/// The registry: every source URL scheme vmigrate opens.
pub const SOURCE_SCHEMES: &[SourceScheme] = &[
    SourceScheme {
        scheme: "https",
        kind: SourceKind::Vsphere,
        example: "https://vcenter/sdk",
        needs_credentials: true,
    },
    SourceScheme { scheme: "http", kind: SourceKind::Vsphere, example: "http://vcenter/sdk", needs_credentials: true },
    SourceScheme {
        scheme: "vmx",
        kind: SourceKind::Vmx,
        example: "vmx:///path/to/datastore-folder",
        needs_credentials: false,
    },
    SourceScheme {
        scheme: "ova",
        kind: SourceKind::Ova,
        example: "ova:///path/vm.ova (or a folder of .ova files)",
        needs_credentials: false,
    },
];

fn supported() -> String {
    SOURCE_SCHEMES.iter().filter(|s| s.scheme != "http").map(|s| s.example).collect::<Vec<_>>().join(", ")
}

/// The registry row for `url`'s scheme.
///
/// # Errors
/// [`ErrorCode::BadUrl`] for a URL without a scheme or with one no provider registers.
pub fn source_scheme(url: &str) -> Result<&'static SourceScheme> {
    let url = url.trim();
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::new(ErrorCode::BadUrl, format!("source {url:?} has no scheme: use {}", supported())));
    };
    SOURCE_SCHEMES.iter().find(|s| s.scheme.eq_ignore_ascii_case(scheme)).ok_or_else(|| {
        Error::new(
            ErrorCode::BadUrl,
            format!("source scheme {scheme:?} is not supported (url {url}): use {}", supported()),
        )
    })
}

/// The validation rules of the source `url` names ([`SourceProvider::vm_rules`] of the
/// provider it opens), without opening it: a plan validated offline gets the same concerns as
/// a run. Unknown schemes have none (opening them fails).
pub fn source_rules(url: &str) -> vmigrate_core::validate::VmRules {
    match source_scheme(url).map(|s| s.kind) {
        Ok(SourceKind::Vsphere | SourceKind::Vmx) => vmigrate_vsphere::rules::validate_vm,
        Ok(SourceKind::Ova) => vmigrate_vsphere::rules::validate_vm,
        Err(_) => vmigrate_core::validate::no_rules,
    }
}

/// Fill what an inventory saved by an older vmigrate lacks, from the source's own tables: the
/// neutral OS id (`osId`) from the source's guest id. Without it, an inventory written before
/// `osId` existed would read as "unknown OS" and block every VM at `conversion.unsupported-os`
/// in an offline `validate`. VMs that already carry an OS id are left as they are.
pub fn complete_saved_inventory(url: &str, inventory: &mut vmigrate_core::Inventory) {
    if !matches!(source_scheme(url).map(|s| s.kind), Ok(SourceKind::Vsphere | SourceKind::Vmx | SourceKind::Ova)) {
        return;
    }
    for vm in inventory.vms.iter_mut().filter(|v| v.os_id.is_empty()) {
        if let Some(id) = vmigrate_vsphere::osinfo::os_id_from_guest_id(&vm.guest_id) {
            vm.os_id = id;
        }
    }
}

/// Whether the source `url` names logs in (a vSphere endpoint). False for unknown schemes
/// (opening them fails with [`ErrorCode::BadUrl`]).
pub fn needs_credentials(url: &str) -> bool {
    source_scheme(url).is_ok_and(|s| s.needs_credentials)
}

/// Open the source a plan names (see [`SOURCE_SCHEMES`]); a source that logs in takes its
/// credentials from the plan or the environment ([`source_credentials`]).
///
/// # Errors
/// [`ErrorCode::BadUrl`] for an unknown scheme; connection and credential errors of the provider.
pub async fn open_source(spec: &SourceSpec) -> Result<Box<dyn SourceProvider>> {
    open_source_with(spec, None).await
}

/// [`open_source`] with credentials given by the caller (C and Python pass them as values);
/// `None` reads them as [`open_source`] does. Sources that do not log in ignore them.
///
/// # Errors
/// As [`open_source`].
pub async fn open_source_with(spec: &SourceSpec, credentials: Option<Credentials>) -> Result<Box<dyn SourceProvider>> {
    match source_scheme(&spec.url)?.kind {
        SourceKind::Vsphere => {
            let creds = match credentials {
                Some(c) => c,
                None => source_credentials(spec)?,
            };
            Ok(Box::new(open_vsphere(spec, creds).await?))
        }
        SourceKind::Vmx => Ok(Box::new(vmigrate_vsphere::local::LocalSource::from_url(spec.url.trim())?)),
        SourceKind::Ova => Ok(Box::new(vmigrate_ova::OvaSource::from_url(spec.url.trim())?)),
    }
}

/// Credentials a caller gives as two optional values (C's `username`/`password`, Python's
/// keywords): both, or neither (then [`open_source_with`] reads them as [`open_source`] does).
///
/// # Errors
/// [`ErrorCode::InvalidArgument`] when only one of them is given.
pub fn credentials_from(username: Option<String>, password: Option<String>) -> Result<Option<Credentials>> {
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (None, None) => Ok(None),
        _ => Err(Error::new(ErrorCode::InvalidArgument, "username and password must be given together")),
    }
}

/// Credentials for a vSphere source: the plan's `credentials` variables, else
/// `VMIGRATE_SOURCE_USERNAME` / `VMIGRATE_SOURCE_PASSWORD`, else govc's `GOVC_USERNAME` /
/// `GOVC_PASSWORD`.
///
/// # Errors
/// [`ErrorCode::CredentialsMissing`] naming the variables (never their values).
pub fn source_credentials(spec: &SourceSpec) -> Result<Credentials> {
    if let Some(r) = &spec.credentials {
        return r.resolve();
    }
    let get = |a: &str, b: &str| {
        std::env::var(a).ok().filter(|v| !v.is_empty()).or_else(|| std::env::var(b).ok().filter(|v| !v.is_empty()))
    };
    match (get("VMIGRATE_SOURCE_USERNAME", "GOVC_USERNAME"), get("VMIGRATE_SOURCE_PASSWORD", "GOVC_PASSWORD")) {
        (Some(username), Some(password)) => Ok(Credentials { username, password }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_answers_for_every_scheme_and_refuses_others() {
        assert_eq!(source_scheme("https://vc/sdk").map(|s| s.kind).ok(), Some(SourceKind::Vsphere));
        assert_eq!(source_scheme("HTTPS://vc/sdk").map(|s| s.kind).ok(), Some(SourceKind::Vsphere));
        assert_eq!(source_scheme("vmx:///ds").map(|s| s.kind).ok(), Some(SourceKind::Vmx));
        assert_eq!(source_scheme("ova:///x.ova").map(|s| s.kind).ok(), Some(SourceKind::Ova));
        assert!(
            needs_credentials("https://vc/sdk") && !needs_credentials("ova:///x.ova") && !needs_credentials("nope")
        );
        assert_eq!(credentials_from(None, None).ok(), Some(None));
        // An inventory saved before `osId` existed gets it from the guest id; one that has it
        // keeps it.
        let mut inv: vmigrate_core::Inventory = serde_json::from_str(
            r#"{"vms":[{"id":{"moref":"vm-1"},"name":"db","guestId":"rhel8_64Guest"},
                       {"id":{"moref":"vm-2"},"name":"w","guestId":"rhel8_64Guest","osId":"win2k19"}]}"#,
        )
        .expect("inventory");
        complete_saved_inventory("https://vc/sdk", &mut inv);
        assert_eq!((inv.vms[0].os_id.as_str(), inv.vms[1].os_id.as_str()), ("rhel8.0", "win2k19"));
        assert!(credentials_from(Some("u".into()), Some("p".into())).is_ok_and(|c| c.is_some()));
        let one = credentials_from(Some("u".into()), None).expect_err("refused");
        assert_eq!(one.code(), ErrorCode::InvalidArgument);
        for bad in ["/plain/path", "ftp://x/y"] {
            let e = source_scheme(bad).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::BadUrl);
            assert!(e.message().contains("ova:///"), "{}", e.message());
        }
    }
}
