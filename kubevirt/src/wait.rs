//! Waiting for objects to reach a state: an `await_condition`-style poll with named predicates,
//! in the spirit of kube-runtime's `wait` module. Polling (not a watch) keeps it working through
//! proxies that cut long requests, and the interval is an option so tests run in milliseconds.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use serde::de::DeserializeOwned;

use crate::error::KubevirtError;
use crate::objects::DataVolume;

/// What a predicate says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The condition holds.
    Done,
    /// Not yet.
    Waiting,
    /// It will never hold: the object failed (with why).
    Failed(String),
}

/// A DataVolume is ready to receive an upload (`UploadReady`).
pub fn is_datavolume_upload_ready(dv: &DataVolume) -> Check {
    match dv.phase() {
        "UploadReady" => Check::Done,
        "Failed" => Check::Failed(dv.failure_message()),
        "Succeeded" => Check::Failed("already populated: it takes no further upload".into()),
        _ => Check::Waiting,
    }
}

/// A DataVolume is populated (`Succeeded`).
pub fn is_datavolume_succeeded(dv: &DataVolume) -> Check {
    match dv.phase() {
        "Succeeded" => Check::Done,
        "Failed" => Check::Failed(dv.failure_message()),
        _ => Check::Waiting,
    }
}

/// A Job has completed successfully (or failed past its backoff limit).
pub fn is_job_complete(job: &Job) -> Check {
    let Some(st) = &job.status else { return Check::Waiting };
    for c in st.conditions.iter().flatten() {
        if c.status == "True" {
            match c.type_.as_str() {
                "Complete" | "SuccessCriteriaMet" => return Check::Done,
                "Failed" => {
                    return Check::Failed(c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()))
                }
                _ => {}
            }
        }
    }
    if st.succeeded.unwrap_or(0) > 0 {
        Check::Done
    } else {
        Check::Waiting
    }
}

/// Poll `name` every `interval` until `cond` says done (returns the object), failed, or
/// `timeout` passes. `on_poll` sees every version read (progress reporting).
///
/// # Errors
/// [`KubevirtError::TransferFailed`] when the predicate fails, [`KubevirtError::Timeout`], or
/// the API error of a GET.
///
/// # Cancel safety
/// Cancel-safe: it only reads.
pub async fn await_condition<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    cond: impl Fn(&K) -> Check,
    timeout: Duration,
    interval: Duration,
    mut on_poll: impl FnMut(&K),
) -> Result<K, KubevirtError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let start = Instant::now();
    loop {
        let obj = api.get(name).await.map_err(|e| KubevirtError::from_kube("get", what.to_string(), e))?;
        on_poll(&obj);
        match cond(&obj) {
            Check::Done => return Ok(obj),
            Check::Failed(reason) => return Err(KubevirtError::TransferFailed { what: what.to_string(), reason }),
            Check::Waiting => {}
        }
        if start.elapsed() >= timeout {
            return Err(KubevirtError::Timeout { what: what.to_string(), seconds: timeout.as_secs() });
        }
        tokio::time::sleep(interval).await;
    }
}
