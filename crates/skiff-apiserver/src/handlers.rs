//! Request handling: one entry point that routes a request and runs the verb against the
//! object layer, answering JSON (or a `Table`) and turning every failure into a `Status`.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use serde_json::{json, Value};

use skiff_api::{FieldSelector, LabelSelector, ResourceType};

use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOpts, FieldValidation, Outcome, Part, WriteOpts};
use crate::request::{
    body_type, partial_metadata, route, wants_metadata, wants_table, BodyType, Query, ResourceRoute, Route,
};
use crate::server::Shared;
use crate::{discovery, openapi, version};

pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn raw_json(code: StatusCode, bytes: Bytes) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

pub fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(h) = http::HeaderValue::from_str(&v) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

/// The default field manager: the first token of the User-Agent (`kubectl.1.33`).
fn default_manager(headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    let first = ua.split('/').next().unwrap_or(ua).trim();
    if first.is_empty() {
        "unknown".into()
    } else {
        first.chars().take(128).collect()
    }
}

fn write_opts(q: &Query, headers: &HeaderMap) -> ApiResult<WriteOpts> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )))
        }
    };
    let manager = match q.get("fieldManager") {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ))
        }
        Some(m) if !m.is_empty() => m.to_string(),
        _ => default_manager(headers),
    };
    Ok(WriteOpts {
        dry_run,
        manager,
        validation: FieldValidation::parse(q.get("fieldValidation"))?,
    })
}

/// Decode a request body of the given media type into JSON.
pub fn decode_body(ty: BodyType, body: &[u8]) -> ApiResult<Value> {
    if body.len() > MAX_BODY {
        return Err(ApiError::too_large());
    }
    match ty {
        BodyType::Protobuf => {
            skiff_api::protobuf::decode(body).map_err(|e| ApiError::bad_request(format!("unable to decode body: {e}")))
        }
        BodyType::Yaml | BodyType::ApplyPatch => {
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not valid UTF-8"))?;
            // JSON is YAML, but serde_json gives better errors for JSON input.
            if text.trim_start().starts_with('{') || text.trim_start().starts_with('[') {
                if let Ok(v) = serde_json::from_str(text) {
                    return Ok(v);
                }
            }
            let y: serde_yaml::Value = serde_yaml::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
            serde_json::to_value(y).map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
        }
        _ => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(ApiError::bad_request("the request body is empty"));
            }
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}")))
        }
    }
}

