//! Fuzz the sparse extent header and marker parsers; accepted headers must be bounded.
#![no_main]

use vmigrate_vsphere::vmdk::header::{Marker, SparseHeader, MAX_GD_ENTRIES};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(h) = SparseHeader::parse(data) {
        assert!(h.gd_entries() <= MAX_GD_ENTRIES);
        assert!(h.grain_bytes() <= 32 << 20);
        assert_eq!(SparseHeader::parse(&h.to_bytes()), Ok(h));
    }
    let _ = Marker::parse(data);
});
