//! Guest conversion inside the cluster (issue 13): the VMware host-only guest (its initramfs
//! knows only PVSCSI / LSI storage, `tests/guests/build-guests.sh`) is migrated cold from a
//! VMware datastore folder into a real Kubernetes API server (the `realkube` harness: etcd,
//! kube-apiserver, kube-controller-manager with the job and garbage-collector controllers) with
//! `transfer: job` and conversion on, then its PVC image is booted under QEMU on the devices of
//! the VirtualMachine the API server now holds.
//!
//! Nothing runs pods in that cluster, so a test "kubelet" (tests/support/kubelet.rs) runs every
//! pod the job controller creates: the pod's command and arguments exactly as the Job gives them,
//! in a private mount namespace laid out like the container (PVCs as folders under the test's
//! `pvcs/`, the ConfigMap as files, the termination message file), and writes the pod's status
//! back, from which the job controller completes the Job. Two Jobs run: the transfer worker
//! (`vmigrate transfer`, the datastore folder visible to it as a node would mount it) and the
//! conversion (`virt-v2v-in-place` through the Job's report wrapper, reading the domain XML from
//! the ConfigMap and converting `/mnt/disks/disk0/disk.img` in place). The executor reads the
//! conversion's result only from the pod's termination message.
//!
//! The boot proves the outcome: the same guest copied without conversion stops in its
//! initramfs on virtio (tests/e2e_convert_boot.rs shows that); here it must reach its init's
//! marker from `/dev/vda1`. Under TCG the conversion takes 3-6 minutes and the boot ~1.
//!
//! Stand-ins: the kubelet above, and CDI's DataVolume controller ([`CdiStandIn`] marks the blank
//! DataVolume Succeeded; no PVC object is made, the kubelet's folder is the claim).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ObjectMeta, PostParams};
use support::boot::{self, BootSpec, DiskBus, Drive, VmDevices};
use support::guests::{self, DatastoreVm, Firmware, VmdkFormat};
use support::kubelet::{Image, Kubelet};
use support::*;
use vmigrate::core::executor::{Executor, ExecutorOptions};
use vmigrate::core::Phase;
use vmigrate::kubevirt::realkube::{CdiStandIn, Crds, RealKube};
use vmigrate::kubevirt::{KubevirtOptions, KubevirtTarget, VirtualMachine};

const NS: &str = "vmexamples";
const VM: &str = "rhel-like-hostonly";
const VOLUME: &str = "rhel-like-hostonly-disk0";
const TRANSFER_IMAGE: &str = "localhost/vmigrate-transfer:latest";
const CONVERT_IMAGE: &str = "localhost/vmigrate-convert:latest";

fn plan_text(ds: &Path) -> String {
    format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: convert-in-cluster
spec:
  source:
    url: "vmx://{ds}?datastore={DATASTORE}"
  target:
    url: "kubevirt://"
  targetNamespace: {NS}
  skipGuestConversion: false
  vms:
    - name: {VM}
  networkMap:
    - source: {{ name: {NETWORK} }}
      destination: {{ type: pod }}
  storageMap:
    - source: {{ name: {DATASTORE} }}
      destination: {{ storageClass: standard, volumeMode: Filesystem }}
  options:
    transfer: job
"#,
        ds = ds.display()
    )
}

