//! The vSphere API client: session, typed calls, bulk property retrieval and task waiting.
//!
//! One [`Client`] is one authenticated session (cookie `vmware_soap_session`) over one
//! keep-alive connection pool. When the server says `NotAuthenticated` (the session expired),
//! the client logs in again once and repeats the call, so long migrations survive vCenter's
//! idle timeout. Tasks are awaited with `WaitForUpdatesEx` on a private PropertyCollector,
//! never by sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use url::Url;

use vmigrate_core::http::{apply_tls, classify_error, TlsOptions};
use vmigrate_core::ErrorCode;

use crate::error::VsphereError;
use crate::soap::xml::{self, Element};
use crate::soap::{envelope, esc, method, read_reply, MoRef, Reply};

/// Largest SOAP response we accept; a bigger one is treated as malformed (a broken or hostile
/// server must not make us allocate without bound).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Objects per `RetrievePropertiesEx` page.
pub const PAGE_SIZE: u32 = 1000;

/// How to connect: endpoint, credentials and TLS policy.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// `https://vcenter/sdk` (the `/sdk` path is added when missing). Plain `http` only to
    /// loopback addresses.
    pub url: String,
    /// User name.
    pub username: String,
    /// Password; never logged, never in errors or `Debug`.
    pub password: String,
    /// Pinned certificate thumbprint (SHA-256, or SHA-1), `AB:CD:..`: exactly that certificate
    /// is accepted (see [`vmigrate_core::http::TlsOptions`]).
    pub thumbprint: Option<String>,
    /// PEM CA bundle to verify with instead of the system roots.
    pub ca_pem: Option<String>,
    /// Accept any certificate.
    pub insecure: bool,
    /// Directory of the VMware VDDK library: read disks through `nbdkit vddk` instead of HTTPS.
    pub vddk_lib_dir: Option<String>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("thumbprint", &self.thumbprint)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("insecure", &self.insecure)
            .field("vddk_lib_dir", &self.vddk_lib_dir)
            .finish()
    }
}

/// The parts of the ServiceContent we use.
#[derive(Debug, Clone)]
pub struct ServiceContent {
    /// Root folder.
    pub root_folder: MoRef,
    /// The PropertyCollector singleton.
    pub property_collector: MoRef,
    /// ViewManager.
    pub view_manager: MoRef,
    /// SessionManager.
    pub session_manager: MoRef,
    /// API version (`7.0.3.0`).
    pub api_version: String,
    /// `VirtualCenter` or `HostAgent`.
    pub api_type: String,
}

/// One object of a property retrieval: its reference and the requested properties.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// `(path, value element)` pairs.
    pub props: Vec<(String, Element)>,
}

impl ObjectContent {
    /// The value of a property path, if returned.
    pub fn get(&self, path: &str) -> Option<&Element> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// The text of a property path.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).map(|e| e.text.as_str())
    }
}

/// One page of a `RetrievePropertiesEx` answer.
#[derive(Debug, Clone, Default)]
pub struct RetrieveResult {
    /// Objects of this page.
    pub objects: Vec<ObjectContent>,
    /// Token for `ContinueRetrievePropertiesEx` when more pages follow.
    pub token: Option<String>,
}

/// A property specification: which properties of which type.
#[derive(Debug, Clone)]
pub struct PropSpec<'a> {
    /// Managed object type.
    pub kind: &'a str,
    /// Property paths.
    pub paths: &'a [&'a str],
}

/// The answer of `QueryChangedDiskAreas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChangeInfo {
    /// Start of the covered range.
    pub start_offset: u64,
    /// Length of the covered range.
    pub length: u64,
    /// Changed (or allocated) areas `(start, length)`.
    pub areas: Vec<(u64, u64)>,
}

struct Session {
    cookie: Option<String>,
    generation: u64,
}

struct Inner {
    http: reqwest::Client,
    tls: TlsOptions,
    sdk: Url,
    username: String,
    password: String,
    content: ServiceContent,
    session: Mutex<Session>,
    relogin: tokio::sync::Mutex<()>,
    round_trips: AtomicU64,
    peer_cert: Mutex<Option<Vec<u8>>>,
    logged_out: std::sync::atomic::AtomicBool,
}

