//! The CLI's `--output json` prints the wire documents (`docs/wire-format.md`): `vmigrate
//! inventory`, `validate`, `migrate` (its event stream), `status` and `copy`, run on the golden
//! inputs, equal the golden files in `tests/golden/` that the Rust facade, C and Python produce
//! (after the shared normalization). `cli-copy-summary.json` is the CLI's own document; it is
//! rewritten with `VMIGRATE_BLESS=1`, the shared files only by `tests/wire_golden.rs`.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{json_lines, run_cli};
use vmigrate_testkit::golden::{blessing, check, golden_dir};

fn stdout_of(args: &[&str]) -> String {
    let out = run_cli(args, |_| {});
    assert!(out.status.success(), "vmigrate {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The one JSON line a non-streaming command prints.
fn one_line(args: &[&str]) -> String {
    let text = stdout_of(args);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "vmigrate {args:?} printed more than one document:\n{text}");
    lines[0].to_string()
}

#[test]
fn cli_json_output_is_the_wire_documents() {
    let scratch = tempfile::tempdir().expect("tmp");
    let tmp = scratch.path();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let lab = rt.block_on(vmigrate::demo::create_lab_datastore(&tmp.join("lab"))).expect("lab");
    let plan_text = std::fs::read_to_string(golden_dir().join("plan.yaml")).expect("plan.yaml");
    let plan_text =
        plan_text.replace("@LAB@", &lab.to_string_lossy()).replace("@OUT@", &tmp.join("out").to_string_lossy());
    let plan = tmp.join("plan.yaml");
    std::fs::write(&plan, plan_text).expect("write plan");
    let plan = plan.to_str().expect("utf-8");

    let source = format!("vmx://{}", lab.display());
    let inventory = one_line(&["inventory", "--source", &source, "--output", "json"]);
    check("inventory", &inventory, tmp, "cli", false);
    // What `inventory --output json` prints is what `validate --inventory` reads.
    let inventory_file = tmp.join("inventory.json");
    std::fs::write(&inventory_file, &inventory).expect("write inventory");
    let offline = one_line(&[
        "validate",
        "--plan",
        plan,
        "--inventory",
        inventory_file.to_str().expect("utf-8"),
        "--output",
        "json",
    ]);
    let offline: Value = serde_json::from_str(&offline).expect("json");
    assert_eq!((offline["kind"].as_str(), offline["blocked"].as_bool()), (Some("PlanValidation"), Some(false)));

    check("plan-validation", &one_line(&["validate", "--plan", plan, "--output", "json"]), tmp, "cli", false);

    // The event stream: every line a MigrationEvent document; the non-disk events are the golden
    // run's, then one `"event": "status"` line carrying the final status.
    let lines = json_lines(stdout_of(&["migrate", "--plan", plan, "--output", "json"]).as_bytes());
    for l in &lines {
        assert_eq!(
            (l["apiVersion"].as_str(), l["kind"].as_str()),
            (Some(vmigrate::wire::API_VERSION), Some("MigrationEvent")),
            "{l}"
        );
    }
    let (last, events) = lines.split_last().expect("lines");
    let events: Vec<&Value> = events.iter().filter(|e| e["event"] != "disk").collect();
    check("migration-events", &serde_json::to_string(&events).expect("json"), tmp, "cli", false);
    assert_eq!(last["event"], "status", "{last}");
    let mut status = serde_json::json!({"apiVersion": vmigrate::wire::API_VERSION, "kind": "PlanStatus"});
    for (k, v) in last["status"].as_object().expect("status object") {
        status[k] = v.clone();
    }
    check("plan-status", &status.to_string(), tmp, "cli", false);

    let status_file = Path::new(plan).with_file_name("wire-golden.status.json");
    let shown = one_line(&["status", "--status", status_file.to_str().expect("utf-8"), "--output", "json"]);
    check("plan-status", &shown, tmp, "cli", false);

    // The fixed image of tests/wire_golden.rs: 1 MiB, 64 KiB of `v` at 0 and at 512 KiB.
    let (src, dst) = (tmp.join("image.raw"), tmp.join("copy.raw"));
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&src).expect("create image");
        f.set_len(1 << 20).expect("size image");
        for off in [0u64, 512 << 10] {
            f.seek(SeekFrom::Start(off)).expect("seek");
            f.write_all(&[b'v'; 64 << 10]).expect("write");
        }
    }
    let summary =
        one_line(&["copy", src.to_str().expect("utf-8"), dst.to_str().expect("utf-8"), "--verify", "--output", "json"]);
    assert_eq!(std::fs::read(&src).expect("src"), std::fs::read(&dst).expect("dst"));
    check("cli-copy-summary", &summary, tmp, "cli", blessing());
}
