//! VM tasks (power, snapshots, change tracking), changed-block queries, and waiting for a task
//! or property change through a private PropertyCollector.

use std::time::{Duration, Instant};

use super::*;

/// The answer of `QueryChangedDiskAreas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChangeInfo {
    /// Start of the covered range.
    pub start_offset: u64,
    /// Length of the covered range.
    pub length: u64,
    /// Changed (or allocated) areas `(start, length)`.
    pub areas: Vec<(u64, u64)>,
}
impl Client {
    async fn task_call(&self, name: &str, this: &MoRef, args: &str) -> Result<MoRef, VsphereError> {
        let r = self.call(name, &method(name, this, args)).await?;
        moref_of(returnval(&r, name)?, name)
    }

    /// Start `PowerOffVM_Task`.
    ///
    /// # Errors
    /// Typed faults (`InvalidPowerState` when already off).
    pub async fn power_off_vm(&self, vm: &MoRef) -> Result<MoRef, VsphereError> {
        self.task_call("PowerOffVM_Task", vm, "").await
    }

    /// Start `PowerOnVM_Task`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn power_on_vm(&self, vm: &MoRef) -> Result<MoRef, VsphereError> {
        self.task_call("PowerOnVM_Task", vm, "").await
    }

    /// Ask VMware Tools to shut the guest down (returns at once).
    ///
    /// # Errors
    /// Typed faults (`ToolsUnavailable`, `InvalidPowerState`).
    pub async fn shutdown_guest(&self, vm: &MoRef) -> Result<(), VsphereError> {
        self.call("ShutdownGuest", &method("ShutdownGuest", vm, "")).await.map(|_| ())
    }

    /// Start `CreateSnapshot_Task` (no memory, no quiescing unless asked).
    ///
    /// # Errors
    /// Typed faults.
    pub async fn create_snapshot(
        &self,
        vm: &MoRef,
        name: &str,
        description: &str,
        quiesce: bool,
    ) -> Result<MoRef, VsphereError> {
        let args = format!(
            "<name>{}</name><description>{}</description><memory>false</memory><quiesce>{quiesce}</quiesce>",
            esc(name),
            esc(description)
        );
        self.task_call("CreateSnapshot_Task", vm, &args).await
    }

    /// Start `RemoveSnapshot_Task` (children kept, disks consolidated).
    ///
    /// # Errors
    /// Typed faults.
    pub async fn remove_snapshot(&self, snapshot: &MoRef) -> Result<MoRef, VsphereError> {
        self.task_call(
            "RemoveSnapshot_Task",
            snapshot,
            "<removeChildren>false</removeChildren><consolidate>true</consolidate>",
        )
        .await
    }

    /// Start `ReconfigVM_Task` setting `changeTrackingEnabled`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn set_change_tracking(&self, vm: &MoRef, enabled: bool) -> Result<MoRef, VsphereError> {
        let args = format!("<spec><changeTrackingEnabled>{enabled}</changeTrackingEnabled></spec>");
        self.task_call("ReconfigVM_Task", vm, &args).await
    }

    /// `VirtualMachine.QueryChangedDiskAreas`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn query_changed_disk_areas(
        &self,
        vm: &MoRef,
        snapshot: Option<&MoRef>,
        device_key: i32,
        start_offset: u64,
        change_id: &str,
    ) -> Result<DiskChangeInfo, VsphereError> {
        let mut args = String::new();
        if let Some(s) = snapshot {
            args.push_str(&s.to_xml("snapshot"));
        }
        args.push_str(&format!(
            "<deviceKey>{device_key}</deviceKey><startOffset>{start_offset}</startOffset><changeId>{}</changeId>",
            esc(change_id)
        ));
        let r = self.call("QueryChangedDiskAreas", &method("QueryChangedDiskAreas", vm, &args)).await?;
        let rv = returnval(&r, "QueryChangedDiskAreas")?;
        let bad = |d: &str| VsphereError::Malformed { method: "QueryChangedDiskAreas".into(), detail: d.into() };
        let start_offset = rv.num_at(&["startOffset"]).ok_or_else(|| bad("no startOffset"))?;
        let length = rv.num_at(&["length"]).ok_or_else(|| bad("no length"))?;
        let mut areas = Vec::new();
        for a in rv.all("changedArea") {
            let s: u64 = a.num_at(&["start"]).ok_or_else(|| bad("changedArea without start"))?;
            let l: u64 = a.num_at(&["length"]).ok_or_else(|| bad("changedArea without length"))?;
            areas.push((s, l));
        }
        Ok(DiskChangeInfo { start_offset, length, areas })
    }

    /// Wait, through a private PropertyCollector and `WaitForUpdatesEx`, until `done` accepts
    /// the object's properties or `timeout` passes. Returns the last property values.
    ///
    /// # Errors
    /// [`VsphereError::Timeout`]; typed faults.
    pub async fn wait_for(
        &self,
        obj: &MoRef,
        paths: &[&str],
        timeout: Duration,
        mut done: impl FnMut(&[(String, Element)]) -> bool,
    ) -> Result<Vec<(String, Element)>, VsphereError> {
        let deadline = Instant::now() + timeout;
        let pc_resp = self
            .call(
                "CreatePropertyCollector",
                &method("CreatePropertyCollector", &self.inner.content.property_collector, ""),
            )
            .await?;
        let pc = moref_of(returnval(&pc_resp, "CreatePropertyCollector")?, "CreatePropertyCollector")?;
        let result = async {
            let spec = Self::objects_spec(std::slice::from_ref(obj), &[PropSpec { kind: &obj.kind, paths }])
                .replace("<specSet>", "<spec>")
                .replace("</specSet>", "</spec>");
            self.call(
                "CreateFilter",
                &method("CreateFilter", &pc, &format!("{spec}<partialUpdates>false</partialUpdates>")),
            )
            .await?;
            let mut values: Vec<(String, Element)> = Vec::new();
            let mut version = String::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(VsphereError::Timeout {
                        what: format!("{obj} {}", paths.join(",")),
                        seconds: timeout.as_secs(),
                    });
                }
                let wait = left.as_secs().clamp(1, 60);
                let args = format!(
                    "<version>{}</version><options><maxWaitSeconds>{wait}</maxWaitSeconds></options>",
                    esc(&version)
                );
                let r = self.call("WaitForUpdatesEx", &method("WaitForUpdatesEx", &pc, &args)).await?;
                if let Some(us) = r.child("returnval") {
                    version = us.text_at(&["version"]).unwrap_or("").to_string();
                    for fs in us.all("filterSet") {
                        for os in fs.all("objectSet") {
                            if os.kind_is_leave() {
                                return Err(VsphereError::NotFound { object: obj.to_string() });
                            }
                            for cs in os.all("changeSet") {
                                let Some(name) = cs.text_at(&["name"]) else { continue };
                                values.retain(|(n, _)| n != name);
                                if let Some(v) = cs.child("val") {
                                    values.push((name.to_string(), v.clone()));
                                }
                            }
                        }
                    }
                }
                if done(&values) {
                    return Ok(values);
                }
            }
        }
        .await;
        let _ = self.call("DestroyPropertyCollector", &method("DestroyPropertyCollector", &pc, "")).await;
        result
    }

    /// Wait for a task to end; returns its `info.result` element on success.
    ///
    /// # Errors
    /// The task's fault as a typed error ([`VsphereError::TaskInProgress`],
    /// [`VsphereError::InvalidState`], [`VsphereError::TaskFailed`], ...); [`VsphereError::Timeout`].
    pub async fn wait_task(&self, task: &MoRef, timeout: Duration) -> Result<Option<Element>, VsphereError> {
        let values = self
            .wait_for(task, &["info.state", "info.error", "info.result"], timeout, |v| {
                v.iter().any(|(n, e)| n == "info.state" && matches!(e.text.as_str(), "success" | "error"))
            })
            .await?;
        let state = values.iter().find(|(n, _)| n == "info.state").map(|(_, e)| e.text.clone()).unwrap_or_default();
        if state == "success" {
            return Ok(values.into_iter().find(|(n, _)| n == "info.result").map(|(_, e)| e));
        }
        let err = values.iter().find(|(n, _)| n == "info.error").map(|(_, e)| e);
        let (fault, message) = match err {
            Some(e) => (
                e.child("fault").map(crate::soap::fault_kind).unwrap_or_else(|| "Fault".into()),
                e.text_at(&["localizedMessage"]).unwrap_or("").to_string(),
            ),
            None => ("Fault".into(), String::new()),
        };
        Err(match VsphereError::from_fault(&fault, &message, None, &self.inner.username) {
            VsphereError::Fault { fault, message } => {
                VsphereError::TaskFailed { task: task.to_string(), fault, message }
            }
            VsphereError::TaskInProgress { message, .. } => {
                VsphereError::TaskInProgress { object: task.to_string(), message }
            }
            other => other,
        })
    }
}

trait ObjectUpdateExt {
    fn kind_is_leave(&self) -> bool;
}

impl ObjectUpdateExt for Element {
    fn kind_is_leave(&self) -> bool {
        self.text_at(&["kind"]) == Some("leave")
    }
}
