//! Disks read over HTTPS from a datastore's `/folder` endpoint: the VMDK reader over
//! parallel Range requests, the session cookie refresh, and CBT allocation maps.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tracing::debug;
use url::Url;
use vmigrate_core::transport::{BlockTransport, Extent, ExtentKind};
use vmigrate_core::{Error, ErrorCode, Result};

use vmigrate_core::http::{http_status, HeaderRefresh, HttpOptions, HttpTransport};

use crate::client::Client;
use crate::error::VsphereError;
use crate::soap::MoRef;
use crate::vmdk::ExtentOpener;

use super::inventory::split_datastore_path;

/// Answers 401/403 on datastore reads with a fresh session cookie: the [`Client`] logs in
/// again (once for all parallel readers) and every clone of the transport uses the new cookie.
#[derive(Debug)]
pub(super) struct SessionCookie {
    client: Client,
}

#[async_trait]
impl HeaderRefresh for SessionCookie {
    async fn refresh(&self, rejected: &[(String, String)]) -> Result<Vec<(String, String)>> {
        let stale = rejected.iter().find(|(k, _)| k.eq_ignore_ascii_case("cookie")).map(|(_, v)| v.as_str());
        let cookie = self.client.refresh_session(stale).await?;
        Ok(vec![("Cookie".to_string(), cookie)])
    }
}

/// Map an error of the shared HTTP transport into the vSphere range where it means something
/// vSphere-specific: a 404 is a missing datastore file, a refused certificate is `VsphereTls`.
pub(super) fn datastore_error(file: &str, e: Error) -> Error {
    match (http_status(&e), e.code()) {
        (Some(404), _) => Error::from(VsphereError::DatastoreFileMissing { path: file.to_string() }).with_source(e),
        (_, ErrorCode::HttpTls) => {
            Error::new(ErrorCode::SourceTls, format!("tls verification of {file} failed")).with_source(e)
        }
        _ => e,
    }
}

/// Opens the files a VMDK descriptor names (flat extents, sparse extents, delta parents) on a
/// datastore's `/folder` endpoint as [`HttpTransport`]s: the session cookie as a header
/// (refreshed on 401), the session's TLS trust, parallel connections.
///
/// Names are resolved as VMware does: `[ds] path` is a datastore path, `/vmfs/volumes/<ds>/path`
/// an absolute one, anything else is relative to the descriptor's folder.
#[derive(Debug, Clone)]
pub struct DatastoreOpener {
    client: Client,
    /// Datacenter inventory path (`dcPath`).
    datacenter: String,
    /// Datastore of the descriptor.
    datastore: String,
    /// The descriptor's folder in the datastore, with a trailing `/` (or empty).
    dir: String,
    /// Parallel connections per opened file.
    connections: usize,
}

impl DatastoreOpener {
    /// An opener for files next to the datastore file `[datastore] dir/name.vmdk`.
    pub fn new(client: Client, datacenter: &str, datastore_path: &str, connections: usize) -> Option<Self> {
        let (ds, path) = split_datastore_path(datastore_path)?;
        let dir = path.rsplit_once('/').map(|(d, _)| format!("{d}/")).unwrap_or_default();
        Some(DatastoreOpener {
            client,
            datacenter: datacenter.to_string(),
            datastore: ds.to_string(),
            dir,
            connections: connections.max(1),
        })
    }

    /// `(datastore, path)` of a descriptor-relative name.
    fn resolve(&self, name: &str) -> (String, String) {
        if let Some((ds, path)) = split_datastore_path(name) {
            return (ds.to_string(), path.to_string());
        }
        if let Some(rest) = name.strip_prefix("/vmfs/volumes/") {
            if let Some((ds, path)) = rest.split_once('/') {
                return (ds.to_string(), path.to_string());
            }
        }
        (self.datastore.clone(), format!("{}{name}", self.dir))
    }

    /// The `/folder` URL of `[ds] path`.
    pub fn url(&self, ds: &str, path: &str) -> Url {
        folder_url_of(self.client.url(), &self.datacenter, ds, path)
    }

    /// Options of every transport this opener makes.
    pub fn http_options(&self) -> HttpOptions {
        HttpOptions {
            headers: self.client.cookie().map(|c| vec![("Cookie".to_string(), c)]).unwrap_or_default(),
            tls: self.client.tls_options().clone(),
            connections: self.connections,
            refresh: Some(Arc::new(SessionCookie { client: self.client.clone() })),
            ..HttpOptions::default()
        }
    }
}

