//! One standalone copy, as `vmigrate copy`, the C `vmigrate_copy_disk_with` and Python's
//! `copy_disk` run it: the same options, the same checkpoint file, the same rules for resuming.
//!
//! The engine itself ([`vmigrate_core::engine`]) knows nothing of files holding checkpoints or of
//! target specs; this is the layer every front end needs on top, written once so a checkpoint
//! left by the CLI resumes from Python and the other way round.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vmigrate_core::engine::{self, Checkpoint, CopyControl, CopyOptions, CopyStats};
use vmigrate_core::{Backing, BlockTransport, Error, ErrorCode, Result};

use crate::transport_url::{open_transport_with, spec_kind, Role, SpecKind, TransportOptions};

/// What a standalone copy is asked to do. Deserialises from the camelCase JSON the C binding
/// takes (`{"verify": true, "connections": 8, "checkpoint": "/var/tmp/disk.cp"}`); unknown
/// fields are errors, missing ones take the defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CopyRequest {
    /// Compare digests of source and target after the copy.
    pub verify: bool,
    /// Parallel connections (handle pairs); at least 1.
    pub connections: usize,
    /// Largest single request in bytes.
    pub request_size: usize,
    /// Flush the target at the end: the copy is then durable.
    pub flush: bool,
    /// Persist resume checkpoints in this file, and resume from it when it exists.
    pub checkpoint: Option<PathBuf>,
    /// Between two local files, `copy_file_range` instead of reading and scanning for zeroes.
    pub copy_file_range: bool,
    /// Replace an existing non-empty target file. Without it such a target is refused
    /// ([`ErrorCode::TargetExists`]), as `qemu-img` users expect; resuming from a checkpoint
    /// writes into the existing target and needs no `overwrite`.
    pub overwrite: bool,
    /// Deadline for one NBD request's reply, as a duration (`"30s"`, `"5m"`; JSON
    /// `"nbdTimeout"`). `None`: 10 minutes. A stalled NBD server is then a
    /// [`ErrorCode::Timeout`] instead of a wait without end.
    #[serde(deserialize_with = "duration_text")]
    pub nbd_timeout: Option<std::time::Duration>,
}

/// A duration written as text (`"30s"`, `"5m"`, `"1h30m"`; see
/// [`parse_duration`](vmigrate_core::plan::parse_duration)).
fn duration_text<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(d)?;
    vmigrate_core::plan::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

impl Default for CopyRequest {
    fn default() -> Self {
        let d = CopyOptions::default();
        CopyRequest {
            verify: d.verify,
            connections: d.connections,
            request_size: d.request_size,
            flush: d.flush,
            checkpoint: None,
            copy_file_range: d.copy_file_range,
            overwrite: false,
            nbd_timeout: None,
        }
    }
}

impl CopyRequest {
    /// Parse the JSON options of the C binding (`None` or empty: the defaults).
    ///
    /// # Errors
    /// [`ErrorCode::InvalidArgument`] naming the field for malformed JSON, unknown fields or
    /// wrong types, or a zero `connections`/`requestSize`.
    pub fn from_json(text: Option<&str>) -> Result<CopyRequest> {
        let text = text.map(str::trim).filter(|t| !t.is_empty());
        let invalid = |e: serde_json::Error| Error::new(ErrorCode::InvalidArgument, format!("copy options: {e}"));
        let req: CopyRequest = match text {
            None => CopyRequest::default(),
            Some(t) => match serde_json::from_str::<serde_json::Value>(t).map_err(invalid)? {
                v @ serde_json::Value::Object(_) => serde_json::from_value(v).map_err(invalid)?,
                _ => return Err(Error::new(ErrorCode::InvalidArgument, "copy options: expected a JSON object")),
            },
        };
        req.check()?;
        Ok(req)
    }

    /// How to open the transports of this copy ([`open_transport_with`]).
    pub fn transport_options(&self) -> TransportOptions {
        TransportOptions::default().with_nbd_request_timeout(self.nbd_timeout)
    }