/// An authenticated vSphere API session. Cheap to clone (shared session).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.sdk.as_str())
            .field("username", &self.inner.username)
            .field("api_version", &self.inner.content.api_version)
            .finish_non_exhaustive()
    }
}

/// Normalise the endpoint: strip user info, add `/sdk`, refuse plain http to non-loopback hosts.
///
/// # Errors
/// [`VsphereError::BadUrl`].
pub fn sdk_url(raw: &str) -> Result<Url, VsphereError> {
    let mut url = Url::parse(raw).map_err(|e| VsphereError::BadUrl { url: redact(raw), reason: e.to_string() })?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let shown = url.to_string();
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(VsphereError::BadUrl {
                    url: shown,
                    reason: "plain http is only allowed to loopback addresses; use https".into(),
                });
            }
        }
        s => return Err(VsphereError::BadUrl { url: shown, reason: format!("scheme {s:?} is not http(s)") }),
    }
    if url.host().is_none() {
        return Err(VsphereError::BadUrl { url: shown, reason: "no host".into() });
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/sdk");
    }
    Ok(url)
}

fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

/// Classify a transport error with the shared HTTP code and map it into the vSphere range:
/// [`ErrorCode::HttpTls`] becomes [`VsphereError::Tls`] (2002), the rest
/// [`VsphereError::Connect`] (2001).
pub(crate) fn transport_error(url: &Url, e: reqwest::Error) -> VsphereError {
    let url = url.to_string();
    let source = classify_error("vsphere request", e);
    if source.code() == ErrorCode::HttpTls {
        VsphereError::Tls { url, source }
    } else {
        VsphereError::Connect { url, source }
    }
}

/// Read a response body up to `limit` bytes.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
    url: &Url,
) -> Result<Vec<u8>, VsphereError> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(VsphereError::Malformed {
                        method: what.to_string(),
                        detail: format!("response larger than {limit} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(url, e)),
        }
    }
}

fn moref_of(el: &Element, what: &str) -> Result<MoRef, VsphereError> {
    MoRef::from_element(el).ok_or_else(|| VsphereError::Malformed {
        method: what.to_string(),
        detail: format!("element {} is not a managed object reference", el.name),
    })
}

fn returnval<'a>(resp: &'a Element, what: &str) -> Result<&'a Element, VsphereError> {
    resp.child("returnval")
        .ok_or_else(|| VsphereError::Malformed { method: what.to_string(), detail: "no returnval".into() })
}

