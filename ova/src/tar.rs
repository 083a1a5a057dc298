//! Indexing a tar archive in place: where each member's bytes sit in the file, without
//! extracting anything.
//!
//! An OVA is a tar (POSIX ustar, as VMware's ovftool writes it; GNU long names and pax `path`
//! records are read too, as other tools write them). [`parse_header`] is a pure function over one
//! 512-byte block; [`scan`] walks the headers through a block reader and returns each regular
//! member's name, data offset and size. Everything in the archive is untrusted: names that
//! could reach outside the package (`..`, absolute), links, devices and duplicates are refused,
//! every size is checked against the file's size before it is used, and nothing here panics.

use std::collections::BTreeSet;

use crate::error::OvaError;

/// The tar block size.
pub const BLOCK: u64 = 512;

/// Most members an OVA may have (an OVF, a manifest, a certificate and the disks of its VMs).
pub const MAX_ENTRIES: usize = 4096;

/// Largest pax or GNU long-name record read into memory.
const MAX_META_BYTES: u64 = 64 << 10;

/// What one header announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file (`0` or NUL).
    File,
    /// A directory (`5`): no data, skipped.
    Directory,
    /// A pax extended header for the next member (`x`).
    PaxNext,
    /// A pax global header (`g`): ignored.
    PaxGlobal,
    /// A GNU long name for the next member (`L`).
    GnuLongName,
    /// A GNU long link name (`K`): only meaningful for links, which are refused anyway.
    GnuLongLink,
    /// A hard or symbolic link (`1`, `2`): refused.
    Link,
    /// Anything else (devices, FIFOs, sparse files, vendor types): refused.
    Other(u8),
}

/// One parsed 512-byte header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name (ustar `prefix/name` joined), as written.
    pub name: String,
    /// Size of the data that follows, in bytes.
    pub size: u64,
    /// Type.
    pub kind: EntryType,
}

/// One regular member of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised name (no leading `./`).
    pub name: String,
    /// Offset of its first data byte in the archive.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
}

fn field(block: &[u8], at: usize, len: usize) -> &[u8] {
    let f = &block[at..at + len];
    let end = f.iter().position(|b| *b == 0).unwrap_or(len);
    &f[..end]
}

/// An octal number field (space or NUL terminated), or a base-256 one (high bit set, GNU).
fn number(f: &[u8]) -> Option<u64> {
    if let Some(first) = f.first() {
        if first & 0x80 != 0 {
            // Base-256: the remaining bits big-endian; negative numbers are refused.
            if first & 0x40 != 0 {
                return None;
            }
            let mut v: u64 = u64::from(first & 0x3f);
            for b in &f[1..] {
                v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
            }
            return Some(v);
        }
    }
    let s: &[u8] = {
        let start = f.iter().position(|b| *b != b' ').unwrap_or(f.len());
        let rest = &f[start..];
        let end = rest.iter().position(|b| *b == b' ' || *b == 0).unwrap_or(rest.len());
        &rest[..end]
    };
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parse one header block. `Ok(None)` for an all-zero block (the end-of-archive marker).
///
/// # Errors
/// [`OvaError::TarHeader`] for a bad checksum, a bad number field or a non-UTF-8 name.
pub fn parse_header(block: &[u8; 512], offset: u64) -> Result<Option<Header>, OvaError> {
    if block.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let bad = |reason| OvaError::TarHeader { offset, reason };
    let stored = number(&block[148..156]).ok_or_else(|| bad("checksum field is not a number"))?;
    let unsigned: u64 =
        block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u64::from(*b) }).sum();
    // Some old tars summed signed bytes; accept either.
    let signed: i64 =
        block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { i64::from(*b as i8) }).sum();
    if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
        return Err(bad("checksum mismatch (not a tar archive, or a damaged header)"));
    }
    let size = number(&block[124..136]).ok_or_else(|| bad("size field is not a number"))?;
    let kind = match block[156] {
        b'0' | 0 | b'7' => EntryType::File,
        b'5' => EntryType::Directory,
        b'x' => EntryType::PaxNext,
        b'g' => EntryType::PaxGlobal,
        b'L' => EntryType::GnuLongName,
        b'K' => EntryType::GnuLongLink,
        b'1' | b'2' => EntryType::Link,
        t => EntryType::Other(t),
    };
    let name = field(block, 0, 100);
    let ustar = &block[257..262] == b"ustar";
    let prefix = if ustar && &block[257..263] == b"ustar\0" { field(block, 345, 155) } else { &[][..] };
    let mut full = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        full.extend_from_slice(prefix);
        full.push(b'/');
    }
    full.extend_from_slice(name);
    let name = String::from_utf8(full).map_err(|_| bad("name is not UTF-8"))?;
    Ok(Some(Header { name, size, kind }))
}

