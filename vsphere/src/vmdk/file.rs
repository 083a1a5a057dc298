//! A read-only local file as a [`BlockTransport`], and the directory-based [`ExtentOpener`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use vmigrate_core::buf::BufPool;
use vmigrate_core::{BlockTransport, Error, ErrorCode, Result};

use super::ExtentOpener;
use crate::beneath::{join_within, Beneath};

/// A local file read with positional reads on the blocking pool; clones share the descriptor,
/// since `pread` needs no seek position and so no lock.
#[derive(Debug, Clone)]
pub struct LocalFile {
    file: Arc<File>,
    size: u64,
    path: Arc<Path>,
    /// Page-aligned, reused read buffers: a block-device target can write them with `O_DIRECT`.
    pool: Arc<BufPool>,
}

impl LocalFile {
    /// Open `path` read-only.
    ///
    /// # Errors
    /// [`ErrorCode::SourceFileMissing`] when it does not exist, [`ErrorCode::Io`] otherwise.
    pub async fn open(path: &Path) -> Result<LocalFile> {
        let p = path.to_path_buf();
        let (file, size) = tokio::task::spawn_blocking(move || -> std::io::Result<(File, u64)> {
            let f = File::open(&p)?;
            let size = f.metadata()?.len();
            Ok((f, size))
        })
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, "file open task failed").with_source(e))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::new(ErrorCode::SourceFileMissing, format!("disk file {} is missing", path.display()))
                    .with_source(e)
            } else {
                Error::io(format!("opening {}", path.display()), e)
            }
        })?;
        Ok(LocalFile { file: Arc::new(file), size, path: Arc::from(path), pool: BufPool::new() })
    }

    /// Use a file already opened (by [`Beneath`]); `path` is for messages.
    ///
    /// # Errors
    /// [`ErrorCode::Io`] when it cannot be `stat`ed.
    pub fn from_file(file: File, path: &Path) -> Result<LocalFile> {
        let size = file.metadata().map_err(|e| Error::io(format!("stat {}", path.display()), e))?.len();
        Ok(LocalFile { file: Arc::new(file), size, path: Arc::from(path), pool: BufPool::new() })
    }
}

#[async_trait]
impl BlockTransport for LocalFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn max_connections(&self) -> usize {
        8
    }

    async fn try_clone(&self) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(self.clone()))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.size) {
            return Err(Error::new(
                ErrorCode::ShortRead,
                format!(
                    "read of {len} bytes at {offset} past the end of {} ({} bytes)",
                    self.path.display(),
                    self.size
                ),
            ));
        }
        let file = self.file.clone();
        let mut buf = self.pool.take(len);
        let buf = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await
        .map_err(|e| Error::new(ErrorCode::Internal, "file read task failed").with_source(e))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::new(ErrorCode::ShortRead, format!("{} ended early at {offset}", self.path.display()))
            } else {
                Error::io(format!("reading {} at {offset}", self.path.display()), e)
            }
        })?;
        Ok(buf.freeze())
    }

    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "vmdk extents are opened read-only"))
    }

    fn backing(&self) -> Vec<vmigrate_core::Backing> {
        self.file.metadata().map(|m| vec![vmigrate_core::Backing::of_metadata(&m)]).unwrap_or_default()
    }

    fn identity(&self) -> vmigrate_core::SourceIdentity {
        let file = self.file.metadata().map(|m| vmigrate_core::SourceIdentity::file_part(&m));
        vmigrate_core::SourceIdentity::of_parts(file.into_iter().chain([format!("size={}", self.size)]))
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Opens extent files relative to the folder of the descriptor, the way VMware resolves them,
/// always inside a root folder (the datastore, or the descriptor's own folder): see
/// [`Beneath`]. An absolute name (`/vmfs/volumes/ds/vm/disk-flat.vmdk`, as ESXi writes for some
/// disks) is used when it lies under the root, and otherwise falls back to its file name inside
/// the descriptor's folder, since a copied datastore folder keeps the files together.
#[derive(Debug, Clone)]
pub struct DirOpener {
    beneath: Beneath,
    /// The descriptor's folder, relative to the root.
    dir: PathBuf,
}

impl DirOpener {
    /// Resolve names relative to `dir`, which is also the root nothing may leave.
    ///
    /// # Errors
    /// `dir` cannot be opened as a folder.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(DirOpener { beneath: Beneath::new(dir.as_ref())?, dir: PathBuf::new() })
    }

    /// Resolve names relative to `dir` (relative to the root of `beneath`).
    pub fn beneath(beneath: Beneath, dir: impl Into<PathBuf>) -> Self {
        DirOpener { beneath, dir: dir.into() }
    }

    /// `name` as a path relative to the root.
    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let p = Path::new(name);
        if p.is_absolute() {
            if let Some(rel) = self.beneath.relative(p) {
                return Ok(rel.into_owned());
            }
            if let Some(base) = p.file_name() {
                return Ok(self.dir.join(base));
            }
        }
        join_within(&self.dir, p).ok_or_else(|| {
            Error::new(
                ErrorCode::UnsafePath,
                format!("{name:?} resolves outside the datastore folder {}", self.beneath.root().display()),
            )
        })
    }
}

#[async_trait]
impl ExtentOpener for DirOpener {
    async fn open(&self, name: &str) -> Result<Box<dyn BlockTransport>> {
        let rel = self.resolve(name)?;
        let beneath = self.beneath.clone();
        let r = rel.clone();
        let file = tokio::task::spawn_blocking(move || beneath.open(&r))
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, "file open task failed").with_source(e))??;
        Ok(Box::new(LocalFile::from_file(file, &self.beneath.root().join(&rel))?))
    }

    fn descend(&self, name: &str) -> Option<(Arc<dyn ExtentOpener>, String)> {
        let rel = self.resolve(name).ok()?;
        let file = rel.file_name()?.to_str()?.to_owned();
        let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((Arc::new(DirOpener { beneath: self.beneath.clone(), dir }), file))
    }
}
