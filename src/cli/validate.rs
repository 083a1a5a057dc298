//! `vmigrate validate`.

use std::process::ExitCode;

use vmigrate::core::validate::PlanValidation;
use vmigrate::core::{Error, Inventory, Plan};
use vmigrate::TargetCheck;

use super::{Output, EXIT_BLOCKED};

pub async fn run(plan: &Plan, inventory: Option<&Inventory>, output: Output) -> Result<ExitCode, Error> {
    let (result, check) = vmigrate::validate_plan_with_target(plan, inventory).await?;
    let note = match &check {
        TargetCheck::Checked => format!("target {}: checked (read-only preflight)", plan.spec.target.url),
        TargetCheck::NotACluster => format!("target {}: a local folder, nothing to check", plan.spec.target.url),
        TargetCheck::NotChecked(why) => format!("target {}: NOT checked ({why})", plan.spec.target.url),
    };
    match output {
        Output::Json => {
            println!("{}", vmigrate::wire::plan_validation(&result)?);
            eprintln!("{note}");
        }
        Output::Table => println!("{}{note}", table(&result)),
    }
    Ok(if result.blocked() { ExitCode::from(EXIT_BLOCKED) } else { ExitCode::SUCCESS })
}

/// A plain table: one block per VM, one line per concern.
pub fn table(v: &PlanValidation) -> String {
    let mut out = String::new();
    use super::text::{cell, column, safe};
    let w = column(v.vms.iter().map(|vm| vm.name.as_str()), 2);
    let tw = column(v.vms.iter().map(|vm| vm.target_name.as_str()), 6);
    out.push_str(&format!("{}  {}  {:<8}  CONCERNS\n", cell("VM", w), cell("TARGET", tw), "STATUS"));
    for vm in &v.vms {
        let status = if vm.blocked() { "BLOCKED" } else { "ok" };
        out.push_str(&format!(
            "{}  {}  {:<8}  {}\n",
            cell(&vm.name, w),
            cell(&vm.target_name, tw),
            status,
            vm.concerns.len()
        ));
        for c in &vm.concerns {
            out.push_str(&format!("    {:<8} {:<26} {}\n", c.severity.to_string(), c.id, safe(&c.message)));
        }
    }
    let blocked = v.vms.iter().filter(|vm| vm.blocked()).count();
    out.push_str(&format!("{} VM(s), {} blocked\n", v.vms.len(), blocked));
    out
}
