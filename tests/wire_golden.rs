//! The wire format's golden files (`tests/golden/`, `docs/wire-format.md`), produced here from
//! the Rust facade (`vmigrate::wire`) and blessed with `VMIGRATE_BLESS=1`. The C test
//! (`ffi/tests/c_programs.rs`, `wire.c`) and pytest (`python/tests/test_wire.py`) produce the
//! same documents through their APIs from the same inputs and compare with the same files.

use std::path::Path;
use std::sync::{Arc, Mutex};

use vmigrate::core::engine::CopyControl;
use vmigrate::core::executor::{Event, Executor, ExecutorOptions};
use vmigrate::core::Plan;
use vmigrate::wire;
use vmigrate_testkit::golden::{blessing, check, golden_dir};

/// The fixed image of the copy documents: 1 MiB, 64 KiB of `v` at 0 and at 512 KiB, holes
/// elsewhere (the C and Python tests write the same bytes).
fn write_image(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).expect("create image");
    f.set_len(1 << 20).expect("size image");
    for off in [0u64, 512 << 10] {
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&[b'v'; 64 << 10]).expect("write");
    }
}

/// The golden plan with its folders filled in.
fn golden_plan(lab: &Path, out: &Path) -> Plan {
    let text = std::fs::read_to_string(golden_dir().join("plan.yaml")).expect("plan.yaml");
    let text = text.replace("@LAB@", &lab.to_string_lossy()).replace("@OUT@", &out.to_string_lossy());
    Plan::from_yaml_str(&text).expect("the golden plan parses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_documents_match_the_golden_files() {
    let bless = blessing();
    let scratch = tempfile::tempdir().expect("tmp");
    let tmp = scratch.path();
    let lab = vmigrate::demo::create_lab_datastore(&tmp.join("lab")).await.expect("lab");
    let plan = golden_plan(&lab, &tmp.join("out"));

    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let inventory = source.inventory().await.expect("inventory");
    check("inventory", &wire::inventory(&inventory).expect("doc"), tmp, "rust", bless);
    // The Inventory document reads back as the inventory it came from.
    assert_eq!(wire::parse_inventory(&wire::inventory(&inventory).expect("doc")).expect("parse"), inventory);

    let validation = vmigrate::validate_plan(&plan, None).await.expect("validate");
    check("plan-validation", &wire::plan_validation(&validation).expect("doc"), tmp, "rust", bless);

    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = events.clone();
    let opts = ExecutorOptions {
        status_path: Some(tmp.join("status.json")),
        events: Some(Arc::new(move |e: &Event| {
            if !matches!(e, Event::Disk { .. }) {
                sink.lock().expect("events").push(wire::migration_event(e));
            }
        })),
        ..ExecutorOptions::default()
    };
    let target = vmigrate::targets::open_target(&plan.spec.target).await.expect("target");
    let status = Executor::new(plan, Arc::from(source), Arc::from(target), opts).run().await.expect("run");
    assert_eq!(status.migrated(), 1, "{}", status.summary());
    check("plan-status", &wire::plan_status(&status).expect("doc"), tmp, "rust", bless);
    let events = format!("[{}]", events.lock().expect("events").join(","));
    check("migration-events", &events, tmp, "rust", bless);

    let (src, dst) = (tmp.join("image.raw"), tmp.join("copy.raw"));
    write_image(&src);
    let req = vmigrate::copy::CopyRequest { verify: true, ..Default::default() };
    let prepared =
        vmigrate::copy::prepare_specs(&src.to_string_lossy(), &dst.to_string_lossy(), &req).await.expect("prepare");
    let ctl = CopyControl::new();
    let progress = ctl.progress.clone();
    let stats = prepared.run(ctl).await.expect("copy");
    assert_eq!(std::fs::read(&src).expect("src"), std::fs::read(&dst).expect("dst"));
    check("copy-stats", &wire::copy_stats(&stats).expect("doc"), tmp, "rust", bless);
    check("copy-progress", &wire::copy_progress(&progress.snapshot()), tmp, "rust", bless);
}

/// Every `Kind` has a golden file, so a new document kind cannot ship untested by the bindings.
#[test]
fn every_kind_has_a_golden_file() {
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(golden_dir()).expect("tests/golden") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") || path.ends_with("normalize.json") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        let docs = match v {
            serde_json::Value::Array(items) => items,
            one => vec![one],
        };
        for d in docs {
            assert_eq!(d["apiVersion"], wire::API_VERSION, "{}", path.display());
            seen.insert(d["kind"].as_str().expect("kind").to_string());
        }
    }
    for kind in wire::Kind::ALL {
        assert!(seen.contains(kind.as_str()), "no golden file holds a {} document", kind.as_str());
    }
}
