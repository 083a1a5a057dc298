//! The HTTP range reader against a tiny in-test server that misbehaves on purpose: 5xx then
//! success (retried), Range ignored (HttpRange), a short body (ShortRead), a body cut by a
//! hang-up and a server that drops every connection (HttpConnect after retries), a wrong
//! Content-Range, and a HEAD without length (size from a one-byte range GET).
#![cfg(feature = "http")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vmigrate_core::http::{HttpOptions, HttpTransport};
use vmigrate_core::{BlockTransport, ErrorCode};

const SIZE: u64 = 1 << 20;

fn byte(i: u64) -> u8 {
    (i % 251) as u8
}

async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        buf.push(b[0]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn range_of(head: &str) -> Option<(u64, u64)> {
    let line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("range:"))?;
    let spec = line.split_once('=')?.1.trim();
    let (a, b) = spec.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

async fn serve(mut s: TcpStream, hits: Arc<AtomicUsize>) {
    let Some(head) = read_head(&mut s).await else { return };
    let n = hits.fetch_add(1, Ordering::SeqCst);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let is_head = head.starts_with("HEAD");
    let ok_head = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n");
    if path == "/drop" {
        return;
    }
    if is_head {
        let resp = if path == "/nohead" {
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        } else {
            ok_head
        };
        let _ = s.write_all(resp.as_bytes()).await;
        return;
    }
    let (a, b) = range_of(&head).unwrap_or((0, SIZE - 1));
    let body: Vec<u8> = (a..=b).map(byte).collect();
    let partial = |cr_a: u64, cr_b: u64, len: usize| {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {cr_a}-{cr_b}/{SIZE}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let (head_out, body_out): (String, &[u8]) = match path.as_str() {
        "/flaky" if n < 3 => ("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(), &[]),
        "/down" => ("HTTP/1.1 500 Broken\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(), &[]),
        "/norange" => {
            let all: Vec<u8> = (0..SIZE).map(byte).collect();
            let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(h.as_bytes()).await;
            let _ = s.write_all(&all).await;
            return;
        }
        "/short" => (partial(a, b, body.len() / 2), &body[..body.len() / 2]),
        "/cut" => {
            let _ = s.write_all(partial(a, b, body.len()).as_bytes()).await;
            let _ = s.write_all(&body[..body.len() / 2]).await;
            return;
        }
        "/wrongrange" => (partial(a + 1, b + 1, body.len()), &body[..]),
        _ => (partial(a, b, body.len()), &body[..]),
    };
    let _ = s.write_all(head_out.as_bytes()).await;
    let _ = s.write_all(body_out).await;
}

async fn start() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, h.clone()));
        }
    });
    (base, hits)
}

fn opts() -> HttpOptions {
    HttpOptions { retries: 3, timeout: Duration::from_secs(5), ..HttpOptions::default() }
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let (base, hits) = start().await;
    // HEAD succeeds (hit 0); the next two GETs answer 503, the third works.
    let t = HttpTransport::open(&format!("{base}/flaky"), opts()).await.unwrap();
    let got = t.read_at(1000, 100).await.unwrap();
    assert_eq!(got[..], (1000..1100).map(byte).collect::<Vec<_>>()[..]);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn persistent_server_errors_become_transient_http_status() {
    let (base, hits) = start().await;
    let t = HttpTransport::open(&format!("{base}/down"), opts()).await.unwrap();
    let e = t.read_at(0, 10).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpStatus);
    assert!(e.message().contains("500") && e.is_transient(), "{}", e.report());
    assert_eq!(hits.load(Ordering::SeqCst), 1 + 4, "one HEAD, then 1 try + 3 retries");
}

#[tokio::test]
async fn ignored_range_is_an_error_not_wrong_data() {
    let (base, _) = start().await;
    let t = HttpTransport::open(&format!("{base}/norange"), opts()).await.unwrap();
    assert_eq!(t.read_at(4096, 512).await.unwrap_err().code(), ErrorCode::HttpRange);
    let t = HttpTransport::open(&format!("{base}/wrongrange"), opts()).await.unwrap();
    assert_eq!(t.read_at(4096, 512).await.unwrap_err().code(), ErrorCode::HttpRange);
}

#[tokio::test]
async fn short_and_cut_bodies_are_typed_errors() {
    let (base, _) = start().await;
    let t = HttpTransport::open(&format!("{base}/short"), opts()).await.unwrap();
    assert_eq!(t.read_at(0, 1000).await.unwrap_err().code(), ErrorCode::ShortRead);
    let t = HttpTransport::open(&format!("{base}/cut"), opts()).await.unwrap();
    let e = t.read_at(0, 100_000).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpConnect, "{}", e.report());
    assert!(e.is_transient());
}

#[tokio::test]
async fn dropped_connections_become_http_connect_after_retries() {
    let (base, hits) = start().await;
    let e = HttpTransport::open(&format!("{base}/drop"), opts()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::HttpConnect, "{}", e.report());
    assert_eq!(hits.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn size_from_range_get_when_head_is_refused() {
    let (base, _) = start().await;
    let t = HttpTransport::open(&format!("{base}/nohead"), opts()).await.unwrap();
    assert_eq!(t.size(), SIZE);
    assert_eq!(t.read_at(SIZE - 3, 3).await.unwrap()[..], [byte(SIZE - 3), byte(SIZE - 2), byte(SIZE - 1)]);
}