pub async fn handle(
    shared: Arc<Shared>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
    who: Option<crate::server::Identity>,
) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match dispatch(&shared, &method, &uri, &headers, &accept, body, who.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            if e.code >= 500 {
                tracing::error!(%method, path = uri.path(), error = %e, "request failed");
            }
            e.into_response()
        }
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    accept: &str,
    body: Bytes,
    who: Option<&crate::server::Identity>,
) -> ApiResult<Response> {
    let types = shared.types.all();
    let r = route(uri.path(), &shared.types)?;
    let get_only = |m: &Method| {
        if m == Method::GET || m == Method::HEAD {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    match r {
        Route::Root => {
            get_only(method)?;
            let mut paths = vec![
                "/api".to_string(),
                "/api/v1".into(),
                "/apis".into(),
                "/healthz".into(),
                "/livez".into(),
                "/readyz".into(),
                "/version".into(),
                "/openapi/v2".into(),
                "/openapi/v3".into(),
            ];
            for t in types.iter().filter(|t| !t.group.is_empty()) {
                for p in [format!("/apis/{}", t.group), format!("/apis/{}/{}", t.group, t.version)] {
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
            }
            Ok(json_response(StatusCode::OK, &json!({"paths": paths})))
        }
        Route::Version => Ok(json_response(StatusCode::OK, &version::info())),
        Route::Health => {
            let ready = shared.ready.load(std::sync::atomic::Ordering::Acquire);
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok((
                code,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                if ready { "ok" } else { "not ready" },
            )
                .into_response())
        }
        Route::CoreVersions => {
            get_only(method)?;
            match discovery::aggregated_version(accept) {
                Some(v) => Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, discovery::aggregated_content_type(v))],
                    serde_json::to_vec(&discovery::aggregated(&types, true, v)).unwrap_or_default(),
                )
                    .into_response()),
                None => Ok(json_response(StatusCode::OK, &discovery::core_versions())),
            }
        }
        Route::GroupList => {
            get_only(method)?;
            match discovery::aggregated_version(accept) {
                Some(v) => Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, discovery::aggregated_content_type(v))],
                    serde_json::to_vec(&discovery::aggregated(&types, false, v)).unwrap_or_default(),
                )
                    .into_response()),
                None => Ok(json_response(StatusCode::OK, &discovery::group_list(&types))),
            }
        }
        Route::Group(g) => discovery::group(&types, &g)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route),
        Route::ResourceList { group, version } => discovery::resource_list(&types, &group, &version)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route),
        Route::OpenApiV2 => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, openapi::V2_CONTENT_TYPE)],
            openapi::v2_protobuf(&types),
        )
            .into_response()),
        Route::OpenApiV3Index => Ok(json_response(StatusCode::OK, &openapi::v3_index(&types))),
        Route::OpenApiV3 { path } => openapi::v3_for_path(&types, &path)
            .map(|v| json_response(StatusCode::OK, &v))
            .ok_or_else(ApiError::no_route),
        Route::Resource(rr) => resource(shared, method, uri, headers, accept, body, rr, who).await,
    }
}

