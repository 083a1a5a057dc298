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
    /// [`ErrorCode::DatastoreFileMissing`] when it does not exist, [`ErrorCode::Io`] otherwise.
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
                Error::new(ErrorCode::DatastoreFileMissing, format!("disk file {} is missing", path.display()))
                    .with_source(e)
            } else {
                Error::io(format!("opening {}", path.display()), e)
            }
        })?;
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

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// Opens extent files relative to the directory of the descriptor, the way VMware resolves
/// them. An absolute name (`/vmfs/volumes/ds/vm/disk-flat.vmdk`, as ESXi writes for some disks)
/// that does not exist here falls back to its file name inside the directory, since a copied
/// datastore folder keeps the files together.
#[derive(Debug, Clone)]
pub struct DirOpener {
    dir: PathBuf,
}

impl DirOpener {
    /// Resolve names relative to `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirOpener { dir: dir.into() }
    }

    fn resolve(&self, name: &str) -> PathBuf {
        let p = Path::new(name);
        if p.is_absolute() {
            if p.exists() {
                return p.to_path_buf();
            }
            if let Some(base) = p.file_name() {
                return self.dir.join(base);
            }
        }
        self.dir.join(p)
    }
}

#[async_trait]
impl ExtentOpener for DirOpener {
    async fn open(&self, name: &str) -> Result<Box<dyn BlockTransport>> {
        Ok(Box::new(LocalFile::open(&self.resolve(name)).await?))
    }
}
