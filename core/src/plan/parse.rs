//! Reading a plan: the cheap checks on its text before parsing, parsing YAML or JSON into a
//! [`Plan`], and the checks of what it says.

use std::collections::HashSet;
use std::path::Path;

use super::{Duration, HookSpec, NetworkDestination, Plan, StorageDestination, API_VERSION};
use crate::error::{Error, ErrorCode, Result};
use crate::naming::{is_dns1123_label, is_dns1123_subdomain};

/// Parse `90`, `90s`, `15m`, `1h`, `1h30m`, `500ms` into a duration (what a plan's durations
/// take, [`Duration`], for command-line options that take the same).
///
/// # Errors
/// [`ErrorCode::PlanInvalid`] naming the text and the accepted forms.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    Duration::parse(text).map(|d| d.get())
}

/// A plan's text that deserializes but holds a value [`Duration`] or
/// [`UtcTime`](super::UtcTime) refuses is [`ErrorCode::PlanInvalid`] (the value is wrong),
/// anything else [`ErrorCode::PlanParse`].
pub(super) fn deser_error(e: impl std::fmt::Display) -> Error {
    let message = e.to_string();
    let code = if crate::times::is_refused_value(&message) { ErrorCode::PlanInvalid } else { ErrorCode::PlanParse };
    Error::new(code, format!("invalid plan: {message}"))
}

impl Plan {
    /// Parse a plan from YAML (JSON is valid YAML too). Errors name the field and the line.
    pub fn from_yaml_str(text: &str) -> Result<Plan> {
        check_text(text, true)?;
        let plan: Plan = serde_yaml_ng::from_str(text).map_err(deser_error)?;
        plan.check()?;
        Ok(plan)
    }

    /// Parse a plan from JSON. Errors name the field, line and column.
    pub fn from_json_str(text: &str) -> Result<Plan> {
        check_text(text, false)?;
        let plan: Plan = serde_json::from_str(text).map_err(deser_error)?;
        plan.check()?;
        Ok(plan)
    }

