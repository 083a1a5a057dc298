//! `vmigrate_source`: a connected source (vSphere or a local VMX folder) and its inventory.

use std::ffi::c_char;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmigrate_core::plan::{CredentialsRef, SourceSpec};
use vmigrate_core::{Error, Result, SourceProvider};

use crate::codes::vmigrate_result;
use crate::runtime::block_on;
use crate::util::{invalid, non_null, optional_str, required_str, write_out, write_string};

/// A source connection: opaque; create with `vmigrate_source_new`, release with
/// `vmigrate_source_free`.
pub struct vmigrate_source {
    _private: [u8; 0],
}

/// What a `vmigrate_source` handle points to.
pub(crate) struct Source {
    pub(crate) provider: Arc<dyn SourceProvider>,
    _credentials: EnvCredentials,
}

/// Credentials given as values, handed to a provider that reads them through a [`CredentialsRef`]:
/// stored under environment variable names private to one handle (so concurrent handles never see
/// each other's) and removed when the handle is freed or opening fails.
pub(crate) struct EnvCredentials(Option<CredentialsRef>);

impl EnvCredentials {
    /// Stash `username`/`password` when given.
    pub(crate) fn new(credentials: Option<(&str, &str)>) -> EnvCredentials {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        EnvCredentials(credentials.map(|(username, password)| {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let pid = std::process::id();
            let r = CredentialsRef {
                username_env: format!("VMIGRATE_FFI_{pid}_{n}_USERNAME"),
                password_env: format!("VMIGRATE_FFI_{pid}_{n}_PASSWORD"),
            };
            std::env::set_var(&r.username_env, username);
            std::env::set_var(&r.password_env, password);
            r
        }))
    }

    /// The reference to put into a [`SourceSpec`].
    pub(crate) fn reference(&self) -> Option<CredentialsRef> {
        self.0.clone()
    }
}

impl Drop for EnvCredentials {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            std::env::remove_var(&r.username_env);
            std::env::remove_var(&r.password_env);
        }
    }
}

/// Open a source; credentials given as values override the spec's.
pub(crate) async fn open(mut spec: SourceSpec, credentials: Option<(&str, &str)>) -> Result<Source> {
    let env = EnvCredentials::new(credentials);
    if let Some(r) = env.reference() {
        spec.credentials = Some(r);
    }
    let provider = vmigrate_facade::sources::open_source(&spec).await?;
    Ok(Source { provider: Arc::from(provider), _credentials: env })
}

/// Connect to a source.
///
/// `url` is `https://vcenter/sdk` (vSphere) or `vmx:///path/to/datastore-folder` (a local copy of
/// a datastore). `username`/`password` may both be NULL (no login, or a local source) but not only
/// one. `thumbprint` (SHA-256 `AB:CD:...`) pins the server certificate; `ca_file` is a PEM bundle
/// used instead of the system roots; `insecure` skips TLS verification. NULL or empty optional
/// strings mean "not given". On success `*out` receives a handle to free with
/// `vmigrate_source_free`.
///
/// # Safety
/// String arguments are NULL or NUL-terminated; `out` is a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_source_new(
    url: *const c_char,
    username: *const c_char,
    password: *const c_char,
    thumbprint: *const c_char,
    ca_file: *const c_char,
    insecure: bool,
    out: *mut *mut vmigrate_source,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out, "out")?;
        // SAFETY: caller contract: NULL or NUL-terminated strings that outlive this call.
        let (url, username, password, thumbprint, ca_file) = unsafe {
            (
                required_str(url, "url")?,
                optional_str(username, "username")?,
                optional_str(password, "password")?,
                optional_str(thumbprint, "thumbprint")?,
                optional_str(ca_file, "ca_file")?,
            )
        };
        let credentials = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => return Err(invalid("username and password must be given together")),
        };
        let spec = SourceSpec {
            url: url.to_string(),
            thumbprint: thumbprint.map(str::to_string),
            ca_file: ca_file.map(str::to_string),
            insecure,
            credentials: None,
            vddk_lib_dir: None,
        };
        let source = block_on(open(spec, credentials))??;
        // SAFETY: out was checked for NULL; the handle is a Box<Source> C treats as opaque.
        unsafe { write_out(out, Box::into_raw(Box::new(source)).cast::<vmigrate_source>()) };
        Ok(())
    }
}

/// Borrow the Rust object behind a handle.
///
/// # Safety
/// `p` is NULL or a live handle from `vmigrate_source_new`.
pub(crate) unsafe fn source_ref<'a>(p: *const vmigrate_source) -> Result<&'a Source> {
    non_null(p, "source")?;
    // SAFETY: a non-NULL handle is a Box<Source> we leaked in vmigrate_source_new, still alive.
    Ok(unsafe { &*p.cast::<Source>() })
}

/// List the source's VMs, networks, datastores and hosts as one JSON object (the `Inventory`
/// model: `{"vms": [...], "networks": [...], "datastores": [...], "hosts": [...]}`). On success
/// `*out_json` receives a string to free with `vmigrate_string_free`.
///
/// # Safety
/// `source` is a live handle; `out_json` a valid pointer.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_source_inventory(
    source: *const vmigrate_source,
    out_json: *mut *mut c_char,
) -> vmigrate_result {
    ffi_panic_boundary! {
        non_null(out_json, "out_json")?;
        // SAFETY: caller contract: a live handle.
        let source = unsafe { source_ref(source) }?;
        let inventory = block_on(source.provider.inventory())??;
        let json = serde_json::to_string(&inventory).map_err(|e| {
            Error::new(vmigrate_core::ErrorCode::Internal, "serializing the inventory").with_source(e)
        })?;
        // SAFETY: out_json checked for NULL above.
        unsafe { write_string(out_json, json) };
        Ok(())
    }
}

/// Release a source. NULL is ignored.
///
/// # Safety
/// `source` is NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_source_free(source: *mut vmigrate_source) {
    ffi_panic_boundary_void! {
        if !source.is_null() {
            // SAFETY: the handle is the Box<Source> leaked by vmigrate_source_new, freed once.
            crate::runtime::drop_in_runtime(unsafe { Box::from_raw(source.cast::<Source>()) });
        }
    }
}