    /// # Errors
    /// [`ErrorCode::InvalidArgument`] for a zero `connections`, `request_size` or `nbd_timeout`.
    pub fn check(&self) -> Result<()> {
        if self.connections == 0 {
            return Err(Error::new(ErrorCode::InvalidArgument, "copy options: connections must be at least 1"));
        }
        if self.request_size == 0 {
            return Err(Error::new(ErrorCode::InvalidArgument, "copy options: requestSize must be at least 1"));
        }
        if self.nbd_timeout == Some(std::time::Duration::ZERO) {
            return Err(Error::new(ErrorCode::InvalidArgument, "copy options: nbdTimeout must be more than 0"));
        }
        Ok(())
    }
}

/// A copy ready to run: both ends open, options (with the resume point) settled.
pub struct PreparedCopy {
    /// The source, open.
    pub source: Box<dyn BlockTransport>,
    /// The target, open (created sparse unless a copy resumes into it).
    pub target: Box<dyn BlockTransport>,
    /// The engine options, including the checkpoint to resume from.
    pub options: CopyOptions,
    /// Whether a checkpoint was found and the copy resumes.
    pub resumed: bool,
    checkpoint: Option<PathBuf>,
    /// What the source is ([`source_identity`]), stored in the checkpoint file.
    identity: String,
    /// The target file this copy created (or replaced): removed when the copy fails and no
    /// checkpoint could resume it, so no partial output is left looking like a disk.
    created: Option<PathBuf>,
}

impl std::fmt::Debug for PreparedCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedCopy").field("resumed", &self.resumed).field("checkpoint", &self.checkpoint).finish()
    }
}

/// Open `dst` for a copy from the already opened `source` (a source provider may have opened
/// it), loading the checkpoint file when `req` names one.
///
/// # Errors
/// [`ErrorCode::Checkpoint`] for an unreadable checkpoint, or one whose target file is gone;
/// whatever opening the target gives.
pub async fn prepare(source: Box<dyn BlockTransport>, dst: &str, req: &CopyRequest) -> Result<PreparedCopy> {
    req.check()?;
    let identity = source_identity(source.as_ref());
    let resume = match &req.checkpoint {
        Some(p) => load_checkpoint_for(p, &identity)?,
        None => None,
    };
    // Resuming writes into the existing target; a fresh copy creates it sparse.
    let is_file = spec_kind(dst) == SpecKind::File;
    let existing = if is_file { target_metadata(dst)? } else { None };
    let existing_file = existing.is_some();
    if resume.is_some() && is_file && !existing_file {
        return Err(Error::new(
            ErrorCode::Checkpoint,
            format!("checkpoint given but target {dst} does not exist; remove the checkpoint to start over"),
        ));
    }
    // Before anything is created or truncated: a copy onto its own source destroys it.
    let source_backing = source.backing();
    if let Some(meta) = &existing {
        refuse_same_disk(&source_backing, &[Backing::of_metadata(meta)], dst)?;
        let regular = meta.file_type().is_file();
        if regular && meta.len() > 0 && resume.is_none() && !req.overwrite {
            return Err(Error::new(
                ErrorCode::TargetExists,
                format!("target {dst} exists and is not empty; pass --overwrite (overwrite=true) to replace it"),
            ));
        }
    }
    let create_size = if resume.is_some() && existing_file { None } else { Some(source.size()) };
    let created = (is_file && create_size.is_some() && existing.as_ref().is_none_or(|m| m.file_type().is_file()))
        .then(|| PathBuf::from(dst));
    let target = open_transport_with(dst, Role::Target { create_size }, &req.transport_options()).await?;
    // An NBD target (or a file that appeared meanwhile) is compared once open: opening an NBD
    // export changes nothing.
    refuse_same_disk(&source_backing, &target.backing(), dst)?;
    let options = CopyOptions {
        connections: req.connections.max(1),
        request_size: req.request_size,
        verify: req.verify,
        flush: req.flush,
        resume: resume.clone(),
        copy_file_range: req.copy_file_range,
        ..Default::default()
    };
    Ok(PreparedCopy {
        source,
        target,
        options,
        resumed: resume.is_some(),
        checkpoint: req.checkpoint.clone(),
        identity,
        created,
    })
}

