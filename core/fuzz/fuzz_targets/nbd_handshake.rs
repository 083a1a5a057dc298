//! Fuzz the handshake parsers: greeting, option reply headers, info and meta context payloads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmigrate_core::nbd::proto::{parse_greeting, parse_info, parse_meta_context, parse_option_reply, OPT_GO};

fuzz_target!(|data: &[u8]| {
    let _ = parse_greeting(data);
    let _ = parse_option_reply(data, OPT_GO);
    let _ = parse_info(data);
    let _ = parse_meta_context(data);
});
