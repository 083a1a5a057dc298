//! Issue 14 item 4: a status file is bound to the plan it was written for. Plan A runs to
//! completion; plan B, with the same `metadata.name` in the same folder but another target,
//! must not "resume" A's status and report its VMs migrated with nothing copied: it is refused
//! with StatusPlanMismatch naming both targets, and runs for real once the status is removed.

mod support;

use support::*;

#[test]
fn another_plan_with_the_same_name_does_not_resume_a_finished_status() {
    let work = tempfile::tempdir().expect("tmp");
    let (ds, _vmdk) = big_vmx_datastore(work.path(), "smalldb", 64 << 20, 2);
    let (out_a, out_b) = (work.path().join("out-a"), work.path().join("out-b"));
    let plan_file = work.path().join("plan.yaml");
    let write = |out: &std::path::Path| {
        std::fs::write(&plan_file, vmx_plan("same-name", &ds, &format!("dir://{}", out.display()), &["smalldb"]))
            .expect("plan")
    };
    let plan_arg = plan_file.to_str().expect("utf-8");
    let migrate = || run_cli(&["migrate", "--plan", plan_arg, "--output", "json"], |_| {});

    write(&out_a);
    let a = migrate();
    assert_eq!(a.status.code(), Some(0), "plan A: {}", String::from_utf8_lossy(&a.stderr));
    let status_file = work.path().join("same-name.status.json");
    assert_eq!(read_status(&status_file).expect("status").summary(), "1 of 1 VMs migrated");

    // Plan B: same name, same folder, another target. Twice, with and without --resume.
    write(&out_b);
    for extra in [&[][..], &["--resume"][..]] {
        let mut args = vec!["migrate", "--plan", plan_arg, "--output", "json"];
        args.extend_from_slice(extra);
        let b = run_cli(&args, |_| {});
        let stderr = String::from_utf8_lossy(&b.stderr);
        assert_ne!(b.status.code(), Some(0), "plan B {extra:?} resumed plan A's status: {stderr}");
        assert!(stderr.contains("StatusPlanMismatch"), "{stderr}");
        assert!(
            stderr.contains(&out_a.display().to_string()) && stderr.contains(&out_b.display().to_string()),
            "{stderr}"
        );
    }
    // A's status is untouched, and B wrote no disk anywhere.
    assert_eq!(read_status(&status_file).expect("status").summary(), "1 of 1 VMs migrated");
    assert!(!out_b.join("smalldb").exists() || std::fs::read_dir(&out_b).map(|d| d.count()).unwrap_or(0) == 0);

    // Without the stale status, B really copies.
    std::fs::remove_file(&status_file).expect("rm status");
    let b = migrate();
    assert_eq!(b.status.code(), Some(0), "plan B: {}", String::from_utf8_lossy(&b.stderr));
    let disks: Vec<_> = walk(&out_b)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "raw" || e == "img" || e == "qcow2"))
        .collect();
    assert!(!disks.is_empty(), "plan B wrote no disk into {}", out_b.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
