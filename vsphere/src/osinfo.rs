//! VMware guest ids (`config.guestId`, a VMX's `guestOS`, an OVF's `vmw:osType`) as the neutral
//! OS id of the core model: a libosinfo short id, as virt-v2v and Forklift name guests
//! (`rhel8.0`, `win2k19`, `debian12`).
//!
//! A guest id names an OS family and often a major version, never a minor one, so the id is
//! the `.0` release of that version where libosinfo versions by minor (`rhel9_64Guest` →
//! `rhel9.0`). Where the guest id names no version at all (`ubuntu64Guest`, `fedora64Guest`,
//! `otherLinux64Guest`) the result is the libosinfo family prefix alone (`ubuntu`, `fedora`,
//! `linux`): true to what the source knows, and still what consumers match on (a target's OS
//! defaults by prefix). An id nothing here knows gives `None` (the model keeps an empty OS id:
//! unknown).

/// Exact guest ids (lower case, without the `_64Guest` / `64Guest` / `Guest` suffix) whose
/// libosinfo id is not spelled after the guest id.
const EXACT: &[(&str, &str)] = &[
    ("windows2022srvnext", "win2k25"),
    ("windows2019srvnext", "win2k22"),
    ("windows2019srv", "win2k19"),
    ("windows2016srv", "win2k16"),
    ("windows9server", "win2k16"),
    ("windows8server", "win2k12r2"),
    ("windows7server", "win2k8r2"),
    ("windowshyperv", "win2k8r2"),
    ("windows12", "win11"),
    ("windows11", "win11"),
    ("windows10", "win10"),
    ("windows9", "win10"),
    ("windows8", "win8"),
    ("windows7", "win7"),
    ("winlonghorn", "win2k8"),
    ("winvista", "winvista"),
    ("winxppro", "winxp"),
    ("winxphome", "winxp"),
    ("winnetenterprise", "win2k3"),
    ("winnetstandard", "win2k3"),
    ("winnetdatacenter", "win2k3"),
    ("winnetweb", "win2k3"),
    ("winnetbusiness", "win2k3"),
    ("win2000pro", "win2k"),
    ("win2000serv", "win2k"),
    ("win2000advserv", "win2k"),
    ("winnt", "winnt4.0"),
    ("winme", "winme"),
    ("win98", "win98"),
    ("win95", "win95"),
    ("win31", "win3.1"),
    ("dos", "msdos6.22"),
    ("centos9", "centos-stream9"),
    ("centos8", "centos8"),
    ("centos", "centos5.0"),
    ("rhel2", "rhel2.1"),
    ("rhel3", "rhel3"),
    ("amazonlinux2", "amzn2.0"),
    ("amazonlinux3", "amzn2023"),
    ("darwin", "macosx10.7"),
];

/// Families whose guest ids end in a major version (`rhel8`, `debian12`): (guest id prefix,
/// libosinfo prefix, suffix after the version).
const VERSIONED: &[(&str, &str, &str)] = &[
    ("rhel", "rhel", ".0"),
    ("centos", "centos", ".0"),
    ("oraclelinux", "ol", ".0"),
    ("rockylinux", "rocky", ".0"),
    ("almalinux", "almalinux", ".0"),
    ("debian", "debian", ""),
    ("sles", "sles", ""),
    ("opensuse", "opensuse", ""),
    ("freebsd", "freebsd", ".0"),
    ("solaris", "solaris", ""),
    ("asianux", "asianux", ""),
    ("mandriva", "mandriva", ""),
];

/// Families without a version in the guest id: (guest id prefix, libosinfo family prefix).
const FAMILY: &[(&str, &str)] = &[
    ("rockylinux", "rocky"),
    ("almalinux", "almalinux"),
    ("oraclelinux", "ol"),
    ("ubuntu", "ubuntu"),
    ("debian", "debian"),
    ("fedora", "fedora"),
    ("opensuse", "opensuse"),
    ("sles", "sles"),
    ("suse", "opensuse"),
    ("coreos", "fedora-coreos"),
    ("amazonlinux", "amzn"),
    ("photon", "photon"),
    ("asianux", "asianux"),
    ("mandriva", "mandriva"),
    ("mandrake", "mandriva"),
    ("turbolinux", "turbolinux"),
    ("freebsd", "freebsd"),
    ("solaris", "solaris"),
    ("netware", "netware"),
    ("os2", "os2"),
];

/// The libosinfo short id for a VMware guest id (`rhel8_64Guest` → `rhel8.0`,
/// `windows2019srv_64Guest` → `win2k19`, `otherLinux64Guest` → `linux`), `None` when unknown.
pub fn os_id_from_guest_id(guest_id: &str) -> Option<String> {
    let g = guest_id.trim().to_ascii_lowercase();
    let base = ["_64guest", "64guest", "guest64", "guest"].iter().find_map(|s| g.strip_suffix(s)).unwrap_or(&g);
    let base = base.trim_end_matches('_');
    if base.is_empty() {
        return None;
    }
    if let Some((_, id)) = EXACT.iter().find(|(k, _)| *k == base) {
        return Some((*id).to_owned());
    }
    for (prefix, osinfo, suffix) in VERSIONED {
        if let Some(v) = base.strip_prefix(prefix) {
            if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!("{osinfo}{v}{suffix}"));
            }
        }
    }
    if let Some((_, id)) = FAMILY.iter().find(|(p, _)| base.starts_with(p)) {
        return Some((*id).to_owned());
    }
    // otherLinux, other26xLinux, other3xLinux ... other6xLinux: some Linux.
    if base.starts_with("other") && base.ends_with("linux") {
        return Some("linux".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::os_id_from_guest_id as os;

    #[test]
    fn common_guest_ids_map_to_libosinfo_ids() {
        for (guest, want) in [
            ("rhel8_64Guest", "rhel8.0"),
            ("rhel9_64Guest", "rhel9.0"),
            ("rhel7Guest", "rhel7.0"),
            ("windows2019srv_64Guest", "win2k19"),
            ("windows2019srvNext_64Guest", "win2k22"),
            ("windows2022srvNext_64Guest", "win2k25"),
            ("windows9Server64Guest", "win2k16"),
            ("windows8Server64Guest", "win2k12r2"),
            ("windows9_64Guest", "win10"),
            ("windows11_64Guest", "win11"),
            ("windows7_64Guest", "win7"),
            ("winXPProGuest", "winxp"),
            ("winNetEnterpriseGuest", "win2k3"),
            ("debian12_64Guest", "debian12"),
            ("ubuntu64Guest", "ubuntu"),
            ("centos7_64Guest", "centos7.0"),
            ("centos9_64Guest", "centos-stream9"),
            ("oracleLinux8_64Guest", "ol8.0"),
            ("sles15_64Guest", "sles15"),
            ("fedora64Guest", "fedora"),
            ("otherLinux64Guest", "linux"),
            ("other5xLinux64Guest", "linux"),
            ("freebsd13_64Guest", "freebsd13.0"),
            ("solaris11_64Guest", "solaris11"),
            ("dosGuest", "msdos6.22"),
            ("darwin64Guest", "macosx10.7"),
        ] {
            assert_eq!(os(guest).as_deref(), Some(want), "{guest}");
        }
    }

    #[test]
    fn unknown_guest_ids_are_none() {
        for guest in ["", "otherGuest", "otherGuest64", "vmkernel7Guest", "somethingNew"] {
            assert_eq!(os(guest), None, "{guest}");
        }
    }
}
