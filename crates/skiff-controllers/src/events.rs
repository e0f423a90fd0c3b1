//! Recording core/v1 Events about objects (what `kubectl describe` shows).

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

/// Record a `Normal` or `Warning` event about `obj` from `component`.
pub async fn record<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &K,
    ty: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = json!({
        "metadata": {"generateName": format!("{}.", obj.name_any()), "namespace": ns},
        "involvedObject": {"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": obj.name_any(),
                           "namespace": obj.namespace(), "uid": obj.uid(), "resourceVersion": obj.resource_version()},
        "reason": reason, "message": message, "type": ty, "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": component,
    });
    let Ok(ev) = serde_json::from_value::<Event>(ev) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, reason, "recording an event failed");
    }
}
