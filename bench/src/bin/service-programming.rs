//! Network programming latency (the services/DNS issue's benchmark): from an endpoint change
//! written to the API server to the node's service rules carrying traffic accordingly, with
//! `--services` (default 1,000) services programmed. Needs root: it runs itself again inside
//! fresh network, mount and PID namespaces (`unshare`), which play the node.
//!
//! - `skiff server --disable-agent` and a joined `skiff agent` (its service proxy programs
//!   nftables in the namespace), as in production;
//! - 1,000 services without a selector; each starts without endpoints (its VIP refuses);
//! - per sample: an EndpointSlice giving service i one ready endpoint (a listener on a local
//!   address) is created, and the VIP is probed with TCP connects until one succeeds; then the
//!   slice is deleted and the VIP probed until it refuses again. Latency: from sending the
//!   API request to the first probe that sees the change;
//! - baseline in the same run: one `nft` transaction adding and one deleting a set element in
//!   the same table (the floor of programming the kernel the way the proxy does).
//! - with `--nodes N`, N-1 more agents each in a network namespace of its own on a bridge
//!   (192.168.77.0/24; the server on 192.168.77.1), every node with the backend address; each
//!   sample then waits until the change is seen on every node and reports the slowest node
//!   ("in effect on every node"), and each node's own.
//!
//! `service-programming --skiff target/release/skiff [--services 1000] [--samples 100] [--nodes 1]`

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use skiff_bench::{client, start};

/// The endpoint every service gets: a listener on a local address of the node.
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

struct Args {
    skiff: PathBuf,
    services: usize,
    samples: usize,
    nodes: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        skiff: PathBuf::from("target/release/skiff"),
        services: 1000,
        samples: 100,
        nodes: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--skiff" => a.skiff = v.into(),
            "--services" => a.services = v.parse()?,
            "--samples" => a.samples = v.parse()?,
            "--nodes" => a.nodes = v.parse::<usize>()?.max(1),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[derive(PartialEq, Clone, Copy, Debug)]
enum Vip {
    Answers,
    Refuses,
    Silent,
}

fn probe(vip: SocketAddr) -> Vip {
    match TcpStream::connect_timeout(&vip, Duration::from_millis(20)) {
        Ok(_) => Vip::Answers,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Vip::Refuses,
        Err(_) => Vip::Silent,
    }
}

/// Probes `vip` until it is in state `want`; the time since `since`.
fn until(vip: SocketAddr, want: Vip, since: Instant, limit: Duration) -> Result<Duration> {
    loop {
        if probe(vip) == want {
            return Ok(since.elapsed());
        }
        if since.elapsed() > limit {
            bail!("{vip} not {want:?} after {limit:?}");
        }
        // Room for the agents on a small machine.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A node other than the first: its network namespace and its agent.
struct Peer {
    ns: skiff_net::Netns,
    agent: std::process::Child,
}

/// [`until`] on every node at once (the first in this namespace, the others in theirs): each
/// node's time.
fn until_everywhere(peers: &[Peer], vip: SocketAddr, want: Vip, since: Instant) -> Result<Vec<Duration>> {
    let limit = Duration::from_secs(10);
    let mut waits = vec![std::thread::spawn(move || until(vip, want, since, limit))];
    for p in peers {
        let ns = p.ns.clone();
        waits.push(std::thread::spawn(move || {
            ns.run(move || until(vip, want, since, limit))
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
        }));
    }
    waits
        .into_iter()
        .map(|w| w.join().map_err(|_| anyhow::anyhow!("a probe panicked"))?)
        .collect()
}

fn run_in(ns: Option<&skiff_net::Netns>, args: &[&str]) -> Result<()> {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.path().display())).arg("--");
            c.arg(args[0]);
            c
        }
        None => Command::new(args[0]),
    };
    if !cmd.args(&args[1..]).status()?.success() {
        bail!("{args:?} failed");
    }
    Ok(())
}

fn nft(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn()?;
    child.stdin.take().context("stdin")?.write_all(script.as_bytes())?;
    if !child.wait()?.success() {
        bail!("nft refused {script:?}");
    }
    Ok(())
}

fn slice(name: &str) -> Result<EndpointSlice> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{name}-bench"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [BACKEND.to_string()], "conditions": {"ready": true}}]
    }))?)
}

