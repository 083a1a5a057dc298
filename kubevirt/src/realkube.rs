//! A real Kubernetes control plane for tests (feature `realkube`): etcd, kube-apiserver and
//! kube-controller-manager built from their Go modules by `tests/peers/build-kube.sh`, started on
//! loopback, with the KubeVirt, CDI and Route CRDs of `tests/fixtures/crds/` installed by
//! server-side apply.
//!
//! Why: the in-process fake ([`crate::fake`]) answers the way we thought a server would; this
//! one answers the way a server does (finalizers and garbage collection, namespaces that must
//! exist, field-manager conflicts, plain-text 404s for unserved API groups, schema pruning and
//! refusal of undeclared fields).
//!
//! Setup, per cluster:
//! - TLS: a CA and a serving certificate for `127.0.0.1`/`localhost` made with `openssl` per run;
//!   the kubeconfig names the CA, so clients verify the server (verification is never off).
//! - Authentication: a static token file (an admin in `system:masters`, and `alice`, a user with
//!   no bindings, for RBAC refusals); authorization is `RBAC`.
//! - Service accounts: a signing key pair generated per run (API server and controller manager).
//! - Controllers: garbage collector, namespace, job and service-account controllers, so deletion,
//!   finalizers and namespace termination behave as in a cluster. No CDI or KubeVirt controller
//!   runs: nothing moves a DataVolume's phase unless a test does (and says so).
//!
//! Not served: `upload.cdi.kubevirt.io` (UploadTokenRequest), which is an aggregated API of
//! cdi-apiserver; the server answers its paths with a plain-text `404 page not found`.
//!
//! Missing peers are a test failure with the command to build them, never a skip.
//! Every process runs under a watchdog shell that ends it when the test process exits, so a
//! shared cluster (see [`RealKube::shared`]) does not outlive its test binary.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::objects::DataVolume;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

/// The field manager the harness installs CRDs with.
const HARNESS_MANAGER: &str = "vmigrate-test-harness";

/// Which CRDs of `tests/fixtures/crds/` a cluster gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crds {
    /// KubeVirt, CDI and Route.
    All,
    /// CDI and Route, no KubeVirt (a cluster where KubeVirt is not installed).
    WithoutKubevirt,
    /// None (a bare Kubernetes cluster).
    None,
}

/// A running control plane. Dropping it ends its processes and removes its folder.
#[derive(Debug)]
pub struct RealKube {
    dir: PathBuf,
    server: String,
    admin_token: String,
    user_token: String,
    children: Vec<Child>,
    keep: bool,
}

