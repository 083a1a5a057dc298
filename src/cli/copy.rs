//! `vmigrate copy SRC DST`: the copy engine on its own.
//!
//! Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise); the summary
//! goes to stdout, as a table or as one JSON object with `--output json`. People script this:
//! the JSON field names are stable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use vmigrate::copy::CopyRequest;
use vmigrate::core::engine::{CopyControl, CopyOptions, Progress};
use vmigrate::core::Error;
use vmigrate::transport_url::{open_transport_with, Role, TransportOptions};
use vmigrate::wire::CopySummary;

use super::Output;

/// Arguments of `vmigrate copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: a raw file or block device, a `.vmdk`, `nbd://host:port/export`,
    /// `nbd+unix:///export?socket=/path` (TLS: `nbds://`, `nbds+unix://` with
    /// `tls-certificates=DIR`, `tls-thumbprint=SHA256` or `tls-verify-peer=false`), or an
    /// `http(s)://` URL.
    pub src: String,
    /// Target: a raw file (created sparse) or block device, or an NBD URI (`nbds://` too).
    pub dst: String,
    /// Compare digests of source and target after the copy.
    #[arg(long)]
    pub verify: bool,
    /// Parallel connections (handle pairs).
    #[arg(long, default_value_t = CopyOptions::default().connections)]
    pub connections: usize,
    /// Largest single request: bytes, or with a binary unit (`512K`, `4M`, `4MiB`, `1G`).
    #[arg(long, default_value_t = CopyOptions::default().request_size, value_parser = parse_size)]
    pub request_size: usize,
    /// Persist resume checkpoints in FILE, and resume from it when it exists.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Do not flush the target at the end (the copy is then not durable).
    #[arg(long)]
    pub no_flush: bool,
    /// Between two local files, use copy_file_range (reflinks where the filesystem can) instead
    /// of reading and scanning for zeroes.
    #[arg(long)]
    pub copy_file_range: bool,
    /// Replace an existing non-empty target file (refused otherwise). Resuming from
    /// `--checkpoint` writes into the existing target without it.
    #[arg(long)]
    pub overwrite: bool,
    /// Deadline for one NBD request's reply (`30s`, `5m`, `1h`): a stalled NBD server is then a
    /// Timeout error (exit code of a failed copy) instead of a wait without end. Default 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub nbd_timeout: Option<Duration>,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// A positive duration (`30s`, `5m`, `1h30m`, `500ms`).
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match vmigrate::core::plan::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

/// `4M`, `4MiB`, `512k`, `1G` or plain bytes: sizes as people write them (binary units, as
/// qemu-img and nbdcopy read them).
pub(super) fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("{text:?} is not a size (examples: 2097152, 512K, 4M, 4MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?} (use K, M or G)")),
    };
    n.checked_mul(1usize << shift).filter(|&v| v > 0).ok_or_else(|| format!("{text:?} is out of range"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Report progress until `done` is cancelled.
async fn report(progress: Progress, done: tokio_util::sync::CancellationToken, quiet: bool) {
    if std::io::stderr().is_terminal() && !quiet {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{wide_bar} {percent:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            let s = progress.snapshot();
            bar.set_length(s.total);
            bar.set_position(s.done);
            bar.set_message(format!(
                "of {}, moved {} at {:.1} MiB/s",
                super::progress::size(s.total),
                super::progress::size(s.bytes_read),
                super::progress::moved_rate(&s)
            ));
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        bar.finish_and_clear();
    } else {
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            let s = progress.snapshot();
            if !quiet {
                eprintln!(
                    "progress: {:.0}% of {}, moved {} at {:.1} MiB/s",
                    if s.total > 0 { s.done as f64 * 100.0 / s.total as f64 } else { 100.0 },
                    super::progress::size(s.total),
                    super::progress::size(s.bytes_read),
                    super::progress::moved_rate(&s)
                );
            }
        }
    }
}

/// Run `vmigrate copy`.
pub async fn run(args: CopyArgs) -> Result<ExitCode, Error> {
    let options = TransportOptions::default().with_nbd_request_timeout(args.nbd_timeout);
    let src = open_transport_with(&args.src, Role::Source, &options).await?;
    run_from(src, args).await
}

/// Copy from an already opened source (`vmigrate transfer` opens it through a source provider)
/// to `args.dst`, with the same progress, checkpoint and summary as `vmigrate copy`.
pub async fn run_from(src: Box<dyn vmigrate::core::BlockTransport>, args: CopyArgs) -> Result<ExitCode, Error> {
    let req = CopyRequest {
        verify: args.verify,
        connections: args.connections.max(1),
        request_size: args.request_size,
        flush: !args.no_flush,
        checkpoint: args.checkpoint.clone(),
        copy_file_range: args.copy_file_range,
        overwrite: args.overwrite,
        nbd_timeout: args.nbd_timeout,
    };
    let copy = vmigrate::copy::prepare(src, &args.dst, &req).await?;
    let ctl = CopyControl::new();
    // Ctrl-C or SIGTERM cancels the copy cleanly (and leaves a checkpoint when asked for one).
    let cancel = ctl.cancel.clone();
    tokio::spawn(async move {
        super::stop_requested().await;
        cancel.cancel();
    });
    let reporter_done = tokio_util::sync::CancellationToken::new();
    let reporter = tokio::spawn(report(ctl.progress.clone(), reporter_done.clone(), args.output == Output::Json));
    let res = copy.run(ctl).await;
    reporter_done.cancel();
    let _ = reporter.await;
    let stats = res?;

    let secs = stats.elapsed.as_secs_f64();
    let summary = CopySummary {
        source: args.src.clone(),
        target: args.dst.clone(),
        size: copy.source.size(),
        bytes_read: stats.bytes_read,
        bytes_written: stats.bytes_written,
        bytes_zeroed: stats.bytes_zeroed,
        bytes_skipped: stats.bytes_skipped,
        seconds: secs,
        moved_mib_per_sec: if secs > 0.0 { mib(stats.bytes_read) / secs } else { 0.0 },
        virtual_mib_per_sec: if secs > 0.0 { mib(copy.source.size()) / secs } else { 0.0 },
        resumed: copy.resumed,
        source_digest: stats.source_digest.clone(),
        target_digest: stats.target_digest.clone(),
    };
    match args.output {
        Output::Json => {
            println!("{}", vmigrate::wire::copy_summary(&summary)?);
        }
        Output::Table => {
            println!("copied {} -> {}", summary.source, summary.target);
            println!("  size           {:>12.1} MiB", mib(summary.size));
            println!("  read           {:>12.1} MiB", mib(summary.bytes_read));
            println!("  written        {:>12.1} MiB", mib(summary.bytes_written));
            println!("  zeroed         {:>12.1} MiB", mib(summary.bytes_zeroed));
            println!("  skipped        {:>12.1} MiB", mib(summary.bytes_skipped));
            println!("  seconds        {:>12.3}", summary.seconds);
            println!("  moved MiB/s    {:>12.1}", summary.moved_mib_per_sec);
            println!("  virtual MiB/s  {:>12.1}", summary.virtual_mib_per_sec);
            if let Some(d) = &summary.target_digest {
                println!("  verified       sha256 {d}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn request_sizes_take_units() {
        assert_eq!(parse_size("2097152"), Ok(2 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("0").is_err());
    }
}
