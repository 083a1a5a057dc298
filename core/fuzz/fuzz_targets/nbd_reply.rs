//! Fuzz the transmission-phase reply parsers: a header, then the chunk payload that follows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmigrate_core::nbd::proto::{chunk_range, parse_chunk, parse_reply_header, ReplyHeader, STRUCTURED_REPLY_LEN};

fuzz_target!(|data: &[u8]| {
    let structured = data.first().is_some_and(|b| b & 1 == 1);
    let body = data.get(1..).unwrap_or_default();
    if let Ok(ReplyHeader::Structured { flags, typ, len, .. }) = parse_reply_header(body, structured) {
        let payload = body.get(STRUCTURED_REPLY_LEN..).unwrap_or_default();
        if let Ok(vmigrate_core::nbd::proto::Chunk::Data { offset, len }) = parse_chunk(flags, typ, len, payload) {
            let _ = chunk_range(0, 1 << 20, offset, len);
        }
    }
});
