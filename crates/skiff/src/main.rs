//! The `skiff` binary: `skiff server` runs the control plane (and, in later waves, an embedded
//! agent). Wiring and configuration only; the work is in the library crates.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// mimalloc rather than glibc's malloc: the server allocates and frees many small buffers from
/// many threads (JSON for every request and watch event), where glibc's arenas spent a quarter of
/// the CPU of a 1,000-pod rollout in malloc/free and lock waits (see BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

mod image;
mod trim;

#[derive(Parser)]
#[command(name = "skiff", version, about = "The cloud-native platform in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server (the control plane).
    Server(ServerArgs),
    /// Run a node agent that joins a server: this machine runs pods as containers (root), or
    /// `--simulated` nodes run pods without containers.
    Agent(AgentArgs),
    /// Manage the node's images: ls, pull, import, rm.
    Image(image::ImageArgs),
    /// The node's cluster DNS server (started and kept running by the agent).
    #[command(hide = true)]
    Dns(DnsArgs),
}

/// `skiff dns`: answers cluster names from a watch cache, relays the rest.
#[derive(clap::Args)]
struct DnsArgs {
    /// Credentials for the watch (the agent writes them).
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Address to answer on (UDP and TCP; repeatable).
    #[arg(long, required = true)]
    listen: Vec<std::net::SocketAddr>,
    /// Resolver for names outside the cluster (repeatable; tried in order).
    #[arg(long)]
    upstream: Vec<std::net::SocketAddr>,
}

/// How this machine runs as a node (the embedded agent of `skiff server`, or `skiff agent`).
#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// The node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address (default: the source address of the default route).
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// OCI runtime for containers: `builtin` (in the skiff binary), `runc`, `crun`, `youki`, or
    /// a path to a runtime with runc's command line.
    #[arg(long, default_value = "builtin")]
    container_runtime: String,
    /// Registry mirrors and settings (k3s `registries.yaml` format).
    #[arg(long, default_value = "/etc/skiff/registries.yaml")]
    private_registry: PathBuf,
    /// State that a reboot clears (pod network namespaces, runtime state).
    #[arg(long, default_value = "/run/skiff")]
    run_dir: PathBuf,
    /// The cluster DNS address written into pods' resolv.conf; the node answers DNS on it.
    #[arg(long, default_value = "10.43.0.10")]
    cluster_dns: IpAddr,
    /// Where the cluster DNS server sends names outside the cluster (`IP` or `IP:PORT`,
    /// repeatable; default: the nameservers of the node's /etc/resolv.conf).
    #[arg(long = "cluster-dns-upstream", value_parser = parse_upstream)]
    cluster_dns_upstreams: Vec<std::net::SocketAddr>,
    /// Image garbage collection runs when the filesystem of the data dir is at least this
    /// full (percent; 100 turns it off), as the kubelet's flag.
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// Image garbage collection removes unused images, least recently used first, until the
    /// filesystem is below this (percent), as the kubelet's flag.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// Destinations outside the cluster pods may reach, masqueraded behind the node's address
    /// (repeatable, e.g. `0.0.0.0/0` for anywhere). None by default: pod traffic leaves the
    /// node untranslated.
    #[arg(long = "egress-cidr")]
    egress_cidrs: Vec<ipnet::Ipv4Net>,
}

