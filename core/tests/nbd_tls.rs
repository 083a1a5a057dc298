//! `nbds://` against real TLS servers: qemu-nbd (`--tls-creds`) and nbdkit (`--tls=require`),
//! with certificates made by the `openssl` CLI. Trust by CA directory, by SHA-256 pin, and a
//! client certificate for a server that verifies clients; every refusal is a typed error.
#![cfg(feature = "nbd")]
#![allow(clippy::unwrap_used)]

mod common;
mod http_support;
mod nbd_support;

use std::path::Path;

use bytes::Bytes;
use nbd_support::*;
use vmigrate_core::engine::{self, CopyControl, CopyOptions};
use vmigrate_core::memory::MemoryTransport;
use vmigrate_core::nbd::{NbdAddr, NbdTls, NbdTransport, TlsOptions, TlsParams};
use vmigrate_core::{BlockTransport, ErrorCode};

const MIB: usize = 1 << 20;

/// A server's certificate directory (qemu and nbdkit read the same names) and a client's with
/// only the CA, from one test CA; returns (server dir, client dir, server thumbprint).
fn pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let certs = http_support::make_certs(dir);
    let (server, client) = (dir.join("server-pki"), dir.join("client-pki"));
    std::fs::create_dir_all(&server).unwrap();
    std::fs::create_dir_all(&client).unwrap();
    for d in [&server, &client] {
        std::fs::copy(&certs.ca, d.join("ca-cert.pem")).unwrap();
    }
    std::fs::copy(&certs.cert, server.join("server-cert.pem")).unwrap();
    std::fs::copy(&certs.key, server.join("server-key.pem")).unwrap();
    (server, client, certs.thumbprint)
}

fn tls_uri(server: &Server, query: &str) -> String {
    format!("nbds+unix:///{}?socket={}&{query}", server.export, server.sock.display())
}

#[tokio::test]
async fn qemu_nbd_over_tls_by_ca_and_by_pin_and_typed_refusals() {
    if !have("qemu-nbd") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server_pki, client_pki, thumbprint) = pki(dir.path());
    let file = dir.path().join("disk.raw");
    std::fs::File::create(&file).unwrap().set_len(8 * MIB as u64).unwrap();
    let creds = format!("tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=off", server_pki.display());
    let server = qemu_nbd(dir.path(), &file, "raw", &["--object", &creds, "--tls-creds", "tls0"]);

    // Trust by CA: an engine copy through TLS lands byte for byte.
    let data = pattern(7, 8 * MIB);
    let src = MemoryTransport::from_bytes(data.clone());
    let t =
        NbdTransport::connect(&tls_uri(&server, &format!("tls-certificates={}", client_pki.display()))).await.unwrap();
    engine::copy(&src, &t, &CopyOptions::default(), &CopyControl::new()).await.unwrap();
    assert!(t.read_at(0, 8 * MIB).await.unwrap()[..] == data[..]);
    drop(t);
    assert!(std::fs::read(&file).unwrap() == data, "the file behind the TLS server differs");

    // Trust by pin.
    let pinned = NbdTransport::connect(&tls_uri(&server, &format!("tls-thumbprint={thumbprint}"))).await.unwrap();
    assert!(pinned.read_at(MIB as u64, 4096).await.unwrap()[..] == data[MIB..MIB + 4096]);

    // A wrong pin, another CA, a plain connection, a wrong host name, no trust at all.
    let wrong_pin = format!("tls-thumbprint={}", "AB:".repeat(31) + "AB");
    let e = NbdTransport::connect(&tls_uri(&server, &wrong_pin)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdTls, "{}", e.report());
    let other = tempfile::tempdir().unwrap();
    let (_, other_client, _) = pki(other.path());
    let e = NbdTransport::connect(&tls_uri(&server, &format!("tls-certificates={}", other_client.display())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdTls, "{}", e.report());
    let e = NbdTransport::connect(&server.uri()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdTls, "{}", e.report());
    assert!(e.report().contains("requires TLS"), "{}", e.report());
    let e = NbdTransport::connect(&tls_uri(
        &server,
        &format!("tls-certificates={}&tls-hostname=nbd.example", client_pki.display()),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdTls, "{}", e.report());
    let e = NbdTransport::connect(&tls_uri(&server, "")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl, "{}", e.report());
    // Asked not to verify, it connects (a lab's throwaway server).
    let insecure = NbdTransport::connect(&tls_uri(&server, "tls-verify-peer=false")).await.unwrap();
    insecure.write_at(0, Bytes::from_static(b"hello")).await.unwrap();
    insecure.flush().await.unwrap();
    assert_eq!(&std::fs::read(&file).unwrap()[..5], b"hello");
}

#[tokio::test]
async fn nbdkit_verifying_clients_takes_our_client_certificate() {
    if !have("nbdkit") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server_pki, client_pki, _) = pki(dir.path());
    let pki_arg = format!("--tls-certificates={}", server_pki.display());
    let server = nbdkit(dir.path(), &["--tls=require", &pki_arg, "--tls-verify-peer", "memory", "4M"]);
    let uri = tls_uri(&server, &format!("tls-certificates={}", client_pki.display()));

    // No client certificate in the directory yet: the server refuses us during the handshake.
    let e = NbdTransport::connect(&uri).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdTls, "{}", e.report());
    assert!(e.report().contains("client-cert.pem"), "{}", e.report());

    let (cert, key) = http_support::make_client_cert(dir.path());
    std::fs::copy(cert, client_pki.join("client-cert.pem")).unwrap();
    std::fs::copy(key, client_pki.join("client-key.pem")).unwrap();
    let t = NbdTransport::connect(&uri).await.unwrap();
    let data = pattern(3, 4 * MIB);
    t.write_at(0, Bytes::from(data.clone())).await.unwrap();
    assert!(t.read_at(0, 4 * MIB).await.unwrap()[..] == data[..]);
}

