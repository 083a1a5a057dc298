//! Validation of generated objects against the official OpenAPI schemas (KubeVirt and CDI
//! swagger, the OpenShift Route CRD), so that a manifest we write is one the API server accepts.
//!
//! The swagger definitions are turned into draft-7 JSON Schema and made strict: every object
//! definition that lists its properties forbids others, so a misspelled field fails instead of
//! being silently dropped by the API server.

use std::path::Path;

use serde_json::{json, Value};
use vmigrate_core::{Error, ErrorCode, Result};

/// Compiled validators for the kinds vmigrate writes (Services and other core types are typed by
/// k8s-openapi already).
pub struct Schemas {
    vm: jsonschema::Validator,
    dv: jsonschema::Validator,
    utr: jsonschema::Validator,
    route: jsonschema::Validator,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").finish_non_exhaustive()
    }
}

/// Make a schema strict: drop `null` keywords (the Route CRD has `anyOf: null`) and forbid
/// properties an object definition does not list; partial schemas inside `anyOf`/`not` stay open.
fn strict(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            let lists_props =
                m.get("properties").is_some_and(Value::is_object) && m.get("type").is_some_and(|t| t == "object");
            if lists_props
                && !m.contains_key("additionalProperties")
                && !m.contains_key("x-kubernetes-preserve-unknown-fields")
            {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, x) in m.iter_mut() {
                strict(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading schema {}", path.display()), e))
}

fn bad(what: String) -> Error {
    Error::new(ErrorCode::InvalidArgument, what)
}

/// A draft-7 schema for `root` in a swagger 2.0 document, `#/definitions/...` refs kept.
pub fn swagger_schema(dir: &Path, file: &str, root: &str) -> Result<Value> {
    let doc: Value = serde_json::from_str(&read(dir, file)?).map_err(|e| bad(format!("{file} is not JSON: {e}")))?;
    let mut defs = doc["definitions"].clone();
    if defs.get(root).is_none() {
        return Err(bad(format!("{root} is not defined in {file}")));
    }
    strict(&mut defs);
    Ok(json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": defs,
        "allOf": [{ "$ref": format!("#/definitions/{root}") }],
    }))
}

/// The Route CRD's v1 `openAPIV3Schema`, made strict.
pub fn route_schema(dir: &Path) -> Result<Value> {
    let file = "openshift-route-crd.yaml";
    let crd: Value = serde_yaml_ng::from_str(&read(dir, file)?).map_err(|e| bad(format!("{file} is not YAML: {e}")))?;
    let v1 = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "v1"))
        .ok_or_else(|| bad(format!("{file} has no v1 version")))?;
    let mut s = v1["schema"]["openAPIV3Schema"].clone();
    strict(&mut s);
    Ok(s)
}

impl Schemas {
    /// Load and compile the schemas from a folder holding `kubevirt-swagger.json`,
    /// `cdi-swagger.json` and `openshift-route-crd.yaml`.
    ///
    /// # Errors
    /// A file is missing or is not the schema it should be.
    pub fn load(dir: &Path) -> Result<Schemas> {
        let build = |s: Value| jsonschema::draft7::new(&s).map_err(|e| bad(format!("schema does not compile: {e}")));
        Ok(Schemas {
            vm: build(swagger_schema(dir, "kubevirt-swagger.json", "v1.VirtualMachine")?)?,
            dv: build(swagger_schema(dir, "cdi-swagger.json", "v1beta1.DataVolume")?)?,
            utr: build(swagger_schema(dir, "cdi-swagger.json", "v1beta1.UploadTokenRequest")?)?,
            route: build(route_schema(dir)?)?,
        })
    }

    /// Whether there is a schema here for `kind`.
    pub fn has_schema(kind: &str) -> bool {
        matches!(kind, "VirtualMachine" | "DataVolume" | "UploadTokenRequest" | "Route")
    }

    /// Validate one object by its `kind`; the error lists every violation with its path.
    ///
    /// # Errors
    /// The violations, or that there is no schema for the kind.
    pub fn check(&self, doc: &Value) -> std::result::Result<(), String> {
        let v = match doc["kind"].as_str() {
            Some("VirtualMachine") => &self.vm,
            Some("DataVolume") => &self.dv,
            Some("UploadTokenRequest") => &self.utr,
            Some("Route") => &self.route,
            other => return Err(format!("no schema for kind {other:?}")),
        };
        let errs: Vec<String> = v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n"))
        }
    }
}
