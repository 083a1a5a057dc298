//! Issue 14 items 8 and 16: names of 65,536+ characters and names with terminal escapes never
//! panic a table (`{:width$}` with a data width did) and never reach the terminal raw. Plans
//! refuse them where they enter, with a clear PlanInvalid; a VMX with such a name is skipped
//! by the inventory; a status file holding them prints.

mod support;

use support::*;

#[test]
fn huge_and_escaped_names_are_bounded_and_never_panic() {
    let work = tempfile::tempdir().expect("tmp");
    let (ds, _vmdk) = big_vmx_datastore(work.path(), "okvm", 16 << 20, 1);
    let huge = "a".repeat(70_000);

    // A plan naming it: refused where it enters.
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(&plan_file, vmx_plan("long", &ds, "dir:///tmp/unused-long", &[&huge])).expect("plan");
    let r = run_cli(&["validate", "--plan", plan_file.to_str().expect("utf-8")], |_| {});
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PlanInvalid") && stderr.contains("at most 1024"), "{stderr}");
    assert!(stderr.len() < 4096, "the whole name was echoed");
    let esc_plan = vmx_plan("esc", &ds, "dir:///tmp/unused-long", &["db\u{1b}[2J"]).replace("\u{1b}", "\\e");
    std::fs::write(&plan_file, esc_plan.replace("name: db\\e[2J", "name: \"db\\e[2J\"")).expect("plan");
    let r = run_cli(&["validate", "--plan", plan_file.to_str().expect("utf-8")], |_| {});
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("control characters"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "an escape reached the terminal: {stderr:?}");

    // A VMX with such a displayName: the inventory skips it, no panic, the other VM listed.
    let vm_dir = ds.join("hugevm");
    std::fs::create_dir_all(&vm_dir).expect("mkdir");
    std::fs::write(vm_dir.join("hugevm.vmx"), format!("config.version = \"8\"\ndisplayName = \"{huge}\"\n"))
        .expect("vmx");
    let url = format!("vmx://{}", ds.display());
    let r = run_cli(&["inventory", "--source", &url], |_| {});
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(stdout.contains("okvm") && !stdout.contains(&huge), "{}", &stdout[..stdout.len().min(400)]);

    // A status file holding both (written by anything): printed, bounded, escaped.
    let status = serde_json::json!({
        "plan": "long",
        "vms": [
            {"name": huge, "targetName": huge, "phase": "Completed"},
            {"name": "db\u{1b}[2J", "targetName": "db", "phase": "Failed",
             "error": {"code": 4001, "name": "Io", "message": "boom\u{1b}[31m"}}
        ]
    });
    let st = work.path().join("long.status.json");
    std::fs::write(&st, status.to_string()).expect("status");
    let r = run_cli(&["status", "--status", st.to_str().expect("utf-8")], |_| {});
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(!stdout.contains('\u{1b}'), "an escape reached the terminal");
    assert!(stdout.contains("\\u{1b}[2J"), "{}", &stdout[stdout.len().saturating_sub(400)..]);
}
