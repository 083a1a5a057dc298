//! The CDI upload stream against the fake upload proxy: out-of-order parallel writes arrive in
//! order and byte-equal, zstd shrinks the wire bytes, 503 is retried, a cut upload fails cleanly
//! and a fresh sink retries it, a wrong token is refused.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use vmigrate_core::{BlockTransport, ErrorCode};
use vmigrate_kubevirt::fake::FakeUploadProxy;
use vmigrate_kubevirt::upload::{UploadConfig, UploadSink};

const SIZE: u64 = 8 << 20;
const CHUNK: u64 = 256 << 10;

/// A disk image: text-like data in some chunks, zero ranges elsewhere.
fn image() -> Vec<u8> {
    let mut v = vec![0u8; SIZE as usize];
    for (i, c) in v.chunks_mut(CHUNK as usize).enumerate() {
        if i % 3 != 1 {
            for (j, b) in c.iter_mut().enumerate() {
                *b = b"vmigrate moves VMs "[(i + j) % 19];
            }
        }
    }
    v
}

fn cfg(proxy: &FakeUploadProxy, token: &str, compression: bool) -> UploadConfig {
    let mut c = UploadConfig::new(proxy.upload_url(), token, "database-disk0", compression);
    c.backoff = Duration::from_millis(10);
    c.window = 2 << 20;
    c
}

/// Write like the engine: four workers, chunks in reverse order within each quarter, zero ranges
/// through `zero()`.
async fn copy_out_of_order(sink: &UploadSink, img: &[u8]) -> vmigrate_core::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let s = sink.clone();
        let data = Bytes::copy_from_slice(img);
        tasks.push(tokio::spawn(async move {
            let quarter = SIZE / 4;
            let mut offs: Vec<u64> = (0..quarter / CHUNK).map(|k| w * quarter + k * CHUNK).collect();
            offs.swap(0, 1); // the second chunk of the quarter first
            for off in offs {
                let c = data.slice(off as usize..(off + CHUNK) as usize);
                if c.iter().all(|b| *b == 0) {
                    s.zero(off, CHUNK).await?;
                } else {
                    s.write_at(off, c).await?;
                }
            }
            Ok::<(), vmigrate_core::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("worker")?;
    }
    sink.flush().await
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_upload_is_byte_equal_and_smaller() {
    let proxy = FakeUploadProxy::start("tok-123").await;
    let img = image();
    let sink = UploadSink::start(reqwest::Client::new(), SIZE, cfg(&proxy, "tok-123", true));
    copy_out_of_order(&sink, &img).await.expect("upload");
    let ups = proxy.uploads();
    assert_eq!(ups.len(), 1);
    assert!(ups[0].zstd, "stream must be zstd, detectable by magic like CDI does");
    assert_eq!(sha(&ups[0].image), sha(&img));
    let stats = sink.stats();
    assert_eq!(stats.bytes_copied(), SIZE);
    assert_eq!(stats.bytes_sent(), ups[0].wire_bytes as u64);
    assert!(stats.bytes_sent() < SIZE / 20, "sent {} of {SIZE}", stats.bytes_sent());
    // Flushing again is harmless.
    sink.flush().await.expect("second flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_upload_retries_503_until_ready() {
    let proxy = FakeUploadProxy::start("tok").await;
    proxy.unavailable_for(3);
    let img = image();
    let sink = UploadSink::start(reqwest::Client::new(), SIZE, cfg(&proxy, "tok", false));
    copy_out_of_order(&sink, &img).await.expect("upload after 503s");
    let ups = proxy.uploads();
    assert_eq!(ups.len(), 1);
    assert!(!ups[0].zstd);
    assert_eq!(sha(&ups[0].image), sha(&img));
    assert_eq!(sink.stats().attempts(), 4);
    assert_eq!(sink.stats().bytes_sent(), SIZE, "replays are not counted twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_upload_fails_then_clean_retry_succeeds() {
    let proxy = FakeUploadProxy::start("tok").await;
    let img = image();
    let mut c = cfg(&proxy, "tok", false);
    c.replay_limit = 1 << 20; // past this, a failure cannot be replayed
    proxy.cut_next_after(3 << 20);
    let sink = UploadSink::start(reqwest::Client::new(), SIZE, c.clone());
    let err = copy_out_of_order(&sink, &img).await.expect_err("cut upload");
    assert_eq!(err.code(), ErrorCode::TargetUploadFailed, "{err:?}");
    assert!(proxy.uploads().is_empty());
    let again = UploadSink::start(reqwest::Client::new(), SIZE, c);
    copy_out_of_order(&again, &img).await.expect("clean retry");
    assert_eq!(sha(&proxy.uploads()[0].image), sha(&img));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_and_not_leaked() {
    let proxy = FakeUploadProxy::start("right").await;
    let sink = UploadSink::start(reqwest::Client::new(), CHUNK, cfg(&proxy, "wrong-secret", false));
    sink.write_at(0, Bytes::from(vec![1u8; CHUNK as usize])).await.ok();
    let err = sink.flush().await.expect_err("refused");
    assert_eq!(err.code(), ErrorCode::TargetUploadFailed);
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.report().contains("wrong-secret") && !format!("{sink:?}").contains("wrong-secret"));
    assert_eq!(proxy.unauthorized(), 1);
}

#[tokio::test]
async fn writes_outside_the_disk_are_rejected() {
    let proxy = FakeUploadProxy::start("t").await;
    let sink = UploadSink::start(reqwest::Client::new(), 4096, cfg(&proxy, "t", false));
    let err = sink.write_at(4000, Bytes::from(vec![0u8; 200])).await.expect_err("oob");
    assert_eq!(err.code(), ErrorCode::OutOfBounds);
    assert!(sink.read_at(0, 1).await.is_err());
}
