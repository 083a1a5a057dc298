//! Compile the C programs of `tests/c/` with gcc against `include/vmigrate.h` and both libraries
//! (`libvmigrate.so` and `libvmigrate.a`, built with this package), run them, and run the
//! shared-library build again under valgrind: no definite leaks, no invalid accesses.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put `libvmigrate.so` / `libvmigrate.a`: next to this test binary (`target/<profile>/deps`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("test binary has a directory").to_path_buf();
    for name in ["libvmigrate.so", "libvmigrate.a"] {
        assert!(
            deps.join(name).exists(),
            "{name} not found in {}: build the vmigrate-ffi package first",
            deps.display()
        );
    }
    deps
}

/// Whether an external program exists; under CI its absence fails the test instead of skipping.
use vmigrate_testkit::peers::have;

#[derive(Clone, Copy, Debug)]
enum Link {
    Shared,
    Static,
}

/// System libraries the Rust standard library needs when linked statically (also in vmigrate.pc).
const STATIC_DEPS: &[&str] = &["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"];

/// The one program that uses the old names of renamed codes on purpose; every other program is
/// compiled with `VMIGRATE_NO_OLD_NAMES`, so the tests and examples use only current names.
const OLD_NAMES_PROGRAM: &str = "old_names";

/// Compile `source` (under `tests/c/`, or a path) into `out_dir`.
fn compile(source: &Path, out_dir: &Path, link: Link) -> PathBuf {
    let stem = source.file_stem().expect("source has a name").to_string_lossy().to_string();
    compile_as(source, out_dir, link, stem != OLD_NAMES_PROGRAM)
}

/// [`compile`], saying whether the program must do without the old names.
fn compile_as(source: &Path, out_dir: &Path, link: Link, no_old_names: bool) -> PathBuf {
    let stem = source.file_stem().expect("source has a name").to_string_lossy().to_string();
    let exe = out_dir.join(format!("{stem}-{link:?}-{no_old_names}").to_lowercase());
    let libs = lib_dir();
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror", "-pedantic"]);
    if no_old_names {
        cmd.arg("-DVMIGRATE_NO_OLD_NAMES");
    }
    cmd.arg("-I")
        .arg(crate_dir().join("include"))
        .arg("-I")
        .arg(crate_dir().join("tests/c"))
        .arg(source)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Shared => {
            cmd.arg("-L").arg(&libs).arg("-lvmigrate").arg(format!("-Wl,-rpath,{}", libs.display()));
        }
        Link::Static => {
            cmd.arg(libs.join("libvmigrate.a")).arg("-Wl,--gc-sections").args(STATIC_DEPS);
        }
    }
    let out = cmd.output().expect("run gcc");
    assert!(
        out.status.success(),
        "gcc failed for {} ({link:?}):\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Run a program; panic with its output unless it exits 0. `LD_LIBRARY_PATH` (which cargo sets
/// for tests, and which outranks the programs' rpath) is dropped so that the shared builds load
/// exactly the library next to this test binary.
fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd.env_remove("LD_LIBRARY_PATH").output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout
}

/// Build `program` both ways, run both, and run the shared build under valgrind (in that order:
/// shared, valgrind, static). Returns the output of the first run.
fn check_program(source: &Path, args: &[&str]) -> Option<String> {
    check_program_with(source, args, args)
}

