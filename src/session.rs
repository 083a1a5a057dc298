//! One migration session, written once for every front end: the CLI (`vmigrate migrate`), the C
//! library (`vmigrate_migration_*`) and the Python module (`vmigrate.Plan.run`) all use it.
//!
//! A [`Migration`] opens the plan's source and target through the registries
//! ([`sources`](crate::sources), [`targets`](crate::targets)), runs the executor while handing
//! its events to the caller on the caller's own task (so a binding can re-enter its language
//! there: call a C callback, re-attach to Python), cancels through a thread-safe
//! [`Controller`], and ends both providers' sessions (vCenter logout) on [`Migration::close`].
//! The plan's own options (`verify`, ...) are applied by the executor, so no front end can
//! forget them.
//!
//! ```no_run
//! # async fn demo() -> vmigrate::core::Result<()> {
//! use vmigrate::session::{Migration, MigrationOptions};
//! let plan = vmigrate::core::Plan::from_file("plan.yaml")?;
//! let migration = Migration::open(plan, MigrationOptions::default().status_path("plan.status.json")).await?;
//! let status = migration.run(|event| println!("{}", vmigrate::wire::migration_event(event))).await;
//! migration.close().await?;
//! println!("{}", status?.summary());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use vmigrate_core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate_core::{Error, ErrorCode, Plan, PlanStatus, Result, SourceProvider, TargetProvider};

use crate::targets::TargetOptions;

/// How to run a plan, beyond what the plan itself says. The plan's options always hold; these
/// can only ask for more (`verify`) or say where state goes.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MigrationOptions {
    /// Status file, written after every phase; an earlier run of the same plan found there is
    /// resumed.
    pub status_path: Option<PathBuf>,
    /// Control file polled for cancel / cutover requests from other processes (`vmigrate cancel`).
    pub control_path: Option<PathBuf>,
    /// Warm plans: cut over right after the initial copy instead of at the plan's time.
    pub cutover_now: bool,
    /// Verify every copied disk, even when the plan does not ask for it.
    pub verify: bool,
    /// Parallel connections per disk copy (the engine's default when `None`; at least 1).
    pub connections: Option<usize>,
    /// How often a disk copy saves its resume checkpoint (the engine's default when `None`).
    pub checkpoint_interval: Option<Duration>,
    /// Choices about the target.
    pub target: TargetOptions,
}

impl MigrationOptions {
    /// Write the status here after every phase (and resume from it).
    #[must_use]
    pub fn status_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.status_path = Some(path.into());
        self
    }

    /// Poll this control file for requests from other processes.
    #[must_use]
    pub fn control_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.control_path = Some(path.into());
        self
    }

    /// Warm plans: cut over right after the initial copy.
    #[must_use]
    pub fn cutover_now(mut self, now: bool) -> Self {
        self.cutover_now = now;
        self
    }

    /// Verify every copied disk (on top of the plan's `options.verify`).
    #[must_use]
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Parallel connections per disk copy.
    #[must_use]
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = Some(n);
        self
    }

    /// How often a disk copy saves its resume checkpoint.
    #[must_use]
    pub fn checkpoint_interval(mut self, every: Duration) -> Self {
        self.checkpoint_interval = Some(every);
        self
    }

    /// Choices about the target (`force_conflicts`).
    #[must_use]
    pub fn target(mut self, target: TargetOptions) -> Self {
        self.target = target;
        self
    }
}

/// Where the executor's events go while a run is in progress: the sending half of the running
/// call's channel, `None` between runs.
type EventSlot = Arc<Mutex<Option<mpsc::UnboundedSender<Event>>>>;

/// Marks a [`Migration`] as running; on drop, stops event delivery and frees it for another run.
struct RunGuard<'a>(&'a Migration);

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        *self.0.events.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.0.running.store(false, Ordering::Release);
    }
}

