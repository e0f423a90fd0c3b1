//! A pod's `/etc/hosts` and `/etc/resolv.conf`, written the way the kubelet writes them.

use std::net::IpAddr;

/// How a pod resolves names (`spec.dnsPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsPolicy {
    ClusterFirst,
    ClusterFirstWithHostNet,
    Default,
    None,
}

impl DnsPolicy {
    /// `spec.dnsPolicy` as Kubernetes spells it; empty means the default (`ClusterFirst`).
    pub fn parse(s: &str) -> Option<DnsPolicy> {
        Some(match s {
            "" | "ClusterFirst" => DnsPolicy::ClusterFirst,
            "ClusterFirstWithHostNet" => DnsPolicy::ClusterFirstWithHostNet,
            "Default" => DnsPolicy::Default,
            "None" => DnsPolicy::None,
            _ => return None,
        })
    }
}

/// `spec.dnsConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// Options by name, with an optional value (`ndots` → `5`).
    pub options: Vec<(String, Option<String>)>,
}

/// What the node knows about DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster DNS service's addresses (kubelet `--cluster-dns`).
    pub servers: Vec<IpAddr>,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// The node's own resolver configuration (its `/etc/resolv.conf`), used by `Default` and
    /// for the host's search domains.
    pub host_resolv_conf: String,
}

/// Limits the kubelet applies (glibc's and upstream's).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<(String, Option<String>)>,
}

fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv {
        nameservers: Vec::new(),
        searches: Vec::new(),
        options: Vec::new(),
    };
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.nameservers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => r.searches = words.map(str::to_string).collect(),
            Some("options") => r.options.extend(words.map(split_option)),
            _ => {}
        }
    }
    r
}

fn split_option(o: &str) -> (String, Option<String>) {
    match o.split_once(':') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (o.to_string(), None),
    }
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !list.contains(&i) {
            list.push(i);
        }
    }
}

/// The pod's `/etc/resolv.conf`. `host_network` pods with `ClusterFirst` get the node's
/// resolvers, as in Kubernetes; `ClusterFirstWithHostNet` gives them the cluster's.
pub fn resolv_conf(
    policy: DnsPolicy,
    config: Option<&DnsConfig>,
    namespace: &str,
    host_network: bool,
    cluster: &ClusterDns,
) -> String {
    let host = parse_resolv(&cluster.host_resolv_conf);
    let cluster_first = match policy {
        DnsPolicy::ClusterFirst => !host_network,
        DnsPolicy::ClusterFirstWithHostNet => true,
        DnsPolicy::Default | DnsPolicy::None => false,
    };
    // Without a cluster DNS server the kubelet falls back to the node's resolvers.
    let cluster_first = cluster_first && !cluster.servers.is_empty();
    let mut r = if policy == DnsPolicy::None {
        Resolv {
            nameservers: Vec::new(),
            searches: Vec::new(),
            options: Vec::new(),
        }
    } else if cluster_first {
        let d = &cluster.domain;
        let mut searches = vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.clone()];
        push_unique(&mut searches, host.searches.clone());
        Resolv {
            nameservers: cluster.servers.iter().map(IpAddr::to_string).collect(),
            searches,
            options: vec![("ndots".into(), Some("5".into()))],
        }
    } else {
        host
    };
    if let Some(c) = config {
        push_unique(&mut r.nameservers, c.nameservers.clone());
        push_unique(&mut r.searches, c.searches.clone());
        for (k, v) in &c.options {
            match r.options.iter_mut().find(|(n, _)| n == k) {
                Some(existing) => existing.1 = v.clone(),
                None => r.options.push((k.clone(), v.clone())),
            }
        }
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        let opts: Vec<String> = r
            .options
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}:{v}"),
                None => k.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// One `spec.hostAliases` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// The pod's `/etc/hosts`: localhost, the pod's own name (its FQDN first when it has a