impl Client {
    /// Connect and log in.
    ///
    /// # Errors
    /// [`VsphereError::BadUrl`], [`VsphereError::Connect`], [`VsphereError::Tls`],
    /// [`VsphereError::InvalidLogin`], [`VsphereError::Malformed`].
    ///
    /// # Cancel safety
    /// Dropping the future before it completes may leave a server-side session that expires.
    pub async fn connect(opts: &ConnectOptions) -> Result<Client, VsphereError> {
        let sdk = sdk_url(&opts.url)?;
        let tls = TlsOptions {
            ca_pem: opts.ca_pem.as_ref().map(|p| p.clone().into_bytes()),
            thumbprint_sha256: opts.thumbprint.clone(),
            insecure: opts.insecure,
        };
        if opts.insecure {
            warn!(url = %sdk, "tls verification disabled (insecure)");
        }
        let builder = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_keepalive(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(30))
            .tls_info(true)
            .user_agent(concat!("vmigrate/", env!("CARGO_PKG_VERSION")));
        let builder =
            apply_tls(builder, &tls).map_err(|e| VsphereError::BadUrl { url: sdk.to_string(), reason: e.report() })?;
        let http = builder.build().map_err(|e| transport_error(&sdk, e))?;
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let reply = soap_post(
            &http,
            &sdk,
            None,
            "RetrieveServiceContent",
            &method("RetrieveServiceContent", &si, ""),
            &opts.username,
        )
        .await?;
        let sc = returnval(&reply.element, "RetrieveServiceContent")?;
        let get = |name: &str| -> Result<MoRef, VsphereError> {
            sc.child(name).and_then(MoRef::from_element).ok_or_else(|| VsphereError::Malformed {
                method: "RetrieveServiceContent".into(),
                detail: format!("no {name}"),
            })
        };
        let content = ServiceContent {
            root_folder: get("rootFolder")?,
            property_collector: get("propertyCollector")?,
            view_manager: get("viewManager")?,
            session_manager: get("sessionManager")?,
            api_version: sc.text_at(&["about", "apiVersion"]).unwrap_or("").to_string(),
            api_type: sc.text_at(&["about", "apiType"]).unwrap_or("").to_string(),
        };
        let inner = Inner {
            http,
            tls,
            sdk,
            username: opts.username.clone(),
            password: opts.password.clone(),
            content,
            session: Mutex::new(Session { cookie: None, generation: 0 }),
            relogin: tokio::sync::Mutex::new(()),
            round_trips: AtomicU64::new(1),
            peer_cert: Mutex::new(reply.peer_cert),
            logged_out: std::sync::atomic::AtomicBool::new(false),
        };
        let client = Client { inner: Arc::new(inner) };
        client.login().await?;
        debug!(url = %client.inner.sdk, api = %client.inner.content.api_version, "vsphere session open");
        Ok(client)
    }

    /// The ServiceContent references.
    pub fn service_content(&self) -> &ServiceContent {
        &self.inner.content
    }

    /// The `/sdk` endpoint URL (no user info).
    pub fn url(&self) -> &Url {
        &self.inner.sdk
    }

    /// The user name of the session.
    pub fn username(&self) -> &str {
        &self.inner.username
    }

