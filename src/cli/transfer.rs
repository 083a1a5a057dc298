//! `vmigrate transfer`: the worker entry point of the in-cluster transfer Jobs.
//!
//! One Job per disk and per copy pass runs this next to its PVC (attached as a block device, or
//! mounted with a `disk.img` file): it opens the source VM's disk through the source provider
//! (vSphere over HTTPS, VDDK through nbdkit, or a datastore folder) — at a named snapshot for a
//! warm migration — and copies with the engine either everything (`full`) or only the areas
//! changed since a CBT change id, which it asks vSphere for itself (QueryChangedDiskAreas). The
//! target is flushed before the worker exits, and the pass report (JSON,
//! [`PassReport`](vmigrate::core::PassReport)) is written to `--result-file`
//! (`/dev/termination-log` in the Job) and printed. A pass interrupted on a file target resumes
//! from its checkpoint, kept on the PVC next to the image and named after the pass.
//! Credentials come from `VMIGRATE_SOURCE_USERNAME` / `VMIGRATE_SOURCE_PASSWORD` (a Secret in
//! the Job), never from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use vmigrate::core::engine::{self, Checkpoint, CopyControl, CopyOptions};
use vmigrate::core::plan::{CredentialsRef, SourceSpec};
use vmigrate::core::{Error, ErrorCode, Extent, ExtentState, PassReport, SnapshotRef, SourceProvider, VmId};
use vmigrate::transport_url::{open_transport, Role};

use super::Output;

/// Arguments of `vmigrate transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Source URL (`https://vcenter/sdk`, `vmx:///path` or `ova:///path/vm.ova`).
    #[arg(long)]
    pub source_url: String,
    /// Source VM moref (or, for `vmx://`, the VMX path relative to the datastore folder).
    #[arg(long)]
    pub vm_id: String,
    /// Device key of the disk to copy.
    #[arg(long)]
    pub disk_key: i32,
    /// Name of this copy pass (`full`, `precopy-N`, `cutover`): in the report and the checkpoint.
    #[arg(long, default_value = "full")]
    pub pass: String,
    /// Read the disk at this snapshot (moref, e.g. `snapshot-12`) instead of its current state.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Copy only the areas changed since this CBT change id (a warm delta pass); needs
    /// `--snapshot`. Without it, the whole disk is copied.
    #[arg(long, requires = "snapshot")]
    pub changed_since: Option<String>,
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
    /// Write to this file, created sparse by a full pass (a PVC in Filesystem mode:
    /// `/data/disk.img`); a delta pass writes into the existing file.
    #[arg(long)]
    pub target_file: Option<PathBuf>,
    /// Resume checkpoint file (default for `--target-file`: next to it, named after the pass).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Write the pass report (JSON) here too, e.g. `/dev/termination-log`.
    #[arg(long)]
    pub result_file: Option<PathBuf>,
    /// Compare digests after the copy.
    #[arg(long)]
    pub verify: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// The areas of `disk` changed between `since` and `snap`, all of them (the query is paged).
async fn changed_extents(
    source: &dyn SourceProvider,
    vm: &VmId,
    disk: &vmigrate::core::Disk,
    snap: &SnapshotRef,
    since: &str,
) -> Result<Vec<Extent>, Error> {
    let size = disk.capacity_bytes.max(0) as u64;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < size {
        let areas = source.changed_areas(vm, disk, snap, since, offset).await?;
        if areas.end <= offset {
            return Err(Error::new(ErrorCode::VsphereFault, "changed-area query made no progress"));
        }
        out.extend(areas.extents.into_iter().map(|e| Extent { state: ExtentState::Data, ..e }));
        offset = areas.end;
    }
    Ok(out)
}

fn default_checkpoint(file: &Path, pass: &str) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{pass}.vmigrate-checkpoint"));
    file.with_file_name(name)
}

