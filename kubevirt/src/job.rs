//! The in-cluster transfer Job: one `batch/v1` Job per disk runs the vmigrate transfer worker
//! (`vmigrate transfer`, image built from `kubevirt/Containerfile`) with the target PVC attached,
//! copying straight from the source. Kubernetes schedules the workers; we only cap how many run.
//!
//! Worker command line (the CLI's `transfer` subcommand reads it):
//! `vmigrate transfer --source-url URL --vm-id MOREF --disk-key KEY [--thumbprint T]
//! (--target-device /dev/xvda | --target-file /data/disk.img)`, credentials from the
//! environment variables `VMIGRATE_SOURCE_USERNAME` / `VMIGRATE_SOURCE_PASSWORD` (a Secret).
//! Block volumes are attached as a raw device (`volumeDevices`), Filesystem volumes mounted at
//! `/data` with the image in `disk.img` (CDI's layout).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, SecretKeySelector,
    Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vmigrate_core::model::Disk;
use vmigrate_core::plan::VolumeMode;
use vmigrate_core::TargetVm;

use crate::builder;

/// Device path of the target PVC inside the worker pod.
pub const TARGET_DEVICE: &str = "/dev/xvda";

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

/// The Job copying `disk` into the PVC `volume`.
pub fn build_transfer_job(t: &TargetVm, disk: &Disk, volume: &str, image: &str, src: &JobSource<'_>) -> Job {
    let block = t.storage.get(&disk.key).and_then(|s| s.volume_mode) != Some(VolumeMode::Filesystem);
    let mut args = vec![
        "transfer".to_string(),
        "--source-url".into(),
        src.url.to_string(),
        "--vm-id".into(),
        t.source.id.moref.clone(),
        "--disk-key".into(),
        disk.key.to_string(),
    ];
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
    let container = Container {
        name: "transfer".into(),
        image: Some(image.into()),
        command: Some(vec!["vmigrate".into()]),
        args: Some(args),
        env: Some(env),
        volume_devices: block.then(|| vec![VolumeDevice { name: "target".into(), device_path: TARGET_DEVICE.into() }]),
        volume_mounts: (!block)
            .then(|| vec![VolumeMount { name: "target".into(), mount_path: "/data".into(), ..Default::default() }]),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{volume}-transfer")),
            namespace: Some(t.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
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
