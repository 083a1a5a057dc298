//! The vSphere API client: session, typed calls, bulk property retrieval and task waiting.
//!
//! One [`Client`] is one authenticated session (cookie `vmware_soap_session`) over one
//! keep-alive connection pool. When the server says `NotAuthenticated` (the session expired),
//! the client logs in again once and repeats the call, so long migrations survive vCenter's
//! idle timeout. Tasks are awaited with `WaitForUpdatesEx` on a private PropertyCollector,
//! never by sleeping.
//!
//! The module is split by concern: `transport` posts one SOAP envelope and classifies the
//! reply, `retrieve` builds property specifications and pages `RetrievePropertiesEx`, and
//! `tasks` starts VM tasks (power, snapshots, change tracking) and awaits them. This file holds
//! the session itself: login, re-login on expiry and logout.

mod retrieve;
mod tasks;
mod transport;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, warn};
use url::Url;

use vmigrate_core::http::{apply_tls, classify_error, TlsOptions};
use vmigrate_core::ErrorCode;

use crate::error::VsphereError;
use crate::soap::xml::{self, Element};
use crate::soap::{envelope, esc, method, read_reply, MoRef, Reply};

pub use retrieve::{ObjectContent, PropSpec, RetrieveResult};
pub use tasks::DiskChangeInfo;
pub use transport::sdk_url;
use transport::{moref_of, returnval, soap_post, transport_error};

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
