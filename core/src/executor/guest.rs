//! Guest inspection before the copy and the conversion phase after it (glue to
//! [`crate::convert`]).

use std::collections::BTreeMap;
use std::time::Instant;

use tracing::{info, warn};

use super::Executor;
use crate::convert::{self, ConversionRequest, GuestConversion};
use crate::error::{Error, ErrorCode, Result};
use crate::provider::{PreparedVolume, TargetVm};
use crate::status::Phase;
use crate::validate::{Concern, Severity};

impl Executor {
    /// Inspect the guests of the plan on their source disks, before anything moves, where the
    /// source has the disks as local files (a `vmx://` folder) and the plan converts guests:
    /// libguestfs inspection (`virt-inspector`, read-only) learns the real OS, which validation checks
    /// ([`apply_inspection`]). VMs inspected by an earlier run of the plan (status file) or
    /// already completed are not inspected again. Sources without local files (vCenter) are
    /// not inspected here: their guest is inspected by the conversion itself, after the copy.
    pub(super) async fn inspect_guests(
        &self,
        inventory: &crate::model::Inventory,
        validation: &crate::validate::PlanValidation,
    ) -> Result<BTreeMap<String, std::result::Result<convert::Inspection, Error>>> {
        let mut out = BTreeMap::new();
        if self.plan.spec.skip_guest_conversion || !self.plan.spec.options.inspect_guests {
            return Ok(out);
        }
        for (idx, v) in validation.vms.iter().enumerate() {
            {
                let st = self.lock();
                let vs = &st.vms[idx];
                if vs.phase == Phase::Completed || vs.inspection.is_some() {
                    continue;
                }
            }
            let Some(vm) = v.source_id.as_ref().and_then(|id| inventory.vms.iter().find(|x| &x.id.source_ref == id))
            else {
                continue;
            };
            let Some(files) = self.source.local_disk_files(vm) else { continue };
            // libguestfs opens the files itself (following their extents): first open every
            // disk through the source's own reader, which refuses anything escaping the
            // datastore; such a VM is not inspected (its copy fails the same way).
            let mut contained = true;
            for d in &vm.disks {
                if let Err(e) = self.source.open_disk(&vm.id, d, None).await {
                    warn!(vm = %v.name, error = %e.report(), "not inspecting: a disk does not open");
                    contained = false;
                    break;
                }
            }
            if !contained {
                continue;
            }
            let disks: Vec<convert::DiskImage> =
                files.into_iter().map(|path| convert::DiskImage { path, format: "vmdk".into() }).collect();
            let work = std::env::temp_dir().join(format!("vmigrate-inspect-{}-{idx}", std::process::id()));
            let req = ConversionRequest::for_vm(&self.plan, idx);
            let started = Instant::now();
            let r = convert::run_inspector(&work, "guest", &disks, &req, &self.ctl.cancel).await;
            let _ = std::fs::remove_dir_all(&work);
            if matches!(&r, Err(e) if e.code() == ErrorCode::Cancelled) {
                return Err(Error::cancelled());
            }
            info!(vm = %v.name, seconds = started.elapsed().as_secs_f64(), result = ?r, "guest inspected");
            out.insert(v.name.clone(), r);
        }
        Ok(out)
    }

    /// The conversion phase: the plan's choice (skip) or the target's conversion of the copied
    /// disks (see [`crate::convert`]).
    pub(super) async fn convert_guest(
        &self,
        idx: usize,
        tvm: &TargetVm,
        volumes: &[PreparedVolume],
    ) -> Result<GuestConversion> {
        if self.plan.spec.skip_guest_conversion {
            return Ok(GuestConversion::skipped("spec.skipGuestConversion: disks copied as they are"));
        }
        let request = ConversionRequest::for_vm(&self.plan, idx);
        self.target.convert_guest(tvm, volumes, &request).await
    }
}

/// Record what the inspection found in a VM's status, and what it means for validation: an OS
/// virt-v2v cannot convert, or no OS at all, is a critical concern
/// (`conversion.unsupported-os`) offering the raw copy; an inspection that could not run is a
/// warning (`conversion.not-inspected`: the conversion phase inspects the guest again).
pub(super) fn apply_inspection(
    vs: &mut crate::status::VmStatus,
    found: &std::result::Result<convert::Inspection, Error>,
) {
    let raw_copy =
        "set spec.skipGuestConversion: true to copy the guest as it is (it keeps the source hypervisor's drivers: \
                    docs/conversion.md)";
    match found {
        Ok(convert::Inspection::Found(os)) => {
            vs.inspection = Some(os.clone());
            if let Some(why) = convert::unsupported_os(os) {
                vs.concerns.push(Concern::new(
                    "conversion.unsupported-os",
                    Severity::Critical,
                    format!("{why}: {raw_copy}"),
                ));
            }
        }
        Ok(convert::Inspection::NoOs(why)) => vs.concerns.push(Concern::new(
            "conversion.unsupported-os",
            Severity::Critical,
            format!("virt-v2v found no operating system it can convert on the disks ({}): {raw_copy}", why.trim()),
        )),
        Err(e) => vs.concerns.push(Concern::new(
            "conversion.not-inspected",
            Severity::Warning,
            format!(
                "the guest could not be inspected before the copy ({}); the conversion will inspect it",
                e.message()
            ),
        )),
    }
}
