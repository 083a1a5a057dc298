//! Unit tests of the reply reader: valid streams complete requests, and random or mutated bytes
//! end the connection with a typed error and fail every pending request, never a panic.

use proptest::prelude::*;
use tokio::io::BufReader;
use tokio::sync::oneshot;

use super::conn::*;
use super::*;

fn structured(flags: u16, typ: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&typ.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn simple(error: u32, cookie: u64, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A valid stream answering: cookie 1 read(0, 16) with data + hole, cookie 2 block status,
/// cookie 3 write (simple OK), cookie 4 read with an error chunk.
fn valid_stream() -> Vec<u8> {
    let mut s = Vec::new();
    let mut data = 0u64.to_be_bytes().to_vec();
    data.extend_from_slice(&[7u8; 8]);
    s.extend(structured(0, REPLY_TYPE_OFFSET_DATA, 1, &data));
    let mut hole = 8u64.to_be_bytes().to_vec();
    hole.extend_from_slice(&8u32.to_be_bytes());
    s.extend(structured(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE, 1, &hole));
    let mut bs = 9u32.to_be_bytes().to_vec();
    for (len, flags) in [(4096u32, 0u32), (4096, 3)] {
        bs.extend_from_slice(&len.to_be_bytes());
        bs.extend_from_slice(&flags.to_be_bytes());
    }
    s.extend(structured(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, 2, &bs));
    s.extend(simple(0, 3, &[]));
    let mut err = 5u32.to_be_bytes().to_vec();
    err.extend_from_slice(&4u16.to_be_bytes());
    err.extend_from_slice(b"oops");
    s.extend(structured(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 4, &err));
    s
}

type Receivers = Vec<oneshot::Receiver<Result<Completion>>>;

/// A pooled buffer full of garbage, as a reused one may be: hole chunks must zero their range.
fn dirty_buf(len: usize) -> crate::buf::AlignedBuf {
    let mut b = crate::buf::BufPool::new().take(len);
    b.fill(0xAA);
    b
}

fn pending_state() -> (Mutex<State>, Receivers) {
    let mut st = State::default();
    let mut rxs = Vec::new();
    let kinds = [
        (1, Kind::Read { offset: 0, buf: dirty_buf(16), covered: vec![], simple_ok: false }),
        (2, Kind::BlockStatus { context: 9, extents: None }),
        (3, Kind::Other),
        (4, Kind::Read { offset: 0, buf: dirty_buf(16), covered: vec![], simple_ok: false }),
    ];
    for (cookie, kind) in kinds {
        let (tx, rx) = oneshot::channel();
        st.map.insert(cookie, Pending { what: "test", kind, error: None, tx });
        rxs.push(rx);
    }
    (Mutex::new(st), rxs)
}

/// A socket that hands out at most `piece` bytes per read, as a real one may.
struct Trickle<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl tokio::io::AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.bytes.len().min(self.piece).min(buf.remaining());
        buf.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

fn run(bytes: &[u8]) -> (Error, Vec<Result<Completion>>) {
    run_with(bytes, REPLY_BUFFER, usize::MAX)
}

/// Read `bytes` through a reply buffer of `cap` bytes from a socket giving `piece` bytes a read.
fn run_with(bytes: &[u8], cap: usize, piece: usize) -> (Error, Vec<Result<Completion>>) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let (state, rxs) = pending_state();
        let mut current = None;
        let mut r = BufReader::with_capacity(cap, Trickle { bytes, piece });
        let err = read_replies(&mut r, &state, true, &[9], &mut current).await;
        fail_all(&state, current, &err);
        let mut results = Vec::new();
        for rx in rxs {
            results.push(rx.await.expect("every request is answered"));
        }
        (err, results)
    })
}

#[test]
fn valid_stream_completes_every_request() {
    check_valid_stream(run(&valid_stream()));
}