    /// How many HTTP round trips this client has made (for benchmarks and tests).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// The server's leaf certificate (DER) as seen on the first connection.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.inner.peer_cert.lock().ok().and_then(|g| g.clone())
    }

    /// The current session cookie header value (`vmware_soap_session=...`), for datastore
    /// `/folder` requests.
    pub fn cookie(&self) -> Option<String> {
        self.inner.session.lock().ok().and_then(|s| s.cookie.clone())
    }

    /// The HTTP client (shared pool, TLS policy applied), for datastore reads.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The certificate trust this session was opened with, so datastore reads (through
    /// [`vmigrate_core::http::HttpTransport`]) trust exactly what the SOAP session trusts.
    pub fn tls_options(&self) -> &TlsOptions {
        &self.inner.tls
    }

    /// Log in again because `rejected` (a `vmware_soap_session=...` cookie) was refused, and
    /// return the new cookie. When another task already replaced the rejected cookie, the
    /// current one is returned without a second login, so parallel readers share one re-login.
    ///
    /// # Errors
    /// [`VsphereError::NotAuthenticated`] after [`Client::logout`]; login errors.
    ///
    /// # Cancel safety
    /// Cancel safe: the re-login is serialised by a lock, and a cancelled login leaves no cookie,
    /// so the next caller logs in.
    pub async fn refresh_session(&self, rejected: Option<&str>) -> Result<String, VsphereError> {
        if self.inner.logged_out.load(Ordering::SeqCst) {
            return Err(VsphereError::NotAuthenticated);
        }
        let _guard = self.inner.relogin.lock().await;
        if let Some(now) = self.cookie() {
            if rejected != Some(now.as_str()) {
                return Ok(now);
            }
        }
        warn!(url = %self.inner.sdk, "vsphere session refused on a datastore read; logging in again");
        if let Ok(mut s) = self.inner.session.lock() {
            s.cookie = None;
        }
        self.login().await?;
        if let Ok(mut s) = self.inner.session.lock() {
            s.generation += 1;
        }
        self.cookie().ok_or(VsphereError::NotAuthenticated)
    }

    async fn login(&self) -> Result<(), VsphereError> {
        let args = format!(
            "<userName>{}</userName><password>{}</password>",
            esc(&self.inner.username),
            esc(&self.inner.password)
        );
        let body = method("Login", &self.inner.content.session_manager, &args);
        self.raw_call("Login", &body).await?;
        if self.cookie().is_none() {
            return Err(VsphereError::Malformed { method: "Login".into(), detail: "no session cookie".into() });
        }
        Ok(())
    }

    /// End the session. Later calls fail with `NotAuthenticated` (no automatic re-login).
    ///
    /// # Errors
    /// Transport and fault errors of `Logout`.
    pub async fn logout(&self) -> Result<(), VsphereError> {
        if self.inner.logged_out.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let body = method("Logout", &self.inner.content.session_manager, "");
        let r = self.raw_call("Logout", &body).await.map(|_| ());
        if let Ok(mut s) = self.inner.session.lock() {
            s.cookie = None;
        }
        r
    }

    /// One POST without re-login; records the session cookie.
    async fn raw_call(&self, name: &str, body: &str) -> Result<Element, VsphereError> {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let reply =
            soap_post(&self.inner.http, &self.inner.sdk, self.cookie(), name, body, &self.inner.username).await?;
        if let Some(c) = reply.cookie {
            if let Ok(mut sess) = self.inner.session.lock() {
                sess.cookie = Some(c);
            }
        }
        if let (Some(der), Ok(mut slot)) = (reply.peer_cert, self.inner.peer_cert.lock()) {
            if slot.is_none() {
                *slot = Some(der);
            }
        }
        reply.result
    }

    /// Call a method, logging in again once if the session expired.
    ///
    /// # Errors
    /// Transport, fault and parse errors as typed [`VsphereError`]s.
    pub async fn call(&self, name: &str, body: &str) -> Result<Element, VsphereError> {
        let generation = self.inner.session.lock().map(|s| s.generation).unwrap_or(0);
        match self.raw_call(name, body).await {
            Err(VsphereError::NotAuthenticated) if !self.inner.logged_out.load(Ordering::SeqCst) => {
                {
                    let _guard = self.inner.relogin.lock().await;
                    let now = self.inner.session.lock().map(|s| s.generation).unwrap_or(0);
                    if now == generation {
                        warn!(url = %self.inner.sdk, "vsphere session expired; logging in again");
                        if let Ok(mut s) = self.inner.session.lock() {
                            s.cookie = None;
                        }
                        self.login().await?;
                        if let Ok(mut s) = self.inner.session.lock() {
                            s.generation += 1;
                        }
                    }
                }
                self.raw_call(name, body).await
            }
            other => other,
        }
    }

    /// `ViewManager.CreateContainerView`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn create_container_view(
        &self,
        container: &MoRef,
        types: &[&str],
        recursive: bool,
    ) -> Result<MoRef, VsphereError> {
        let mut args = container.to_xml("container");
        for t in types {
            args.push_str(&format!("<type>{}</type>", esc(t)));
        }
        args.push_str(&format!("<recursive>{recursive}</recursive>"));
        let r = self
            .call("CreateContainerView", &method("CreateContainerView", &self.inner.content.view_manager, &args))
            .await?;
        moref_of(returnval(&r, "CreateContainerView")?, "CreateContainerView")
    }

    /// `View.DestroyView`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn destroy_view(&self, view: &MoRef) -> Result<(), VsphereError> {
        self.call("DestroyView", &method("DestroyView", view, "")).await.map(|_| ())
    }

    fn prop_set(props: &[PropSpec<'_>]) -> String {
        let mut s = String::new();
        for p in props {
            s.push_str(&format!("<propSet><type>{}</type>", esc(p.kind)));
            for path in p.paths {
                s.push_str(&format!("<pathSet>{}</pathSet>", esc(path)));
            }
            s.push_str("</propSet>");
        }
        s
    }

    /// Spec selecting every object of a ContainerView.
    pub fn view_spec(view: &MoRef, props: &[PropSpec<'_>]) -> String {
        format!(
            concat!(
                "<specSet>{}<objectSet>{}<skip>true</skip>",
                "<selectSet xsi:type=\"TraversalSpec\"><name>traverseView</name><type>ContainerView</type>",
                "<path>view</path><skip>false</skip></selectSet></objectSet></specSet>"
            ),
            Self::prop_set(props),
            view.to_xml("obj")
        )
    }

    /// Spec selecting explicit objects.
    pub fn objects_spec(objs: &[MoRef], props: &[PropSpec<'_>]) -> String {
        let mut s = format!("<specSet>{}", Self::prop_set(props));
        for o in objs {
            s.push_str(&format!("<objectSet>{}<skip>false</skip></objectSet>", o.to_xml("obj")));
        }
        s.push_str("</specSet>");
        s
    }

    fn parse_retrieve(resp: &Element) -> RetrieveResult {
        let Some(rv) = resp.child("returnval") else { return RetrieveResult::default() };
        let objects = rv
            .all("objects")
            .filter_map(|o| {
                let obj = o.child("obj").and_then(MoRef::from_element)?;
                let props = o
                    .all("propSet")
                    .filter_map(|p| Some((p.text_at(&["name"])?.to_string(), p.child("val")?.clone())))
                    .collect();
                Some(ObjectContent { obj, props })
            })
            .collect();
        RetrieveResult { objects, token: rv.text_at(&["token"]).filter(|t| !t.is_empty()).map(str::to_string) }
    }

    /// `PropertyCollector.RetrievePropertiesEx` with a prepared `<specSet>`, one page.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn retrieve_properties_ex(
        &self,
        spec_set: &str,
        max_objects: u32,
    ) -> Result<RetrieveResult, VsphereError> {
        let args = format!("{spec_set}<options><maxObjects>{max_objects}</maxObjects></options>");
        let r = self
            .call(
                "RetrievePropertiesEx",
                &method("RetrievePropertiesEx", &self.inner.content.property_collector, &args),
            )
            .await?;
        Ok(Self::parse_retrieve(&r))
    }

    /// `PropertyCollector.ContinueRetrievePropertiesEx`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn continue_retrieve_properties_ex(&self, token: &str) -> Result<RetrieveResult, VsphereError> {
        let args = format!("<token>{}</token>", esc(token));
        let r = self
            .call(
                "ContinueRetrievePropertiesEx",
                &method("ContinueRetrievePropertiesEx", &self.inner.content.property_collector, &args),
            )
            .await?;
        // The continue call answers a RetrieveResult directly as returnval.
        Ok(Self::parse_retrieve(&r))
    }

    /// Every page of a retrieval.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn retrieve_all(&self, spec_set: &str) -> Result<Vec<ObjectContent>, VsphereError> {
        let mut page = self.retrieve_properties_ex(spec_set, PAGE_SIZE).await?;
        let mut out = std::mem::take(&mut page.objects);
        while let Some(token) = page.token.take() {
            page = self.continue_retrieve_properties_ex(&token).await?;
            out.append(&mut page.objects);
        }
        Ok(out)
    }

    /// Properties of one object; `ManagedObjectNotFound` (or an empty answer) is
    /// [`VsphereError::NotFound`].
    ///
    /// # Errors
    /// Typed faults.
    pub async fn object_properties(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent, VsphereError> {
        let spec = Self::objects_spec(std::slice::from_ref(obj), &[PropSpec { kind: &obj.kind, paths }]);
        let mut objs = self.retrieve_all(&spec).await?;
        match objs.iter().position(|o| &o.obj == obj) {
            Some(i) => Ok(objs.swap_remove(i)),
            None => Err(VsphereError::NotFound { object: obj.to_string() }),
        }
    }

    async fn task_call(&self, name: &str, this: &MoRef, args: &str) -> Result<MoRef, VsphereError> {
        let r = self.call(name, &method(name, this, args)).await?;
        moref_of(returnval(&r, name)?, name)
    }

    /// Start `PowerOffVM_Task`.
    ///
    /// # Errors
    /// Typed faults (`InvalidPowerState` when already off).
    pub async fn power_off_vm(&self, vm: &MoRef) -> Result<MoRef, VsphereError> {
        self.task_call("PowerOffVM_Task", vm, "").await
    }

    /// Start `PowerOnVM_Task`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn power_on_vm(&self, vm: &MoRef) -> Result<MoRef, VsphereError> {
        self.task_call("PowerOnVM_Task", vm, "").await
    }

    /// Ask VMware Tools to shut the guest down (returns at once).
    ///
    /// # Errors
    /// Typed faults (`ToolsUnavailable`, `InvalidPowerState`).
    pub async fn shutdown_guest(&self, vm: &MoRef) -> Result<(), VsphereError> {
        self.call("ShutdownGuest", &method("ShutdownGuest", vm, "")).await.map(|_| ())
    }

    /// Start `CreateSnapshot_Task` (no memory, no quiescing unless asked).
    ///
    /// # Errors
    /// Typed faults.
    pub async fn create_snapshot(
        &self,
        vm: &MoRef,
        name: &str,
        description: &str,
        quiesce: bool,
    ) -> Result<MoRef, VsphereError> {
        let args = format!(
            "<name>{}</name><description>{}</description><memory>false</memory><quiesce>{quiesce}</quiesce>",
            esc(name),
            esc(description)
        );
        self.task_call("CreateSnapshot_Task", vm, &args).await
    }

    /// Start `RemoveSnapshot_Task` (children kept, disks consolidated).
    ///
    /// # Errors
    /// Typed faults.
    pub async fn remove_snapshot(&self, snapshot: &MoRef) -> Result<MoRef, VsphereError> {
        self.task_call(
            "RemoveSnapshot_Task",
            snapshot,
            "<removeChildren>false</removeChildren><consolidate>true</consolidate>",
        )
        .await
    }

    /// Start `ReconfigVM_Task` setting `changeTrackingEnabled`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn set_change_tracking(&self, vm: &MoRef, enabled: bool) -> Result<MoRef, VsphereError> {
        let args = format!("<spec><changeTrackingEnabled>{enabled}</changeTrackingEnabled></spec>");
        self.task_call("ReconfigVM_Task", vm, &args).await
    }

    /// `VirtualMachine.QueryChangedDiskAreas`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn query_changed_disk_areas(
        &self,
        vm: &MoRef,
        snapshot: Option<&MoRef>,
        device_key: i32,
        start_offset: u64,
        change_id: &str,
    ) -> Result<DiskChangeInfo, VsphereError> {
        let mut args = String::new();
        if let Some(s) = snapshot {
            args.push_str(&s.to_xml("snapshot"));
        }
        args.push_str(&format!(
            "<deviceKey>{device_key}</deviceKey><startOffset>{start_offset}</startOffset><changeId>{}</changeId>",
            esc(change_id)
        ));
        let r = self.call("QueryChangedDiskAreas", &method("QueryChangedDiskAreas", vm, &args)).await?;
        let rv = returnval(&r, "QueryChangedDiskAreas")?;
        let bad = |d: &str| VsphereError::Malformed { method: "QueryChangedDiskAreas".into(), detail: d.into() };
        let start_offset = rv.num_at(&["startOffset"]).ok_or_else(|| bad("no startOffset"))?;
        let length = rv.num_at(&["length"]).ok_or_else(|| bad("no length"))?;
        let mut areas = Vec::new();
        for a in rv.all("changedArea") {
            let s: u64 = a.num_at(&["start"]).ok_or_else(|| bad("changedArea without start"))?;
            let l: u64 = a.num_at(&["length"]).ok_or_else(|| bad("changedArea without length"))?;
            areas.push((s, l));
        }
        Ok(DiskChangeInfo { start_offset, length, areas })
    }

    /// Wait, through a private PropertyCollector and `WaitForUpdatesEx`, until `done` accepts
    /// the object's properties or `timeout` passes. Returns the last property values.
    ///
    /// # Errors
    /// [`VsphereError::Timeout`]; typed faults.
    pub async fn wait_for(
        &self,
        obj: &MoRef,
        paths: &[&str],
        timeout: Duration,
        mut done: impl FnMut(&[(String, Element)]) -> bool,
    ) -> Result<Vec<(String, Element)>, VsphereError> {
        let deadline = Instant::now() + timeout;
        let pc_resp = self
            .call(
                "CreatePropertyCollector",
                &method("CreatePropertyCollector", &self.inner.content.property_collector, ""),
            )
            .await?;
        let pc = moref_of(returnval(&pc_resp, "CreatePropertyCollector")?, "CreatePropertyCollector")?;
        let result = async {
            let spec = Self::objects_spec(std::slice::from_ref(obj), &[PropSpec { kind: &obj.kind, paths }])
                .replace("<specSet>", "<spec>")
                .replace("</specSet>", "</spec>");
            self.call(
                "CreateFilter",
                &method("CreateFilter", &pc, &format!("{spec}<partialUpdates>false</partialUpdates>")),
            )
            .await?;
            let mut values: Vec<(String, Element)> = Vec::new();
            let mut version = String::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(VsphereError::Timeout {
                        what: format!("{obj} {}", paths.join(",")),
                        seconds: timeout.as_secs(),
                    });
                }
                let wait = left.as_secs().clamp(1, 60);
                let args = format!(
                    "<version>{}</version><options><maxWaitSeconds>{wait}</maxWaitSeconds></options>",
                    esc(&version)
                );
                let r = self.call("WaitForUpdatesEx", &method("WaitForUpdatesEx", &pc, &args)).await?;
                if let Some(us) = r.child("returnval") {
                    version = us.text_at(&["version"]).unwrap_or("").to_string();
                    for fs in us.all("filterSet") {
                        for os in fs.all("objectSet") {
                            if os.kind_is_leave() {
                                return Err(VsphereError::NotFound { object: obj.to_string() });
                            }
                            for cs in os.all("changeSet") {
                                let Some(name) = cs.text_at(&["name"]) else { continue };
                                values.retain(|(n, _)| n != name);
                                if let Some(v) = cs.child("val") {
                                    values.push((name.to_string(), v.clone()));
                                }
                            }
                        }
                    }
                }
                if done(&values) {
                    return Ok(values);
                }
            }
        }
        .await;
        let _ = self.call("DestroyPropertyCollector", &method("DestroyPropertyCollector", &pc, "")).await;
        result
    }

    /// Wait for a task to end; returns its `info.result` element on success.
    ///
    /// # Errors
    /// The task's fault as a typed error ([`VsphereError::TaskInProgress`],
    /// [`VsphereError::InvalidState`], [`VsphereError::TaskFailed`], ...); [`VsphereError::Timeout`].
    pub async fn wait_task(&self, task: &MoRef, timeout: Duration) -> Result<Option<Element>, VsphereError> {
        let values = self
            .wait_for(task, &["info.state", "info.error", "info.result"], timeout, |v| {
                v.iter().any(|(n, e)| n == "info.state" && matches!(e.text.as_str(), "success" | "error"))
            })
            .await?;
        let state = values.iter().find(|(n, _)| n == "info.state").map(|(_, e)| e.text.clone()).unwrap_or_default();
        if state == "success" {
            return Ok(values.into_iter().find(|(n, _)| n == "info.result").map(|(_, e)| e));
        }
        let err = values.iter().find(|(n, _)| n == "info.error").map(|(_, e)| e);
        let (fault, message) = match err {
            Some(e) => (
                e.child("fault").map(crate::soap::fault_kind).unwrap_or_else(|| "Fault".into()),
                e.text_at(&["localizedMessage"]).unwrap_or("").to_string(),
            ),
            None => ("Fault".into(), String::new()),
        };
        Err(match VsphereError::from_fault(&fault, &message, None, &self.inner.username) {
            VsphereError::Fault { fault, message } => {
                VsphereError::TaskFailed { task: task.to_string(), fault, message }
            }
            VsphereError::TaskInProgress { message, .. } => {
                VsphereError::TaskInProgress { object: task.to_string(), message }
            }
            other => other,
        })
    }
}

