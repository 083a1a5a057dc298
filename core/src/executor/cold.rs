//! The cold pipeline: power off, allocate, copy, then the steps both pipelines end with
//! (conversion, VM creation, post hook).

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Executor, VmRun};
use crate::error::Result;
use crate::model::{PowerState, Vm};
use crate::plan::HookStep;
use crate::provider::{PreparedVolume, TargetVm};
use crate::status::{DiskStatus, Phase};

impl Executor {
    pub(super) async fn run_cold(&self, idx: usize, vm: &Vm, tvm: &TargetVm, cancel: &CancellationToken) -> Result<()> {
        if !self.done(idx, Phase::PreHook) {
            self.phase(idx, Phase::PreHook, cancel, self.hooks(idx, HookStep::Pre, tvm, cancel)).await?;
        }
        let mut stopped_at = None;
        if !self.done(idx, Phase::PowerOff) {
            self.phase(idx, Phase::PowerOff, cancel, async {
                if vm.power_state != PowerState::PoweredOff {
                    stopped_at = Some(Instant::now());
                    let graceful = self.plan.spec.options.shutdown_timeout.get();
                    self.lock().vms[idx].source_changes.powered_off = true;
                    self.save_durable()?;
                    self.source.power_off(&vm.id, Some(graceful)).await?;
                }
                Ok(())
            })
            .await?;
        }
        let volumes = self.allocate(idx, vm, tvm, cancel).await?;
        if !self.done(idx, Phase::CopyDisks) {
            self.phase(
                idx,
                Phase::CopyDisks,
                cancel,
                self.copy_disks(VmRun { idx, vm, tvm, cancel }, &volumes, None, None, "full"),
            )
            .await?;
        }
        self.finish_vm(idx, tvm, &volumes, stopped_at, cancel).await
    }

    pub(super) async fn allocate(
        &self,
        idx: usize,
        vm: &Vm,
        tvm: &TargetVm,
        cancel: &CancellationToken,
    ) -> Result<Vec<PreparedVolume>> {
        if !self.done(idx, Phase::AllocateDisks) {
            self.phase(idx, Phase::AllocateDisks, cancel, async {
                for disk in &vm.disks {
                    let vol = self.target.prepare_volume(tvm, disk).await?;
                    let mut st = self.lock();
                    let ds = &mut st.vms[idx].disks;
                    if let Some(d) = ds.iter_mut().find(|d| d.key == disk.key) {
                        d.volume = vol.name.clone();
                        d.total_bytes = vol.size;
                    } else {
                        ds.push(DiskStatus {
                            key: disk.key,
                            volume: vol.name,
                            total_bytes: vol.size,
                            ..Default::default()
                        });
                    }
                }
                Ok(())
            })
            .await?;
        }
        let st = self.lock();
        Ok(st.vms[idx]
            .disks
            .iter()
            .map(|d| PreparedVolume { disk_key: d.key, name: d.volume.clone(), size: d.total_bytes })
            .collect())
    }

    pub(super) async fn finish_vm(
        &self,
        idx: usize,
        tvm: &TargetVm,
        volumes: &[PreparedVolume],
        stopped_at: Option<Instant>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if !self.done(idx, Phase::ConvertGuest) {
            let conversion =
                self.phase(idx, Phase::ConvertGuest, cancel, self.convert_guest(idx, tvm, volumes)).await?;
            self.lock().vms[idx].conversion = Some(conversion);
            self.save(true)?;
        }
        let mut tvm = tvm.clone();
        tvm.conversion = self.lock().vms[idx].conversion.clone();
        let tvm = &tvm;
        if !self.done(idx, Phase::CreateVm) {
            self.phase(idx, Phase::CreateVm, cancel, self.target.create_vm(tvm, volumes)).await?;
            if let Some(t) = stopped_at {
                self.lock().vms[idx].downtime_seconds = Some(t.elapsed().as_secs_f64());
            }
        }
        if !self.done(idx, Phase::PostHook) {
            self.phase(idx, Phase::PostHook, cancel, self.hooks(idx, HookStep::Post, tvm, cancel)).await?;
        }
        Ok(())
    }
}
