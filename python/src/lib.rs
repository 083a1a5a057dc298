//! The native half of the `vmigrate` Python package, imported as `vmigrate._native`.
//!
//! It stays thin: plans, sources, migrations and the copy engine exchange JSON text with the
//! pure-Python layer (`vmigrate/__init__.py`), which builds the dataclasses users see. Every
//! call that touches the network or disks releases the GIL (`Python::detach`) and re-attaches only
//! to deliver progress and to check for signals, so Ctrl-C cancels the work cleanly and then
//! raises `KeyboardInterrupt`. Errors are raised as one exception class per range of the shared
//! error-code table, each instance carrying `.code`, `.name` and `.kind`.
//!
//! The library's log records go to Python's `logging`, to the logger named after the Rust module
//! (`vmigrate.core.engine`, `vmigrate.vsphere.soap`, ...; all under `vmigrate`), each with its
//! plan / VM / disk context in the message and as `record.vmigrate` (a dict). Nothing is printed
//! unless the application configures logging, as with any well-behaved Python library.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use vmigrate_core::engine::CopyControl;
use vmigrate_core::plan::SourceSpec;
use vmigrate_core::{Error, ErrorCode, ErrorRange, Inventory, PlanStatus, SourceProvider};
use vmigrate_facade::copy::{prepare_specs, CopyRequest};
use vmigrate_facade::logging::{self, ForwardLayer, Record};
use vmigrate_facade::{session, wire};

create_exception!(
    vmigrate,
    MigrationError,
    PyException,
    "Base class of every vmigrate error; carries .code, .name and .kind."
);
create_exception!(vmigrate, PlanError, MigrationError, "Plan and validation errors (codes 1000-1999).");
create_exception!(
    vmigrate,
    SourceError,
    MigrationError,
    "Errors of the source the VMs come from, whichever provider it is (codes 2000-2999; also named VsphereError)."
);
create_exception!(
    vmigrate,
    TargetError,
    MigrationError,
    "Errors of the target the VMs go to, whichever provider it is (codes 3000-3999; also named KubevirtError)."
);
create_exception!(vmigrate, TransportError, MigrationError, "Transport and copy errors (codes 4000-4999).");
create_exception!(vmigrate, ExecutionError, MigrationError, "Plan execution errors (codes 5000-5999).");
create_exception!(vmigrate, CancelledError, ExecutionError, "The operation was cancelled (code 5001).");
create_exception!(
    vmigrate,
    InternalError,
    MigrationError,
    "Bugs: broken invariants and caught panics (codes 9000-9999)."
);

/// How often progress is delivered to Python, and signals checked, while work runs.
const TICK: Duration = Duration::from_millis(100);

fn runtime() -> PyResult<&'static Runtime> {
    static RT: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vmigrate-worker")
        .build()
        .map_err(|e| to_py_err(Error::io("starting the vmigrate runtime", e)))?;
    Ok(RT.get_or_init(|| rt))
}

/// Run a future on the library runtime with the GIL released.
fn block_on<T: Send, F: Future<Output = T> + Send>(py: Python<'_>, fut: F) -> PyResult<T> {
    let rt = runtime()?;
    Ok(py.detach(|| rt.block_on(fut)))
}

fn kind_name(code: ErrorCode) -> String {
    serde_json::to_value(code.kind()).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The exception for a vmigrate error: the class of its range, with `.code`, `.name`, `.kind`.
fn to_py_err(e: Error) -> PyErr {
    let code = e.code();
    let message = e.report();
    let err = match code.error_range() {
        ErrorRange::Plan => PlanError::new_err(message),
        ErrorRange::Source => SourceError::new_err(message),
        ErrorRange::Target => TargetError::new_err(message),
        ErrorRange::Transport => TransportError::new_err(message),
        ErrorRange::Execution if code == ErrorCode::Cancelled => CancelledError::new_err(message),
        ErrorRange::Execution => ExecutionError::new_err(message),
        _ => InternalError::new_err(message),
    };
    Python::attach(|py| {
        let value = err.value(py);
        // Setting attributes on a fresh exception instance cannot fail short of memory exhaustion;
        // the exception is still raised without them if it does.
        let _ = value.setattr("code", code as u32);
        let _ = value.setattr("name", code.name());
        let _ = value.setattr("kind", kind_name(code));
    });
    err
}

fn json_err(what: &str, e: serde_json::Error) -> PyErr {
    to_py_err(Error::new(ErrorCode::Internal, format!("serializing {what}")).with_source(e))
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| json_err(what, e))
}