fn namespace_of(rr: &ResourceRoute) -> Option<&str> {
    rr.namespace.as_deref().filter(|_| rr.rt.namespaced)
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    accept: &str,
    body: Bytes,
    rr: ResourceRoute,
    who: Option<&crate::server::Identity>,
) -> ApiResult<Response> {
    let q = Query::parse(uri.query());
    let rt = rr.rt.clone();
    let ns = namespace_of(&rr);
    let objects = &shared.objects;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if rt.virtual_kind {
        if *method != Method::POST || rr.name.is_some() {
            return Err(ApiError::method_not_allowed(format!(
                "{} only supports create",
                rt.qualified_plural()
            )));
        }
        let obj = decode_body(body_type(content_type)?, &body)?;
        return Ok(json_response(
            StatusCode::CREATED,
            &crate::review::review(&rt, obj, who)?,
        ));
    }
    match (method.clone(), rr.name.as_deref(), rr.sub.as_deref()) {
        (Method::GET, None, None) => {
            if rr.watch_path || q.flag("watch") {
                crate::watch::watch(shared.clone(), rt, ns.map(str::to_string), &q, accept).await
            } else {
                crate::list::list(shared, &rt, ns, &q, accept).await
            }
        }
        (Method::GET, Some(name), None) if rr.watch_path => {
            let mut q = q;
            q.set("fieldSelector", &format!("metadata.name={name}"));
            crate::watch::watch(shared.clone(), rt, ns.map(str::to_string), &q, accept).await
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let cur = objects.get(&rt, ns, name)?;
            if wants_table(accept) {
                let obj = objects.present(&rt, &cur.value());
                return Ok(table_response(&rt, &[Arc::new(obj)], &cur.rev.to_string(), None, &q));
            }
            if wants_metadata(accept) {
                return Ok(raw_json(StatusCode::OK, partial_metadata(&cur.bytes).into()));
            }
            if !objects.needs_conversion(&rt) {
                return Ok(raw_json(StatusCode::OK, cur.bytes.clone()));
            }
            Ok(json_response(StatusCode::OK, &objects.present(&rt, &cur.value())))
        }
        (Method::GET, Some(name), Some("log")) => crate::logs::logs(shared, &rt, ns, name, &q).await,
        (Method::GET, Some(name), Some("scale")) => {
            let cur = objects.get(&rt, ns, name)?;
            Ok(json_response(
                StatusCode::OK,
                &crate::scale::to_scale(&rt, &cur.value())?,
            ))
        }
        (Method::POST, None, None) => {
            let opts = write_opts(&q, headers)?;
            let ty = body_type(content_type)?;
            if !matches!(ty, BodyType::Json | BodyType::Yaml | BodyType::Protobuf) {
                return Err(ApiError::unsupported_media_type(content_type.unwrap_or("")));
            }
            let obj = decode_body(ty, &body)?;
            let out = objects.create(&rt, ns, obj, &opts).await?;
            Ok(outcome(out, StatusCode::CREATED))
        }
        (Method::POST, Some(name), Some("token")) => {
            let obj = decode_body(body_type(content_type)?, &body)?;
            let answer = shared.tokens.token_request(
                &objects.cache,
                &shared.types,
                ns.unwrap_or(""),
                name,
                obj,
                chrono::Utc::now(),
            )?;
            Ok(json_response(StatusCode::CREATED, &answer))
        }
        (Method::POST, Some(name), Some("binding")) => {
            let ty = body_type(content_type)?;
            let binding = decode_body(ty, &body)?;
            crate::scale::bind(shared, &rt, ns, name, &binding, &write_opts(&q, headers)?).await
        }
        (Method::PUT, Some(name), sub @ (None | Some("status") | Some("finalize"))) => {
            let opts = write_opts(&q, headers)?;
            let ty = body_type(content_type)?;
            if !matches!(ty, BodyType::Json | BodyType::Yaml | BodyType::Protobuf) {
                return Err(ApiError::unsupported_media_type(content_type.unwrap_or("")));
            }
            let obj = decode_body(ty, &body)?;
            if rt.is_custom() && obj["metadata"]["resourceVersion"].as_str().unwrap_or("").is_empty() {
                let err = skiff_api::FieldError::invalid(
                    "metadata.resourceVersion",
                    "0x0",
                    "must be specified for an update",
                );
                return Err(ApiError::invalid(&rt, name, &[err]));
            }
            let part = if sub == Some("status") {
                Part::Status
            } else {
                Part::Main
            };
            if sub == Some("finalize") {
                return crate::namespaces::finalize(shared, name, obj, &opts)
                    .await
                    .map(|o| outcome(o, StatusCode::OK));
            }
            let out = objects
                .update_with(&rt, ns, name, part, &opts, false, |_| Ok(obj.clone()))
                .await?;
            Ok(outcome(out, StatusCode::OK))
        }
        (Method::PUT | Method::PATCH, Some(name), Some("scale")) => {
            let opts = write_opts(&q, headers)?;
            crate::scale::write_scale(
                shared,
                &rt,
                ns,
                name,
                method == Method::PATCH,
                content_type,
                &body,
                &opts,
            )
            .await
        }
        (Method::PATCH, Some(name), sub @ (None | Some("status"))) => {
            let opts = write_opts(&q, headers)?;
            let part = if sub == Some("status") {
                Part::Status
            } else {
                Part::Main
            };
            crate::patch::patch(shared, &rt, ns, name, part, content_type, &body, &q, &opts).await
        }
        (Method::DELETE, Some(name), None) => {
            let opts = delete_opts(&q, content_type, &body)?;
            let (obj, gone) = objects.delete(&rt, ns, name, &opts).await?;
            let returns_object = rt.group.is_empty() && matches!(rt.kind.as_str(), "Pod" | "Service" | "Namespace");
            if !gone || returns_object {
                return Ok(json_response(StatusCode::OK, &obj));
            }
            let mut details = json!({"name": name, "kind": rt.plural, "uid": obj["metadata"]["uid"]});
            if !rt.group.is_empty() {
                details["group"] = json!(rt.group);
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ))
        }
        (Method::DELETE, None, None) => {
            let opts = delete_opts(&q, content_type, &body)?;
            crate::list::delete_collection(shared, &rt, ns, &q, &opts).await
        }
        (Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE, _, _) => {
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {})",
                rt.qualified_plural()
            )))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "method {method} is not supported"
        ))),
    }
}

