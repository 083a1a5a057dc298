//! Fuzz the VMX parser and its mapping into the core model.
#![no_main]

use vmigrate_vsphere::vmx::{parse_vmx, vmx_to_vm, VmxLocation};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(vmx) = parse_vmx(text) {
        let _ = vmx_to_vm(&vmx, "vm/vm.vmx", VmxLocation { datastore: "ds", folder: "vm" }, &|_| None);
    }
});
