//! Parsing what a request asks for: the route (discovery, OpenAPI, or a resource with
//! namespace/name/subresource), query parameters, and the media types of body and answer.

use std::collections::HashMap;
use std::sync::Arc;

use skiff_api::ResourceType;

use crate::error::{ApiError, ApiResult};
use crate::types::Types;

#[derive(Debug)]
pub enum Route {
    Root,
    Version,
    Health,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList { group: String, version: String },
    OpenApiV2,
    OpenApiV3Index,
    OpenApiV3 { path: String },
    Resource(ResourceRoute),
}

#[derive(Debug, Clone)]
pub struct ResourceRoute {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// The legacy `/watch/` path prefix.
    pub watch_path: bool,
}

pub fn route(path: &str, types: &Types) -> ApiResult<Route> {
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let route = match segs.as_slice() {
        [] => Route::Root,
        ["version"] => Route::Version,
        ["healthz"] | ["healthz", ..] => Route::Health,
        ["livez"] | ["livez", ..] => Route::Health,
        ["readyz"] | ["readyz", ..] => Route::Health,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::GroupList,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", "v1"] => Route::ResourceList {
            group: String::new(),
            version: "v1".into(),
        },
        ["apis", g, v] => Route::ResourceList {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["openapi", "v2"] | ["swagger-2.0.0.pb-v1"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] => Route::OpenApiV3 { path: rest.join("/") },
        ["api", "v1", rest @ ..] => Route::Resource(resource_route("", "v1", rest, types)?),
        ["apis", g, v, rest @ ..] => Route::Resource(resource_route(g, v, rest, types)?),
        _ => return Err(ApiError::no_route()),
    };
    Ok(route)
}

fn resource_route(group: &str, version: &str, rest: &[&str], types: &Types) -> ApiResult<ResourceRoute> {
    let (watch_path, rest) = match rest {
        ["watch", r @ ..] => (true, r),
        r => (false, r),
    };
    let find = |plural: &str| types.find(group, version, plural).ok_or_else(ApiError::no_route);
    let (rt, namespace, name, sub) = match rest {
        // /namespaces/{ns} is the Namespace object itself; /namespaces/{ns}/status|finalize its
        // subresources; anything longer is a namespaced resource.
        ["namespaces", ns, plural, tail @ ..]
            if group.is_empty() && !matches!(*plural, "status" | "finalize") || !group.is_empty() =>
        {
            let rt = find(plural)?;
            if !rt.namespaced {
                return Err(ApiError::no_route());
            }
            match tail {
                [] => (rt, Some(ns.to_string()), None, None),
                [name] => (rt, Some(ns.to_string()), Some(name.to_string()), None),
                [name, sub] => (rt, Some(ns.to_string()), Some(name.to_string()), Some(sub.to_string())),
                _ => return Err(ApiError::no_route()),
            }
        }
        [plural] => (find(plural)?, None, None, None),
        [plural, name] => (find(plural)?, None, Some(name.to_string()), None),
        [plural, name, sub] => (find(plural)?, None, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::no_route()),
    };
    if rt.namespaced && namespace.is_none() && name.is_some() {
        // A namespaced object addressed without its namespace.
        return Err(ApiError::no_route());
    }
    if let Some(s) = &sub {
        let ok = match s.as_str() {
            "status" => rt.status,
            "scale" => rt.scale.is_some(),
            "finalize" => rt.kind == "Namespace" && rt.group.is_empty(),
            "binding" | "log" | "exec" | "attach" | "portforward" => rt.kind == "Pod" && rt.group.is_empty(),
            "token" => rt.kind == "ServiceAccount" && rt.group.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(ApiError::no_route());
        }
    }
    Ok(ResourceRoute {
        rt,
        namespace,
        name,
        sub,
        watch_path,
    })
}

/// Query parameters, with repeated keys kept.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
            m.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Query(m)
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.0.insert(k.to_string(), vec![v.to_string()]);
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of a repeated key, in order (`command=sh&command=-c`).
    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map_or(&[], Vec::as_slice)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | "True"))
    }

    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?} is not an integer"))),
        }
    }
}