async fn inner(a: Args) -> Result<()> {
    for cmd in [
        vec!["ip", "link", "set", "lo", "up"],
        vec!["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"],
    ] {
        if !Command::new(cmd[0]).args(&cmd[1..]).status()?.success() {
            bail!("{cmd:?} failed");
        }
    }
    let listener = TcpListener::bind((BACKEND, 8080))?;
    std::thread::spawn(move || for _ in listener.incoming() {});

    let work = tempfile::tempdir()?;
    let multi = a.nodes > 1;
    if multi {
        run_in(None, &["ip", "link", "add", "lan0", "type", "bridge"])?;
        run_in(None, &["ip", "addr", "add", "192.168.77.1/24", "dev", "lan0"])?;
        run_in(None, &["ip", "link", "set", "lan0", "up"])?;
    }
    let server = if multi {
        skiff_bench::start_on(&a.skiff, "192.168.77.1", &[])?
    } else {
        start(&a.skiff, &[])?
    };
    let ip = if multi { "192.168.77.1" } else { "127.0.0.1" };
    let mut agent = skiff_bench::agent_command(&a.skiff, &server, work.path(), "bench-node", ip, None)?
        .args(["--cluster-dns-upstream", "127.0.0.1:1"])
        .spawn()
        .context("starting the agent")?;
    // More nodes: a namespace each on the bridge, the backend address, a joined agent.
    let mut peers: Vec<Peer> = Vec::new();
    for i in 1..a.nodes {
        let ns = skiff_net::Netns::create(&work.path().join("netns"), &format!("node-{i}"))?;
        let path = ns.path().display().to_string();
        let ip = format!("192.168.77.{}", 10 + i);
        let lan_end = format!("lan-n{i}");
        run_in(
            None,
            &[
                "ip", "link", "add", &lan_end, "type", "veth", "peer", "name", "eth0", "netns", &path,
            ],
        )?;
        run_in(None, &["ip", "link", "set", &lan_end, "master", "lan0", "up"])?;
        let addr = format!("{ip}/24");
        for args in [
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "addr", "add", addr.as_str(), "dev", "eth0"],
            vec!["ip", "link", "set", "eth0", "up"],
            vec!["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"],
        ] {
            run_in(Some(&ns), &args)?;
        }
        let l = ns.run(|| TcpListener::bind((BACKEND, 8080)))??;
        std::thread::spawn(move || for _ in l.incoming() {});
        let agent = skiff_bench::agent_command(
            &a.skiff,
            &server,
            work.path(),
            &format!("bench-node-{i}"),
            &ip,
            Some(ns.path()),
        )?
        .args(["--cluster-dns-upstream", "127.0.0.1:1"])
        .spawn()
        .context("starting an agent")?;
        peers.push(Peer { ns, agent });
    }
    let client = client(&server).await?;
    skiff_bench::wait_nodes_ready(&client, a.nodes, Duration::from_millis(100), Duration::from_secs(60)).await?;

    // The services, 16 creates at a time.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let t = Instant::now();
    let vips: Vec<(String, Ipv4Addr)> = futures::stream::iter(0..a.services)
        .map(|i| {
            let services = services.clone();
            async move {
                let name = format!("svc-{i}");
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?;
                let made = services.create(&PostParams::default(), &svc).await?;
                let ip: Ipv4Addr = made.spec.and_then(|s| s.cluster_ip).context("a ClusterIP")?.parse()?;
                anyhow::Ok((name, ip))
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    println!("{} services created in {:?}", vips.len(), t.elapsed());
    // Every one programmed (refusing: no endpoints yet).
    let last = SocketAddr::from((vips.last().context("services")?.1, 80));
    let programmed = until(last, Vip::Refuses, t, Duration::from_secs(120))?;
    for p in &peers {
        let ns = p.ns.clone();
        ns.run(move || until(last, Vip::Refuses, t, Duration::from_secs(120)))??;
    }
    println!(
        "all {} programmed {programmed:?} after the first create ({} node(s))",
        vips.len(),
        a.nodes
    );

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    // Per node, both directions: each node's own times.
    let mut per_node: Vec<Vec<Duration>> = vec![Vec::new(); a.nodes];
    for s in 0..a.samples {
        let (name, ip) = &vips[(s * 7) % vips.len()];
        let vip = SocketAddr::from((*ip, 80));
        let body = slice(name)?;
        let t0 = Instant::now();
        slices.create(&PostParams::default(), &body).await?;
        let seen = until_everywhere(&peers, vip, Vip::Answers, t0)?;
        add.push(seen.iter().copied().max().unwrap_or_default());
        for (n, d) in seen.into_iter().enumerate() {
            per_node[n].push(d);
        }
        let t0 = Instant::now();
        slices
            .delete(&format!("{name}-bench"), &DeleteParams::default())
            .await?;
        let seen = until_everywhere(&peers, vip, Vip::Refuses, t0)?;
        remove.push(seen.iter().copied().max().unwrap_or_default());
        for (n, d) in seen.into_iter().enumerate() {
            per_node[n].push(d);
        }
    }
    // Baseline: the kernel side alone, one nft transaction per change.
    let mut floor = Vec::new();
    for i in 0..a.samples {
        let elem = format!("{{ 10.43.255.{} . tcp . 80 }}", i % 250 + 1);
        let t0 = Instant::now();
        nft(&format!("add element ip skiff-services no-endpoints {elem}\n"))?;
        floor.push(t0.elapsed());
        nft(&format!("delete element ip skiff-services no-endpoints {elem}\n"))?;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    for p in &mut peers {
        let _ = p.agent.kill();
        let _ = p.agent.wait();
    }
    for v in [&mut add, &mut remove, &mut floor] {
        v.sort();
    }
    println!(
        "{} samples with {} services on {} node(s) (the slowest node per change):",
        a.samples,
        vips.len(),
        a.nodes
    );
    for (what, v) in [
        ("endpoint added -> VIP answers", &add),
        ("endpoint removed -> VIP refuses", &remove),
        ("baseline: one nft transaction", &floor),
    ] {
        println!(
            "  {what:34} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            percentile(v, 0.5).as_secs_f64() * 1e3,
            percentile(v, 0.99).as_secs_f64() * 1e3,
            v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    if a.nodes > 1 {
        for (n, v) in per_node.iter_mut().enumerate() {
            v.sort();
            println!(
                "  node {n}, both directions:              p50 {:>7.1} ms  p99 {:>7.1} ms",
                percentile(v, 0.5).as_secs_f64() * 1e3,
                percentile(v, 0.99).as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    skiff_bench::enter_node_namespaces("service-programming", "makes namespaces and nftables rules")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(inner(a))
}
