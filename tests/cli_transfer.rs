//! `vmigrate transfer`, the in-cluster worker, run locally against a datastore folder.

use std::process::Command;

use vmigrate::core::plan::SourceSpec;

#[tokio::test(flavor = "multi_thread")]
async fn transfer_copies_one_vm_disk_byte_equal() {
    let work = tempfile::tempdir().expect("tmp");
    let ds = vmigrate::demo::create_lab_datastore(work.path()).await.expect("lab datastore");
    let url = format!("vmx://{}", ds.display());
    let source =
        vmigrate::sources::open_source(&SourceSpec { url: url.clone(), ..Default::default() }).await.expect("source");
    let inv = source.inventory().await.expect("inventory");
    let db = inv.vms.iter().find(|v| v.name == "database").expect("database");
    let disk = &db.disks[1];
    let out = work.path().join("disk.img");
    let run = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["transfer", "--output", "json", "--source-url", &url, "--vm-id", &db.id.source_ref, "--disk-key"])
        .arg(disk.key.to_string())
        .arg("--target-file")
        .arg(&out)
        .output()
        .expect("run transfer");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json summary");
    assert_eq!(summary["size"].as_u64(), Some(disk.capacity_bytes as u64));
    // The pass report (what a Job's termination message carries) is the printed summary.
    let report: vmigrate::core::PassReport = serde_json::from_value(summary.clone()).expect("a pass report");
    assert_eq!((report.pass.as_str(), report.changed_bytes), ("full", disk.capacity_bytes as u64));
    assert!(report.snapshot.is_none() && report.changed_since.is_none());
    assert!(!work.path().join("disk.img.vmigrate-checkpoint").exists(), "a durable pass leaves no checkpoint");
    let vmdk = ds.join("database/database_1.vmdk");
    let cmp = Command::new("qemu-img").arg("compare").arg(&vmdk).arg(&out).output().expect("qemu-img");
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stdout));

    // A disk key the VM does not have is a clear error, and nothing is written.
    let bad = work.path().join("bad.img");
    let run = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["transfer", "--source-url", &url, "--vm-id", &db.id.source_ref, "--disk-key", "9999", "--target-file"])
        .arg(&bad)
        .output()
        .expect("run transfer");
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("no disk with key 9999"));
    assert!(!bad.exists());

    // A delta pass needs the snapshot it reads: refused as a usage error, nothing written.
    let run = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args([
            "transfer",
            "--source-url",
            &url,
            "--vm-id",
            &db.id.source_ref,
            "--changed-since",
            "52 aa/1",
            "--disk-key",
        ])
        .arg(disk.key.to_string())
        .arg("--target-file")
        .arg(&bad)
        .output()
        .expect("run transfer");
    assert_eq!(run.status.code(), Some(2), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--snapshot"));
    assert!(!bad.exists());

    // A result file gets the same report.
    let result = work.path().join("termination-log");
    let run = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["transfer", "--source-url", &url, "--vm-id", &db.id.source_ref, "--pass", "full", "--disk-key"])
        .arg(disk.key.to_string())
        .arg("--target-file")
        .arg(&out)
        .arg("--result-file")
        .arg(&result)
        .output()
        .expect("run transfer");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: vmigrate::core::PassReport =
        serde_json::from_slice(&std::fs::read(&result).expect("result file")).expect("report");
    assert_eq!(report.size, disk.capacity_bytes as u64);

    // Issue 15: a checkpoint that does not decode is an error naming it, kept for a look, never
    // taken for "no checkpoint"; a valid one of another pass is dropped and the pass starts over.
    let cp = work.path().join("disk.img.vmigrate-checkpoint");
    let transfer = || {
        Command::new(env!("CARGO_BIN_EXE_vmigrate"))
            .args(["transfer", "--source-url", &url, "--vm-id", &db.id.source_ref, "--pass", "full", "--disk-key"])
            .arg(disk.key.to_string())
            .arg("--target-file")
            .arg(&out)
            .output()
            .expect("run transfer")
    };
    std::fs::write(&cp, r#"{"version":1,"source_size":"many","done":[]}"#).expect("damaged checkpoint");
    let run = transfer();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unreadable") && stderr.contains("disk.img.vmigrate-checkpoint"), "{stderr}");
    assert!(cp.exists(), "the damaged checkpoint is kept");
    let other =
        r#"{"version":1,"source_size":1,"work_unit":1,"fingerprint":"f","done":[[0,1]],"source":"another pass"}"#;
    std::fs::write(&cp, other).expect("another pass's checkpoint");
    let run = transfer();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!cp.exists(), "the other pass's checkpoint is gone");
    let cmp = Command::new("qemu-img").arg("compare").arg(&vmdk).arg(&out).output().expect("qemu-img");
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stdout));
}
