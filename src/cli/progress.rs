//! Progress display for long commands: bars on a terminal, JSON lines with `--output json`,
//! plain lines otherwise (logs, CI).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmigrate::core::executor::{Event, EventSink};
use vmigrate::core::Phase;

use super::Output;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// indicatif bars on stderr.
    Bars,
    /// One JSON object per line on stdout.
    Json,
    /// Plain text lines on stderr (phase changes, 10% steps).
    Plain,
}

impl Mode {
    pub fn pick(output: Output) -> Mode {
        match output {
            Output::Json => Mode::Json,
            Output::Table if std::io::stderr().is_terminal() => Mode::Bars,
            Output::Table => Mode::Plain,
        }
    }
}

struct State {
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    disks: HashMap<(String, i32, String), ProgressBar>,
    last_pct: HashMap<(String, i32, String), u64>,
}

/// Build the event sink for a mode.
pub fn sink(mode: Mode, total_vms: usize) -> EventSink {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let overall = (mode == Mode::Bars).then(|| {
        let pb = multi.add(ProgressBar::new(total_vms as u64));
        pb.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30.green}] {pos}/{len} VMs migrated  {msg}")
                .expect("valid template"),
        );
        pb.set_prefix("plan");
        pb
    });
    let state = Arc::new(Mutex::new(State { multi, overall, disks: HashMap::new(), last_pct: HashMap::new() }));
    Arc::new(move |e: &Event| {
        let mut st = state.lock().expect("progress lock");
        match mode {
            Mode::Json => println!("{}", serde_json::to_string(e).expect("events serialize")),
            Mode::Plain => plain(&mut st, e),
            Mode::Bars => bars(&mut st, e),
        }
    })
}

fn plain(st: &mut State, e: &Event) {
    let e = &super::text::safe_event(e);
    match e {
        Event::Plan { summary, .. } => eprintln!("plan: {summary}"),
        Event::Phase { vm, phase } => eprintln!("{vm}: {phase:?}"),
        Event::Disk { vm, disk, pass, progress } => {
            let pct = (progress.done * 100).checked_div(progress.total).unwrap_or(100);
            let key = (vm.clone(), *disk, pass.clone());
            let last = st.last_pct.entry(key).or_insert(u64::MAX);
            if *last == u64::MAX || pct / 10 > *last / 10 {
                *last = pct;
                eprintln!(
                    "{vm}: disk {disk} {pass} {pct}% ({} of {} MiB, {:.1} MB/s)",
                    progress.done >> 20,
                    progress.total >> 20,
                    progress.rate_bytes_per_sec / 1e6
                );
            }
        }
        Event::VmDone { vm, phase, error, downtime_seconds } => match error {
            Some(err) => eprintln!("{vm}: {phase:?}: {}", err.message),
            None => match downtime_seconds {
                Some(d) => eprintln!("{vm}: {phase:?} (downtime {d:.1}s)"),
                None => eprintln!("{vm}: {phase:?}"),
            },
        },
    }
}

fn bars(st: &mut State, e: &Event) {
    let e = &super::text::safe_event(e);
    match e {
        Event::Plan { migrated, summary, .. } => {
            if let Some(pb) = &st.overall {
                pb.set_position(*migrated as u64);
                pb.set_message(summary.clone());
            }
        }
        Event::Phase { vm, phase } => {
            let _ = st.multi.println(format!("{vm}: {phase:?}"));
        }
        Event::Disk { vm, disk, pass, progress } => {
            let key = (vm.clone(), *disk, pass.clone());
            let multi = st.multi.clone();
            let pb = st.disks.entry(key).or_insert_with(|| {
                let pb = multi.add(ProgressBar::new(progress.total));
                pb.set_style(
                    ProgressStyle::with_template(
                        "{prefix:20} [{bar:30.cyan}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("valid template"),
                );
                pb.set_prefix(format!("{vm} disk {disk} {pass}"));
                pb
            });
            pb.set_length(progress.total);
            pb.set_position(progress.done);
            if progress.done >= progress.total {
                pb.finish();
            }
        }
        Event::VmDone { vm, phase, error, downtime_seconds } => {
            let line = match (error, downtime_seconds) {
                (Some(err), _) => format!("{vm}: {phase:?}: {}", err.message),
                (None, Some(d)) => format!("{vm}: {phase:?} (downtime {d:.1}s)"),
                (None, None) => format!("{vm}: {phase:?}"),
            };
            let _ = st.multi.println(line);
            if *phase == Phase::Completed {
                if let Some(pb) = &st.overall {
                    pb.inc(0);
                }
            }
        }
    }
}
