//! The nbdkit child: the `nbdkit vddk` command line, the process serving one disk on a unix
//! socket, the password file it reads, and the NBD transport over it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use vmigrate_core::model::{Disk, VmId};
use vmigrate_core::provider::SnapshotRef;
use vmigrate_core::transport::{BlockTransport, Extent, ExtentKind};
use vmigrate_core::{Error, ErrorCode, Result};

use crate::error::VsphereError;
use crate::secret::SecretDir;

use super::VsphereSource;

impl VsphereSource {
    pub(super) async fn open_disk_vddk(
        &self,
        libdir: &Path,
        vm: &VmId,
        disk: &Disk,
        snapshot: Option<&SnapshotRef>,
    ) -> Result<Box<dyn BlockTransport>> {
        let sha1 = match (self.client.peer_certificate(), &self.opts.thumbprint) {
            (Some(der), _) => vmigrate_core::http::thumbprint_sha1(&der),
            (None, Some(t)) if t.chars().filter(char::is_ascii_hexdigit).count() == 40 => t.clone(),
            _ => {
                return Err(Error::new(
                    ErrorCode::SourceTls,
                    "VDDK needs the server certificate's SHA-1 thumbprint, which is unknown",
                ))
            }
        };
        let server = self.client.url().host_str().unwrap_or("").to_string();
        let file = self.disk_file_at(disk, snapshot).await?;
        let (opts, moref) = (&self.opts, vm.source_ref.as_str());
        open_nbdkit_with_password(&opts.password, |pw, socket| {
            vddk_command(
                libdir,
                &server,
                &opts.username,
                pw,
                &sha1,
                moref,
                &file,
                snapshot.map(|s| s.id.as_str()),
                socket,
            )
        })
        .await
    }
}

/// Start the nbdkit command `build(password_file, socket)` returns, with `password` in a file
/// of a fresh private folder ([`SecretDir`]): the file is removed as soon as nbdkit serves (it
/// reads `password=+FILE` while configuring), the folder with the socket when the returned
/// transport and its clones are dropped, and both at once on any failure.
///
/// # Errors
/// The folder or file cannot be created; nbdkit failing to start; NBD connection errors.
pub async fn open_nbdkit_with_password(
    password: &str,
    build: impl FnOnce(&Path, &Path) -> Vec<String>,
) -> Result<Box<dyn BlockTransport>> {
    let dir = SecretDir::new("vmigrate-vddk-")?;
    let pw = dir.write("password", password)?;
    let socket = dir.path().join("nbd.sock");
    let argv = build(&pw, &socket);
    let mut proc = NbdkitProcess::spawn(&argv, &socket).await?;
    // Serving means configured: the password has been read.
    let _ = std::fs::remove_file(&pw);
    proc.dir = Some(dir);
    let proc = Arc::new(proc);
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    let nbd = vmigrate_core::nbd::NbdTransport::connect(&uri).await?;
    Ok(Box::new(NbdkitDisk { inner: Box::new(nbd), _proc: proc }))
}

/// Start an nbdkit command line serving on `socket` and open it with the NBD client. The
/// returned transport keeps nbdkit running until it and all its clones are dropped.
///
/// # Errors
/// nbdkit failing to start; NBD connection errors.
pub async fn open_nbdkit_disk(argv: &[String], socket: &Path) -> Result<Box<dyn BlockTransport>> {
    let proc = Arc::new(NbdkitProcess::spawn(argv, socket).await?);
    let uri = format!("nbd+unix:///?socket={}", socket.display());
    let nbd = vmigrate_core::nbd::NbdTransport::connect(&uri).await?;
    Ok(Box::new(NbdkitDisk { inner: Box::new(nbd), _proc: proc }))
}

/// An NBD transport whose server is a child nbdkit we own.
#[derive(Debug)]
struct NbdkitDisk {
    inner: Box<dyn BlockTransport>,
    _proc: Arc<NbdkitProcess>,
}

#[async_trait]
impl BlockTransport for NbdkitDisk {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn max_connections(&self) -> usize {
        self.inner.max_connections()
    }
    fn max_request(&self) -> usize {
        self.inner.max_request()
    }
    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(NbdkitDisk { inner: self.inner.try_clone().await?, _proc: self._proc.clone() }))
    }
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.inner.read_at(offset, len).await
    }
    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "vddk disks are read-only"))
    }
    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        self.inner.extents(offset, len, kind).await
    }
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The `nbdkit vddk` command line for one disk (VDDK reads the disk over NBD/NFC at the
/// snapshot). The password is passed as `password=+FILE` so it never shows in `ps`.
///
/// `thumbprint_sha1` is the server certificate's SHA-1 thumbprint, the form VDDK wants.
#[allow(clippy::too_many_arguments)]
pub fn vddk_command(
    libdir: &Path,
    server: &str,
    user: &str,
    password_file: &Path,
    thumbprint_sha1: &str,
    vm_moref: &str,
    file: &str,
    snapshot: Option<&str>,
    socket: &Path,
) -> Vec<String> {
    let mut argv = vec![
        "nbdkit".to_string(),
        "--exit-with-parent".into(),
        "--readonly".into(),
        "--foreground".into(),
        "--unix".into(),
        socket.display().to_string(),
        "vddk".into(),
        format!("libdir={}", libdir.display()),
        format!("server={server}"),
        format!("user={user}"),
        format!("password=+{}", password_file.display()),
        format!("thumbprint={thumbprint_sha1}"),
        format!("vm=moref={vm_moref}"),
    ];
    if let Some(s) = snapshot {
        argv.push(format!("snapshot={s}"));
    }
    argv.push("transports=nbdssl:nbd".into());
    argv.push(format!("file={file}"));
    argv
}

/// A running `nbdkit` child serving one disk on a unix socket; killed on drop.
#[derive(Debug)]
pub struct NbdkitProcess {
    child: tokio::process::Child,
    /// The socket path.
    pub socket: PathBuf,
    /// The private folder holding the socket (and the secret until it was read); removed
    /// after the child when this is dropped.
    dir: Option<SecretDir>,
}

impl Drop for NbdkitProcess {
    fn drop(&mut self) {
        // The folder goes after the child: kill it first so nothing is left using it.
        let _ = self.child.start_kill();
        let _ = self.child.try_wait();
    }
}

impl NbdkitProcess {
    /// Start `argv` (an nbdkit command line with `--unix socket`) and wait for the socket.
    ///
    /// # Errors
    /// [`VsphereError::Process`] when nbdkit cannot start or exits; [`VsphereError::Timeout`]
    /// when the socket does not appear.
    pub async fn spawn(argv: &[String], socket: &Path) -> std::result::Result<NbdkitProcess, VsphereError> {
        let (prog, args) = argv.split_first().ok_or_else(|| VsphereError::Process {
            what: "empty nbdkit command".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| VsphereError::Process { what: format!("cannot start {prog}"), source: e })?;
        for _ in 0..200 {
            if socket.exists() {
                return Ok(NbdkitProcess { child, socket: socket.to_path_buf(), dir: None });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(VsphereError::Process {
                    what: format!("{prog} exited with {status} before serving"),
                    source: std::io::Error::other("nbdkit exited"),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.start_kill();
        Err(VsphereError::Timeout { what: format!("{prog} socket {}", socket.display()), seconds: 5 })
    }

    /// Stop the server (and remove its private folder, if it has one).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        drop(self.dir.take());
    }
}
