//! vmigrate's provider-neutral core.
//!
//! It holds the migration model ([`model`]), plans ([`plan`]), validation ([`validate`]), the
//! deterministic renaming of VMs ([`naming`]), plan status ([`status`]), the provider traits
//! ([`SourceProvider`], [`TargetProvider`]) and the block transport seam ([`BlockTransport`]).
//! It knows no provider: sources and targets live in their own crates, which depend on this
//! one and never the other way round, and plug in through the traits of [`provider`].
//!
//! ```no_run
//! use vmigrate_core::{validate, Inventory, Plan, SourceCapabilities};
//!
//! let plan = Plan::from_file("plan.yaml")?;
//! let inventory: Inventory = serde_json::from_str(&std::fs::read_to_string("inventory.json")?)?;
//! let ctx = validate::ValidationContext {
//!     plan: &plan,
//!     inventory: &inventory,
//!     existing: &[],
//!     capabilities: SourceCapabilities::default(),
//!     rules: &[], // the providers' own: `SourceProvider::vm_rules`, `TargetProvider::vm_rules`
//! };
//! for vm in validate::validate_plan(&ctx).vms {
//!     println!("{} -> {}: {} concern(s)", vm.name, vm.target_name, vm.concerns.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod buf;
pub mod concern;
pub mod convert;
pub mod engine;
pub mod error;
pub mod executor;
pub mod file;
pub mod hook;
#[cfg(feature = "http")]
pub mod http;
pub mod memory;
pub mod model;
pub mod naming;
#[cfg(feature = "nbd")]
pub mod nbd;
pub mod plan;
pub mod provider;
pub mod safe_fs;
pub mod status;
pub mod status_binding;
pub mod times;
#[cfg(any(feature = "http", feature = "nbd"))]
pub mod tls;
pub mod transport;
pub mod validate;

pub use concern::{Concern, Severity};
pub use error::{BoxError, Error, ErrorCode, ErrorKind, ErrorRange, Result};
pub use model::{Datastore, Disk, Host, Inventory, Network, Nic, Vm, VmId};
pub use plan::{Credentials, Plan};
pub use provider::{
    ChangedAreas, ExistingVm, PassReport, PreparedVolume, SnapshotRef, SourceCapabilities, SourceProvider,
    TargetCapabilities, TargetPass, TargetProvider, TargetVm, VolumeSink,
};
pub use status::{Phase, PlanStatus, VmStatus};
pub use transport::{Backing, BlockTransport, Extent, ExtentKind, ExtentState, SourceIdentity};
