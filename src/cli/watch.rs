//! Views of a plan a person can leave open: `vmigrate status --watch` (a live table in the
//! terminal) and `vmigrate serve` (a small read-only web page on loopback).
//!
//! Both read only the status file that `vmigrate migrate` writes, so they work from another
//! terminal or machine folder, never steer the run, and need no credentials. Rates come from two
//! successive readings of the bytes that moved (`transferredBytes` + `passReadBytes`), not from
//! the virtual progress, which jumps over holes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use vmigrate::core::{Error, ErrorCode, Phase, PlanStatus};

/// The versioned document `serve` returns at `/api/status` (and the page renders).
pub const VIEW_API_VERSION: &str = "vmigrate.dev/v1alpha1";

/// One VM as the views show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmView {
    name: String,
    target_name: String,
    phase: Phase,
    total_bytes: u64,
    /// Virtual bytes done in the current pass (for the percentage).
    done_bytes: u64,
    /// Bytes that moved from the source, all passes.
    moved_bytes: u64,
    /// Moved bytes per second between the last two readings, in MiB/s.
    moved_mib_per_sec: f64,
    /// Seconds left at the virtual rate between the last two readings, when known.
    eta_seconds: Option<f64>,
    downtime_seconds: Option<f64>,
    precopies: u32,
    concerns: Vec<String>,
    error: Option<String>,
}

/// One line of the event log: a VM entering a phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventLine {
    time: String,
    vm: String,
    phase: Phase,
}

/// The whole view of a plan at one reading.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    api_version: &'static str,
    kind: &'static str,
    plan: String,
    summary: String,
    /// Whether every VM reached Completed, Failed or Canceled.
    finished: bool,
    vms: Vec<VmView>,
    /// The latest phase changes, newest last (at most 100).
    events: Vec<EventLine>,
}

fn terminal(p: Phase) -> bool {
    matches!(p, Phase::Completed | Phase::Failed | Phase::Canceled)
}

/// Per VM at one reading: (bytes moved, virtual bytes done).
type Sample = HashMap<String, (u64, u64)>;

/// Successive readings of one status file, for rates.
#[derive(Default)]
pub struct Watcher {
    last: Option<(Instant, Sample)>,
}

impl Watcher {
    /// Read the status file and build the view; rates compare with the previous reading.
    ///
    /// # Errors
    /// The status file cannot be read or parsed.
    pub fn read(&mut self, path: &Path) -> Result<View, Error> {
        let st = PlanStatus::load(path)?;
        Ok(self.view(&st, Instant::now()))
    }

    fn view(&mut self, st: &PlanStatus, now: Instant) -> View {
        let mut sample = HashMap::new();
        let mut vms = Vec::new();
        for v in &st.vms {
            let total: u64 = v.disks.iter().map(|d| d.total_bytes).sum();
            let done: u64 =
                v.disks.iter().map(|d| if d.done { d.total_bytes } else { d.copied_bytes.min(d.total_bytes) }).sum();
            let moved: u64 = v.disks.iter().map(|d| d.transferred_bytes + d.pass_read_bytes).sum();
            sample.insert(v.name.clone(), (moved, done));
            let (mut rate, mut eta) = (0.0, None);
            if let Some((t0, prev)) = &self.last {
                let dt = now.duration_since(*t0).as_secs_f64();
                if let (Some(&(m0, d0)), true) = (prev.get(&v.name), dt > 0.0) {
                    rate = moved.saturating_sub(m0) as f64 / dt / (1u64 << 20) as f64;
                    let virt = done.saturating_sub(d0) as f64 / dt;
                    if virt > 0.0 && !terminal(v.phase) {
                        eta = Some(total.saturating_sub(done) as f64 / virt);
                    }
                }
            }
            vms.push(VmView {
                name: v.name.clone(),
                target_name: v.target_name.clone(),
                phase: v.phase,
                total_bytes: total,
                done_bytes: done,
                moved_bytes: moved,
                moved_mib_per_sec: rate,
                eta_seconds: eta,
                downtime_seconds: v.downtime_seconds,
                precopies: v.precopies,
                concerns: v.concerns.iter().map(|c| format!("{} {}: {}", c.severity, c.id, c.message)).collect(),
                error: v.error.as_ref().map(|e| e.message.clone()),
            });
        }
        self.last = Some((now, sample));
        let mut events: Vec<EventLine> = st
            .vms
            .iter()
            .flat_map(|v| {
                v.history.iter().map(|h| EventLine { time: h.started.clone(), vm: v.name.clone(), phase: h.phase })
            })
            .collect();
        events.sort_by(|a, b| a.time.cmp(&b.time));
        let skip = events.len().saturating_sub(100);
        View {
            api_version: VIEW_API_VERSION,
            kind: "PlanView",
            plan: st.plan.clone(),
            summary: st.summary(),
            finished: st.vms.iter().all(|v| terminal(v.phase)),
            vms,
            events: events.split_off(skip),
        }
    }
}

