//! Fuzz the manifest (`.mf`) parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmigrate_ova::manifest::parse_manifest(data);
});
