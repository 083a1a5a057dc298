//! Binding a status file to the plan it was written for.
//!
//! A status file says which VMs are done. Trusted for another plan (same `metadata.name`, other
//! target, VMs or source), it would report VMs "completed" that were never copied there. So the
//! status records a digest of everything in the plan that changes what is copied or created —
//! name, source URL, target URL, namespace, VMs, maps, services, warm/cold and the options that
//! shape the output — and a resume with another digest is refused with
//! [`ErrorCode::StatusPlanMismatch`], naming both targets. Settings that only steer *how* a run
//! goes (credentials, TLS pins, hooks, parallelism, cutover time, precopy interval, shutdown
//! timeout) are left out, so they can change between a stop and a resume.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::plan::Plan;
use crate::status::PlanStatus;

/// Keys of the plan's `spec` (JSON, camelCase) left out of the digest: see the module docs.
const IGNORED: &[&[&str]] = &[
    &["source", "thumbprint"],
    &["source", "caFile"],
    &["source", "insecure"],
    &["source", "credentials"],
    &["source", "vddkLibDir"],
    &["hooks"],
    &["options", "maxInFlight"],
    &["options", "cutover"],
    &["options", "precopyInterval"],
    &["options", "shutdownTimeout"],
    &["options", "inspectGuests"],
];

/// `sha256:<hex>` of the plan's name and the parts of its spec that change what is copied.
pub fn plan_digest(plan: &Plan) -> String {
    let mut spec = serde_json::to_value(&plan.spec).unwrap_or(Value::Null);
    for path in IGNORED {
        remove(&mut spec, path);
    }
    let mut text = String::new();
    canonical(&Value::Array(vec![Value::String(plan.metadata.name.clone()), spec]), &mut text);
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// Where the plan writes, for messages: `<target url>, namespace <ns>`.
pub fn target_label(plan: &Plan) -> String {
    format!("{}, namespace {}", plan.spec.target.url, plan.spec.target_namespace)
}

/// Refuse to resume `old` (read from `path`) for `plan` when it was written for another plan.
/// A status file from before digests were recorded is accepted (with a warning) when its name
/// and VM list match, as before.
///
/// # Errors
/// [`ErrorCode::StatusPlanMismatch`] naming the status file, both plans' targets and digests.
pub fn check(old: &PlanStatus, plan: &Plan, path: &Path) -> Result<()> {
    let digest = plan_digest(plan);
    match &old.plan_digest {
        Some(d) if *d == digest => Ok(()),
        Some(d) => Err(Error::new(
            ErrorCode::StatusPlanMismatch,
            format!(
                "status file {} was written for another version of plan {:?} (target {}, {d}); this plan (target {}, {digest}) differs in what it copies: remove the status file or pass another --status",
                path.display(),
                old.plan,
                old.target.as_deref().unwrap_or("unknown"),
                target_label(plan),
            ),
        )),
        None => {
            tracing::warn!(path = %path.display(), "status file has no plan digest (older vmigrate); resuming by name");
            Ok(())
        }
    }
}

fn remove(v: &mut Value, path: &[&str]) {
    match path {
        [] => {}
        [last] => {
            if let Value::Object(m) = v {
                m.remove(*last);
            }
        }
        [first, rest @ ..] => {
            if let Some(child) = v.get_mut(*first) {
                remove(child, rest);
            }
        }
    }
}

/// JSON with object keys sorted, whatever map order serde_json was built with.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata: { name: p }
spec:
  source: { url: "vmx:///srv/ds" }
  target: { url: "dir:///out/a" }
  targetNamespace: ns
  vms: [ { name: db } ]
  options: { maxInFlight: 2 }
"#;

    #[test]
    fn digest_follows_what_is_copied_only() {
        let a = Plan::from_yaml_str(PLAN).expect("plan");
        let d = plan_digest(&a);
        assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
        assert_eq!(plan_digest(&Plan::from_yaml_str(PLAN).expect("plan")), d, "stable");
        let how = Plan::from_yaml_str(&PLAN.replace("maxInFlight: 2", "maxInFlight: 7")).expect("plan");
        assert_eq!(plan_digest(&how), d, "parallelism does not change what is copied");
        for (from, to) in [
            ("dir:///out/a", "dir:///out/b"),
            ("vmx:///srv/ds", "vmx:///srv/other"),
            ("targetNamespace: ns", "targetNamespace: other"),
            ("name: db }", "name: web }"),
            ("name: p }", "name: q }"),
        ] {
            let other = Plan::from_yaml_str(&PLAN.replace(from, to)).expect("plan");
            assert_ne!(plan_digest(&other), d, "{from} -> {to}");
        }
    }

    #[test]
    fn check_refuses_another_plan_and_names_both() {
        let a = Plan::from_yaml_str(PLAN).expect("plan");
        let b = Plan::from_yaml_str(&PLAN.replace("dir:///out/a", "dir:///out/b")).expect("plan");
        let st = PlanStatus {
            plan: "p".into(),
            warm: false,
            started: None,
            completed: None,
            vms: vec![],
            plan_digest: Some(plan_digest(&a)),
            target: Some(target_label(&a)),
        };
        check(&st, &a, Path::new("s.json")).expect("same plan");
        let e = check(&st, &b, Path::new("s.json")).expect_err("other target");
        assert_eq!(e.code(), ErrorCode::StatusPlanMismatch);
        let msg = e.to_string();
        assert!(msg.contains("dir:///out/a") && msg.contains("dir:///out/b") && msg.contains("s.json"), "{msg}");
    }
}
