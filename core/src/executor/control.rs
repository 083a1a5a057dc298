//! Steering a running plan: the in-process [`Controller`] and the control file other
//! processes append cancel / cutover requests to ([`ControlRequests`]), polled by the run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Executor;
use crate::error::{Error, ErrorCode, Result};

/// Thread-safe handle to steer a running plan: cancel it (or one VM), or cut over now.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    pub(super) cancel: CancellationToken,
    vms: Arc<Mutex<BTreeMap<String, CancellationToken>>>,
    pub(super) cutover: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Controller {
    /// Cancel the whole plan.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Cancel one VM (by source name); the others go on. Unknown names are ignored.
    pub fn cancel_vm(&self, name: &str) {
        let token = self.vm_token(name);
        token.cancel();
    }

    /// Warm plans: start the cutover of every VM as soon as its current pass ends.
    pub fn cutover_now(&self) {
        self.cutover.send_replace(true);
    }

    /// Whether the whole plan was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub(super) fn vm_token(&self, name: &str) -> CancellationToken {
        let mut map = self.vms.lock().expect("controller lock is never poisoned by panics in short sections");
        map.entry(name.to_string()).or_insert_with(|| self.cancel.child_token()).clone()
    }
}

/// Requests written by `vmigrate cancel` / `vmigrate migrate --cutover now` for a running plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlRequests {
    /// VM names to cancel; `*` cancels the plan.
    #[serde(default)]
    pub cancel: Vec<String>,
    /// Cut over now.
    #[serde(default)]
    pub cutover: bool,
}

impl ControlRequests {
    /// Read a control file (missing = no requests).
    pub fn load(path: &Path) -> Result<ControlRequests> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::new(ErrorCode::StatusFile, format!("control file {} is corrupt", path.display())).with_source(e)
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ControlRequests::default()),
            Err(e) => Err(Error::io(format!("reading control file {}", path.display()), e)),
        }
    }

    /// Add requests to a control file atomically.
    pub fn append(path: &Path, cancel: Option<&str>, cutover: bool) -> Result<()> {
        let mut cur = ControlRequests::load(path)?;
        if let Some(c) = cancel {
            if !cur.cancel.iter().any(|x| x == c) {
                cur.cancel.push(c.to_string());
            }
        }
        cur.cutover |= cutover;
        let tmp = path.with_extension("tmp");
        crate::safe_fs::write_atomic(path, &tmp, &serde_json::to_vec(&cur).expect("control serializes"), false)
            .map_err(|e| Error::io(format!("writing control file {}", path.display()), e))
    }
}

impl Executor {
    pub(super) fn spawn_control_watch(&self) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.opts.control_path.clone()?;
        let ctl = self.ctl.clone();
        Some(tokio::spawn(async move {
            loop {
                if let Ok(req) = ControlRequests::load(&path) {
                    for name in &req.cancel {
                        if name == "*" {
                            ctl.cancel();
                        } else {
                            ctl.cancel_vm(name);
                        }
                    }
                    if req.cutover {
                        ctl.cutover_now();
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }))
    }
}
