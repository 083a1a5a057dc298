//! Fuzz the tar index: headers, pax and GNU long-name records, sizes and names.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = vmigrate_ova::tar::scan(data, data.len() as u64);
    if let Ok(block) = <&[u8; 512]>::try_from(data.get(..512).unwrap_or_default()) {
        let _ = vmigrate_ova::tar::parse_header(block, 0);
    }
    let _ = vmigrate_ova::tar::pax_path(data, 0);
});
