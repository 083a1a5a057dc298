//! Copy one disk with the engine: `cargo run --example disk_copy -- disk.vmdk disk.raw`.

use vmigrate::core::engine::{copy, CopyControl, CopyOptions};
use vmigrate::transport_url::{open_transport, Role};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (src, dst) = (args.next().ok_or("usage: disk_copy SRC DST")?, args.next().ok_or("usage: disk_copy SRC DST")?);
    let source = open_transport(&src, Role::Source).await?;
    let target = open_transport(&dst, Role::Target { create_size: Some(source.size()) }).await?;
    let stats = copy(source.as_ref(), target.as_ref(), &CopyOptions::default(), &CopyControl::new()).await?;
    println!(
        "{} bytes read, {} written, {} zeroed, in {:?}",
        stats.bytes_read, stats.bytes_written, stats.bytes_zeroed, stats.elapsed
    );
    Ok(())
}
