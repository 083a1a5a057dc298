//! The views a person leaves open on a long plan: `vmigrate serve` (checked in a real headless
//! browser, Debian's chromium, which runs the page's script against the server) and
//! `vmigrate status --watch`, both from the status file of a real run (the demo's).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn demo_status(work: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["demo", "--output", "json", "--workdir"])
        .arg(work)
        .output()
        .expect("run demo");
    assert!(out.status.success(), "demo: {}", String::from_utf8_lossy(&out.stderr));
    work.join("move-webapp-vmware.status.json")
}

fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_string(), body.to_string())
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_shows_the_plan_in_a_real_browser() {
    let work = tempfile::tempdir().expect("tmp");
    let status = demo_status(&work.path().join("w"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--status"])
        .arg(&status)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start serve");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("first line");
    let _server = Server(child);
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).expect("URL on the first line").to_string();
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();

    // The versioned JSON document.
    let (head, body) = http_get(&addr, "/api/status");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["apiVersion"], "vmigrate.dev/v1alpha1");
    assert_eq!(v["kind"], "PlanView");
    assert_eq!(v["summary"], "3 of 3 VMs migrated");
    assert_eq!(v["finished"], true);
    let vms = v["vms"].as_array().expect("vms");
    assert_eq!(vms.len(), 3);
    assert!(vms.iter().all(|vm| vm["phase"] == "Completed" && vm["movedBytes"].as_u64().unwrap_or(0) > 0), "{v}");
    assert!(!v["events"].as_array().expect("events").is_empty());

    // The page, rendered by a real browser: its script fetched the document and built the table.
    let profile = work.path().join("chromium-profile");
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
                "--window-size=1400,700",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium is installed (Debian package chromium)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.status.success(), "chromium: {}", String::from_utf8_lossy(&dom.stderr));
    for want in [
        "3 of 3 VMs migrated (finished)",
        "data-vm=\"database\"",
        "data-vm=\"winweb01\"",
        "data-vm=\"winweb02\"",
        "class=\"Completed\"",
        "100% of 12.0 GiB",
    ] {
        assert!(dom_text.contains(want), "the rendered page lacks {want:?}:\n{dom_text}");
    }
    let shot = artifacts.join("serve.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(out.status.success(), "chromium screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot is a real picture ({} bytes)", png.len());
}

#[test]
fn status_watch_ends_when_every_vm_has() {
    let work = tempfile::tempdir().expect("tmp");
    let status = demo_status(&work.path().join("w"));
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["status", "--watch", "--status"])
        .arg(&status)
        .output()
        .expect("run status --watch");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("3 of 3 VMs migrated") && text.contains("Completed") && text.contains("MiB/s"), "{text}");
    assert!(!text.contains('\x1b'), "no terminal codes when stdout is not a terminal");
}

#[test]
fn serve_refuses_a_missing_status_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--status", "/nonexistent/plan.status.json"])
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
}