/// Where the peers' binaries are: `$VMIGRATE_PEERS_DIR`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/vmigrate/peers`, in `<name>-<version>/<name>`.
pub fn peers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VMIGRATE_PEERS_DIR") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    cache.join("vmigrate").join("peers")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// The versions in `tests/peers/versions.env` (the build script reads the same file).
pub fn versions() -> BTreeMap<String, String> {
    let path = repo_root().join("tests/peers/versions.env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The path of a peer binary; panics (a test failure, not a skip) when it was not built.
pub fn peer(name: &str, version_key: &str) -> PathBuf {
    let v = versions();
    let version = v.get(version_key).unwrap_or_else(|| panic!("{version_key} missing from versions.env"));
    let path = peers_dir().join(format!("{name}-{version}")).join(name);
    assert!(
        path.is_file(),
        "peer {name} {version} is not built at {}: run `bash tests/peers/build-kube.sh` (scripts/test-all.sh does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn random_hex() -> String {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("read /dev/urandom");
    hex::encode(buf)
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl RealKube {
    /// Start a control plane of its own (a few seconds to tens of seconds on a busy machine).
    ///
    /// # Panics
    /// When a peer is not built or does not come up: a test that needs a cluster fails.
    pub async fn start(crds: Crds) -> RealKube {
        let kube = RealKube::spawn();
        kube.install_crds(crds).await;
        kube
    }

    /// One cluster with every CRD, shared by the tests of one test binary (each test works in
    /// namespaces of its own). Started on first use; ended with the test process.
    pub async fn shared() -> &'static RealKube {
        static SHARED: OnceLock<RealKube> = OnceLock::new();
        static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let kube = SHARED.get_or_init(|| {
            let mut k = RealKube::spawn();
            k.keep = true;
            k
        });
        INSTALLED.get_or_init(|| kube.install_crds(Crds::All)).await;
        kube
    }

    fn spawn() -> RealKube {
        let etcd = peer("etcd", "ETCD_VERSION");
        let apiserver = peer("kube-apiserver", "KUBE_VERSION");
        let kcm = peer("kube-controller-manager", "KUBE_VERSION");
        let dir = std::env::temp_dir().join(format!("vmigrate-realkube-{}-{}", std::process::id(), random_hex()));
        std::fs::create_dir_all(&dir).expect("create cluster folder");
        let p = |n: &str| dir.join(n).display().to_string();

        // TLS and service-account keys, new for every run.
        let ext = dir.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]).args([
            "-subj",
            "/CN=vmigrate-test-ca",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ]));
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver"])
            .args(["-keyout", &p("server.key"), "-out", &p("server.csr")]));
        run(Command::new("openssl").args(["x509", "-req", "-days", "2", "-CAcreateserial"]).args([
            "-in",
            &p("server.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-out",
            &p("server.crt"),
            "-extfile",
            &p("server.ext"),
        ]));
        run(Command::new("openssl").args(["genrsa", "-out", &p("sa.key"), "2048"]));
        run(Command::new("openssl").args(["rsa", "-in", &p("sa.key"), "-pubout", "-out", &p("sa.pub")]));
        let admin_token = random_hex();
        let user_token = random_hex();
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{admin_token},admin,admin-uid,system:masters\n{user_token},alice,alice-uid\n"),
        )
        .expect("write token file");

        let (client_port, peer_port, api_port, kcm_port) = (free_port(), free_port(), free_port(), free_port());
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: realkube\n  cluster:\n    server: {server}\n    \
             certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {admin_token}\n\
             contexts:\n- name: realkube\n  context:\n    cluster: realkube\n    user: admin\n\
             current-context: realkube\n",
            ca = p("ca.crt"),
        );
        std::fs::write(dir.join("kubeconfig"), kubeconfig).expect("write kubeconfig");

        let mut kube =
            RealKube { dir: dir.clone(), server, admin_token, user_token, children: Vec::new(), keep: false };
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        kube.watch(
            "etcd",
            &etcd,
            &[
                "--name=default",
                &format!("--data-dir={}", p("etcd")),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        );
        kube.watch(
            "kube-apiserver",
            &apiserver,
            &[
                &format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                &format!("--secure-port={api_port}"),
                &format!("--cert-dir={}", p("certs")),
                &format!("--tls-cert-file={}", p("server.crt")),
                &format!("--tls-private-key-file={}", p("server.key")),
                &format!("--client-ca-file={}", p("ca.crt")),
                &format!("--token-auth-file={}", p("tokens.csv")),
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                &format!("--service-account-key-file={}", p("sa.pub")),
                &format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/24",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
        );
        kube.wait_ready();
        kube.watch(
            "kube-controller-manager",
            &kcm,
            &[
                &format!("--kubeconfig={}", p("kubeconfig")),
                "--controllers=garbage-collector-controller,namespace-controller,job-controller,serviceaccount-controller",
                &format!("--service-account-private-key-file={}", p("sa.key")),
                &format!("--root-ca-file={}", p("ca.crt")),
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                &format!("--secure-port={kcm_port}"),
                "--profiling=false",
            ],
        );
        kube
    }

    /// Start `bin` under a watchdog shell: it ends the process (TERM, then KILL) when the test
    /// process is gone or when the watchdog is told to stop. The folder is removed by [`Drop`],
    /// or for a shared cluster by the reaper started with the first process.
    fn watch(&mut self, name: &str, bin: &Path, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        // kube-apiserver can hang in its graceful shutdown once etcd is gone: TERM, then KILL
        // after 5 s.
        let script = r#"parent=$1; shift
"$@" & child=$!
stop() { kill $child 2>/dev/null; for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 $child 2>/dev/null || exit 0; sleep 0.5; done; kill -9 $child 2>/dev/null; exit 0; }
trap stop TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
stop"#;
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        if self.children.is_empty() {
            // The reaper: removes the folder once the test process is gone (shared clusters).
            let _ = Command::new("bash")
                .arg("-c")
                .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; sleep 2; rm -rf "$2""#)
                .arg("reaper")
                .arg(std::process::id().to_string())
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
        self.children.push(child);
    }

    /// Poll `/readyz` (CA verified, admin token) until the API server says ok.
    fn wait_ready(&self) {
        let start = Instant::now();
        let url = format!("{}/readyz", self.server);
        loop {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "5", "--cacert"])
                .arg(self.dir.join("ca.crt"))
                .arg("-H")
                .arg(format!("Authorization: Bearer {}", self.admin_token))
                .arg(&url)
                .output();
            if let Ok(o) = out {
                if o.status.success() && o.stdout == b"ok" {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "kube-apiserver not ready after 180 s.\n--- etcd.log\n{}\n--- kube-apiserver.log\n{}",
                tail(&self.dir.join("etcd.log")),
                tail(&self.dir.join("kube-apiserver.log"))
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The kubeconfig file (server, CA, admin token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The controller manager's log (to tell a slow controller from a missing one).
    pub fn controller_log(&self) -> String {
        tail(&self.dir.join("kube-controller-manager.log"))
    }

    /// An admin client built from [`RealKube::kubeconfig`] (TLS verified against the CA).
    pub async fn client(&self) -> kube::Client {
        self.client_for(None).await
    }

    /// A client for `alice`, a user with no role bindings (RBAC refusals).
    pub async fn unprivileged_client(&self) -> kube::Client {
        self.client_for(Some(&self.user_token)).await
    }

    async fn client_for(&self, token: Option<&str>) -> kube::Client {
        let kc = Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        let mut cfg =
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig loads");
        if let Some(t) = token {
            cfg.auth_info.token = Some(t.to_string().into());
        }
        kube::Client::try_from(cfg).expect("client")
    }

    async fn install_crds(&self, crds: Crds) {
        if crds == Crds::None {
            return;
        }
        let client = self.client().await;
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        );
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let mut names = Vec::new();
        let mut served: Vec<(String, String)> = Vec::new();
        for mut crd in fixture_crds() {
            let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if crds == Crds::WithoutKubevirt && name.ends_with("kubevirt.io") && !name.ends_with("cdi.kubevirt.io") {
                continue;
            }
            if let Some(o) = crd.as_object_mut() {
                o.remove("status");
            }
            let pp = PatchParams::apply(HARNESS_MANAGER).force();
            api.patch(&name, &pp, &Patch::Apply(&crd)).await.unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
            let group = crd["spec"]["group"].as_str().unwrap_or_default().to_string();
            let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default().to_string();
            for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
                if v["served"] == true {
                    served.push((format!("{group}/{}", v["name"].as_str().unwrap_or_default()), plural.clone()));
                }
            }
            names.push(name);
        }
        let start = Instant::now();
        for name in names {
            loop {
                let o = api.get(&name).await.unwrap_or_else(|e| panic!("get CRD {name}: {e}"));
                let established = o.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True");
                if established {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(120), "CRD {name} not Established after 120 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Established is not yet "in discovery": wait until each served version lists the
        // resource, so a test's first discovery call sees what a settled cluster shows.
        for (gv, plural) in served {
            loop {
                let listed = client
                    .list_api_group_resources(&gv)
                    .await
                    .map(|l| l.resources.iter().any(|r| r.name == plural))
                    .unwrap_or(false);
                if listed {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(120), "{gv} {plural} not in discovery after 120 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // In discovery is not yet "storage ready": a loaded server answers reads of a fresh
            // CRD with 429 "storage is (re)initializing" for a while. Wait until a list works.
            loop {
                let (group, version) = gv.split_once('/').unwrap_or(("", gv.as_str()));
                let gvk = kube::api::GroupVersionKind::gvk(group, version, "");
                let ar = kube::discovery::ApiResource::from_gvk_with_plural(&gvk, &plural);
                let any: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(client.clone(), &ar);
                if any.list(&kube::api::ListParams::default().limit(1)).await.is_ok() {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(180), "{gv} {plural} cannot be listed after 180 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every CRD document of `tests/fixtures/crds/` (CDI and Route YAML, KubeVirt JSON).
pub fn fixture_crds() -> Vec<Value> {
    let root = repo_root().join("tests/fixtures/crds");
    let mut files: Vec<PathBuf> = Vec::new();
    for d in [root.clone(), root.join("kubevirt")] {
        let rd = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display()));
        files.extend(
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "json")),
        );
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        if f.extension().is_some_and(|x| x == "json") {
            out.push(serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", f.display())));
        } else {
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                if !v.is_null() {
                    out.push(v);
                }
            }
        }
    }
    out
}

impl Drop for RealKube {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Watchdogs trap TERM and end their process; kube-controller-manager first, etcd last.
        for c in self.children.iter_mut().rev() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A stand-in for cdi-apiserver's aggregated `upload.cdi.kubevirt.io/v1beta1` API, registered
/// with the real API server through an APIService (its Service is an ExternalName `localhost`,
/// so the aggregator proxies to this process over TLS verified with the harness CA; the
/// certificate names `cdi-api.default.svc`, the name the aggregator verifies).
///
/// It serves discovery and answers every UploadTokenRequest with a fixed token: the token check
/// cdi-uploadproxy makes is done by whichever upload server the test uses. cdi-apiserver itself
/// cannot be built here (its Go module is refused by the module proxy).
#[derive(Debug)]
pub struct UploadTokenApi {
    requests: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl UploadTokenApi {
    /// The UploadTokenRequests received (as the aggregator forwarded them).
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for UploadTokenApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RealKube {
    /// Register [`UploadTokenApi`] answering `token`, and wait until the API server reports the
    /// APIService Available. One per cluster.
    ///
    /// # Panics
    /// When the API does not become available (a test failure).
    pub async fn serve_upload_token_api(&self, token: &str) -> UploadTokenApi {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let p = |n: &str| self.dir.join(n).display().to_string();
        std::fs::write(
            self.dir.join("cdi.ext"),
            "subjectAltName=DNS:localhost,DNS:cdi-api.default.svc\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        run(Command::new("openssl").args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"]).args([
            "-keyout",
            &p("cdi.key"),
            "-out",
            &p("cdi.csr"),
        ]));
        run(Command::new("openssl").args(["x509", "-req", "-days", "2", "-CAcreateserial"]).args([
            "-in",
            &p("cdi.csr"),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-out",
            &p("cdi.crt"),
            "-extfile",
            &p("cdi.ext"),
        ]));
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(p("cdi.crt")).expect("cert").collect::<Result<_, _>>().expect("cert");
        let key = PrivateKeyDer::from_pem_file(p("cdi.key")).expect("key");
        let config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("tls versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (reqs, token) = (requests.clone(), token.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, reqs, token) = (acceptor.clone(), reqs.clone(), token.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve_token_conn(tls, &reqs, &token).await;
                    }
                });
            }
        });

        let client = self.client().await;
        let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "cdi-api", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": port, "protocol": "TCP"}]}});
        let ca = std::fs::read(self.dir.join("ca.crt")).expect("ca");
        let ca_b64 = serde_json::to_value(k8s_openapi::ByteString(ca)).expect("base64");
        let apisvc = serde_json::json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.upload.cdi.kubevirt.io"},
            "spec": {"group": "upload.cdi.kubevirt.io", "version": "v1beta1", "caBundle": ca_b64,
                     "groupPriorityMinimum": 10, "versionPriority": 10,
                     "service": {"namespace": "default", "name": "cdi-api", "port": port}}});
        let pp = PatchParams::apply(HARNESS_MANAGER).force();
        let svc_ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Service"), "services");
        Api::<DynamicObject>::namespaced_with(client.clone(), "default", &svc_ar)
            .patch("cdi-api", &pp, &Patch::Apply(&svc))
            .await
            .expect("apply Service cdi-api");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
            "apiservices",
        );
        let api: Api<DynamicObject> = Api::all_with(client, &ar);
        api.patch("v1beta1.upload.cdi.kubevirt.io", &pp, &Patch::Apply(&apisvc)).await.expect("apply APIService");
        let start = Instant::now();
        loop {
            let o = api.get("v1beta1.upload.cdi.kubevirt.io").await.expect("get APIService");
            let cond = o.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Available")
                .cloned();
            if cond.as_ref().is_some_and(|c| c["status"] == "True") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "APIService v1beta1.upload.cdi.kubevirt.io not Available: {cond:?}\n{}",
                tail(&self.dir.join("kube-apiserver.log"))
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        UploadTokenApi { requests, task }
    }
}

/// One HTTP/1.1 exchange (`Connection: close`) of the token API stand-in.
async fn serve_token_conn<S>(mut s: S, reqs: &std::sync::Mutex<Vec<Value>>, token: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..(head_end + len).min(buf.len())];
    const G: &str = "upload.cdi.kubevirt.io";
    let gv = serde_json::json!({"groupVersion": format!("{G}/v1beta1"), "version": "v1beta1"});
    let group = serde_json::json!({"name": G, "versions": [gv], "preferredVersion": gv});
    let (code, reply) = match (method, path) {
        ("GET", "/apis") => (200, serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]})),
        ("GET", "/apis/upload.cdi.kubevirt.io") => {
            let mut g = group.clone();
            g["kind"] = "APIGroup".into();
            g["apiVersion"] = "v1".into();
            (200, g)
        }
        ("GET", "/apis/upload.cdi.kubevirt.io/v1beta1") => (
            200,
            serde_json::json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{G}/v1beta1"),
                "resources": [{"name": "uploadtokenrequests", "singularName": "uploadtokenrequest", "namespaced": true,
                               "kind": "UploadTokenRequest", "verbs": ["create"]}]}),
        ),
        ("POST", p)
            if p.starts_with("/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/")
                && p.ends_with("/uploadtokenrequests") =>
        {
            let mut obj: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            reqs.lock().unwrap_or_else(|p| p.into_inner()).push(obj.clone());
            obj["status"] = serde_json::json!({"token": token});
            (201, obj)
        }
        _ => (
            404,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": format!("{path} not served by the token API stand-in")}),
        ),
    };
    let body = serde_json::to_vec(&reply).unwrap_or_default();
    let status = match code {
        200 => "200 OK",
        201 => "201 Created",
        _ => "404 Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    s.shutdown().await
}