/// One plan ready to run against its opened source and target.
pub struct Migration {
    executor: Arc<Executor>,
    controller: Controller,
    events: EventSlot,
    running: AtomicBool,
    source: Arc<dyn SourceProvider>,
    target: Arc<dyn TargetProvider>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("executor", &self.executor)
            .field("source", &self.source.kind())
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Migration {
    /// Open the plan's source (credentials from the variables the plan names, else
    /// `VMIGRATE_SOURCE_USERNAME`/`_PASSWORD`) and target, and prepare the executor.
    ///
    /// # Errors
    /// Opening the source or the target ([`ErrorCode::BadUrl`] for a scheme no provider
    /// registers); the source is closed again when the target cannot be opened.
    pub async fn open(plan: Plan, options: MigrationOptions) -> Result<Migration> {
        let source: Arc<dyn SourceProvider> = Arc::from(crate::sources::open_source(&plan.spec.source).await?);
        let target: Arc<dyn TargetProvider> =
            match crate::targets::open_target_with(&plan.spec.target, &options.target).await {
                Ok(t) => Arc::from(t),
                Err(e) => {
                    crate::sources::close_quietly(source.as_ref()).await;
                    return Err(e);
                }
            };
        Ok(Self::with_providers(plan, source, target, options))
    }

    /// A session over providers the caller opened (tests, a provider outside the registries).
    /// [`MigrationOptions::target`] is not used: the target is already open.
    pub fn with_providers(
        plan: Plan,
        source: Arc<dyn SourceProvider>,
        target: Arc<dyn TargetProvider>,
        options: MigrationOptions,
    ) -> Migration {
        let events: EventSlot = Arc::new(Mutex::new(None));
        let sink_slot = events.clone();
        let mut opts = ExecutorOptions {
            status_path: options.status_path,
            control_path: options.control_path,
            cutover_now: options.cutover_now,
            events: Some(Arc::new(move |e: &Event| {
                if let Some(tx) = sink_slot.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let _ = tx.send(e.clone());
                }
            })),
            ..ExecutorOptions::default()
        };
        // The plan's own `options.verify` is added by the executor.
        opts.copy.verify = options.verify;
        if let Some(n) = options.connections {
            opts.copy.connections = n.max(1);
        }
        if let Some(every) = options.checkpoint_interval {
            opts.copy.checkpoint_interval = every;
        }
        let executor = Arc::new(Executor::new(plan, source.clone(), target.clone(), opts));
        let controller = executor.controller();
        Migration { executor, controller, events, running: AtomicBool::new(false), source, target }
    }

    /// A handle to cancel the plan or one VM, or to cut over: usable from any thread, before or
    /// during [`run`](Self::run).
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// The current status (during or after a run).
    pub fn status(&self) -> PlanStatus {
        self.executor.status()
    }

    /// Run the plan to its end, handing each event to `on_event` on the calling task.
    ///
    /// # Errors
    /// [`ErrorCode::ValidationBlocked`] when a VM has a critical concern (nothing was changed;
    /// [`status`](Self::status) holds the concerns); [`ErrorCode::Cancelled`] after
    /// [`Controller::cancel`] (the VMs in flight were cleaned up; the final status stays readable
    /// with [`status`](Self::status)); [`ErrorCode::Unsupported`] when this migration is already
    /// running; source and target errors before any VM starts. Failures of single VMs are in the
    /// status, not the result.
    pub async fn run(&self, mut on_event: impl FnMut(&Event)) -> Result<PlanStatus> {
        self.run_ticking(None, |e| {
            if let Some(e) = e {
                on_event(e);
            }
        })
        .await
    }

    /// [`run`](Self::run), also calling `on_event(None)` every `tick` while no event comes: a
    /// binding uses it to look at its own world regularly (Python checks for Ctrl-C).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn run_ticking(
        &self,
        tick: Option<Duration>,
        mut on_event: impl FnMut(Option<&Event>),
    ) -> Result<PlanStatus> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(Error::new(ErrorCode::Unsupported, "this migration is already running"));
        }
        // Cleared however the run ends, even when its future is dropped.
        let _running = RunGuard(self);
        let (tx, mut rx) = mpsc::unbounded_channel();
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let mut ticks = tick.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        });
        let run = self.executor.run();
        tokio::pin!(run);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(e) = rx.recv() => on_event(Some(&e)),
                () = async {
                    match ticks.as_mut() {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                } => on_event(None),
            }
        };
        *self.events.lock().unwrap_or_else(|p| p.into_inner()) = None;
        while let Ok(e) = rx.try_recv() {
            on_event(Some(&e));
        }
        let status = result?;
        if self.controller.is_cancelled() {
            return Err(Error::new(ErrorCode::Cancelled, format!("plan cancelled: {}", status.summary())));
        }
        Ok(status)
    }

    /// End the source's and the target's sessions (vSphere `Logout`). The status stays
    /// readable; a later [`run`](Self::run) fails. Calling it twice is harmless.
    ///
    /// # Errors
    /// The target's error when releasing it fails (a failed source logout is logged, not
    /// returned: the run's own outcome matters more).
    pub async fn close(&self) -> Result<()> {
        self.closing().await
    }

    /// [`close`](Self::close) as a future that owns what it needs, for a binding that must hand
    /// the logout to a runtime from a destructor (a Python object collected on any thread).
    pub fn closing(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (source, target) = (self.source.clone(), self.target.clone());
        async move {
            crate::sources::close_quietly(source.as_ref()).await;
            target.close().await
        }
    }

    /// [`close`](Self::close), logging (never returning) a failure: for the way out of a run.
    pub async fn close_quietly(&self) {
        if let Err(e) = self.close().await {
            tracing::warn!(error = %e.report(), "releasing the target failed");
        }
    }
}
