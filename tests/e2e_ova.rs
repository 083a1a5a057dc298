//! The OVA source end to end through the `vmigrate` binary: `inventory ova://`, a cold
//! `migrate` of a package made by real tools into the output folder (every output disk equal
//! to its source VMDK by `qemu-img compare`, the manifests valid against the official
//! schemas), a warm plan blocked at validation, and a damaged package refused before any disk
//! is written.

mod support;

use std::path::Path;

use support::{manifests, read_status, run_cli, Schemas};
use vmigrate::core::Phase;
use vmigrate_testkit::ova::{build_ova, BuiltOva, OvaSpec};
use vmigrate_testkit::peers::{have, qemu_img_compare};

fn tools() -> bool {
    have("qemu-img") && have("tar") && have("sha256sum")
}

fn package(dir: &Path) -> BuiltOva {
    let mut spec = OvaSpec::new("web01", 8);
    spec.disks_mib = vec![8, 3];
    build_ova(dir, &spec).expect("build the package")
}

fn plan(dir: &Path, ova: &Path, warm: bool) -> std::path::PathBuf {
    let text = format!(
        r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: ova-web
spec:
  source:
    url: "ova://{ova}?datastore=exports"
  target:
    url: "dir://{out}"
  targetNamespace: vmexamples
  warm: {warm}
  skipGuestConversion: true # the test disks hold no guest
  vms:
    - name: web01
  networkMap:
    - source: {{ name: VM Network }}
      destination: {{ type: pod }}
  storageMap:
    - source: {{ name: exports }}
      destination: {{ storageClass: standard }}
"#,
        ova = ova.display(),
        out = dir.join("out").display(),
    );
    let p = dir.join(if warm { "warm.yaml" } else { "plan.yaml" });
    std::fs::write(&p, text).expect("plan");
    p
}

fn image_count(out: &Path) -> usize {
    std::fs::read_dir(out.join("disks")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn inventory_lists_the_package() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = package(dir.path());
    let out =
        run_cli(&["inventory", "--source", &format!("ova://{}", built.ova.display()), "--output", "json"], |_| {});
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(inv["vms"][0]["name"], "web01");
    assert_eq!(inv["vms"][0]["disks"].as_array().map(Vec::len), Some(2));
    assert_eq!(inv["vms"][0]["disks"][0]["capacityBytes"], 8 << 20);
    assert_eq!(inv["vms"][0]["nics"][0]["network"], "VM Network");
    let table = run_cli(&["inventory", "--source", &format!("ova://{}", dir.path().display())], |_| {});
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(String::from_utf8_lossy(&table.stdout).contains("web01"));
}

#[test]
fn a_package_migrates_into_the_output_folder_byte_for_byte() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = package(dir.path());
    let plan_file = plan(dir.path(), &built.ova, false);
    let out = run_cli(&["migrate", "--plan", plan_file.to_str().expect("utf-8"), "--output", "json"], |_| {});
    assert!(
        out.status.success(),
        "migrate failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = read_status(&dir.path().join("ova-web.status.json")).expect("status file");
    assert_eq!(status.summary(), "1 of 1 VMs migrated");
    let vs = &status.vms[0];
    assert_eq!(vs.phase, Phase::Completed, "{:?}", vs.error);
    assert_eq!(vs.disks.len(), 2);
    let outdir = dir.path().join("out");
    for (d, (_, vmdk)) in vs.disks.iter().zip(&built.disks) {
        assert!(d.done && d.copied_bytes == d.total_bytes, "{d:?}");
        let img = outdir.join("disks").join(format!("{}.img", d.volume));
        qemu_img_compare(vmdk, &img).unwrap_or_else(|e| panic!("{}: {e}", d.volume));
    }
    let schemas = Schemas::load();
    let docs = manifests(&outdir.join("manifests.yaml"));
    let mut validated = 0;
    for d in &docs {
        if schemas.check(d).unwrap_or_else(|e| panic!("{} {} invalid:\n{e}", d["kind"], d["metadata"]["name"])) {
            validated += 1;
        }
    }
    assert_eq!(validated, 3, "2 DataVolumes and 1 VirtualMachine: {docs:#?}");
    let vm = docs.iter().find(|d| d["kind"] == "VirtualMachine").expect("vm");
    assert_eq!(vm["metadata"]["name"], "web01");
}

#[test]
fn a_warm_plan_is_blocked_at_validation() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = package(dir.path());
    let plan_file = plan(dir.path(), &built.ova, true);
    let v = run_cli(&["validate", "--plan", plan_file.to_str().expect("utf-8")], |_| {});
    let text = String::from_utf8_lossy(&v.stdout).into_owned() + &String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(3), "{text}");
    assert!(text.to_lowercase().contains("warm"), "{text}");
    let m = run_cli(&["migrate", "--plan", plan_file.to_str().expect("utf-8")], |_| {});
    assert_eq!(m.status.code(), Some(3), "{}", String::from_utf8_lossy(&m.stderr));
    assert_eq!(image_count(&dir.path().join("out")), 0, "a blocked plan wrote disks");
}

#[test]
fn a_damaged_package_is_refused_before_any_disk_is_written() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let built = package(dir.path());
    // One byte of the second disk's grains changed after the manifest was written.
    let mut data = std::fs::read(&built.ova).expect("read");
    let entries = vmigrate::ova::tar::scan(data.as_slice(), data.len() as u64).expect("scan");
    let disk = entries.iter().find(|e| e.name == "web01-disk2.vmdk").expect("disk");
    data[(disk.offset + disk.size - 2000) as usize] ^= 0x10;
    std::fs::write(&built.ova, data).expect("write");
    let plan_file = plan(dir.path(), &built.ova, false);
    let m = run_cli(&["migrate", "--plan", plan_file.to_str().expect("utf-8")], |_| {});
    let err = String::from_utf8_lossy(&m.stdout).into_owned() + &String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(4), "a failed VM: {err}");
    assert!(err.contains("web01-disk2.vmdk") && err.contains("SHA256"), "{err}");
    let status = read_status(&dir.path().join("ova-web.status.json")).expect("status file");
    let e = status.vms[0].error.as_ref().expect("an error");
    assert_eq!(e.name, "VerifyMismatch", "{e:?}");
    assert_eq!(image_count(&dir.path().join("out")), 0, "disks were written from a damaged package");
}