/// [`check_program`] with other arguments for the valgrind run (which is some 50 times slower).
fn check_program_with(source: &Path, args: &[&str], valgrind_args: &[&str]) -> Option<String> {
    if !have("gcc") {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = None;
    for link in [Link::Shared, Link::Static] {
        let exe = compile(source, dir.path(), link);
        let mut cmd = Command::new(&exe);
        cmd.args(args);
        let stdout = run(cmd, &format!("{} ({link:?})", source.display()));
        first.get_or_insert(stdout);
        if let Link::Shared = link {
            if have("valgrind") {
                let mut vg = Command::new("valgrind");
                vg.args([
                    "--quiet",
                    "--leak-check=full",
                    "--errors-for-leak-kinds=definite,indirect",
                    "--show-leak-kinds=definite,indirect",
                    "--error-exitcode=99",
                    "--num-callers=40",
                ])
                .arg(format!("--suppressions={}", crate_dir().join("tests/valgrind.supp").display()))
                .arg(&exe)
                .args(valgrind_args);
                run(vg, &format!("valgrind {}", source.display()));
            }
        }
    }
    first
}

fn c_test(name: &str) -> PathBuf {
    crate_dir().join("tests/c").join(name)
}

#[test]
fn errors_table_messages_and_null_handling() {
    let codes = (vmigrate_core::ErrorCode::ALL.len() + 1).to_string();
    check_program(&c_test("errors.c"), &[&codes]);
}

#[test]
fn old_result_names_compile_and_equal_the_new_ones() {
    let Some(out) = check_program(&c_test("old_names.c"), &[]) else { return };
    assert!(out.contains("old names: 23 ok"), "{out}");
    // With VMIGRATE_NO_OLD_NAMES the header leaves them out (the program's #error checks it).
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = compile_as(&c_test("old_names.c"), dir.path(), Link::Shared, true);
    let out = run(Command::new(&exe), "old_names.c with VMIGRATE_NO_OLD_NAMES");
    assert!(out.contains("old names: left out"), "{out}");
}

#[test]
fn load_and_validate_example_plan() {
    let root = crate_dir().join("..");
    let plan = root.join("examples/plan.yaml");
    let inventory = root.join("examples/inventory.json");
    check_program(&c_test("validate.c"), &[&plan.to_string_lossy(), &inventory.to_string_lossy()]);
}

/// A sparse raw image of `size` bytes with data at a few places and holes in between.
fn sparse_image(path: &Path, size: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).expect("create source");
    f.set_len(size).expect("size source");
    let mut content = vec![0u8; size as usize];
    for (i, off) in [0, size / 3, size / 2 + 4096, size - 12345].into_iter().enumerate() {
        let chunk: Vec<u8> = (0..70_000u32).map(|n| (n as u8).wrapping_mul(31).wrapping_add(i as u8 + 1)).collect();
        let end = (off as usize + chunk.len()).min(size as usize);
        f.seek(SeekFrom::Start(off)).expect("seek");
        f.write_all(&chunk[..end - off as usize]).expect("write");
        content[off as usize..end].copy_from_slice(&chunk[..end - off as usize]);
    }
    content
}

#[test]
fn copy_sparse_raw_with_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.img");
    let dst = dir.path().join("dst.img");
    let content = sparse_image(&src, 12 << 20);
    // Under valgrind a small image: hashing for verify is slow there in a debug build.
    let (small, small_dst) = (dir.path().join("small.img"), dir.path().join("small-dst.img"));
    let small_content = sparse_image(&small, 1 << 20);
    let (src_s, dst_s) = (src.to_string_lossy(), dst.to_string_lossy());
    let (small_s, small_dst_s) = (small.to_string_lossy(), small_dst.to_string_lossy());
    if check_program_with(&c_test("copy.c"), &[&src_s, &dst_s], &[&small_s, &small_dst_s]).is_none() {
        return;
    }
    assert!(std::fs::read(&small_dst).expect("read small target") == small_content, "small target differs");
    let copied = std::fs::read(&dst).expect("read target");
    assert!(copied == content, "target differs from source");
    if have("cmp") {
        let mut cmd = Command::new("cmp");
        cmd.arg(&src).arg(&dst);
        run(cmd, "cmp source target");
    }
    // The target stayed sparse: far fewer blocks allocated than its size.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&dst).expect("stat target");
    assert!(meta.blocks() * 512 < meta.len() / 4, "target is not sparse: {} blocks", meta.blocks());
}

#[test]
fn log_records_reach_a_c_callback_filtered_by_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    sparse_image(&src, 1 << 20);
    let (src_s, dst_s) = (src.to_string_lossy(), dst.to_string_lossy());
    check_program(&c_test("log.c"), &[&src_s, &dst_s]);
}

