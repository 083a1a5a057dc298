//! Secrets handed to child processes (the vCenter password for `nbdkit vddk password=+FILE`).
//!
//! A secret goes into a file in a private folder: created by `mkdir` under a random name (so a
//! folder another local user planted at a predictable name is never used), mode 0700, and the
//! file in it created with `O_EXCL | O_NOFOLLOW`, mode 0600. The folder and everything in it is
//! removed when the [`SecretDir`] is dropped, which happens on every failure path and when the
//! child is stopped; callers also remove the file as soon as the child has read it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vmigrate_core::{Error, Result};

/// A private folder for secrets and sockets of one child process; removed on drop.
#[derive(Debug)]
pub struct SecretDir {
    dir: tempfile::TempDir,
}

impl SecretDir {
    /// Create a new private folder (mode 0700, random name starting with `prefix`) in the
    /// system temporary folder.
    ///
    /// # Errors
    /// [`ErrorCode::Io`](vmigrate_core::ErrorCode::Io) when it cannot be created.
    pub fn new(prefix: &str) -> Result<SecretDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| Error::io("creating a private folder for a secret", e))?;
        Ok(SecretDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `secret` to a new file `name` in the folder (exclusive create, no symlink
    /// followed, mode 0600) and return its path.
    ///
    /// # Errors
    /// [`ErrorCode::Io`](vmigrate_core::ErrorCode::Io) when it cannot be written (never naming
    /// the secret).
    pub fn write(&self, name: &str, secret: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(|e| Error::io(format!("creating secret file {}", path.display()), e))?;
        f.write_all(secret.as_bytes()).map_err(|e| Error::io(format!("writing secret file {}", path.display()), e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn private_unpredictable_exclusive_and_removed_on_drop() {
        // What an attacker plants at the name the old code used: never used now.
        let planted = std::env::temp_dir().join(format!("vmigrate-vddk-{}-vm-1-2000", std::process::id()));
        std::fs::create_dir_all(&planted).expect("plant");
        std::fs::write(planted.join("password"), b"planted").expect("plant file");
        let a = SecretDir::new("vmigrate-vddk-").expect("dir");
        let b = SecretDir::new("vmigrate-vddk-").expect("dir");
        assert_ne!(a.path(), b.path(), "names are random");
        assert_ne!(a.path(), planted.as_path());
        let meta = std::fs::metadata(a.path()).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o700);
        let pw = a.write("password", "s3cret").expect("write");
        assert!(pw.starts_with(a.path()));
        assert_eq!(std::fs::metadata(&pw).expect("stat").mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&pw).expect("read"), b"s3cret");
        assert_eq!(std::fs::read(planted.join("password")).expect("read"), b"planted", "planted file untouched");
        // A second write of the same name is refused (O_EXCL), as is a planted symlink.
        assert!(a.write("password", "x").is_err());
        std::os::unix::fs::symlink(planted.join("password"), a.path().join("link")).expect("symlink");
        assert!(a.write("link", "s3cret").is_err());
        assert_eq!(std::fs::read(planted.join("password")).expect("read"), b"planted");
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists(), "the folder outlived its owner");
        let _ = std::fs::remove_dir_all(&planted);
    }
}
