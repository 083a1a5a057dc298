//! Opening datastore files so that they stay inside the datastore folder.
//!
//! Everything a datastore folder says is untrusted: a VMX, a descriptor's extent names, a delta's
//! `parentFileNameHint`, and the symlinks in the folder itself. [`Beneath`] opens a name relative
//! to the folder with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so the kernel refuses
//! `..` above the root, absolute symlinks and `/proc` links, whatever the spelling and without a
//! check-then-open race. Where `openat2` is unavailable (kernel before 5.6, some seccomp
//! profiles) the path is canonicalised, checked to be under the canonical root, and opened with
//! `O_NOFOLLOW`. Only regular files are accepted: a FIFO would block a reader forever, a device
//! would copy a host disk. Files are opened `O_NONBLOCK` so that a FIFO is refused, not waited on.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use vmigrate_core::{Error, ErrorCode, Result};

/// A datastore folder that every open stays inside of.
#[derive(Debug, Clone)]
pub struct Beneath {
    root: Arc<OwnedFd>,
    root_path: PathBuf,
}

impl Beneath {
    /// Use the folder `root` (opened once: renaming it later does not move the containment).
    ///
    /// # Errors
    /// [`ErrorCode::Io`] (or [`ErrorCode::SourceFileMissing`]) when it cannot be opened as a
    /// folder.
    pub fn new(root: &Path) -> Result<Beneath> {
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| open_error(root, e))?;
        let root_path = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        Ok(Beneath { root: Arc::new(fd), root_path })
    }

    /// The folder, canonical.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// A name as seen from the root: a relative name unchanged, an absolute name under the
    /// canonical root made relative; any other absolute name is `None`.
    pub fn relative<'a>(&self, name: &'a Path) -> Option<std::borrow::Cow<'a, Path>> {
        if !name.is_absolute() {
            return Some(std::borrow::Cow::Borrowed(name));
        }
        name.strip_prefix(&self.root_path).ok().map(|p| std::borrow::Cow::Owned(p.to_path_buf()))
    }

    /// Open `rel` (relative to the root) read-only: it must resolve inside the root and be a
    /// regular file.
    ///
    /// # Errors
    /// [`ErrorCode::UnsafePath`] when it resolves outside the root (`..`, an absolute name, a
    /// symlink out) or is not a regular file; [`ErrorCode::SourceFileMissing`] when it does
    /// not exist; [`ErrorCode::Io`] otherwise.
    pub fn open(&self, rel: &Path) -> Result<File> {
        if rel.is_absolute() || rel.as_os_str().is_empty() {
            return Err(escape(rel, &self.root_path));
        }
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat2(
            &*self.root,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(Errno::XDEV) | Err(Errno::LOOP) => return Err(escape(rel, &self.root_path)),
            Err(Errno::NOSYS) | Err(Errno::PERM) => self.open_fallback(rel, flags)?,
            Err(e) => return Err(open_error(&self.root_path.join(rel), e)),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Error::io(format!("stat {}", rel.display()), e))?;
        if !meta.file_type().is_file() {
            return Err(Error::new(
                ErrorCode::UnsafePath,
                format!("{} in datastore {} is not a regular file", rel.display(), self.root_path.display()),
            ));
        }
        Ok(file)
    }

    /// Without `openat2`: canonicalise, check the prefix, open without following a last symlink.
    fn open_fallback(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd> {
        let joined = self.root_path.join(rel);
        let canon = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing(&joined, e),
            _ => Error::io(format!("resolving {}", joined.display()), e),
        })?;
        if !canon.starts_with(&self.root_path) {
            return Err(escape(rel, &self.root_path));
        }
        rustix::fs::open(&canon, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| open_error(&canon, e))
    }
}

/// `dir` joined with `name`, `..` and `.` folded, as long as it stays at or under the root
/// (`None` when it climbs above). For the folder a descriptor lives in.
pub fn join_within(dir: &Path, name: &Path) -> Option<PathBuf> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for c in dir.components().chain(name.components()) {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

fn escape(rel: &Path, root: &Path) -> Error {
    Error::new(
        ErrorCode::UnsafePath,
        format!("{} resolves outside the datastore folder {}; refusing to open it", rel.display(), root.display()),
    )
}

fn missing(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorCode::SourceFileMissing, format!("disk file {} is missing", path.display())).with_source(e)
}

fn open_error(path: &Path, e: Errno) -> Error {
    let io = std::io::Error::from(e);
    if e == Errno::NOENT {
        missing(path, io)
    } else {
        Error::io(format!("opening {}", path.display()), io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_inside_and_refuses_every_way_out() {
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("secret"), b"host file").expect("write");
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(root.path().join("vm")).expect("mkdir");
        std::fs::write(root.path().join("vm/disk-flat.vmdk"), b"disk").expect("write");
        std::os::unix::fs::symlink("disk-flat.vmdk", root.path().join("vm/inside-link")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("vm/out-abs")).expect("link");
        std::os::unix::fs::symlink("../../../../../../../../etc/passwd", root.path().join("vm/out-rel")).expect("link");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.path().join("vm/fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .expect("mkfifo");
        let b = Beneath::new(root.path()).expect("root");
        assert!(b.open(Path::new("vm/disk-flat.vmdk")).is_ok());
        assert!(b.open(Path::new("vm/inside-link")).is_ok(), "a symlink inside stays usable");
        assert!(b.open(Path::new("vm/../vm/disk-flat.vmdk")).is_ok());
        for bad in ["../x", "vm/../../etc/passwd", "/etc/passwd", "vm/out-abs", "vm/out-rel", "vm/fifo", "vm"] {
            let e = b.open(Path::new(bad)).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::UnsafePath, "{bad}: {e}");
        }
        assert_eq!(b.open(Path::new("vm/nope")).expect_err("missing").code(), ErrorCode::SourceFileMissing);
        assert_eq!(join_within(Path::new("a/b"), Path::new("../c/d")), Some(PathBuf::from("a/c/d")));
        assert_eq!(join_within(Path::new("a"), Path::new("../../x")), None);
        assert_eq!(join_within(Path::new("a"), Path::new("/etc/passwd")), None);
    }
}
