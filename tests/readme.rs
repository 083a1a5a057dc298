//! The README's commands work as written: the C build-and-run block is taken from README.md
//! itself (the fenced `sh` block of the "## C" section) and run with bash from the repository
//! root, after the demo it builds on. A README edit that breaks the block fails this test.

use std::path::Path;
use std::process::Command;

/// The first fenced `sh` block after the heading `## {section}`.
fn sh_block(readme: &str, section: &str) -> String {
    let start = readme.find(&format!("\n## {section}\n")).unwrap_or_else(|| panic!("README has no ## {section}"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block in the section") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block is closed");
    rest[open..open + close].to_string()
}

#[test]
fn the_c_block_of_the_readme_builds_and_migrates_the_demo_plan() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let block = sh_block(&readme, "C");
    assert!(block.contains("cc examples/c/migrate.c"), "unexpected C block:\n{block}");
    // The block runs after the demo (the README's first command; the debug binary does the same).
    let demo = Command::new(env!("CARGO_BIN_EXE_vmigrate"))
        .args(["demo", "--workdir", "vmigrate-demo"])
        .current_dir(root)
        .output()
        .expect("run the demo");
    assert!(demo.status.success(), "demo: {}", String::from_utf8_lossy(&demo.stderr));
    let _ = std::fs::remove_file(root.join("vmigrate-demo/c-status.json"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_dir = Path::new(&cargo).parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let path = format!("{}:{}", cargo_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(root)
        .env("PATH", path)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the README's C block failed:\n{block}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 of 3 VMs migrated"), "{stdout}");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("vmigrate-demo/c-status.json")).expect("status file"))
            .expect("JSON");
    assert!(status["vms"].as_array().expect("vms").iter().all(|v| v["phase"] == "Completed"), "{status}");
}
