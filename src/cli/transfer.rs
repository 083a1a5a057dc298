//! `vmigrate transfer`: the worker entry point of the in-cluster transfer Jobs.
//!
//! One Job per disk runs this next to its PVC (attached as a block device, or mounted with a
//! `disk.img` file): it opens the source VM's disk through the source provider (vSphere over
//! HTTPS, VDDK through nbdkit, or a datastore folder) and copies it with the engine, exactly
//! like `vmigrate copy`. Credentials come from `VMIGRATE_SOURCE_USERNAME` /
//! `VMIGRATE_SOURCE_PASSWORD` (a Secret in the Job), never from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use vmigrate::core::plan::{CredentialsRef, SourceSpec};
use vmigrate::core::{Error, ErrorCode, VmId};

use super::copy::{self, CopyArgs};
use super::Output;

/// Arguments of `vmigrate transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Source URL (`https://vcenter/sdk` or `vmx:///path`).
    #[arg(long)]
    pub source_url: String,
    /// Source VM moref (or, for `vmx://`, the VMX path relative to the datastore folder).
    #[arg(long)]
    pub vm_id: String,
    /// Device key of the disk to copy.
    #[arg(long)]
    pub disk_key: i32,
    /// SHA-256 fingerprint of the vCenter certificate.
    #[arg(long)]
    pub thumbprint: Option<String>,
    /// PEM CA bundle for the vCenter certificate.
    #[arg(long)]
    pub ca_file: Option<String>,
    /// Skip TLS verification.
    #[arg(long)]
    pub insecure: bool,
    /// Write to this block device (a PVC in Block volume mode).
    #[arg(long, conflicts_with = "target_file", required_unless_present = "target_file")]
    pub target_device: Option<PathBuf>,
    /// Write to this file, created sparse (a PVC in Filesystem mode: `/data/disk.img`).
    #[arg(long)]
    pub target_file: Option<PathBuf>,
    /// Resume checkpoint file (default for `--target-file`: next to it).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Compare digests after the copy.
    #[arg(long)]
    pub verify: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

pub async fn run(args: TransferArgs) -> Result<ExitCode, Error> {
    let https = args.source_url.starts_with("https://") || args.source_url.starts_with("http://");
    let spec = SourceSpec {
        url: args.source_url.clone(),
        thumbprint: args.thumbprint.clone(),
        ca_file: args.ca_file.clone(),
        insecure: args.insecure,
        credentials: https.then(|| CredentialsRef {
            username_env: "VMIGRATE_SOURCE_USERNAME".into(),
            password_env: "VMIGRATE_SOURCE_PASSWORD".into(),
        }),
        vddk_lib_dir: None,
    };
    let source = vmigrate::sources::open_source(&spec).await?;
    let vm = source.vm(&VmId { moref: args.vm_id.clone(), ..Default::default() }).await?;
    let disk = vm.disks.iter().find(|d| d.key == args.disk_key).ok_or_else(|| {
        Error::new(ErrorCode::VmNotFound, format!("VM {} has no disk with key {}", vm.name, args.disk_key))
    })?;
    let src = source.open_disk(&vm.id, disk, None).await?;
    let (dst, checkpoint) = match (&args.target_device, &args.target_file) {
        (Some(dev), _) => (dev.clone(), args.checkpoint.clone()),
        (None, Some(file)) => {
            let cp = args.checkpoint.clone().unwrap_or_else(|| file.with_extension("vmigrate-checkpoint"));
            (file.clone(), Some(cp))
        }
        (None, None) => return Err(Error::new(ErrorCode::PlanInvalid, "give --target-device or --target-file")),
    };
    tracing::info!(vm = %vm.name, disk = disk.key, target = %dst.display(), "transfer");
    copy::run_from(
        src,
        CopyArgs {
            src: format!("{} disk {}", vm.name, disk.key),
            dst: dst.display().to_string(),
            verify: args.verify,
            connections: vmigrate::core::engine::CopyOptions::default().connections,
            request_size: vmigrate::core::engine::CopyOptions::default().request_size,
            checkpoint,
            no_flush: false,
            copy_file_range: false,
            // The target is the Job's own volume: a retried Job starts over in it.
            overwrite: true,
            output: args.output,
        },
    )
    .await
}
