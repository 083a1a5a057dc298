//! What the warm end-to-end tests (`tests/e2e_warm.rs`, `e2e_warm_boot.rs`, `e2e_warm_job.rs`)
//! share: writing into a source disk between the passes of a running migration (the guest
//! "keeps working"), the changed-block-tracking blocks those writes touch (the bound a delta
//! pass must stay within), and running a plan with its controller reachable from the event sink
//! (the sink asks for the cutover once the last write is in). Written once here so that every
//! warm test writes, bounds and cuts over the same way.

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vmigrate::core::executor::{Controller, Event, Executor, ExecutorOptions};
use vmigrate::core::{Plan, PlanStatus, TargetProvider};
use vmigrate::vsphere::vcsim::Vcsim;

use super::{vcsim_plan, CredEnv};

/// vSphere's changed block tracking granularity as vcsim reports it: a delta pass may read
/// whole 64 KiB blocks around each write, never more.
pub const CBT_BLOCK: u64 = 64 << 10;

/// `spec.options` of a warm plan with CBT switched on by the plan and a precopy every second
/// (for [`vcsim_plan`](super::vcsim_plan)'s `options`).
pub const WARM_OPTIONS: &str = "    enableCbt: true\n    precopyInterval: 1s\n";

/// A warm plan of one simulator VM into an output folder, with where it writes.
pub struct WarmDirPlan {
    /// The scratch folder (status files, `out`).
    pub work: tempfile::TempDir,
    /// The `dir://` output folder.
    pub out: PathBuf,
    /// The plan.
    pub plan: Plan,
}

/// Plan `name`: `vm` of `sim`, warm with [`WARM_OPTIONS`], into `dir://<work>/out`, its
/// credentials exported in variables of its own.
pub fn warm_dir_plan(sim: &Vcsim, name: &str, vm: &str) -> WarmDirPlan {
    let work = tempfile::tempdir().expect("tmp");
    let out = work.path().join("out");
    let env = CredEnv::new(name);
    env.export(sim);
    let text = vcsim_plan(name, sim, &env, &format!("dir://{}", out.display()), &[vm], true, WARM_OPTIONS);
    WarmDirPlan { work, out, plan: Plan::from_yaml_str(&text).expect("plan") }
}

/// Overwrite `(offset, len)` ranges of a flat file with `byte` and sync (what the guest writes
/// between two snapshots). The lab pattern's bytes are odd and its holes zero, so a byte such
/// as `0xee` is always a change.
pub fn scribble(flat: &Path, writes: &[(u64, u64)], byte: u8) {
    let mut f = std::fs::OpenOptions::new().write(true).open(flat).expect("open flat extent");
    for &(off, len) in writes {
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&vec![byte; len as usize]).expect("write");
    }
    f.sync_all().expect("sync");
}

/// Bytes of the [`CBT_BLOCK`]s the `(offset, len)` writes touch (the most a delta pass may
/// read or write for them), and the bytes written (the least).
pub fn touched(writes: impl IntoIterator<Item = (u64, u64)>) -> (u64, u64) {
    let mut blocks = BTreeSet::new();
    let mut written = 0;
    for (off, len) in writes {
        for b in off / CBT_BLOCK..=(off + len - 1) / CBT_BLOCK {
            blocks.insert(b);
        }
        written += len;
    }
    (blocks.len() as u64 * CBT_BLOCK, written)
}

/// An event-sink part for "the guest writes between the passes": when pass `order[n]` has
/// read everything (before the next snapshot is taken), `write(n)` runs; after the last one the
/// controller in `ctl` (set before the run, see [`run_plan`]) is asked for the cutover. Each
/// pass's write happens once, in order.
pub fn between_passes(
    order: &'static [&'static str],
    ctl: Arc<OnceLock<Controller>>,
    write: impl FnMut(usize) + Send + 'static,
) -> impl Fn(&Event) + Send + Sync + 'static {
    let state = Mutex::new((0usize, write));
    move |e: &Event| {
        if let Event::Disk { pass, progress, .. } = e {
            let mut state = state.lock().expect("lock");
            let (n, write) = &mut *state;
            if *n < order.len() && pass == order[*n] && progress.done == progress.total {
                write(*n);
                *n += 1;
                if *n == order.len() {
                    ctl.get().expect("controller set before run").cutover_now();
                }
            }
        }
    }
}

/// Run `plan` from the source its URL opens into `target`, bounded by `timeout`. The executor's
/// controller is published in `ctl` before the run starts, so an event sink built before the
/// executor (as [`between_passes`]) can cut over or cancel.
pub async fn run_plan(
    plan: Plan,
    target: impl TargetProvider + 'static,
    opts: ExecutorOptions,
    ctl: Option<&OnceLock<Controller>>,
    timeout: Duration,
) -> PlanStatus {
    let source = vmigrate::sources::open_source(&plan.spec.source).await.expect("source");
    let exec = Executor::new(plan, Arc::from(source), Arc::new(target), opts);
    if let Some(ctl) = ctl {
        ctl.set(exec.controller()).expect("set once");
    }
    tokio::time::timeout(timeout, exec.run()).await.expect("plan finishes").expect("run")
}
