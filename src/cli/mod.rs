//! Command-line front end. Exit codes: 0 success, 1 failure, 2 usage, 3 blocked by validation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use vmigrate::core::{Error, Inventory, Plan};

mod copy;
mod demo;
mod inventory;
mod migrate;
mod progress;
mod text;
mod transfer;
mod validate;
mod watch;

/// Exit code when validation blocks at least one VM.
pub const EXIT_BLOCKED: u8 = 3;
/// Exit code when at least one VM failed.
pub const EXIT_VM_FAILED: u8 = 4;
/// Exit code when the plan (or a VM) was cancelled and none failed.
pub const EXIT_CANCELED: u8 = 5;

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM: the two ways a copy is asked to stop.
/// Kubernetes stops a pod (deletion, eviction, a node drain, the Job's deadline) with SIGTERM and
/// kills it with SIGKILL only after the grace period (30 s by default), so a worker that treats
/// SIGTERM like Ctrl-C gets to flush the target and keep its checkpoint for the next pod.
pub(crate) async fn stop_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    if r.is_err() {
                        // No SIGINT handler: wait for SIGTERM alone.
                        term.recv().await;
                    }
                }
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGTERM; only Ctrl-C stops the copy cleanly");
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Move VMware vSphere virtual machines to KubeVirt.
#[derive(Debug, Parser)]
#[command(name = "vmigrate", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `vmigrate=debug`; logs go to stderr.
    #[arg(long, global = true, env = "VMIGRATE_LOG", default_value = "warn")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable table.
    #[default]
    Table,
    /// JSON for machines.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lab's migration locally (no vCenter, no cluster): datastore, plan, progress,
    /// manifests, byte-for-byte verification.
    Demo(demo::DemoArgs),
    /// Run a plan: validate, then migrate every VM (resumes from the status file after a crash).
    Migrate {
        /// Plan file (YAML or JSON).
        #[arg(long)]
        plan: PathBuf,
        /// Status file (default: <plan name>.status.json next to the plan).
        #[arg(long)]
        status: Option<PathBuf>,
        /// Insist on resuming an earlier run (fails when there is no status file).
        #[arg(long)]
        resume: bool,
        /// Warm plans: `now` cuts over right after the copy, or tells a running plan to cut over.
        #[arg(long, value_parser = ["now"])]
        cutover: Option<String>,
        /// Verify every disk by digest after copying.
        #[arg(long)]
        verify: bool,
        /// Parallel connections per disk.
        #[arg(long)]
        connections: Option<usize>,
        /// How often each disk copy records a resumable checkpoint in the status file
        /// (e.g. `1s`, `500ms`; default 5s). Shorter loses less work on a crash.
        #[arg(long, value_name = "DURATION")]
        checkpoint_interval: Option<String>,
        /// Take over fields of the target's objects that another field manager owns (without it,
        /// such a conflict fails naming that manager).
        #[arg(long)]
        force_conflicts: bool,
        /// Output: progress bars and a table, or JSON lines (events, then the final status).
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show a plan's status file.
    Status {
        /// Plan file (the status file is found next to it).
        #[arg(long, required_unless_present = "status")]
        plan: Option<PathBuf>,
        /// Status file.
        #[arg(long)]
        status: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        /// Keep the table on screen, redrawn every second, until every VM has ended.
        #[arg(long, conflicts_with = "output")]
        watch: bool,
    },
    /// Serve a read-only web page of a plan's status (phases, bytes moved, rates, ETA, downtime,
    /// concerns, event log), from its status file.
    Serve {
        /// Plan file (the status file is found next to it).
        #[arg(long, required_unless_present = "status")]
        plan: Option<PathBuf>,
        /// Status file.
        #[arg(long)]
        status: Option<PathBuf>,
        /// Address to listen on (loopback by default: the page has no authentication).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Ask a running `vmigrate migrate` to cancel the plan or one VM (it cleans up).
    Cancel {
        /// Plan file.
        #[arg(long, required_unless_present = "status")]
        plan: Option<PathBuf>,
        /// Status file.
        #[arg(long)]
        status: Option<PathBuf>,
        /// Only this VM (source name).
        #[arg(long)]
        vm: Option<String>,
    },
    /// Create the plan's Services and Routes at the target (again).
    Expose {
        /// Plan file.
        #[arg(long)]
        plan: PathBuf,
        /// Take over fields of the Services and Routes that another field manager owns.
        #[arg(long)]
        force_conflicts: bool,
    },
    /// Copy one source VM disk into a device or file: the worker of in-cluster transfer Jobs.
    Transfer(transfer::TransferArgs),
    /// Print shell completions.
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
    /// Check every VM of a plan and print the concerns (exit 3 when any VM is blocked).
    Validate {
        /// Plan file (YAML or JSON).
        #[arg(long)]
        plan: PathBuf,
        /// Read the source inventory from this JSON file instead of connecting to the source.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Copy one disk image to another with the copy engine (paths, .vmdk, nbd://, http(s)://).
    Copy(copy::CopyArgs),
    /// List the VMs (disks, NICs, guest, firmware), networks and datastores of a source.
    Inventory(inventory::InventoryArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmigrate: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vmigrate: error[{}]: {}", e.code().name(), e.report());
            // Cancelled (Ctrl-C) has its own exit code, as documented, whichever command it hit.
            if e.code() == vmigrate::core::ErrorCode::Cancelled {
                ExitCode::from(EXIT_CANCELED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_tracing(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only on a terminal: logs redirected to a file must not carry escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Migrate {
            plan,
            status,
            resume,
            cutover,
            verify,
            connections,
            checkpoint_interval,
            force_conflicts,
            output,
        } => {
            migrate::migrate(migrate::MigrateArgs {
                plan_file: plan,
                status,
                resume,
                cutover_now: cutover.is_some(),
                verify,
                connections,
                checkpoint_interval,
                force_conflicts,
                output,
            })
            .await
        }
        Command::Status { plan, status, output, watch: false } => {
            migrate::status(plan.as_deref(), status.as_deref(), output)
        }
        Command::Status { plan, status, watch: true, .. } => {
            watch::watch(migrate::resolve_status(plan.as_deref(), status.as_deref())?, Duration::from_secs(1)).await
        }
        Command::Serve { plan, status, listen } => {
            watch::serve(migrate::resolve_status(plan.as_deref(), status.as_deref())?, &listen).await
        }
        Command::Cancel { plan, status, vm } => migrate::cancel(plan.as_deref(), status.as_deref(), vm.as_deref()),
        Command::Expose { plan, force_conflicts } => migrate::expose(&plan, force_conflicts).await,
        Command::Transfer(args) => transfer::run(args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "vmigrate", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Copy(args) => copy::run(args).await,
        Command::Inventory(args) => inventory::run(args).await,
        Command::Validate { plan, inventory, output } => {
            let plan = Plan::from_file(&plan)?;
            let offline = inventory.is_some();
            let inventory = inventory.map(|p| read_inventory(&p)).transpose()?;
            validate::run(&plan, inventory.as_ref(), output).await.map_err(|e| {
                if !offline && e.code() == vmigrate::core::ErrorCode::CredentialsMissing {
                    // Validation needs the source's inventory, not necessarily the source.
                    vmigrate::core::Error::new(
                        e.code(),
                        format!(
                            "{}; or validate offline from a saved inventory: `vmigrate inventory --source URL --output json > inventory.json`, then `vmigrate validate --plan P --inventory inventory.json`",
                            e.message()
                        ),
                    )
                } else {
                    e
                }
            })
        }
    }
}

fn read_inventory(path: &std::path::Path) -> Result<Inventory, Error> {
    use vmigrate::core::ErrorCode;
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading inventory {}", path.display()), e))?;
    // The `Inventory` document `vmigrate inventory --output json` prints, or the bare model of
    // earlier releases.
    vmigrate::wire::parse_inventory(&text)
        .map_err(|e| Error::new(ErrorCode::PlanParse, format!("inventory {}: {}", path.display(), e.message())))
}
