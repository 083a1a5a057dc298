//! `vmigrate_source`: a connected source (vSphere or a local VMX folder) and its inventory.

use std::ffi::c_char;
use std::sync::Arc;

use vmigrate_core::plan::SourceSpec;
use vmigrate_core::{Credentials, Result, SourceProvider};

use crate::codes::vmigrate_result;
use crate::runtime::block_on;
use crate::util::{non_null, optional_str, required_str, write_out, write_string};

/// A source connection: opaque; create with `vmigrate_source_new`, release with
/// `vmigrate_source_free`.
pub struct vmigrate_source {
    _private: [u8; 0],
}

/// What a `vmigrate_source` handle points to.
pub(crate) struct Source {
    pub(crate) provider: Arc<dyn SourceProvider>,
}

/// Open a source; credentials given as values are used for vSphere instead of the environment
/// variables the spec (or `VMIGRATE_SOURCE_USERNAME`/`_PASSWORD`) names.
pub(crate) async fn open(spec: SourceSpec, credentials: Option<Credentials>) -> Result<Source> {
    let provider: Arc<dyn SourceProvider> =
        Arc::from(vmigrate_facade::sources::open_source_with(&spec, credentials).await?);
    Ok(Source { provider })
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
        let credentials =
            vmigrate_facade::sources::credentials_from(username.map(str::to_string), password.map(str::to_string))?;
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
/// document of `docs/wire-format.md`: `{"apiVersion", "kind": "Inventory", "vms": [...],
/// "networks": [...], "datastores": [...], "hosts": [...]}`). On success
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
        let json = vmigrate_facade::wire::inventory(&inventory)?;
        // SAFETY: out_json checked for NULL above.
        unsafe { write_string(out_json, json) };
        Ok(())
    }
}

/// Release a source, ending its vCenter session first (`Logout`). NULL is ignored.
///
/// # Safety
/// `source` is NULL or a live handle, not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn vmigrate_source_free(source: *mut vmigrate_source) {
    ffi_panic_boundary_void! {
        if !source.is_null() {
            // SAFETY: the handle is the Box<Source> leaked by vmigrate_source_new, freed once.
            let s = unsafe { Box::from_raw(source.cast::<Source>()) };
            // End the vCenter session now: vCenter caps sessions per user, and one left to its
            // idle timeout per handle locks automation out.
            let provider = s.provider.clone();
            let _ = block_on(async move { vmigrate_facade::sources::close_quietly(provider.as_ref()).await });
            crate::runtime::drop_in_runtime(s);
        }
    }
}
