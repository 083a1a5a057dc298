//! The disk copy: every disk of a VM concurrently, each resumed from its checkpoint when the
//! source is still the one it was copied from, or followed while the target imports it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, info_span, warn, Instrument};

use super::warm;
use super::{futures_join_all, Event, Executor, VmRun};
use crate::engine::{self, Checkpoint, CopyControl, ProgressSnapshot};
use crate::error::{Error, ErrorCode, Result};
use crate::model::{Disk, Vm};
use crate::provider::{PreparedVolume, SnapshotRef, VolumeSink};
use crate::status::DiskCheckpoint;
use crate::transport::{Extent, SourceIdentity};

impl Executor {
    /// Copy every disk of a VM (concurrently), full or only the given changed extents.
    pub(super) async fn copy_disks(
        &self,
        run: VmRun<'_>,
        volumes: &[PreparedVolume],
        snapshot: Option<&SnapshotRef>,
        only: Option<&BTreeMap<i32, Vec<Extent>>>,
        pass: &str,
    ) -> Result<()> {
        let VmRun { idx, vm, .. } = run;
        let mut jobs = Vec::new();
        for disk in &vm.disks {
            let Some(vol) = volumes.iter().find(|v| v.disk_key == disk.key) else {
                return Err(Error::new(ErrorCode::Internal, format!("no volume prepared for disk {}", disk.key)));
            };
            if only.is_none() && self.still_copied(idx, vm, disk, snapshot).await? {
                continue;
            }
            let extents = only.map(|m| m.get(&disk.key).cloned().unwrap_or_default());
            jobs.push(self.copy_one(run, disk, vol, snapshot, extents, pass));
        }
        for r in futures_join_all(jobs).await {
            r?;
        }
        Ok(())
    }

    /// Whether `disk` was copied completely before (a resumed phase) from the source as it is
    /// now. A disk copied from another identity (the source changed between the runs) is marked
    /// not done, with a warning, so it is copied again: the VM's disks then all come from one
    /// state of the source. A done disk with no recorded identity (copied by the target itself)
    /// is trusted as done.
    pub(super) async fn still_copied(
        &self,
        idx: usize,
        vm: &Vm,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<bool> {
        let recorded = {
            let st = self.lock();
            match st.vms[idx].disks.iter().find(|d| d.key == disk.key && d.done) {
                None => return Ok(false),
                Some(d) => d.copied_from.clone(),
            }
        };
        let Some(recorded) = recorded else { return Ok(true) };
        let current = {
            let src = self.source.open_disk(&vm.id, disk, snapshot).await?;
            self.source.disk_identity(disk, snapshot, src.as_ref())
        };
        if current == recorded {
            return Ok(true);
        }
        warn!(
            disk = disk.key, recorded = %recorded, current = %current,
            "the source disk changed since it was copied: copying it again from the start"
        );
        let mut st = self.lock();
        if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == disk.key) {
            d.done = false;
            d.copied_from = None;
            d.copied_bytes = 0;
        }
        Ok(false)
    }

    /// The checkpoint to resume disk `key` from: the recorded one when it was made from the
    /// source `identity` is now. One made from another identity (another snapshot or change id,
    /// a file replaced or changed in place) is dropped with a warning and the disk is copied from
    /// the start: resuming it would mix the bytes of two source states.
    pub(super) fn resume_point(
        &self,
        idx: usize,
        key: i32,
        volume: &str,
        identity: &SourceIdentity,
    ) -> Option<Checkpoint> {
        let mut st = self.lock();
        let d = st.vms[idx].disks.iter_mut().find(|d| d.key == key)?;
        let cp = d.checkpoint.take()?;
        if cp.source == *identity {
            let copy = cp.copy.clone();
            d.checkpoint = Some(cp);
            return Some(copy);
        }
        warn!(
            volume, recorded = %cp.source, current = %identity,
            "the source disk changed since its checkpoint was made: copying it again from the start"
        );
        d.copied_bytes = 0;
        None
    }

