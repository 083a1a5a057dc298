//! Concerns: what validation, preflight checks and guest inspection find about a VM.
//!
//! A concern is plain data that every layer produces (validation rules, a target's
//! [`preflight`](crate::TargetProvider::preflight), the executor's guest inspection) and the
//! status file keeps, so it lives apart from any of them: the provider traits and the
//! validation rules both use it without depending on each other.

use serde::{Deserialize, Serialize};

/// How bad a concern is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information; nothing to do.
    Info,
    /// Migration proceeds, but something may not work as before.
    Warning,
    /// The VM cannot be migrated until this is fixed.
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// One finding about a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concern {
    /// Stable id, e.g. `cdrom.iso-connected`.
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
}

impl Concern {
    /// A concern.
    pub fn new(id: &str, severity: Severity, message: impl Into<String>) -> Self {
        Concern { id: id.to_string(), severity, message: message.into() }
    }
}