pub async fn run(args: TransferArgs) -> Result<ExitCode, Error> {
    if args.pass.is_empty() || !args.pass.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::new(
            ErrorCode::InvalidArgument,
            format!("--pass {:?}: use letters, digits and -", args.pass),
        ));
    }
    let https = vmigrate::sources::needs_credentials(&args.source_url);
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
    let snapshot = args.snapshot.as_ref().map(|id| SnapshotRef {
        id: id.clone(),
        name: String::new(),
        change_ids: Default::default(),
    });
    let only = match (&args.changed_since, &snapshot) {
        (Some(since), Some(snap)) => Some(changed_extents(source.as_ref(), &vm.id, disk, snap, since).await?),
        _ => None,
    };
    let src = source.open_disk(&vm.id, disk, snapshot.as_ref()).await?;
    let (dst, checkpoint, is_file) = match (&args.target_device, &args.target_file) {
        (Some(dev), _) => (dev.clone(), args.checkpoint.clone(), false),
        (None, Some(file)) => {
            let cp = args.checkpoint.clone().unwrap_or_else(|| default_checkpoint(file, &args.pass));
            (file.clone(), Some(cp), true)
        }
        (None, None) => return Err(Error::new(ErrorCode::PlanInvalid, "give --target-device or --target-file")),
    };
    let resume = match &checkpoint {
        Some(p) => vmigrate::copy::load_checkpoint(p)?,
        None => None,
    };
    // Only a fresh full pass into a file creates it (sparse, at the disk's size); a delta pass or
    // a resumed one writes into what the earlier pass left, which must be there.
    let create = is_file && only.is_none() && resume.is_none();
    if !create && is_file && !dst.exists() {
        return Err(Error::new(
            ErrorCode::Checkpoint,
            format!("{}: target {} does not exist (the full pass must run first)", args.pass, dst.display()),
        ));
    }
    let target_spec = dst.to_str().ok_or_else(|| Error::new(ErrorCode::InvalidArgument, "target path is not UTF-8"))?;
    let target = open_transport(target_spec, Role::Target { create_size: create.then(|| src.size()) }).await?;
    tracing::info!(
        vm = %vm.name, disk = disk.key, pass = %args.pass, snapshot = ?args.snapshot,
        ranges = only.as_ref().map(Vec::len), target = %dst.display(), resumed = resume.is_some(), "transfer"
    );
    let opts = CopyOptions {
        verify: args.verify,
        flush: true,
        only: only.clone(),
        resume: resume.clone(),
        // Zeroed areas are skipped only on a target just created sparse (is_zero_initialized):
        // a delta pass writes zeroes over the earlier pass's data.
        ..Default::default()
    };
    let mut ctl = CopyControl::new();
    if let Some(path) = checkpoint.clone() {
        ctl.on_checkpoint = Some(Arc::new(move |cp: &Checkpoint| {
            if let Err(e) = vmigrate::copy::save_checkpoint(&path, cp) {
                tracing::warn!(path = %path.display(), error = %e, "could not save checkpoint");
            }
        }));
    }
    let cancel = ctl.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let stats = engine::copy(src.as_ref(), target.as_ref(), &opts, &ctl).await;
    // One worker per pass and disk: a session left to vCenter's idle timeout per Job would
    // exhaust the user's session limit on a large warm plan.
    let size = src.size();
    drop(src);
    vmigrate::sources::close_quietly(source.as_ref()).await;
    let stats = stats?;
    let report = PassReport {
        pass: args.pass.clone(),
        snapshot: args.snapshot.clone(),
        changed_since: args.changed_since.clone(),
        size,
        ranges: only.as_ref().map_or(0, |o| o.len() as u64),
        changed_bytes: only.as_ref().map_or(size, |o| o.iter().map(|e| e.length).sum()),
        bytes_read: stats.bytes_read,
        bytes_written: stats.bytes_written,
        bytes_zeroed: stats.bytes_zeroed,
        resumed: resume.is_some(),
        target_digest: stats.target_digest.clone(),
    };
    let text = serde_json::to_string(&report)
        .map_err(|e| Error::new(ErrorCode::Internal, "serializing the pass report").with_source(e))?;
    if let Some(path) = &args.result_file {
        std::fs::write(path, &text).map_err(|e| Error::io(format!("writing result {}", path.display()), e))?;
    }
    // The pass is durable (the engine flushed the target): its checkpoint is spent.
    if let Some(cp) = &checkpoint {
        let _ = std::fs::remove_file(cp);
    }
    match args.output {
        Output::Json => println!("{text}"),
        Output::Table => println!(
            "pass {}: read {} B, wrote {} B ({} zeroed), {} changed range(s)",
            report.pass, report.bytes_read, report.bytes_written, report.bytes_zeroed, report.ranges
        ),
    }
    Ok(ExitCode::SUCCESS)
}
