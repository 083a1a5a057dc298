//! Run a migration plan from Rust: `cargo run --example migrate -- plan.yaml`.

use std::sync::Arc;

use vmigrate::core::executor::{Event, Executor, ExecutorOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "plan.yaml".into());
    let plan = vmigrate::core::Plan::from_file(&path)?;
    let source = vmigrate::sources::open_source(&plan.spec.source).await?;
    let target = vmigrate::targets::open_target(&plan.spec.target).await?;
    let opts = ExecutorOptions {
        events: Some(Arc::new(|e: &Event| {
            if let Event::Plan { summary, .. } = e {
                println!("{summary}");
            }
        })),
        ..Default::default()
    };
    let status = Executor::new(plan, Arc::from(source), Arc::from(target), opts).run().await?;
    println!("{}", status.summary());
    Ok(())
}
