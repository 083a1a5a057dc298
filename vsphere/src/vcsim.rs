//! Test harness: build and start govmomi's vcsim with vmigrate's lab inventory
//! (`tests/vcsim/main.go`), over TLS, with disks backed by real VMDK files.
//!
//! The Go program is built once per source hash into `target/vcsim-<hash>/vcsim` (built into a
//! temporary path and renamed, so parallel tests race safely). The lab disks are VMDKs written
//! by `qemu-img` with deterministic content: monolithicFlat unless [`VcsimOptions::disks`] asks
//! for monolithicSparse or a sparse delta over a sparse parent. A missing `go` or govmomi is a
//! panic with instructions: these tests must fail in CI, not skip.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use sha2::{Digest, Sha256};

/// Lab VM names whose disks the harness creates.
pub const LAB_VMS: [&str; 8] = [
    "haproxy",
    "database",
    "winweb01",
    "winweb02",
    "haproxy_running",
    "database_running",
    "winweb01_running",
    "winweb02_running",
];

/// How a lab VM's disk is stored in the datastore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabDiskFormat {
    /// `<vm>.vmdk` descriptor + `<vm>-flat.vmdk` (the default; what CBT snapshots copy).
    Flat,
    /// One `<vm>.vmdk` monolithicSparse file with an embedded descriptor.
    Sparse,
    /// `<vm>.vmdk` monolithicSparse delta whose parent is `<vm>-base.vmdk` (monolithicSparse
    /// with the pattern); the delta overwrites [`DELTA_WRITE`] with `0x5a`.
    Delta,
    /// Like [`LabDiskFormat::Flat`] but all zeroes (sparse, made at once): for tests that put
    /// their own image (a bootable guest) into the flat extent.
    Zero,
}

/// `(offset, length)` the delta of a [`LabDiskFormat::Delta`] disk overwrites.
pub const DELTA_WRITE: (u64, u64) = (3 << 19, 192 << 10);

/// Per-VM disk settings that differ from the defaults.
#[derive(Debug, Clone)]
pub struct LabDisk {
    /// Lab VM name (one of [`LAB_VMS`]).
    pub vm: &'static str,
    /// Storage format.
    pub format: LabDiskFormat,
    /// Size in bytes (multiple of 64 KiB); `None` uses [`VcsimOptions::disk_size`].
    pub size: Option<u64>,
}

/// Start options.
#[derive(Debug, Clone)]
pub struct VcsimOptions {
    /// Size of each lab disk in bytes (multiple of 64 KiB).
    pub disk_size: u64,
    /// Disks that are not flat or not `disk_size` (benchmarks use a large flat disk).
    pub disks: Vec<LabDisk>,
    /// Extra generated VMs (inventory benchmarks).
    pub extra_vms: usize,
    /// Login user.
    pub username: String,
    /// Login password.
    pub password: String,
}

impl Default for VcsimOptions {
    fn default() -> Self {
        VcsimOptions {
            disk_size: 4 << 20,
            disks: Vec::new(),
            extra_vms: 0,
            username: "administrator@vsphere.local".into(),
            password: "Vmigrate-Test-Pa55!".into(),
        }
    }
}

