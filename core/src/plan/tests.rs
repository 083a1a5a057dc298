//! Plan parsing and checking tests.

use super::*;

/// The example of the foundation issue, verbatim.
pub(crate) const LAB_PLAN: &str = r#"apiVersion: vmigrate.dev/v1alpha1
kind: Plan
metadata:
  name: move-webapp-vmware
spec:
  source:
    url: https://vcenter.example.com/sdk      # or vmx:///path/to/datastore-folder
    thumbprint: "AB:CD:..."                     # SHA-256 of the server certificate (optional)
    insecure: false
    credentials: { usernameEnv: VMIGRATE_SOURCE_USERNAME, passwordEnv: VMIGRATE_SOURCE_PASSWORD }
  target:
    url: kubevirt://                            # current kubeconfig context; or dir:///path/to/output
  targetNamespace: vmexamples
  warm: false
  vms:
    - name: database
    - name: winweb01
      labels: { env: webapp }                   # added to the VM template's labels
    - name: winweb02
      targetName: winweb02                      # optional override
      labels: { env: webapp }
  networkMap:
    - source: { name: "segment-migrating-to-ocpvirt" }
      destination: { type: pod }                # or { type: multus, name: ns/nad-name }
  storageMap:
    - source: { name: WorkloadDatastore }
      destination: { storageClass: ocs-storagecluster-ceph-rbd-virtualization, volumeMode: Block, accessMode: ReadWriteMany }
  services:                                     # exposure after the move (lab section 3.4)
    - name: webapp
      selector: { env: webapp }
      ports: [{ protocol: TCP, port: 80, targetPort: 80 }]
      route: { name: route-webapp }             # optional: reachable from outside the cluster
    - name: database
      selector: { vm.kubevirt.io/name: database }
      ports: [{ protocol: TCP, port: 3306, targetPort: 3306 }]
  hooks: []
"#;

/// Issue 12: cutover times (the plan's and each VM's own) are RFC 3339, checked when the
/// plan is read rather than at the cutover hours later.
#[test]
fn cutover_times_are_checked_up_front() {
    let warm = LAB_PLAN.replace("warm: false", "warm: true");
    // Times go in as text, the way users write them: `spec.vms[1]` (winweb01) and
    // `spec.options`.
    let at = |vm: &str, plan: &str| {
        let mut text = warm.clone();
        if !vm.is_empty() {
            text =
                text.replacen("    - name: winweb01\n", &format!("    - name: winweb01\n      cutover: {vm:?}\n"), 1);
        }
        if !plan.is_empty() {
            text = text.replacen("  hooks: []\n", &format!("  hooks: []\n  options:\n    cutover: {plan:?}\n"), 1);
        }
        Plan::from_yaml_str(&text)
    };
    let p = at("2026-06-01T02:00:00Z", "2026-06-02T02:00:00Z").expect("valid times");
    // Parsed once, here: the executor only reads the value.
    let vm_at = p.spec.vms[1].cutover.as_ref().expect("the VM's time");
    assert_eq!(vm_at.get(), std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_780_279_200));
    assert_eq!(p.spec.options.cutover.as_ref().map(|t| t.as_str()), Some("2026-06-02T02:00:00Z"));
    // What humantime takes (UTC), so an offset is refused when the plan is read.
    assert!(at("2026-06-01T02:00:00+02:00", "").is_err());
    let e = at("tonight", "").expect_err("a VM's bad time");
    assert_eq!(e.code(), ErrorCode::PlanInvalid);
    assert!(e.to_string().contains("spec.vms[1].cutover") && e.to_string().contains("tonight"), "{e}");
    let e = at("", "2026-13-01T00:00:00Z").expect_err("the plan's bad time");
    assert_eq!(e.code(), ErrorCode::PlanInvalid);
    assert!(e.to_string().contains("spec.options.cutover"), "{e}");
    let p = Plan::from_yaml_str(&warm.replacen(
        "    - name: database\n",
        "    - name: database\n      cutover: \"2026-06-01T02:00:00Z\"\n",
        1,
    ))
    .expect("a VM's cutover field parses");
    assert_eq!(p.spec.vms[0].cutover.as_ref().map(|t| t.as_str()), Some("2026-06-01T02:00:00Z"));
    // Written back as it was read: the plan digest of a status file does not move.
    let again = Plan::from_json_str(&serde_json::to_string(&p).expect("json")).expect("round trip");
    assert_eq!(again, p);
    assert!(serde_json::to_string(&p).expect("json").contains("\"cutover\":\"2026-06-01T02:00:00Z\""));
}

