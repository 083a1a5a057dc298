//! SOAP plumbing for the vSphere API: envelopes, managed object references and fault parsing.
//! Certificate trust (CA bundle, thumbprint pin, insecure) is `vmigrate_core::http`'s, shared
//! with the datastore disk reads.
//!
//! Requests are written as small XML fragments by the typed methods of
//! [`Client`](crate::client::Client); responses are parsed into the bounded tree of [`xml`] and
//! read field by field.

pub mod xml;

use std::fmt;

use xml::Element;

/// The vim25 namespace every request body uses.
pub const VIM25: &str = "urn:vim25";

/// A managed object reference: `type` plus id (`VirtualMachine:vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MoRef {
    /// Managed object type (`VirtualMachine`).
    pub kind: String,
    /// Its id (`vm-42`).
    pub value: String,
}

impl MoRef {
    /// A reference from parts.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef { kind: kind.into(), value: value.into() }
    }

    /// Read a reference from an element like `<obj type="VirtualMachine">vm-42</obj>`.
    pub fn from_element(e: &Element) -> Option<MoRef> {
        let kind = e.attr("type")?;
        if e.text.is_empty() {
            return None;
        }
        Some(MoRef::new(kind, e.text.clone()))
    }

    /// The reference as a request element named `tag`.
    pub fn to_xml(&self, tag: &str) -> String {
        format!("<{tag} type=\"{}\">{}</{tag}>", esc(&self.kind), esc(&self.value))
    }
}

impl fmt::Display for MoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Escape text for XML content and attributes.
pub fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Wrap a body fragment in a SOAP 1.1 envelope.
pub fn envelope(body: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
            "<soapenv:Body>{}</soapenv:Body></soapenv:Envelope>"
        ),
        body
    )
}

/// A method call element: `<Method xmlns="urn:vim25"><_this ..>..</_this>{args}</Method>`.
pub fn method(name: &str, this: &MoRef, args: &str) -> String {
    format!("<{name} xmlns=\"{VIM25}\">{}{args}</{name}>", this.to_xml("_this"))
}

/// A SOAP fault as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    /// Fault type (`InvalidLogin`), from the detail's `xsi:type` or element name.
    pub kind: String,
    /// `faultstring`.
    pub message: String,
    /// The object the fault names (`obj` of ManagedObjectNotFound), when present.
    pub object: Option<String>,
}

/// What the body of a parsed SOAP response holds.
#[derive(Debug)]
pub enum Reply {
    /// The method's `...Response` element.
    Ok(Element),
    /// A fault.
    Fault(SoapFault),
}

/// Read the fault type from a fault detail child or a `LocalizedMethodFault.fault` element.
pub fn fault_kind(detail_child: &Element) -> String {
    detail_child
        .xsi_type()
        .map(str::to_string)
        .unwrap_or_else(|| detail_child.name.strip_suffix("Fault").unwrap_or(&detail_child.name).to_string())
}

/// Interpret a parsed envelope.
///
/// # Errors
/// A description when the document is not a SOAP envelope with a body.
pub fn read_reply(root: &Element) -> Result<Reply, String> {
    if root.name != "Envelope" {
        return Err(format!("root element is {:?}, not a SOAP Envelope", root.name));
    }
    let body = root.child("Body").ok_or("envelope has no Body")?;
    let first = body.children.first().ok_or("empty SOAP Body")?;
    if first.name == "Fault" {
        let message = first.text_at(&["faultstring"]).unwrap_or("").to_string();
        let detail = first.child("detail").and_then(|d| d.children.first());
        let (kind, object) = match detail {
            Some(d) => (fault_kind(d), d.child("obj").map(|o| o.text.clone())),
            None => ("Fault".to_string(), None),
        };
        return Ok(Reply::Fault(SoapFault { kind, message, object }));
    }
    Ok(Reply::Ok(first.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_and_method_escape() {
        let m = method("Login", &MoRef::new("SessionManager", "SessionManager"), "<userName>a&amp;b</userName>");
        let env = envelope(&m);
        let root = xml::parse(env.as_bytes()).expect("well-formed");
        let Reply::Ok(el) = read_reply(&root).expect("reply") else { panic!("fault") };
        assert_eq!(el.name, "Login");
        assert_eq!(el.text_at(&["userName"]), Some("a&b"));
        assert_eq!(esc("<\"&'>"), "&lt;&quot;&amp;&apos;&gt;");
    }

    #[test]
    fn faults_are_read_from_detail() {
        let doc = br#"<soapenv:Envelope xmlns:soapenv="s" xmlns:xsi="i"><soapenv:Body><soapenv:Fault>
            <faultcode>ServerFaultCode</faultcode><faultstring>gone</faultstring>
            <detail><ManagedObjectNotFoundFault xmlns="urn:vim25" xsi:type="ManagedObjectNotFound">
            <obj type="VirtualMachine">vm-9</obj></ManagedObjectNotFoundFault></detail>
            </soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let root = xml::parse(doc).expect("xml");
        let Reply::Fault(f) = read_reply(&root).expect("reply") else { panic!("not a fault") };
        assert_eq!(f.kind, "ManagedObjectNotFound");
        assert_eq!(f.message, "gone");
        assert_eq!(f.object.as_deref(), Some("vm-9"));
        let doc2 = br#"<Envelope><Body><Fault><faultstring>x</faultstring><detail><InvalidLoginFault/></detail></Fault></Body></Envelope>"#;
        let Reply::Fault(f) = read_reply(&xml::parse(doc2).expect("xml")).expect("reply") else { panic!() };
        assert_eq!(f.kind, "InvalidLogin");
        assert!(read_reply(&xml::parse(b"<html><body/></html>").expect("xml")).is_err());
    }
}
