//! The node's service proxy (kube-proxy's job): watches Services and EndpointSlices and keeps
//! the node's service rules ([`skiff_net::services`]) in step — ClusterIPs and NodePorts
//! balanced over ready endpoints. Each change is applied within a few milliseconds, and only
//! the service ports that changed are rewritten.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use skiff_net::nat::Protocol;
use skiff_net::services::{ServicePort, ServiceTable};

/// Services with this label are answered by a server on every node at the service's own
/// address (the agent gives each node that address): the proxy leaves them alone.
pub const NODE_LOCAL_LABEL: &str = "skiff.dev/node-local";

/// The service ports `services` and `slices` describe, with their ready endpoints, as node
/// `node` programs them (traffic policies `Local` keep to its own endpoints).
pub fn desired(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], node: &str) -> Vec<ServicePort> {
    // Slices by (namespace, service name).
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        if let Some(name) = s.labels().get("kubernetes.io/service-name") {
            by_service
                .entry((s.namespace().unwrap_or_default(), name.clone()))
                .or_default()
                .push(s);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        // Served on every node at its own address (the cluster DNS): nothing to balance.
        if svc.labels().get(NODE_LOCAL_LABEL).map(String::as_str) == Some("true") {
            continue;
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        if cluster_ip.is_none() && !node_ports {
            continue; // headless: DNS's business, not the proxy's
        }
        let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
        let svc_slices = by_service.get(&(ns.clone(), name.clone()));
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(10800)
        });
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else { continue };
            let mut endpoints: Vec<(Ipv4Addr, u16)> = Vec::new();
            let mut local: Vec<(Ipv4Addr, u16)> = Vec::new();
            for slice in svc_slices.into_iter().flatten() {
                let Some(target) = slice
                    .ports
                    .iter()
                    .flatten()
                    // An unnamed port is "" in slices and absent in services.
                    // (A slice port without a number cannot be a DNAT target.)
                    .find(|sp| {
                        sp.port.is_some()
                            && sp.name.as_deref().unwrap_or("") == p.name.as_deref().unwrap_or("")
                            && Protocol::parse(sp.protocol.as_deref()) == Some(protocol)
                    })
                    .and_then(|sp| sp.port)
                    .and_then(|t| u16::try_from(t).ok())
                else {
                    continue;
                };
                for ep in &slice.endpoints {
                    // Kubernetes: a missing `ready` means ready.
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    let here = ep.node_name.as_deref() == Some(node);
                    for a in &ep.addresses {
                        if let Ok(ip) = a.parse::<Ipv4Addr>() {
                            endpoints.push((ip, target));
                            if here {
                                local.push((ip, target));
                            }
                        }
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            local.sort();
            local.dedup();
            // `internalTrafficPolicy: Local`: the ClusterIP reaches this node's endpoints only
            // (none here: refused, where kube-proxy drops).
            if spec.internal_traffic_policy.as_deref() == Some("Local") {
                endpoints = local.clone();
            }
            let external_local =
                (node_ports && spec.external_traffic_policy.as_deref() == Some("Local")).then_some(local);
            out.push(ServicePort {
                key: format!(
                    "{ns}/{name}:{}/{protocol:?}",
                    p.name.clone().unwrap_or_else(|| p.port.to_string())
                ),
                cluster_ip,
                protocol,
                port,
                node_port: p.node_port.filter(|_| node_ports).and_then(|n| u16::try_from(n).ok()),
                endpoints,
                affinity_seconds,
                external_local,
            });
        }
    }
    out
}

/// Drives a reflector of `K` and wakes `notify` on every change.
pub(crate) fn reflect<K>(api: Api<K>, notify: Arc<tokio::sync::Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = Box::pin(stream);
        while let Some(ev) = stream.next().await {
            if let Err(e) = ev {
                tracing::debug!(error = %e, "service proxy watch");
            }
            notify.notify_one();
        }
    });
    reader
}

/// The cluster's EndpointSlices, watched; `notify` is woken on every change. The proxy and
/// the pod workers ([`crate::drain`]) share one watch.
pub fn endpoint_slices(client: Client, notify: Arc<tokio::sync::Notify>) -> Store<EndpointSlice> {
    reflect(Api::<EndpointSlice>::all(client), notify)
}

