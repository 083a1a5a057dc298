//! Local command hooks.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::Executor;
use crate::error::{Error, ErrorCode, Result};
use crate::hook::HookInput;
use crate::plan::{HookSpec, HookStep};
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
pub async fn run_local_hook(hook: &HookSpec, input: &HookInput, cancel: &CancellationToken) -> Result<String> {
    let (prog, args) = hook
        .command
        .split_first()
        .ok_or_else(|| Error::new(ErrorCode::PlanInvalid, format!("hook {} has no command", hook.name)))?;
    let timeout = hook.timeout.as_ref().map_or(Duration::from_secs(600), |t| t.get());
    let mut cmd = tokio::process::Command::new(prog);
    cmd.env_clear();
    for k in HOOK_ENV_ALLOWED {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .args(args)
        .envs(input.env())
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
            let input = HookInput {
                hook: hook.name.clone(),
                namespace: self.plan.spec.target_namespace.clone(),
                plan: self.plan.metadata.name.clone(),
                step,
                target_name: tvm.name.clone(),
                vm: tvm.source.clone(),
            };
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
            timeout: timeout.map(|t| crate::plan::Duration::parse(t).expect("a duration")),
        }
    }

    fn input() -> HookInput {
        HookInput {
            hook: "t".into(),
            namespace: "ns".into(),
            plan: "p".into(),
            step: HookStep::Pre,
            target_name: "db".into(),
            vm: crate::model::Vm {
                id: crate::model::VmId { source_ref: "vm-1".into(), ..Default::default() },
                name: "database".into(),
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn hook_gets_json_and_env() {
        let input = input();
        let out = run_local_hook(
            &hook(
                &["sh", "-c", "cat; echo; echo $VMIGRATE_VM $VMIGRATE_VM_ID $VMIGRATE_TARGET_NAME $VMIGRATE_HOOK_STEP $VMIGRATE_PLAN $VMIGRATE_NAMESPACE $VMIGRATE_HOOK"],
                None,
            ),
            &input,
            &CancellationToken::new(),
        )
        .await
        .expect("hook runs");
        let first = out.lines().next().expect("line");
        // Byte for byte what the hook has always read (the JSON itself is pinned in crate::hook).
        assert_eq!(first, serde_json::to_string(&input).expect("json"));
        assert!(
            first.starts_with(r#"{"hook":"t","namespace":"ns","plan":"p","step":"pre","targetName":"db","vm":{"#),
            "{first}"
        );
        assert!(out.contains("database vm-1 db pre p ns t"), "{out}");
    }

    /// Issue 14 item 9: a hook sees only the allowed variables and its context, never the rest
    /// of vmigrate's environment (where the source password lives).
    #[tokio::test]
    async fn hook_environment_is_explicit() {
        let out = run_local_hook(&hook(&["env"], None), &input(), &CancellationToken::new()).await.expect("hook runs");
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
        let err =
            run_local_hook(&hook(&["sh", "-c", "echo boom >&2; exit 7"], None), &input(), &CancellationToken::new())
                .await
                .expect_err("fails");
        assert_eq!(err.code(), ErrorCode::HookFailed);
        assert!(err.to_string().contains("boom"), "{err}");
        let err = run_local_hook(&hook(&["/nonexistent/hook"], None), &input(), &CancellationToken::new())
            .await
            .expect_err("missing");
        assert_eq!(err.code(), ErrorCode::HookFailed);
        let err = run_local_hook(&hook(&["sleep", "5"], Some("200ms")), &input(), &CancellationToken::new())
            .await
            .expect_err("timeout");
        assert!(err.to_string().contains("timed out"));
    }
}
