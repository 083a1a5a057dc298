//! The HTTP range reader against a real nginx on 127.0.0.1: byte-equal reads at random offsets,
//! parallel clones, HTTPS with a CA file and with a pinned thumbprint, a wrong pin refused with
//! a typed TLS error, 404 and read-only refusals.
#![cfg(feature = "http")]
#![allow(clippy::unwrap_used)]

mod common;
mod http_support;

use bytes::Bytes;
use http_support::*;
use vmigrate_core::http::{build_client, HttpOptions, HttpTransport, TlsOptions};
use vmigrate_core::{BlockTransport, ErrorCode, ErrorKind};

const SIZE: usize = 5 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    nginx: Nginx,
    certs: Certs,
    data: Vec<u8>,
}

fn fixture() -> Option<Fixture> {
    if !have("nginx") || !have("openssl") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir(&root).unwrap();
    let mut data = pattern(77, SIZE);
    // Unallocated-looking space: 2 MiB of zeroes, and a range that starts with zeroes.
    data[1 << 20..3 << 20].fill(0);
    data[(3 << 20) + 100..(3 << 20) + (512 << 10)].fill(0);
    std::fs::write(root.join("disk.raw"), &data).unwrap();
    let certs = make_certs(dir.path());
    let nginx = Nginx::start(dir.path(), &root, &certs);
    Some(Fixture { _dir: dir, nginx, certs, data })
}

async fn check_random_reads(t: &dyn BlockTransport, data: &[u8]) {
    let mut x = 12345u64;
    for _ in 0..40 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 11) as usize % data.len();
        let len = 1 + (x >> 40) as usize % (256 << 10).min(data.len() - off);
        let got = t.read_at(off as u64, len).await.unwrap();
        assert!(got[..] == data[off..off + len], "mismatch at {off}+{len}");
    }
}

#[tokio::test]
async fn plain_http_reads_are_byte_equal_and_parallel() {
    let Some(f) = fixture() else { return };
    let url = format!("http://127.0.0.1:{}/disk.raw", f.nginx.http_port);
    let t = HttpTransport::open(&url, HttpOptions::default()).await.unwrap();
    assert_eq!(t.size(), SIZE as u64);
    assert_eq!(t.max_connections(), 4);
    check_random_reads(&t, &f.data).await;
    // Whole file in parallel pieces over clones.
    let clones: Vec<Box<dyn BlockTransport>> =
        futures::future::try_join_all((0..4).map(|_| t.try_clone())).await.unwrap();
    let piece = SIZE / 4;
    let parts =
        futures::future::try_join_all(clones.iter().enumerate().map(|(i, c)| c.read_at((i * piece) as u64, piece)))
            .await
            .unwrap();
    assert!(parts.concat() == f.data);
    // Read-only, bounds and missing files.
    assert_eq!(t.write_at(0, Bytes::from_static(b"x")).await.unwrap_err().code(), ErrorCode::TransportUnsupported);
    assert_eq!(t.read_at(SIZE as u64 - 1, 2).await.unwrap_err().code(), ErrorCode::OutOfBounds);
    let missing = format!("http://127.0.0.1:{}/nope.raw", f.nginx.http_port);
    let e = HttpTransport::open(&missing, HttpOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpStatus);
    assert!(e.message().contains("404"), "{}", e.message());
}