#[test]
fn copy_cancelled_from_another_thread_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst, cp) = (dir.path().join("src.img"), dir.path().join("dst.img"), dir.path().join("copy.cp"));
    // Dense enough that the copy is still running when the other thread cancels it.
    let content: Vec<u8> = (0..48u32 << 20).map(|n| (n % 251) as u8 | 1).collect();
    std::fs::write(&src, &content).expect("write source");
    let args = [src.to_string_lossy(), dst.to_string_lossy(), cp.to_string_lossy()];
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    // Every run (shared, static, valgrind) starts without target and checkpoint.
    let fresh = || {
        let _ = std::fs::remove_file(&dst);
        let _ = std::fs::remove_file(&cp);
    };
    fresh();
    if !have("gcc") {
        return;
    }
    let exe_dir = tempfile::tempdir().expect("tempdir");
    for link in [Link::Shared, Link::Static] {
        fresh();
        let exe = compile(&c_test("copy_cancel.c"), exe_dir.path(), link);
        let mut cmd = Command::new(&exe);
        cmd.args(&args);
        run(cmd, &format!("copy_cancel ({link:?})"));
        assert!(std::fs::read(&dst).expect("read target") == content, "resumed target differs ({link:?})");
        if matches!(link, Link::Shared) && have("valgrind") {
            // No leak of the switch, the options or the statistics across all those calls.
            fresh();
            let mut vg = Command::new("valgrind");
            vg.args(["--quiet", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"])
                .args(["--show-leak-kinds=definite,indirect", "--error-exitcode=99", "--num-callers=40"])
                .arg(format!("--suppressions={}", crate_dir().join("tests/valgrind.supp").display()))
                .arg(&exe)
                .args(&args);
            run(vg, "valgrind copy_cancel");
        }
    }
}

/// The lab datastore (as the demo writes it) and a one-VM plan from it into a `dir://` target.
struct Lab {
    dir: tempfile::TempDir,
    datastore: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let datastore = rt.block_on(vmigrate_facade::demo::create_lab_datastore(dir.path())).expect("lab datastore");
        Lab { dir, datastore }
    }

    fn source_url(&self) -> String {
        format!("vmx://{}", self.datastore.display())
    }

    /// Write a plan moving `haproxy` into `dir://<out>`; returns the plan path.
    fn plan(&self, name: &str, out: &Path) -> PathBuf {
        let text = format!(
            "apiVersion: vmigrate.dev/v1alpha1\nkind: Plan\nmetadata: {{ name: {name} }}\nspec:\n  \
             source: {{ url: \"{}\" }}\n  target: {{ url: \"dir://{}\" }}\n  targetNamespace: demo\n  skipGuestConversion: true\n  \
             vms: [ {{ name: haproxy }} ]\n  networkMap:\n    - source: {{ name: segment-migrating-to-ocpvirt }}\n      \
             destination: {{ type: pod }}\n  storageMap:\n    - source: {{ name: WorkloadDatastore }}\n      \
             destination: {{ storageClass: standard }}\n",
            self.source_url(),
            out.display()
        );
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write plan");
        path
    }

    /// The source disk of haproxy.
    fn haproxy_vmdk(&self) -> PathBuf {
        let dir = self.datastore.join("haproxy");
        let mut vmdks: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("haproxy folder")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "vmdk"))
            .collect();
        vmdks.sort();
        vmdks.into_iter().next().expect("haproxy has a vmdk")
    }
}

/// The single raw image a dir:// target wrote.
fn target_image(out: &Path) -> PathBuf {
    let imgs: Vec<PathBuf> = std::fs::read_dir(out.join("disks"))
        .expect("disks folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .collect();
    assert_eq!(imgs.len(), 1, "expected one disk image in {}", out.display());
    imgs.into_iter().next().expect("one image")
}

#[test]
fn inventory_of_local_vmx_source() {
    let lab = Lab::new();
    check_program(&c_test("inventory.c"), &[&lab.source_url()]);
}

/// examples/c/migrate.c, built with the flags of vmigrate.pc, migrates haproxy byte-equal.
#[test]
fn example_migration_into_dir_target() {
    if !have("gcc") {
        return;
    }
    let lab = Lab::new();
    let example = crate_dir().join("../examples/c/migrate.c");
    // The example compiles with nothing but what pkg-config says.
    if have("pkg-config") {
        let out = Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", crate_dir())
            .arg(format!("--define-variable=libdir={}", lib_dir().display()))
            .arg(format!("--define-variable=includedir={}", crate_dir().join("include").display()))
            .args(["--cflags", "--libs", "vmigrate"])
            .output()
            .expect("run pkg-config");
        assert!(out.status.success(), "pkg-config: {}", String::from_utf8_lossy(&out.stderr));
        let flags = String::from_utf8_lossy(&out.stdout).to_string();
        let exe = lab.dir.path().join("migrate-pkgconfig");
        let mut cmd = Command::new("gcc");
        cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror"]).arg(&example).arg("-o").arg(&exe);
        cmd.args(flags.split_whitespace()).arg(format!("-Wl,-rpath,{}", lib_dir().display()));
        run(cmd, "gcc examples/c/migrate.c with pkg-config flags");
        let out_dir = lab.dir.path().join("out-pkgconfig");
        let mut cmd = Command::new(&exe);
        cmd.arg(lab.plan("pkgconfig", &out_dir));
        let stdout = run(cmd, "migrate (pkg-config build)");
        assert!(stdout.contains("\"phase\":\"Completed\""), "{stdout}");
    }
    let out = lab.dir.path().join("out");
    let status = lab.dir.path().join("status.json");
    let plan = lab.plan("c-migrate", &out);
    let (plan_s, status_s) = (plan.to_string_lossy().to_string(), status.to_string_lossy().to_string());
    // The first run migrates; the valgrind and static runs find the status file and resume a
    // finished plan.
    let stdout = check_program(&example, &[&plan_s, &status_s]).expect("gcc present");
    assert!(stdout.contains("\"event\":\"phase\""), "no phase events: {stdout}");
    assert!(stdout.contains("log INFO vmigrate_core::executor: plan finished"), "no log records: {stdout}");
    assert!(stdout.contains("\"phase\":\"Completed\""), "{stdout}");
    // The status file says the same, and the disk arrived byte for byte.
    let saved = std::fs::read_to_string(&status).expect("status file");
    assert!(saved.contains("\"Completed\""), "{saved}");
    let img = target_image(&out);
    if have("qemu-img") {
        let mut cmd = Command::new("qemu-img");
        cmd.args(["compare", "-f", "vmdk", "-F", "raw"]).arg(lab.haproxy_vmdk()).arg(&img);
        run(cmd, "qemu-img compare source vmdk with migrated image");
    }
}

#[test]
fn cancel_migration_from_another_thread() {
    let lab = Lab::new();
    let out = lab.dir.path().join("out");
    let plan = lab.plan("c-cancel", &out);
    check_program(&c_test("cancel.c"), &[&plan.to_string_lossy()]);
}

/// A real SOAP peer: govmomi's vcsim with the lab inventory, over TLS with a pinned thumbprint.
#[test]
fn vsphere_inventory_against_vcsim() {
    if !have("gcc") {
        return;
    }
    let sim = vmigrate_vsphere::vcsim::Vcsim::start(vmigrate_vsphere::vcsim::VcsimOptions::default());
    check_program(&c_test("vsphere.c"), &[&sim.url, &sim.username, &sim.password, &sim.thumbprint]);
}

/// Issue 14 item 16: a C migration takes the output folder's lock too (the executor does). With
/// the lock held elsewhere (here by this test, as another run would hold it), examples/c/migrate.c
/// fails with `VMIGRATE_RESULT_TARGET_BUSY` and writes no disk; once it is free, it migrates.
#[test]
fn a_c_migration_into_a_busy_output_folder_is_target_busy() {
    if !have("gcc") {
        return;
    }
    let lab = Lab::new();
    let out = lab.dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".vmigrate.lock"))
        .expect("lock file");
    held.try_lock().expect("lock");
    let exe = compile(&crate_dir().join("../examples/c/migrate.c"), lab.dir.path(), Link::Shared);
    let plan = lab.plan("c-busy", &out);
    let status = lab.dir.path().join("c-busy.status.json");
    let res = Command::new(&exe).arg(&plan).arg(&status).env_remove("LD_LIBRARY_PATH").output().expect("run");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TargetBusy (1010)"), "{stderr}");
    assert_eq!(std::fs::read_dir(out.join("disks")).map(|d| d.count()).unwrap_or(0), 0, "a disk was written");
    drop(held);
    let mut cmd = Command::new(&exe);
    cmd.arg(&plan).arg(&status);
    let stdout = run(cmd, "migrate once the folder is free");
    assert!(stdout.contains("\"phase\":\"Completed\""), "{stdout}");
}

