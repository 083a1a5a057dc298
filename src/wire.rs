//! The wire format: every JSON document the C API and the Python package hand out, in one place.
//!
//! Each document is the serde form of a core type wrapped with two leading keys, as Kubernetes
//! objects and our own plan format carry them: `apiVersion` ([`API_VERSION`]) and `kind` (a
//! [`Kind`]). The rest of the keys are exactly what they were before versioning, so existing
//! consumers keep working. Within one `apiVersion` documents only gain fields; removing or
//! changing the meaning of a field needs a new `apiVersion` (see `docs/wire-format.md`).
//!
//! The C API (`ffi/`) and the Python module (`python/`) both call these functions, so the two
//! bindings cannot drift apart; the golden files in `tests/golden/` pin every kind.

use serde::Serialize;
use vmigrate_core::engine::{CopyStats, ProgressSnapshot};
use vmigrate_core::executor::Event;
use vmigrate_core::validate::PlanValidation;
use vmigrate_core::{Error, ErrorCode, Inventory, PlanStatus, Result};

/// The `apiVersion` of every document: the same group and version as the plan format
/// (`vmigrate.dev/v1alpha1`), because the documents describe the same model (VMs, disks, phases)
/// the plan refers to, and that model is not yet frozen (issue 15 makes it provider-neutral).
/// One version for inputs and outputs means a user reads one number to know what they speak.
pub const API_VERSION: &str = "vmigrate.dev/v1alpha1";

/// What a document is: its `kind` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Kind {
    /// A source's VMs, networks, datastores and hosts (`vmigrate_source_inventory`,
    /// `Source.inventory`).
    Inventory,
    /// The validation of a plan, with `blocked` (`vmigrate_plan_validate`, `Plan.validate`).
    PlanValidation,
    /// The status of a plan run, as the status file holds it (`vmigrate_status_load`,
    /// `vmigrate_migration_run`/`_status`, `load_status`, `Plan.run`).
    PlanStatus,
    /// What a finished disk copy did (`vmigrate_copy_disk*`, `copy_disk`).
    CopyStats,
    /// One progress tick of a disk copy (`{"event": "copy", ...}`).
    CopyProgress,
    /// One event of a plan run (`{"event": "plan" | "phase" | "disk" | "vmDone", ...}`); the
    /// CLI's event stream (`vmigrate migrate --output json`) ends with `"event": "status"` (or
    /// `"blocked"`) carrying the final status.
    MigrationEvent,
    /// What `vmigrate copy --output json` prints at the end: the copy's counters, rates and
    /// digests with its source and target.
    CopySummary,
}

impl Kind {
    /// Every kind, in the order of the golden files.
    pub const ALL: [Kind; 7] = [
        Kind::Inventory,
        Kind::PlanValidation,
        Kind::PlanStatus,
        Kind::CopyStats,
        Kind::CopyProgress,
        Kind::MigrationEvent,
        Kind::CopySummary,
    ];

    /// The `kind` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inventory => "Inventory",
            Kind::PlanValidation => "PlanValidation",
            Kind::PlanStatus => "PlanStatus",
            Kind::CopyStats => "CopyStats",
            Kind::CopyProgress => "CopyProgress",
            Kind::MigrationEvent => "MigrationEvent",
            Kind::CopySummary => "CopySummary",
        }
    }
}

fn internal(kind: Kind, e: serde_json::Error) -> Error {
    Error::new(ErrorCode::Internal, format!("serializing a {} document", kind.as_str())).with_source(e)
}