/// Deliver progress to Python from inside a detached section: re-attach, check for signals
/// (Ctrl-C), call the callback. The first failure (KeyboardInterrupt or an exception raised by
/// the callback) is kept and `cancel` is called; later deliveries are skipped.
struct Deliver<'a> {
    callback: Option<&'a Py<PyAny>>,
    pending: Option<PyErr>,
    cancel: &'a (dyn Fn() + Sync),
}

impl Deliver<'_> {
    fn send(&mut self, payload: Option<String>) {
        if self.pending.is_some() {
            return;
        }
        let outcome = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let (Some(cb), Some(text)) = (self.callback, payload) {
                cb.call1(py, (text,))?;
            }
            Ok(())
        });
        if let Err(e) = outcome {
            self.pending = Some(e);
            (self.cancel)();
        }
    }
}

/// The stable error-code table: `(code, name, range, kind, description)` for every code.
#[pyfunction]
fn error_codes() -> Vec<(u32, &'static str, &'static str, String, &'static str)> {
    ErrorCode::ALL.iter().map(|c| (*c as u32, c.name(), c.range(), kind_name(*c), c.description())).collect()
}

/// The old names of renamed codes: `(old name, code)`, in numeric order.
#[pyfunction]
fn error_code_old_names() -> Vec<(&'static str, u32)> {
    ErrorCode::OLD_NAMES.iter().map(|(old, c)| (*old, *c as u32)).collect()
}

/// The ranges of the table: `(name, first, last, old names)`, in numeric order.
#[pyfunction]
fn error_ranges() -> Vec<(&'static str, u32, u32, Vec<&'static str>)> {
    ErrorRange::ALL
        .iter()
        .map(|r| (r.name(), *r.numbers().start(), *r.numbers().end(), r.old_names().to_vec()))
        .collect()
}

/// Raise the exception of `code` with `message` (for tests of the exception mapping).
#[pyfunction]
fn raise_error(code: u32, message: &str) -> PyResult<()> {
    let code = ErrorCode::from_u32(code)
        .ok_or_else(|| to_py_err(Error::new(ErrorCode::InvalidArgument, format!("{code} is not an error code"))))?;
    Err(to_py_err(Error::new(code, message)))
}

/// Read a status file written by a plan run; JSON text.
#[pyfunction]
fn load_status(path: PathBuf) -> PyResult<String> {
    let status = PlanStatus::load(&path).map_err(to_py_err)?;
    wire::plan_status(&status).map_err(to_py_err)
}