/// Durations are typed when the plan is read: a bad one is `PlanInvalid` naming the field
/// and its line; a good one is written back as it was written.
#[test]
fn plan_durations_are_parsed_when_read() {
    let with = |opts: &str| {
        Plan::from_yaml_str(&LAB_PLAN.replacen("  hooks: []\n", &format!("  hooks: []\n  options:\n{opts}"), 1))
    };
    let p = with("    precopyInterval: 1h30m\n    shutdownTimeout: 45\n").expect("plan");
    assert_eq!(p.spec.options.precopy_interval.get(), std::time::Duration::from_secs(5400));
    assert_eq!(p.spec.options.shutdown_timeout.get(), std::time::Duration::from_secs(45));
    let json = serde_json::to_value(&p.spec.options).expect("json");
    assert_eq!((json["precopyInterval"].as_str(), json["shutdownTimeout"].as_str()), (Some("1h30m"), Some("45")));
    let defaults = Plan::from_yaml_str(LAB_PLAN).expect("plan");
    assert_eq!(defaults.spec.options.precopy_interval.as_str(), "60m");
    assert_eq!(defaults.spec.options.shutdown_timeout.get(), std::time::Duration::from_secs(300));
    for (opts, field) in [
        ("    precopyInterval: soon\n", "spec.options.precopyInterval"),
        ("    shutdownTimeout: 5x\n", "spec.options.shutdownTimeout"),
    ] {
        let e = with(opts).expect_err(opts);
        assert_eq!(e.code(), ErrorCode::PlanInvalid, "{e}");
        assert!(e.to_string().contains(field) && e.to_string().contains("invalid duration"), "{e}");
        assert!(e.to_string().contains("line "), "{e}");
    }
    let hook = "  hooks:\n    - { name: h, step: pre, command: [\"true\"], timeout: 10 minutes }\n";
    let e = Plan::from_yaml_str(&LAB_PLAN.replacen("  hooks: []\n", hook, 1)).expect_err("bad hook timeout");
    assert_eq!(e.code(), ErrorCode::PlanInvalid, "{e}");
    assert!(e.to_string().contains("spec.hooks[0].timeout") && e.to_string().contains("10 minutes"), "{e}");
    // A value of the wrong kind is still a parse error.
    let e = with("    precopyInterval: [1]\n").expect_err("a list");
    assert_eq!(e.code(), ErrorCode::PlanParse, "{e}");
}

