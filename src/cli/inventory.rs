//! `vmigrate inventory --source URL`: list what a source holds (vSphere or `vmx://`).
//!
//! Credentials come from `--username` / `--password-env`, else `VMIGRATE_SOURCE_USERNAME` /
//! `VMIGRATE_SOURCE_PASSWORD`, else govc's `GOVC_USERNAME` / `GOVC_PASSWORD`; the URL may come
//! from `GOVC_URL` and `--insecure` from `GOVC_INSECURE`, so govc users need nothing new.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use vmigrate::core::model::Inventory;
use vmigrate::core::plan::SourceSpec;
use vmigrate::core::{Credentials, Error, ErrorCode};

use super::Output;

/// Arguments of `vmigrate inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Source URL: `https://vcenter/sdk`, `vmx:///path/to/datastore-folder` or `ova:///path/vm.ova`
    /// (a file or a folder of them) (default: $GOVC_URL).
    #[arg(long, env = "GOVC_URL")]
    pub source: String,
    /// User name (default: $VMIGRATE_SOURCE_USERNAME, then $GOVC_USERNAME).
    #[arg(long)]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (default: VMIGRATE_SOURCE_PASSWORD,
    /// then GOVC_PASSWORD). The password itself is never a command-line argument.
    #[arg(long)]
    pub password_env: Option<String>,
    /// Pin the server certificate by its SHA-256 thumbprint (`AB:CD:...`).
    #[arg(long)]
    pub thumbprint: Option<String>,
    /// Verify the server certificate against this PEM CA bundle.
    #[arg(long)]
    pub ca_file: Option<String>,
    /// Skip TLS verification (also $GOVC_INSECURE=1).
    #[arg(long)]
    pub insecure: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn credentials(args: &InventoryArgs) -> Result<Credentials, Error> {
    let username = args
        .username
        .clone()
        .or_else(|| env_nonempty("VMIGRATE_SOURCE_USERNAME"))
        .or_else(|| env_nonempty("GOVC_USERNAME"))
        .ok_or_else(|| {
            Error::new(
                ErrorCode::CredentialsMissing,
                "no user name: pass --username or set VMIGRATE_SOURCE_USERNAME (or GOVC_USERNAME)",
            )
        })?;
    let password = match &args.password_env {
        // The name is echoed only when it looks like one: it may be the password, given by mistake.
        Some(var) => env_nonempty(var).ok_or_else(|| {
            let msg = if vmigrate::core::plan::looks_like_env_name(var) {
                format!("environment variable {var} is not set")
            } else {
                "the environment variable named by --password-env is not set (its name is not shown: is it the password?)"
                    .to_string()
            };
            Error::new(ErrorCode::CredentialsMissing, msg)
        })?,
        None => {
            env_nonempty("VMIGRATE_SOURCE_PASSWORD").or_else(|| env_nonempty("GOVC_PASSWORD")).ok_or_else(|| {
                Error::new(
                ErrorCode::CredentialsMissing,
                "no password: set VMIGRATE_SOURCE_PASSWORD (or GOVC_PASSWORD, or name a variable with --password-env)",
            )
            })?
        }
    };
    Ok(Credentials { username, password })
}

/// Run the command.
pub async fn run(args: InventoryArgs) -> Result<ExitCode, Error> {
    let insecure =
        args.insecure || matches!(env_nonempty("GOVC_INSECURE").as_deref(), Some("1" | "true" | "TRUE" | "True"));
    let spec = SourceSpec {
        url: args.source.clone(),
        thumbprint: args.thumbprint.clone(),
        ca_file: args.ca_file.clone(),
        insecure,
        ..Default::default()
    };
    let inventory = if vmigrate::sources::needs_credentials(&args.source) {
        let source = vmigrate::sources::open_vsphere(&spec, credentials(&args)?).await?;
        let inv = vmigrate::core::SourceProvider::inventory(&source).await;
        let _ = source.close().await;
        inv?
    } else {
        vmigrate::sources::read_inventory(&spec).await?.0
    };
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Json => writeln!(out, "{}", vmigrate::wire::inventory(&inventory)?),
        Output::Table => write!(out, "{}", table(&inventory)),
    };
    written.map_err(|e| Error::io("writing inventory", e))?;
    Ok(ExitCode::SUCCESS)
}

fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 30) as f64)
}

/// The readable form: one line per VM, then networks and datastores.
pub fn table(inv: &Inventory) -> String {
    let mut s = String::new();
    let w = super::text::column(inv.vms.iter().map(|v| v.name.as_str()), 4);
    s.push_str(&format!(
        "{}  {:<10}  {:<26}  {:<4}  {:>4}  {:>7}  {:>5}  {:<8}  NETWORKS\n",
        super::text::cell("NAME", w),
        "POWER",
        "GUEST",
        "BOOT",
        "CPU",
        "MEM MiB",
        "DISKS",
        "DISK GiB"
    ));
    for v in &inv.vms {
        let power = match v.power_state {
            vmigrate::core::model::PowerState::PoweredOn => "on",
            vmigrate::core::model::PowerState::PoweredOff => "off",
            vmigrate::core::model::PowerState::Suspended => "suspended",
        };
        let boot = match v.firmware {
            vmigrate::core::model::Firmware::Efi => "efi",
            vmigrate::core::model::Firmware::Bios => "bios",
        };
        let mut nets: Vec<String> = v
            .nics
            .iter()
            .map(|n| {
                let ips: Vec<String> = n.ip_addresses.iter().map(|i| i.to_string()).collect();
                let net = n.network.clone().unwrap_or_else(|| "-".into());
                if ips.is_empty() {
                    format!("{net} ({})", n.mac)
                } else {
                    format!("{net} ({}, {})", n.mac, ips.join(" "))
                }
            })
            .collect();
        if nets.is_empty() {
            nets.push("-".into());
        }
        s.push_str(&format!(
            "{}  {:<10}  {:<26}  {:<4}  {:>4}  {:>7}  {:>5}  {:<8}  {}\n",
            super::text::cell(&v.name, w),
            power,
            super::text::safe(&v.guest_id),
            boot,
            v.vcpus(),
            v.memory_mib,
            v.disks.len(),
            gib(v.total_disk_bytes()),
            nets.join(", ")
        ));
    }
    s.push_str(&format!("\n{} VM(s)", inv.vms.len()));
    if !inv.networks.is_empty() {
        let names: Vec<&str> = inv.networks.iter().map(|n| n.name.as_str()).collect();
        s.push_str(&format!("; networks: {}", names.join(", ")));
    }
    if !inv.datastores.is_empty() {
        let names: Vec<String> =
            inv.datastores.iter().map(|d| format!("{} ({} GiB free)", d.name, gib(d.free_bytes))).collect();
        s.push_str(&format!("; datastores: {}", names.join(", ")));
    }
    s.push('\n');
    s
}
