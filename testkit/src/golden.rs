//! Golden files of the wire format (`tests/golden/`, `docs/wire-format.md`): the one normalizer
//! the Rust and C tests use (Python reads the same rules file), and the compare-or-bless step.
//!
//! A document a test produced is normalized by `tests/golden/normalize.json`: the values of the
//! keys it names (times, durations, digests of run-specific inputs) become placeholders and the
//! test's scratch folder becomes `<tmp>`. What is left must equal the golden file exactly.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `tests/golden/` of the repository.
pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

/// The placeholder rules: `(key -> placeholder, scratch placeholder)`.
fn rules() -> (serde_json::Map<String, Value>, String) {
    let path = golden_dir().join("normalize.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("normalize.json is JSON");
    let keys = v["keys"].as_object().expect("normalize.json has keys").clone();
    (keys, v["scratch"].as_str().expect("normalize.json has scratch").to_string())
}

/// Normalize `doc` in place: placeholders for the volatile keys, `<tmp>` for `scratch`.
pub fn normalize(doc: &mut Value, scratch: &Path) {
    let (keys, placeholder) = rules();
    let scratch = scratch.to_string_lossy().into_owned();
    fn walk(v: &mut Value, list: Option<&str>, keys: &serde_json::Map<String, Value>, scratch: &str, tmp: &str) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    let scoped = list.and_then(|l| keys.get(&format!("{l}[].{k}")));
                    match scoped.or_else(|| keys.get(k)) {
                        Some(p) if !child.is_null() => *child = p.clone(),
                        _ if child.is_array() => walk(child, Some(k), keys, scratch, tmp),
                        _ => walk(child, None, keys, scratch, tmp),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, list, keys, scratch, tmp)),
            Value::String(s) if s.contains(scratch) => *s = s.replace(scratch, tmp),
            _ => {}
        }
    }
    walk(doc, None, &keys, &scratch, &placeholder);
}

/// Whether this run rewrites the golden files (`VMIGRATE_BLESS=1`, as for the C header).
pub fn blessing() -> bool {
    std::env::var_os("VMIGRATE_BLESS").is_some_and(|v| v == "1")
}

/// Compare the JSON text `doc` (from `who`: "rust", "c", ...) after [`normalize`] with
/// `tests/golden/<name>.json`; with `bless`, write it there instead.
///
/// # Panics
/// When they differ, naming the file and both texts.
pub fn check(name: &str, doc: &str, scratch: &Path, who: &str, bless: bool) {
    let mut value: Value =
        serde_json::from_str(doc).unwrap_or_else(|e| panic!("{who}: {name} is not JSON ({e}): {doc}"));
    normalize(&mut value, scratch);
    let path = golden_dir().join(format!("{name}.json"));
    let pretty = serde_json::to_string_pretty(&value).expect("a Value serializes") + "\n";
    if bless {
        std::fs::write(&path, &pretty).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let want: Value = serde_json::from_str(&golden).expect("golden file is JSON");
    assert!(
        want == value,
        "{who}: {name} differs from {}.\nIf the change is intended (fields only added within an apiVersion), \
         regenerate with `VMIGRATE_BLESS=1 cargo test --test wire_golden`.\n--- golden\n{golden}\n--- got\n{pretty}",
        path.display()
    );
}
