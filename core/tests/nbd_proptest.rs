//! Property tests of the pure NBD parsers (the CI stand-in for cargo-fuzz): random and mutated
//! server bytes give typed errors, never panics, and valid messages round-trip.
#![cfg(feature = "nbd")]
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use vmigrate_core::nbd::parse_uri;
use vmigrate_core::nbd::proto::*;
use vmigrate_core::ErrorCode;

fn is_protocol(e: &vmigrate_core::Error) -> bool {
    e.code() == ErrorCode::NbdProtocol
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn handshake_parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64), opt in any::<u32>()) {
        if let Err(e) = parse_greeting(&b) { prop_assert!(is_protocol(&e)); }
        if let Err(e) = parse_option_reply(&b, opt) { prop_assert!(is_protocol(&e)); }
        if let Err(e) = parse_info(&b) { prop_assert!(is_protocol(&e)); }
        if let Err(e) = parse_meta_context(&b) { prop_assert!(is_protocol(&e)); }
        if let Err(e) = parse_export_name_reply(&b) { prop_assert!(is_protocol(&e)); }
        if let Ok(Info::BlockSize(bs)) = parse_info(&b) {
            prop_assert!(bs.minimum.is_power_of_two() && bs.maximum >= bs.minimum);
        }
    }

    #[test]
    fn reply_parsers_never_panic(
        b in proptest::collection::vec(any::<u8>(), 0..128),
        flags in any::<u16>(), typ in prop_oneof![0u16..8, Just(REPLY_TYPE_ERROR), Just(REPLY_TYPE_ERROR_OFFSET), any::<u16>()],
        structured in any::<bool>(),
    ) {
        match parse_reply_header(&b, structured) {
            Ok(ReplyHeader::Structured { len, .. }) => prop_assert!(len <= MAX_CHUNK),
            Ok(_) => {}
            Err(e) => prop_assert!(is_protocol(&e)),
        }
        if let Err(e) = parse_chunk(flags, typ, b.len() as u32, &b) { prop_assert!(is_protocol(&e)); }
    }

    #[test]
    fn mutated_block_status_chunks_stay_typed(
        descs in proptest::collection::vec((any::<u32>(), any::<u32>()), 1..16),
        flip in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(),
    ) {
        let mut p = 1u32.to_be_bytes().to_vec();
        for (l, f) in &descs { p.extend_from_slice(&l.to_be_bytes()); p.extend_from_slice(&f.to_be_bytes()); }
        let parsed = parse_chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, p.len() as u32, &p).unwrap();
        prop_assert_eq!(parsed, Chunk::BlockStatus { context: 1, extents: descs });
        let i = flip.index(p.len());
        p[i] = byte;
        let keep = cut.index(p.len() + 1);
        if let Err(e) = parse_chunk(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, p.len() as u32, &p[..keep]) {
            prop_assert!(is_protocol(&e));
        }
    }

    #[test]
    fn chunk_ranges_stay_inside_the_request(ro in any::<u64>(), rl in any::<u32>(), o in any::<u64>(), l in any::<u32>()) {
        if let Ok(start) = chunk_range(ro, rl, o, l) {
            prop_assert!(start as u64 + u64::from(l) <= u64::from(rl));
        }
    }

    #[test]
    fn uri_parser_never_panics(s in ".{0,80}", tail in "[a-z0-9/%?=&:\\[\\]@.]{0,40}") {
        for u in [s.clone(), format!("nbd://{tail}"), format!("nbd+unix://{tail}")] {
            if let Err(e) = parse_uri(&u) { prop_assert_eq!(e.code(), ErrorCode::BadUrl); }
        }
    }
}

#[test]
fn error_chunks_carry_errno_message_and_offset() {
    let mut p = 28u32.to_be_bytes().to_vec();
    p.extend_from_slice(&4u16.to_be_bytes());
    p.extend_from_slice(b"full");
    p.extend_from_slice(&4096u64.to_be_bytes());
    let c = parse_chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR_OFFSET, p.len() as u32, &p).unwrap();
    assert_eq!(c, Chunk::Error { errno: 28, message: "full".into(), offset: Some(4096) });
    assert_eq!(request_error(28, "write", "full").code(), ErrorCode::NoSpace);
    assert_eq!(request_error(5, "read", "").code(), ErrorCode::NbdRequest);
    assert!(request_error(5, "read", "").message().contains("EIO"));
    assert_eq!(request_error(108, "read", "").code(), ErrorCode::NbdConnect);
}
