//! The README's main job, end to end: `vmigrate demo` must migrate the lab, write valid
//! manifests and produce disks that qemu-img (an independent VMDK reader) finds identical to the
//! source VMDKs.

use std::path::Path;
use std::process::Command;

use vmigrate_testkit::peers::qemu_img_compare;

#[test]
fn demo_migrates_the_lab_byte_for_byte() {
    let work = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["demo", "--output", "json", "--workdir"])
        .arg(work.path())
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("output")).expect("final JSON line");
    assert_eq!(last["event"], "demo");
    let status = &last["status"];
    assert_eq!(status["plan"], "move-webapp-vmware");
    let vms = status["vms"].as_array().expect("vms");
    assert_eq!(vms.len(), 3);
    for vm in vms {
        assert_eq!(vm["phase"], "Completed", "{vm}");
    }
    // Every event line is JSON with an event tag, and the plan reached 3 of 3.
    let events: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("JSON lines only on stdout")).collect();
    assert!(events.iter().any(|e| e["event"] == "plan" && e["summary"] == "3 of 3 VMs migrated"));

    // Independent check: qemu-img reads the source VMDKs and compares with our raw outputs.
    let checks = last["verification"].as_array().expect("verification");
    assert_eq!(checks.len(), 4, "database has two disks, each web server one");
    let ds = work.path().join("datastore/WorkloadDatastore");
    for c in checks {
        assert_eq!(c["equal"], true, "{c}");
        let vm = c["vm"].as_str().expect("vm");
        let volume = c["volume"].as_str().expect("volume");
        let index: usize = volume.rsplit("disk").next().and_then(|n| n.parse().ok()).expect("disk index");
        let file = if index == 0 { format!("{vm}.vmdk") } else { format!("{vm}_{index}.vmdk") };
        let src = ds.join(vm).join(file);
        let dst = Path::new(c["path"].as_str().expect("path"));
        qemu_img_compare(&src, dst).unwrap_or_else(|e| panic!("{} differs from {}: {e}", dst.display(), src.display()));
        // The output stays sparse: far fewer blocks than its virtual size.
        let meta = std::fs::metadata(dst).expect("output disk");
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 < meta.len() / 20, "{} is not sparse", dst.display());
    }

    // The manifests carry what the lab builds by hand in section 3.4.
    let manifests = std::fs::read_to_string(work.path().join("output/manifests.yaml")).expect("manifests");
    let docs: Vec<serde_json::Value> = manifests
        .split("\n---")
        .filter(|d| !d.trim().is_empty() && d.trim() != "---")
        .map(|d| serde_yaml_ng::from_str(d).expect("each document is YAML"))
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    let web = find("Service", "webapp");
    assert_eq!(web["spec"]["selector"]["env"], "webapp");
    assert_eq!(web["spec"]["ports"][0]["port"], 80);
    let db = find("Service", "database");
    assert_eq!(db["spec"]["selector"]["vm.kubevirt.io/name"], "database");
    assert_eq!(db["spec"]["ports"][0]["port"], 3306);
    let route = find("Route", "route-webapp");
    assert_eq!(route["spec"]["to"]["name"], "webapp");
    assert!(route["spec"].get("tls").is_none(), "no TLS unless asked");
    for vm in ["winweb01", "winweb02"] {
        let v = find("VirtualMachine", vm);
        assert_eq!(v["metadata"]["namespace"], "vmexamples");
        assert_eq!(v["spec"]["template"]["metadata"]["labels"]["env"], "webapp", "{vm} carries the lab's label");
    }
    assert!(find("VirtualMachine", "database")["spec"]["template"]["metadata"]["labels"].get("env").is_none());
}

#[test]
fn validate_reports_iso_and_exits_3() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["validate", "--output", "json", "--plan"])
        .arg(format!("{root}/examples/plan.yaml"))
        .arg("--inventory")
        .arg(format!("{root}/examples/inventory.json"))
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let vms = v["vms"].as_array().expect("vms");
    assert_eq!(
        vms.iter().map(|x| x["name"].as_str().expect("name")).collect::<Vec<_>>(),
        ["database", "winweb01", "winweb02"]
    );
    let w2 = &vms[2];
    assert_eq!(w2["targetName"], "winweb02");
    assert!(w2["concerns"]
        .as_array()
        .expect("concerns")
        .iter()
        .any(|c| c["id"] == "cdrom.iso-connected" && c["severity"] == "critical"));
    assert!(vms[0]["concerns"].as_array().expect("concerns").is_empty());
    // Table output says the same to a person.
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["validate", "--plan"])
        .arg(format!("{root}/examples/plan.yaml"))
        .arg("--inventory")
        .arg(format!("{root}/examples/inventory.json"))
        .output()
        .expect("run validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("BLOCKED") && text.contains("ISO/CD-ROM disks must be unmounted"), "{text}");
}

#[test]
fn bad_plan_is_a_typed_error_with_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("plan.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml")).expect("example");
    std::fs::write(&p, text.replace("  warm: false\n", "  warm: false\n  wram: true\n")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate")).args(["validate", "--plan"]).arg(&p).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PlanParse") && err.contains("wram") && err.contains("line 16"), "{err}");
}

/// The demo as a person sees it: in a real terminal (a tmux pane, which renders what the
/// program draws, bars included), the final screen must still show the result once the
/// progress bars are gone. Before `Display::finish`, the bars drew once more when dropped and
/// erased the "Objects" list and the "Done in" line.
#[test]
fn demo_final_screen_in_a_terminal_shows_the_result() {
    let work = tempfile::tempdir().expect("tmp");
    let session = format!("vmigrate-demo-{}", std::process::id());
    let script = work.path().join("run.sh");
    let done = work.path().join("exit-code");
    std::fs::write(
        &script,
        format!(
            "{} demo --workdir {}; echo $? > {}; sleep 120\n",
            env!("CARGO_BIN_EXE_vmigrate"),
            work.path().join("w").display(),
            done.display()
        ),
    )
    .expect("script");
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux is installed");
    let started =
        tmux(&["new-session", "-d", "-s", &session, "-x", "150", "-y", "60", "sh", script.to_str().expect("utf-8")]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !done.exists() {
        assert!(std::time::Instant::now() < deadline, "the demo did not end in 5 minutes");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let screen = tmux(&["capture-pane", "-p", "-t", &session]);
    let _ = tmux(&["kill-session", "-t", &session]);
    let screen = String::from_utf8_lossy(&screen.stdout).to_string();
    assert_eq!(std::fs::read_to_string(&done).expect("exit code").trim(), "0", "{screen}");
    for want in ["== 6. Objects", "Route            route-webapp", "Done in", "3 of 3 VMs migrated. Next steps"] {
        assert!(screen.contains(want), "the final screen lacks {want:?}:\n{screen}");
    }
    assert!(!screen.contains("VMs migrated  3 of 3"), "a finished bar repeats the summary:\n{screen}");
    assert!(!screen.contains("TiB/s"), "a rate counts skipped space:\n{screen}");
}