/// `stat` of a file target (following symlinks, as opening it would), `None` when it does not
/// exist yet.
fn target_metadata(dst: &str) -> Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(dst) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("stat {dst}"), e)),
    }
}

/// [`ErrorCode::SameDisk`] when source and target share a file, device or export.
fn refuse_same_disk(source: &[Backing], target: &[Backing], dst: &str) -> Result<()> {
    match target.iter().find(|t| source.contains(t)) {
        Some(b) => Err(Error::new(
            ErrorCode::SameDisk,
            format!("target {dst} is the source itself ({}); refusing to copy a disk onto itself", describe(b)),
        )),
        None => Ok(()),
    }
}

fn describe(b: &Backing) -> String {
    match b {
        Backing::File { dev, ino } => format!("the same file: device {dev}, inode {ino}"),
        Backing::BlockDevice { rdev } => format!("the same block device, rdev {rdev:#x}"),
        Backing::Nbd { server, export } => format!("the same nbd export {export:?} on {server}"),
    }
}

/// Open both specs (see [`prepare`]).
///
/// # Errors
/// As [`prepare`], plus whatever opening the source gives.
pub async fn prepare_specs(src: &str, dst: &str, req: &CopyRequest) -> Result<PreparedCopy> {
    // Bad options fail before anything is opened (prepare checks them again, cheaply).
    req.check()?;
    let source = open_transport_with(src, Role::Source, &req.transport_options()).await?;
    prepare(source, dst, req).await
}

impl PreparedCopy {
    /// Run the engine with `ctl` (progress, cancel), saving checkpoints to the file when one was
    /// asked for. On failure or cancel the engine leaves a last checkpoint, so a re-run with the
    /// same request resumes.
    ///
    /// # Errors
    /// As [`engine::copy`].
    pub async fn run(&self, mut ctl: CopyControl) -> Result<CopyStats> {
        if let Some(path) = self.checkpoint.clone() {
            let chained = ctl.on_checkpoint.take();
            let identity = self.identity.clone();
            ctl.on_checkpoint = Some(Arc::new(move |cp: &Checkpoint| {
                if let Err(e) = save_checkpoint_for(&path, cp, &identity) {
                    tracing::warn!(path = %path.display(), error = %e, "could not save checkpoint");
                }
                if let Some(next) = &chained {
                    next(cp);
                }
            }));
        }
        let result = engine::copy(self.source.as_ref(), self.target.as_ref(), &self.options, &ctl).await;
        if let (Ok(_), Some(path)) = (&result, &self.checkpoint) {
            // Done: a checkpoint left behind would make a later run with a changed source skip
            // everything and leave a stale target.
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the checkpoint");
                }
            }
        }
        if result.is_err() && self.checkpoint.is_none() {
            if let Some(path) = &self.created {
                // Nothing can resume it: a partial output would only look like a disk.
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the partial target");
                }
            }
        }
        result
    }
}

/// What a checkpoint is bound to: every file, device or export behind the source (device and
/// inode, NBD server and export), its size, and for local files their modification times
/// ([`BlockTransport::identity`]). A checkpoint of another source, or of this one changed since,
/// is refused.
pub fn source_identity(source: &dyn BlockTransport) -> String {
    source.identity().to_string()
}

/// A checkpoint file: the engine's [`Checkpoint`] and, next to its fields, the identity of the
/// source it was saved for ([`source_identity`]; absent in files of older vmigrate versions).
/// Read in one typed pass: a file that does not decode is [`ErrorCode::Checkpoint`], never
/// taken for "no checkpoint".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// The engine's checkpoint.
    #[serde(flatten)]
    pub checkpoint: Checkpoint,
    /// The source it was saved for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Read a checkpoint file; a missing or empty file means "start from the beginning".
