//! The real node agent: registers this machine as a Node (capacity, OS, kernel, runtime,
//! addresses), renews its lease, waits for the pod CIDR the server assigns, brings up pod
//! networking and runs the pods bound to it ([`crate::pods`]).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use skiff_runtime::{GcPolicy, RegistriesConfig, RuntimeSelector};

const MANAGER: &str = "skiff-agent";

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (the hostname unless given).
    pub node_name: String,
    /// State that survives restarts: images, containers, IPAM, pod directories.
    pub data_dir: PathBuf,
    /// State that a reboot clears: pod network namespaces, the runtime's state.
    pub run_dir: PathBuf,
    /// Pod logs (`/var/log/pods` on a real node).
    pub log_dir: PathBuf,
    /// The OCI runtime.
    pub runtime: RuntimeSelector,
    /// The `skiff` binary (for shims and the built-in runtime).
    pub exe: PathBuf,
    /// Registry mirrors and settings.
    pub registries: RegistriesConfig,
    /// The cluster DNS service's address(es) for pods' resolv.conf.
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's address (detected when not given).
    pub node_ip: Option<IpAddr>,
    /// Pods this node may run.
    pub max_pods: u32,
    /// The cgroup under which pods live.
    pub cgroup_root: String,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
    /// Image garbage collection: disk thresholds (`--image-gc-high-threshold`,
    /// `--image-gc-low-threshold`) and the youngest image collected.
    pub image_gc: GcPolicy,
    /// Destinations outside the node that pods may reach, masqueraded behind the node's
    /// address (`--egress-cidr`); none by default.
    pub egress: Vec<ipnet::Ipv4Net>,
    /// The cluster's service CIDR (ClusterIPs are allocated from it).
    pub service_cidr: ipnet::Ipv4Net,
    /// Run the cluster DNS server on this node (at `cluster_dns`) with these credentials (a
    /// kubeconfig); `None`: pods use whatever answers at `cluster_dns`.
    pub dns_kubeconfig: Option<String>,
    /// Where the cluster DNS server sends names outside the cluster (the node's resolvers).
    pub dns_upstreams: Vec<std::net::SocketAddr>,
}

impl AgentConfig {
    pub fn new(node_name: String, data_dir: PathBuf, run_dir: PathBuf) -> Self {
        AgentConfig {
            node_name,
            log_dir: data_dir.join("pod-logs"),
            data_dir,
            run_dir,
            runtime: RuntimeSelector::default(),
            exe: PathBuf::from("/proc/self/exe"),
            registries: RegistriesConfig::default(),
            cluster_dns: vec![IpAddr::V4(Ipv4Addr::new(10, 43, 0, 10))],
            cluster_domain: "cluster.local".into(),
            node_ip: None,
            max_pods: 110,
            cgroup_root: "/kubepods".into(),
            heartbeat: Duration::from_secs(10),
            image_gc: GcPolicy::default(),
            egress: Vec::new(),
            service_cidr: ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 43, 0, 0), 16).unwrap_or_default(),
            dns_kubeconfig: None,
            dns_upstreams: Vec::new(),
        }
    }
}

/// This machine's hostname, lower-cased as a Node name must be.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .to_ascii_lowercase()
}

/// The address other nodes and pods reach this node at: the source address of the default
/// route (a UDP "connect" sends nothing), else loopback.
pub fn detect_node_ip() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn meminfo_bytes(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "Linux".into())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The Node's status as this machine reports it.
pub fn node_status(cfg: &AgentConfig, node_ip: IpAddr, runtime_version: &str, ready: bool) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = meminfo_bytes("MemTotal:").unwrap_or(0);
    let storage = rustix::fs::statvfs(&cfg.data_dir)
        .map(|s| s.f_blocks * s.f_frsize)
        .unwrap_or(0);
    let uname = rustix::system::uname();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{}Ki", memory / 1024),
                          "pods": cfg.max_pods.to_string(), "ephemeral-storage": format!("{}Ki", storage / 1024)});
    let cond = |t: &str, status: &str, reason: &str, message: &str| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            if ready {
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
            } else {
                cond("Ready", "False", "KubeletNotReady", "waiting for the pod network (no pod CIDR assigned yet)")
            },
        ],
        "addresses": [{"type": "InternalIP", "address": node_ip.to_string()}, {"type": "Hostname", "address": cfg.node_name}],
        "nodeInfo": {
            "kubeletVersion": concat!("v1.33.0-skiff.", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "containerRuntimeVersion": runtime_version,
            "osImage": os_image(),
            "kernelVersion": uname.release().to_string_lossy(),
            "operatingSystem": "linux",
            "architecture": arch(),
            "machineID": std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim(),
            "systemUUID": "",
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim(),
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
    })
}

/// Register (or re-register) the Node: labels and the status above.
pub async fn register(
    client: &Client,
    cfg: &AgentConfig,
    node_ip: IpAddr,
    runtime_version: &str,
    ready: bool,
) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::apply(MANAGER).force();
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": {
            "kubernetes.io/hostname": cfg.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch(),
            "node-role.kubernetes.io/agent": "true"}},
    });
    nodes.patch(&cfg.node_name, &pp, &Patch::Apply(&node)).await?;
    let status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": cfg.node_name},
                        "status": node_status(cfg, node_ip, runtime_version, ready)});
    Ok(nodes.patch_status(&cfg.node_name, &pp, &Patch::Apply(&status)).await?)
}