impl NodeArgs {
    /// The agent's configuration over `data_dir`.
    fn agent_config(&self, data_dir: &std::path::Path) -> Result<skiff_agent::AgentConfig> {
        let name = self.node_name.clone().unwrap_or_else(skiff_agent::node::hostname);
        let mut cfg = skiff_agent::AgentConfig::new(name, data_dir.join("agent"), self.run_dir.clone());
        cfg.exe = std::env::current_exe().context("locating the skiff binary")?;
        cfg.runtime = match self.container_runtime.as_str() {
            "builtin" | "" => skiff_runtime::RuntimeSelector::Builtin { exe: cfg.exe.clone() },
            other => skiff_runtime::RuntimeSelector::External { program: other.into() },
        };
        cfg.registries = if self.private_registry.exists() {
            skiff_runtime::RegistriesConfig::load(&self.private_registry)
                .with_context(|| format!("reading {}", self.private_registry.display()))?
        } else {
            skiff_runtime::RegistriesConfig::default()
        };
        cfg.node_ip = self.node_ip;
        cfg.cluster_dns = vec![self.cluster_dns];
        cfg.dns_upstreams = if self.cluster_dns_upstreams.is_empty() {
            skiff_agent::dns::upstreams_from_resolv_conf(
                &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            )
        } else {
            self.cluster_dns_upstreams.clone()
        };
        cfg.egress = self.egress_cidrs.clone();
        cfg.image_gc = skiff_runtime::GcPolicy::new(self.image_gc_high_threshold, self.image_gc_low_threshold)
            .map_err(|e| anyhow::anyhow!("--image-gc-high-threshold/--image-gc-low-threshold: {e}"))?;
        Ok(cfg)
    }
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse::<std::net::SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// Capacity of each simulated node.
#[derive(clap::Args, Clone)]
struct SimulatedCapacity {
    /// CPU of each simulated node.
    #[arg(long = "simulated-node-cpu", default_value = "8")]
    cpu: String,
    /// Memory of each simulated node.
    #[arg(long = "simulated-node-memory", default_value = "32Gi")]
    memory: String,
    /// Pods each simulated node may run.
    #[arg(long = "simulated-node-pods", default_value = "110")]
    pods: String,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Simulate nodes (the kwok idea): register them, renew their leases and move their pods
    /// to Running without containers.
    #[arg(long)]
    simulated: bool,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    simulated_nodes: usize,
    /// Node names are this prefix and an index; give each agent its own.
    #[arg(long, default_value = "sim-agent-")]
    node_name_prefix: String,
    #[command(flatten)]
    capacity: SimulatedCapacity,
    /// Lease renewal interval (seconds).
    #[arg(long, default_value_t = 10)]
    heartbeat: u64,
    /// Kubeconfig of the server to join (alternative to --server/--token/--ca-file).
    #[arg(long, env = "KUBECONFIG", conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,
    /// The server's URL, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "SKIFF_URL", requires_all = ["token", "ca_file"])]
    server: Option<String>,
    /// The server's join token (`<data-dir>/token` on the server).
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    token: Option<String>,
    /// The server's CA certificate (`<data-dir>/tls/ca.crt` on the server).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Where the agent keeps its state (images, containers, pod volumes).
    #[arg(long, short = 'd', default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where Skiff keeps its state (store, certificates, kubeconfig).
    #[arg(long, short = 'd', default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    https_listen_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The address pods reach the API server at (the `kubernetes` service's endpoint;
    /// default: the bind address, or the node's address when binding to all).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Write the admin kubeconfig here (default: <data-dir>/kubeconfig.yaml).
    #[arg(long, short = 'o')]
    write_kubeconfig: Option<PathBuf>,
    /// Shared secret that agents join with; generated and stored in the data dir if not given.
    #[arg(long, short = 't', env = "SKIFF_TOKEN")]
    token: Option<String>,
    /// Storage: empty for the embedded SQLite store, `sqlite:///path/to/db`, or an etcd URL.
    #[arg(long, env = "SKIFF_DATASTORE_ENDPOINT", default_value = "")]
    datastore_endpoint: String,
    /// Do not run the embedded node agent (the control plane only).
    #[arg(long)]
    disable_agent: bool,
    #[command(flatten)]
    node: NodeArgs,
    /// Extra host names or IPs for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Register this many simulated nodes (no containers: bound pods become Running/Ready).
    #[arg(long, default_value_t = 0)]
    simulated_nodes: usize,
    #[command(flatten)]
    simulated_capacity: SimulatedCapacity,
    /// How long a node may go without renewing its lease before it is NotReady (seconds).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Do not run the scheduler.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controller manager.
    #[arg(long)]
    disable_controller_manager: bool,
}

/// Which in-process API clients to run.
struct Clients {
    volume_root: String,
    node_grace: u64,
    simulated_nodes: usize,
    simulated_capacity: SimulatedCapacity,
    disable_scheduler: bool,
    disable_controller_manager: bool,
}

/// An API client from a kubeconfig (over HTTPS).
async fn client_from(kubeconfig: &str) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).context("parsing the kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("client configuration")?;
    kube::Client::try_from(cfg).context("API client")
}