///
/// # Errors
/// [`ErrorCode::Checkpoint`] when the file is not a checkpoint; I/O errors reading it.
pub fn read_checkpoint_file(path: &Path) -> Result<Option<CheckpointFile>> {
    match std::fs::read(path) {
        Ok(b) if b.is_empty() => Ok(None),
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::new(ErrorCode::Checkpoint, format!("checkpoint {} is unreadable", path.display())).with_source(e)
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading checkpoint {}", path.display()), e)),
    }
}

/// [`load_checkpoint`], refusing one saved for another source identity
/// ([`source_identity`]). A checkpoint without an identity (older vmigrate) is accepted.
///
/// # Errors
/// [`ErrorCode::Checkpoint`] for another source; as [`load_checkpoint`].
pub fn load_checkpoint_for(path: &Path, identity: &str) -> Result<Option<Checkpoint>> {
    let Some(file) = read_checkpoint_file(path)? else { return Ok(None) };
    match file.source {
        Some(s) if s != identity => Err(Error::new(
            ErrorCode::Checkpoint,
            format!(
                "checkpoint {} was made for another source, or the source changed since (was {s}, now {identity}); remove it to start over",
                path.display()
            ),
        )),
        _ => Ok(Some(file.checkpoint)),
    }
}

/// [`save_checkpoint`] with the source identity stored next to the engine's fields
/// ([`CheckpointFile`]).
///
/// # Errors
/// As [`save_checkpoint`].
pub fn save_checkpoint_for(path: &Path, cp: &Checkpoint, identity: &str) -> std::io::Result<()> {
    let file = CheckpointFile { checkpoint: cp.clone(), source: Some(identity.to_owned()) };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    vmigrate_core::safe_fs::write_atomic(path, &vmigrate_core::safe_fs::tmp_name(path), &bytes, true)
}

/// Read a checkpoint file's engine checkpoint (whatever source it names); a missing or empty
/// file means "start from the beginning".
///
/// # Errors
/// As [`read_checkpoint_file`].
pub fn load_checkpoint(path: &Path) -> Result<Option<Checkpoint>> {
    Ok(read_checkpoint_file(path)?.map(|f| f.checkpoint))
}

