//! The output folder target end to end: manifests that parse back and validate, sparse raw disks
//! byte-equal to what was written, idempotent re-runs, cleanup.

mod common;

use std::os::unix::fs::MetadataExt;

use bytes::Bytes;
use common::*;
use sha2::{Digest, Sha256};
use vmigrate_core::{ErrorCode, PreparedVolume, TargetProvider, VolumeSink};
use vmigrate_kubevirt::{DirOptions, DirTarget};

async fn migrate(t: &DirTarget, vm: &vmigrate_core::TargetVm, fill: u8) -> Vec<PreparedVolume> {
    let mut vols = Vec::new();
    for d in &vm.source.disks {
        let v = t.prepare_volume(vm, d).await.expect("prepare");
        let VolumeSink::Transport(sink) = t.open_volume(vm, &v).await.expect("open") else {
            panic!("dir target must give a transport")
        };
        assert_eq!(sink.size(), v.size);
        // Data at the start, in the middle and in the last bytes; the rest stays a hole.
        sink.write_at(0, Bytes::from(vec![fill; 1 << 20])).await.expect("write head");
        sink.write_at(v.size / 2, Bytes::from(vec![fill ^ 0xff; 4096])).await.expect("write middle");
        sink.write_at(v.size - 512, Bytes::from(vec![7u8; 512])).await.expect("write tail");
        sink.flush().await.expect("flush");
        t.finish_volume(vm, &v).await.expect("finish");
        vols.push(v);
    }
    t.create_vm(vm, &vols).await.expect("create vm");
    vols
}

fn expected_digest(size: u64, fill: u8) -> String {
    let mut buf = vec![0u8; size as usize];
    buf[..1 << 20].fill(fill);
    let mid = (size / 2) as usize;
    buf[mid..mid + 4096].fill(fill ^ 0xff);
    let n = buf.len();
    buf[n - 512..].fill(7);
    hex::encode(Sha256::digest(&buf))
}

