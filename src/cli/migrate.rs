//! `vmigrate migrate`, `status`, `cancel`, `expose`: run and steer a plan.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmigrate::core::executor::ControlRequests;
use vmigrate::core::{Error, ErrorCode, Phase, Plan, PlanStatus};
use vmigrate::session::{Migration, MigrationOptions};
use vmigrate::targets::TargetOptions;

use super::progress::{self, Mode};
use super::{Output, EXIT_BLOCKED, EXIT_CANCELED, EXIT_VM_FAILED};

/// Where a plan's status, control and lock files live unless `--status` says otherwise.
pub fn default_status_path(plan_file: &Path, plan: &Plan) -> PathBuf {
    let dir = plan_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!("{}.status.json", plan.metadata.name))
}

fn control_path(status: &Path) -> PathBuf {
    status.with_extension("control.json")
}

fn lock_path(status: &Path) -> PathBuf {
    status.with_extension("lock")
}

/// Options of `vmigrate migrate`.
#[derive(Debug)]
pub struct MigrateArgs {
    pub plan_file: PathBuf,
    pub status: Option<PathBuf>,
    pub resume: bool,
    pub cutover_now: bool,
    pub verify: bool,
    pub connections: Option<usize>,
    pub checkpoint_interval: Option<String>,
    pub force_conflicts: bool,
    pub output: Output,
}