/// The finalizer [`CdiStandIn`] holds deleted DataVolumes with (as CDI's cleanup does).
pub const HOLD: &str = "vmigrate.test/hold";

/// Plays CDI's DataVolume controller for one namespace: a new DataVolume (no phase yet) gets
/// the phase in `next_phase` and the finalizer [`HOLD`]; a deleted one loses the finalizer
/// after `hold` (so deletion lingers as it does behind CDI's and the garbage collector's work).
pub struct CdiStandIn {
    next_phase: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl CdiStandIn {
    /// Start playing the controller for DataVolumes in `ns`.
    pub fn start(client: kube::Client, ns: &str, phase: &str, hold: Duration) -> CdiStandIn {
        let next_phase = Arc::new(Mutex::new(phase.to_string()));
        let np = next_phase.clone();
        let api: Api<DataVolume> = Api::namespaced(client, ns);
        let task = tokio::spawn(async move {
            let mut deleting: std::collections::BTreeMap<String, Instant> = Default::default();
            loop {
                let list = match api.list(&ListParams::default()).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "cdi stand-in: list datavolumes");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                for dv in list.items {
                    let name = dv.metadata.name.clone().unwrap_or_default();
                    let uid = dv.metadata.uid.clone().unwrap_or_default();
                    if dv.metadata.deletion_timestamp.is_some() {
                        let since = *deleting.entry(uid).or_insert_with(Instant::now);
                        let held = dv.metadata.finalizers.iter().flatten().any(|f| f == HOLD);
                        if held && since.elapsed() >= hold {
                            // Remove only our finalizer; the resourceVersion makes the write fail
                            // (and retry next round) if the garbage collector changed the list.
                            let fins: Vec<String> =
                                dv.metadata.finalizers.iter().flatten().filter(|f| *f != HOLD).cloned().collect();
                            let rv = dv.metadata.resource_version.clone();
                            let body = json!({"metadata": {"resourceVersion": rv, "finalizers": fins}});
                            let _ = api.patch(&name, &PatchParams::default(), &Patch::Merge(body)).await;
                        }
                        continue;
                    }
                    if dv.phase().is_empty() {
                        let phase = np.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        let _ = api
                            .patch(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"metadata": {"finalizers": [HOLD]}})),
                            )
                            .await;
                        let _ = api
                            .patch_status(
                                &name,
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": {"phase": phase}})),
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        CdiStandIn { next_phase, task }
    }

    /// The phase new DataVolumes get from now on.
    pub fn set_next_phase(&self, phase: &str) {
        *self.next_phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.to_string();
    }
}

impl std::fmt::Debug for CdiStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdiStandIn").finish_non_exhaustive()
    }
}

impl Drop for CdiStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}