    /// Read a plan file: `.json` as JSON, anything else as YAML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Plan> {
        let path = path.as_ref();
        // A plan that cannot be read is a plan error (Python: PlanError), not an I/O error of a
        // transport; the cause stays attached.
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(ErrorCode::PlanParse, format!("cannot read plan {}: {e}", path.display())).with_source(e)
        })?;
        let res = if path.extension().is_some_and(|e| e == "json") {
            Plan::from_json_str(&text)
        } else {
            Plan::from_yaml_str(&text)
        };
        res.map_err(|e| {
            let msg = format!("{}: {}", path.display(), e.message());
            Error::new(e.code(), msg)
        })
    }

    /// The plan as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a plan always serializes")
    }

    /// Semantic checks that the schema cannot express. Runs on every parse.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorCode::PlanInvalid, msg));
        if self.api_version != API_VERSION {
            return bad(format!("apiVersion must be {API_VERSION}, not {:?}", self.api_version));
        }
        if self.kind != "Plan" {
            return bad(format!("kind must be Plan, not {:?}", self.kind));
        }
        if !is_dns1123_label(&self.metadata.name) {
            return bad(format!(
                "metadata.name {:?} must be a DNS-1123 label (lower-case a-z, 0-9, '-', at most 63)",
                self.metadata.name
            ));
        }
        let spec = &self.spec;
        if !is_dns1123_label(&spec.target_namespace) {
            return bad(format!("spec.targetNamespace {:?} must be a DNS-1123 label", spec.target_namespace));
        }
        if spec.source.url.trim().is_empty() {
            return bad("spec.source.url is empty".into());
        }
        if spec.target.url.trim().is_empty() {
            return bad("spec.target.url is empty".into());
        }
        if spec.vms.is_empty() {
            return bad("spec.vms is empty: name at least one VM".into());
        }
        if spec.vms.len() > MAX_PLAN_VMS {
            return bad(format!("spec.vms lists {} VMs; at most {MAX_PLAN_VMS} per plan", spec.vms.len()));
        }
        let mut seen = HashSet::new();
        for (i, vm) in spec.vms.iter().enumerate() {
            if vm.name.is_none() && vm.id.is_none() {
                return bad(format!("spec.vms[{i}] needs a name or an id"));
            }
            for (field, v) in [("name", &vm.name), ("id", &vm.id)] {
                if let Some(v) = v {
                    check_name(v, &format!("spec.vms[{i}].{field}"))?;
                }
            }
            if !seen.insert(vm.display().to_string()) {
                return bad(format!("spec.vms[{i}]: VM {:?} is listed twice", vm.display()));
            }
            if let Some(t) = &vm.target_name {
                if !is_dns1123_label(t) {
                    return bad(format!("spec.vms[{i}].targetName {t:?} must be a DNS-1123 label"));
                }
            }
            for hook in &vm.hooks {
                check_hook(hook, &format!("spec.vms[{i}].hooks"))?;
            }
            if let Some(root) = &vm.root_disk {
                let ok = matches!(root.as_str(), "first" | "single")
                    || (root.starts_with("/dev/") && root.len() > 5 && !root.contains(char::is_whitespace));
                if !ok {
                    return bad(format!(
                        "spec.vms[{i}].rootDisk {root:?} must be `first` or a device such as /dev/sda2 or /dev/VG/LV"
                    ));
                }
            }
        }
        for (i, m) in spec.network_map.iter().enumerate() {
            if m.source.name.is_none() && m.source.id.is_none() {
                return bad(format!("spec.networkMap[{i}].source needs a name or an id"));
            }
            if let NetworkDestination::Multus { name } = &m.destination {
                let ok = match name.split_once('/') {
                    Some((ns, n)) => is_dns1123_label(ns) && is_dns1123_subdomain(n),
                    None => is_dns1123_subdomain(name),
                };
                if !ok {
                    return bad(format!(
                        "spec.networkMap[{i}].destination.name {name:?} must be namespace/name of a NetworkAttachmentDefinition"
                    ));
                }
            }
        }
        let pods = spec.network_map.iter().filter(|m| m.destination == NetworkDestination::Pod).count();
        if pods > 1 {
            // Several source networks may map to the pod network, but a VM can only have one
            // pod interface: this is reported per VM by validation, not here.
        }
        for (i, m) in spec.storage_map.iter().enumerate() {
            if m.source.name.is_none() && m.source.id.is_none() {
                return bad(format!("spec.storageMap[{i}].source needs a name or an id"));
            }
            if !is_dns1123_subdomain(&m.destination.storage_class) {
                return bad(format!(
                    "spec.storageMap[{i}].destination.storageClass {:?} is not a valid name",
                    m.destination.storage_class
                ));
            }
        }
        let mut svc_names = HashSet::new();
        for (i, s) in spec.services.iter().enumerate() {
            if !is_dns1123_label(&s.name) {
                return bad(format!("spec.services[{i}].name {:?} must be a DNS-1123 label", s.name));
            }
            if !svc_names.insert(&s.name) {
                return bad(format!("spec.services[{i}]: service {:?} is listed twice", s.name));
            }
            if s.selector.is_empty() {
                return bad(format!("spec.services[{i}].selector is empty: it would select nothing"));
            }
            if s.ports.is_empty() {
                return bad(format!("spec.services[{i}].ports is empty"));
            }
            for (j, p) in s.ports.iter().enumerate() {
                if p.port == 0 || p.target_port == Some(0) {
                    return bad(format!("spec.services[{i}].ports[{j}]: port 0 is not valid"));
                }
                if !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                    return bad(format!("spec.services[{i}].ports[{j}].protocol must be TCP, UDP or SCTP"));
                }
            }
            if s.ports.len() > 1 && s.ports.iter().any(|p| p.name.is_none()) {
                return bad(format!("spec.services[{i}]: every port needs a name when there are several"));
            }
            if let Some(r) = &s.route {
                if !is_dns1123_subdomain(&r.name) {
                    return bad(format!("spec.services[{i}].route.name {:?} is not a valid name", r.name));
                }
                if let Some(t) = &r.tls {
                    if !matches!(t.as_str(), "edge" | "passthrough" | "reencrypt") {
                        return bad(format!("spec.services[{i}].route.tls must be edge, passthrough or reencrypt"));
                    }
                }
            }
        }
        for hook in &spec.hooks {
            check_hook(hook, "spec.hooks")?;
        }
        let o = &spec.options;
        if o.max_in_flight == 0 {
            return bad("spec.options.maxInFlight must be at least 1".into());
        }
        // Durations and cutover times were parsed when the plan was read (`Duration`, `UtcTime`),
        // not first at the cutover hours or days later.
        if let Some(rs) = &o.run_strategy {
            if !matches!(rs.as_str(), "Always" | "Halted" | "Manual" | "RerunOnFailure" | "Once") {
                return bad(format!("spec.options.runStrategy {rs:?} is not a run strategy (Always, Halted, Manual, RerunOnFailure, Once)"));
            }
        }
        if let Some(path) = &spec.virtio_win {
            if path.trim().is_empty() {
                return bad("spec.virtioWin is empty: give the path of the virtio-win ISO or leave it out".into());
            }
        }
        Ok(())
    }

    /// The target storage for a datastore, if mapped.
    pub fn storage_for(&self, datastore: &str, id: Option<&str>) -> Option<&StorageDestination> {
        self.spec.storage_map.iter().find(|m| m.source.matches(datastore, id)).map(|m| &m.destination)
    }

    /// The target network for a source network, if mapped.
    pub fn network_for(&self, network: &str, id: Option<&str>) -> Option<&NetworkDestination> {
        self.spec.network_map.iter().find(|m| m.source.matches(network, id)).map(|m| &m.destination)
    }
}

