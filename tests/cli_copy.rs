//! `vmigrate copy` run as a program on local files: summary, JSON output, exit codes, resume.

use std::path::Path;
use std::process::Command;

use std::io::{Seek, SeekFrom, Write};

fn vmigrate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmigrate"))
}

/// A sparse 16 MiB source with data at a few places.
fn make_source(path: &Path) -> Vec<u8> {
    let size = 16 << 20;
    let mut f = std::fs::File::create(path).expect("create source");
    f.set_len(size).expect("size");
    let mut want = vec![0u8; size as usize];
    for (i, off) in [0u64, 5 << 20, (9 << 20) + 123, size - 4096].iter().enumerate() {
        let data: Vec<u8> = (0..4096u32).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 + 1) | 1).collect();
        f.seek(SeekFrom::Start(*off)).expect("seek");
        f.write_all(&data).expect("write");
        want[*off as usize..*off as usize + 4096].copy_from_slice(&data);
    }
    want
}

#[test]
fn copy_file_to_file_json_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src.raw"), dir.path().join("dst.raw"));
    let want = make_source(&src);
    let out = vmigrate()
        .args(["copy", "--verify", "--output", "json", "--connections", "2"])
        .arg(&src)
        .arg(&dst)
        .output()
        .expect("run vmigrate");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(v["size"], 16 << 20);
    assert_eq!(v["bytesRead"], 4 * 4096 + 4096, "unaligned extent reads a block more: {v}");
    assert!(v["seconds"].as_f64().expect("seconds") >= 0.0);
    assert!(
        v["movedMibPerSec"].is_number()
            && v["virtualMibPerSec"].is_number()
            && v["bytesZeroed"].is_number()
            && v["bytesSkipped"].is_number()
    );
    assert_eq!(v["sourceDigest"], v["targetDigest"]);
    assert_eq!(std::fs::read(&dst).expect("read target"), want);
}

#[test]
fn copy_table_summary_and_checkpoint_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst, cp) = (dir.path().join("s.raw"), dir.path().join("d.raw"), dir.path().join("cp.json"));
    let want = make_source(&src);
    let out = vmigrate().arg("copy").arg(&src).arg(&dst).arg("--checkpoint").arg(&cp).output().expect("run");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["read", "written", "zeroed", "skipped", "seconds", "moved MiB/s"] {
        assert!(text.contains(word), "summary lacks {word}: {text}");
    }
    // A finished copy removes its checkpoint (issue 14 item 6): a re-run must not skip work
    // against a source changed since. It then finds an existing target and needs --overwrite.
    assert!(!cp.exists(), "the checkpoint outlived a successful copy");
    let out = vmigrate().arg("copy").arg(&src).arg(&dst).arg("--checkpoint").arg(&cp).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TargetExists"));
    assert_eq!(std::fs::read(&dst).expect("read target"), want);

    // A checkpoint made for another source (here: another file of the same size) is refused.
    let other = dir.path().join("other.raw");
    make_source(&other);
    let foreign = serde_json::json!({
        "version": 1, "source_size": 16 << 20, "work_unit": 16 << 20, "fingerprint": "x", "done": [[0, 1]],
        "source": "File { dev: 1, ino: 1 };size=16777216;mtime=1.000000000"
    });
    std::fs::write(&cp, foreign.to_string()).expect("write");
    let out = vmigrate().arg("copy").arg(&other).arg(&dst).arg("--checkpoint").arg(&cp).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Checkpoint") && err.contains("another source"), "{err}");
    assert_eq!(std::fs::read(&dst).expect("read target"), want, "the target was touched");

    // A corrupt checkpoint is a typed failure with a non-zero exit.
    std::fs::write(&cp, b"{not json").expect("write");
    let out = vmigrate().arg("copy").arg(&src).arg(&dst).arg("--checkpoint").arg(&cp).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Checkpoint"));
}

#[test]
fn copy_missing_source_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out =
        vmigrate().arg("copy").arg(dir.path().join("nope.raw")).arg(dir.path().join("out.raw")).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[Io]"));
    let out = vmigrate().args(["copy", "ftp://x/y", "/dev/null"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BadUrl"));
}
