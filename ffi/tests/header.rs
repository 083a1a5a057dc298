//! Keeps the generated C surface honest: `src/codes.rs` must be the error-code table of
//! `vmigrate_core::ErrorCode::ALL`, and `include/vmigrate.h` must be what cbindgen makes of the
//! crate, plus the old names of renamed codes (`ErrorCode::OLD_NAMES`) as macros. Run with
//! `VMIGRATE_BLESS=1` to rewrite both after a change.

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

/// The section of the header that keeps the old names of renamed codes compiling, as libcurl
/// keeps its old `CURLE_*` names: one macro per old name, naming the current constant (so it has
/// the enum's type), left out when the program defines `VMIGRATE_NO_OLD_NAMES` to check that it
/// uses none of them.
fn old_names_section() -> String {
    let mut s = String::new();
    for line in [
        "/*",
        " Old names of renamed result codes, kept for source compatibility: the numbers never change.",
        " The 2000 and 3000 ranges were named after providers (vSphere, KubeVirt); they are now the",
        " source and target ranges (docs/errors.md). Define VMIGRATE_NO_OLD_NAMES before including",
        " this header to leave the old names out.",
        " */",
        "#ifndef VMIGRATE_NO_OLD_NAMES",
    ] {
        s.push_str(line);
        s.push('\n');
    }
    for (old, code) in ErrorCode::OLD_NAMES {
        s.push_str(&format!(
            "#define VMIGRATE_RESULT_{} VMIGRATE_RESULT_{}\n",
            screaming_snake(old),
            screaming_snake(code.name())
        ));
    }
    s.push_str("#endif  /* VMIGRATE_NO_OLD_NAMES */\n\n");
    s
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
    let header = String::from_utf8(out).expect("header is UTF-8");
    // Inside the include guard, after everything cbindgen wrote.
    let guard_end = "#endif  /* VMIGRATE_H */\n";
    assert!(header.ends_with(guard_end), "cbindgen no longer ends the header with {guard_end:?}");
    format!("{}{}{guard_end}", &header[..header.len() - guard_end.len()], old_names_section())
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

/// `#define VMIGRATE_RESULT_<OLD> VMIGRATE_RESULT_<NEW>` pairs of the committed header.
fn header_aliases() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(crate_dir().join("include/vmigrate.h")).expect("read header");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#define"), Some(old), Some(new), None) = (words.next(), words.next(), words.next(), words.next())
        {
            if let (Some(old), Some(new)) = (old.strip_prefix("VMIGRATE_RESULT_"), new.strip_prefix("VMIGRATE_RESULT_"))
            {
                assert!(out.insert(old.to_string(), new.to_string()).is_none(), "duplicate alias {old}");
            }
        }
    }
    out
}

#[test]
fn header_keeps_every_old_name_as_an_alias_of_its_code() {
    let constants = header_constants();
    let aliases = header_aliases();
    let want: BTreeMap<String, String> =
        ErrorCode::OLD_NAMES.iter().map(|(old, c)| (screaming_snake(old), screaming_snake(c.name()))).collect();
    assert_eq!(aliases, want, "vmigrate.h old-name macros differ from ErrorCode::OLD_NAMES");
    for (old, new) in &aliases {
        let n = constants.get(new).unwrap_or_else(|| panic!("{old} names {new}, which is no constant"));
        assert_eq!(ErrorCode::from_name(&old_camel(old)).map(|c| c as u32), Some(*n), "{old}");
        assert!(!constants.contains_key(old), "{old} is both a constant and an old name");
    }
    assert_eq!(aliases["VSPHERE_INVALID_LOGIN"], "SOURCE_INVALID_LOGIN");
    assert_eq!(constants["SOURCE_INVALID_LOGIN"], 2003);
    assert_eq!(aliases["KUBE_MISSING_CRD"], "TARGET_MISSING_API");
    assert_eq!(constants["TARGET_MISSING_API"], 3006);
}

/// `VSPHERE_INVALID_LOGIN` -> `VsphereInvalidLogin`.
fn old_camel(screaming: &str) -> String {
    screaming
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_string() + &c.as_str().to_ascii_lowercase()).unwrap_or_default()
        })
        .collect()
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