pub fn outcome(out: Outcome, created: StatusCode) -> Response {
    let code = if out.created { created } else { StatusCode::OK };
    let r = match out.raw {
        Some(raw) => raw_json(code, raw),
        None => json_response(code, &out.obj),
    };
    with_warnings(r, &out.warnings)
}

fn delete_opts(q: &Query, content_type: Option<&str>, body: &[u8]) -> ApiResult<DeleteOpts> {
    let mut o = DeleteOpts {
        propagation: q.get("propagationPolicy").map(str::to_string),
        grace_period: q.int("gracePeriodSeconds")?,
        dry_run: matches!(q.get("dryRun"), Some("All")),
        ..Default::default()
    };
    if let Some(d) = q.get("dryRun") {
        if !d.is_empty() && d != "All" {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{d}\": supported values: \"All\""
            )));
        }
    }
    if q.get("orphanDependents") == Some("true") && o.propagation.is_none() {
        o.propagation = Some("Orphan".into());
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        let ty = body_type(content_type)?;
        let d = decode_body(ty, body)?;
        if let Some(p) = d["propagationPolicy"].as_str() {
            o.propagation = Some(p.to_string());
        }
        if let Some(g) = d["gracePeriodSeconds"].as_i64() {
            o.grace_period = Some(g);
        }
        if d["orphanDependents"] == json!(true) && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
        if let Some(dr) = d["dryRun"].as_array() {
            o.dry_run = dr.iter().any(|x| x == "All");
        }
        o.uid = d["preconditions"]["uid"].as_str().map(str::to_string);
        o.resource_version = d["preconditions"]["resourceVersion"].as_str().map(str::to_string);
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::bad_request(format!("propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\"")));
        }
    }
    Ok(o)
}

/// A `Table` of objects.
pub fn table_response(rt: &ResourceType, objs: &[Arc<Value>], rv: &str, cont: Option<&str>, q: &Query) -> Response {
    json_response(StatusCode::OK, &table(rt, objs, rv, cont, q, true))
}

pub fn table(rt: &ResourceType, objs: &[Arc<Value>], rv: &str, cont: Option<&str>, q: &Query, headers: bool) -> Value {
    let include = match q.get("includeObject") {
        Some("None") => skiff_api::table::IncludeObject::None,
        Some("Object") => skiff_api::table::IncludeObject::Object,
        _ => skiff_api::table::IncludeObject::Metadata,
    };
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| skiff_api::table::row(rt, o, include, now))
        .collect();
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let mut t = json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "rows": rows});
    if headers {
        t["columnDefinitions"] = json!(skiff_api::table::column_definitions(rt));
    } else {
        t["columnDefinitions"] = json!([]);
    }
    t
}

/// Parsed selectors of a list or watch request.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(rt: &ResourceType, q: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
        let mut fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
        fields
            .check_supported(&rt.group, &rt.kind, &[])
            .map_err(ApiError::bad_request)?;
        // events.k8s.io selects by `regarding.*`; the stored (core) form calls it involvedObject.
        if rt.group == "events.k8s.io" {
            for (k, _, _) in fields.0.iter_mut() {
                if let Some(rest) = k.strip_prefix("regarding.") {
                    *k = format!("involvedObject.{rest}");
                } else if k == "reportingController" {
                    *k = "reportingComponent".into();
                }
            }
        }
        Ok(Selectors { labels, fields })
    }

    pub fn matches_cached(&self, o: &crate::cache::CachedObject) -> bool {
        self.labels.matches(&o.labels) && self.fields.matches_with(|f| o.field(f))
    }
}