/// Start the in-process API clients (controllers, scheduler, simulated nodes). They are API
/// clients like any other, through the server's handlers and authentication, over an
/// in-process transport rather than HTTPS on loopback (ADR 0004).
async fn start_clients(server: &skiff_apiserver::Server, args: &Clients) -> Result<()> {
    let identity = skiff_apiserver::Identity {
        user: "system:skiff:controllers".into(),
        groups: vec!["system:masters".into()],
    };
    let client = kube::Client::new(server.in_process::<kube::client::Body>(identity), "default");
    if !args.disable_controller_manager {
        let c = client.clone();
        let opts = skiff_controllers::Options {
            volume_root: args.volume_root.clone(),
            node_lifecycle: skiff_controllers::nodelifecycle::NodeLifecycleOptions {
                grace: std::time::Duration::from_secs(args.node_grace),
                period: std::time::Duration::from_secs((args.node_grace / 4).clamp(1, 5)),
            },
            root_ca_pem: server.pki.ca_pem.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = skiff_controllers::run(c, opts).await {
                tracing::error!(error = %e, "controller manager stopped");
            }
        });
    }
    if !args.disable_scheduler {
        let c = client.clone();
        tokio::spawn(async move {
            if let Err(e) = skiff_scheduler::run(c).await {
                tracing::error!(error = %e, "scheduler stopped");
            }
        });
    }
    if args.simulated_nodes > 0 {
        let cfg = skiff_agent::SimulatedNodesConfig {
            count: args.simulated_nodes,
            // Renew well inside the grace period, as the kubelet renews at a quarter of it.
            heartbeat: std::time::Duration::from_secs((args.node_grace / 4).clamp(1, 10)),
            cpu: args.simulated_capacity.cpu.clone(),
            memory: args.simulated_capacity.memory.clone(),
            pods: args.simulated_capacity.pods.clone(),
            ..Default::default()
        };
        let nodes = skiff_agent::SimulatedNodes::new(client, cfg);
        tokio::spawn(async move {
            if let Err(e) = nodes.run().await {
                tracing::error!(error = %e, "simulated nodes stopped");
            }
        });
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load_or_make_token(data_dir: &std::path::Path, given: Option<String>) -> Result<String> {
    let path = data_dir.join("token");
    if let Some(t) = given {
        return Ok(t);
    }
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    use rand::Rng;
    let t: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    std::fs::write(&path, &t).with_context(|| format!("writing {}", path.display()))?;
    Ok(t)
}

async fn server(args: ServerArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let args_clients = Clients {
        volume_root: args.data_dir.join("storage").display().to_string(),
        node_grace: args.node_monitor_grace_period,
        simulated_nodes: args.simulated_nodes,
        simulated_capacity: args.simulated_capacity.clone(),
        disable_scheduler: args.disable_scheduler,
        disable_controller_manager: args.disable_controller_manager,
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let store = skiff_apiserver::open_datastore(&args.datastore_endpoint, &args.data_dir)?;
    let agent_cfg = if args.disable_agent {
        None
    } else {
        Some(args.node.agent_config(&args.data_dir)?)
    };
    let token = load_or_make_token(&args.data_dir, args.token)?;
    let mut cfg = skiff_apiserver::Config::new(&args.data_dir);
    cfg.bind_address = args.bind_address;
    cfg.port = args.https_listen_port;
    cfg.token = Some(token);
    cfg.tls_sans = args.tls_san;
    let server = skiff_apiserver::start(cfg, store).await?;
    let kubeconfig_path = args
        .write_kubeconfig
        .unwrap_or_else(|| args.data_dir.join("kubeconfig.yaml"));
    if let Some(dir) = kubeconfig_path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&kubeconfig_path)
            .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
        f.write_all(server.kubeconfig().as_bytes())?;
    }
    start_clients(&server, &args_clients).await?;
    {
        let ip = args.advertise_address.unwrap_or(if args.bind_address.is_unspecified() {
            args.node.node_ip.unwrap_or_else(skiff_agent::node::detect_node_ip)
        } else {
            args.bind_address
        });
        let identity = skiff_apiserver::Identity {
            user: "system:apiserver".into(),
            groups: vec!["system:masters".into()],
        };
        let client = kube::Client::new(server.in_process::<kube::client::Body>(identity), "default");
        tokio::spawn(publish_kubernetes_endpoints(client.clone(), ip, server.addr.port()));
        tokio::spawn(ensure_kube_dns_service(client, args.node.cluster_dns));
    }
    if let Some(mut cfg) = agent_cfg {
        cfg.dns_kubeconfig = Some(server.kubeconfig());
        if rustix::process::geteuid().is_root() {
            let identity = skiff_apiserver::Identity {
                user: format!("system:node:{}", cfg.node_name),
                groups: vec!["system:nodes".into(), "system:masters".into()],
            };
            let client = kube::Client::new(server.in_process::<kube::client::Body>(identity), "default");
            server.register_node(
                &cfg.node_name,
                std::sync::Arc::new(skiff_agent::logs::AgentStreams::new(&cfg)?),
            );
            tokio::spawn(async move {
                if let Err(e) = skiff_agent::node::run(client, cfg).await {
                    tracing::error!(error = %format!("{e:#}"), "node agent stopped");
                }
            });
        } else {
            tracing::error!("the embedded node agent needs root (namespaces, mounts, cgroups); running the control plane only (use --disable-agent to say so)");
        }
    }
    tracing::info!(address = %server.addr, elapsed_ms = started.elapsed().as_millis() as u64, "API server ready");
    println!("Skiff API server listening on https://{}", server.addr);
    println!("Kubeconfig written to {}", kubeconfig_path.display());
    println!("  export KUBECONFIG={}", kubeconfig_path.display());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

/// Keeps the `default/kubernetes` service's Endpoints and EndpointSlice pointing at this API
/// server (upstream's bootstrap controller does the same), so pods reach it at
/// `kubernetes.default` / 10.43.0.1:443; re-applied every minute in case they were changed.
async fn publish_kubernetes_endpoints(client: kube::Client, ip: IpAddr, port: u16) {
    use k8s_openapi::api::core::v1::Endpoints;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, Patch, PatchParams};
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoints = serde_json::json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    let slice = serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    let pp = PatchParams::apply("skiff-apiserver").force();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let e = Api::<Endpoints>::namespaced(client.clone(), "default")
            .patch("kubernetes", &pp, &Patch::Apply(&endpoints))
            .await;
        let s = Api::<EndpointSlice>::namespaced(client.clone(), "default")
            .patch("kubernetes", &pp, &Patch::Apply(&slice))
            .await;
        if let Some(err) = e.err().or(s.err()) {
            tracing::warn!(error = %err, "publishing the kubernetes service's endpoints");
        }
    }
}