/// Printable without terminal control characters (names come from the source).
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The table `status --watch` draws.
pub fn table(v: &View) -> String {
    let mut out = format!("plan {}: {}\n\n", clean(&v.plan), v.summary);
    out.push_str("VM                        PHASE            DONE      MOVED       RATE      ETA  DOWNTIME\n");
    for vm in &v.vms {
        let pct = (vm.done_bytes * 100).checked_div(vm.total_bytes).map(|p| format!("{p}%")).unwrap_or("-".into());
        let name: String = clean(&vm.name).chars().take(24).collect();
        out.push_str(&format!(
            "{:<24}  {:<14}  {:>5}  {:>9}  {:>9}  {:>7}  {:>8}\n",
            name,
            format!("{:?}", vm.phase),
            pct,
            super::progress::size(vm.moved_bytes),
            format!("{:.1} MiB/s", vm.moved_mib_per_sec),
            vm.eta_seconds.map(|s| format!("{:.0}s", s)).unwrap_or("-".into()),
            vm.downtime_seconds.map(|s| format!("{s:.1}s")).unwrap_or("-".into()),
        ));
        if let Some(e) = &vm.error {
            out.push_str(&format!("    error: {}\n", clean(e)));
        }
    }
    out
}

/// `vmigrate status --watch`: redraw the table every `every` until every VM has ended.
///
/// # Errors
/// The status file cannot be read.
pub async fn watch(path: PathBuf, every: Duration) -> Result<ExitCode, Error> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut w = Watcher::default();
    loop {
        let v = w.read(&path)?;
        if tty {
            print!("\x1b[H\x1b[2J");
        }
        print!("{}", table(&v));
        if v.finished {
            return Ok(ExitCode::SUCCESS);
        }
        if !tty {
            println!();
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

const PAGE: &str = include_str!("serve.html");

/// `vmigrate serve`: the page at `/`, the view as JSON at `/api/status`. Prints the URL on its
/// first line of stdout, then serves until Ctrl-C.
///
/// # Errors
/// The status file is missing at start, or the address cannot be bound.
pub async fn serve(path: PathBuf, listen: &str) -> Result<ExitCode, Error> {
    use axum::routing::get;
    // Fail at once on a wrong path rather than serving errors.
    PlanStatus::load(&path)?;
    let watcher = Arc::new(Mutex::new(Watcher::default()));
    let status_path = Arc::new(path);
    let app = axum::Router::new().route("/", get(|| async { axum::response::Html(PAGE) })).route(
        "/api/status",
        get(move || {
            let watcher = watcher.clone();
            let path = status_path.clone();
            async move {
                let res = watcher.lock().expect("watcher lock").read(&path);
                match res {
                    Ok(v) => (axum::http::StatusCode::OK, axum::Json(serde_json::to_value(v).unwrap_or_default())),
                    Err(e) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(serde_json::json!({"error": e.to_string()})),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::new(ErrorCode::InvalidArgument, format!("cannot listen on {listen}: {e}")).with_source(e)
    })?;
    let addr = listener.local_addr().map_err(|e| Error::io("reading the bound address", e))?;
    println!("serving the plan's status at http://{addr}/ (read-only; Ctrl-C stops)");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::io("serving", e))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmigrate::core::status::{DiskStatus, VmStatus};

    fn status(moved: u64, done: u64, phase: Phase) -> PlanStatus {
        let mut st: PlanStatus = serde_json::from_value(serde_json::json!({
            "plan": "p", "warm": false, "started": "2026-11-26T10:00:00Z", "vms": []
        }))
        .expect("status");
        let mut vm: VmStatus = serde_json::from_value(serde_json::json!({
            "name": "db", "targetName": "db", "phase": "CopyDisks"
        }))
        .expect("vm");
        vm.phase = phase;
        vm.disks.push(DiskStatus {
            key: 2000,
            total_bytes: 8 << 30,
            copied_bytes: done,
            pass_read_bytes: moved,
            ..Default::default()
        });
        st.vms.push(vm);
        st
    }

    #[test]
    fn rates_are_moved_bytes_between_readings() {
        let mut w = Watcher::default();
        let t0 = Instant::now();
        let first = w.view(&status(0, 0, Phase::CopyDisks), t0);
        assert_eq!(first.vms[0].moved_mib_per_sec, 0.0);
        // 2 s later: 4 GiB virtual done (holes) but only 100 MiB read: 50 MiB/s, ETA 4 s.
        let v = w.view(&status(100 << 20, 4 << 30, Phase::CopyDisks), t0 + Duration::from_secs(2));
        assert!((v.vms[0].moved_mib_per_sec - 50.0).abs() < 1e-9, "{v:?}");
        assert_eq!(v.vms[0].eta_seconds, Some(2.0));
        assert!(!v.finished);
        assert!(table(&v).contains("50.0 MiB/s"));
        let done = w.view(&status(0, 8 << 30, Phase::Completed), t0 + Duration::from_secs(3));
        assert!(done.finished && done.vms[0].eta_seconds.is_none());
    }
}
