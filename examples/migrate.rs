//! Run a migration plan from Rust: `cargo run --example migrate -- plan.yaml`.
//!
//! The session opens the plan's source and target from their URLs, applies the plan's own
//! options (`verify`, ...), and ends both sessions (vCenter logout) on `close`.

use vmigrate::core::executor::Event;
use vmigrate::session::{Migration, MigrationOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "plan.yaml".into());
    let plan = vmigrate::core::Plan::from_file(&path)?;
    let migration = Migration::open(plan, MigrationOptions::default()).await?;
    let status = migration
        .run(|e| {
            if let Event::Plan { summary, .. } = e {
                println!("{summary}");
            }
        })
        .await;
    migration.close().await?;
    println!("{}", status?.summary());
    Ok(())
}