/// Whether the client asked for `Table` output.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p = part.replace(' ', "");
        p.contains("as=Table") && p.contains("g=meta.k8s.io")
    })
}

/// Whether the client asked for metadata only (`PartialObjectMetadata[List]`), as metadata
/// informers (the garbage collector, controllers that only follow owners) do.
pub fn wants_metadata(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|part| {
        let p = part.replace(' ', "");
        p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io")
    })
}

/// `{"kind":"PartialObjectMetadata",...,"metadata":...}` from an object's stored JSON, without
/// parsing more of it than the metadata.
pub fn partial_metadata(object: &[u8]) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        metadata: Option<&'a serde_json::value::RawValue>,
    }
    let meta = serde_json::from_slice::<Meta>(object)
        .ok()
        .and_then(|m| m.metadata)
        .map(|m| m.get())
        .unwrap_or("{}");
    let mut out = Vec::with_capacity(meta.len() + 80);
    out.extend_from_slice(br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#);
    out.extend_from_slice(meta.as_bytes());
    out.push(b'}');
    out
}

/// Body media types the server decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    Json,
    Yaml,
    Protobuf,
    JsonPatch,
    MergePatch,
    StrategicMergePatch,
    ApplyPatch,
}

pub fn body_type(content_type: Option<&str>) -> ApiResult<BodyType> {
    // A missing Content-Type is JSON (kubectl's `PUT …/scale` sends none).
    let Some(ct) = content_type else {
        return Ok(BodyType::Json);
    };
    let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Ok(match base.as_str() {
        "" | "application/json" | "*/*" => BodyType::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => BodyType::Yaml,
        "application/vnd.kubernetes.protobuf" => BodyType::Protobuf,
        "application/json-patch+json" => BodyType::JsonPatch,
        "application/merge-patch+json" => BodyType::MergePatch,
        "application/strategic-merge-patch+json" => BodyType::StrategicMergePatch,
        "application/apply-patch+yaml" | "application/apply-patch+json" => BodyType::ApplyPatch,
        _ => return Err(ApiError::unsupported_media_type(ct)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = Types::new();
        let Route::Resource(r) = route("/api/v1/namespaces/default/pods/web/status", &t).expect("route") else {
            panic!()
        };
        assert_eq!(
            (
                r.rt.plural.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let Route::Resource(r) = route("/api/v1/namespaces/foo", &t).expect("route") else {
            panic!()
        };
        assert_eq!((r.rt.plural.as_str(), r.name.as_deref()), ("namespaces", Some("foo")));
        let Route::Resource(r) = route("/api/v1/namespaces/foo/finalize", &t).expect("route") else {
            panic!()
        };
        assert_eq!(r.sub.as_deref(), Some("finalize"));
        let Route::Resource(r) = route("/apis/apps/v1/deployments", &t).expect("route") else {
            panic!()
        };
        assert!(r.namespace.is_none());
        assert!(route("/apis/apps/v1/namespaces/x/widgets", &t).is_err());
        assert!(route("/api/v1/namespaces/x/configmaps/c/scale", &t).is_err());
        let Route::Resource(r) = route("/api/v1/watch/namespaces/x/pods", &t).expect("route") else {
            panic!()
        };
        assert!(r.watch_path);
        assert!(route("/api/v1/nodes/n1", &t).is_ok());
        assert!(route("/api/v1/pods/p1", &t).is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(body_type(None).expect("json"), BodyType::Json);
        assert_eq!(
            body_type(Some("application/apply-patch+yaml; charset=utf-8")).expect("apply"),
            BodyType::ApplyPatch
        );
        assert_eq!(body_type(Some("text/plain")).expect_err("415").code, 415);
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
        assert!(wants_metadata(
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
        ));
        assert!(!wants_metadata("application/json"));
        let m = partial_metadata(br#"{"kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"x":[1,2]}}"#);
        assert_eq!(
            std::str::from_utf8(&m).expect("utf-8"),
            r#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"name":"p","labels":{"a":"b"}}}"#
        );
    }
}
