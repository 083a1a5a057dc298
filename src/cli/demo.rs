//! `vmigrate demo`: the lab's migration, end to end, with no vCenter and no cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use vmigrate::core::engine::{self, CopyOptions};
use vmigrate::core::file::{FileOptions, FileTransport};
use vmigrate::core::naming::{is_dns1123_label, sanitize_name};
use vmigrate::core::{Error, Phase};
use vmigrate::demo;
use vmigrate::session::{Migration, MigrationOptions};

use super::progress::{self, Mode};
use super::Output;

/// Options of `vmigrate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Work folder: the datastore, the plan, its status and the output land here (recreated).
    #[arg(long, default_value = "vmigrate-demo")]
    pub workdir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

pub async fn run(args: DemoArgs) -> Result<ExitCode, Error> {
    let started = Instant::now();
    let json = args.output == Output::Json;
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    let work = std::path::absolute(&args.workdir).map_err(|e| Error::io("resolving the work folder", e))?;
    for sub in ["datastore", "output"] {
        let p = work.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(format!("clearing {}", p.display()), e))?;
        }
    }
    let _ = std::fs::remove_file(work.join("move-webapp-vmware.status.json"));
    say(format!("== 1. A VMware datastore with the lab's application: {}", work.join("datastore").display()));
    let ds = demo::create_lab_datastore(&work.join("datastore")).await?;
    let source_url = format!("vmx://{}", ds.display());
    let target_url = format!("dir://{}", work.join("output").display());
    let plan = demo::lab_plan(&source_url, &target_url);
    let plan_path = work.join("plan.yaml");
    std::fs::write(&plan_path, plan.to_yaml()).map_err(|e| Error::io("writing plan.yaml", e))?;

    let source = vmigrate::sources::open_source(&plan.spec.source).await?;
    let inventory = source.inventory().await?;
    say(format!("\n== 2. Inventory ({} VMs)", inventory.vms.len()));
    say(format!(
        "{:<20} {:<24} {:<5} {:>4} {:>8} {:>5} {:>8}  {}",
        "VM", "GUEST", "FW", "CPU", "MEM MiB", "DISKS", "DISK GiB", "TARGET NAME"
    ));
    for vm in &inventory.vms {
        let target =
            if is_dns1123_label(&vm.name) { vm.name.clone() } else { format!("{} (renamed)", sanitize_name(&vm.name)) };
        say(format!(
            "{:<20} {:<24} {:<5} {:>4} {:>8} {:>5} {:>8}  {}",
            vm.name,
            vm.guest_id,
            format!("{:?}", vm.firmware).to_lowercase(),
            vm.vcpus(),
            vm.memory_mib,
            vm.disks.len(),
            format!("{:.1}", vm.total_disk_bytes() as f64 / (1u64 << 30) as f64),
            target
        ));
    }
    say(format!("\n== 3. Validation of plan {} ({})", plan.metadata.name, plan_path.display()));
    let validation = vmigrate::validate_plan(&plan, None).await?;
    if !json {
        print!("{}", super::validate::table(&validation));
    }

    say(format!("\n== 4. Migration into namespace {} (target {})", plan.spec.target_namespace, target_url));
    say("   Guest conversion (virt-v2v) is skipped: the demo's disks hold test patterns, not bootable guests \
         (the plan sets skipGuestConversion: true; see docs/conversion.md)."
        .to_string());
    let target = vmigrate::targets::open_target(&plan.spec.target).await?;
    let status_path = work.join("move-webapp-vmware.status.json");
    let display = progress::display(if json { Mode::Json } else { Mode::pick(Output::Table) }, plan.spec.vms.len());
    let opts = MigrationOptions::default().status_path(status_path);
    let migration = Migration::with_providers(plan.clone(), Arc::from(source), Arc::from(target), opts);
    let status = migration.run(|e| (display.sink)(e)).await;
    display.finish();
    migration.close_quietly().await;
    let status = status?;
    say(status.summary());

    say("\n== 5. Verification: every output disk against its source (digest: sha256 of the size and of every 4 MiB chunk's sha256)".to_string());
    let source = vmigrate::sources::open_source(&plan.spec.source).await?;
    let out = vmigrate::kubevirt::DirTarget::from_url(&target_url)?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let opts = CopyOptions::default();
    let mut all_equal = true;
    let mut checks = Vec::new();
    for vs in &status.vms {
        let vm = inventory.vms.iter().find(|v| v.id.source_ref == vs.source_id).ok_or_else(|| {
            Error::new(vmigrate::core::ErrorCode::VmNotFound, format!("{} missing from the inventory", vs.name))
        })?;
        for d in &vs.disks {
            let disk = vm.disks.iter().find(|x| x.key == d.key).expect("status disks come from the VM");
            let src = source.open_disk(&vm.id, disk, None).await?;
            let path = out.disk_path(&d.volume);
            let dst = FileTransport::open(&path, FileOptions::default()).await?;
            let a = engine::digest(src.as_ref(), &opts, &cancel).await?;
            let b = engine::digest(&dst, &opts, &cancel).await?;
            let equal = a == b && vs.phase == Phase::Completed;
            all_equal &= equal;
            say(format!("  {} {:<28} sha256-4MiB-tree {}", if equal { "ok  " } else { "DIFF" }, d.volume, &a[..16]));
            checks.push(serde_json::json!({"vm": vs.name, "volume": d.volume, "path": path, "sourceDigest": a, "targetDigest": b, "equal": equal}));
        }
    }
    let manifests = out.documents();
    say(format!("\n== 6. Objects in {}", out.manifests_path().display()));
    for doc in &manifests {
        let kind = doc.get("kind").and_then(|v| v.as_str()).unwrap_or("?");
        let name = doc.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or("?");
        say(format!("  {kind:<16} {name}"));
    }
    say(format!(
        "\nDone in {:.1}s: {}. Next steps: {}",
        started.elapsed().as_secs_f64(),
        status.summary(),
        out.root().join("NEXT-STEPS.txt").display()
    ));
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "demo", "workdir": work, "status": status, "verification": checks, "objects": manifests.len(), "seconds": started.elapsed().as_secs_f64()})
        );
    }
    Ok(if all_equal && status.migrated() == status.vms.len() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