async fn prepare_cluster(client: &kube::Client) {
    let ns = Namespace { metadata: ObjectMeta { name: Some(NS.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
    let sc = StorageClass {
        metadata: ObjectMeta { name: Some("standard".into()), ..Default::default() },
        provisioner: "kubernetes.io/no-provisioner".into(),
        ..Default::default()
    };
    Api::<StorageClass>::all(client.clone()).create(&PostParams::default(), &sc).await.expect("storage class");
    // Pods are admitted only once the namespace's default service account exists (made by the
    // service-account controller).
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let start = std::time::Instant::now();
    while sas.get_opt("default").await.expect("get service account").is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "no default service account in {NS}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostonly_guest_converted_by_a_cluster_job_boots_on_its_virtual_machine() {
    let set = guests::guests();
    let g = set.get("bios-hostonly");
    assert!(g.hostonly && g.firmware == Firmware::Bios);
    let work = tempfile::tempdir().expect("tmp");
    let ds = guests::vmware_datastore(
        work.path(),
        &[DatastoreVm { name: VM, guest: g, format: VmdkFormat::VmfsFlat, index: 9 }],
    );
    let flat = ds.join(VM).join(format!("{VM}-flat.vmdk"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).expect("source disk");
    let before = [mtime(&flat), mtime(&g.image)];

    let kube = RealKube::start(Crds::All).await;
    let client = kube.client().await;
    prepare_cluster(&client).await;
    let _cdi = CdiStandIn::start(client.clone(), NS, "Succeeded", Duration::from_secs(1));
    let pvcs = work.path().join("pvcs");
    let images = BTreeMap::from([
        (TRANSFER_IMAGE.to_string(), Image { programs: vec![("vmigrate".into(), vmigrate_bin().into())], env: vec![] }),
        // kubevirt/Containerfile.convert: Debian's virt-v2v, its appliance run directly.
        (
            CONVERT_IMAGE.to_string(),
            Image { programs: vec![], env: vec![("LIBGUESTFS_BACKEND".into(), "direct".into())] },
        ),
    ]);
    let kubelet = Kubelet::start(client.clone(), NS, &pvcs, &work.path().join("pods"), images, vec![ds.clone()]);

    let plan = vmigrate::core::Plan::from_yaml_str(&plan_text(&ds)).expect("plan");
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let target = KubevirtTarget::from_client(client.clone()).with_options(KubevirtOptions {
        poll_interval: Duration::from_millis(500),
        timeout: Duration::from_secs(25 * 60),
        ..Default::default()
    });
    let opts = ExecutorOptions { status_path: Some(work.path().join("status.json")), ..Default::default() };
    let started = std::time::Instant::now();
    let st = Executor::new(plan, Arc::from(source), Arc::new(target), opts).run().await.expect("run");
    eprintln!("migration with conversion took {:.1} s", started.elapsed().as_secs_f64());
    let ran = kubelet.ran();
    for p in &ran {
        eprintln!("pod {} ({}) exited {} after {:.1} s", p.name, p.image, p.exit_code, p.seconds);
    }
    let vs = &st.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}\npods: {ran:#?}", vs.error);

    // Two Jobs ran as pods: the copy, then the conversion over the same claim.
    let jobs: Vec<&str> = ran.iter().map(|p| p.job.as_str()).collect();
    assert_eq!(jobs, [format!("{VOLUME}-full"), format!("{VM}-convert")], "{ran:#?}");
    let conv_pod = &ran[1];
    assert_eq!(conv_pod.image, CONVERT_IMAGE);
    assert_eq!(
        conv_pod.argv[..4],
        ["bash", "-c", vmigrate::kubevirt::convert_job::WRAPPER, "virt-v2v-in-place"],
        "the Job's own command ran"
    );
    let args = &conv_pod.argv[4..];
    assert!(args.windows(2).any(|w| w == ["-i", "libvirtxml"]), "{args:?}");
    assert_eq!(args.last().map(String::as_str), Some("/mnt/v2v/domain.xml"));
    let log = std::fs::read_to_string(&conv_pod.log).expect("pod log");
    assert!(log.contains("i_osinfo = debian12"), "virt-v2v's verbose log is the pod's output");

    // The executor read the result from the pod and built the VM from it.
    // Inspected on the datastore's disk before anything moved (vmx:// has local files).
    assert_eq!(vs.inspection.as_ref().map(|o| o.osinfo.as_str()), Some("debian12"), "{vs:#?}");
    let conv = vs.conversion.as_ref().expect("conversion in the status");
    assert!(conv.converted, "{conv:?}");
    assert_eq!(conv.os.as_ref().map(|o| o.osinfo.as_str()), Some("debian12"), "{conv:?}");
    assert_eq!(conv.disk_bus, Some(vmigrate::core::plan::TargetDiskBus::Virtio), "{conv:?}");
    assert_eq!(conv.nic_model.as_deref(), Some("virtio"), "{conv:?}");
    let report = conv.report.as_deref().expect("the pod's report is kept in the status");
    assert!(report.contains("gcaps_block_bus = virtio-blk") && report.len() <= 4000, "{report}");
    assert_eq!(conv_pod.message.trim_end(), report);

    // Once read, the conversion Job (and its pod, by the garbage collector) and its input are
    // deleted; the VM's DataVolume stays.
    let job_api: Api<Job> = Api::namespaced(client.clone(), NS);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let name = format!("{VM}-convert");
    let start = std::time::Instant::now();
    while job_api.get_opt(&name).await.expect("get").is_some() || cm_api.get_opt(&name).await.expect("get").is_some() {
        assert!(start.elapsed() < Duration::from_secs(60), "the conversion Job or ConfigMap was left behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The VirtualMachine on the server: what virt-v2v installed and found.
    let vm = Api::<VirtualMachine>::namespaced(client.clone(), NS).get(VM).await.expect("VirtualMachine");
    let vm = serde_json::to_value(&vm).expect("json");
    assert_eq!(vm["spec"]["preference"]["name"], "debian", "{vm:#}");
    let dev = VmDevices::from_manifest(&vm);
    assert_eq!((dev.firmware, dev.bus, dev.nic.as_deref()), (Firmware::Bios, DiskBus::Virtio, Some("virtio")));
    assert_eq!(dev.data_volumes, [VOLUME]);
    let spec = BootSpec {
        firmware: dev.firmware,
        secure_boot: dev.secure_boot,
        drives: dev.data_volumes.iter().map(|dv| Drive::new(pvcs.join(dv).join("disk.img"))).collect(),
        bus: dev.bus,
        nic: dev.nic.clone(),
        memory_mib: 768,
        timeout: boot::default_timeout(),
    };
    drop(kubelet);
    let marker = g.marker.clone();
    let report = tokio::task::spawn_blocking(move || boot::boot(&spec, &marker)).await.expect("boot");
    eprintln!(
        "converted in the cluster, on virtio: {:?} in {:.1} s ({:?})",
        report.outcome, report.seconds, report.accel
    );
    assert!(report.booted(), "the converted guest must boot on its VirtualMachine's devices: {}", report.describe());
    let line = report.marker_line.as_deref().unwrap_or_default();
    assert!(line.contains("root=/dev/vda1"), "the guest should run from its virtio disk: {line}");

    assert_eq!([mtime(&flat), mtime(&g.image)], before, "the source disk or the cached guest was written");
}