/// Write the checkpoint next to its final name, fsync, then rename: a crash leaves the old or
/// the new one, never half of one.
///
/// # Errors
/// I/O errors writing, syncing or renaming.
pub fn save_checkpoint(path: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    // Exclusive, no link followed, 0600 (vmigrate_core::safe_fs).
    vmigrate_core::safe_fs::write_atomic(path, &vmigrate_core::safe_fs::tmp_name(path), &bytes, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 6: a checkpoint is bound to its source: another file of the same size, or
    /// the same file modified since, does not resume from it.
    #[tokio::test]
    async fn checkpoints_are_bound_to_the_source_identity() {
        use vmigrate_core::file::{FileOptions, FileTransport};
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b, cp_path) = (dir.path().join("a.raw"), dir.path().join("b.raw"), dir.path().join("cp"));
        std::fs::write(&a, vec![1u8; 1 << 20]).expect("a");
        std::fs::write(&b, vec![2u8; 1 << 20]).expect("b");
        let open = |p: &Path| {
            let p = p.to_path_buf();
            async move { FileTransport::open(&p, FileOptions::default()).await.expect("open") }
        };
        let id_a = source_identity(&open(&a).await);
        let id_b = source_identity(&open(&b).await);
        assert_ne!(id_a, id_b, "two files of one size");
        let cp = Checkpoint {
            version: 1,
            source_size: 1 << 20,
            work_unit: 1 << 20,
            fingerprint: "f".into(),
            done: vec![[0, 1]],
        };
        save_checkpoint_for(&cp_path, &cp, &id_a).expect("save");
        assert_eq!(load_checkpoint_for(&cp_path, &id_a).expect("same source"), Some(cp));
        assert_eq!(load_checkpoint_for(&cp_path, &id_b).expect_err("other file").code(), ErrorCode::Checkpoint);
        // The same file, modified since.
        let f = std::fs::OpenOptions::new().write(true).open(&a).expect("open");
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).expect("touch");
        let id_a2 = source_identity(&open(&a).await);
        assert_ne!(id_a, id_a2);
        assert_eq!(load_checkpoint_for(&cp_path, &id_a2).expect_err("changed").code(), ErrorCode::Checkpoint);
    }

    /// Issue 15: a checkpoint file is read typed, once: one of an older vmigrate (no source)
    /// resumes, one whose fields do not decode is `Checkpoint`, never "start over" in silence.
    #[test]
    fn checkpoint_files_decode_typed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("cp");
        let cp = Checkpoint { version: 1, source_size: 8, work_unit: 4, fingerprint: "f".into(), done: vec![[0, 1]] };
        save_checkpoint_for(&path, &cp, "id").expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            r#"{"version":1,"source_size":8,"work_unit":4,"fingerprint":"f","done":[[0,1]],"source":"id"}"#
        );
        assert_eq!(
            read_checkpoint_file(&path).expect("typed"),
            Some(CheckpointFile { checkpoint: cp.clone(), source: Some("id".into()) })
        );
        std::fs::write(&path, r#"{"version":1,"source_size":8,"work_unit":4,"fingerprint":"f","done":[[0,1]]}"#)
            .expect("older file");
        assert_eq!(load_checkpoint_for(&path, "anything").expect("older vmigrate"), Some(cp));
        for bad in [
            r#"{"version":1,"source_size":8,"work_unit":4,"fingerprint":"f","done":[[0,1]],"source":7}"#,
            r#"{"version":1,"source_size":"8","work_unit":4,"fingerprint":"f","done":[]}"#,
            r#"{"done":[[0,1]],"source":"id"}"#,
            "[1]",
            "{",
        ] {
            std::fs::write(&path, bad).expect("damaged");
            let e = load_checkpoint_for(&path, "id").expect_err(bad);
            assert_eq!(e.code(), ErrorCode::Checkpoint, "{bad}: {e}");
            assert_eq!(read_checkpoint_file(&path).expect_err(bad).code(), ErrorCode::Checkpoint);
        }
        std::fs::write(&path, "").expect("empty");
        assert_eq!(load_checkpoint_for(&path, "id").expect("empty: none"), None);
    }

    #[test]
    fn json_options_default_and_reject_unknown_or_zero() {
        let d = CopyRequest::from_json(None).expect("defaults");
        assert_eq!(d.connections, CopyOptions::default().connections);
        assert!(d.flush && !d.verify && d.checkpoint.is_none());
        let r = CopyRequest::from_json(Some(r#"{"verify": true, "connections": 8, "checkpoint": "/tmp/x.cp"}"#))
            .expect("parse");
        assert!(r.verify);
        assert_eq!(r.connections, 8);
        assert_eq!(r.checkpoint.as_deref(), Some(Path::new("/tmp/x.cp")));
        for bad in [r#"{"conections": 2}"#, r#"{"connections": "2"}"#, r#"{"connections": 0}"#, "{", "[]"] {
            let e = CopyRequest::from_json(Some(bad)).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::InvalidArgument, "{bad}");
        }
        let e = CopyRequest::from_json(Some(r#"{"conections": 2}"#)).expect_err("unknown");
        assert!(e.to_string().contains("conections"), "{e}");
        let r = CopyRequest::from_json(Some(r#"{"nbdTimeout": "30s"}"#)).expect("nbd timeout");
        assert_eq!(r.nbd_timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(r.transport_options().nbd_request_timeout, r.nbd_timeout);
        for bad in [r#"{"nbdTimeout": 30}"#, r#"{"nbdTimeout": "soon"}"#, r#"{"nbdTimeout": "0s"}"#] {
            assert_eq!(CopyRequest::from_json(Some(bad)).expect_err(bad).code(), ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