/// Copy one disk between transports with the engine alone; returns the statistics as JSON text.
/// `progress` is called with one JSON text per tick (and once at the end). The keyword options
/// are those of `vmigrate copy` (`None`: the engine's default); `checkpoint` names a file where
/// resume checkpoints are saved and from which a re-run resumes; `overwrite` replaces an existing
/// non-empty target file (refused otherwise).
#[pyfunction]
#[pyo3(signature = (src, dst, progress=None, verify=false, *, connections=None, request_size=None, flush=true, checkpoint=None, copy_file_range=false, overwrite=false))]
#[allow(clippy::too_many_arguments)]
fn copy_disk(
    py: Python<'_>,
    src: String,
    dst: String,
    progress: Option<Py<PyAny>>,
    verify: bool,
    connections: Option<usize>,
    request_size: Option<usize>,
    flush: bool,
    checkpoint: Option<PathBuf>,
    copy_file_range: bool,
    overwrite: bool,
) -> PyResult<String> {
    let defaults = CopyRequest::default();
    let req = CopyRequest {
        verify,
        connections: connections.unwrap_or(defaults.connections),
        request_size: request_size.unwrap_or(defaults.request_size),
        flush,
        checkpoint,
        copy_file_range,
        overwrite,
        ..defaults
    };
    let ctl = CopyControl::new();
    let progress_of = ctl.progress.clone();
    let cancel_token = ctl.cancel.clone();
    let cancel = move || cancel_token.cancel();
    let mut deliver = Deliver { callback: progress.as_ref(), pending: None, cancel: &cancel };
    let rt = runtime()?;
    let result = py.detach(|| {
        rt.block_on(async {
            let prepared = prepare_specs(&src, &dst, &req).await?;
            let copy = prepared.run(ctl);
            tokio::pin!(copy);
            let mut tick = tokio::time::interval(TICK * 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let result = loop {
                tokio::select! {
                    r = &mut copy => break r,
                    _ = tick.tick() => {
                        deliver.send(Some(wire::copy_progress(&progress_of.snapshot())));
                    }
                }
            };
            if result.is_ok() {
                deliver.send(Some(wire::copy_progress(&progress_of.snapshot())));
            }
            result
        })
    });
    // Ctrl-C or a failing callback wins over the Cancelled error it caused.
    if let Some(e) = deliver.pending {
        return Err(e);
    }
    let stats = result.map_err(to_py_err)?;
    wire::copy_stats(&stats).map_err(to_py_err)
}

/// Write the lab's VMware datastore (haproxy, database, winweb01, winweb02 with sparse VMDKs)
/// under `root` and return its folder, for `vmx://` demos and tests.
#[pyfunction]
fn create_lab_datastore(py: Python<'_>, root: PathBuf) -> PyResult<String> {
    let ds =
        block_on(py, async move { vmigrate_facade::demo::create_lab_datastore(&root).await })?.map_err(to_py_err)?;
    Ok(ds.to_string_lossy().into_owned())
}

/// A parsed and checked migration plan.
#[pyclass(module = "vmigrate._native", frozen)]
struct Plan {
    inner: vmigrate_core::Plan,
}

#[pymethods]
impl Plan {
    /// Read a plan file (`.json` as JSON, anything else as YAML).
    #[staticmethod]
    fn from_file(path: PathBuf) -> PyResult<Plan> {
        Ok(Plan { inner: vmigrate_core::Plan::from_file(path).map_err(to_py_err)? })
    }

    /// Parse a plan from YAML text.
    #[staticmethod]
    fn from_yaml(text: &str) -> PyResult<Plan> {
        Ok(Plan { inner: vmigrate_core::Plan::from_yaml_str(text).map_err(to_py_err)? })
    }

    /// Parse a plan from JSON text.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Plan> {
        Ok(Plan { inner: vmigrate_core::Plan::from_json_str(text).map_err(to_py_err)? })
    }

    /// The plan's name (`metadata.name`).
    #[getter]
    fn name(&self) -> String {
        self.inner.metadata.name.clone()
    }

    /// The plan as JSON text, defaults filled in.
    fn to_json(&self) -> PyResult<String> {
        to_json(&self.inner, "the plan")
    }

    /// Validate against an inventory (JSON text) or, when None, the plan's own source; returns
    /// `{"blocked": bool, "vms": [...]}` as JSON text. The GIL is released meanwhile.
    #[pyo3(signature = (inventory_json=None))]
    fn validate(&self, py: Python<'_>, inventory_json: Option<&str>) -> PyResult<String> {
        let inventory: Option<Inventory> = inventory_json.map(wire::parse_inventory).transpose().map_err(to_py_err)?;
        let plan = &self.inner;
        let validation = block_on(py, vmigrate_facade::validate_plan(plan, inventory.as_ref()))?.map_err(to_py_err)?;
        wire::plan_validation(&validation).map_err(to_py_err)
    }

    fn __repr__(&self) -> String {
        format!("Plan({:?})", self.inner.metadata.name)
    }
}

/// A connected source (vSphere or a local VMX datastore folder).
#[pyclass(module = "vmigrate._native", frozen)]
struct Source {
    provider: Arc<dyn SourceProvider>,
    url: String,
}

