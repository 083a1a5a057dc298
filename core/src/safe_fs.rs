//! Writing vmigrate's own files (status, checkpoints, manifests, lock files) so that links
//! planted in an output or status folder are never followed.
//!
//! Another local user who can write to the folder could pre-create `x.tmp` as a symlink to a
//! file of ours (or of root's) and have a rewrite land there. So temporary files are created
//! exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600; a stale one is unlinked first, which
//! removes a link itself, never its target), written, optionally fsynced, and renamed over the
//! final name (`rename` replaces a link at the final name rather than writing through it).
//! Outputs are created 0600: disks and manifests can hold data the VM's owner considers secret.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Mode of every file vmigrate creates.
pub const OUTPUT_MODE: u32 = 0o600;

/// `O_NOFOLLOW` for [`OpenOptionsExt::custom_flags`].
pub fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Create `path` new (exclusive, not following a link, mode 0600), first unlinking whatever a
/// crash (or someone else) left under that name.
///
/// # Errors
/// I/O errors; `AlreadyExists` when something re-appears between the unlink and the create.
pub fn create_exclusive(path: &Path) -> std::io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new().write(true).create_new(true).mode(OUTPUT_MODE).custom_flags(nofollow()).open(path)
}

/// Open (creating if needed) a lock or other small file of ours without following a link, and
/// refuse anything but a regular file.
///
/// # Errors
/// I/O errors; `InvalidInput` for a link or non-regular file.
pub fn open_own_file(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(OUTPUT_MODE)
        .custom_flags(nofollow() | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| link_error(path, e))?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(f)
}

/// Replace `path` with `bytes` atomically through `<path>.tmp`-style `tmp` (see the module
/// documentation); with `durable` the data is fsynced before the rename and the folder after.
///
/// # Errors
/// I/O errors creating, writing, syncing or renaming.
pub fn write_atomic(path: &Path, tmp: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let mut f = create_exclusive(tmp).map_err(|e| link_error(tmp, e))?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(tmp, path)?;
    if durable {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(())
}

/// `path` with `.tmp` appended to its whole name (`a.json` → `a.json.tmp`).
pub fn tmp_name(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn link_error(path: &Path, e: std::io::Error) -> std::io::Error {
    // O_NOFOLLOW on a symlink fails with ELOOP: say what it means.
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        std::io::Error::new(e.kind(), format!("{} is a symbolic link; refusing to write through it", path.display()))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn planted_links_are_never_written_through() {
        let dir = tempfile::tempdir().expect("tmp");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").expect("write");
        let path = dir.path().join("status.json");
        let tmp = tmp_name(&path);
        std::os::unix::fs::symlink(&victim, &tmp).expect("plant tmp link");
        write_atomic(&path, &tmp, b"new", true).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep me");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        // A link at the final name is replaced, not written through.
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&victim, &path).expect("plant final link");
        write_atomic(&path, &tmp, b"again", false).expect("write");
        assert_eq!(std::fs::read(&victim).expect("read"), b"keep me");
        assert!(!std::fs::symlink_metadata(&path).expect("stat").file_type().is_symlink());
        // Lock files: a link or a FIFO is refused.
        let lock = dir.path().join("x.lock");
        std::os::unix::fs::symlink(&victim, &lock).expect("plant lock link");
        assert!(open_own_file(&lock).is_err());
        let fifo = dir.path().join("f.lock");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_bits_truncate(0o600),
            0,
        )
        .expect("mkfifo");
        assert!(open_own_file(&fifo).is_err());
        assert!(open_own_file(&dir.path().join("ok.lock")).is_ok());
    }
}