#[tokio::test]
async fn writes_manifests_disks_and_next_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = DirTarget::open(dir.path()).expect("open");
    let mut db = database();
    db.source.disks[0].capacity_bytes = 16 << 20;
    let mut web = winweb01();
    web.source.disks[0].capacity_bytes = 32 << 20;
    web.source.disks[1].capacity_bytes = (16 << 20) + 512;
    let db_vols = migrate(&t, &db, 0xab).await;
    migrate(&t, &web, 0x11).await;
    t.expose("move-webapp-vmware", "vmexamples", &lab_services(None, None)).await.expect("expose");

    // Disk files: sparse and byte-equal.
    let disk = dir.path().join("disks/database-disk0.img");
    let md = std::fs::metadata(&disk).expect("disk file");
    assert_eq!(md.len(), 16 << 20);
    assert!(md.blocks() * 512 < 8 << 20, "not sparse: {} blocks", md.blocks());
    let got = hex::encode(Sha256::digest(std::fs::read(&disk).expect("read")));
    assert_eq!(got, expected_digest(16 << 20, 0xab));
    let odd = dir.path().join("disks/winweb01-disk1.img");
    assert_eq!(std::fs::metadata(&odd).expect("odd disk").len(), (16 << 20) + 512);

    // Manifests parse back, are sorted, and validate against the official schemas.
    let text = std::fs::read_to_string(dir.path().join("manifests.yaml")).expect("manifests");
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml doc"))
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().expect("kind")).collect();
    assert_eq!(
        kinds,
        ["DataVolume", "DataVolume", "DataVolume", "VirtualMachine", "VirtualMachine", "Service", "Service", "Route"]
    );
    let s = Schemas::load();
    for d in &docs {
        if d["kind"] != "Service" {
            s.check(d).unwrap_or_else(|e| panic!("{}: {e}", d["metadata"]["name"]));
        }
        assert_eq!(d["metadata"]["labels"]["vmigrate.dev/plan"], "move-webapp-vmware");
    }
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(docs[5].clone()).expect("typed service");
    assert_eq!(svc.metadata.name.as_deref(), Some("database"));
    assert!(docs[0]["spec"]["source"]["upload"].is_object());

    let steps = std::fs::read_to_string(dir.path().join("NEXT-STEPS.txt")).expect("next steps");
    let want = format!(
        "virtctl image-upload dv database-disk0 --namespace vmexamples --size 16Mi --image-path {} --no-create",
        disk.display()
    );
    assert!(steps.contains(&want), "{steps}");
    assert!(steps.contains(&format!("kubectl apply -f {}", dir.path().join("manifests.yaml").display())), "{steps}");

    // existing_vms reads the manifests back, also through a fresh handle.
    let again = DirTarget::open(dir.path()).expect("reopen");
    let mut existing = again.existing_vms("vmexamples").await.expect("existing");
    existing.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(existing.len(), 2);
    assert_eq!(existing[0].name, "database");
    assert_eq!(existing[0].macs, ["00:50:56:aa:00:01"]);
    assert_eq!(existing[0].plan.as_deref(), Some("move-webapp-vmware"));
    assert_eq!(existing[0].source_id.as_deref(), Some(db.source.id.source_ref.as_str()));
    assert!(again.existing_vms("other").await.expect("other ns").is_empty());

    // A re-run is idempotent: same manifests byte for byte, same disk content.
    migrate(&again, &db, 0xab).await;
    again.expose("move-webapp-vmware", "vmexamples", &lab_services(None, None)).await.expect("expose again");
    assert_eq!(std::fs::read_to_string(dir.path().join("manifests.yaml")).expect("manifests"), text);
    assert_eq!(hex::encode(Sha256::digest(std::fs::read(&disk).expect("read"))), expected_digest(16 << 20, 0xab));

    // Another source VM may not take an existing name unless the plan says overwrite.
    let mut intruder = database();
    intruder.source.id.source_ref = "vm-999".into();
    let err = again.create_vm(&intruder, &db_vols).await.expect_err("name taken");
    assert_eq!(err.code(), ErrorCode::TargetConflict);
    intruder.overwrite = true;
    intruder.source.id.source_ref = db.source.id.source_ref.clone();

    // Cleanup removes that VM's objects and disks, nothing else.
    again.cleanup(&web).await.expect("cleanup");
    assert!(!dir.path().join("disks/winweb01-disk0.img").exists());
    assert!(disk.exists());
    let names: Vec<String> =
        again.existing_vms("vmexamples").await.expect("existing").into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["database"]);
    let text = std::fs::read_to_string(dir.path().join("manifests.yaml")).expect("manifests");
    assert!(!text.contains("winweb01-disk"), "{text}");
    assert!(text.contains("route-webapp"), "plan-level objects stay");
}

#[tokio::test]
async fn qcow2_output_and_url_options() {
    if std::process::Command::new("qemu-img").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "qemu-img missing in CI");
        eprintln!("skipping: qemu-img not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("dir://{}?format=qcow2&expose=ingress", dir.path().display());
    let t = DirTarget::from_url(&url).expect("url");
    let mut db = database();
    db.source.disks[0].capacity_bytes = 8 << 20;
    migrate(&t, &db, 0x5a).await;
    t.expose("move-webapp-vmware", "vmexamples", &lab_services(None, None)).await.expect("expose");
    let q = dir.path().join("disks/database-disk0.qcow2");
    assert!(q.exists() && !dir.path().join("disks/database-disk0.img").exists());
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&q)
        .arg(dir.path().join("back.raw"))
        .output()
        .expect("qemu-img");
    assert!(out.status.success());
    let got = hex::encode(Sha256::digest(std::fs::read(dir.path().join("back.raw")).expect("read")));
    assert_eq!(got, expected_digest(8 << 20, 0x5a));
    let text = std::fs::read_to_string(dir.path().join("manifests.yaml")).expect("manifests");
    assert!(text.contains("kind: Ingress") && !text.contains("kind: Route"), "{text}");
    assert!(std::fs::read_to_string(dir.path().join("NEXT-STEPS.txt")).expect("steps").contains(".qcow2 --no-create"));

    for bad in ["file:///tmp/x", "dir://relative", "dir:///tmp/x?format=vmdk"] {
        let err = DirTarget::from_url(bad).expect_err(bad);
        assert_eq!(err.code(), ErrorCode::BadUrl, "{bad}");
    }
    let _ = DirOptions::default();
}