trait ObjectUpdateExt {
    fn kind_is_leave(&self) -> bool;
}

impl ObjectUpdateExt for Element {
    fn kind_is_leave(&self) -> bool {
        self.text_at(&["kind"]) == Some("leave")
    }
}

struct PostReply {
    element: Element,
    result: Result<Element, VsphereError>,
    cookie: Option<String>,
    peer_cert: Option<Vec<u8>>,
}

/// One SOAP POST: send, read (bounded), parse, classify faults.
async fn soap_post(
    http: &reqwest::Client,
    url: &Url,
    cookie: Option<String>,
    name: &str,
    body: &str,
    username: &str,
) -> Result<PostReply, VsphereError> {
    let mut req = http
        .post(url.clone())
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "urn:vim25/7.0")
        .body(envelope(body));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let resp = req.send().await.map_err(|e| transport_error(url, e))?;
    let peer_cert =
        resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|info| info.peer_certificate().map(<[u8]>::to_vec));
    let mut new_cookie = None;
    for v in resp.headers().get_all("set-cookie") {
        if let Ok(s) = v.to_str() {
            if let Some(pair) = s.split(';').next().filter(|p| p.trim_start().starts_with("vmware_soap_session=")) {
                new_cookie = Some(pair.trim().to_string());
            }
        }
    }
    let status = resp.status();
    if !(status.is_success() || status.as_u16() == 500) {
        return Err(VsphereError::HttpStatus { method: name.to_string(), status: status.as_u16() });
    }
    let bytes = read_limited(resp, MAX_RESPONSE_BYTES, name, url).await?;
    let root = xml::parse(&bytes).map_err(|detail| VsphereError::Malformed { method: name.to_string(), detail })?;
    let reply = read_reply(&root).map_err(|detail| VsphereError::Malformed { method: name.to_string(), detail })?;
    let (element, result) = match reply {
        Reply::Ok(el) => (el.clone(), Ok(el)),
        Reply::Fault(f) => {
            debug!(method = name, fault = %f.kind, "soap fault");
            (Element::default(), Err(VsphereError::from_fault(&f.kind, &f.message, f.object.as_deref(), username)))
        }
    };
    if let Err(e) = &result {
        if name == "RetrieveServiceContent" {
            return Err(VsphereError::Malformed { method: name.into(), detail: e.to_string() });
        }
    }
    Ok(PostReply { element, result, cookie: new_cookie, peer_cert })
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best-effort logout when the last handle goes away without close().
        if self.logged_out.load(Ordering::SeqCst) || self.password.is_empty() {
            return;
        }
        let cookie = self.session.lock().ok().and_then(|s| s.cookie.clone());
        let Some(cookie) = cookie else { return };
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let http = self.http.clone();
        let url = self.sdk.clone();
        let body = envelope(&method("Logout", &self.content.session_manager, ""));
        handle.spawn(async move {
            let _ = http
                .post(url)
                .header("Content-Type", "text/xml; charset=utf-8")
                .header("Cookie", cookie)
                .body(body)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_urls_are_normalised_and_http_is_loopback_only() {
        assert_eq!(sdk_url("https://vc.example.com").expect("ok").as_str(), "https://vc.example.com/sdk");
        assert_eq!(sdk_url("https://u:secret@vc/sdk").expect("ok").as_str(), "https://vc/sdk");
        assert!(sdk_url("http://127.0.0.1:8989/sdk").is_ok());
        assert!(sdk_url("http://[::1]:8989/sdk").is_ok());
        let e = sdk_url("http://vc.example.com/sdk").expect_err("non-loopback http");
        assert!(matches!(e, VsphereError::BadUrl { .. }));
        let e = sdk_url("ftp://u:hunter2@vc/").expect_err("scheme");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn options_debug_redacts_password() {
        let o = ConnectOptions { password: "hunter2".into(), ..Default::default() };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
