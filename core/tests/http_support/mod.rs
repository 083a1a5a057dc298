//! Helpers for the HTTP tests: an nginx (plain and TLS) serving a temp dir on 127.0.0.1, and a
//! CA-signed certificate made with the `openssl` CLI.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use crate::common::have;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test CA and a leaf for `localhost`/127.0.0.1 signed by it.
pub struct Certs {
    /// CA certificate (PEM file).
    pub ca: PathBuf,
    /// Leaf certificate (PEM file).
    pub cert: PathBuf,
    /// Leaf key (PEM file).
    pub key: PathBuf,
    /// SHA-256 thumbprint of the leaf, `AB:CD:...`.
    pub thumbprint: String,
}

const EC_KEY: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// Issue `<stem>.pem` / `<stem>.key` in `dir` for `subject`, signed by the CA there, with the
/// X.509 extensions `ext` (openssl extfile syntax).
fn issue(dir: &Path, stem: &str, subject: &str, ext: &str) -> (PathBuf, PathBuf) {
    let p = |n: String| dir.join(n).to_str().expect("utf-8 path").to_owned();
    let (key, csr, cnf, pem) =
        (p(format!("{stem}.key")), p(format!("{stem}.csr")), p(format!("{stem}.cnf")), p(format!("{stem}.pem")));
    openssl(&[&["req"][..], &EC_KEY, &["-keyout", &key, "-out", &csr, "-subj", subject]].concat());
    std::fs::write(&cnf, ext).expect("write extensions");
    let (ca, ca_key) = (p("ca.pem".into()), p("ca.key".into()));
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &cnf,
    ]);
    (PathBuf::from(pem), PathBuf::from(key))
}

/// Make a CA and a server certificate for `localhost`/127.0.0.1 in `dir` (EC keys: fast).
pub fn make_certs(dir: &Path) -> Certs {
    let p = |n: &str| dir.join(n).to_str().expect("utf-8 path").to_owned();
    let subj = "/CN=vmigrate test ca";
    openssl(
        &[
            &["req", "-x509"][..],
            &EC_KEY,
            &["-keyout", &p("ca.key"), "-out", &p("ca.pem"), "-days", "2", "-subj", subj],
        ]
        .concat(),
    );
    let ext = "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n";
    let (cert, key) = issue(dir, "leaf", "/CN=localhost", ext);
    let fp = openssl(&["x509", "-in", &p("leaf.pem"), "-noout", "-fingerprint", "-sha256"]);
    let thumbprint = fp.trim().rsplit('=').next().expect("fingerprint").to_owned();
    Certs { ca: dir.join("ca.pem"), cert, key, thumbprint }
}

/// A client certificate (for TLS servers that verify clients) signed by the CA that
/// [`make_certs`] made in `dir`; returns (certificate, key) PEM files.
pub fn make_client_cert(dir: &Path) -> (PathBuf, PathBuf) {
    issue(
        dir,
        "client",
        "/CN=vmigrate",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
}

/// nginx serving `root` on 127.0.0.1 over http and https; killed on drop.
pub struct Nginx {
    child: Option<Child>,
    /// Plain HTTP port.
    pub http_port: u16,
    /// HTTPS port.
    pub https_port: u16,
}

impl Nginx {
    /// Start nginx with its config, logs and temp dirs under `dir`.
    pub fn start(dir: &Path, root: &Path, certs: &Certs) -> Nginx {
        let (http_port, https_port) = (free_port(), free_port());
        let d = dir.display();
        let conf = format!(
            "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/cb;\n proxy_temp_path {d}/px;\n\
             fastcgi_temp_path {d}/fc;\n uwsgi_temp_path {d}/uw;\n scgi_temp_path {d}/sc;\n\
             server {{ listen 127.0.0.1:{http_port}; root {r}; }}\n\
             server {{ listen 127.0.0.1:{https_port} ssl; ssl_certificate {c}; ssl_certificate_key {k}; root {r}; }}\n}}\n",
            r = root.display(),
            c = certs.cert.display(),
            k = certs.key.display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let nginx = if Path::new("/usr/sbin/nginx").exists() { "/usr/sbin/nginx" } else { "nginx" };
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf_path)
            .args(["-e", &format!("{d}/error.log"), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx { child: Some(child), http_port, https_port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", https_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err()
        {
            if let Some(Ok(Some(st))) = n.child.as_mut().map(|c| c.try_wait()) {
                panic!("nginx exited: {st}: {}", std::fs::read_to_string(dir.join("error.log")).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[allow(unused_imports)]
pub use crate::common::pattern;
