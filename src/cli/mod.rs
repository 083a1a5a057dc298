//! Command-line front end. Exit codes: 0 success, 1 failure, 2 usage, 3 blocked by validation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vmigrate::core::{Error, Inventory, Plan};

mod inventory;
mod validate;

/// Exit code when validation blocks at least one VM.
pub const EXIT_BLOCKED: u8 = 3;

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
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Inventory(args) => inventory::run(args).await,
        Command::Validate { plan, inventory, output } => {
            let plan = Plan::from_file(&plan)?;
            let inventory = inventory.map(|p| read_inventory(&p)).transpose()?;
            validate::run(&plan, inventory.as_ref(), output).await
        }
    }
}

fn read_inventory(path: &std::path::Path) -> Result<Inventory, Error> {
    use vmigrate::core::ErrorCode;
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading inventory {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::new(ErrorCode::PlanParse, format!("inventory {}: {e}", path.display())))
}