/// Payloads bypass the reply buffer: whichever part of a payload arrived with its header, and
/// however the socket splits the stream, every reply lands where it belongs.
#[test]
fn valid_stream_completes_every_request_however_it_arrives() {
    for cap in [1, 7, 20, 64, REPLY_BUFFER] {
        for piece in [1, 3, 21, 64, usize::MAX] {
            check_valid_stream(run_with(&valid_stream(), cap, piece));
        }
    }
}

fn check_valid_stream((err, results): (Error, Vec<Result<Completion>>)) {
    assert_eq!(err.code(), ErrorCode::NbdConnect, "stream end is a lost connection");
    let mut it = results.into_iter();
    match it.next() {
        Some(Ok(Completion::Data(b))) => assert_eq!(&b[..], &[7, 7, 7, 7, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0]),
        _ => panic!("read did not complete with data"),
    }
    match it.next() {
        Some(Ok(Completion::Extents(e))) => assert_eq!(e, vec![(4096, 0), (4096, 3)]),
        _ => panic!("block status did not complete"),
    }
    assert!(matches!(it.next(), Some(Ok(Completion::Unit))));
    match it.next() {
        Some(Err(e)) => {
            assert_eq!(e.code(), ErrorCode::NbdRequest);
            assert!(e.message().contains("EIO") && e.message().contains("oops"), "{}", e.message());
        }
        _ => panic!("error chunk did not fail the read"),
    }
}

#[test]
fn pending_requests_fail_with_connect_error_on_disconnect() {
    let stream = valid_stream();
    let (err, results) = run(&stream[..30]);
    assert_eq!(err.code(), ErrorCode::NbdConnect);
    for r in results {
        assert_eq!(r.err().map(|e| e.code()), Some(ErrorCode::NbdConnect));
    }
}

#[test]
fn overlapping_and_out_of_range_chunks_are_protocol_errors() {
    // Data chunk beyond the 16-byte request.
    let mut data = 12u64.to_be_bytes().to_vec();
    data.extend_from_slice(&[1u8; 8]);
    let (err, _) = run(&structured(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1, &data));
    assert_eq!(err.code(), ErrorCode::NbdProtocol);
    // Two chunks covering the same bytes, leaving a gap.
    let mut d0 = 0u64.to_be_bytes().to_vec();
    d0.extend_from_slice(&[1u8; 8]);
    let mut s = structured(0, REPLY_TYPE_OFFSET_DATA, 1, &d0);
    s.extend(structured(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1, &d0));
    let (err, results) = run(&s);
    assert_eq!(err.code(), ErrorCode::NbdProtocol);
    assert_eq!(results[0].as_ref().err().map(|e| e.code()), Some(ErrorCode::NbdProtocol));
    // Unknown chunk type and unknown cookie.
    let (err, _) = run(&structured(REPLY_FLAG_DONE, 77, 1, &[]));
    assert_eq!(err.code(), ErrorCode::NbdProtocol);
    let (err, _) = run(&simple(0, 99, &[]));
    assert_eq!(err.code(), ErrorCode::NbdProtocol);
    // A chunk header claiming 1 GiB.
    let mut big = structured(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1, &[]);
    big[16..20].copy_from_slice(&(1u32 << 30).to_be_bytes());
    let (err, _) = run(&big);
    assert_eq!(err.code(), ErrorCode::NbdProtocol);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (err, results) = run(&bytes);
        prop_assert!(matches!(err.code(), ErrorCode::NbdProtocol | ErrorCode::NbdConnect));
        prop_assert_eq!(results.len(), 4);
    }

    #[test]
    fn mutated_valid_streams_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut s = valid_stream();
        for (at, byte) in flips {
            let i = at.index(s.len());
            s[i] = byte;
        }
        let keep = cut.index(s.len() + 1);
        let (err, results) = run(&s[..keep]);
        prop_assert!(matches!(err.code(), ErrorCode::NbdProtocol | ErrorCode::NbdConnect));
        for r in results {
            if let Err(e) = r {
                prop_assert!(matches!(
                    e.code(),
                    ErrorCode::NbdProtocol | ErrorCode::NbdConnect | ErrorCode::NbdRequest | ErrorCode::NoSpace
                ));
            }
        }
    }
}