/// A running simulator; killed on drop.
#[derive(Debug)]
pub struct Vcsim {
    /// `https://127.0.0.1:PORT/sdk`.
    pub url: String,
    /// SHA-256 thumbprint of the server certificate.
    pub thumbprint: String,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// Login user.
    pub username: String,
    /// Login password (test-only secret).
    pub password: String,
    /// Directory backing the `WorkloadDatastore` datastore.
    pub datastore_dir: PathBuf,
    /// Datastore name.
    pub datastore: String,
    /// Datacenter name.
    pub datacenter: String,
    /// The network the lab VMs use.
    pub network: String,
    child: Child,
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("vsphere crate sits in the workspace").to_path_buf()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Build (or reuse) the simulator binary and return its path.
///
/// Tests of one process share one build (a process-wide lock); several test processes may build
/// at once, each into its own temporary name, and the rename into place is atomic.
pub fn binary() -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let root = repo_root();
    let src_dir = root.join("tests/vcsim");
    let src = std::fs::read(src_dir.join("main.go")).expect("tests/vcsim/main.go is readable");
    let hash = hex::encode(&Sha256::digest(&src)[..8]);
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let out_dir = target.join(format!("vcsim-{hash}"));
    let bin = out_dir.join("vcsim");
    if bin.exists() {
        return bin;
    }
    std::fs::create_dir_all(&out_dir).expect("create vcsim build dir");
    let gopath = std::env::var("VMIGRATE_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    assert!(
        Path::new(&gopath).join("src/github.com/vmware/govmomi/simulator").is_dir(),
        "govmomi is missing at {gopath}: install golang-github-vmware-govmomi-dev (or set VMIGRATE_GOPATH)"
    );
    let tmp = out_dir.join(format!("vcsim.tmp-{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .current_dir(&src_dir)
        .env("GOPATH", &gopath)
        .env("GO111MODULE", "off")
        .env("GOCACHE", target.join("go-build-cache"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install golang-go to build the vcsim simulator"));
    assert!(status.success(), "go build of tests/vcsim failed");
    std::fs::rename(&tmp, &bin).expect("move vcsim binary in place");
    bin
}

/// Byte `i` of the deterministic content of lab disk `vm`: a per-VM pattern in the first
/// half of every MiB, zeroes in the second half (so the disks have holes).
pub fn pattern_byte(vm: &str, offset: u64) -> u8 {
    if offset % (1 << 20) >= 1 << 19 {
        return 0;
    }
    let seed = vm.bytes().fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    seed.wrapping_add((offset / 4096) as u8) | 1
}

/// Create `<dir>/<vm>/<vm>.vmdk` + `-flat.vmdk` (monolithicFlat) with the pattern content.
pub fn write_lab_disk(dir: &Path, vm: &str, size: u64) -> PathBuf {
    write_lab_disk_as(dir, vm, size, LabDiskFormat::Flat)
}

/// Create `<dir>/<vm>/<vm>.vmdk` in `format` with the pattern content (plus the delta's write).
pub fn write_lab_disk_as(dir: &Path, vm: &str, size: u64, format: LabDiskFormat) -> PathBuf {
    let vm_dir = dir.join(vm);
    std::fs::create_dir_all(&vm_dir).expect("create vm dir");
    let raw = dir.join(format!("{vm}.raw"));
    {
        let f = std::fs::File::create(&raw).expect("create raw");
        f.set_len(size).expect("size raw");
        if format == LabDiskFormat::Zero {
            drop(f);
            let vmdk = vm_dir.join(format!("{vm}.vmdk"));
            run(
                Command::new("qemu-img")
                    .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat"])
                    .arg(&raw)
                    .arg(&vmdk),
                "qemu-img convert to vmdk",
            );
            let _ = std::fs::remove_file(&raw);
            return vmdk;
        }
        let mut w = std::io::BufWriter::new(f);
        let mut block = vec![0u8; 4096];
        for off in (0..size).step_by(4096) {
            for (i, b) in block.iter_mut().enumerate() {
                *b = pattern_byte(vm, off + i as u64);
            }
            w.write_all(&block).expect("write raw");
        }
        w.flush().expect("flush raw");
    }
    let vmdk = vm_dir.join(format!("{vm}.vmdk"));
    let convert = |subformat: &str, out: &Path| {
        run(
            Command::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "vmdk", "-o", &format!("subformat={subformat}")])
                .arg(&raw)
                .arg(out),
            "qemu-img convert to vmdk",
        )
    };
    match format {
        LabDiskFormat::Flat | LabDiskFormat::Zero => convert("monolithicFlat", &vmdk),
        LabDiskFormat::Sparse => convert("monolithicSparse", &vmdk),
        LabDiskFormat::Delta => {
            let base = format!("{vm}-base.vmdk");
            convert("monolithicSparse", &vm_dir.join(&base));
            run(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", "-F", "vmdk", "-b", &base])
                    .arg(&vmdk)
                    .current_dir(&vm_dir),
                "qemu-img create delta vmdk",
            );
            let (off, len) = DELTA_WRITE;
            run(
                Command::new("qemu-io").args(["-f", "vmdk", "-c", &format!("write -P 0x5a {off} {len}")]).arg(&vmdk),
                "qemu-io write into the delta",
            );
        }
    }
    std::fs::remove_file(&raw).expect("remove raw");
    vmdk
}

impl Vcsim {
    /// Build if needed, write the lab disks, start the simulator and wait until it is ready.
    ///
    /// # Panics
    /// When `go`, govmomi or `qemu-img` is missing, or the simulator does not start: tests
    /// using the simulator must fail loudly.
    pub fn start(opts: VcsimOptions) -> Vcsim {
        let bin = binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let ds = dir.path().join("datastore");
        std::fs::create_dir_all(ds.join("iso")).expect("datastore dir");
        std::fs::write(ds.join("iso/windows2019.iso"), b"not really an iso").expect("iso");
        let mut cmd = Command::new(bin);
        cmd.arg("-datastore-dir").arg(&ds);
        cmd.args(["-username", &opts.username, "-password", &opts.password, "-vms", &opts.extra_vms.to_string()]);
        for vm in LAB_VMS {
            let over = opts.disks.iter().find(|d| d.vm == vm);
            let format = over.map(|d| d.format).unwrap_or(LabDiskFormat::Flat);
            let size = over.and_then(|d| d.size).unwrap_or(opts.disk_size);
            write_lab_disk_as(&ds, vm, size, format);
            cmd.arg("-disk").arg(format!("{vm}={vm}/{vm}.vmdk@{size}"));
        }
        let mut child =
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start vcsim");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read vcsim ready line");
        if line.trim().is_empty() {
            let _ = child.kill();
            panic!("vcsim exited before it was ready (see its stderr above)");
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("vcsim ready line is JSON");
        let s = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("vcsim ready line lacks {k}")).to_string();
        Vcsim {
            url: s("url"),
            thumbprint: s("thumbprint_sha256"),
            ca_pem: s("ca_pem"),
            username: s("username"),
            password: s("password"),
            datastore_dir: PathBuf::from(s("datastore_dir")),
            datastore: s("datastore"),
            datacenter: s("datacenter"),
            network: s("network"),
            stdin: child.stdin.take(),
            child,
            _dir: dir,
        }
    }

    /// Connect options for this simulator, verifying its certificate through its CA.
    pub fn connect_options(&self) -> crate::ConnectOptions {
        crate::ConnectOptions {
            url: self.url.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            ca_pem: Some(self.ca_pem.clone()),
            ..Default::default()
        }
    }

    /// Local path of a lab VM's flat extent.
    pub fn flat_file(&self, vm: &str) -> PathBuf {
        self.datastore_dir.join(vm).join(format!("{vm}-flat.vmdk"))
    }

    /// Local path of a lab VM's disk (descriptor or sparse file).
    pub fn disk_file(&self, vm: &str) -> PathBuf {
        self.datastore_dir.join(vm).join(format!("{vm}.vmdk"))
    }

    /// The datastore `/folder` URL of a file (path relative to the datastore), for tools that
    /// read it directly (the benchmark's `nbdkit curl`).
    pub fn folder_url(&self, path: &str) -> String {
        let base = self.url.trim_end_matches("/sdk");
        format!("{base}/folder/{path}?dcPath={}&dsName={}", self.datacenter, self.datastore)
    }

    fn admin(&self, path_and_query: &str) -> String {
        let base = self.url.trim_end_matches("/sdk");
        let url = format!("{base}{path_and_query}");
        let out = Command::new("curl")
            .args(["-sS", "--fail", "-k", "-X", "POST", &url])
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl for {url}: {e}"));
        assert!(out.status.success(), "{url}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Terminate every client session, as an idle timeout would. Returns how many.
    pub fn expire_sessions(&self) -> usize {
        self.admin("/vmigrate/expire-sessions").trim().parse().expect("session count")
    }

    /// Client sessions alive now (the simulator's own not counted): what a front end that
    /// forgot to log out leaves behind.
    pub fn sessions(&self) -> usize {
        self.admin("/vmigrate/sessions").trim().parse().expect("session count")
    }

    /// Destroy a VM (and its files) behind the client's back.
    pub fn destroy_vm(&self, name: &str) {
        self.admin(&format!("/vmigrate/destroy?vm={name}"));
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        // Closing stdin asks the simulator to stop; it then removes its CBT state folder (a
        // kill at once left one `vmigrate-vcsim-cbt-*` folder in /tmp per test). Kill only
        // when it does not stop within two seconds.
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
