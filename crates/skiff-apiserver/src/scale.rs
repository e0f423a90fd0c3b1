//! The `scale` subresource (autoscaling/v1 `Scale`) and pod `binding`.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use skiff_api::{FieldError, LabelSelector, ResourceType};

use crate::error::{ApiError, ApiResult};
use crate::handlers::{decode_body, json_response};
use crate::objects::{Part, WriteOpts};
use crate::patch::apply_patch;
use crate::request::{body_type, BodyType};
use crate::server::Shared;

fn scale_paths(rt: &ResourceType) -> ApiResult<&skiff_api::ScalePaths> {
    rt.scale.as_ref().ok_or_else(ApiError::no_route)
}

/// The Scale view of an object.
pub fn to_scale(rt: &ResourceType, obj: &Value) -> ApiResult<Value> {
    let p = scale_paths(rt)?;
    let spec = obj.pointer(&p.spec_replicas).and_then(Value::as_i64).unwrap_or(0);
    let status = obj.pointer(&p.status_replicas).and_then(Value::as_i64).unwrap_or(0);
    let selector = if rt.is_custom() {
        p.label_selector
            .as_ref()
            .and_then(|ls| obj.pointer(ls))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    } else {
        LabelSelector::from_json(&obj["spec"]["selector"])
            .map(|s| s.to_query())
            .unwrap_or_default()
    };
    let m = &obj["metadata"];
    let mut meta = json!({"name": m["name"], "uid": m["uid"], "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]});
    if let Some(ns) = m["namespace"].as_str() {
        meta["namespace"] = json!(ns);
    }
    let mut status_obj = json!({"replicas": status});
    if !selector.is_empty() {
        status_obj["selector"] = json!(selector);
    }
    Ok(
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta, "spec": {"replicas": spec}, "status": status_obj}),
    )
}

#[allow(clippy::too_many_arguments)]
pub async fn write_scale(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    is_patch: bool,
    content_type: Option<&str>,
    body: &[u8],
    opts: &WriteOpts,
) -> ApiResult<Response> {
    let ty = body_type(content_type)?;
    let input = decode_body(ty, body)?;
    let paths = scale_paths(rt)?.clone();
    let out = shared
        .objects
        .update_with(rt, ns, name, Part::Main, opts, false, |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(rt, name))?;
            let scale = to_scale(rt, &cur)?;
            let desired = if is_patch {
                let t = if ty == BodyType::StrategicMergePatch { BodyType::MergePatch } else { ty };
                apply_patch(rt, t, scale.clone(), &input)?
            } else {
                input.clone()
            };
            let rv = desired["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if !rv.is_empty() && Some(rv) != cur["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::conflict(rt, name));
            }
            let replicas = &desired["spec"]["replicas"];
            let n = match replicas {
                Value::Null => 0,
                v => v.as_i64().ok_or_else(|| ApiError::bad_request(format!("Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: invalid type: {v}, expected i32")))?,
            };
            if n < 0 {
                let mut e = ApiError::invalid(rt, name, &[FieldError::invalid("spec.replicas", n, "must be greater than or equal to 0")]);
                e.message = format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {n}: must be greater than or equal to 0");
                return Err(e);
            }
            let mut next = cur.clone();
            set_pointer(&mut next, &paths.spec_replicas, json!(n));
            Ok(next)
        })
        .await?;
    Ok(json_response(StatusCode::OK, &to_scale(rt, &out.obj)?))
}

fn set_pointer(v: &mut Value, ptr: &str, value: Value) {
    let mut cur = v;
    let segs: Vec<String> = ptr
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = cur.as_object_mut().expect("just made an object");
        if i == segs.len() - 1 {
            map.insert(seg.clone(), value);
            return;
        }
        cur = map.entry(seg.clone()).or_insert_with(|| json!({}));
    }
}

/// POST pods/{name}/binding: assign a pod to a node (what a scheduler does).
pub async fn bind(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    binding: &Value,
    opts: &WriteOpts,
) -> ApiResult<Response> {
    let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(rt, name, &[FieldError::required("target.name", "")]));
    }
    let ts = crate::objects::now();
    // nodeName and the PodScheduled condition in one write.
    shared
        .objects
        .update_in_place(rt, ns, name, opts.dry_run, &["spec", "status"], |cur, pod| {
            let existing = cur.field("spec.nodeName");
            if !existing.is_empty() {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            if cur.deleting {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            let spec = pod.entry("spec").or_insert_with(|| json!({}));
            if !spec.is_object() {
                *spec = json!({});
            }
            spec["nodeName"] = json!(node);
            let status = pod.entry("status").or_insert_with(|| json!({}));
            if !status.is_object() {
                *status = json!({});
            }
            let mut conds: Vec<Value> = match status["conditions"].take() {
                Value::Array(c) => c.into_iter().filter(|c| c["type"] != "PodScheduled").collect(),
                _ => Vec::new(),
            };
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": ts}));
            status["conditions"] = Value::Array(conds);
            Ok(())
        })
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
