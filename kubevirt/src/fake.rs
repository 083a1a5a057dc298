//! In-process fakes for tests (feature `fake-api`): a Kubernetes API server that records and
//! asserts requests and plays back status changes, and a CDI upload proxy that checks the token,
//! decompresses zstd like CDI does (by magic bytes) and stores what it received.
//!
//! Both listen on `127.0.0.1` on a free port; [`FakeKube::client`] gives a `kube::Client`
//! pointed at the fake.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

/// One request the fake API received.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Body parsed as JSON or YAML (`Null` when empty).
    pub body: Value,
}

/// A scripted error answer.
#[derive(Debug, Clone)]
struct Failure {
    method: Method,
    path_contains: String,
    status: u16,
    reason: String,
    remaining: usize,
}

#[derive(Debug, Default)]
struct KubeState {
    requests: Vec<Recorded>,
    /// Object path (`/apis/.../namespaces/ns/kind/name`) -> object.
    objects: BTreeMap<String, Value>,
    /// Object path -> statuses to hand out, one per GET (the last one sticks).
    statuses: BTreeMap<String, VecDeque<Value>>,
    failures: Vec<Failure>,
    /// API group/versions served (`kubevirt.io/v1`, `v1`, ...).
    groups: Vec<String>,
    /// Extra fixed answers for GETs on a path.
    fixed: BTreeMap<String, Value>,
    token: String,
}

/// The fake Kubernetes API server.
#[derive(Debug, Clone)]
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<Mutex<KubeState>>,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes).or_else(|_| serde_yaml_ng::from_slice(bytes)).unwrap_or(Value::Null)
}

fn matches_selector(obj: &Value, query: &str) -> bool {
    let Some(sel) = query.split('&').find_map(|kv| kv.strip_prefix("labelSelector=")) else { return true };
    let sel = sel.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/");
    sel.split(',').filter(|s| !s.is_empty()).all(|kv| {
        let labels = obj.pointer("/metadata/labels");
        match kv.split_once('=') {
            Some((k, v)) => labels.and_then(|l| l.get(k)).and_then(Value::as_str) == Some(v),
            // `key` alone: the label exists, whatever its value.
            None => labels.and_then(|l| l.get(kv)).is_some(),
        }
    })
}

/// Which API group/version a path belongs to (`/api/v1/...` -> `v1`, `/apis/g/v/...` -> `g/v`).
fn group_of(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", v, ..] => Some((*v).to_string()),
        ["apis", g, v, ..] => Some(format!("{g}/{v}")),
        _ => None,
    }
}

/// The resources (plurals) discovery lists for a served group/version: those the target uses.
fn resources_of(group: &str) -> &'static [&'static str] {
    match group {
        "v1" => &["namespaces", "secrets", "services", "persistentvolumeclaims", "configmaps"],
        "batch/v1" => &["jobs"],
        "networking.k8s.io/v1" => &["ingresses"],
        "storage.k8s.io/v1" => &["storageclasses"],
        "kubevirt.io/v1" => &["virtualmachines", "virtualmachineinstances"],
        "cdi.kubevirt.io/v1beta1" => &["datavolumes", "cdiconfigs", "storageprofiles"],
        "upload.cdi.kubevirt.io/v1beta1" => &["uploadtokenrequests"],
        "route.openshift.io/v1" => &["routes"],
        "k8s.cni.cncf.io/v1" => &["network-attachment-definitions"],
        _ => &[],
    }
}