/// `apiVersion` and `kind` in front of a body's own keys. The body's text is kept byte for byte
/// (its keys in the order earlier releases wrote them), so the change is purely additive even
/// for consumers that matched on text.
fn document(kind: Kind, body: String) -> String {
    let head = format!(r#"{{"apiVersion":"{API_VERSION}","kind":"{}""#, kind.as_str());
    match body.strip_prefix('{').map(str::trim_start) {
        Some(rest) if rest.starts_with('}') => format!("{head}}}"),
        Some(rest) => format!("{head},{rest}"),
        // Not an object: cannot happen for these types; keep the body whole rather than lose it.
        None => format!(r#"{head},"value":{body}}}"#),
    }
}

/// The body as a JSON object with sorted keys (what the bindings wrote for these documents before
/// versioning), with `extra` keys added.
fn sorted<T: Serialize>(kind: Kind, body: &T, extra: &[(&str, serde_json::Value)]) -> Result<String> {
    let mut value = serde_json::to_value(body).map_err(|e| internal(kind, e))?;
    if let Some(map) = value.as_object_mut() {
        for (k, v) in extra {
            map.insert((*k).to_string(), v.clone());
        }
    }
    Ok(document(kind, value.to_string()))
}

/// The body in its type's field order (inventory and status, as before versioning).
fn ordered<T: Serialize>(kind: Kind, body: &T) -> Result<String> {
    Ok(document(kind, serde_json::to_string(body).map_err(|e| internal(kind, e))?))
}

/// The `Inventory` document.
///
/// # Errors
/// `Internal` if serde fails (it does not for these types).
pub fn inventory(inventory: &Inventory) -> Result<String> {
    ordered(Kind::Inventory, inventory)
}

/// The `PlanValidation` document: `blocked` (any VM has a critical concern) and `vms`.
///
/// # Errors
/// `Internal` if serde fails.
pub fn plan_validation(validation: &PlanValidation) -> Result<String> {
    sorted(Kind::PlanValidation, validation, &[("blocked", validation.blocked().into())])
}

/// The `PlanStatus` document.
///
/// # Errors
/// `Internal` if serde fails.
pub fn plan_status(status: &PlanStatus) -> Result<String> {
    ordered(Kind::PlanStatus, status)
}

/// The `CopyStats` document.
///
/// # Errors
/// `Internal` if serde fails.
pub fn copy_stats(stats: &CopyStats) -> Result<String> {
    sorted(Kind::CopyStats, stats, &[])
}

/// The `CopyProgress` document: `{"event": "copy", ...counters}`. Never fails: serde does not
/// fail for these counters, and a tick that could not be written is better empty than a
/// stopped copy.
pub fn copy_progress(progress: &ProgressSnapshot) -> String {
    sorted(Kind::CopyProgress, progress, &[("event", "copy".into())]).unwrap_or_default()
}

/// The `MigrationEvent` document of one executor event. Never fails (as [`copy_progress`]).
pub fn migration_event(event: &Event) -> String {
    sorted(Kind::MigrationEvent, event, &[]).unwrap_or_default()
}

/// The last line of the CLI's event stream (`vmigrate migrate --output json`): a
/// `MigrationEvent` document `{"event": "status", "status": {...}}`, or `"event": "blocked"` when
/// validation blocked the plan (the status then holds the concerns). The nested status is the
/// bare model, as it was before versioning: the line's own `apiVersion` covers it.
///
/// # Errors
/// `Internal` if serde fails.
pub fn migration_end(status: &PlanStatus, blocked: bool) -> Result<String> {
    #[derive(Serialize)]
    struct End<'a> {
        event: &'static str,
        status: &'a PlanStatus,
    }
    let end = End { event: if blocked { "blocked" } else { "status" }, status };
    ordered(Kind::MigrationEvent, &end)
}

/// What `vmigrate copy` did, as `--output json` prints it (the `CopySummary` document).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopySummary {
    /// The source as given.
    pub source: String,
    /// The target as given.
    pub target: String,
    /// The source's size in bytes.
    pub size: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Bytes zeroed at the target (holes and zero runs).
    pub bytes_zeroed: u64,
    /// Bytes left alone (already zero at a fresh target, or done before a resume).
    pub bytes_skipped: u64,
    /// Wall time of the copy.
    pub seconds: f64,
    /// Bytes read from the source per second, in MiB: what actually moved.
    pub moved_mib_per_sec: f64,
    /// Virtual bytes processed per second, in MiB (holes and skipped zeroes count: how fast the
    /// disk was finished, not a transfer rate).
    pub virtual_mib_per_sec: f64,
    /// Whether the copy resumed from a checkpoint.
    pub resumed: bool,
    /// The source's digest when verified.
    pub source_digest: Option<String>,
    /// The target's digest when verified.
    pub target_digest: Option<String>,
}

/// The `CopySummary` document (keys in the order the CLI printed them before versioning).
///
/// # Errors
/// `Internal` if serde fails.
pub fn copy_summary(summary: &CopySummary) -> Result<String> {
    ordered(Kind::CopySummary, summary)
}

/// Read an inventory handed back by a caller (C's `inventory_json`, Python's `validate`): the
/// `Inventory` document as [`inventory`] writes it, or the bare model of earlier releases.
///
/// # Errors
/// `InvalidArgument` when the text is not an inventory, names another `kind`, or an
/// `apiVersion` this library does not speak.
pub fn parse_inventory(text: &str) -> Result<Inventory> {
    let invalid = |msg: String| Error::new(ErrorCode::InvalidArgument, msg);
    let mut value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("the inventory is not JSON: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        if let Some(version) = map.remove("apiVersion") {
            if version.as_str() != Some(API_VERSION) {
                return Err(invalid(format!("the inventory's apiVersion {version} is not {API_VERSION}")));
            }
        }
        if let Some(kind) = map.remove("kind") {
            if kind.as_str() != Some(Kind::Inventory.as_str()) {
                return Err(invalid(format!("expected an Inventory document, got kind {kind}")));
            }
        }
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("the text is not an inventory: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_lead_with_version_and_kind_and_keep_their_keys() {
        let text = inventory(&Inventory::default()).expect("ok");
        let v: serde_json::Value = serde_json::from_str(&text).expect("ok");
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["kind"], "Inventory");
        assert!(v["vms"].is_array());
        assert!(text.starts_with(r#"{"apiVersion":"vmigrate.dev/v1alpha1","kind":"Inventory","#), "{text}");
        // The body is what earlier releases wrote, byte for byte, after the two new keys.
        let bare = serde_json::to_string(&Inventory::default()).expect("ok");
        assert_eq!(&text[text.find(",\"vms\"").expect("vms")..], &format!(",{}", &bare[1..]));
        assert_eq!(
            document(Kind::CopyStats, "{}".into()),
            r#"{"apiVersion":"vmigrate.dev/v1alpha1","kind":"CopyStats"}"#
        );
    }

    #[test]
    fn an_inventory_document_reads_back_and_foreign_versions_are_refused() {
        let text = inventory(&Inventory::default()).expect("ok");
        assert_eq!(parse_inventory(&text).expect("ok"), Inventory::default());
        assert_eq!(parse_inventory(r#"{"vms": []}"#).expect("ok"), Inventory::default());
        let other = text.replace("v1alpha1", "v2");
        assert_eq!(parse_inventory(&other).expect_err("refused").code(), ErrorCode::InvalidArgument);
        let wrong_kind = text.replace("\"Inventory\"", "\"PlanStatus\"");
        assert_eq!(parse_inventory(&wrong_kind).expect_err("refused").code(), ErrorCode::InvalidArgument);
    }
}