/// The wire format seen from C: every document the C API hands out, produced by `wire.c` from the
/// golden inputs, equals its golden file in `tests/golden/` after the shared normalization
/// (`docs/wire-format.md`). Checked for every run (shared, valgrind, static), each in its own folder.
#[test]
fn c_documents_match_the_golden_files() {
    use vmigrate_testkit::golden::{check, golden_dir};
    if !have("gcc") {
        return;
    }
    let lab = Lab::new();
    let image = lab.dir.path().join("image.raw");
    {
        use std::io::{Seek, SeekFrom, Write};
        // The fixed image of tests/wire_golden.rs: 1 MiB, 64 KiB of `v` at 0 and 512 KiB.
        let mut f = std::fs::File::create(&image).expect("create image");
        f.set_len(1 << 20).expect("size image");
        for off in [0u64, 512 << 10] {
            f.seek(SeekFrom::Start(off)).expect("seek");
            f.write_all(&[b'v'; 64 << 10]).expect("write");
        }
    }
    let scratch = lab.dir.path().join("runs");
    std::fs::create_dir(&scratch).expect("runs folder");
    let args = [
        lab.datastore.to_string_lossy().to_string(),
        golden_dir().join("plan.yaml").to_string_lossy().to_string(),
        scratch.to_string_lossy().to_string(),
        image.to_string_lossy().to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check_program(&c_test("wire.c"), &args).expect("gcc present");
    let runs: Vec<PathBuf> = std::fs::read_dir(&scratch).expect("runs").map(|e| e.expect("entry").path()).collect();
    assert!(!runs.is_empty());
    for run in runs {
        let doc = |name: &str| std::fs::read_to_string(run.join(format!("{name}.json"))).expect("document written");
        for name in ["inventory", "plan-validation", "plan-status", "migration-events", "copy-stats", "copy-progress"] {
            check(name, &doc(name), &run, "c", false);
        }
        check("plan-status", &doc("plan-status-loaded"), &run, "c (vmigrate_status_load)", false);
    }
}
