//! Guest conversion in the cluster: the conversion Job of [`crate::convert_job`] run for one VM
//! after its last copy, as Forklift runs its conversion pod.
//!
//! The input ConfigMap and the Job are applied (a Job left failed by an earlier attempt is
//! deleted first: `backoffLimit: 0` would otherwise report the old failure again), the Job is
//! followed to its end, and the result is read from what the container itself wrote: the
//! termination message of its pod, parsed like the local run's log
//! ([`vmigrate_core::convert::parse_report`]). A Job that completed without such a message is
//! not taken as a conversion. Once read, the Job (its pod with it, by the garbage collector)
//! and the ConfigMap are deleted; on failure the executor's cleanup deletes them by label.

use std::time::Instant;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use vmigrate_core::convert::{self, ConversionRequest, GuestConversion};
use vmigrate_core::{Error, ErrorCode, PreparedVolume, Result, TargetVm};

use super::KubevirtTarget;
use crate::convert_job::{build_conversion_job, build_input_configmap, job_name, CONTAINER};
use crate::error::KubevirtError;
use crate::wait::{await_condition, is_job_complete, Check};

/// Label Kubernetes puts on the pods of a Job (since 1.27), and the older one.
const POD_JOB_LABELS: [&str; 2] = ["batch.kubernetes.io/job-name", "job-name"];

/// Run the conversion Job of `vm` over `volumes` and decide the VM from its report.
///
/// # Errors
/// [`ErrorCode::ConversionFailed`] when the Job fails (the message carries virt-v2v's error
/// lines from the pod) or completes without a report; API errors; a timeout after the target's
/// `timeout`.
pub(crate) async fn run_conversion_job(
    t: &KubevirtTarget,
    vm: &TargetVm,
    volumes: &[PreparedVolume],
    req: &ConversionRequest,
) -> Result<GuestConversion> {
    let o = t.opts();
    let ns = &vm.namespace;
    let name = job_name(vm);
    let cm_what = format!("ConfigMap {ns}/{name}");
    let what = format!("conversion Job {ns}/{name}");
    let cms: Api<ConfigMap> = Api::namespaced(t.client().clone(), ns);
    let jobs: Api<Job> = Api::namespaced(t.client().clone(), ns);

    let cm = t.apply(&cms, &name, &cm_what, &build_input_configmap(vm)).await?;
    t.remember(vm, "ConfigMap", &cm.metadata);
    if let Some(old) = jobs.get_opt(&name).await.map_err(|e| t.classify("get", &what, e))? {
        if matches!(is_job_complete(&old), Check::Failed(_)) {
            let uid = old.metadata.uid.clone().unwrap_or_default();
            tracing::info!(job = %name, "an earlier conversion Job failed: running a new one");
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }),
                ..DeleteParams::background()
            };
            match jobs.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(t.classify("delete", &what, e).into()),
            }
            t.wait_deleted(&jobs, &name, &uid, &what).await?;
        }
    }
    let job = t.apply(&jobs, &name, &what, &build_conversion_job(vm, volumes, &o.convert_image, req)).await?;
    t.remember(vm, "Job", &job.metadata);
    tracing::info!(vm = %vm.name, job = %name, image = %o.convert_image, "guest conversion Job started");
    let started = Instant::now();
    let done = await_condition(&jobs, &name, &what, is_job_complete, o.timeout, o.poll_interval, |_| {}).await;
    let results = pod_results(t, ns, &name).await;
    if let Err(e) = done {
        return Err(match e {
            KubevirtError::TransferFailed { reason, .. } => {
                let why = results
                    .iter()
                    .rev()
                    .find(|(code, _)| *code != 0)
                    .map(|(code, msg)| {
                        format!("; virt-v2v-in-place exited {code}:\n{}", convert::failure_summary(msg.trim()))
                    })
                    .unwrap_or_default();
                Error::new(ErrorCode::ConversionFailed, format!("{what} failed: {reason}{why}"))
            }
            e => e.into(),
        });
    }
    let report = results.into_iter().find(|(code, _)| *code == 0).map(|(_, msg)| msg).ok_or_else(|| {
        Error::new(
            ErrorCode::ConversionFailed,
            format!("{what} completed but its pod reported no result (termination message): not taken as converted"),
        )
    })?;
    let mut out = convert::decide(&convert::parse_report(&report), req)
        .map_err(|e| Error::new(ErrorCode::ConversionFailed, format!("{what}: {}", e.message())))?;
    out.seconds = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    out.report = Some(report.trim_end().to_string());
    tracing::info!(vm = %vm.name, job = %name, summary = %out.summary(), "guest converted in the cluster");
    // Read: the Job, its pod and the input are not needed any more.
    for (res, what) in [
        (jobs.delete(&name, &DeleteParams::background()).await.map(|_| ()), &what),
        (cms.delete(&name, &DeleteParams::default()).await.map(|_| ()), &cm_what),
    ] {
        match res {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => tracing::warn!(object = %what, error = %e, "could not delete after the conversion"),
        }
    }
    Ok(out)
}

/// `(exit code, termination message)` of the conversion container of every terminated pod of
/// the Job `job`.
async fn pod_results(t: &KubevirtTarget, ns: &str, job: &str) -> Vec<(i32, String)> {
    let api: Api<Pod> = Api::namespaced(t.client().clone(), ns);
    let mut out = Vec::new();
    for label in POD_JOB_LABELS {
        let list = match api.list(&ListParams::default().labels(&format!("{label}={job}"))).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(job, error = %e, "cannot list the pods of the conversion Job");
                continue;
            }
        };
        for pod in list.items {
            let statuses = pod.status.and_then(|s| s.container_statuses).unwrap_or_default();
            for cs in statuses.into_iter().filter(|c| c.name == CONTAINER) {
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
