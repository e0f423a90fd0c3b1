//! Events the agent records about its pods and its node, as the kubelet does (what
//! `kubectl describe` shows). Recording is best effort: a failure is logged, never retried.

use kube::Client;
use serde_json::{json, Value};

/// Records an event of type `ty` (`Normal`, `Warning`) about `involved` (an `involvedObject`:
/// kind, name, namespace, uid) in `namespace`.
pub(crate) async fn record(client: &Client, namespace: &str, involved: Value, ty: &str, reason: &str, message: &str) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let name = involved["name"].as_str().unwrap_or("event").to_string();
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": ty, "source": {"component": "kubelet"},
        "firstTimestamp": ts, "lastTimestamp": ts, "count": 1, "reportingComponent": "kubelet",
    });
    let req = http::Request::post(format!("/api/v1/namespaces/{namespace}/events"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&ev).unwrap_or_default());
    if let Ok(req) = req {
        if let Err(e) = client.request_text(req).await {
            tracing::debug!(error = %e, reason, "recording an event failed");
        }
    }
}

/// Records an event about the node `node` (in `default`, with the node's name as its UID, as
/// the kubelet's node reference has it).
pub(crate) async fn node(client: &Client, node: &str, ty: &str, reason: &str, message: &str) {
    let involved = json!({"kind": "Node", "name": node, "uid": node});
    record(client, "default", involved, ty, reason, message).await;
}
