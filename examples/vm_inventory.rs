//! List a source's VMs: `cargo run --example vm_inventory -- vmx:///path/to/datastore`.

use vmigrate::core::plan::SourceSpec;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "vmx:///vmfs/volumes/datastore1".into());
    let source = vmigrate::sources::open_source(&SourceSpec { url, ..Default::default() }).await?;
    for vm in source.inventory().await?.vms {
        println!("{:<24} {:<26} {} disk(s), {} MiB", vm.name, vm.guest_id, vm.disks.len(), vm.memory_mib);
    }
    Ok(())
}