/// Issue 14 item 11: hostile plan text is refused quickly and cheaply: deep nesting, alias
/// bombs, oversize files, too many VMs; the name-clash check of a large plan is linear.
#[test]
fn plan_size_depth_and_alias_limits() {
    let head = "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: { name: p }\nspec:\n  source: { url: \"vmx:///d\" }\n  target: { url: \"dir:///o\" }\n  targetNamespace: ns\n";
    let t = std::time::Instant::now();
    let deep = format!("{head}  vms: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let e = Plan::from_yaml_str(&deep).expect_err("deep");
    assert!(e.to_string().contains("nests deeper"), "{e}");
    let bomb = format!(
            "{head}  vms:\n    - name: a\nx: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\ny: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        );
    let e = Plan::from_yaml_str(&bomb).expect_err("alias bomb");
    assert!(e.to_string().contains("anchors"), "{e}");
    let e = Plan::from_yaml_str(&" ".repeat(MAX_PLAN_BYTES + 1)).expect_err("huge");
    assert!(e.to_string().contains("bytes"), "{e}");
    let many: String = (0..MAX_PLAN_VMS + 1).map(|i| format!("    - name: vm{i}\n")).collect();
    let e = Plan::from_yaml_str(&format!("{head}  vms:\n{many}")).expect_err("too many");
    assert_eq!(e.code(), ErrorCode::PlanInvalid);
    // Quoted text and comments with the same characters are fine.
    let ok = format!("{head}  vms:\n    - name: \"a&b *c [[[[\" # &x *y\n");
    Plan::from_yaml_str(&ok).expect("quoted");
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
    // 80,000 names through the clash check.
    let names: Vec<String> = (0..80_000).map(|i| format!("vm{}", i % 40_000)).collect();
    let reqs: Vec<crate::naming::NameRequest<'_>> =
        names.iter().map(|n| crate::naming::NameRequest { source_name: n, identity: n, explicit: None }).collect();
    let t = std::time::Instant::now();
    let out = crate::naming::assign_names(&reqs, &[]);
    assert_eq!(out.len(), 80_000);
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "clash check took {:?}", t.elapsed());
}

/// Issue 14 item 16: a password put in `passwordEnv` by mistake is not echoed.
#[test]
fn a_password_in_password_env_is_not_echoed() {
    let r = CredentialsRef { username_env: "PATH".into(), password_env: "hunter2-Secret!".into() };
    let e = r.resolve().expect_err("no such variable");
    assert_eq!(e.code(), ErrorCode::CredentialsMissing);
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn lab_plan_parses_as_written() {
    let plan = Plan::from_yaml_str(LAB_PLAN).expect("lab plan parses");
    assert_eq!(plan.metadata.name, "move-webapp-vmware");
    assert_eq!(plan.spec.target_namespace, "vmexamples");
    assert_eq!(plan.spec.vms.len(), 3);
    assert_eq!(plan.spec.vms[1].labels.get("env").map(String::as_str), Some("webapp"));
    assert_eq!(plan.spec.network_map[0].destination, NetworkDestination::Pod);
    let st = plan.storage_for("WorkloadDatastore", None).expect("mapped");
    assert_eq!(st.volume_mode, Some(VolumeMode::Block));
    assert_eq!(st.access_mode, Some(AccessMode::ReadWriteMany));
    assert_eq!(plan.spec.services[0].route.as_ref().map(|r| r.name.as_str()), Some("route-webapp"));
    assert_eq!(plan.spec.services[1].selector.get("vm.kubevirt.io/name").map(String::as_str), Some("database"));
    assert_eq!(plan.spec.options, PlanOptions::default());
    // Round trip through YAML and JSON.
    let again = Plan::from_yaml_str(&plan.to_yaml()).expect("round trip yaml");
    assert_eq!(again, plan);
    let json = serde_json::to_string(&plan).expect("json");
    assert_eq!(Plan::from_json_str(&json).expect("round trip json"), plan);
}

#[test]
fn conversion_options_with_forklift_names() {
    let plan = Plan::from_yaml_str(LAB_PLAN).expect("lab plan");
    assert!(!plan.spec.skip_guest_conversion, "guests are converted by default");
    assert!(plan.spec.preserve_static_ips, "static IPs are kept by default");
    assert_eq!(plan.spec.virtio_win, None);
    assert_eq!(plan.spec.vms[0].target_power_state, None);
    let text = LAB_PLAN
            .replace(
                "  warm: false\n",
                "  warm: false\n  skipGuestConversion: true\n  preserveStaticIPs: false\n  virtioWin: /isos/virtio-win.iso\n",
            )
            .replacen("    - name: database\n", "    - name: database\n      rootDisk: /dev/sda2\n      targetPowerState: on\n", 1);
    let plan = Plan::from_yaml_str(&text).expect("conversion options parse");
    assert!(plan.spec.skip_guest_conversion);
    assert!(!plan.spec.preserve_static_ips);
    assert_eq!(plan.spec.virtio_win.as_deref(), Some("/isos/virtio-win.iso"));
    assert_eq!(plan.spec.vms[0].root_disk.as_deref(), Some("/dev/sda2"));
    assert_eq!(plan.spec.vms[0].target_power_state, Some(TargetPowerState::On));
    assert_eq!(Plan::from_yaml_str(&plan.to_yaml()).expect("round trip"), plan);
    // Misspellings and bad values are errors, not silently ignored.
    let typo = LAB_PLAN.replace("  warm: false\n", "  warm: false\n  preserveStaticIps: true\n");
    assert_eq!(Plan::from_yaml_str(&typo).expect_err("typo").code(), ErrorCode::PlanParse);
    let bad = LAB_PLAN.replacen("    - name: database\n", "    - name: database\n      targetPowerState: running\n", 1);
    assert_eq!(Plan::from_yaml_str(&bad).expect_err("bad state").code(), ErrorCode::PlanParse);
    let bad = LAB_PLAN.replacen("    - name: database\n", "    - name: database\n      rootDisk: sda2\n", 1);
    let err = Plan::from_yaml_str(&bad).expect_err("bad root");
    assert!(err.to_string().contains("rootDisk"), "{err}");
}

#[test]
fn unknown_field_names_field_and_line() {
    let text = LAB_PLAN.replace("  warm: false\n", "  warm: false\n  wram: true\n");
    let err = Plan::from_yaml_str(&text).expect_err("unknown field");
    assert_eq!(err.code(), ErrorCode::PlanParse);
    let msg = err.to_string();
    assert!(msg.contains("wram"), "{msg}");
    assert!(msg.contains("line 15"), "{msg}");
}

#[test]
fn unknown_nested_field_and_password_rejected() {
    let text = LAB_PLAN.replace("passwordEnv: VMIGRATE_SOURCE_PASSWORD", "password: hunter2");
    let err = Plan::from_yaml_str(&text).expect_err("password in plan");
    let msg = err.to_string();
    assert!(msg.contains("password"), "{msg}");
    assert!(msg.contains("line 10"), "{msg}");
    assert!(!msg.contains("hunter2"), "secret leaked: {msg}");
}

#[test]
fn json_errors_carry_line_and_column() {
    let err =
        Plan::from_json_str("{\n \"apiVersion\": \"vmigrate.dev/v1alpha1\",\n \"kind\": 3\n}").expect_err("bad type");
    assert_eq!(err.code(), ErrorCode::PlanParse);
    assert!(err.to_string().contains("line 3"), "{err}");
}

#[test]
fn semantic_errors() {
    let cases: &[(&str, &str, &str)] = &[
        ("name: move-webapp-vmware", "name: Move_Webapp", "metadata.name"),
        ("targetNamespace: vmexamples", "targetNamespace: VM Examples", "targetNamespace"),
        (
            "    - name: winweb02\n      targetName: winweb02",
            "    - name: database\n      targetName: winweb02",
            "listed twice",
        ),
        ("targetName: winweb02", "targetName: Win_Web", "targetName"),
        ("{ type: pod }", "{ type: multus, name: \"bad/ns/x\" }", "NetworkAttachmentDefinition"),
        ("port: 3306, targetPort", "port: 0, targetPort", "port 0"),
        ("selector: { env: webapp }", "selector: {}", "selector is empty"),
        ("route: { name: route-webapp }", "route: { name: route-webapp, tls: strange }", "tls"),
        ("apiVersion: vmigrate.dev/v1alpha1", "apiVersion: forklift.konveyor.io/v1beta1", "apiVersion"),
        ("hooks: []", "hooks: [{ name: h, step: pre }]", "needs a command"),
    ];
    for (from, to, want) in cases {
        assert!(LAB_PLAN.contains(from), "fixture lacks {from}");
        let err = Plan::from_yaml_str(&LAB_PLAN.replacen(from, to, 1)).expect_err(want);
        assert_eq!(err.code(), ErrorCode::PlanInvalid, "{want}: {err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

#[test]
fn durations() {
    use std::time::Duration;
    assert_eq!(parse_duration("60m").expect("ok"), Duration::from_secs(3600));
    assert_eq!(parse_duration("1h30m").expect("ok"), Duration::from_secs(5400));
    assert_eq!(parse_duration("45").expect("ok"), Duration::from_secs(45));
    assert_eq!(parse_duration("250ms").expect("ok"), Duration::from_millis(250));
    for bad in ["", "m", "5x", "1h5", "-3s"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn credentials_resolve_and_redact() {
    let r = CredentialsRef { username_env: "VMIGRATE_TEST_U_1".into(), password_env: "VMIGRATE_TEST_P_1".into() };
    let err = r.resolve().expect_err("unset");
    assert_eq!(err.code(), ErrorCode::CredentialsMissing);
    assert!(err.to_string().contains("VMIGRATE_TEST_U_1"));
    let c = Credentials { username: "u".into(), password: "s3cret".into() };
    assert!(!format!("{c:?}").contains("s3cret"));
}