pub(super) fn folder_url_of(sdk: &Url, datacenter: &str, ds: &str, path: &str) -> Url {
    let mut url = sdk.clone();
    url.set_path(&format!("/folder/{path}"));
    url.query_pairs_mut().clear().append_pair("dcPath", datacenter).append_pair("dsName", ds);
    url
}

#[async_trait]
impl ExtentOpener for DatastoreOpener {
    async fn open(&self, name: &str) -> Result<Box<dyn BlockTransport>> {
        let (ds, path) = self.resolve(name);
        let file = format!("[{ds}] {path}");
        let url = self.url(&ds, &path);
        let t = HttpTransport::open(url.as_str(), self.http_options()).await.map_err(|e| datastore_error(&file, e))?;
        debug!(file = %file, size = t.size(), "opened datastore file over https");
        Ok(Box::new(t))
    }
}

/// A datastore disk read over HTTPS: the VMDK reader over [`HttpTransport`]s from a
/// [`DatastoreOpener`], with the allocation map from `QueryChangedDiskAreas("*")` when CBT is
/// on (asked per work range), else from the format (grain tables; flat extents are all data).
#[derive(Debug)]
pub struct DatastoreDisk {
    pub(super) inner: Box<dyn BlockTransport>,
    pub(super) file: Arc<str>,
    pub(super) cbt: Option<Arc<CbtMap>>,
}

/// One cached `QueryChangedDiskAreas` answer: (start, length, areas).
pub(super) type CachedAreas = (u64, u64, Vec<(u64, u64)>);

/// Allocation answers from `QueryChangedDiskAreas(changeId="*")`, cached per answered range.
#[derive(Debug)]
pub struct CbtMap {
    pub(super) client: Client,
    pub(super) vm: MoRef,
    pub(super) snapshot: Option<MoRef>,
    pub(super) key: i32,
    pub(super) cache: Mutex<Option<CachedAreas>>,
}

impl CbtMap {
    async fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let cached = self.cache.lock().ok().and_then(|g| g.clone());
        let (start, length, areas) = match cached {
            Some(c) if c.0 <= offset && offset < c.0 + c.1 => c,
            _ => {
                let info = self
                    .client
                    .query_changed_disk_areas(&self.vm, self.snapshot.as_ref(), self.key, offset, "*")
                    .await?;
                let c = (info.start_offset, info.length, info.areas);
                if let Ok(mut g) = self.cache.lock() {
                    *g = Some(c.clone());
                }
                c
            }
        };
        let end = (offset + len).min(start + length.max(1));
        if end <= offset {
            return Ok(vec![Extent::data(offset, len)]);
        }
        let mut out = Vec::new();
        let mut pos = offset;
        for (s, l) in areas {
            let (s, e) = (s.max(offset), (s + l).min(end));
            if s >= e {
                continue;
            }
            if s > pos {
                out.push(Extent::hole(pos, s - pos));
            }
            out.push(Extent::data(s, e - s));
            pos = e;
        }
        if pos < end {
            out.push(Extent::hole(pos, end - pos));
        }
        Ok(vmigrate_core::transport::coalesce(out))
    }
}

#[async_trait]
impl BlockTransport for DatastoreDisk {
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
        Ok(Box::new(DatastoreDisk {
            inner: self.inner.try_clone().await?,
            file: self.file.clone(),
            cbt: self.cbt.clone(),
        }))
    }

    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.inner.read_at(offset, len).await.map_err(|e| datastore_error(&self.file, e))
    }

    async fn write_at(&self, _offset: u64, _data: Bytes) -> Result<()> {
        Err(Error::new(ErrorCode::TransportUnsupported, "vsphere datastore disks are read-only"))
    }

    async fn extents(&self, offset: u64, len: u64, kind: ExtentKind) -> Result<Vec<Extent>> {
        match (&self.cbt, kind) {
            (Some(cbt), ExtentKind::Allocation) => cbt.extents(offset, len).await,
            _ => self.inner.extents(offset, len, kind).await.map_err(|e| datastore_error(&self.file, e)),
        }
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
