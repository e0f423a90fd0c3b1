//! Reviews: `authorization.k8s.io` (`kubectl auth can-i`) and `authentication.k8s.io`'s
//! SelfSubjectReview (`kubectl auth whoami`). Skiff has no authorization layer yet: every
//! authenticated user may do everything, and the reviews say exactly that.

use serde_json::{json, Value};

use skiff_api::ResourceType;

use crate::error::{ApiError, ApiResult};
use crate::server::Identity;

const REASON: &str = "skiff has no authorization yet: every authenticated user is allowed";

pub fn review(rt: &ResourceType, body: Value, who: Option<&Identity>) -> ApiResult<Value> {
    if body["apiVersion"].as_str().is_some_and(|v| v != rt.api_version())
        || body["kind"].as_str().is_some_and(|k| k != rt.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the body must be a {} of {}",
            rt.kind,
            rt.api_version()
        )));
    }
    let mut out = body;
    out["apiVersion"] = json!(rt.api_version());
    out["kind"] = json!(rt.kind);
    if !out["metadata"].is_object() {
        out["metadata"] = json!({});
    }
    match rt.kind.as_str() {
        "SelfSubjectReview" => {
            let who = who.ok_or_else(crate::error::ApiError::unauthorized)?;
            out["status"] = json!({"userInfo": {"username": who.user, "groups": who.groups}});
        }
        "SelfSubjectAccessReview" => {
            let attrs = &out["spec"];
            if attrs["resourceAttributes"].is_null() && attrs["nonResourceAttributes"].is_null() {
                let e = skiff_api::FieldError::invalid(
                    "spec.resourceAttributes",
                    Value::Null,
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                );
                return Err(ApiError::invalid(rt, "", &[e]));
            }
            out["status"] = json!({"allowed": who.is_some(), "reason": REASON});
        }
        _ => {
            out["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
    }
    Ok(out)
}
