//! The package manifest (`.mf`): one `ALGO(name)= hexdigest` line per file, as ovftool writes
//! it (`SHA256` today, `SHA1` in older versions, `SHA512` on request), and the digests that check
//! it.

use std::collections::BTreeMap;

use crate::error::OvaError;

/// Largest manifest read.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// A digest algorithm a manifest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// SHA-1 (ovftool before 4.x; kept readable, not recommended).
    Sha1,
    /// SHA-256 (ovftool's default).
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The name manifests use.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// The digest length in bytes.
    pub fn len(self) -> usize {
        self.ring().output_len()
    }

    /// Never true: a digest has bytes (for clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Algorithm::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => &ring::digest::SHA256,
            Algorithm::Sha512 => &ring::digest::SHA512,
        }
    }

    /// A running digest.
    pub fn hasher(self) -> Hasher {
        Hasher(ring::digest::Context::new(self.ring()))
    }
}

/// A digest being computed.
pub struct Hasher(ring::digest::Context);

impl Hasher {
    /// Add bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The lower-case hex digest.
    pub fn finish(self) -> String {
        hex::encode(self.0.finish().as_ref())
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

/// What a manifest says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Lower-case hex digest.
    pub hex: String,
}

/// A parsed manifest: file name to expected digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Per file name (as written, relative to the package), its digest.
    pub sums: BTreeMap<String, Sum>,
}

/// Parse a manifest.
///
/// # Errors
/// [`OvaError::Manifest`] for a line that is not `ALGO(name)= hex`, an unknown algorithm, a
/// digest of the wrong length, a file named twice, or a manifest over [`MAX_MANIFEST_BYTES`].
pub fn parse_manifest(data: &[u8]) -> Result<Manifest, OvaError> {
    let bad = |line: usize, reason: &str| OvaError::Manifest { line, reason: reason.to_owned() };
    if data.len() > MAX_MANIFEST_BYTES {
        return Err(bad(0, "manifest too large"));
    }
    let text = std::str::from_utf8(data).map_err(|_| bad(0, "not UTF-8"))?;
    let mut m = Manifest::default();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let open = line.find('(').ok_or_else(|| bad(n, "expected ALGO(file)= digest"))?;
        let close =
            line.rfind(")=").or_else(|| line.rfind(") =")).ok_or_else(|| bad(n, "expected ALGO(file)= digest"))?;
        if close <= open {
            return Err(bad(n, "expected ALGO(file)= digest"));
        }
        let algorithm = match line[..open].trim().to_ascii_uppercase().as_str() {
            "SHA1" => Algorithm::Sha1,
            "SHA256" => Algorithm::Sha256,
            "SHA512" => Algorithm::Sha512,
            _ => return Err(bad(n, &format!("unknown digest algorithm {:?}", &line[..open]))),
        };
        let name = line[open + 1..close].to_owned();
        let hex = line[close + 1..].trim_start_matches([' ', '=']).trim().to_ascii_lowercase();
        if hex.len() != algorithm.len() * 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(
                n,
                &format!("{} digest of {name:?} is not {} hex digits", algorithm.name(), algorithm.len() * 2),
            ));
        }
        if name.is_empty() {
            return Err(bad(n, "empty file name"));
        }
        if m.sums.insert(name.clone(), Sum { algorithm, hex }).is_some() {
            return Err(bad(n, &format!("{name:?} is listed twice")));
        }
    }
    if m.sums.is_empty() {
        return Err(bad(0, "manifest lists no files"));
    }
    Ok(m)
}

/// Compare a computed digest with the manifest's.
///
/// # Errors
/// [`OvaError::DigestMismatch`] when they differ.
pub fn check(file: &str, sum: &Sum, actual: String) -> Result<(), OvaError> {
    if actual == sum.hex {
        Ok(())
    } else {
        Err(OvaError::DigestMismatch {
            file: file.to_owned(),
            algorithm: sum.algorithm.name(),
            expected: sum.hex.clone(),
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovftool_lines_of_every_algorithm() {
        let sha256 = "a".repeat(64);
        let sha1 = "B".repeat(40);
        let text = format!("SHA256(vm.ovf)= {sha256}\nSHA1(vm-disk1.vmdk)= {sha1}\n\n");
        let m = parse_manifest(text.as_bytes()).expect("parse");
        assert_eq!(m.sums["vm.ovf"], Sum { algorithm: Algorithm::Sha256, hex: sha256 });
        assert_eq!(m.sums["vm-disk1.vmdk"].hex, "b".repeat(40));
        assert_eq!(m.sums["vm-disk1.vmdk"].algorithm, Algorithm::Sha1);
    }

    #[test]
    fn digests_match_known_values() {
        let mut h = Algorithm::Sha256.hasher();
        h.update(b"abc");
        assert_eq!(h.finish(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let mut h = Algorithm::Sha1.hasher();
        h.update(b"abc");
        assert_eq!(h.finish(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn malformed_manifests_are_typed() {
        for bad in [
            "".to_owned(),
            "SHA256 vm.ovf abc".to_owned(),
            format!("MD5(vm.ovf)= {}", "a".repeat(32)),
            "SHA256(vm.ovf)= abc".to_owned(),
            format!("SHA256(vm.ovf)= {}\nSHA256(vm.ovf)= {}", "a".repeat(64), "b".repeat(64)),
            format!("SHA256()= {}", "a".repeat(64)),
        ] {
            assert!(matches!(parse_manifest(bad.as_bytes()), Err(OvaError::Manifest { .. })), "{bad:?}");
        }
        let sum = Sum { algorithm: Algorithm::Sha256, hex: "a".repeat(64) };
        assert!(matches!(check("x", &sum, "b".repeat(64)), Err(OvaError::DigestMismatch { .. })));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse_manifest(&data);
        }
    }
}