impl FakeKube {
    /// Start a fake serving the core, batch, networking, KubeVirt, CDI, upload and Route APIs
    /// plus NetworkAttachmentDefinitions; token requests answer `token`.
    pub async fn start(token: &str) -> FakeKube {
        let state = Arc::new(Mutex::new(KubeState {
            groups: [
                "v1",
                "batch/v1",
                "networking.k8s.io/v1",
                "storage.k8s.io/v1",
                "kubevirt.io/v1",
                "cdi.kubevirt.io/v1beta1",
                "upload.cdi.kubevirt.io/v1beta1",
                "route.openshift.io/v1",
                "k8s.cni.cncf.io/v1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            token: token.to_string(),
            ..Default::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube { addr, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KubeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube client talking to this fake, default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let url: axum::http::Uri = self.url().parse().expect("fake url parses");
        let config = kube::Config::new(url);
        kube::Client::try_from(config).expect("client for the fake")
    }

    /// Remove an API group/version (simulate KubeVirt, CDI or Routes not installed).
    pub fn uninstall(&self, group_version: &str) {
        self.lock().groups.retain(|g| g != group_version);
    }

    /// Put an object at its path (namespaces, storage classes, NADs, existing VMs).
    pub fn insert(&self, path: &str, obj: Value) {
        self.lock().objects.insert(path.to_string(), obj);
    }

    /// Whether an object exists at a path.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.lock().objects.get(path).cloned()
    }

    /// Answer GETs of `path` with this JSON.
    pub fn fixed(&self, path: &str, v: Value) {
        self.lock().fixed.insert(path.to_string(), v);
    }

    /// Statuses handed out by successive GETs of the object at `path` (the last one sticks).
    pub fn play_statuses(&self, path: &str, statuses: Vec<Value>) {
        self.lock().statuses.insert(path.to_string(), statuses.into());
    }

    /// Answer the next `times` requests with `method` on a path containing `path_contains` with
    /// an error status.
    pub fn fail(&self, method: Method, path_contains: &str, status: u16, reason: &str, times: usize) {
        self.lock().failures.push(Failure {
            method,
            path_contains: path_contains.into(),
            status,
            reason: reason.into(),
            remaining: times,
        });
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Assert every PATCH was a server-side apply by `vmigrate` (content type and field manager).
    pub fn assert_applies_are_ssa(&self) {
        for r in self.requests().iter().filter(|r| r.method == "PATCH") {
            assert_eq!(r.content_type.as_deref(), Some("application/apply-patch+yaml"), "{} {}", r.method, r.path);
            assert!(r.query.contains("fieldManager=vmigrate"), "no field manager: {}?{}", r.path, r.query);
        }
    }
}

async fn handle(State(state): State<Arc<Mutex<KubeState>>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = to_bytes(req.into_body(), 64 << 20).await.unwrap_or_default();
    let body = parse_body(&bytes);
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    st.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: ct,
        body: body.clone(),
    });

    if let Some(f) =
        st.failures.iter_mut().find(|f| f.remaining > 0 && f.method == method && path.contains(&f.path_contains))
    {
        f.remaining -= 1;
        let (code, reason) = (f.status, f.reason.clone());
        return (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(status_body(code, &reason, &format!("{reason} (scripted)"))),
        )
            .into_response();
    }
    if let Some(v) = st.fixed.get(&path) {
        return axum::Json(v.clone()).into_response();
    }
    let Some(group) = group_of(&path) else { return StatusCode::NOT_FOUND.into_response() };
    if !st.groups.contains(&group) {
        // What a real kube-apiserver answers for an API group/version it does not serve: a
        // plain-text body, no JSON Status (checked against the real server in tests/realkube.rs).
        return (StatusCode::NOT_FOUND, [("content-type", "text/plain; charset=utf-8")], "404 page not found\n")
            .into_response();
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let base = if segs[0] == "api" { 2 } else { 3 };
    let rest = &segs[base..];
    // Discovery of a group/version.
    if rest.is_empty() {
        let resources: Vec<Value> = resources_of(&group)
            .iter()
            .map(|r| json!({"name": r, "singularName": "", "namespaced": true, "kind": "", "verbs": ["get", "list"]}))
            .collect();
        return axum::Json(json!({"kind": "APIResourceList", "groupVersion": group, "resources": resources}))
            .into_response();
    }
    // Collection vs object: .../namespaces/ns/plural[/name] or .../plural[/name].
    let is_object = match rest {
        ["namespaces", _] => true,
        ["namespaces", _, _] => false,
        ["namespaces", _, _, _] => true,
        [_] => false,
        [_, _] => true,
        _ => true,
    };
    match (method.clone(), is_object) {
        (Method::PATCH, true) => {
            let mut obj = body;
            let existing = st.objects.get(&path).cloned();
            if let Some(status) = existing.as_ref().and_then(|e| e.get("status")).cloned() {
                obj["status"] = status;
            }
            obj["metadata"]["uid"] = json!(format!("uid-{}", st.objects.len()));
            st.objects.insert(path.clone(), obj.clone());
            axum::Json(obj).into_response()
        }
        (Method::POST, false) if path.ends_with("/uploadtokenrequests") => {
            let mut obj = body;
            obj["status"] = json!({"token": st.token});
            (StatusCode::CREATED, axum::Json(obj)).into_response()
        }
        (Method::POST, false) => {
            let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
            let p = format!("{path}/{name}");
            if st.objects.contains_key(&p) {
                return (StatusCode::CONFLICT, axum::Json(status_body(409, "AlreadyExists", "already exists")))
                    .into_response();
            }
            st.objects.insert(p, body.clone());
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        (Method::GET, true) => {
            let next =
                st.statuses.get_mut(&path).and_then(|q| if q.len() > 1 { q.pop_front() } else { q.front().cloned() });
            match st.objects.get_mut(&path) {
                Some(obj) => {
                    if let Some(s) = next {
                        obj["status"] = s;
                    }
                    axum::Json(obj.clone()).into_response()
                }
                None => (StatusCode::NOT_FOUND, axum::Json(status_body(404, "NotFound", "not found"))).into_response(),
            }
        }
        (Method::GET, false) => {
            let prefix = format!("{path}/");
            let items: Vec<Value> = st
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.starts_with(&prefix) && !k[prefix.len()..].contains('/') && matches_selector(v, &query)
                })
                .map(|(_, v)| v.clone())
                .collect();
            axum::Json(
                json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
            .into_response()
        }
        (Method::DELETE, true) => match st.objects.remove(&path) {
            Some(_) => axum::Json(status_body(200, "", "deleted")).into_response(),
            None => (StatusCode::NOT_FOUND, axum::Json(status_body(404, "NotFound", "not found"))).into_response(),
        },
        (Method::DELETE, false) => {
            let prefix = format!("{path}/");
            let doomed: Vec<String> = st
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.starts_with(&prefix) && !k[prefix.len()..].contains('/') && matches_selector(v, &query)
                })
                .map(|(k, _)| k.clone())
                .collect();
            let items: Vec<Value> = doomed.iter().filter_map(|k| st.objects.remove(k)).collect();
            axum::Json(json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})).into_response()
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            axum::Json(status_body(405, "MethodNotAllowed", "not supported by the fake")),
        )
            .into_response(),
    }
}