/// Keeps the node's service rules in step with the cluster until the process ends; `slices`
/// is [`endpoint_slices`] with its `notify`; `node` is this node (traffic policies `Local`).
pub async fn run(
    client: Client,
    pod_cidr: ipnet::Ipv4Net,
    node: String,
    slices: Store<EndpointSlice>,
    notify: Arc<tokio::sync::Notify>,
) {
    let table = match tokio::task::spawn_blocking(move || ServiceTable::ensure(pod_cidr)).await {
        Ok(Ok(t)) => Arc::new(Mutex::new(t)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "services are unavailable on this node (nftables)");
            return;
        }
        Err(_) => return,
    };
    let services = reflect(Api::<Service>::all(client), notify.clone());
    let _ = services.wait_until_ready().await;
    let _ = slices.wait_until_ready().await;
    loop {
        // A short pause gathers a burst of changes (a rollout) into one update.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let want = desired(&services.state(), &slices.state(), &node);
        let t = table.clone();
        let applied =
            tokio::task::spawn_blocking(move || t.lock().unwrap_or_else(|p| p.into_inner()).apply(&want)).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "updating the service rules failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => return,
        }
        notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(json).expect("service"))
    }

    fn slice(json: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(json).expect("slice"))
    }

    #[test]
    fn ready_endpoints_by_port_name_and_node_ports() {
        let services = vec![
            svc(serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.43.0.20",
                         "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"},
                                   {"name": "dns", "port": 53, "protocol": "UDP"}]}})),
            svc(
                serde_json::json!({"metadata": {"name": "headless", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
            svc(serde_json::json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com"}})),
            // The cluster DNS service: answered on every node itself, no rules.
            svc(
                serde_json::json!({"metadata": {"name": "kube-dns", "namespace": "kube-system",
                                               "labels": {"skiff.dev/node-local": "true"}},
                "spec": {"clusterIP": "10.43.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            ),
        ];
        let slices = vec![slice(serde_json::json!({
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "conditions": {"ready": true}},
            {"addresses": ["10.42.0.6"], "conditions": {"ready": false}},
            {"addresses": ["10.42.0.7"]}
        ]}))];
        let got = desired(&services, &slices, "node-a");
        assert_eq!(got.len(), 2, "{got:?}");
        let http = got.iter().find(|p| p.port == 80).expect("http");
        assert_eq!(http.key, "default/web:http/Tcp");
        assert_eq!(http.cluster_ip, Some(Ipv4Addr::new(10, 43, 0, 20)));
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(
            http.endpoints,
            vec![(Ipv4Addr::new(10, 42, 0, 5), 8080), (Ipv4Addr::new(10, 42, 0, 7), 8080)],
            "unready endpoints are out of rotation"
        );
        // `kubectl expose` of one port: unnamed in the service, "" in the slice.
        let unnamed = desired(
            &[svc(
                serde_json::json!({"metadata": {"name": "one", "namespace": "default"},
                "spec": {"clusterIP": "10.43.0.21", "ports": [{"port": 80, "protocol": "TCP"}]}}),
            )],
            &[slice(serde_json::json!({
                "metadata": {"name": "one-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "one"}},
                "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.42.0.9"], "conditions": {"ready": true}}]}))],
            "node-a",
        );
        assert_eq!(unnamed[0].endpoints, vec![(Ipv4Addr::new(10, 42, 0, 9), 8080)]);
        let dns = got.iter().find(|p| p.port == 53).expect("dns");
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.node_port, None);
        assert_eq!(dns.endpoints.len(), 2);
    }

    #[test]
    fn local_traffic_policies_keep_to_this_nodes_endpoints() {
        let policy = |internal: &str, external: &str| {
            svc(serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "10.43.0.20",
                         "internalTrafficPolicy": internal, "externalTrafficPolicy": external,
                         "ports": [{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]}}))
        };
        let slices = vec![slice(serde_json::json!({
        "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.0.5"], "nodeName": "node-a", "conditions": {"ready": true}},
            {"addresses": ["10.42.1.5"], "nodeName": "node-b", "conditions": {"ready": true}}
        ]}))];
        let a = Ipv4Addr::new(10, 42, 0, 5);
        let b = Ipv4Addr::new(10, 42, 1, 5);
        let cluster = desired(&[policy("Cluster", "Cluster")], &slices, "node-a");
        assert_eq!(cluster[0].endpoints, vec![(a, 8080), (b, 8080)]);
        assert_eq!(
            cluster[0].external_local, None,
            "Cluster: node ports go anywhere, masqueraded"
        );
        let external = desired(&[policy("Cluster", "Local")], &slices, "node-a");
        assert_eq!(
            external[0].endpoints,
            vec![(a, 8080), (b, 8080)],
            "the ClusterIP still goes anywhere"
        );
        assert_eq!(external[0].external_local, Some(vec![(a, 8080)]));
        let on_c = desired(&[policy("Cluster", "Local")], &slices, "node-c");
        assert_eq!(
            on_c[0].external_local,
            Some(vec![]),
            "a node without endpoints drops node-port traffic"
        );
        let internal = desired(&[policy("Local", "Cluster")], &slices, "node-b");
        assert_eq!(internal[0].endpoints, vec![(b, 8080)]);
    }
}