/// The name a member is known by, or why it is refused: relative, no `..`, no NUL, not empty.
pub fn normalise_name(name: &str) -> Result<String, &'static str> {
    if name.contains('\0') {
        return Err("name contains NUL");
    }
    if name.starts_with('/') {
        return Err("absolute name");
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("name climbs out of the package (..)"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("empty name");
    }
    Ok(parts.join("/"))
}

/// The `path` of a pax extended header's records (`"LEN key=value\n"`...), if it has one.
///
/// # Errors
/// [`OvaError::TarHeader`] when the records are malformed.
pub fn pax_path(data: &[u8], offset: u64) -> Result<Option<String>, OvaError> {
    let bad = |reason| OvaError::TarHeader { offset, reason };
    let mut rest = data;
    let mut path = None;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let sp = rest.iter().position(|b| *b == b' ').ok_or_else(|| bad("pax record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("pax record length is not a number"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("pax record length out of range"));
        }
        let record = &rest[sp + 1..len - 1];
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            if &record[..eq] == b"path" {
                let v = std::str::from_utf8(&record[eq + 1..]).map_err(|_| bad("pax path is not UTF-8"))?;
                path = Some(v.to_owned());
            }
        }
        rest = &rest[len..];
    }
    Ok(path)
}

/// Reads `len` bytes at an offset of the archive: how [`scan`] reaches the file.
pub trait BlockRead {
    /// Read exactly `buf.len()` bytes at `offset` (the caller has checked they are in the file).
    ///
    /// # Errors
    /// The reader's I/O error.
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl BlockRead for &[u8] {
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let src = self
            .get(start..start.saturating_add(buf.len()))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl BlockRead for &std::fs::File {
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(*self, buf, offset)
    }
}

/// Why [`scan`] stopped: a malformed archive, or the reader failed.
#[derive(Debug)]
pub enum ScanError {
    /// The archive is malformed or unsafe.
    Ova(OvaError),
    /// Reading failed.
    Io(std::io::Error),
}

impl From<OvaError> for ScanError {
    fn from(e: OvaError) -> Self {
        ScanError::Ova(e)
    }
}

/// Walk the archive of `size` bytes and list its regular members in order.
///
/// # Errors
/// [`OvaError::Truncated`] when a header or a member's data runs past the end;
/// [`OvaError::UnsafeEntry`] for a name that is absolute, climbs out with `..`, is a duplicate,
/// or a member that is a link or a device; [`OvaError::TarHeader`] for a malformed header;
/// over [`MAX_ENTRIES`] members is [`OvaError::Unsupported`].
pub fn scan(mut r: impl BlockRead, size: u64) -> Result<Vec<Entry>, ScanError> {
    let mut out: Vec<Entry> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next_name: Option<String> = None;
    let mut offset = 0u64;
    let mut members = 0usize;
    loop {
        if offset == size {
            // No end-of-archive blocks: accepted (a cut inside a member is caught below; a cut
            // between members loses whole files, which the manifest and descriptor catch).
            break;
        }
        let header_end = offset.checked_add(BLOCK).filter(|e| *e <= size).ok_or(OvaError::Truncated {
            what: "tar header",
            offset,
            needed: BLOCK,
            size,
        })?;
        let mut block = [0u8; 512];
        r.read_exact_at(&mut block, offset).map_err(ScanError::Io)?;
        let Some(h) = parse_header(&block, offset)? else { break };
        members += 1;
        if members > MAX_ENTRIES * 2 {
            return Err(OvaError::Unsupported { what: format!("more than {MAX_ENTRIES} tar members") }.into());
        }
        let data_end = header_end.checked_add(h.size).filter(|e| *e <= size).ok_or(OvaError::Truncated {
            what: "tar member data",
            offset: header_end,
            needed: h.size,
            size,
        })?;
        let padded = h.size.div_ceil(BLOCK).saturating_mul(BLOCK);
        let _ = data_end;
        let next = header_end.saturating_add(padded).min(size);
        let read_meta = |r: &mut dyn BlockRead| -> Result<Vec<u8>, ScanError> {
            if h.size > MAX_META_BYTES {
                return Err(OvaError::TarHeader { offset, reason: "extended header too large" }.into());
            }
            let mut data = vec![0u8; h.size as usize];
            r.read_exact_at(&mut data, header_end).map_err(ScanError::Io)?;
            Ok(data)
        };
        match h.kind {
            EntryType::PaxNext => {
                let data = read_meta(&mut r)?;
                if let Some(p) = pax_path(&data, offset)? {
                    next_name = Some(p);
                }
            }
            EntryType::GnuLongName => {
                let data = read_meta(&mut r)?;
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                let name = String::from_utf8(data[..end].to_vec())
                    .map_err(|_| OvaError::TarHeader { offset, reason: "long name is not UTF-8" })?;
                next_name = Some(name);
            }
            EntryType::PaxGlobal | EntryType::GnuLongLink => {}
            EntryType::Directory => {
                let name = next_name.take().unwrap_or(h.name);
                normalise_name(&name).map_err(|reason| OvaError::UnsafeEntry { name: name.clone(), offset, reason })?;
            }
            EntryType::Link | EntryType::Other(_) => {
                let name = next_name.take().unwrap_or(h.name);
                let reason = if h.kind == EntryType::Link {
                    "links are refused (a link could point outside the package)"
                } else {
                    "only regular files and folders are accepted"
                };
                return Err(OvaError::UnsafeEntry { name, offset, reason }.into());
            }
            EntryType::File => {
                let raw = next_name.take().unwrap_or(h.name);
                let name = normalise_name(&raw).map_err(|reason| OvaError::UnsafeEntry {
                    name: raw.clone(),
                    offset,
                    reason,
                })?;
                if !seen.insert(name.clone()) {
                    return Err(OvaError::UnsafeEntry {
                        name: raw,
                        offset,
                        reason: "a second member of the same name (which one is meant is ambiguous)",
                    }
                    .into());
                }
                if out.len() >= MAX_ENTRIES {
                    return Err(OvaError::Unsupported { what: format!("more than {MAX_ENTRIES} files") }.into());
                }
                out.push(Entry { name, offset: header_end, size: h.size });
            }
        }
        offset = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64, kind: u8) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..name.len()].copy_from_slice(name.as_bytes());
        b[100..107].copy_from_slice(b"0000644");
        b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        b[156] = kind;
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].copy_from_slice(b"        ");
        let sum: u64 = b.iter().map(|x| u64::from(*x)).sum();
        b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        b
    }

    fn archive(members: &[(&str, &[u8], u8)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (name, data, kind) in members {
            v.extend_from_slice(&header(name, data.len() as u64, *kind));
            v.extend_from_slice(data);
            v.resize(v.len().div_ceil(512) * 512, 0);
        }
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    #[test]
    fn lists_members_with_their_data_offsets() {
        let a = archive(&[("vm.ovf", b"<xml/>", b'0'), ("dir/", b"", b'5'), ("./dir/disk.vmdk", &[7u8; 700], b'0')]);
        let e = scan(a.as_slice(), a.len() as u64).expect("scan");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], Entry { name: "vm.ovf".into(), offset: 512, size: 6 });
        assert_eq!(e[1].name, "dir/disk.vmdk");
        assert_eq!(&a[e[1].offset as usize..][..700], &[7u8; 700][..]);
    }

    #[test]
    fn refuses_traversal_absolute_links_and_duplicates() {
        for (members, want) in [
            (vec![("../etc/passwd", &b"x"[..], b'0')], "climbs"),
            (vec![("/etc/passwd", &b"x"[..], b'0')], "absolute"),
            (vec![("link", &b""[..], b'2')], "links"),
            (vec![("dev", &b""[..], b'3')], "regular"),
            (vec![("a", &b"1"[..], b'0'), ("./a", &b"2"[..], b'0')], "second member"),
        ] {
            let a = archive(&members);
            match scan(a.as_slice(), a.len() as u64) {
                Err(ScanError::Ova(OvaError::UnsafeEntry { reason, .. })) => assert!(reason.contains(want), "{reason}"),
                other => panic!("{members:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn pax_and_gnu_long_names_rename_the_next_member() {
        let long = format!("{}/disk.vmdk", "d".repeat(120));
        let rec = format!("path={long}\n");
        let pax = format!("{} {rec}", rec.len() + 1 + (rec.len() + 4).to_string().len());
        let pax = {
            // The length prefix counts itself; recompute until stable.
            let mut p = pax;
            for _ in 0..3 {
                let n = rec.len() + 1 + p.split(' ').next().unwrap_or("").len();
                p = format!("{n} {rec}");
            }
            p
        };
        let a = archive(&[("PaxHeader", pax.as_bytes(), b'x'), ("short", b"abc", b'0')]);
        let e = scan(a.as_slice(), a.len() as u64).expect("scan");
        assert_eq!(e[0].name, long);
        let a = archive(&[("././@LongLink", format!("{long}\0").as_bytes(), b'L'), ("short", b"abc", b'0')]);
        assert_eq!(scan(a.as_slice(), a.len() as u64).expect("scan")[0].name, long);
        let a = archive(&[("PaxHeader", b"5 ../x\n", b'x'), ("short", b"abc", b'0')]);
        assert!(matches!(scan(a.as_slice(), a.len() as u64), Err(ScanError::Ova(OvaError::TarHeader { .. }))));
    }

    #[test]
    fn truncation_and_corruption_are_typed() {
        let a = archive(&[("vm.ovf", &[1u8; 2000], b'0')]);
        for cut in [100usize, 512 + 1000] {
            match scan(&a[..cut], cut as u64) {
                Err(ScanError::Ova(OvaError::Truncated { .. })) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        let mut bad = a.clone();
        bad[10] ^= 1;
        assert!(matches!(scan(bad.as_slice(), bad.len() as u64), Err(ScanError::Ova(OvaError::TarHeader { .. }))));
    }

    #[test]
    fn base256_sizes_and_bad_numbers() {
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(b"0000000017 "), Some(15));
        assert_eq!(number(b"9"), None);
        assert_eq!(number(&[0xff; 12]), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let _ = scan(data.as_slice(), data.len() as u64);
        }

        #[test]
        fn never_panics_on_mutated_archives(flips in proptest::collection::vec((0usize..2560, proptest::num::u8::ANY), 1..8)) {
            let mut a = archive(&[("vm.ovf", b"<a/>", b'0'), ("PaxHeader", b"13 path=abc\n", b'x'), ("d.vmdk", &[1u8; 600], b'0')]);
            for (at, v) in flips {
                let n = a.len();
                a[at % n] = v;
            }
            let _ = scan(a.as_slice(), a.len() as u64);
        }
    }
}
