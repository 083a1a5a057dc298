//! vmigrate's KubeVirt side: the Kubernetes target provider (VirtualMachines, DataVolumes, the
//! CDI upload stream, transfer Jobs, Services and Routes) and the local output folder target.
//!
//! ```no_run
//! use vmigrate_core::TargetProvider;
//! use vmigrate_kubevirt::DirTarget;
//!
//! # async fn demo() -> vmigrate_core::Result<()> {
//! // A folder of manifests and raw disks for `kubectl apply` and `virtctl image-upload`.
//! let folder = DirTarget::open("/tmp/vmigrate-out")?;
//! println!("{:?}", folder.existing_vms("vmexamples").await?);
//! # Ok(()) }
//! ```
//!
//! ```text
//!              TargetProvider
//!             /              \
//!     KubevirtTarget       DirTarget
//!     (kube::Api<K>,       (manifests.yaml,
//!      server-side apply)   disks/*.img, NEXT-STEPS.txt)
//!        |   |   \
//!   upload  import  job        <- TransferMethod of the plan
//!  (UploadSink) (DV vddk/http) (batch/v1 Job running `vmigrate transfer`)
//! ```

pub mod builder;
pub mod cluster;
pub mod convert_job;

pub mod dir;
pub mod error;
#[cfg(feature = "fake-api")]
pub mod fake;
pub mod job;

pub mod objects;
#[cfg(feature = "realkube")]
pub mod realkube;
pub mod rules;
#[cfg(feature = "schema")]
pub mod schema;
pub mod upload;
pub mod wait;

pub use builder::{
    build_datavolume, build_ingress, build_route, build_service, build_vm, guest_os, volume_name, GuestOs,
    VolumeSource, FIELD_MANAGER, LABEL_PLAN, LABEL_SOURCE_VM,
};

pub use cluster::{KubevirtOptions, KubevirtTarget};
pub use dir::{DirOptions, DirTarget};
pub use error::KubevirtError;
pub use objects::{DataVolume, Route, UploadTokenRequest, VirtualMachine};
pub use upload::{UploadSink, UploadStats};
