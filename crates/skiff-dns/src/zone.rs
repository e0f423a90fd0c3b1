//! The cluster's names, computed from Services and EndpointSlices the way Kubernetes' DNS
//! specification (and CoreDNS's `kubernetes` plugin) defines them:
//!
//! - `<svc>.<ns>.svc.<domain>`: A records of the ClusterIPs; for a headless service, of its
//!   ready endpoints (all endpoints with `publishNotReadyAddresses`); a CNAME for ExternalName;
//! - `<hostname>.<svc>.<ns>.svc.<domain>` for a headless service's endpoints with a hostname
//!   (StatefulSet pods through `serviceName`, pods with `hostname` + `subdomain`), and
//!   `<a-b-c-d>.<svc>.<ns>.svc.<domain>` for those without;
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>`: SRV records for named ports;
//! - PTR records for ClusterIPs and headless endpoints;
//! - `<a-b-c-d>.<ns>.pod.<domain>`: A records of pod IPs (CoreDNS's `pods insecure`).
//!
//! Names are kept lower-case and without the trailing dot.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One SRV target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub port: u16,
    /// The target name (lower-case, no trailing dot).
    pub target: String,
}

/// What the cluster holds at one name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub addrs: Vec<IpAddr>,
    /// ExternalName services: the name they alias.
    pub cname: Option<String>,
    pub srv: Vec<Srv>,
}

/// What a query finds in the cluster's zone.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// Records at this name (possibly none of the asked type: NODATA).
    Found(Entry),
    /// The name exists only as a parent of other names (`<ns>.svc.<domain>`): NODATA.
    EmptyNonTerminal,
    /// NXDOMAIN.
    NoSuchName,
}

/// All the cluster's names, rebuilt from the watch cache when it changes.
#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Entry>,
    parents: HashSet<String>,
    ptr: HashMap<IpAddr, BTreeSet<String>>,
}

fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Whether an endpoint is served (ready, or any with `publishNotReadyAddresses`).
fn serving(ready: Option<bool>, publish_not_ready: bool) -> bool {
    // Upstream: a nil `ready` is interpreted as ready.
    publish_not_ready || ready.unwrap_or(true)
}

impl Zone {
    /// The zone of `domain` (e.g. `cluster.local`) from the services and slices of the cache.
    pub fn build<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = Zone {
            domain: domain.clone(),
            ..Zone::default()
        };
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            if let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                by_service.entry((ns, svc.clone())).or_default().push(s);
            }
        }
        for svc in services {
            let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                continue;
            };
            let (name, ns) = (name.to_ascii_lowercase(), ns.to_ascii_lowercase());
            let base = format!("{name}.{ns}.svc.{domain}");
            let Some(spec) = &svc.spec else { continue };
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                    zone.entry(&base).cname = Some(target.trim_end_matches('.').to_ascii_lowercase());
                }
                continue;
            }
            let ips: Vec<IpAddr> = spec
                .cluster_ips
                .clone()
                .or_else(|| spec.cluster_ip.clone().map(|c| vec![c]))
                .unwrap_or_default()
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            if !headless {
                if ips.is_empty() {
                    continue;
                }
                zone.entry(&base).addrs = ips.clone();
                for ip in &ips {
                    zone.ptr.entry(*ip).or_default().insert(base.clone());
                }
                for p in spec.ports.iter().flatten() {
                    let (Some(pname), Ok(port)) = (p.name.as_deref().filter(|n| !n.is_empty()), u16::try_from(p.port))
                    else {
                        continue;
                    };
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    let srv_name = format!("_{}._{proto}.{base}", pname.to_ascii_lowercase());
                    zone.entry(&srv_name).srv.push(Srv {
                        port,
                        target: base.clone(),
                    });
                }
                continue;
            }
            // Headless: the endpoints themselves.
            zone.entry(&base);
            let publish = spec.publish_not_ready_addresses.unwrap_or(false);
            for slice in by_service.get(&(ns.clone(), name.clone())).into_iter().flatten() {
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready);
                    if !serving(ready, publish) {
                        continue;
                    }
                    for addr in &ep.addresses {
                        let Ok(ip) = addr.parse::<IpAddr>() else { continue };
                        let host = ep
                            .hostname
                            .as_deref()
                            .filter(|h| !h.is_empty())
                            .map(str::to_ascii_lowercase)
                            .unwrap_or_else(|| dashed(&ip));
                        let host_name = format!("{host}.{base}");
                        push_unique(&mut zone.entry(&base).addrs, ip);
                        push_unique(&mut zone.entry(&host_name).addrs, ip);
                        zone.ptr.entry(ip).or_default().insert(host_name.clone());
                        for p in slice.ports.iter().flatten() {
                            let (Some(pname), Some(port)) = (
                                p.name.as_deref().filter(|n| !n.is_empty()),
                                p.port.and_then(|p| u16::try_from(p).ok()),
                            ) else {
                                continue;
                            };
                            let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                            let srv_name = format!("_{}._{proto}.{base}", pname.to_ascii_lowercase());
                            let srv = Srv {
                                port,
                                target: host_name.clone(),
                            };
                            let e = zone.entry(&srv_name);
                            if !e.srv.contains(&srv) {
                                e.srv.push(srv);
                            }
                        }
                    }
                }
            }
        }
        for e in zone.names.values_mut() {
            e.addrs.sort();
            e.srv.sort();
        }
        let names: Vec<String> = zone.names.keys().cloned().collect();
        for n in names {
            let mut rest = n.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() < domain.len() {
                    break;
                }
                zone.parents.insert(parent.to_string());
                rest = parent;
            }
        }
        for fixed in ["svc", "pod"] {
            zone.parents.insert(format!("{fixed}.{domain}"));
        }
        zone.parents.insert(domain);
        zone
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        self.names.entry(name.to_string()).or_default()
    }

    /// The cluster domain (`cluster.local`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` (lower-case, no trailing dot) is inside the cluster domain.
    pub fn is_cluster_name(&self, name: &str) -> bool {
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// What the zone holds at `name` (lower-case, no trailing dot, inside the domain).
    pub fn lookup(&self, name: &str) -> Lookup {
        if let Some(e) = self.names.get(name) {
            return Lookup::Found(e.clone());
        }
        if let Some(ip) = self.pod_name(name) {
            return Lookup::Found(Entry {
                addrs: vec![ip],
                ..Entry::default()
            });
        }
        if self.parents.contains(name) {
            return Lookup::EmptyNonTerminal;
        }
        Lookup::NoSuchName
    }

    /// `a-b-c-d.<ns>.pod.<domain>`.
    fn pod_name(&self, name: &str) -> Option<IpAddr> {
        let rest = name.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (host, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        let ip: Ipv4Addr = host.replace('-', ".").parse().ok()?;
        Some(IpAddr::V4(ip))
    }

    /// The names of `ip` (PTR), if the cluster has any.
    pub fn reverse(&self, ip: &IpAddr) -> Vec<String> {
        self.ptr
            .get(ip)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn push_unique(v: &mut Vec<IpAddr>, ip: IpAddr) {
    if !v.contains(&ip) {
        v.push(ip);
    }
}

/// The address of a reverse name (`4.3.2.1.in-addr.arpa` → 1.2.3.4); IPv4 only.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut octets: Vec<u8> = Vec::with_capacity(4);
    for label in rest.split('.') {
        octets.push(label.parse().ok()?);
    }
    if octets.len() != 4 {
        return None;
    }
    octets.reverse();
    Some(IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).expect("slice")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn fixture() -> Zone {
        let services = [
            service(json!({"metadata": {"name": "api", "namespace": "shop"},
                "spec": {"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}})),
            service(json!({"metadata": {"name": "nginx", "namespace": "default"},
                "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}})),
            service(json!({"metadata": {"name": "all", "namespace": "default"},
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}})),
            service(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "Example.COM."}})),
        ];
        let slices = [
            slice(json!({"metadata": {"name": "nginx-a", "namespace": "default",
                                      "labels": {"kubernetes.io/service-name": "nginx"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.42.0.5"], "hostname": "web-0", "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.6"], "hostname": "web-1", "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.7"], "conditions": {"ready": true}},
                    {"addresses": ["10.42.0.8"], "hostname": "web-2", "conditions": {"ready": false}}],
                "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]})),
            slice(json!({"metadata": {"name": "all-a", "namespace": "default",
                                      "labels": {"kubernetes.io/service-name": "all"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.0.9"], "conditions": {"ready": false}}]})),
            // A slice of a service in another namespace with the same name does not leak.
            slice(json!({"metadata": {"name": "nginx-b", "namespace": "other",
                                      "labels": {"kubernetes.io/service-name": "nginx"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.1.1"], "conditions": {"ready": true}}]})),
        ];
        Zone::build("cluster.local.", &services, &slices)
    }

    fn addrs(z: &Zone, name: &str) -> Vec<IpAddr> {
        match z.lookup(name) {
            Lookup::Found(e) => e.addrs,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services_resolve_to_their_vip_with_srv_and_ptr() {
        let z = fixture();
        assert_eq!(addrs(&z, "api.shop.svc.cluster.local"), vec![ip("10.43.0.20")]);
        let Lookup::Found(srv) = z.lookup("_http._tcp.api.shop.svc.cluster.local") else {
            panic!("srv")
        };
        assert_eq!(
            srv.srv,
            vec![Srv {
                port: 80,
                target: "api.shop.svc.cluster.local".into()
            }]
        );
        assert_eq!(
            z.reverse(&ip("10.43.0.20")),
            vec!["api.shop.svc.cluster.local".to_string()]
        );
        assert_eq!(parse_reverse("20.0.43.10.in-addr.arpa"), Some(ip("10.43.0.20")));
        assert_eq!(parse_reverse("0.43.10.in-addr.arpa"), None);
    }

    #[test]
    fn headless_services_give_ready_endpoints_and_per_pod_names() {
        let z = fixture();
        assert_eq!(
            addrs(&z, "nginx.default.svc.cluster.local"),
            vec![ip("10.42.0.5"), ip("10.42.0.6"), ip("10.42.0.7")],
            "not-ready endpoints are left out, other namespaces' slices too"
        );
        assert_eq!(
            addrs(&z, "web-0.nginx.default.svc.cluster.local"),
            vec![ip("10.42.0.5")]
        );
        assert_eq!(
            addrs(&z, "10-42-0-7.nginx.default.svc.cluster.local"),
            vec![ip("10.42.0.7")]
        );
        assert_eq!(z.lookup("web-2.nginx.default.svc.cluster.local"), Lookup::NoSuchName);
        let Lookup::Found(srv) = z.lookup("_web._tcp.nginx.default.svc.cluster.local") else {
            panic!("srv")
        };
        assert_eq!(srv.srv.len(), 3);
        assert!(srv.srv.iter().all(|s| s.port == 8080), "{srv:?}");
        assert_eq!(
            z.reverse(&ip("10.42.0.6")),
            vec!["web-1.nginx.default.svc.cluster.local".to_string()]
        );
        assert_eq!(addrs(&z, "all.default.svc.cluster.local"), vec![ip("10.42.0.9")]);
    }

    #[test]
    fn external_names_pods_and_missing_names() {
        let z = fixture();
        let Lookup::Found(e) = z.lookup("ext.default.svc.cluster.local") else {
            panic!("ext")
        };
        assert_eq!(e.cname.as_deref(), Some("example.com"));
        assert_eq!(
            addrs(&z, "10-42-0-99.default.pod.cluster.local"),
            vec![ip("10.42.0.99")]
        );
        assert_eq!(z.lookup("10-42-0.default.pod.cluster.local"), Lookup::NoSuchName);
        assert_eq!(z.lookup("shop.svc.cluster.local"), Lookup::EmptyNonTerminal);
        assert_eq!(z.lookup("svc.cluster.local"), Lookup::EmptyNonTerminal);
        assert_eq!(z.lookup("cluster.local"), Lookup::EmptyNonTerminal);
        assert_eq!(z.lookup("nope.shop.svc.cluster.local"), Lookup::NoSuchName);
        // What a pod's search path tries first for an outside name must not exist.
        assert_eq!(z.lookup("example.com.default.svc.cluster.local"), Lookup::NoSuchName);
        assert!(z.is_cluster_name("a.cluster.local") && !z.is_cluster_name("notcluster.local"));
    }
}
