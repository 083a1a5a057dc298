//! Keeps the generated C surface honest: `src/codes.rs` must be the error-code table of
//! `vmigrate_core::ErrorCode::ALL`, and `include/vmigrate.h` must be what cbindgen makes of the
//! crate. Run with `VMIGRATE_BLESS=1` to rewrite both after a change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vmigrate_core::ErrorCode;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bless() -> bool {
    std::env::var_os("VMIGRATE_BLESS").is_some_and(|v| v == "1")
}

/// `PlanParse` -> `PLAN_PARSE`, the way cbindgen's ScreamingSnakeCase renames variants.
fn screaming_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn generated_codes_rs() -> String {
    let mut s = String::new();
    s.push_str(
        "//! The C result codes, generated from `vmigrate_core::ErrorCode::ALL`; do not edit.\n\
         //! Regenerate with `VMIGRATE_BLESS=1 cargo test -p vmigrate-ffi --test header`.\n\n\
         use std::ffi::CStr;\n\nuse vmigrate_core::ErrorCode;\n\n\
         /// The result of every vmigrate call: `VMIGRATE_RESULT_OK` (0) or a code of the one error-code\n\
         /// table shared with Rust (`vmigrate_core::ErrorCode`) and Python (`vmigrate.error_codes()`).\n\
         #[repr(u32)]\n#[derive(Debug, Clone, Copy, PartialEq, Eq)]\npub enum vmigrate_result {\n    /// Success.\n    Ok = 0,\n",
    );
    for c in ErrorCode::ALL {
        s.push_str(&format!(
            "    /// {} (range `{}`, kind `{:?}`)\n    {} = {},\n",
            c.description(),
            c.range(),
            c.kind(),
            c.name(),
            *c as u32
        ));
    }
    s.push_str(
        "}\n\nimpl vmigrate_result {\n    /// The C code of a Rust error code.\n    \
         pub(crate) fn from_code(code: ErrorCode) -> Self {\n        match code {\n",
    );
    for c in ErrorCode::ALL {
        s.push_str(&format!("            ErrorCode::{0} => vmigrate_result::{0},\n", c.name()));
    }
    s.push_str(
        "            _ => vmigrate_result::Internal,\n        }\n    }\n}\n\n\
         /// The symbolic name of a code as a static C string.\n\
         pub(crate) fn static_name(code: u32) -> Option<&'static CStr> {\n    match code {\n        0 => Some(c\"Ok\"),\n",
    );
    for c in ErrorCode::ALL {
        s.push_str(&format!("        {} => Some(c\"{}\"),\n", *c as u32, c.name()));
    }
    s.push_str("        _ => None,\n    }\n}\n");
    s
}

fn check_or_bless(path: &Path, want: &str) {
    let have = std::fs::read_to_string(path).unwrap_or_default();
    if have == want {
        return;
    }
    if bless() {
        std::fs::write(path, want).expect("write blessed file");
        return;
    }
    panic!(
        "{} is stale: it no longer matches what is generated from the sources.\n\
         Regenerate it with `VMIGRATE_BLESS=1 cargo test -p vmigrate-ffi --test header` and commit the result.",
        path.display()
    );
}

#[test]
fn codes_rs_matches_error_code_table() {
    check_or_bless(&crate_dir().join("src/codes.rs"), &generated_codes_rs());
}

fn generate_header() -> String {
    let dir = crate_dir();
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_is_up_to_date() {
    check_or_bless(&crate_dir().join("include/vmigrate.h"), &generate_header());
}

/// `VMIGRATE_RESULT_<NAME> = <n>` pairs of the committed header.
fn header_constants() -> BTreeMap<String, u32> {
    let text = std::fs::read_to_string(crate_dir().join("include/vmigrate.h")).expect("read header");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim().trim_end_matches(',');
        if let Some((name, value)) = line.split_once(" = ") {
            if let Some(name) = name.trim().strip_prefix("VMIGRATE_RESULT_") {
                let n: u32 = value.trim().parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
                assert!(out.insert(name.to_string(), n).is_none(), "duplicate constant {name}");
            }
        }
    }
    out
}

#[test]
fn header_constants_equal_the_table() {
    let mut want: BTreeMap<String, u32> =
        ErrorCode::ALL.iter().map(|c| (screaming_snake(c.name()), *c as u32)).collect();
    want.insert("OK".to_string(), 0);
    assert_eq!(header_constants(), want, "vmigrate.h result constants differ from ErrorCode::ALL");
    assert_eq!(want["PANIC"], 9001);
    assert_eq!(want["PLAN_PARSE"], 1001);
}

#[test]
fn pkg_config_file_matches_the_crate() {
    let pc = std::fs::read_to_string(crate_dir().join("vmigrate.pc")).expect("read vmigrate.pc");
    assert!(
        pc.lines().any(|l| l == format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "vmigrate.pc Version differs from the crate version {}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(pc.lines().any(|l| l.starts_with("Libs: ") && l.contains("-lvmigrate")));
}
