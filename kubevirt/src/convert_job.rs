//! The in-cluster conversion Job: what Forklift's conversion pod does, for one VM.
//!
//! After the last copy, one `batch/v1` Job runs `virt-v2v-in-place` (image built from
//! `kubevirt/Containerfile.convert`) with every PVC of the VM attached, and the input description
//! of the source VM (libvirt domain XML, from [`vmigrate_core::convert::domain_xml`]) in a
//! ConfigMap. Disk paths inside the pod follow CDI's layouts: a Block volume is attached as the
//! device `/dev/disk<N>`, a Filesystem volume is mounted at `/mnt/disks/disk<N>` with its image
//! in `disk.img`. The pod asks for `devices.kubevirt.io/kvm` (KubeVirt's device plugin) so the
//! libguestfs appliance runs under KVM, as Forklift's does.
//!
//! The container runs `virt-v2v-in-place` through a small `bash` wrapper ([`WRAPPER`], inline in
//! the Job so the Job says all it runs): the full verbose log goes to the container's output
//! (`kubectl logs`), and the lines that say what the guest became (`i_*` inspection lines,
//! `gcaps_*` guest capabilities, virt-v2v's own messages, its error lines) are written to the
//! termination message, at most 4000 bytes. The executor reads that message from the pod's
//! status with [`vmigrate_core::convert::parse_report`], the same parser as the local run's log:
//! pod logs need a kubelet the API server can reach, the termination message only the API.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, Volume, VolumeDevice, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use vmigrate_core::convert::{self, ConversionRequest, DiskImage};
use vmigrate_core::plan::VolumeMode;
use vmigrate_core::{PreparedVolume, TargetVm};

use crate::builder;

/// Where the ConfigMap with the domain XML is mounted.
pub const INPUT_DIR: &str = "/mnt/v2v";
/// The domain XML's file name in the ConfigMap.
pub const DOMAIN_XML: &str = "domain.xml";

/// Where the wrapper writes its report: Kubernetes' default termination message path.
pub const RESULT_PATH: &str = "/dev/termination-log";

/// Name of the conversion container.
pub const CONTAINER: &str = "virt-v2v";

/// The wrapper the container runs (`bash -c WRAPPER virt-v2v-in-place ARGS...`): virt-v2v with
/// its log streamed to the container output and kept in a temporary file, then the report
/// lines into [`RESULT_PATH`]; exits with virt-v2v's status. When virt-v2v failed without an
/// `error:` line (it could not start), the log's tail is the report.
pub const WRAPPER: &str = r#"set -u
log=$(mktemp)
"$0" "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
{
  grep -E '^(i|gcaps)_[a-z_0-9]+ = ' "$log"
  grep -E '^virt-v2v[a-z-]*: ' "$log" | grep -vE ': error: ' | head -n 20
  grep -E -A 5 '^virt-v2v[a-z-]*: error: ' "$log" | head -n 12
  if [ "$rc" -ne 0 ] && ! grep -qE '^virt-v2v[a-z-]*: error: ' "$log"; then tail -n 15 "$log"; fi
} | head -c 4000 > /dev/termination-log
rm -f "$log"
exit "$rc"
"#;

/// Name of the conversion Job (and its ConfigMap) of a VM.
pub fn job_name(t: &TargetVm) -> String {
    let base: String = t.name.chars().take(52).collect();
    format!("{}-convert", base.trim_end_matches('-'))
}

fn is_block(t: &TargetVm, disk_key: i32) -> bool {
    t.storage.get(&disk_key).and_then(|s| s.volume_mode) != Some(VolumeMode::Filesystem)
}

/// The disk images as the conversion pod sees them, in source disk order.
pub fn pod_disks(t: &TargetVm) -> Vec<DiskImage> {
    t.source
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| DiskImage {
            path: if is_block(t, d.key) {
                format!("/dev/disk{i}").into()
            } else {
                format!("/mnt/disks/disk{i}/disk.img").into()
            },
            format: "raw".into(),
        })
        .collect()
}

/// The ConfigMap holding the domain XML of the source VM over the pod's disk paths.
pub fn build_input_configmap(t: &TargetVm) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(job_name(t)),
            namespace: Some(t.namespace.clone()),
            labels: Some(builder::vm_object_labels(t)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(DOMAIN_XML.to_string(), convert::domain_xml(&t.source, &pod_disks(t)))])),
        ..Default::default()
    }
}

/// The Job converting the guest of `t` on its prepared volumes with `image`.
pub fn build_conversion_job(t: &TargetVm, volumes: &[PreparedVolume], image: &str, req: &ConversionRequest) -> Job {
    let name = job_name(t);
    let xml = format!("{INPUT_DIR}/{DOMAIN_XML}");
    let args: Vec<String> = convert::in_place_args(std::path::Path::new(&xml), &t.source, req)
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // KVM through KubeVirt's device plugin: no TCG fallback needed in the pod.
    let env: Vec<EnvVar> =
        [("LIBGUESTFS_BACKEND", Some("direct")), ("HOME", Some("/tmp")), ("VIRTIO_WIN", req.virtio_win.as_deref())]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| EnvVar { name: k.into(), value: Some(v.into()), value_from: None }))
            .collect();
    let mut devices = Vec::new();
    let mut mounts = vec![VolumeMount {
        name: "v2v-input".into(),
        mount_path: INPUT_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }];
    let mut pod_volumes = vec![Volume {
        name: "v2v-input".into(),
        config_map: Some(ConfigMapVolumeSource { name: name.clone(), ..Default::default() }),
        ..Default::default()
    }];
    for (i, d) in t.source.disks.iter().enumerate() {
        let claim = volumes
            .iter()
            .find(|v| v.disk_key == d.key)
            .map(|v| v.name.clone())
            .unwrap_or_else(|| builder::volume_name(&t.name, i));
        let vol = format!("disk{i}");
        if is_block(t, d.key) {
            devices.push(VolumeDevice { name: vol.clone(), device_path: format!("/dev/disk{i}") });
        } else {
            mounts.push(VolumeMount {
                name: vol.clone(),
                mount_path: format!("/mnt/disks/disk{i}"),
                ..Default::default()
            });
        }
        pod_volumes.push(Volume {
            name: vol,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim, read_only: None }),
            ..Default::default()
        });
    }
    let kvm = BTreeMap::from([("devices.kubevirt.io/kvm".to_string(), Quantity("1".into()))]);
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image.into()),
        command: Some(vec!["bash".into(), "-c".into(), WRAPPER.into(), convert::IN_PLACE_PROGRAM.into()]),
        args: Some(args),
        termination_message_path: Some(RESULT_PATH.into()),
        termination_message_policy: Some("File".into()),
        env: Some(env),
        volume_devices: (!devices.is_empty()).then_some(devices),
        volume_mounts: Some(mounts),
        resources: Some(ResourceRequirements { limits: Some(kvm.clone()), requests: Some(kvm), ..Default::default() }),
        ..Default::default()
    };
    let mut labels = builder::vm_object_labels(t);
    labels.insert("vmigrate.dev/step".into(), "convert".into());
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(t.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // A conversion that failed once fails again the same way; its log says why.
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    volumes: Some(pod_volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}