#[pymethods]
impl Source {
    /// Connect (GIL released). Credentials given here are used for vSphere instead of the
    /// environment variables; they are not kept in the object's repr.
    #[new]
    #[pyo3(signature = (url, username=None, password=None, thumbprint=None, ca_file=None, insecure=false))]
    fn new(
        py: Python<'_>,
        url: String,
        username: Option<String>,
        password: Option<String>,
        thumbprint: Option<String>,
        ca_file: Option<String>,
        insecure: bool,
    ) -> PyResult<Source> {
        let credentials = vmigrate_facade::sources::credentials_from(username, password).map_err(to_py_err)?;
        let spec =
            SourceSpec { url: url.clone(), thumbprint, ca_file, insecure, credentials: None, vddk_lib_dir: None };
        let provider = block_on(py, async move {
            let provider: Arc<dyn SourceProvider> =
                Arc::from(vmigrate_facade::sources::open_source_with(&spec, credentials).await?);
            Ok::<_, Error>(provider)
        })?
        .map_err(to_py_err)?;
        Ok(Source { provider, url })
    }

    /// The URL given.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// The inventory (VMs, networks, datastores, hosts) as JSON text; GIL released.
    fn inventory_json(&self, py: Python<'_>) -> PyResult<String> {
        let provider = self.provider.clone();
        let inventory = block_on(py, async move { provider.inventory().await })?.map_err(to_py_err)?;
        wire::inventory(&inventory).map_err(to_py_err)
    }

    /// End the source's session now (vSphere `Logout`; GIL released). Later calls fail; a
    /// second `close` is a no-op.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let provider = self.provider.clone();
        block_on(py, async move { provider.close().await })?.map_err(to_py_err)
    }

    fn __repr__(&self) -> String {
        format!("Source({:?})", self.url)
    }
}

impl Drop for Source {
    /// End the session in the background when the object goes away without `close()`: it may be
    /// collected on any thread, holding the GIL, outside any runtime, so the logout is handed to
    /// the package's runtime instead of blocking here.
    fn drop(&mut self) {
        let Ok(rt) = runtime() else { return };
        let provider = self.provider.clone();
        rt.spawn(async move { vmigrate_facade::sources::close_quietly(provider.as_ref()).await });
    }
}

/// One run of a plan against its opened source and target: the facade's session, written once
/// for the CLI, C and Python.
#[pyclass(module = "vmigrate._native", frozen)]
struct Migration {
    inner: session::Migration,
}

impl Drop for Migration {
    fn drop(&mut self) {
        // The object may be collected on any thread, holding the GIL, outside any runtime: the
        // logout is handed to the package's runtime instead of blocking here.
        if let Ok(rt) = runtime() {
            let closing = self.inner.closing();
            rt.spawn(async move {
                let _ = closing.await;
            });
        }
    }
}

#[pymethods]
impl Migration {
    /// Open the plan's source and target (GIL released). `status_path` is written after every
    /// phase and resumed from when it holds an earlier run of the same plan.
    #[new]
    #[pyo3(signature = (plan, status_path=None))]
    fn new(py: Python<'_>, plan: &Plan, status_path: Option<PathBuf>) -> PyResult<Migration> {
        let plan = plan.inner.clone();
        let mut options = session::MigrationOptions::default();
        if let Some(path) = status_path {
            options = options.status_path(path);
        }
        let inner = block_on(py, session::Migration::open(plan, options))?.map_err(to_py_err)?;
        Ok(Migration { inner })
    }

    /// Run to the end with the GIL released; `progress` gets each event as JSON text. Returns the
    /// final status as JSON text. Raises CancelledError after `cancel()`, and KeyboardInterrupt
    /// (after the cancellation's cleanup) on Ctrl-C.
    #[pyo3(signature = (progress=None))]
    fn run(&self, py: Python<'_>, progress: Option<Py<PyAny>>) -> PyResult<String> {
        let controller = self.inner.controller();
        let cancel = move || controller.cancel();
        let mut deliver = Deliver { callback: progress.as_ref(), pending: None, cancel: &cancel };
        let rt = runtime()?;
        let result = py
            .detach(|| rt.block_on(self.inner.run_ticking(Some(TICK), |e| deliver.send(e.map(wire::migration_event)))));
        // Ctrl-C or a failing callback wins over the Cancelled error it caused.
        if let Some(e) = deliver.pending {
            return Err(e);
        }
        let status = result.map_err(to_py_err)?;
        wire::plan_status(&status).map_err(to_py_err)
    }