/// Creates `kube-system/kube-dns` at the cluster DNS address (once; a user's changes stay), so
/// tools that look for the cluster DNS service find it. Every node answers at that address
/// itself (`skiff.dev/node-local`), so it has no selector and the service proxy leaves it be.
async fn ensure_kube_dns_service(client: kube::Client, ip: IpAddr) {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, PostParams};
    let svc: Service = match serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                       "kubernetes.io/name": "CoreDNS", "skiff.dev/node-local": "true"}},
        "spec": {"clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                      {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}))
    {
        Ok(s) => s,
        Err(e) => return tracing::error!(error = %e, "building the kube-dns service"),
    };
    let api = Api::<Service>::namespaced(client, "kube-system");
    let mut backoff = Duration::from_millis(200);
    loop {
        match api.get_opt("kube-dns").await {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "looking for the kube-dns service; retrying"),
        }
        match api.create(&PostParams::default(), &svc).await {
            Ok(_) => return tracing::info!(%ip, "created the kube-dns service"),
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(kube::Error::Api(s)) if s.code == 422 => {
                return tracing::warn!(%ip, message = %s.message, "cannot create the kube-dns service at the cluster DNS address")
            }
            Err(e) => tracing::debug!(error = %e, "creating the kube-dns service; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// `skiff agent`: this machine joins a server as a node (or `--simulated` nodes do).
async fn agent(args: AgentArgs) -> Result<()> {
    if !args.simulated && !rustix::process::geteuid().is_root() {
        anyhow::bail!("the node agent needs root (namespaces, mounts, cgroups); `skiff agent --simulated` runs simulated nodes without");
    }
    let kubeconfig = match (&args.kubeconfig, &args.server) {
        (_, Some(server)) => {
            use base64::Engine;
            let ca_file = args.ca_file.as_ref().context("--ca-file is required with --server")?;
            let ca = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
            let token = args.token.as_deref().context("--token is required with --server")?;
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: skiff\n  context: {{cluster: skiff, user: agent}}\ncurrent-context: skiff\nusers:\n- name: agent\n  user:\n    token: {token}\n",
                base64::engine::general_purpose::STANDARD.encode(ca)
            )
        }
        (Some(path), None) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        (None, None) => anyhow::bail!("say which server to join: --server, --token and --ca-file, or --kubeconfig"),
    };
    let client = client_from(&kubeconfig).await?;
    // Fail early and clearly when the server cannot be reached or refuses the credentials
    // (`/version` may be open to anyone, so ask for something that needs them).
    kube::Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .context("contacting the server (are the URL, token and CA right?)")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if !args.simulated {
        let mut cfg = args.node.agent_config(&args.data_dir)?;
        cfg.dns_kubeconfig = Some(kubeconfig.clone());
        println!("Skiff agent running node {}", cfg.node_name);
        let streams = std::sync::Arc::new(skiff_agent::logs::AgentStreams::new(&cfg)?);
        tokio::spawn(trim_after_start());
        tokio::spawn(skiff_agent::node::keep_tunnel(
            client.clone(),
            cfg.node_name.clone(),
            streams,
        ));
        return tokio::select! {
            r = skiff_agent::node::run(client, cfg) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        };
    }
    let cfg = skiff_agent::SimulatedNodesConfig {
        count: args.simulated_nodes,
        name_prefix: args.node_name_prefix,
        cpu: args.capacity.cpu,
        memory: args.capacity.memory,
        pods: args.capacity.pods,
        heartbeat: Duration::from_secs(args.heartbeat.max(1)),
    };
    println!("Skiff agent running {} simulated node(s)", cfg.count);
    let nodes = skiff_agent::SimulatedNodes::new(client, cfg);
    tokio::select! {
        r = nodes.run() => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    }
}

/// Once a long-running process is up (its node registered, its caches filled), drops the
/// start-up code from its resident set ([`trim::code_pages`]).
async fn trim_after_start() {
    tokio::time::sleep(Duration::from_secs(20)).await;
    let bytes = trim::code_pages();
    tracing::debug!(bytes, "gave back start-up code pages");
}

/// `skiff dns`, started by the agent: a session of its own (no signal for the agent's process
/// group reaches it), then the watch cache and listeners until killed.
async fn dns(args: DnsArgs) -> Result<()> {
    let _ = rustix::process::setsid();
    let kubeconfig =
        std::fs::read_to_string(&args.kubeconfig).with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let client = client_from(&kubeconfig).await?;
    tracing::info!(listen = ?args.listen, upstreams = ?args.upstream, "cluster DNS server starting");
    tokio::spawn(trim_after_start());
    skiff_dns::run(client, &args.cluster_domain, args.upstream, &args.listen).await
}

/// mimalloc commits whole arenas eagerly by default: every thread that allocates (the blocking
/// pool the agent starts containers from, for one) costs megabytes it never uses. Its own
/// setting turns that off, and is read from the environment at start: when it is not set,
/// the process replaces itself with the same command and the setting (same PID, same
/// arguments). The agent's idle memory fell from 31 to 22 MiB with it (BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
fn lazy_arena_commit() {
    const VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let err = cmd.args(args).env(VAR, "0").exec();
    eprintln!("warning: could not re-execute with {VAR}=0 ({err}); going on with mimalloc's defaults");
}

fn main() -> std::process::ExitCode {
    #[cfg(feature = "mimalloc")]
    lazy_arena_commit();
    // The built-in OCI runtime and the container shim run in processes of their own, before
    // anything else starts: `create` forks the container's init, which must not happen in a
    // multi-threaded process, and their stderr may be a container's.
    let mut raw = std::env::args_os();
    match raw.nth(1).as_deref().and_then(|a| a.to_str()) {
        Some("oci-runtime") => return skiff_builtin_runtime::main(raw),
        Some("shim") => return skiff_runtime::shim::main(raw),
        _ => {}
    }
    init_tracing();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Server(a) => server(a).await,
            Command::Agent(a) => agent(a).await,
            Command::Image(a) => image::run(a).await,
            Command::Dns(a) => dns(a).await,
        }
    });
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
