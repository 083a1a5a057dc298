//! Copy passes of `transfer: job`: one Job per (volume, pass), followed to its end, and its
//! result read from what the worker itself reported (the pod's termination message), never
//! inferred from the Job having completed.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use vmigrate_core::{Error, ErrorCode, PassReport, PreparedVolume, Result, TargetPass, TargetVm};

use super::KubevirtTarget;
use crate::builder;
use crate::error::KubevirtError;
use crate::job::{build_transfer_job, pass_job_name, JobSource, WorkerTuning};
use crate::wait::{is_job_complete, Check};

/// Label Kubernetes puts on the pods of a Job (both spellings exist; this one since 1.27).
const POD_JOB_LABEL: &str = "batch.kubernetes.io/job-name";
/// The older label, still set by every supported release.
const POD_JOB_LABEL_LEGACY: &str = "job-name";

/// Run `pass` over `volume` as its own Job, wait for it, and return the worker's report.
///
/// Idempotent: on a resumed run the Job of the same pass is applied again (a no-op) and, when it
/// already completed, its recorded report is read back.
pub(crate) async fn run_job_pass(
    t: &KubevirtTarget,
    vm: &TargetVm,
    volume: &PreparedVolume,
    pass: &TargetPass,
) -> Result<PassReport> {
    let o = t.opts();
    let disk = vm.source.disks.iter().find(|d| d.key == volume.disk_key).ok_or_else(|| {
        Error::new(ErrorCode::Internal, format!("no source disk {} for volume {}", volume.disk_key, volume.name))
    })?;
    let _permit = t.job_slots().acquire_owned().await.map_err(|_| Error::cancelled())?;
    let secret = t.ensure_source_secret(vm).await?;
    let src = t.source_spec();
    let job = build_transfer_job(
        vm,
        disk,
        &volume.name,
        &o.job_image,
        &JobSource { url: &src.url, thumbprint: src.thumbprint.as_deref(), secret: secret.as_deref() },
        pass,
        &WorkerTuning { checkpoint_interval: o.job_checkpoint_interval, work_unit: o.job_work_unit },
    );
    let name = pass_job_name(&volume.name, pass);
    let what = format!("Job {}/{name}", vm.namespace);
    let api: Api<Job> = Api::namespaced(t.client().clone(), &vm.namespace);
    stop_other_attempts(t, vm, &volume.name, &name).await?;
    t.apply(&api, &name, &what, &job).await?;
    tracing::info!(job = %name, pass = %pass.name, "transfer pass started");
    let done = follow_job(&api, &name, &what, o.timeout, o.poll_interval).await;
    if let Err(e) = done {
        // Say why from the worker's own last words when the pod left some.
        let why = pod_messages(t, &vm.namespace, &name).await.into_iter().rev().find(|(code, _)| *code != 0);
        return Err(match (e, why) {
            (KubevirtError::TransferFailed { what, reason }, Some((code, msg))) => KubevirtError::TransferFailed {
                what,
                reason: format!("{reason}; worker exited {code}: {}", msg.trim()),
            }
            .into(),
            (e, _) => e.into(),
        });
    }
    let report = pod_messages(t, &vm.namespace, &name)
        .await
        .into_iter()
        .filter(|(code, _)| *code == 0)
        .find_map(|(_, msg)| serde_json::from_str::<PassReport>(msg.trim()).ok())
        .ok_or_else(|| {
            Error::from(KubevirtError::TransferFailed {
                what: what.clone(),
                reason: "the Job completed but no worker pod reported a result (termination message): the pass is not taken as done".into(),
            })
        })?;
    if report.pass != pass.name {
        return Err(KubevirtError::TransferFailed {
            what,
            reason: format!("the worker reported pass {:?}, not {:?}", report.pass, pass.name),
        }
        .into());
    }
    Ok(report)
}

/// Follow a pass Job to its end. The timeout counts only while no worker of the Job runs
/// (`status.ready`: its pod is running; the worker has no readiness probe): a full copy of a
/// large disk takes hours and must not be cut off by a timeout meant for a Job that cannot
/// start (unschedulable, an image that cannot be pulled, a volume that does not attach).
async fn follow_job(
    api: &Api<Job>,
    name: &str,
    what: &str,
    idle_timeout: std::time::Duration,
    interval: std::time::Duration,
) -> Result<Job, KubevirtError> {
    let mut idle_since = std::time::Instant::now();
    loop {
        let job = api.get(name).await.map_err(|e| KubevirtError::from_kube("get", what.to_string(), e))?;
        match is_job_complete(&job) {
            Check::Done => return Ok(job),
            Check::Failed(reason) => return Err(KubevirtError::TransferFailed { what: what.to_string(), reason }),
            Check::Waiting => {}
        }
        if job.status.as_ref().and_then(|s| s.ready).unwrap_or(0) > 0 {
            idle_since = std::time::Instant::now();
        }
        if idle_since.elapsed() >= idle_timeout {
            return Err(KubevirtError::Timeout {
                what: format!("{what}: no worker pod running (unschedulable, image pull, volume attach?)"),
                seconds: idle_timeout.as_secs(),
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// Before a pass Job is applied, no other pass Job of the same volume may still run. After a
/// crash of vmigrate a pass is redone at a new snapshot under a new Job name, while the earlier
/// attempt's pod may still be copying the old snapshot into the same volume: its writes landing
/// after the new pass's would put old bytes back — writes lost, with exit 0. Such a Job is
/// deleted with foreground propagation (it is gone only once its pods are; the worker stops
/// cleanly on the SIGTERM) and waited for. Finished Jobs write nothing and are left alone.
async fn stop_other_attempts(t: &KubevirtTarget, vm: &TargetVm, volume: &str, this: &str) -> Result<()> {
    let api: Api<Job> = Api::namespaced(t.client().clone(), &vm.namespace);
    let selector = format!("{},vmigrate.dev/volume={}", builder::vm_selector(vm), builder::label_value(volume));
    let what = format!("transfer Jobs of volume {}/{volume}", vm.namespace);
    let jobs = api.list(&ListParams::default().labels(&selector)).await.map_err(|e| t.classify("list", &what, e))?;
    for job in jobs.items {
        let (Some(name), Some(uid)) = (job.metadata.name.clone(), job.metadata.uid.clone()) else { continue };
        if name == this || !matches!(is_job_complete(&job), Check::Waiting) {
            continue;
        }
        let what = format!("Job {}/{name}", vm.namespace);
        tracing::warn!(job = %name, next = this, "stopping a transfer Job of an earlier attempt still running on the volume");
        let dp = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..DeleteParams::foreground()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
            Err(e) => return Err(t.classify("delete", &what, e).into()),
        }
        t.wait_deleted(&api, &name, &uid, &what).await?;
    }
    Ok(())
}

/// `(exit code, termination message)` of the worker container of every terminated pod of a Job.
async fn pod_messages(t: &KubevirtTarget, ns: &str, job: &str) -> Vec<(i32, String)> {
    let api: Api<Pod> = Api::namespaced(t.client().clone(), ns);
    let mut out = Vec::new();
    for label in [POD_JOB_LABEL, POD_JOB_LABEL_LEGACY] {
        let list = match api.list(&ListParams::default().labels(&format!("{label}={job}"))).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot list the pods of a transfer Job");
                continue;
            }
        };
        for pod in list.items {
            let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
            for cs in statuses.into_iter().filter(|c| c.name == "transfer") {
                if let Some(term) = cs.state.and_then(|s| s.terminated) {
                    out.push((term.exit_code, term.message.unwrap_or_default()));
                }
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    out
}