#[tokio::test]
async fn ranges_of_zeroes_come_back_as_shared_zeroes_and_mixed_ranges_intact() {
    let Some(f) = fixture() else { return };
    let url = format!("http://127.0.0.1:{}/disk.raw", f.nginx.http_port);
    let t = HttpTransport::open(&url, HttpOptions::default()).await.unwrap();
    const MIB: usize = 1 << 20;
    // A data range first, so the pooled buffer the next reads get holds old bytes.
    let first = t.read_at(0, MIB).await.unwrap();
    assert!(first[..] == f.data[..MIB] && !vmigrate_core::buf::is_shared_zeroes(&first));
    drop(first);
    let zeroes = t.read_at(MIB as u64, MIB).await.unwrap();
    assert!(zeroes.iter().all(|b| *b == 0) && zeroes.len() == MIB);
    assert!(vmigrate_core::buf::is_shared_zeroes(&zeroes), "a range of zeroes should not be copied");
    // Longer than the shared buffer: zeroes all the same.
    let long = t.read_at(MIB as u64, 2 * MIB).await.unwrap();
    assert!(long.iter().all(|b| *b == 0) && long.len() == 2 * MIB);
    // Zeroes then data: the zero prefix must be written into the reused buffer.
    for (off, len) in [(2 * MIB + 4096, MIB), (3 * MIB - 4096, MIB), (2 * MIB + 17, MIB + 5)] {
        let got = t.read_at(off as u64, len).await.unwrap();
        assert!(got[..] == f.data[off..off + len], "mismatch at {off}+{len}");
    }
}

#[tokio::test]
async fn https_with_ca_file_and_with_thumbprint_pin() {
    let Some(f) = fixture() else { return };
    let url = format!("https://localhost:{}/disk.raw", f.nginx.https_port);
    let ca = std::fs::read(&f.certs.ca).unwrap();
    let opts = HttpOptions { tls: TlsOptions { ca_pem: Some(ca), ..TlsOptions::default() }, ..HttpOptions::default() };
    let t = HttpTransport::open(&url, opts).await.unwrap();
    check_random_reads(&t, &f.data).await;

    // A pin needs no CA and works on the bare IP too (no name check: the pin is the identity).
    let ip_url = format!("https://127.0.0.1:{}/disk.raw", f.nginx.https_port);
    let tls = TlsOptions { thumbprint_sha256: Some(f.certs.thumbprint.to_lowercase()), ..TlsOptions::default() };
    let t = HttpTransport::open(&ip_url, HttpOptions { tls, ..HttpOptions::default() }).await.unwrap();
    check_random_reads(&t, &f.data).await;
}

#[tokio::test]
async fn untrusted_or_mismatched_certificates_are_typed_tls_errors() {
    let Some(f) = fixture() else { return };
    let url = format!("https://localhost:{}/disk.raw", f.nginx.https_port);
    // No CA: the private CA is unknown.
    let e = HttpTransport::open(&url, HttpOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpTls, "{}", e.report());
    assert_eq!(e.kind(), ErrorKind::Tls);
    // A wrong pin is refused even though the CA would be trusted.
    let mut wrong = f.certs.thumbprint.clone();
    wrong.replace_range(0..2, if wrong.starts_with("00") { "11" } else { "00" });
    let tls = TlsOptions {
        thumbprint_sha256: Some(wrong),
        ca_pem: Some(std::fs::read(&f.certs.ca).unwrap()),
        insecure: false,
    };
    let e = HttpTransport::open(&url, HttpOptions { tls, retries: 0, ..HttpOptions::default() }).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpTls, "{}", e.report());
    // The shared client builder gives the same behaviour to other HTTPS users (vSphere SOAP).
    let pinned = TlsOptions { thumbprint_sha256: Some(f.certs.thumbprint.clone()), ..TlsOptions::default() };
    let client = build_client(&pinned, std::time::Duration::from_secs(5), 2).unwrap();
    let resp = client.get(&url).header("Range", "bytes=0-3").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(&resp.bytes().await.unwrap()[..], &f.data[..4]);
    // Insecure mode accepts anything.
    let tls = TlsOptions { insecure: true, ..TlsOptions::default() };
    let t = HttpTransport::open(&url, HttpOptions { tls, ..HttpOptions::default() }).await.unwrap();
    assert_eq!(t.size(), SIZE as u64);
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused() {
    let e = HttpTransport::open("http://192.0.2.1/disk.raw", HttpOptions::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl);
}
