//! The in-cluster transfer Job: one `batch/v1` Job per disk **and per copy pass** runs the
//! vmigrate transfer worker (`vmigrate transfer`, image built from `kubevirt/Containerfile`) with
//! the target PVC attached, copying straight from the source. Kubernetes schedules the workers;
//! we only cap how many run.
//!
//! Worker command line (the CLI's `transfer` subcommand reads it):
//! `vmigrate transfer --source-url URL --vm-id MOREF --disk-key KEY --pass NAME
//! [--snapshot SNAPSHOT [--changed-since CHANGE_ID]] [--checkpoint-interval DURATION]
//! [--work-unit BYTES] [--thumbprint T] --result-file /dev/termination-log
//! (--target-device /dev/xvda | --target-file /data/disk.img)`,
//! credentials from the environment variables `VMIGRATE_SOURCE_USERNAME` /
//! `VMIGRATE_SOURCE_PASSWORD` (a Secret). Block volumes are attached as a raw device
//! (`volumeDevices`), Filesystem volumes mounted at `/data` with the image in `disk.img` (CDI's
//! layout).
//!
//! A cold copy is one pass `full` without a snapshot. A warm migration runs `full` at the first
//! snapshot, then `precopy-N` and `cutover` passes that copy only the areas changed since the
//! previous snapshot's change id (the worker asks vSphere's QueryChangedDiskAreas itself). Each
//! pass is its own Job named after it, so a finished pass is never mistaken for the next one. The
//! worker writes its [`PassReport`](vmigrate_core::PassReport) as the container's termination
//! message; the executor takes the pass as done only from that report.
//!
//! A worker that dies mid-pass (SIGKILL: OOM, node loss) or is stopped (SIGTERM: eviction, a
//! node drain) fails its pod; the Job starts a new pod (`backoffLimit`), whose worker continues
//! from the pass's checkpoint on the PVC. Pods failed by a disruption (the `DisruptionTarget`
//! condition Kubernetes sets on evicted or preempted pods) do not count against the limit
//! (`podFailurePolicy`): a long precopy survives any number of node drains.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, SecretKeySelector,
    Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vmigrate_core::model::Disk;
use vmigrate_core::plan::VolumeMode;
use vmigrate_core::{TargetPass, TargetVm};

use crate::builder;

/// Device path of the target PVC inside the worker pod.
pub const TARGET_DEVICE: &str = "/dev/xvda";

/// Where the worker writes its pass report: Kubernetes' default termination message path, so the
/// report shows up in the pod's `status.containerStatuses[].state.terminated.message`.
pub const RESULT_PATH: &str = "/dev/termination-log";

/// Label carrying the pass name on the Job and its pod.
pub const LABEL_PASS: &str = "vmigrate.dev/pass";

/// FNV-1a: stable across builds and Rust versions (names must match on a resumed run).
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The Job name of a pass: `VOLUME-PASS` for a pass without a snapshot (cold), and
/// `VOLUME-PASS-XXXXXX` with a hash of the snapshot id and change id for a warm one, so a pass
/// redone at another snapshot (after a crash) never finds the Job, or the report, of the earlier
/// attempt; the same pass at the same snapshot finds its own Job again.
pub fn pass_job_name(volume: &str, pass: &TargetPass) -> String {
    match &pass.snapshot {
        None => job_name(volume, &pass.name),
        Some(s) => {
            let h = fnv(&[&s.id, pass.changed_since.as_deref().unwrap_or("")]);
            job_name(volume, &format!("{}-{:06x}", pass.name, h & 0xff_ffff))
        }
    }
}

/// The Job name of one pass over one volume: `VOLUME-PASS`, shortened with a stable hash when
/// longer than 63 characters (the `job-name` label its pods get must fit a label value).
pub fn job_name(volume: &str, pass: &str) -> String {
    let full = format!("{volume}-{pass}");
    if full.len() <= 63 {
        return full;
    }
    let h = fnv(&[&full]);
    let tail = format!("-{pass}-{:06x}", h & 0xff_ffff);
    let keep = 63usize.saturating_sub(tail.len());
    let head: String = volume.chars().take(keep).collect();
    format!("{}{tail}", head.trim_end_matches('-'))
}

/// What the worker needs to reach the source.
#[derive(Debug, Clone)]
pub struct JobSource<'a> {
    /// Source URL of the plan (`https://vcenter/sdk`).
    pub url: &'a str,
    /// Pinned certificate fingerprint.
    pub thumbprint: Option<&'a str>,
    /// Secret with `accessKeyId` / `secretKey`.
    pub secret: Option<&'a str>,
}

/// How the worker checkpoints (its `--checkpoint-interval` and `--work-unit`); the worker's
/// defaults (5 s, 128 MiB) when unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerTuning {
    /// Smallest interval between two checkpoints (each flushes the PVC).
    pub checkpoint_interval: Option<Duration>,
    /// Checkpoint granularity in bytes (at least 1 MiB): what a killed pass redoes at most.
    pub work_unit: Option<u64>,
}