#[test]
fn bad_tls_settings_are_typed_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let unix = NbdAddr::Unix(dir.path().join("none.sock"));
    let params = |certificates: Option<&Path>, thumbprint: Option<&str>| TlsParams {
        certificates: certificates.map(Path::to_path_buf),
        verify_peer: true,
        hostname: None,
        thumbprint: thumbprint.map(str::to_owned),
    };
    // A directory without ca-cert.pem, a CA file that is not PEM, a thumbprint that is not a
    // digest, a host name that is not one: all BadUrl, said before anything is dialled.
    let e = NbdTls::from_params(&params(Some(dir.path()), None), &unix).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl, "{}", e.report());
    assert!(e.report().contains("ca-cert.pem"), "{}", e.report());
    std::fs::write(
        dir.path().join("ca-cert.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = NbdTls::from_params(&params(Some(dir.path()), None), &unix).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl, "{}", e.report());
    std::fs::write(dir.path().join("ca-cert.pem"), "no certificate here\n").unwrap();
    let e = NbdTls::from_params(&params(Some(dir.path()), None), &unix).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl, "{}", e.report());
    let e = NbdTls::from_params(&params(None, Some("AB:CD")), &unix).unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl, "{}", e.report());
    let trust = TlsOptions { insecure: true, ..TlsOptions::default() };
    let e = NbdTls::new(&trust, None, "not a host name!").unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadUrl, "{}", e.report());
    // An unreadable directory entry is an I/O error, not a silent fallback.
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::create_dir(locked.join("ca-cert.pem")).unwrap();
    let e = NbdTls::from_params(&params(Some(&locked), None), &unix).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Io, "{}", e.report());
}

/// Issue 14 item 13: a TLS connection that is lost is reopened with TLS (a server that requires
/// TLS refuses anything else), to a server restarted on the same socket.
#[tokio::test]
async fn a_lost_tls_connection_reconnects_with_tls() {
    if !have("nbdkit") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server_pki, client_pki, _) = pki(dir.path());
    let file = dir.path().join("disk.raw");
    let data = pattern(9, 4 * MIB);
    std::fs::write(&file, &data).unwrap();
    let sock = dir.path().join("tls.sock");
    let pki_arg = format!("--tls-certificates={}", server_pki.display());
    let file_arg = format!("file={}", file.display());
    let args = ["--tls=require", pki_arg.as_str(), "-r", "file", file_arg.as_str()];
    let mut server = nbdkit_on(&sock, &args);
    let uri = format!("nbds+unix:///?socket={}&tls-certificates={}", sock.display(), client_pki.display());
    let t = NbdTransport::connect(&uri).await.unwrap();
    assert!(t.read_at(0, 4096).await.unwrap()[..] == data[..4096]);
    server.kill();
    let _server = nbdkit_on(&sock, &args);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(t.read_at(MIB as u64, 8192).await.unwrap()[..] == data[MIB..MIB + 8192]);
}
