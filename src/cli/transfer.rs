//! `vmigrate transfer`: the worker entry point of the in-cluster transfer Jobs.
//!
//! One Job per disk and per copy pass runs this next to its PVC (attached as a block device, or
//! mounted with a `disk.img` file): it opens the source VM's disk through the source provider
//! (vSphere over HTTPS, VDDK through nbdkit, or a datastore folder) — at a named snapshot for a
//! warm migration — and copies with the engine either everything (`full`) or only the areas
//! changed since a CBT change id, which it asks vSphere for itself (QueryChangedDiskAreas). The
//! target is flushed before the worker exits, and the pass report (JSON,
//! [`PassReport`](vmigrate::core::PassReport)) is written to `--result-file`
//! (`/dev/termination-log` in the Job) and printed. Credentials come from
//! `VMIGRATE_SOURCE_USERNAME` / `VMIGRATE_SOURCE_PASSWORD` (a Secret in the Job), never from
//! the command line.
//!
//! Interrupted passes. SIGTERM (how Kubernetes stops a pod) and Ctrl-C cancel the copy: the
//! engine stops, flushes and leaves a checkpoint, and the worker exits 5. On a file target the
//! checkpoint is kept on the PVC next to the image (`disk.img.vmigrate-checkpoint`), so the Job's
//! next pod, after a SIGTERM or a SIGKILL (OOM, node loss), continues where the last flushed
//! checkpoint left off. A checkpoint is **bound to its pass**: source VM, disk, pass name,
//! snapshot, change id and work unit. One made for anything else (a pass redone at a new
//! snapshot after a crash, the previous precopy) is never continued — its "done" units hold
//! other bytes — but removed, and the pass starts over, which is always correct since a pass
//! rewrites every range it covers. A Block volume has no file system for a checkpoint: its pass
//! starts over on the next pod.

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
    /// Resume checkpoint file (default for `--target-file`: next to it,
    /// `disk.img.vmigrate-checkpoint`). Only a checkpoint of this very pass is continued.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Smallest interval between two checkpoints (each flushes the target), e.g. `5s`, `500ms`.
    #[arg(long, default_value = "5s")]
    pub checkpoint_interval: String,
    /// Checkpoint granularity: bytes, or with a binary unit (`1M`, `128M`); at least 1 MiB.
    #[arg(long, value_parser = super::copy::parse_size)]
    pub work_unit: Option<usize>,
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
            return Err(Error::new(ErrorCode::SourceFault, "changed-area query made no progress"));
        }
        out.extend(areas.extents.into_iter().map(|e| Extent { state: ExtentState::Data, ..e }));
        offset = areas.end;
    }
    Ok(out)
}

/// One checkpoint file per target, whatever the pass: a pass finding another pass's checkpoint
/// replaces it, so none accumulate on the PVC.
fn default_checkpoint(file: &Path) -> PathBuf {
    let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".vmigrate-checkpoint");
    file.with_file_name(name)
}

/// What a checkpoint of this worker is bound to: the pass as a whole (source, VM, disk, pass
/// name, snapshot, change id) and the work unit its unit indices count in.
fn pass_identity(args: &TransferArgs, work_unit: u64) -> String {
    format!(
        "vmigrate-transfer-v1 url={} vm={} disk={} pass={} snapshot={} since={} unit={work_unit}",
        args.source_url,
        args.vm_id,
        args.disk_key,
        args.pass,
        args.snapshot.as_deref().unwrap_or("-"),
        args.changed_since.as_deref().unwrap_or("-"),
    )
}

/// The checkpoint at `path` if it was saved by this very pass; the checkpoint of another pass
/// or snapshot (or one without a pass identity) found there is removed with a warning, so the
/// pass starts over instead of skipping units whose bytes came from another snapshot.
///
/// # Errors
/// [`ErrorCode::Checkpoint`] when the file does not decode: it was written atomically, so it
/// was damaged or edited, and that is reported rather than taken for "no checkpoint".
fn own_checkpoint(path: &Path, identity: &str) -> Result<Option<Checkpoint>, Error> {
    let Some(file) = vmigrate::copy::read_checkpoint_file(path)? else { return Ok(None) };
    if file.source.as_deref() == Some(identity) {
        return Ok(Some(file.checkpoint));
    }
    tracing::warn!(
        path = %path.display(), found = file.source.as_deref().unwrap_or("(none)"), pass = identity,
        "a checkpoint of another pass is not continued: starting this pass over"
    );
    std::fs::remove_file(path).map_err(|e| Error::io(format!("removing checkpoint {}", path.display()), e))?;
    Ok(None)
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
    let vm = source.vm(&VmId { source_ref: args.vm_id.clone(), ..Default::default() }).await?;
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
            let cp = args.checkpoint.clone().unwrap_or_else(|| default_checkpoint(file));
            (file.clone(), Some(cp), true)
        }
        (None, None) => return Err(Error::new(ErrorCode::PlanInvalid, "give --target-device or --target-file")),
    };
    let defaults = CopyOptions::default();
    // The engine's own floor (1 MiB), applied here too so the identity names the real unit.
    let work_unit = args.work_unit.map_or(defaults.work_unit, |u| u as u64).max(1 << 20);
    let checkpoint_interval = vmigrate::core::plan::parse_duration(&args.checkpoint_interval)
        .map_err(|e| Error::new(ErrorCode::InvalidArgument, format!("--checkpoint-interval: {}", e.message())))?;
    let identity = pass_identity(&args, work_unit);
    let resume = match &checkpoint {
        Some(p) => own_checkpoint(p, &identity)?,
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
        work_unit,
        checkpoint_interval,
        // Zeroed areas are skipped only on a target just created sparse (is_zero_initialized):
        // a delta pass writes zeroes over the earlier pass's data.
        ..defaults
    };
    let mut ctl = CopyControl::new();
    if let Some(path) = checkpoint.clone() {
        let identity = identity.clone();
        ctl.on_checkpoint = Some(Arc::new(move |cp: &Checkpoint| {
            if let Err(e) = vmigrate::copy::save_checkpoint_for(&path, cp, &identity) {
                tracing::warn!(path = %path.display(), error = %e, "could not save checkpoint");
            }
        }));
    }
    // SIGTERM (Kubernetes stopping the pod) or Ctrl-C: stop cleanly; the engine flushes and
    // leaves its last checkpoint for the next pod, and the worker exits 5 (cancelled).
    let cancel = ctl.cancel.clone();
    tokio::spawn(async move {
        super::stop_requested().await;
        tracing::warn!("stop requested: cancelling the pass, keeping its checkpoint");
        cancel.cancel();
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
