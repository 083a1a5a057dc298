//! The NBD client against a deliberately broken server written here: garbage greetings, garbage
//! after the handshake, oversized chunks, a hang-up mid-request, refused exports and a server
//! without `NBD_OPT_GO`. Every case ends in a typed error (or works, for the fallback), never a
//! panic or a hang.
#![cfg(feature = "nbd")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use vmigrate_core::nbd::proto::*;
use vmigrate_core::nbd::{NbdAddr, NbdOptions, NbdTransport};
use vmigrate_core::{BlockTransport, ErrorCode};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    GarbageGreeting,
    RefuseExport,
    NoGo,
    GarbageAfterHandshake,
    HugeChunk,
    HangUpMidRequest,
    UnknownChunkType,
}

const SIZE: u64 = 1 << 20;

async fn reply(s: &mut UnixStream, opt: u32, typ: u32, data: &[u8]) {
    let mut v = OPT_REPLY_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    s.write_all(&v).await.unwrap();
}

/// Serve one connection with the given fault. Returns when the client goes away.
async fn serve(mut s: UnixStream, fault: Fault) {
    if fault == Fault::GarbageGreeting {
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    }
    let mut g = NBD_MAGIC.to_be_bytes().to_vec();
    g.extend_from_slice(&IHAVEOPT.to_be_bytes());
    g.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&g).await.unwrap();
    let mut cf = [0u8; 4];
    if s.read_exact(&mut cf).await.is_err() {
        return;
    }
    let structured = matches!(fault, Fault::HugeChunk | Fault::UnknownChunkType);
    loop {
        let mut h = [0u8; 16];
        if s.read_exact(&mut h).await.is_err() {
            return;
        }
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await.unwrap();
        match opt {
            OPT_STRUCTURED_REPLY if structured => reply(&mut s, opt, REP_ACK, &[]).await,
            OPT_GO if fault == Fault::RefuseExport => {
                reply(&mut s, opt, REP_FLAG_ERROR | 6, b"no such export").await;
            }
            OPT_GO if fault == Fault::NoGo => reply(&mut s, opt, REP_ERR_UNSUP, &[]).await,
            OPT_GO => {
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&SIZE.to_be_bytes());
                info.extend_from_slice(&(TF_HAS_FLAGS | TF_SEND_FLUSH).to_be_bytes());
                reply(&mut s, opt, REP_INFO, &info).await;
                reply(&mut s, opt, REP_ACK, &[]).await;
                break;
            }
            OPT_EXPORT_NAME => {
                let mut v = SIZE.to_be_bytes().to_vec();
                v.extend_from_slice(&TF_HAS_FLAGS.to_be_bytes());
                s.write_all(&v).await.unwrap();
                break;
            }
            _ => reply(&mut s, opt, REP_ERR_UNSUP, &[]).await,
        }
    }
    // Transmission phase.
    loop {
        let mut req = [0u8; REQUEST_LEN];
        if s.read_exact(&mut req).await.is_err() {
            return;
        }
        let typ = u16::from_be_bytes([req[6], req[7]]);
        let cookie = &req[8..16];
        let len = u32::from_be_bytes(req[24..28].try_into().unwrap());
        if typ == CMD_DISC {
            return;
        }
        match fault {
            Fault::GarbageAfterHandshake => {
                let _ = s.write_all(&[0xde; 64]).await;
            }
            Fault::HangUpMidRequest => return,
            Fault::HugeChunk | Fault::UnknownChunkType => {
                let mut v = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
                v.extend_from_slice(&REPLY_FLAG_DONE.to_be_bytes());
                let t = if fault == Fault::HugeChunk { REPLY_TYPE_OFFSET_DATA } else { 42 };
                v.extend_from_slice(&t.to_be_bytes());
                v.extend_from_slice(cookie);
                v.extend_from_slice(&(if fault == Fault::HugeChunk { 1u32 << 30 } else { 0 }).to_be_bytes());
                let _ = s.write_all(&v).await;
            }
            _ => {
                // A correct simple reply: the data is the low byte of each offset.
                let off = u64::from_be_bytes(req[16..24].try_into().unwrap());
                let mut v = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
                v.extend_from_slice(&0u32.to_be_bytes());
                v.extend_from_slice(cookie);
                if typ == CMD_READ {
                    v.extend((off..off + u64::from(len)).map(|i| i as u8));
                }
                s.write_all(&v).await.unwrap();
            }
        }
    }
}

/// Start the fake server; returns its address and the temp dir keeping the socket alive.
fn start(fault: Fault) -> (NbdAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, fault));
        }
    });
    (NbdAddr::Unix(path), dir)
}

async fn connect(addr: NbdAddr) -> vmigrate_core::Result<NbdTransport> {
    let opts = NbdOptions { connect_timeout: Duration::from_secs(5), ..NbdOptions::default() };
    NbdTransport::connect_with(addr, "x", opts).await
}

#[tokio::test]
async fn garbage_greeting_is_a_protocol_error() {
    let (addr, _d) = start(Fault::GarbageGreeting);
    assert_eq!(connect(addr).await.unwrap_err().code(), ErrorCode::NbdProtocol);
}

#[tokio::test]
async fn refused_export_is_a_request_error_with_the_reason() {
    let (addr, _d) = start(Fault::RefuseExport);
    let e = connect(addr).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdRequest);
    assert!(e.message().contains("NBD_REP_ERR_UNKNOWN") && e.message().contains("no such export"), "{}", e.message());
}

#[tokio::test]
async fn server_without_go_falls_back_to_export_name() {
    let (addr, _d) = start(Fault::NoGo);
    let t = connect(addr).await.unwrap();
    assert!(!t.info().used_go && !t.info().structured);
    assert_eq!(t.size(), SIZE);
    let got = t.read_at(250, 10).await.unwrap();
    assert_eq!(&got[..], &[250, 251, 252, 253, 254, 255, 0, 1, 2, 3]);
    // No NBD_FLAG_SEND_WRITE_ZEROES: zeroing is declined, not faked.
    assert!(!t.zero(0, 4096).await.unwrap());
}

#[tokio::test]
async fn garbage_after_handshake_is_a_protocol_error_for_every_request() {
    let (addr, _d) = start(Fault::GarbageAfterHandshake);
    let t = connect(addr).await.unwrap();
    let (a, b) = tokio::join!(t.read_at(0, 512), t.read_at(512, 512));
    assert_eq!(a.unwrap_err().code(), ErrorCode::NbdProtocol);
    assert_eq!(b.unwrap_err().code(), ErrorCode::NbdProtocol);
    // The dead connection refuses further requests at once instead of hanging.
    let e = tokio::time::timeout(Duration::from_secs(5), t.flush()).await.unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdProtocol);
}

#[tokio::test]
async fn oversized_and_unknown_chunks_are_protocol_errors() {
    for fault in [Fault::HugeChunk, Fault::UnknownChunkType] {
        let (addr, _d) = start(fault);
        let t = connect(addr).await.unwrap();
        assert!(t.info().structured);
        let e = t.read_at(0, 4096).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::NbdProtocol, "{}", e.report());
    }
}

#[tokio::test]
async fn hang_up_mid_request_is_a_transient_connect_error() {
    let (addr, _d) = start(Fault::HangUpMidRequest);
    let t = connect(addr).await.unwrap();
    let e = t.read_at(0, 4096).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NbdConnect);
    assert!(e.is_transient());
}
