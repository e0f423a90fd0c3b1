//! `GET pods/{name}/log`: checks the request against the pod as the kubelet and API server do
//! (which container, whether it has started, `--previous`), then streams the log from the
//! pod's node agent.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::{header, StatusCode};
use serde_json::Value;

use skiff_api::ResourceType;
use skiff_client::streams::LogRequest;

use crate::error::{ApiError, ApiResult};
use crate::request::Query;
use crate::server::Shared;

pub(crate) fn strings<'a>(v: &'a Value, ptr: &str) -> Vec<&'a str> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// A `422 Invalid` about one log option, as the API server words it.
fn invalid(field: &str, value: &str, msg: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("PodLogOptions \"\" is invalid: {field}: Invalid value: {value}: {msg}"),
    )
    .with_details(serde_json::json!({"kind": "PodLogOptions", "causes": [
        {"reason": "FieldValueInvalid", "message": format!("Invalid value: {value}: {msg}"), "field": field}]}))
}

fn positive(q: &Query, k: &str) -> ApiResult<Option<usize>> {
    match q.int(k)? {
        None => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as usize)),
        Some(n) => Err(invalid(k, &n.to_string(), "must be greater than or equal to 0")),
    }
}

/// The streaming side of the agent of the node pod `name` runs on (for `what`: "logs",
/// "exec", …).
pub(crate) fn node_agent(
    shared: &Shared,
    pod: &Value,
    name: &str,
    what: &str,
) -> ApiResult<Arc<dyn skiff_client::streams::NodeStreams>> {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    shared
        .nodes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(node)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("the agent of node {node} is not connected to this server (no tunnel for {what}: is `skiff agent` running there?)"),
            )
        })
}

pub async fn logs(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    q: &Query,
) -> ApiResult<Response> {
    let ns = ns.unwrap_or("default");
    let pod = shared.objects.get(rt, Some(ns), name)?.value();
    let containers = strings(&pod, "/spec/containers");
    let init = strings(&pod, "/spec/initContainers");
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !containers.contains(&c) && !init.contains(&c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None if containers.len() == 1 => containers[0].to_string(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let tail_lines = positive(q, "tailLines")?;
    let limit_bytes = match positive(q, "limitBytes")? {
        Some(0) => return Err(invalid("limitBytes", "0", "must be greater than 0")),
        other => other,
    };
    let since_time = match (q.int("sinceSeconds")?, q.get("sinceTime").filter(|s| !s.is_empty())) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ))
        }
        (Some(s), None) if s <= 0 => return Err(invalid("sinceSeconds", &s.to_string(), "must be greater than 0")),
        (Some(s), None) => Some(
            (chrono::Utc::now() - chrono::TimeDelta::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        ),
        (None, Some(t)) => {
            chrono::DateTime::parse_from_rfc3339(t).map_err(|_| invalid("sinceTime", t, "must be an RFC 3339 time"))?;
            Some(t.to_string())
        }
        (None, None) => None,
    };
    let previous = q.flag("previous");
    // Where the container is, from the pod's status (the agent writes it).
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(pod["status"]["initContainerStatuses"].as_array().into_iter().flatten());
    let status = statuses.into_iter().find(|s| s["name"] == container.as_str()).cloned();
    let restarts = status.as_ref().and_then(|s| s["restartCount"].as_u64()).unwrap_or(0) as u32;
    let attempt = if previous {
        let had_one = status.as_ref().is_some_and(|s| !s["lastState"]["terminated"].is_null());
        if !had_one || restarts == 0 {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        restarts - 1
    } else {
        let waiting = status.as_ref().map(|s| &s["state"]["waiting"]).filter(|w| !w.is_null());
        let started = status.as_ref().is_some_and(|s| s["containerID"].is_string());
        if let Some(w) = waiting.filter(|_| !started || restarts == 0) {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {}",
                w["reason"].as_str().unwrap_or("ContainerCreating")
            )));
        }
        if status.is_none() {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )));
        }
        restarts
    };
    let agent = node_agent(shared, &pod, name, "logs")?;
    let req = LogRequest {
        namespace: ns.to_string(),
        pod: name.to_string(),
        uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
        container,
        attempt,
        follow: q.flag("follow"),
        timestamps: q.flag("timestamps"),
        tail_lines,
        limit_bytes,
        since_time,
    };
    let stream = agent.logs(req).await.map_err(|m| ApiError::new(404, "NotFound", m))?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| Response::new(Body::empty())))
}