    /// Cancel the whole run; thread-safe, before or during `run`.
    fn cancel(&self) {
        self.inner.controller().cancel();
    }

    /// Cancel one VM (by source name); the others go on.
    fn cancel_vm(&self, name: &str) {
        self.inner.controller().cancel_vm(name);
    }

    /// Warm plans: cut over as soon as the current pass ends.
    fn cutover_now(&self) {
        self.inner.controller().cutover_now();
    }

    /// The current status as JSON text.
    fn status(&self) -> PyResult<String> {
        wire::plan_status(&self.inner.status()).map_err(to_py_err)
    }

    /// End the source's and target's sessions (vSphere `Logout`; GIL released). The status stays
    /// readable; a later `run` fails.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.inner.closing())?.map_err(to_py_err)
    }
}

/// The module `vmigrate._native`.
/// `vmigrate_core::engine` -> `vmigrate.core.engine`, `vmigrate::copy` -> `vmigrate.copy`.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("vmigrate_") {
        Some(rest) => format!("vmigrate.{rest}"),
        None => dotted,
    }
}

/// Hand one record to Python's `logging` (from whichever thread logged). A record that arrives
/// while the interpreter shuts down is dropped.
fn to_python_logging(r: &Record) {
    let _ = Python::try_attach(|py| -> PyResult<()> {
        let level: u8 = match r.level {
            tracing::Level::ERROR => 40,
            tracing::Level::WARN => 30,
            tracing::Level::INFO => 20,
            tracing::Level::DEBUG => 10,
            _ => 5,
        };
        let logger = py.import("logging")?.call_method1("getLogger", (logger_name(&r.target),))?;
        if !logger.call_method1("isEnabledFor", (level,))?.extract::<bool>()? {
            return Ok(());
        }
        let fields = pyo3::types::PyDict::new(py);
        for (k, v) in &r.fields {
            fields.set_item(k, v)?;
        }
        let extra = pyo3::types::PyDict::new(py);
        extra.set_item("vmigrate", fields)?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        logger.call_method("log", (level, r.text()), Some(&kwargs))?;
        Ok(())
    });
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Python filters by logger level; TRACE stays off at the call sites.
    logging::install(ForwardLayer::new(tracing::Level::DEBUG, to_python_logging));
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(error_code_old_names, m)?)?;
    m.add_function(wrap_pyfunction!(error_ranges, m)?)?;
    m.add_function(wrap_pyfunction!(raise_error, m)?)?;
    m.add_function(wrap_pyfunction!(load_status, m)?)?;
    m.add_function(wrap_pyfunction!(copy_disk, m)?)?;
    m.add_function(wrap_pyfunction!(create_lab_datastore, m)?)?;
    m.add_class::<Plan>()?;
    m.add_class::<Source>()?;
    m.add_class::<Migration>()?;
    let base = py.get_type::<MigrationError>();
    // Class-level defaults, so the attributes exist (and type-check) before an instance sets them.
    base.setattr("code", 0)?;
    base.setattr("name", "")?;
    base.setattr("kind", "")?;
    m.add("MigrationError", base)?;
    m.add("PlanError", py.get_type::<PlanError>())?;
    m.add("SourceError", py.get_type::<SourceError>())?;
    m.add("TargetError", py.get_type::<TargetError>())?;
    // The classes' names when the ranges were named after providers: the same class objects, so
    // `except VsphereError` catches every source error as it always did.
    m.add("VsphereError", py.get_type::<SourceError>())?;
    m.add("KubevirtError", py.get_type::<TargetError>())?;
    m.add("TransportError", py.get_type::<TransportError>())?;
    m.add("ExecutionError", py.get_type::<ExecutionError>())?;
    m.add("CancelledError", py.get_type::<CancelledError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    Ok(())
}
