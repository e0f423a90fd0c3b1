//! EndpointSlice mirroring (upstream's `endpointslicemirroring` controller): the Endpoints a
//! user writes for a Service without a selector are mirrored into EndpointSlices, which is what
//! the service proxy and the cluster DNS read. One slice per subset, named
//! `<endpoints>-mirror-<n>`, owned by the Endpoints; Endpoints of services with a selector, of
//! no service, or labelled `endpointslice.kubernetes.io/skip-mirror=true` are not mirrored
//! (and what was mirrored from them goes).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const MANAGER: &str = "endpointslicemirroring-controller.k8s.io";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: Client,
}

/// The slice endpoint for one address of the Endpoints.
fn endpoint(a: &EndpointAddress, ready: bool) -> serde_json::Value {
    let mut ep = json!({"addresses": [a.ip], "conditions": {"ready": ready}});
    if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
        ep["hostname"] = json!(h);
    }
    if let Some(n) = a.node_name.as_deref().filter(|n| !n.is_empty()) {
        ep["nodeName"] = json!(n);
    }
    if let Some(t) = &a.target_ref {
        ep["targetRef"] = json!({"kind": t.kind, "namespace": t.namespace, "name": t.name, "uid": t.uid});
    }
    ep
}

/// The slices `ep` mirrors to (name, body); none when it is not to be mirrored.
pub fn mirrored(ep: &Endpoints, svc: Option<&Service>) -> Vec<(String, serde_json::Value)> {
    let name = ep.name_any();
    let selectorless = svc
        .and_then(|s| s.spec.as_ref())
        .is_some_and(|s| s.selector.as_ref().is_none_or(|m| m.is_empty()));
    if !selectorless
        || ep.labels().get(SKIP_MIRROR).map(String::as_str) == Some("true")
        || ep.metadata.deletion_timestamp.is_some()
    {
        return Vec::new();
    }
    let Some(owner) = ep.controller_owner_ref(&()) else {
        return Vec::new();
    };
    let mut labels = ep.labels().clone();
    labels.retain(|k, _| k != MANAGED_BY && k != "endpoints.kubernetes.io/managed-by");
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY.into(), MANAGER.into());
    let mut out = Vec::new();
    for (i, subset) in ep.subsets.iter().flatten().enumerate() {
        let mut endpoints: Vec<serde_json::Value> = Vec::new();
        let all = subset
            .addresses
            .iter()
            .flatten()
            .map(|a| (a, true))
            .chain(subset.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (a, ready) in all {
            // Upstream mirrors IPv4 into an IPv4 slice; IPv6 would need one of its own.
            if a.ip.parse::<std::net::Ipv4Addr>().is_ok() {
                endpoints.push(endpoint(a, ready));
            }
        }
        let ports: Vec<serde_json::Value> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| json!({"name": p.name.clone().unwrap_or_default(), "port": p.port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into())}))
            .collect();
        let slice_name = format!("{name}-mirror-{i}");
        let body = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": ep.namespace(), "labels": labels, "ownerReferences": [owner]},
            "addressType": "IPv4", "ports": ports, "endpoints": endpoints});
        out.push((slice_name, body));
    }
    out
}

async fn reconcile(ep: Arc<Endpoints>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = ep.namespace().unwrap_or_default();
    let name = ep.name_any();
    let svc = Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await?;
    let want = mirrored(&ep, svc.as_ref());
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    for (slice_name, body) in &want {
        slices
            .patch(slice_name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(body))
            .await?;
    }
    // Slices mirrored before that are no longer wanted (fewer subsets, a selector now).
    let have = slices
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER},{SERVICE_NAME_LABEL}={name}")))
        .await?;
    for s in have.items {
        let n = s.name_any();
        if !want.iter().any(|(w, _)| *w == n) {
            match slices.delete(&n, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

pub async fn run(client: Client) -> anyhow::Result<()> {
    let endpoints: Api<Endpoints> = Api::all(client.clone());
    let services: Api<Service> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    Controller::new(endpoints, watcher::Config::default())
        .with_config(crate::controller_config())
        // A service that gains or loses its selector changes what its Endpoints mirror to.
        .watches(services, watcher::Config::default(), |svc: Service| {
            svc.meta()
                .namespace
                .clone()
                .map(|ns| ObjectRef::<Endpoints>::new(&svc.name_any()).within(&ns))
        })
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        serde_json::from_value(
            json!({"metadata": {"name": "db", "namespace": "shop", "uid": "u1", "labels": {"team": "a"}},
            "subsets": [{"addresses": [{"ip": "192.0.2.10", "hostname": "db-0"}],
                         "notReadyAddresses": [{"ip": "192.0.2.11"}],
                         "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
        )
        .expect("endpoints")
    }

    fn service(selector: Option<serde_json::Value>) -> Service {
        let mut spec = json!({"ports": [{"name": "pg", "port": 5432}]});
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": spec})).expect("service")
    }

    #[test]
    fn selectorless_services_endpoints_become_slices() {
        let got = mirrored(&endpoints(), Some(&service(None)));
        assert_eq!(got.len(), 1);
        let (name, body) = &got[0];
        assert_eq!(name, "db-mirror-0");
        assert_eq!(body["metadata"]["labels"]["kubernetes.io/service-name"], "db");
        assert_eq!(body["metadata"]["labels"]["team"], "a");
        assert_eq!(body["metadata"]["labels"][MANAGED_BY], MANAGER);
        assert_eq!(body["ports"][0], json!({"name": "pg", "port": 5432, "protocol": "TCP"}));
        assert_eq!(body["endpoints"][0]["addresses"][0], "192.0.2.10");
        assert_eq!(body["endpoints"][0]["hostname"], "db-0");
        assert_eq!(body["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(body["endpoints"][1]["conditions"]["ready"], false);
    }

    #[test]
    fn services_with_selectors_missing_services_and_skip_mirror_are_left_alone() {
        assert!(mirrored(&endpoints(), Some(&service(Some(json!({"app": "db"}))))).is_empty());
        assert!(mirrored(&endpoints(), None).is_empty());
        let mut skip = endpoints();
        skip.labels_mut().insert(SKIP_MIRROR.into(), "true".into());
        assert!(mirrored(&skip, Some(&service(None))).is_empty());
    }
}