    pub(super) async fn copy_one(
        &self,
        run: VmRun<'_>,
        disk: &Disk,
        vol: &PreparedVolume,
        snapshot: Option<&SnapshotRef>,
        only: Option<Vec<Extent>>,
        pass: &str,
    ) -> Result<()> {
        let VmRun { idx, vm, tvm, cancel } = run;
        let span = info_span!("disk", disk = disk.key, volume = %vol.name, pass);
        async {
            // The target first: when it copies by itself (importer, transfer Job) the source
            // disk is not opened here at all (no local nbdkit for a VDDK source, say).
            let dst = match self.target.open_volume(tvm, vol).await? {
                VolumeSink::Transport(t) => t,
                VolumeSink::SelfImport if only.is_some() => return Err(warm::self_import_delta(&vol.name, pass)),
                VolumeSink::SelfImport => return self.follow_import(run, disk, vol, pass).await,
                VolumeSink::Passes => return self.target_pass(run, disk, vol, snapshot, only.as_deref(), pass).await,
            };
            let src = self.source.open_disk(&vm.id, disk, snapshot).await?;
            let identity = self.source.disk_identity(disk, snapshot, src.as_ref());
            let mut opts = self.opts.copy.clone();
            opts.only = only.clone();
            opts.resume = if only.is_none() { self.resume_point(idx, disk.key, &vol.name, &identity) } else { None };
            let state = self.state.clone();
            let key = disk.key;
            let saver = {
                let state = state.clone();
                let identity = identity.clone();
                let path = self.opts.status_path.clone();
                let last = self.last_save.clone();
                Arc::new(move |cp: &Checkpoint| {
                    let snapshot = {
                        let mut st = state.lock().expect("status lock");
                        if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == key) {
                            d.checkpoint = Some(DiskCheckpoint { copy: cp.clone(), source: identity.clone() });
                        }
                        st.clone()
                    };
                    if let Some(p) = &path {
                        let mut l = last.lock().expect("save lock");
                        if l.elapsed() >= Duration::from_millis(200) {
                            *l = Instant::now();
                            // Checkpoints follow a target flush; losing the latest only
                            // means redoing its units, so no fsync here.
                            if let Err(e) = snapshot.save_with(p, false) {
                                warn!(error = %e.report(), "could not save checkpoint");
                            }
                        }
                    }
                }) as Arc<dyn Fn(&Checkpoint) + Send + Sync>
            };
            let ctl = CopyControl {
                progress: engine::Progress::default(),
                cancel: cancel.child_token(),
                on_checkpoint: Some(saver),
            };
            let reporter = {
                let progress = ctl.progress.clone();
                let events = self.opts.events.clone();
                let vm_name = vm.name.clone();
                let volume = vol.name.clone();
                let pass = pass.to_string();
                let every = self.opts.progress_interval;
                let state = state.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(every).await;
                        let snap = progress.snapshot();
                        {
                            let mut st = state.lock().expect("status lock");
                            if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == key) {
                                d.copied_bytes = snap.done;
                                d.pass_read_bytes = snap.bytes_read;
                            }
                        }
                        if let Some(sink) = &events {
                            sink(&Event::Disk {
                                vm: vm_name.clone(),
                                disk: key,
                                volume: volume.clone(),
                                pass: pass.clone(),
                                progress: snap,
                            });
                        }
                    }
                })
            };
            let res = engine::copy(src.as_ref(), dst.as_ref(), &opts, &ctl).await;
            reporter.abort();
            let stats = res?;
            self.target.finish_volume(tvm, vol).await?;
            let snap = ctl.progress.snapshot();
            {
                let mut st = self.lock();
                if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == key) {
                    d.copied_bytes = snap.done;
                    d.transferred_bytes += stats.bytes_written;
                    d.pass_read_bytes = 0;
                    d.checkpoint = None;
                    d.done = true;
                    if only.is_none() {
                        d.copied_from = Some(identity);
                    }
                }
            }
            self.emit(Event::Disk {
                vm: vm.name.clone(),
                disk: key,
                volume: vol.name.clone(),
                pass: pass.to_string(),
                progress: snap,
            });
            self.save(true)?;
            info!(read = stats.bytes_read, written = stats.bytes_written, zeroed = stats.bytes_zeroed, "disk copied");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// The target copies by itself (CDI importer, transfer Job): wait for it, reporting its
    /// progress as ours.
    pub(super) async fn follow_import(
        &self,
        run: VmRun<'_>,
        disk: &Disk,
        vol: &PreparedVolume,
        pass: &str,
    ) -> Result<()> {
        let VmRun { idx, vm, tvm, cancel } = run;
        let started = Instant::now();
        let snapshot = |fraction: f64| {
            let done = (vol.size as f64 * fraction.clamp(0.0, 1.0)) as u64;
            let elapsed = started.elapsed();
            let rate = if elapsed.as_secs_f64() > 0.0 { done as f64 / elapsed.as_secs_f64() } else { 0.0 };
            ProgressSnapshot {
                total: vol.size,
                done,
                elapsed,
                rate_bytes_per_sec: rate,
                eta: (rate > 0.0).then(|| Duration::from_secs_f64((vol.size - done) as f64 / rate)),
                ..Default::default()
            }
        };
        let finish = self.target.finish_volume(tvm, vol);
        tokio::pin!(finish);
        loop {
            tokio::select! {
                r = &mut finish => { r?; break; }
                _ = cancel.cancelled() => return Err(Error::cancelled()),
                _ = tokio::time::sleep(self.opts.progress_interval.max(Duration::from_millis(500))) => {
                    if let Some(f) = self.target.import_progress(tvm, vol).await {
                        self.emit(Event::Disk { vm: vm.name.clone(), disk: disk.key, volume: vol.name.clone(), pass: pass.to_string(), progress: snapshot(f) });
                    }
                }
            }
        }
        {
            let mut st = self.lock();
            if let Some(d) = st.vms[idx].disks.iter_mut().find(|d| d.key == disk.key) {
                d.copied_bytes = vol.size;
                d.done = true;
            }
        }
        self.emit(Event::Disk {
            vm: vm.name.clone(),
            disk: disk.key,
            volume: vol.name.clone(),
            pass: pass.to_string(),
            progress: snapshot(1.0),
        });
        self.save(true)?;
        Ok(())
    }
}
