//! Bulk property retrieval: container views, property specifications and paged
//! `RetrievePropertiesEx`.

use super::*;

/// One object of a property retrieval: its reference and the requested properties.
#[derive(Debug, Clone)]
pub struct ObjectContent {
    /// The object.
    pub obj: MoRef,
    /// `(path, value element)` pairs.
    pub props: Vec<(String, Element)>,
}

impl ObjectContent {
    /// The value of a property path, if returned.
    pub fn get(&self, path: &str) -> Option<&Element> {
        self.props.iter().find(|(p, _)| p == path).map(|(_, v)| v)
    }

    /// The text of a property path.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.get(path).map(|e| e.text.as_str())
    }
}

/// One page of a `RetrievePropertiesEx` answer.
#[derive(Debug, Clone, Default)]
pub struct RetrieveResult {
    /// Objects of this page.
    pub objects: Vec<ObjectContent>,
    /// Token for `ContinueRetrievePropertiesEx` when more pages follow.
    pub token: Option<String>,
}

/// A property specification: which properties of which type.
#[derive(Debug, Clone)]
pub struct PropSpec<'a> {
    /// Managed object type.
    pub kind: &'a str,
    /// Property paths.
    pub paths: &'a [&'a str],
}
impl Client {
    /// `ViewManager.CreateContainerView`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn create_container_view(
        &self,
        container: &MoRef,
        types: &[&str],
        recursive: bool,
    ) -> Result<MoRef, VsphereError> {
        let mut args = container.to_xml("container");
        for t in types {
            args.push_str(&format!("<type>{}</type>", esc(t)));
        }
        args.push_str(&format!("<recursive>{recursive}</recursive>"));
        let r = self
            .call("CreateContainerView", &method("CreateContainerView", &self.inner.content.view_manager, &args))
            .await?;
        moref_of(returnval(&r, "CreateContainerView")?, "CreateContainerView")
    }

    /// `View.DestroyView`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn destroy_view(&self, view: &MoRef) -> Result<(), VsphereError> {
        self.call("DestroyView", &method("DestroyView", view, "")).await.map(|_| ())
    }

    fn prop_set(props: &[PropSpec<'_>]) -> String {
        let mut s = String::new();
        for p in props {
            s.push_str(&format!("<propSet><type>{}</type>", esc(p.kind)));
            for path in p.paths {
                s.push_str(&format!("<pathSet>{}</pathSet>", esc(path)));
            }
            s.push_str("</propSet>");
        }
        s
    }

    /// Spec selecting every object of a ContainerView.
    pub fn view_spec(view: &MoRef, props: &[PropSpec<'_>]) -> String {
        format!(
            concat!(
                "<specSet>{}<objectSet>{}<skip>true</skip>",
                "<selectSet xsi:type=\"TraversalSpec\"><name>traverseView</name><type>ContainerView</type>",
                "<path>view</path><skip>false</skip></selectSet></objectSet></specSet>"
            ),
            Self::prop_set(props),
            view.to_xml("obj")
        )
    }

    /// Spec selecting explicit objects.
    pub fn objects_spec(objs: &[MoRef], props: &[PropSpec<'_>]) -> String {
        let mut s = format!("<specSet>{}", Self::prop_set(props));
        for o in objs {
            s.push_str(&format!("<objectSet>{}<skip>false</skip></objectSet>", o.to_xml("obj")));
        }
        s.push_str("</specSet>");
        s
    }

    fn parse_retrieve(resp: &Element) -> RetrieveResult {
        let Some(rv) = resp.child("returnval") else { return RetrieveResult::default() };
        let objects = rv
            .all("objects")
            .filter_map(|o| {
                let obj = o.child("obj").and_then(MoRef::from_element)?;
                let props = o
                    .all("propSet")
                    .filter_map(|p| Some((p.text_at(&["name"])?.to_string(), p.child("val")?.clone())))
                    .collect();
                Some(ObjectContent { obj, props })
            })
            .collect();
        RetrieveResult { objects, token: rv.text_at(&["token"]).filter(|t| !t.is_empty()).map(str::to_string) }
    }

    /// `PropertyCollector.RetrievePropertiesEx` with a prepared `<specSet>`, one page.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn retrieve_properties_ex(
        &self,
        spec_set: &str,
        max_objects: u32,
    ) -> Result<RetrieveResult, VsphereError> {
        let args = format!("{spec_set}<options><maxObjects>{max_objects}</maxObjects></options>");
        let r = self
            .call(
                "RetrievePropertiesEx",
                &method("RetrievePropertiesEx", &self.inner.content.property_collector, &args),
            )
            .await?;
        Ok(Self::parse_retrieve(&r))
    }

    /// `PropertyCollector.ContinueRetrievePropertiesEx`.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn continue_retrieve_properties_ex(&self, token: &str) -> Result<RetrieveResult, VsphereError> {
        let args = format!("<token>{}</token>", esc(token));
        let r = self
            .call(
                "ContinueRetrievePropertiesEx",
                &method("ContinueRetrievePropertiesEx", &self.inner.content.property_collector, &args),
            )
            .await?;
        // The continue call answers a RetrieveResult directly as returnval.
        Ok(Self::parse_retrieve(&r))
    }

    /// Every page of a retrieval.
    ///
    /// # Errors
    /// Typed faults.
    pub async fn retrieve_all(&self, spec_set: &str) -> Result<Vec<ObjectContent>, VsphereError> {
        let mut page = self.retrieve_properties_ex(spec_set, PAGE_SIZE).await?;
        let mut out = std::mem::take(&mut page.objects);
        while let Some(token) = page.token.take() {
            page = self.continue_retrieve_properties_ex(&token).await?;
            out.append(&mut page.objects);
        }
        Ok(out)
    }

    /// Properties of one object; `ManagedObjectNotFound` (or an empty answer) is
    /// [`VsphereError::NotFound`].
    ///
    /// # Errors
    /// Typed faults.
    pub async fn object_properties(&self, obj: &MoRef, paths: &[&str]) -> Result<ObjectContent, VsphereError> {
        let spec = Self::objects_spec(std::slice::from_ref(obj), &[PropSpec { kind: &obj.kind, paths }]);
        let mut objs = self.retrieve_all(&spec).await?;
        match objs.iter().position(|o| &o.obj == obj) {
            Some(i) => Ok(objs.swap_remove(i)),
            None => Err(VsphereError::NotFound { object: obj.to_string() }),
        }
    }
}
