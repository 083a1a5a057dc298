//! Progress display for long commands: bars on a terminal, JSON lines with `--output json`
//! (`MigrationEvent` documents, `docs/wire-format.md`),
//! plain lines otherwise (logs, CI).
//!
//! Rates are bytes actually moved (read from the source) per second, in MiB/s: a sparse disk
//! whose holes are skipped advances its virtual position by gigabytes in an instant, and a rate
//! computed from that position ("133 TiB/s") tells a person nothing. The virtual progress is the
//! bar and its percentage; the moved bytes and their rate are the numbers beside it.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmigrate::core::engine::ProgressSnapshot;
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

const MIB: f64 = (1u64 << 20) as f64;

/// `1234.5 MiB` / `3.2 GiB`: one unit system (binary) everywhere a person reads sizes.
pub fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Bytes moved from the source per second since the copy started, in MiB/s.
pub fn moved_rate(p: &ProgressSnapshot) -> f64 {
    let secs = p.elapsed.as_secs_f64();
    if secs > 0.0 {
        p.bytes_read as f64 / secs / MIB
    } else {
        0.0
    }
}

/// The text beside a disk's bar or in its plain line: virtual progress, moved bytes, rate, ETA.
fn disk_line(p: &ProgressSnapshot) -> String {
    let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
    let eta = match p.eta {
        Some(d) if p.done < p.total => format!(", eta {}s", d.as_secs()),
        _ => String::new(),
    };
    format!("{pct:>3}% of {}, moved {} at {:.1} MiB/s{eta}", size(p.total), size(p.bytes_read), moved_rate(p))
}

struct State {
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    disks: HashMap<(String, i32, String), ProgressBar>,
    last_pct: HashMap<(String, i32, String), u64>,
    /// Set by [`Display::finish`]: later events draw nothing.
    finished: bool,
}

/// The progress display of one run: its event sink, and the switch that takes the bars off the
/// screen before the command prints its result.
pub struct Display {
    state: Arc<Mutex<State>>,
    /// Give this to the executor.
    pub sink: EventSink,
}

impl Display {
    /// Remove every bar and stop drawing, so that what the command prints next stays on screen.
    ///
    /// Without this, the bars (still owned by the executor's options) draw once more when they
    /// are dropped, moving the cursor up over the lines printed since and erasing them.
    pub fn finish(&self) {
        let mut st = self.state.lock().expect("progress lock");
        st.finished = true;
        for pb in st.disks.values() {
            pb.finish_and_clear();
        }
        if let Some(pb) = &st.overall {
            pb.finish_and_clear();
        }
        let _ = st.multi.clear();
        st.multi.set_draw_target(ProgressDrawTarget::hidden());
    }
}

/// Build the display for a mode.
pub fn display(mode: Mode, total_vms: usize) -> Display {
    let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = (mode == Mode::Bars).then(|| {
        let pb = multi.add(ProgressBar::new(total_vms as u64));
        pb.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30.green}] {pos}/{len} VMs migrated {msg}")
                .expect("valid template"),
        );
        pb.set_prefix("plan");
        pb
    });
    let state = Arc::new(Mutex::new(State {
        multi,
        overall,
        disks: HashMap::new(),
        last_pct: HashMap::new(),
        finished: false,
    }));
    let st = state.clone();
    let sink: EventSink = Arc::new(move |e: &Event| {
        let mut st = st.lock().expect("progress lock");
        match mode {
            Mode::Json => println!("{}", vmigrate::wire::migration_event(e)),
            Mode::Plain => plain(&mut st, e),
            Mode::Bars if st.finished => {}
            Mode::Bars => bars(&mut st, e),
        }
    });
    Display { state, sink }
}

fn vm_done_line(vm: &str, phase: &Phase, error: Option<&str>, downtime: Option<f64>) -> String {
    match (error, downtime) {
        (Some(err), _) => format!("{vm}: {phase:?}: {err}"),
        (None, Some(d)) => format!("{vm}: {phase:?} (downtime {d:.1}s)"),
        (None, None) => format!("{vm}: {phase:?}"),
    }
}

fn plain(st: &mut State, e: &Event) {
    let e = &super::text::safe_event(e);
    match e {
        Event::Plan { summary, .. } => eprintln!("plan: {summary}"),
        Event::Phase { vm, phase } => eprintln!("{vm}: {phase:?}"),
        Event::Disk { vm, disk, volume, pass, progress } => {
            let pct = (progress.done * 100).checked_div(progress.total).unwrap_or(100);
            let key = (vm.clone(), *disk, pass.clone());
            let last = st.last_pct.entry(key).or_insert(u64::MAX);
            if *last == u64::MAX || pct / 10 > *last / 10 {
                *last = pct;
                eprintln!("{vm}: {volume} {pass}: {}", disk_line(progress));
            }
        }
        Event::VmDone { vm, phase, error, downtime_seconds } => {
            eprintln!("{}", vm_done_line(vm, phase, error.as_ref().map(|e| e.message.as_str()), *downtime_seconds))
        }
    }
}

fn bars(st: &mut State, e: &Event) {
    let e = &super::text::safe_event(e);
    match e {
        Event::Plan { migrated, total, .. } => {
            if let Some(pb) = &st.overall {
                pb.set_length(*total as u64);
                pb.set_position(*migrated as u64);
            }
        }
        Event::Phase { vm, phase } => {
            let _ = st.multi.println(format!("{vm}: {phase:?}"));
        }
        Event::Disk { vm, disk, volume, pass, progress } => {
            let key = (vm.clone(), *disk, pass.clone());
            let multi = st.multi.clone();
            let pb = st.disks.entry(key).or_insert_with(|| {
                let pb = multi.add(ProgressBar::new(progress.total));
                pb.set_style(
                    ProgressStyle::with_template("{prefix:28} [{bar:30.cyan}] {msg}").expect("valid template"),
                );
                pb.set_prefix(format!("{volume} {pass}"));
                pb
            });
            pb.set_length(progress.total);
            pb.set_position(progress.done);
            pb.set_message(disk_line(progress));
            if progress.done >= progress.total {
                pb.finish();
            }
        }
        Event::VmDone { vm, phase, error, downtime_seconds } => {
            let line = vm_done_line(vm, phase, error.as_ref().map(|e| e.message.as_str()), *downtime_seconds);
            let _ = st.multi.println(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_rate_is_bytes_moved_not_virtual_progress() {
        // 8 GiB virtual done in 2 s, of which 100 MiB were read: 50 MiB/s, not 4 GiB/s.
        let p = ProgressSnapshot {
            total: 8 << 30,
            done: 8 << 30,
            bytes_read: 100 << 20,
            elapsed: Duration::from_secs(2),
            ..Default::default()
        };
        assert!((moved_rate(&p) - 50.0).abs() < 1e-9);
        assert_eq!(disk_line(&p), "100% of 8.0 GiB, moved 100.0 MiB at 50.0 MiB/s");
    }

    #[test]
    fn sizes_use_one_binary_unit_system() {
        assert_eq!(size(512 << 20), "512.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
