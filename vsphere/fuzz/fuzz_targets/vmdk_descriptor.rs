//! Fuzz the VMDK text descriptor parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(d) = vmigrate_vsphere::vmdk::parse_descriptor(data) {
        let _ = (d.capacity_bytes(), d.is_thin(), d.has_parent(), d.adapter_type());
    }
});
