//! Fuzz the OVF descriptor parser and its mapping into the core model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(env) = vmigrate_ova::ovf::parse_envelope(data) {
        let _ = vmigrate_ova::ovf::to_vms(&env, "x.ova", "ova");
    }
});