/// The Job running copy pass `pass` of `disk` into the PVC `volume`.
pub fn build_transfer_job(
    t: &TargetVm,
    disk: &Disk,
    volume: &str,
    image: &str,
    src: &JobSource<'_>,
    pass: &TargetPass,
    tuning: &WorkerTuning,
) -> Job {
    let block = t.storage.get(&disk.key).and_then(|s| s.volume_mode) != Some(VolumeMode::Filesystem);
    let mut args = vec![
        "transfer".to_string(),
        "--source-url".into(),
        src.url.to_string(),
        "--vm-id".into(),
        t.source.id.source_ref.clone(),
        "--disk-key".into(),
        disk.key.to_string(),
        "--pass".into(),
        pass.name.clone(),
        "--result-file".into(),
        RESULT_PATH.into(),
    ];
    if let Some(s) = &pass.snapshot {
        args.extend(["--snapshot".into(), s.id.clone()]);
    }
    if let Some(c) = &pass.changed_since {
        args.extend(["--changed-since".into(), c.clone()]);
    }
    if let Some(every) = tuning.checkpoint_interval {
        args.extend(["--checkpoint-interval".into(), format!("{}ms", every.as_millis())]);
    }
    if let Some(unit) = tuning.work_unit {
        args.extend(["--work-unit".into(), unit.to_string()]);
    }
    if let Some(tp) = src.thumbprint {
        args.extend(["--thumbprint".into(), tp.to_string()]);
    }
    if block {
        args.extend(["--target-device".into(), TARGET_DEVICE.into()]);
    } else {
        args.extend(["--target-file".into(), "/data/disk.img".into()]);
    }
    let env = src
        .secret
        .map(|s| {
            [("VMIGRATE_SOURCE_USERNAME", "accessKeyId"), ("VMIGRATE_SOURCE_PASSWORD", "secretKey")]
                .into_iter()
                .map(|(name, key)| EnvVar {
                    name: name.into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector { name: s.into(), key: key.into(), optional: None }),
                        ..Default::default()
                    }),
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut labels: BTreeMap<String, String> = builder::vm_object_labels(t);
    labels.insert("vmigrate.dev/volume".into(), builder::label_value(volume));
    labels.insert(LABEL_PASS.into(), builder::label_value(&pass.name));
    let container = Container {
        name: "transfer".into(),
        image: Some(image.into()),
        command: Some(vec!["vmigrate".into()]),
        args: Some(args),
        env: Some(env),
        termination_message_path: Some(RESULT_PATH.into()),
        // The report when the worker wrote one; the end of its log when it died without.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_devices: block.then(|| vec![VolumeDevice { name: "target".into(), device_path: TARGET_DEVICE.into() }]),
        volume_mounts: (!block)
            .then(|| vec![VolumeMount { name: "target".into(), mount_path: "/data".into(), ..Default::default() }]),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(pass_job_name(volume, pass)),
            namespace: Some(t.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            // Evicted or preempted pods (a node drain) get a new pod without using up the
            // retries kept for real failures.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    on_exit_codes: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "target".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: volume.into(),
                            read_only: None,
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{job_name, pass_job_name};
    use vmigrate_core::{SnapshotRef, TargetPass};

    #[test]
    fn job_names_carry_the_pass_and_fit_a_label() {
        assert_eq!(job_name("database-disk0", "precopy-3"), "database-disk0-precopy-3");
        let long = "a".repeat(60);
        let n = job_name(&long, "precopy-12");
        assert!(n.len() <= 63 && n.contains("-precopy-12-"), "{n}");
        assert_eq!(n, job_name(&long, "precopy-12"), "stable");
        assert_ne!(n, job_name(&long, "precopy-13"));
        let snap = |id: &str| Some(SnapshotRef { id: id.into(), name: String::new(), change_ids: Default::default() });
        let pass = |id: &str, since: Option<&str>| TargetPass {
            name: "precopy-1".into(),
            snapshot: snap(id),
            changed_since: since.map(str::to_string),
        };
        let cold = TargetPass { name: "full".into(), snapshot: None, changed_since: None };
        assert_eq!(pass_job_name("db-disk0", &cold), "db-disk0-full");
        let a = pass_job_name("db-disk0", &pass("snapshot-1", Some("c1")));
        assert!(a.starts_with("db-disk0-precopy-1-") && a.len() == "db-disk0-precopy-1-".len() + 6, "{a}");
        assert_eq!(a, pass_job_name("db-disk0", &pass("snapshot-1", Some("c1"))), "a resumed pass finds its Job");
        assert_ne!(a, pass_job_name("db-disk0", &pass("snapshot-2", Some("c1"))), "a redone pass gets a new Job");
        assert_ne!(a, pass_job_name("db-disk0", &pass("snapshot-1", Some("c2"))));
    }
}
