//! `vmigrate copy` never destroys its own source, and never replaces an existing target without
//! `--overwrite` (issue 14, item 1). Every spelling of "the same file" is tried: the same path,
//! another spelling of it, a symlink, a hard link, `/proc/<pid>/fd/N`, and a VMDK whose extent is
//! the target. After each refusal the source must still hold its bytes.

use std::path::Path;
use std::process::{Command, Output};

fn vmigrate(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmigrate")).args(args).output().expect("run vmigrate")
}

/// 8 MiB with data at three places; returns the bytes.
fn make_source(path: &Path) -> Vec<u8> {
    let mut want = vec![0u8; 8 << 20];
    for (i, off) in [0usize, 3 << 20, (8 << 20) - 4096].into_iter().enumerate() {
        for (j, b) in want[off..off + 4096].iter_mut().enumerate() {
            *b = (j as u8).wrapping_mul(7).wrapping_add(i as u8) | 1;
        }
    }
    std::fs::write(path, &want).expect("write source");
    want
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_refused(o: &Output, code: &str, what: &str) {
    assert_eq!(o.status.code(), Some(1), "{what}: exit {:?}, stderr {}", o.status, stderr(o));
    assert!(stderr(o).contains(code), "{what}: no {code} in {}", stderr(o));
}

#[test]
fn copy_onto_itself_is_refused_whatever_the_spelling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("x.raw");
    let want = make_source(&src);
    let link = dir.path().join("link.raw");
    std::os::unix::fs::symlink(&src, &link).expect("symlink");
    let hard = dir.path().join("hard.raw");
    std::fs::hard_link(&src, &hard).expect("hard link");
    let spelled = dir.path().join(".").join("x.raw");
    // A descriptor this test process holds open, seen through /proc: another path to the inode.
    let held = std::fs::File::open(&src).expect("open");
    let fd_path = format!("/proc/{}/fd/{}", std::process::id(), std::os::fd::AsRawFd::as_raw_fd(&held));
    let targets: Vec<(&str, std::ffi::OsString)> = vec![
        ("same path", src.clone().into()),
        ("other spelling", spelled.into()),
        ("symlink", link.into()),
        ("hard link", hard.into()),
        ("/proc fd", fd_path.into()),
    ];
    for (what, dst) in &targets {
        for extra in [&[][..], &["--overwrite"][..]] {
            let mut args: Vec<&std::ffi::OsStr> = vec!["copy".as_ref(), src.as_os_str(), dst.as_os_str()];
            args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
            let o = vmigrate(&args);
            assert_refused(&o, "SameDisk", &format!("{what} {extra:?}"));
            assert_eq!(std::fs::read(&src).expect("read"), want, "{what}: the source was changed");
        }
    }
    // The symlink as the source, the file as the target: the same.
    let o =
        vmigrate(&["copy".as_ref(), dir.path().join("link.raw").as_os_str(), src.as_os_str(), "--overwrite".as_ref()]);
    assert_refused(&o, "SameDisk", "symlink source");
    assert_eq!(std::fs::read(&src).expect("read"), want);
    drop(held);
}

#[test]
fn vmdk_extent_as_target_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flat = dir.path().join("disk-flat.vmdk");
    let want = make_source(&flat);
    let desc = dir.path().join("disk.vmdk");
    std::fs::write(
        &desc,
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW {} FLAT \"disk-flat.vmdk\" 0\n",
            want.len() / 512
        ),
    )
    .expect("descriptor");
    // The extent under another name (a hard link) as the target.
    let other = dir.path().join("out.raw");
    std::fs::hard_link(&flat, &other).expect("hard link");
    let o = vmigrate(&["copy".as_ref(), desc.as_os_str(), other.as_os_str(), "--overwrite".as_ref()]);
    assert_refused(&o, "SameDisk", "vmdk extent");
    assert_eq!(std::fs::read(&flat).expect("read"), want);
}

#[test]
fn existing_target_needs_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("s.raw");
    let want = make_source(&src);
    let dst = dir.path().join("d.raw");
    std::fs::write(&dst, b"precious").expect("write target");
    let o = vmigrate(&["copy".as_ref(), src.as_os_str(), dst.as_os_str()]);
    assert_refused(&o, "TargetExists", "existing target");
    assert_eq!(std::fs::read(&dst).expect("read"), b"precious");
    // Through a symlink to it: the same.
    let link = dir.path().join("l.raw");
    std::os::unix::fs::symlink(&dst, &link).expect("symlink");
    let o = vmigrate(&["copy".as_ref(), src.as_os_str(), link.as_os_str()]);
    assert_refused(&o, "TargetExists", "existing target via symlink");
    assert_eq!(std::fs::read(&dst).expect("read"), b"precious");
    // Asked for: replaced.
    let o = vmigrate(&["copy".as_ref(), src.as_os_str(), dst.as_os_str(), "--overwrite".as_ref()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dst).expect("read"), want);
    // An empty existing file (mktemp) is no data to lose.
    let empty = dir.path().join("e.raw");
    std::fs::write(&empty, b"").expect("empty");
    let o = vmigrate(&["copy".as_ref(), src.as_os_str(), empty.as_os_str()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&empty).expect("read"), want);
}
