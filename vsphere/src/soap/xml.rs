//! A small, bounded XML tree for SOAP responses.
//!
//! vSphere responses are polymorphic (`xsi:type` decides which fields follow), so instead of one
//! serde type per WSDL type we parse into this tree and read the few fields we need by local
//! name. Parsing is a pure function over bytes, with depth and size limits, so it can be fuzzed.

use quick_xml::events::Event;
use quick_xml::Reader;

/// Deepest element nesting accepted; real vSphere answers stay far below.
pub const MAX_DEPTH: usize = 128;

/// One XML element with namespace prefixes stripped from names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name (`returnval`, `propSet`).
    pub name: String,
    /// Attributes by qualified name as written (`type`, `xsi:type`).
    pub attrs: Vec<(String, String)>,
    /// Concatenated, unescaped text content (trimmed).
    pub text: String,
    /// Child elements in order.
    pub children: Vec<Element>,
}

fn local(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    match s.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => s.into_owned(),
    }
}

fn start_element(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut el = Element { name: local(e.name().as_ref()), ..Default::default() };
    for a in e.attributes() {
        let a = a.map_err(|e| format!("bad attribute: {e}"))?;
        let v = a.unescape_value().map_err(|e| format!("bad attribute value: {e}"))?;
        el.attrs.push((String::from_utf8_lossy(a.key.as_ref()).into_owned(), v.into_owned()));
    }
    Ok(el)
}

/// Parse a whole document and return its root element.
///
/// # Errors
/// A description of the first syntax error, an unbalanced document, or nesting deeper than
/// [`MAX_DEPTH`].
pub fn parse(bytes: &[u8]) -> Result<Element, String> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match ev {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH}"));
                }
                if root.is_some() {
                    return Err("content after the root element".into());
                }
                stack.push(start_element(&e)?);
            }
            Event::Empty(e) => {
                let el = start_element(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None if root.is_none() => root = Some(el),
                    None => return Err("content after the root element".into()),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(cur) = stack.last_mut() {
                    let s = t.unescape().map_err(|e| format!("bad text: {e}"))?;
                    cur.text.push_str(s.trim());
                } else if !t.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err("text outside the root element".into());
                }
            }
            Event::CData(t) => {
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err("document ended inside an element".into());
    }
    root.ok_or_else(|| "empty document".into())
}

impl Element {
    /// First child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this local name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follow a path of child names.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |el, n| el.child(n))
    }

    /// Text of the child at `names`, if present.
    pub fn text_at(&self, names: &[&str]) -> Option<&str> {
        self.path(names).map(|e| e.text.as_str())
    }

    /// Unprefixed attribute by name (`type` of a managed object reference).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The `xsi:type` (any prefix) without its value prefix (`VirtualDisk`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| {
                k.rsplit_once(':').map(|(p, l)| !p.is_empty() && p != "xmlns" && l == "type").unwrap_or(false)
            })
            .map(|(_, t)| t.rsplit_once(':').map(|(_, l)| l).unwrap_or(t.as_str()))
    }

    /// Parse the child's text as a number.
    pub fn num_at<T: std::str::FromStr>(&self, names: &[&str]) -> Option<T> {
        self.text_at(names).and_then(|t| t.trim().parse().ok())
    }

    /// The child's text as a boolean (`true`/`1`).
    pub fn bool_at(&self, names: &[&str]) -> Option<bool> {
        self.text_at(names).map(|t| matches!(t.trim(), "true" | "1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_attributes_and_text() {
        let doc = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="x" xmlns:xsi="y"><soapenv:Body>
            <R xmlns="urn:vim25"><returnval type="Folder">group-d1</returnval><v xsi:type="xsd:int"> 42 </v><m xsi:type="ManagedObjectReference" type="HostSystem">host-1</m><e/>
            <s>a &amp; b</s></R></soapenv:Body></soapenv:Envelope>"#;
        let root = parse(doc).expect("valid");
        assert_eq!(root.name, "Envelope");
        let r = root.path(&["Body", "R"]).expect("R");
        assert_eq!(r.text_at(&["returnval"]), Some("group-d1"));
        assert_eq!(r.child("returnval").and_then(|e| e.attr("type")), Some("Folder"));
        assert_eq!(r.child("v").and_then(|e| e.xsi_type()), Some("int"));
        assert_eq!(r.num_at::<i64>(&["v"]), Some(42));
        let m = r.child("m").expect("m");
        assert_eq!((m.attr("type"), m.xsi_type()), (Some("HostSystem"), Some("ManagedObjectReference")));
        assert_eq!(r.text_at(&["s"]), Some("a & b"));
        assert!(r.child("e").is_some());
    }

    #[test]
    fn rejects_broken_documents() {
        for bad in [&b"<a><b></a>"[..], b"<a>", b"", b"garbage", b"<a></a><b/>", b"</a>"] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_random_bytes(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&data);
        }

        #[test]
        fn never_panics_on_corrupted_envelopes(cut in 0usize..200, flip in 0usize..200, byte in proptest::num::u8::ANY) {
            let doc = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="x"><soapenv:Body><R><returnval type="Folder">group-d1</returnval></R></soapenv:Body></soapenv:Envelope>"#;
            let mut v = doc[..cut.min(doc.len())].to_vec();
            if !v.is_empty() { let i = flip % v.len(); v[i] = byte; }
            let _ = parse(&v);
        }
    }
}
