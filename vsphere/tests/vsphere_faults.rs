//! Bad peers: a fake HTTP server answering garbage, an unreachable host.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmigrate_core::ErrorCode;
use vmigrate_vsphere::{ConnectOptions, VsphereSource};

async fn serve(body: &'static [u8], status: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    format!("http://{addr}/sdk")
}

fn opts(url: String) -> ConnectOptions {
    ConnectOptions { url, username: "u".into(), password: "Secret-Pw-42".into(), ..Default::default() }
}

#[tokio::test]
async fn garbage_and_truncated_soap_are_malformed() {
    for body in [
        &b"this is not xml <<<"[..],
        b"<soapenv:Envelope><soapenv:Body><Resp>",
        b"<html><body>proxy error</body></html>",
    ] {
        let url = serve(body, "200 OK").await;
        let e = VsphereSource::connect(opts(url)).await.expect_err("garbage");
        assert_eq!(e.code(), ErrorCode::SourceMalformed, "{}", e.report());
        assert!(!e.report().contains("Secret-Pw-42"));
    }
    let url = serve(b"bad gateway", "502 Bad Gateway").await;
    assert_eq!(VsphereSource::connect(opts(url)).await.expect_err("502").code(), ErrorCode::HttpStatus);
}

#[tokio::test]
async fn unreachable_and_bad_urls_are_typed() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    let e = VsphereSource::connect(opts(format!("https://127.0.0.1:{port}/sdk"))).await.expect_err("refused");
    assert_eq!(e.code(), ErrorCode::SourceConnect);
    let e = VsphereSource::connect(opts("http://vcenter.example.com/sdk".into())).await.expect_err("http");
    assert_eq!(e.code(), ErrorCode::BadUrl);
}