/// Renew the node's lease (create it on first use).
pub async fn renew_lease(client: &Client, node: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
    leases
        .patch(node, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&lease))
        .await?;
    Ok(())
}

/// Run the agent until the process ends: register, heartbeat, network, pods.
pub async fn run(client: Client, cfg: AgentConfig) -> anyhow::Result<()> {
    for dir in [&cfg.data_dir, &cfg.run_dir, &cfg.log_dir] {
        std::fs::create_dir_all(dir)?;
    }
    let node_ip = cfg.node_ip.unwrap_or_else(detect_node_ip);
    let runtime_version = format!("skiff://{}", env!("CARGO_PKG_VERSION"));
    register(&client, &cfg, node_ip, &runtime_version, false).await?;
    renew_lease(&client, &cfg.node_name).await?;
    let beats = {
        let (client, name, period) = (client.clone(), cfg.node_name.clone(), cfg.heartbeat);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if let Err(e) = renew_lease(&client, &name).await {
                    tracing::warn!(error = %e, "lease renewal failed");
                }
            }
        })
    };
    let _beats = crate::AbortOnDrop(beats);
    // The pod CIDR comes from the server (node IPAM controller).
    let nodes: Api<Node> = Api::all(client.clone());
    let cidr = loop {
        let n = nodes.get(&cfg.node_name).await?;
        if let Some(c) = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .filter(|c| !c.is_empty())
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cidr: ipnet::Ipv4Net = cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("the node's pod CIDR {cidr:?} is not an IPv4 network: {e}"))?;
    let net = skiff_net::NodeNetwork::start(skiff_net::NodeNetworkConfig {
        egress: cfg.egress.clone(),
        ..skiff_net::NodeNetworkConfig::new(cidr, &cfg.data_dir, &cfg.run_dir)
    })
    .await?;
    tracing::info!(node = %cfg.node_name, pod_cidr = %cidr, "pod network ready");
    // Services: the node reaches VIPs without a default route, and keeps their rules.
    if let Err(e) = net.route_services(cfg.service_cidr).await {
        tracing::warn!(error = %e, "routing the service CIDR");
    }
    let proxy_wake = Arc::new(tokio::sync::Notify::new());
    let slices = crate::proxy::endpoint_slices(client.clone(), proxy_wake.clone());
    let _proxy = crate::AbortOnDrop(tokio::spawn(crate::proxy::run(
        client.clone(),
        cidr,
        cfg.node_name.clone(),
        slices.clone(),
        proxy_wake,
    )));
    let _routes = crate::AbortOnDrop(tokio::spawn(crate::routes::run(
        client.clone(),
        cfg.node_name.clone(),
        node_ip,
        cidr,
    )));
    // Cluster DNS on this node (its own process: it outlives this task).
    let _dns = cfg
        .dns_kubeconfig
        .clone()
        .map(|kc| crate::AbortOnDrop(tokio::spawn(crate::dns::keep_running(Arc::new(cfg.clone()), kc))));
    register(&client, &cfg, node_ip, &runtime_version, true).await?;
    // The node's status is re-posted every minute (as the kubelet's status report).
    let status = {
        let (client, cfg, rv) = (client.clone(), cfg.clone(), runtime_version.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = register(&client, &cfg, node_ip, &rv, true).await {
                    tracing::warn!(error = %e, "node status update failed");
                }
            }
        })
    };
    let _status = crate::AbortOnDrop(status);
    crate::pods::run(client, Arc::new(cfg), Arc::new(net), node_ip, slices).await
}

/// Keeps this agent's tunnel to the API server open, reconnecting with back-off, and serves
/// the streaming requests of its pods (`kubectl logs/exec/attach/port-forward`) over it
/// ([`skiff_client::tunnel`]). Only a separately joined agent needs one: the embedded agent is
/// connected in-process.
pub async fn keep_tunnel(
    client: kube::Client,
    node: String,
    streams: std::sync::Arc<dyn skiff_client::streams::NodeStreams>,
) {
    use skiff_client::tunnel;
    let mut backoff = Duration::from_secs(1);
    loop {
        let uri = format!("{}?node={node}", tunnel::TUNNEL_PATH);
        let connected = match http::Request::get(uri).body(Vec::new()) {
            Ok(req) => client.connect(req).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match connected {
            Ok(conn) => {
                tracing::info!(node = %node, "tunnel to the API server open");
                backoff = Duration::from_secs(1);
                let io = tunnel::ws_bytes(conn.into_stream());
                if let Err(e) = tunnel::serve(io, streams.clone()).await {
                    tracing::debug!(error = %e, "tunnel ended");
                }
                tracing::warn!(node = %node, "tunnel to the API server closed; reconnecting");
            }
            Err(e) => tracing::warn!(node = %node, error = %e, "opening the tunnel to the API server"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
