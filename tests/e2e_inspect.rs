//! Inspection before anything moves (issue 13): with guest conversion on, the executor's
//! Validate phase inspects each guest on its source disks (libguestfs inspection,
//! `virt-inspector`, read-only) when the source has them as local files (`vmx://`), records the
//! real OS in the status and refuses, before any copy, a VM whose disks hold no OS virt-v2v can
//! convert (`conversion.unsupported-os`, offering the raw copy).
//!
//! Two VMs of one VMware datastore folder: the Debian host-only guest of
//! `tests/guests/build-guests.sh` and a VM whose disk is blank. Needs guestfs-tools
//! (scripts/test-all.sh installs it); ~2-3 minutes under TCG (two appliance boots).

mod support;

use std::path::Path;
use std::sync::Arc;

use support::guests::{self, DatastoreVm, Firmware, Guest, VmdkFormat};
use support::*;
use vmigrate::core::executor::{Executor, ExecutorOptions};
use vmigrate::core::{ErrorCode, Severity};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_are_inspected_before_anything_moves_and_a_disk_without_an_os_blocks() {
    let set = guests::guests();
    let g = set.get("bios-hostonly");
    let work = tempfile::tempdir().expect("tmp");
    let blank_img = work.path().join("blank.raw");
    std::fs::File::create(&blank_img).and_then(|f| f.set_len(64 << 20)).expect("blank disk");
    let blank = Guest {
        name: "blank".into(),
        image: blank_img,
        firmware: Firmware::Bios,
        hostonly: false,
        marker: String::new(),
        size_bytes: 64 << 20,
    };
    let ds = guests::vmware_datastore(
        work.path(),
        &[
            DatastoreVm { name: "debian-guest", guest: g, format: VmdkFormat::VmfsFlat, index: 3 },
            DatastoreVm { name: "no-os", guest: &blank, format: VmdkFormat::VmfsFlat, index: 4 },
        ],
    );
    let flat = ds.join("debian-guest").join("debian-guest-flat.vmdk");
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).expect("source disk");
    let before = mtime(&flat);
    let out = work.path().join("out");
    let text = guests::boot_plan("inspect", &ds, &out, &[("debian-guest", None), ("no-os", None)], "")
        .replace("  skipGuestConversion: true\n", "  skipGuestConversion: false\n");
    let plan = vmigrate::core::Plan::from_yaml_str(&text).expect("plan");
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let target = vmigrate::targets::open_target(&plan.spec.target).await.expect("target");
    let status = work.path().join("status.json");
    let opts = ExecutorOptions { status_path: Some(status.clone()), ..Default::default() };
    let started = std::time::Instant::now();
    let err = Executor::new(plan, Arc::from(source), Arc::from(target), opts)
        .run()
        .await
        .expect_err("validation must block the VM without an OS");
    eprintln!("validation with inspection took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(err.code(), ErrorCode::ValidationBlocked, "{err:?}");
    assert!(err.message().contains("no-os"), "{err:?}");

    let st = read_status(&status).expect("status written");
    let guest = st.vms.iter().find(|v| v.name == "debian-guest").expect("debian-guest");
    let os = guest.inspection.as_ref().unwrap_or_else(|| panic!("no inspection: {guest:#?}"));
    assert_eq!((os.kind.as_str(), os.distro.as_str(), os.osinfo.as_str()), ("linux", "debian", "debian12"));
    assert!(!guest.concerns.iter().any(|c| c.severity == Severity::Critical), "{:#?}", guest.concerns);
    let no_os = st.vms.iter().find(|v| v.name == "no-os").expect("no-os");
    assert!(no_os.inspection.is_none());
    let c = no_os
        .concerns
        .iter()
        .find(|c| c.id == "conversion.unsupported-os")
        .unwrap_or_else(|| panic!("no conversion.unsupported-os concern: {:#?}", no_os.concerns));
    assert_eq!(c.severity, Severity::Critical);
    assert!(c.message.contains("skipGuestConversion: true"), "the raw copy is offered: {}", c.message);

    // `vmigrate status` says what the guest is.
    let shown = run_cli(&["status", "--status", status.to_str().expect("utf-8")], |_| {});
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("guest debian12 (inspected before the copy)"), "{text}");

    // Nothing moved: no disk was copied, no VM written, the source untouched.
    let copied: Vec<_> = std::fs::read_dir(out.join("disks")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(copied.is_empty(), "{copied:?}");
    assert!(
        !out.join("manifests.yaml").exists()
            || !std::fs::read_to_string(out.join("manifests.yaml")).expect("read").contains("VirtualMachine")
    );
    assert_eq!(mtime(&flat), before);
}