/// What the fake upload proxy received for one request.
#[derive(Debug, Clone, Default)]
pub struct ReceivedUpload {
    /// Bytes on the wire.
    pub wire_bytes: usize,
    /// Whether the stream was zstd (by magic).
    pub zstd: bool,
    /// The image after decompression.
    pub image: Vec<u8>,
}

#[derive(Debug, Default)]
struct ProxyState {
    token: String,
    unavailable: usize,
    cut_after: Option<usize>,
    attempts: usize,
    unauthorized: usize,
    uploads: Vec<ReceivedUpload>,
}

/// The fake CDI upload proxy.
#[derive(Debug, Clone)]
pub struct FakeUploadProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

impl FakeUploadProxy {
    /// Start a proxy that accepts `Authorization: Bearer <token>`.
    pub async fn start(token: &str) -> FakeUploadProxy {
        let state = Arc::new(Mutex::new(ProxyState { token: token.into(), ..Default::default() }));
        let app = Router::new().fallback(proxy_handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeUploadProxy { addr, state }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upload URL (`http://127.0.0.1:port/v1beta1/upload`).
    pub fn upload_url(&self) -> String {
        format!("http://{}/v1beta1/upload", self.addr)
    }

    /// Base URL (what `uploadProxyURL` would name).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer 503 to the next `n` requests (upload pod not ready).
    pub fn unavailable_for(&self, n: usize) {
        self.lock().unavailable = n;
    }

    /// Drop the next upload after `n` wire bytes with a 502 (upload pod restarted).
    pub fn cut_next_after(&self, n: usize) {
        self.lock().cut_after = Some(n);
    }

    /// Requests received.
    pub fn attempts(&self) -> usize {
        self.lock().attempts
    }

    /// Requests refused for a bad token.
    pub fn unauthorized(&self) -> usize {
        self.lock().unauthorized
    }

    /// Completed uploads, in order.
    pub fn uploads(&self) -> Vec<ReceivedUpload> {
        self.lock().uploads.clone()
    }
}

async fn proxy_handle(
    State(state): State<Arc<Mutex<ProxyState>>>,
    headers: HeaderMap,
    method: Method,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    let (token, unavailable, cut) = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.attempts += 1;
        let u = st.unavailable > 0;
        if u {
            st.unavailable -= 1;
        }
        (st.token.clone(), u, st.cut_after.take())
    };
    if method != Method::POST || path != "/v1beta1/upload" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth != format!("Bearer {token}") {
        state.lock().unwrap_or_else(|p| p.into_inner()).unauthorized += 1;
        // Like the real proxy (Go's net/http, which reads up to 256 KiB of an unread body after
        // the handler so the client gets the answer): drain that much first. Answering at once
        // and closing made the client see a broken pipe some of the time, and retry.
        use futures::StreamExt;
        let mut body = req.into_body().into_data_stream();
        let mut drained = 0usize;
        while drained <= 256 << 10 {
            match body.next().await {
                Some(Ok(chunk)) => drained += chunk.len(),
                _ => break,
            }
        }
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    if unavailable {
        return (StatusCode::SERVICE_UNAVAILABLE, "upload server not ready").into_response();
    }
    let mut stream = req.into_body().into_data_stream();
    let mut wire = Vec::new();
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return StatusCode::BAD_REQUEST.into_response() };
        wire.extend_from_slice(&chunk);
        if let Some(n) = cut {
            if wire.len() >= n {
                return (StatusCode::BAD_GATEWAY, "upload pod went away").into_response();
            }
        }
    }
    let zstd = wire.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let image = if zstd {
        match zstd::decode_all(&wire[..]) {
            Ok(i) => i,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("bad zstd: {e}")).into_response(),
        }
    } else {
        wire.clone()
    };
    state.lock().unwrap_or_else(|p| p.into_inner()).uploads.push(ReceivedUpload {
        wire_bytes: wire.len(),
        zstd,
        image,
    });
    let _ = Body::empty();
    StatusCode::OK.into_response()
}