/// subdomain, as `web-0.nginx.default.svc.cluster.local web-0`), then host aliases.
pub fn hosts_file(pod_ip: Option<IpAddr>, hostname: &str, fqdn: Option<&str>, aliases: &[HostAlias]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        match fqdn {
            Some(f) if !f.is_empty() => out.push_str(&format!("{ip}\t{f}\t{hostname}\n")),
            _ => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterDns {
        ClusterDns {
            servers: vec!["10.43.0.10".parse().expect("ip")],
            domain: "cluster.local".into(),
            host_resolv_conf: "# from the node\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0 timeout:2\n".into(),
        }
    }

    #[test]
    fn cluster_first_points_at_cluster_dns_with_kubernetes_search_path() {
        let r = resolv_conf(DnsPolicy::ClusterFirst, None, "shop", false, &cluster());
        assert_eq!(
            r,
            "nameserver 10.43.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_network_and_default_use_the_node_resolvers() {
        let host = "nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0 timeout:2\n";
        assert_eq!(resolv_conf(DnsPolicy::ClusterFirst, None, "x", true, &cluster()), host);
        assert_eq!(resolv_conf(DnsPolicy::Default, None, "x", false, &cluster()), host);
        let with_host_net = resolv_conf(DnsPolicy::ClusterFirstWithHostNet, None, "x", true, &cluster());
        assert!(with_host_net.starts_with("nameserver 10.43.0.10\n"), "{with_host_net}");
    }

    #[test]
    fn dns_config_merges_and_none_uses_only_it() {
        let cfg = DnsConfig {
            nameservers: vec!["192.0.2.99".into()],
            searches: vec!["extra.example".into(), "svc.cluster.local".into()],
            options: vec![("ndots".into(), Some("2".into())), ("single-request".into(), None)],
        };
        let r = resolv_conf(DnsPolicy::ClusterFirst, Some(&cfg), "ns", false, &cluster());
        assert_eq!(
            r,
            "nameserver 10.43.0.10\nnameserver 192.0.2.99\nsearch ns.svc.cluster.local svc.cluster.local cluster.local corp.example extra.example\noptions ndots:2 single-request\n"
        );
        let only = resolv_conf(DnsPolicy::None, Some(&cfg), "ns", false, &cluster());
        assert_eq!(
            only,
            "nameserver 192.0.2.99\nsearch extra.example svc.cluster.local\noptions ndots:2 single-request\n"
        );
        let many = DnsConfig {
            nameservers: (1..=5).map(|i| format!("192.0.2.{i}")).collect(),
            ..Default::default()
        };
        let capped = resolv_conf(DnsPolicy::None, Some(&many), "ns", false, &cluster());
        assert_eq!(capped.lines().count(), 3, "at most three nameservers: {capped}");
    }

    #[test]
    fn no_cluster_dns_falls_back_to_the_node() {
        let mut c = cluster();
        c.servers.clear();
        let r = resolv_conf(DnsPolicy::ClusterFirst, None, "ns", false, &c);
        assert!(r.starts_with("nameserver 192.0.2.53\n"), "{r}");
    }

    #[test]
    fn policies_parse_as_kubernetes_spells_them() {
        assert_eq!(DnsPolicy::parse(""), Some(DnsPolicy::ClusterFirst));
        assert_eq!(DnsPolicy::parse("None"), Some(DnsPolicy::None));
        assert_eq!(DnsPolicy::parse("clusterfirst"), None);
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_aliases() {
        let h = hosts_file(
            Some("10.42.0.7".parse().expect("ip")),
            "web-0",
            Some("web-0.nginx.default.svc.cluster.local"),
            &[HostAlias {
                ip: "192.0.2.1".into(),
                hostnames: vec!["foo.local".into(), "bar.local".into()],
            }],
        );
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            h.contains("\n10.42.0.7\tweb-0.nginx.default.svc.cluster.local\tweb-0\n"),
            "{h}"
        );
        assert!(
            h.ends_with("# Entries added by HostAliases.\n192.0.2.1\tfoo.local\tbar.local\n"),
            "{h}"
        );
        let plain = hosts_file(Some("10.42.0.8".parse().expect("ip")), "client", None, &[]);
        assert!(
            plain.ends_with("fe00::2\tip6-allrouters\n10.42.0.8\tclient\n"),
            "{plain}"
        );
    }
}
