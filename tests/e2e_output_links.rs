//! Issue 14 item 7 (and 14's file modes): links planted in the output and status folders are
//! never written through. A symlink at `manifests.tmp`, `NEXT-STEPS.tmp` or
//! `<plan>.status.json.tmp` pointing at a file of the victim's leaves that file intact; a lock
//! file that is a symlink is refused; outputs are created 0600.

mod support;

use std::os::unix::fs::MetadataExt;

use support::*;

#[test]
fn planted_links_in_output_and_status_folders_are_not_followed() {
    let work = tempfile::tempdir().expect("tmp");
    let (ds, _vmdk) = big_vmx_datastore(work.path(), "linkdb", 64 << 20, 2);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let victim = work.path().join("victim.txt");
    std::fs::write(&victim, b"the victim's file").expect("victim");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("links", &ds, &format!("dir://{}", out.display()), &["linkdb"])).expect("plan");
    for tmp in [out.join("manifests.tmp"), out.join("NEXT-STEPS.tmp"), work.path().join("links.status.json.tmp")] {
        std::os::unix::fs::symlink(&victim, &tmp).expect("plant");
    }
    let plan_arg = plan_file.to_str().expect("utf-8");
    let r = run_cli(&["migrate", "--plan", plan_arg, "--output", "json"], |_| {});
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"the victim's file", "a planted link was written through");
    for f in [out.join("manifests.yaml"), out.join("NEXT-STEPS.txt"), work.path().join("links.status.json")] {
        let m = std::fs::symlink_metadata(&f).expect("output");
        assert!(m.file_type().is_file(), "{}", f.display());
        assert_eq!(m.mode() & 0o077, 0, "{} is readable by others: {:o}", f.display(), m.mode());
    }
    let disks: Vec<_> = std::fs::read_dir(out.join("disks")).expect("disks").flatten().map(|e| e.path()).collect();
    assert!(!disks.is_empty());
    for d in &disks {
        assert_eq!(std::fs::metadata(d).expect("disk").mode() & 0o077, 0, "{} is readable by others", d.display());
    }

    // The lock file as a link: refused, victim intact.
    std::fs::remove_file(work.path().join("links.status.json")).expect("rm status");
    let lock = work.path().join("links.status.lock");
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim, &lock).expect("plant lock");
    let r = run_cli(&["migrate", "--plan", plan_arg, "--output", "json"], |_| {});
    assert_ne!(r.status.code(), Some(0), "a symlinked lock file was used");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"the victim's file");
}

/// Issue 14 item 16: a run holding an output folder (here: its lock, held by this test) keeps a
/// second run with another status file out of it, instead of both writing the same disks.
#[test]
fn a_busy_output_folder_is_refused() {
    let work = tempfile::tempdir().expect("tmp");
    let (ds, _vmdk) = big_vmx_datastore(work.path(), "busydb", 16 << 20, 1);
    let out = work.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".vmigrate.lock"))
        .expect("lock file");
    held.try_lock().expect("lock");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("busy", &ds, &format!("dir://{}", out.display()), &["busydb"])).expect("plan");
    let other_status = work.path().join("other.status.json");
    let r = run_cli(
        &["migrate", "--plan", plan_file.to_str().expect("utf-8"), "--status", other_status.to_str().expect("utf-8")],
        |_| {},
    );
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_ne!(r.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("in use by another vmigrate run"), "{stderr}");
    assert_eq!(std::fs::read_dir(out.join("disks")).map(|d| d.count()).unwrap_or(0), 0, "a disk was written");
    drop(held);
    let r = run_cli(
        &["migrate", "--plan", plan_file.to_str().expect("utf-8"), "--status", other_status.to_str().expect("utf-8")],
        |_| {},
    );
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
}
