//! The SOAP transport: endpoint normalisation, one bounded POST with fault classification, and
//! the small reply readers every call shares.

use url::Url;

use super::*;

/// Normalise the endpoint: strip user info, add `/sdk`, refuse plain http to non-loopback hosts.
///
/// # Errors
/// [`VsphereError::BadUrl`].
pub fn sdk_url(raw: &str) -> Result<Url, VsphereError> {
    let mut url = Url::parse(raw).map_err(|e| VsphereError::BadUrl { url: redact(raw), reason: e.to_string() })?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let shown = url.to_string();
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if !loopback {
                return Err(VsphereError::BadUrl {
                    url: shown,
                    reason: "plain http is only allowed to loopback addresses; use https".into(),
                });
            }
        }
        s => return Err(VsphereError::BadUrl { url: shown, reason: format!("scheme {s:?} is not http(s)") }),
    }
    if url.host().is_none() {
        return Err(VsphereError::BadUrl { url: shown, reason: "no host".into() });
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path("/sdk");
    }
    Ok(url)
}

fn redact(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<unparsable url>".into(),
    }
}

/// Classify a transport error with the shared HTTP code and map it into the vSphere range:
/// [`ErrorCode::HttpTls`] becomes [`VsphereError::Tls`] (2002), the rest
/// [`VsphereError::Connect`] (2001).
pub(super) fn transport_error(url: &Url, e: reqwest::Error) -> VsphereError {
    let url = url.to_string();
    let source = classify_error("vsphere request", e);
    if source.code() == ErrorCode::HttpTls {
        VsphereError::Tls { url, source }
    } else {
        VsphereError::Connect { url, source }
    }
}

/// Read a response body up to `limit` bytes.
async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    what: &str,
    url: &Url,
) -> Result<Vec<u8>, VsphereError> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(VsphereError::Malformed {
                        method: what.to_string(),
                        detail: format!("response larger than {limit} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(url, e)),
        }
    }
}

pub(super) fn moref_of(el: &Element, what: &str) -> Result<MoRef, VsphereError> {
    MoRef::from_element(el).ok_or_else(|| VsphereError::Malformed {
        method: what.to_string(),
        detail: format!("element {} is not a managed object reference", el.name),
    })
}

pub(super) fn returnval<'a>(resp: &'a Element, what: &str) -> Result<&'a Element, VsphereError> {
    resp.child("returnval")
        .ok_or_else(|| VsphereError::Malformed { method: what.to_string(), detail: "no returnval".into() })
}
/// What one POST brought back: the parsed reply, the fault as a typed error, and the session
/// cookie and peer certificate to record.
pub(super) struct PostReply {
    pub(super) element: Element,
    pub(super) result: Result<Element, VsphereError>,
    pub(super) cookie: Option<String>,
    pub(super) peer_cert: Option<Vec<u8>>,
}

/// One SOAP POST: send, read (bounded), parse, classify faults.
pub(super) async fn soap_post(
    http: &reqwest::Client,
    url: &Url,
    cookie: Option<String>,
    name: &str,
    body: &str,
    username: &str,
) -> Result<PostReply, VsphereError> {
    let mut req = http
        .post(url.clone())
        .header("Content-Type", "text/xml; charset=utf-8")
        .header("SOAPAction", "urn:vim25/7.0")
        .body(envelope(body));
    if let Some(c) = cookie {
        req = req.header("Cookie", c);
    }
    let resp = req.send().await.map_err(|e| transport_error(url, e))?;
    let peer_cert =
        resp.extensions().get::<reqwest::tls::TlsInfo>().and_then(|info| info.peer_certificate().map(<[u8]>::to_vec));
    let mut new_cookie = None;
    for v in resp.headers().get_all("set-cookie") {
        if let Ok(s) = v.to_str() {
            if let Some(pair) = s.split(';').next().filter(|p| p.trim_start().starts_with("vmware_soap_session=")) {
                new_cookie = Some(pair.trim().to_string());
            }
        }
    }
    let status = resp.status();
    if !(status.is_success() || status.as_u16() == 500) {
        return Err(VsphereError::HttpStatus { method: name.to_string(), status: status.as_u16() });
    }
    let bytes = read_limited(resp, MAX_RESPONSE_BYTES, name, url).await?;
    let root = xml::parse(&bytes).map_err(|detail| VsphereError::Malformed { method: name.to_string(), detail })?;
    let reply = read_reply(&root).map_err(|detail| VsphereError::Malformed { method: name.to_string(), detail })?;
    let (element, result) = match reply {
        Reply::Ok(el) => (el.clone(), Ok(el)),
        Reply::Fault(f) => {
            debug!(method = name, fault = %f.kind, "soap fault");
            (Element::default(), Err(VsphereError::from_fault(&f.kind, &f.message, f.object.as_deref(), username)))
        }
    };
    if let Err(e) = &result {
        if name == "RetrieveServiceContent" {
            return Err(VsphereError::Malformed { method: name.into(), detail: e.to_string() });
        }
    }
    Ok(PostReply { element, result, cookie: new_cookie, peer_cert })
}
