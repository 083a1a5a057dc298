//! Local command hooks.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::Executor;
use crate::error::{Error, ErrorCode, Result};
use crate::plan::{parse_duration, HookSpec, HookStep};
use crate::provider::TargetVm;

/// Longest hook output kept in an error message.
const OUTPUT_TAIL: usize = 4096;

/// Variables a hook inherits from vmigrate's environment; everything else (the source password
/// in `VMIGRATE_SOURCE_PASSWORD`, `GOVC_PASSWORD`, whatever variables the plan's `credentials`
/// name, cloud tokens) is withheld. A hook needing a secret reads it itself.
pub const HOOK_ENV_ALLOWED: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "TERM", "KUBECONFIG"];

/// Run a command hook with the VM's context as JSON on stdin and as environment variables, in an
/// explicit environment (the allow-list `HOOK_ENV_ALLOWED` plus the `VMIGRATE_*` context variables).
///
/// # Errors
/// [`ErrorCode::HookFailed`] with the tail of the hook's output when it exits non-zero, cannot
/// start, or runs past its timeout (it is killed); [`ErrorCode::Cancelled`] when cancelled.
pub async fn run_local_hook(hook: &HookSpec, input: &serde_json::Value, cancel: &CancellationToken) -> Result<String> {
    let (prog, args) = hook
        .command
        .split_first()
        .ok_or_else(|| Error::new(ErrorCode::PlanInvalid, format!("hook {} has no command", hook.name)))?;
    let timeout = match &hook.timeout {
        Some(t) => parse_duration(t)?,
        None => Duration::from_secs(600),
    };
    let s = |k: &str| input.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let mut cmd = tokio::process::Command::new(prog);
    cmd.env_clear();
    for k in HOOK_ENV_ALLOWED {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .args(args)
        .env("VMIGRATE_PLAN", s("plan"))
        .env("VMIGRATE_NAMESPACE", s("namespace"))
        .env("VMIGRATE_HOOK", &hook.name)
        .env("VMIGRATE_HOOK_STEP", input.get("step").and_then(|v| v.as_str()).unwrap_or_default())
        .env("VMIGRATE_TARGET_NAME", s("targetName"))
        .env("VMIGRATE_VM", input.pointer("/vm/name").and_then(|v| v.as_str()).unwrap_or_default())
        .env("VMIGRATE_VM_ID", input.pointer("/vm/id/sourceRef").and_then(|v| v.as_str()).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::new(ErrorCode::HookFailed, format!("hook {} could not start {prog:?}", hook.name)).with_source(e)
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = serde_json::to_vec(input).expect("hook input serializes");
        // A hook that does not read its stdin is fine: ignore a broken pipe.
        let _ = stdin.write_all(&body).await;
    }
    let out = tokio::select! {
        r = tokio::time::timeout(timeout, child.wait_with_output()) => r,
        _ = cancel.cancelled() => return Err(Error::cancelled()),
    };
    let out = match out {
        Err(_) => {
            return Err(Error::new(ErrorCode::HookFailed, format!("hook {} timed out after {timeout:?}", hook.name)));
        }
        Ok(r) => r.map_err(|e| {
            Error::new(ErrorCode::HookFailed, format!("hook {} failed to run", hook.name)).with_source(e)
        })?,
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let tail = tail(&text, OUTPUT_TAIL);
        return Err(Error::new(
            ErrorCode::HookFailed,
            format!("hook {} exited with {}: {}", hook.name, out.status, tail.trim()),
        ));
    }
    Ok(text)
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

// The plan's hooks of one step for one VM: in the cluster when they name an image, else local.
impl Executor {
    pub(super) async fn hooks(
        &self,
        idx: usize,
        step: HookStep,
        tvm: &TargetVm,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let hooks: Vec<HookSpec> = self
            .plan
            .spec
            .hooks
            .iter()
            .chain(self.plan.spec.vms[idx].hooks.iter())
            .filter(|h| h.step == step)
            .cloned()
            .collect();
        for hook in hooks {
            let input = serde_json::json!({
                "plan": self.plan.metadata.name,
                "namespace": self.plan.spec.target_namespace,
                "step": step,
                "hook": hook.name,
                "targetName": tvm.name,
                "vm": tvm.source,
            });
            if hook.image.is_some() {
                self.target.run_hook(tvm, &hook, &input).await?;
            } else {
                run_local_hook(&hook, &input, cancel).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::HookStep;

    fn hook(cmd: &[&str], timeout: Option<&str>) -> HookSpec {
        HookSpec {
            name: "t".into(),
            step: HookStep::Pre,
            command: cmd.iter().map(|s| s.to_string()).collect(),
            image: None,
            timeout: timeout.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn hook_gets_json_and_env() {
        let input = serde_json::json!({"plan": "p", "namespace": "ns", "step": "pre", "targetName": "db", "vm": {"name": "database", "id": {"sourceRef": "vm-1"}}});
        let out = run_local_hook(
            &hook(
                &["sh", "-c", "cat; echo; echo $VMIGRATE_VM $VMIGRATE_VM_ID $VMIGRATE_TARGET_NAME $VMIGRATE_HOOK_STEP"],
                None,
            ),
            &input,
            &CancellationToken::new(),
        )
        .await
        .expect("hook runs");
        let first: serde_json::Value = serde_json::from_str(out.lines().next().expect("line")).expect("json on stdin");
        assert_eq!(first, input);
        assert!(out.contains("database vm-1 db pre"), "{out}");
    }

    /// Issue 14 item 9: a hook sees only the allowed variables and its context, never the rest
    /// of vmigrate's environment (where the source password lives).
    #[tokio::test]
    async fn hook_environment_is_explicit() {
        let out = run_local_hook(&hook(&["env"], None), &serde_json::json!({}), &CancellationToken::new())
            .await
            .expect("hook runs");
        let names: Vec<&str> = out.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        assert!(!names.is_empty(), "{out}");
        for n in names {
            assert!(HOOK_ENV_ALLOWED.contains(&n) || n.starts_with("VMIGRATE_") || n == "PWD", "hook inherited {n}");
        }
        // The test process has CARGO_* variables (cargo sets them): none reached the hook.
        assert!(std::env::var_os("CARGO_PKG_NAME").is_some() && !out.contains("CARGO_PKG_NAME"));
    }

    #[tokio::test]
    async fn failing_hook_is_typed_with_output() {
        let err = run_local_hook(
            &hook(&["sh", "-c", "echo boom >&2; exit 7"], None),
            &serde_json::json!({}),
            &CancellationToken::new(),
        )
        .await
        .expect_err("fails");
        assert_eq!(err.code(), ErrorCode::HookFailed);
        assert!(err.to_string().contains("boom"), "{err}");
        let err =
            run_local_hook(&hook(&["/nonexistent/hook"], None), &serde_json::json!({}), &CancellationToken::new())
                .await
                .expect_err("missing");
        assert_eq!(err.code(), ErrorCode::HookFailed);
        let err =
            run_local_hook(&hook(&["sleep", "5"], Some("200ms")), &serde_json::json!({}), &CancellationToken::new())
                .await
                .expect_err("timeout");
        assert!(err.to_string().contains("timed out"));
    }
}