pub async fn migrate(args: MigrateArgs) -> Result<ExitCode, Error> {
    let plan = Plan::from_file(&args.plan_file)?;
    let status_path = args.status.clone().unwrap_or_else(|| default_status_path(&args.plan_file, &plan));
    if args.resume && !status_path.exists() {
        return Err(Error::new(
            ErrorCode::StatusFile,
            format!("--resume: no status file at {}", status_path.display()),
        ));
    }
    // One executor per plan: a second `migrate` only forwards a cutover request.
    let lock_file = vmigrate::core::safe_fs::open_own_file(&lock_path(&status_path))
        .map_err(|e| Error::io(format!("opening lock file {}", lock_path(&status_path).display()), e))?;
    if lock_file.try_lock().is_err() {
        if args.cutover_now {
            ControlRequests::append(&control_path(&status_path), None, true)?;
            eprintln!("cutover requested for the running plan {}", plan.metadata.name);
            return Ok(ExitCode::SUCCESS);
        }
        return Err(Error::new(
            ErrorCode::StatusFile,
            format!("plan {} is already running (lock {} held)", plan.metadata.name, lock_path(&status_path).display()),
        ));
    }
    // Requests left from an earlier run are stale.
    let _ = std::fs::remove_file(control_path(&status_path));

    // Two runs with different status files must not write one output folder either: the
    // executor holds the target's lock (`.vmigrate.lock` in a dir:// folder) for the run.
    let mut opts = MigrationOptions::default()
        .status_path(status_path.clone())
        .control_path(control_path(&status_path))
        .cutover_now(args.cutover_now)
        .verify(args.verify)
        .target(TargetOptions::default().force_conflicts(args.force_conflicts));
    if let Some(n) = args.connections {
        opts = opts.connections(n);
    }
    if let Some(every) = &args.checkpoint_interval {
        opts = opts.checkpoint_interval(vmigrate::core::plan::parse_duration(every)?);
    }
    let total_vms = plan.spec.vms.len();
    let migration = Migration::open(plan, opts).await?;
    let mode = Mode::pick(args.output);
    let display = progress::display(mode, total_vms);
    let ctl = migration.controller();
    // Ctrl-C, or SIGTERM (systemd stopping a unit, a container runtime stopping the tool's
    // container), cancels the plan: the executor undoes what it did at the source (snapshots,
    // CBT, power) and removes half-made target objects, as the plan's contract says. A killed
    // process would leave snapshots at the source until a `--resume`.
    let ctrlc = tokio::spawn(async move {
        super::stop_requested().await;
        eprintln!("interrupt: cancelling the plan and cleaning up (Ctrl-C again to abort at once)");
        ctl.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    let res = migration.run(|e| (display.sink)(e)).await;
    // The bars leave the screen before the result is printed (see `Display::finish`).
    display.finish();
    ctrlc.abort();
    migration.close_quietly().await;
    drop(lock_file);
    let status = match res {
        Ok(s) => s,
        // A cancelled plan still prints its status (exit code 5 says it was cancelled).
        Err(e) if e.code() == ErrorCode::Cancelled => migration.status(),
        Err(e) if e.code() == ErrorCode::ValidationBlocked => {
            let st = migration.status();
            print_blocked(&st, args.output);
            eprintln!("vmigrate: {}", e.report());
            return Ok(ExitCode::from(EXIT_BLOCKED));
        }
        Err(e) => return Err(e),
    };
    print_status(&status, args.output, mode == Mode::Json);
    Ok(exit_for(&status))
}

fn exit_for(st: &PlanStatus) -> ExitCode {
    if st.vms.iter().all(|v| v.phase == Phase::Completed) {
        ExitCode::SUCCESS
    } else if st.vms.iter().any(|v| v.phase == Phase::Failed) {
        ExitCode::from(EXIT_VM_FAILED)
    } else {
        ExitCode::from(EXIT_CANCELED)
    }
}

fn print_blocked(st: &PlanStatus, output: Output) {
    if output == Output::Json {
        println!("{}", vmigrate::wire::migration_end(st, true).expect("status serializes"));
        return;
    }
    for vm in &st.vms {
        for c in &vm.concerns {
            if c.severity == vmigrate::core::Severity::Critical {
                eprintln!("{}: {} {}: {}", vm.name, c.severity, c.id, c.message);
            }
        }
    }
}

/// The final status: a table, or one JSON document (`docs/wire-format.md`): the `PlanStatus`
/// document, or in event-stream mode the stream's last `MigrationEvent` (`"event": "status"`).
pub fn print_status(st: &PlanStatus, output: Output, stream: bool) {
    match output {
        Output::Json if stream => println!("{}", vmigrate::wire::migration_end(st, false).expect("status serializes")),
        Output::Json => println!("{}", vmigrate::wire::plan_status(st).expect("status serializes")),
        Output::Table => print!("{}", status_table(st)),
    }
}

pub fn status_table(st: &PlanStatus) -> String {
    use super::text::{cell, column, safe};
    let mut out = format!("plan {}: {}\n", safe(&st.plan), st.summary());
    let w = column(st.vms.iter().map(|v| v.name.as_str()), 2);
    let tw = column(st.vms.iter().map(|v| v.target_name.as_str()), 6);
    out.push_str(&format!(
        "{}  {}  {:<14}  {:>7}  {:>9}  DETAIL\n",
        cell("VM", w),
        cell("TARGET", tw),
        "PHASE",
        "COPIED",
        "DOWNTIME"
    ));
    for v in &st.vms {
        let total: u64 = v.disks.iter().map(|d| d.total_bytes).sum();
        let done: u64 = v.disks.iter().map(|d| d.copied_bytes.min(d.total_bytes)).sum();
        let pct = (done * 100).checked_div(total).map(|p| format!("{p}%")).unwrap_or_else(|| "-".into());
        let down = v.downtime_seconds.map(|d| format!("{d:.1}s")).unwrap_or_else(|| "-".into());
        let detail = match (&v.error, &v.conversion) {
            (Some(e), _) => e.message.clone(),
            (None, Some(c)) => c.summary(),
            // Inspected before the copy, not converted yet.
            (None, None) => v
                .inspection
                .as_ref()
                .map(|o| {
                    format!(
                        "guest {} (inspected before the copy)",
                        if o.osinfo.is_empty() { &o.distro } else { &o.osinfo }
                    )
                })
                .unwrap_or_default(),
        };
        out.push_str(&format!(
            "{}  {}  {:<14}  {:>7}  {:>9}  {}\n",
            cell(&v.name, w),
            cell(&v.target_name, tw),
            format!("{:?}", v.phase),
            pct,
            down,
            safe(&detail)
        ));
    }
    out
}

pub fn status(plan_file: Option<&Path>, status: Option<&Path>, output: Output) -> Result<ExitCode, Error> {
    let path = resolve_status(plan_file, status)?;
    let st = PlanStatus::load(&path)?;
    print_status(&st, output, false);
    Ok(ExitCode::SUCCESS)
}

pub fn resolve_status(plan_file: Option<&Path>, status: Option<&Path>) -> Result<PathBuf, Error> {
    match (status, plan_file) {
        (Some(s), _) => Ok(s.to_path_buf()),
        (None, Some(p)) => Ok(default_status_path(p, &Plan::from_file(p)?)),
        (None, None) => Err(Error::new(ErrorCode::PlanInvalid, "give --plan or --status")),
    }
}

pub fn cancel(plan_file: Option<&Path>, status: Option<&Path>, vm: Option<&str>) -> Result<ExitCode, Error> {
    let path = resolve_status(plan_file, status)?;
    if !plan_is_running(&path) {
        return Err(Error::new(
            ErrorCode::StatusFile,
            format!(
                "no `vmigrate migrate` is running for {} (its lock {} is free): nothing to cancel",
                path.display(),
                lock_path(&path).display()
            ),
        ));
    }
    ControlRequests::append(&control_path(&path), Some(vm.unwrap_or("*")), false)?;
    eprintln!(
        "cancel requested for {} (the running `vmigrate migrate` cleans up and records Canceled)",
        vm.unwrap_or("the whole plan")
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether a `vmigrate migrate` holds the plan's lock (its lock file exists and is locked).
fn plan_is_running(status: &Path) -> bool {
    match std::fs::OpenOptions::new().write(true).open(lock_path(status)) {
        Ok(f) => f.try_lock().is_err(),
        Err(_) => false,
    }
}

pub async fn expose(plan_file: &Path, force_conflicts: bool) -> Result<ExitCode, Error> {
    let plan = Plan::from_file(plan_file)?;
    let topts = TargetOptions::default().force_conflicts(force_conflicts);
    let target = vmigrate::targets::open_target_with(&plan.spec.target, &topts).await?;
    target.expose(&plan.metadata.name, &plan.spec.target_namespace, &plan.spec.services).await?;
    for s in &plan.spec.services {
        match &s.route {
            Some(r) => eprintln!("service {} (route {})", s.name, r.name),
            None => eprintln!("service {}", s.name),
        }
    }
    Ok(ExitCode::SUCCESS)
}