/// `[A-Z_][A-Z0-9_]*`: the shape of an environment variable name, which a password rarely has.
pub fn looks_like_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase() || f == '_')
        && c.all(|x| x.is_ascii_uppercase() || x.is_ascii_digit() || x == '_')
}

/// Largest plan file accepted (a plan of 10,000 VMs is well under this).
pub const MAX_PLAN_BYTES: usize = 4 << 20;
/// Deepest `[`/`{` nesting accepted in a plan (a real plan needs 4).
pub const MAX_PLAN_DEPTH: usize = 32;
/// Most VMs in one plan.
pub const MAX_PLAN_VMS: usize = 10_000;

/// Cheap checks before a plan is parsed, so that hostile text cannot take minutes or gigabytes:
/// its size, its flow nesting depth, and (YAML) no anchors/aliases, whose expansion is the
/// "billion laughs" bomb. Quoted strings and comments are skipped.
pub(super) fn check_text(text: &str, yaml: bool) -> Result<()> {
    let bad = |msg: String| Err(Error::new(ErrorCode::PlanParse, msg));
    if text.len() > MAX_PLAN_BYTES {
        return bad(format!("the plan is {} bytes; at most {MAX_PLAN_BYTES} are accepted", text.len()));
    }
    let (mut depth, mut quote, mut comment, mut prev) = (0usize, None::<char>, false, ' ');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if comment {
            comment = c != '\n';
        } else if let Some(q) = quote {
            if c == '\\' && q == '"' {
                chars.next();
            } else if c == q {
                quote = None;
            }
        } else {
            match c {
                '"' | '\'' if prev.is_whitespace() || "[{,:".contains(prev) => quote = Some(c),
                '#' if yaml && prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_PLAN_DEPTH {
                        return bad(format!("the plan nests deeper than {MAX_PLAN_DEPTH} levels"));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                '&' | '*'
                    if yaml
                        && (prev.is_whitespace() || "[{,".contains(prev))
                        && chars.peek().is_some_and(|n| n.is_alphanumeric() || *n == '_' || *n == '-') =>
                {
                    return bad("YAML anchors and aliases (&name, *name) are not accepted in plans".into());
                }
                _ => {}
            }
        }
        prev = c;
    }
    Ok(())
}

/// Longest VM name or id accepted (sources allow 80 characters or more).
pub const MAX_NAME_LEN: usize = 1024;

/// A VM name or id from a plan, a VMX or an inventory: at most [`MAX_NAME_LEN`] bytes, no
/// control characters (NUL, terminal escapes). The error quotes only the start of the name.
///
/// # Errors
/// [`ErrorCode::PlanInvalid`] naming `at`.
pub fn check_name(name: &str, at: &str) -> Result<()> {
    let start: String = name.chars().take(40).collect::<String>().escape_debug().to_string();
    if name.len() > MAX_NAME_LEN {
        return Err(Error::new(
            ErrorCode::PlanInvalid,
            format!("{at} is {} bytes long (at most {MAX_NAME_LEN}): \"{start}...\"", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::new(ErrorCode::PlanInvalid, format!("{at} \"{start}\" holds control characters")));
    }
    Ok(())
}

pub(super) fn check_hook(hook: &HookSpec, at: &str) -> Result<()> {
    let bad = |msg: String| Err(Error::new(ErrorCode::PlanInvalid, msg));
    match (hook.command.is_empty(), &hook.image) {
        (true, None) => return bad(format!("{at}: hook {:?} needs a command or an image", hook.name)),
        (false, Some(_)) => return bad(format!("{at}: hook {:?} has both a command and an image", hook.name)),
        _ => {}
    }
    Ok(())
}
