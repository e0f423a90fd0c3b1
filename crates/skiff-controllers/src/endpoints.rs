//! Endpoints and EndpointSlices from Services and their pods: ready pods are addresses (all of
//! them with `publishNotReadyAddresses`), named target ports resolve to the container port of
//! that name, and Services without a selector are left to their users. Terminating pods stay
//! in EndpointSlices as `ready: false, terminating: true` (`serving` says whether they still
//! pass readiness) and leave Endpoints, as upstream's controllers do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const MANAGER: &str = "endpoint-controller";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
}

/// (port name, target port, protocol).
type ResolvedPort = (String, i32, String);

struct Ctx {
    client: Client,
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The container port a service port targets on this pod (None: the pod does not serve it).
fn target_port(pod: &Pod, tp: Option<&IntOrString>, port: i32) -> Option<i32> {
    match tp {
        None => Some(port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else {
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() || spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&sel.join(",")))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some_and(|ip| !ip.is_empty())
        })
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect();
    let publish_all = spec.publish_not_ready_addresses == Some(true);
    let ports = spec.ports.clone().unwrap_or_default();
    // Endpoints subsets: pods grouped by the ports they resolve to.
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<serde_json::Value>, Vec<serde_json::Value>)> = BTreeMap::new();
    let mut slice_endpoints = Vec::new();
    for p in &pods {
        let resolved: Option<Vec<(String, i32, String)>> = ports
            .iter()
            .map(|sp| {
                target_port(p, sp.target_port.as_ref(), sp.port).map(|tp| {
                    (
                        sp.name.clone().unwrap_or_default(),
                        tp,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        let Some(resolved) = resolved else { continue };
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
        let target = json!({"kind": "Pod", "namespace": ns, "name": p.name_any(), "uid": p.uid()});
        let mut addr = json!({"ip": ip, "targetRef": target});
        if let Some(n) = &node {
            addr["nodeName"] = json!(n);
        }
        // A pod is named under the service only when its subdomain is the service (upstream's
        // rule; a StatefulSet's pods get `serviceName` as subdomain).
        let hostname = p
            .spec
            .as_ref()
            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        if let Some(h) = &hostname {
            addr["hostname"] = json!(h);
        }
        let ready = is_ready(p);
        let terminating = p.metadata.deletion_timestamp.is_some();
        // Endpoints leave terminating pods out; slices keep them, not ready (unless every
        // address is published), so that proxies drop them while their nodes know they are
        // still there (the agent holds them until then: skiff-agent's `drain`).
        if !terminating {
            let entry = subsets.entry(resolved).or_default();
            if ready || publish_all {
                entry.0.push(addr);
            } else {
                entry.1.push(addr);
            }
        }
        let mut ep = json!({"addresses": [ip], "conditions": {"ready": publish_all || (ready && !terminating), "serving": ready, "terminating": terminating},
                            "targetRef": target});
        if let Some(n) = node {
            ep["nodeName"] = json!(n);
        }
        if let Some(h) = hostname {
            ep["hostname"] = json!(h);
        }
        slice_endpoints.push((ep, p.clone()));
    }
    let subsets_json: Vec<serde_json::Value> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let ports: Vec<serde_json::Value> = ports
                .into_iter()
                .map(|(n, p, proto)| {
                    if n.is_empty() {
                        json!({"port": p, "protocol": proto})
                    } else {
                        json!({"name": n, "port": p, "protocol": proto})
                    }
                })
                .collect();
            let mut s = json!({"ports": ports});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let mut labels = svc.labels().clone();
    labels.insert("endpoints.kubernetes.io/managed-by".into(), MANAGER.into());
    let owner = svc
        .controller_owner_ref(&())
        .expect("a Service from the API has a name and uid");
    let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "labels": labels}, "subsets": subsets_json});
    let ep_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    ep_api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&ep))
        .await?;

    // One EndpointSlice per service (IPv4), with the service's port names and target ports.
    // A named target port is resolved on the endpoints' pods; with none there is no number to
    // list, and the port is left out (as upstream's placeholder slice has no ports).
    let slice_ports: Vec<serde_json::Value> = ports
        .iter()
        .filter_map(|sp| {
            let port = match sp.target_port.as_ref() {
                Some(IntOrString::Int(p)) => Some(*p),
                None => Some(sp.port),
                Some(IntOrString::String(_)) => slice_endpoints.first().and_then(|(_, p)| target_port(p, sp.target_port.as_ref(), sp.port)),
            }?;
            Some(json!({"name": sp.name.clone().unwrap_or_default(), "port": port, "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into())}))
        })
        .collect();
    let mut slice_labels = svc.labels().clone();
    slice_labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    slice_labels.insert(
        "endpointslice.kubernetes.io/managed-by".into(),
        "endpointslice-controller.k8s.io".into(),
    );
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-skiff"), "namespace": ns, "labels": slice_labels, "ownerReferences": [owner]},
        "addressType": "IPv4", "ports": slice_ports,
        "endpoints": slice_endpoints.into_iter().map(|(e, _)| e).collect::<Vec<_>>()});
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    slices
        .patch(
            &format!("{name}-skiff"),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Run the controller; `pod_changes` fires when a pod changed.
pub async fn run(client: Client, pod_changes: impl futures::Stream<Item = ()> + Send + 'static) -> anyhow::Result<()> {
    let svcs: Api<Service> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    // Any pod change may change any service in its namespace: re-check them all. Simple and
    // level-triggered; a service index by namespace is the next step at scale.
    Controller::new(svcs, watcher::Config::default())
        .with_config(crate::controller_config())
        .reconcile_all_on(pod_changes)
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}
