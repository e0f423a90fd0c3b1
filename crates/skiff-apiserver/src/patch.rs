//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge patch (built-in
//! kinds) and server-side apply.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use skiff_api::{FieldError, ResourceType};

use crate::error::{ApiError, ApiResult};
use crate::fields;
use crate::handlers::decode_body;
use crate::objects::{Part, WriteOpts};
use crate::request::{body_type, BodyType, Query};
use crate::server::Shared;

/// Apply a non-apply patch of type `ty` to `current`.
pub fn apply_patch(rt: &ResourceType, ty: BodyType, current: Value, patch: &Value) -> ApiResult<Value> {
    match ty {
        BodyType::JsonPatch => {
            let p: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = current;
            json_patch::patch(&mut doc, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        BodyType::MergePatch => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("the patch must be a JSON object"));
            }
            let mut doc = current;
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        BodyType::StrategicMergePatch => {
            if rt.is_custom() || !skiff_api::strategic_merge::supports(&rt.kind) {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            skiff_api::strategic_merge::apply(&current, patch, &rt.kind)
                .map_err(|e| ApiError::bad_request(e.to_string()))
        }
        _ => Err(ApiError::unsupported_media_type("")),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn patch(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    part: Part,
    content_type: Option<&str>,
    body: &[u8],
    q: &Query,
    opts: &WriteOpts,
) -> ApiResult<Response> {
    let ty = body_type(content_type)?;
    if !matches!(
        ty,
        BodyType::JsonPatch | BodyType::MergePatch | BodyType::StrategicMergePatch | BodyType::ApplyPatch
    ) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {:?})", content_type.unwrap_or("")),
        ));
    }
    let force = match q.get("force") {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(v) => return Err(ApiError::bad_request(format!("force: Invalid value: \"{v}\""))),
    };
    if force && ty != BodyType::ApplyPatch {
        return Err(ApiError::invalid(
            rt,
            name,
            &[FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            )],
        ));
    }
    let patch_body = decode_body(ty, body)?;
    let objects = &shared.objects;
    let out = if ty == BodyType::ApplyPatch {
        if q.get("fieldManager").unwrap_or("").is_empty() {
            return Err(ApiError::invalid(
                rt,
                name,
                &[FieldError::required("fieldManager", "is required for apply requests")],
            ));
        }
        if !patch_body.is_object() {
            return Err(ApiError::bad_request("the applied configuration must be an object"));
        }
        let applied_name = patch_body["metadata"]["name"].as_str().unwrap_or("");
        if !applied_name.is_empty() && applied_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({applied_name}) does not match the name on the URL ({name})"
            )));
        }
        let api_version = rt.api_version();
        let result = objects
            .update_with(rt, ns, name, part, opts, part == Part::Main, |cur| {
                let creating = cur.is_none();
                let base = match cur {
                    Some(c) => c,
                    None => {
                        let mut meta = json!({"name": name});
                        if let Some(ns) = ns {
                            meta["namespace"] = json!(ns);
                        }
                        json!({"apiVersion": api_version, "kind": rt.kind, "metadata": meta})
                    }
                };
                let mut next = fields::apply(&base, &patch_body, &opts.manager, &api_version, part, force).map_err(|conflicts| {
                    let causes: Vec<Value> = conflicts.iter().map(|c| json!({"type": "FieldManagerConflict", "reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": c.field})).collect();
                    ApiError::new(409, "Conflict", fields::conflict_message(&conflicts)).with_details(json!({"causes": causes}))
                })?;
                if creating {
                    // A create: keep the managed fields we just computed.
                    next["metadata"]["name"] = json!(name);
                }
                // A resourceVersion in the applied configuration is a precondition.
                if let Some(rv) = patch_body["metadata"]["resourceVersion"].as_str().filter(|r| !r.is_empty()) {
                    next["metadata"]["resourceVersion"] = json!(rv);
                }
                Ok(next)
            })
            .await?;
        result
    } else {
        objects
            .update_with(rt, ns, name, part, opts, false, |cur| {
                apply_patch(rt, ty, cur.unwrap_or(Value::Null), &patch_body)
            })
            .await?
    };
    Ok(crate::handlers::outcome(out, StatusCode::CREATED))
}
