//! Bad plans through the `vmigrate migrate` CLI against vcsim: each fails with its documented
//! exit code and a message that names the problem, never a secret, and changes nothing.

mod support;

use std::path::PathBuf;
use std::process::Output;

use support::*;
use vmigrate::core::model::PowerState;
use vmigrate::vsphere::vcsim::Vcsim;

struct Case {
    sim: Vcsim,
    env: CredEnv,
    dir: tempfile::TempDir,
}

impl Case {
    fn new(tag: &str) -> Case {
        Case { sim: start_vcsim(1 << 20), env: CredEnv::new(tag), dir: tempfile::tempdir().expect("tmp") }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn plan(&self, vms: &[&str]) -> String {
        vcsim_plan("bad", &self.sim, &self.env, &format!("dir://{}", self.out().display()), vms, false, "")
    }

    /// Run `vmigrate migrate` on `text`; `creds` picks which credential variables the child gets.
    fn migrate(&self, text: &str, creds: &[(&str, &str)]) -> (Option<i32>, String, String) {
        let plan = self.dir.path().join("plan.yaml");
        std::fs::write(&plan, text).expect("plan");
        let out: Output = run_cli(&["migrate", "--plan", plan.to_str().expect("utf-8")], |c| {
            c.env_remove(&self.env.user).env_remove(&self.env.pass);
            for (k, v) in creds {
                c.env(k, v);
            }
        });
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn creds(&self) -> Vec<(&str, &str)> {
        vec![(self.env.user.as_str(), self.sim.username.as_str()), (self.env.pass.as_str(), self.sim.password.as_str())]
    }

    /// Nothing was written at the target and the running VM was not touched.
    fn assert_untouched(&self) {
        let disks = self.out().join("disks");
        let n = std::fs::read_dir(&disks).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "disk images written for a plan that should not run");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let src = connect(&self.sim).await;
            let vm = find_vm(&src, "database_running").await;
            assert_eq!(vm.power_state, PowerState::PoweredOn);
            assert!(vm.snapshots.is_empty());
        });
    }
}

#[test]
fn unknown_vm_is_blocked_by_validation_with_exit_3() {
    let c = Case::new("bad_unknown");
    let (code, _, err) = c.migrate(&c.plan(&["database_running", "no-such-vm"]), &c.creds());
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("vm.not-found") && err.contains("no-such-vm"), "{err}");
    assert!(err.contains("ValidationBlocked") || err.contains("validation blocks"), "{err}");
    c.assert_untouched();
}

#[test]
fn unmapped_network_is_blocked_with_exit_3() {
    let c = Case::new("bad_network");
    let text = c
        .plan(&["database_running"])
        .replace(&format!("- source: {{ name: {NETWORK} }}"), "- source: { name: some-other-segment }");
    assert!(text.contains("some-other-segment"));
    let (code, _, err) = c.migrate(&text, &c.creds());
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("network.unmapped") && err.contains(NETWORK), "{err}");
    c.assert_untouched();
}

#[test]
fn missing_credentials_variable_is_named_with_exit_1() {
    let c = Case::new("bad_creds");
    // The user name is there, the password variable is not.
    let (code, _, err) = c.migrate(&c.plan(&["database_running"]), &[(c.env.user.as_str(), c.sim.username.as_str())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CredentialsMissing") && err.contains(&c.env.pass), "{err}");
    assert!(!err.contains(&c.sim.password));
    c.assert_untouched();
}

#[test]
fn unreachable_source_is_a_connect_error_with_exit_1() {
    let c = Case::new("bad_unreachable");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let text = c.plan(&["database_running"]).replace(&c.sim.url, &format!("https://127.0.0.1:{port}/sdk"));
    let (code, _, err) = c.migrate(&text, &c.creds());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error[SourceConnect]") && err.contains(&port.to_string()), "{err}");
    assert!(!err.contains(&c.sim.password));
    c.assert_untouched();
}

#[test]
fn wrong_password_is_invalid_login_with_exit_1_and_no_secret() {
    let c = Case::new("bad_password");
    let wrong = "Not-The-Pa55word-42";
    let (code, out, err) = c.migrate(
        &c.plan(&["database_running"]),
        &[(c.env.user.as_str(), c.sim.username.as_str()), (c.env.pass.as_str(), wrong)],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error[SourceInvalidLogin]"), "{err}");
    assert!(!err.contains(wrong) && !out.contains(wrong), "the password leaked: {err}");
    c.assert_untouched();
}

/// `validate` without `--inventory` and without credentials says how to validate offline.
#[test]
fn validate_without_credentials_points_at_inventory() {
    let dir = tempfile::tempdir().expect("tmp");
    let plan = dir.path().join("plan.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/plan.yaml")).expect("plan");
    std::fs::write(&plan, text.replace("VMIGRATE_SOURCE_USERNAME", "VMIGRATE_TEST_NO_SUCH_USER")).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["validate", "--plan"])
        .arg(&plan)
        .env_remove("VMIGRATE_TEST_NO_SUCH_USER")
        .output()
        .expect("run validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CredentialsMissing") && err.contains("--inventory"), "{err}");
}
