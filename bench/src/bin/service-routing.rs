//! Service routing overhead (the services/DNS issue's benchmark): HTTP requests/s and latency
//! from a pod to server pods through a ClusterIP, against the same requests to the pods' IPs
//! directly, in the same run. Needs root: it runs itself again inside fresh network, mount and
//! PID namespaces (`unshare`), which play the node.
//!
//! - The node's real data plane from `skiff-net`: the bridge (`NodeNetwork::start`), a client
//!   pod and `--endpoints` (default 2) server pods (`setup_pod`: network namespaces on the
//!   bridge), the service CIDR routed through the bridge, and the service rules
//!   (`ServiceTable`: nftables, as the agent's service proxy programs them) with one ClusterIP
//!   service whose ready endpoints are the server pods. Both targets cross the same node
//!   netfilter hooks (conntrack, the services map lookup); only the ClusterIP is DNATed.
//! - One server thread (a current-thread Tokio runtime) listening in every server pod: a small
//!   HTTP/1.1 server answering a fixed 13-byte body, keep-alive unless the request says
//!   `Connection: close`.
//! - One load-generator thread (a current-thread Tokio runtime) inside the client pod:
//!   `--connections` (default 8) clients with one request in flight each. Two modes:
//!   keep-alive (each client holds one connection for the whole round) and a new TCP
//!   connection per request (`Connection: close`; the server closes first, so TIME_WAIT stays
//!   on its side), the worst case for NAT: every request is a new conntrack entry and a DNAT.
//!   Direct: the clients spread over the pod IPs (round-robin); ClusterIP: the rules pick.
//! - Rounds alternate (direct, ClusterIP, direct, …), `--seconds` each (default 3), `--rounds`
//!   (default 5); reported: median requests/s and median p50/p99 latency per target and the
//!   ratio ClusterIP/direct.
//! - Then the same again with `--services` (default 1,000) other services in the table, to
//!   show the lookup does not grow with the table (0 skips that phase).
//! - With two or more CPUs the server thread is pinned to CPU 0 and the generator to CPU 1
//!   (`--pin false` leaves them to the scheduler, which sometimes puts both on one core: the
//!   rounds then fall into two modes, ~30% apart).
//!
//! `service-routing [--rounds 5] [--seconds 3] [--connections 8] [--endpoints 2] [--services 1000] [--pin true]`

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_net::nat::Protocol;
use skiff_net::services::{ServicePort, ServiceTable};
use skiff_net::{Netns, NodeNetwork, NodeNetworkConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POD_CIDR: &str = "10.42.0.0/24";
const SERVICE_CIDR: &str = "10.43.0.0/16";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 43, 0, 10);
const VIP_PORT: u16 = 80;
/// The port the clients reach the pods on directly.
const POD_PORT: u16 = 8080;
/// The port the service's endpoints are (its `targetPort`): a different port of the same
/// server, so the ClusterIP's connections (DNATed, source kept) never share a 4-tuple and a
/// conntrack entry with the direct ones. With one port, a client port reused for the other
/// target within conntrack's TIME_WAIT (120 s) matches the other connection's entry (as its
/// reply direction) and the connection stalls until its SYN is retried: the rounds would
/// measure that collision (throughput fell 3-10x), not the path.
const TARGET_PORT: u16 = 8081;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: web\r\nUser-Agent: skiff-bench\r\n\r\n";
const REQUEST_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: web\r\nUser-Agent: skiff-bench\r\nConnection: close\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world\n";
const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, world\n";

struct Args {
    rounds: usize,
    seconds: u64,
    connections: usize,
    endpoints: usize,
    services: usize,
    /// Pin the server thread to CPU 0 and the generator to CPU 1.
    pin: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 5,
        seconds: 3,
        connections: 8,
        endpoints: 2,
        services: 1000,
        pin: std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => a.rounds = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--connections" => a.connections = v.parse()?,
            "--endpoints" => a.endpoints = v.parse()?,
            "--services" => a.services = v.parse()?,
            "--pin" => a.pin = v.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.rounds == 0 || a.seconds == 0 || a.connections == 0 || !(1..=200).contains(&a.endpoints) {
        bail!("--rounds, --seconds and --connections must be positive, --endpoints 1..=200");
    }
    Ok(a)
}

/// Pins the calling thread to `cpu` (if any): the server and the generator then each keep a
/// core of their own instead of the scheduler sometimes putting them on one.
fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
            eprintln!("pinning to CPU {cpu}: {e}");
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serves one connection: a fixed answer per request, until the client closes or asks to.
async fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(1024);
    loop {
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let close = buf[..end]
                .to_ascii_lowercase()
                .windows(17)
                .any(|w| w == b"connection: close");
            let answer = if close { RESPONSE_CLOSE } else { RESPONSE };
            if s.write_all(answer).await.is_err() {
                return;
            }
            buf.drain(..end + 4);
            if close {
                return;
            }
        }
    }
}

/// The server thread: one current-thread runtime accepting on every listener. Records the
/// source addresses it sees (to show whether the ClusterIP path keeps the client's address).
fn start_server(listeners: Vec<std::net::TcpListener>, peers: Arc<Mutex<BTreeSet<IpAddr>>>, cpu: Option<usize>) {
    std::thread::spawn(move || {
        pin(cpu);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let mut accepting = Vec::new();
            for l in listeners {
                l.set_nonblocking(true).expect("nonblocking listener");
                let l = tokio::net::TcpListener::from_std(l).expect("listener");
                let peers = peers.clone();
                accepting.push(tokio::task::spawn_local(async move {
                    loop {
                        match l.accept().await {
                            Ok((s, from)) => {
                                peers.lock().expect("peers").insert(from.ip());
                                tokio::task::spawn_local(serve(s));
                            }
                            Err(e) => eprintln!("accept: {e}"),
                        }
                    }
                }));
            }
            for a in accepting {
                let _ = a.await;
            }
        });
    });
}

/// Reads one response (headers and a `Content-Length` body) from `s` into `buf`; true if 200.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(head.starts_with("http/1.1 200"));
            }
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    KeepAlive,
    NewConnection,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keep-alive",
            Mode::NewConnection => "connection per request",
        }
    }
}

/// One round's result: requests/s, p50, p99, errors.
#[derive(Clone, Copy)]
struct Round {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// One client of a round: requests one after another to `targets` (picked round-robin per
/// connection) until `deadline`; the latency of each and the errors.
async fn client(mode: Mode, targets: Rc<Vec<SocketAddr>>, first: usize, deadline: Instant) -> (Vec<Duration>, usize) {
    let mut lat = Vec::new();
    let mut errors = 0usize;
    let mut buf = Vec::with_capacity(1024);
    let mut next = first;
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < deadline {
        let t = Instant::now();
        let s = match conn.take() {
            Some(s) => s,
            None => {
                let to = targets[next % targets.len()];
                next += 1;
                match TcpStream::connect(to).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        s
                    }
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                }
            }
        };
        let mut s = s;
        let request = match mode {
            Mode::KeepAlive => REQUEST,
            Mode::NewConnection => REQUEST_CLOSE,
        };
        if s.write_all(request).await.is_err() {
            errors += 1;
            continue;
        }
        match read_response(&mut s, &mut buf).await {
            Ok(true) => lat.push(t.elapsed()),
            _ => {
                errors += 1;
                continue;
            }
        }
        if mode == Mode::NewConnection {
            // The server closes after its answer: wait for that, then close our end (no
            // TIME_WAIT on the client's side, so its ports do not run out).
            let mut rest = [0u8; 64];
            let _ = s.read(&mut rest).await;
        } else {
            conn = Some(s);
        }
    }
    (lat, errors)
}

/// One round from the calling thread (which is in the client pod's namespace).
fn round(mode: Mode, targets: Vec<SocketAddr>, seconds: u64, connections: usize, cpu: Option<usize>) -> Round {
    pin(cpu);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("generator runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let targets = Rc::new(targets);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..connections)
            .map(|c| tokio::task::spawn_local(client(mode, targets.clone(), c, deadline)))
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("client");
            all.extend(l);
            errors += e;
        }
        let elapsed = started.elapsed();
        all.sort();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        Round {
            rps: all.len() as f64 / elapsed.as_secs_f64(),
            p50: pct(0.50),
            p99: pct(0.99),
            errors,
        }
    })
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// The benchmarked service (its ClusterIP to the server pods) and `others` more.
fn services(endpoints: &[(Ipv4Addr, u16)], others: usize) -> Vec<ServicePort> {
    let port = |key: String, ip: Ipv4Addr| ServicePort {
        key,
        cluster_ip: Some(ip),
        protocol: Protocol::Tcp,
        port: VIP_PORT,
        node_port: None,
        endpoints: endpoints.to_vec(),
        affinity_seconds: None,
        external_local: None,
    };
    let mut all = vec![port("bench/web:http/TCP".into(), VIP)];
    all.extend((0..others).map(|i| {
        port(
            format!("bench/svc-{i}:http/TCP"),
            Ipv4Addr::new(10, 43, (i / 250) as u8 + 1, (i % 250) as u8 + 1),
        )
    }));
    all
}

/// Rounds of `mode`, alternating direct and ClusterIP; prints each round and the medians.
fn measure(
    a: &Args,
    client_ns: &Netns,
    mode: Mode,
    direct: &[SocketAddr],
    peers: &Mutex<BTreeSet<IpAddr>>,
) -> Result<()> {
    let vip = vec![SocketAddr::from((VIP, VIP_PORT))];
    let targets = [("direct", direct.to_vec()), ("clusterip", vip)];
    // Warm up both paths (ARP, caches, the server's buffers) before anything is recorded.
    for (_, t) in &targets {
        let (t, c, cpu) = (t.clone(), a.connections, a.pin.then_some(1));
        client_ns.run(move || round(mode, t, 1, c, cpu))?;
    }
    let mut results: Vec<Vec<Round>> = vec![Vec::new(), Vec::new()];
    for r in 0..a.rounds {
        for (i, (name, t)) in targets.iter().enumerate() {
            peers.lock().expect("peers").clear();
            let (t, s, c, cpu) = (t.clone(), a.seconds, a.connections, a.pin.then_some(1));
            let res = client_ns.run(move || round(mode, t, s, c, cpu))?;
            let seen = peers.lock().expect("peers").clone();
            println!(
                "round {r} {name:9} {:>8.0} req/s  p50 {:>5} µs  p99 {:>5} µs  errors {}  server saw {:?}",
                res.rps,
                res.p50.as_micros(),
                res.p99.as_micros(),
                res.errors,
                seen
            );
            results[i].push(res);
        }
    }
    let summary: Vec<(f64, u128, u128)> = results
        .iter()
        .map(|v| {
            (
                median(v.iter().map(|r| r.rps).collect()),
                median(v.iter().map(|r| r.p50.as_micros()).collect()),
                median(v.iter().map(|r| r.p99.as_micros()).collect()),
            )
        })
        .collect();
    for ((name, _), (rps, p50, p99)) in targets.iter().zip(&summary) {
        println!("median {name:9} {rps:>8.0} req/s  p50 {p50:>5} µs  p99 {p99:>5} µs");
    }
    println!(
        "clusterip/direct ({}): throughput {:.3}x, p50 {:.2}x, p99 {:.2}x",
        mode.name(),
        summary[1].0 / summary[0].0,
        summary[1].1 as f64 / summary[0].1 as f64,
        summary[1].2 as f64 / summary[0].2 as f64
    );
    Ok(())
}

fn inner(a: Args) -> Result<()> {
    if !Command::new("ip").args(["link", "set", "lo", "up"]).status()?.success() {
        bail!("ip link set lo up failed");
    }
    let dir = tempfile::tempdir()?;
    let cidr: ipnet::Ipv4Net = POD_CIDR.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut cfg = NodeNetworkConfig::new(cidr, &dir.path().join("data"), &dir.path().join("run"));
    cfg.bridge = "skiff0".into();
    let (_node, client, servers) = rt.block_on(async {
        let node = NodeNetwork::start(cfg).await?;
        let client = node.setup_pod("bench/client").await?;
        let mut servers = Vec::new();
        for i in 0..a.endpoints {
            servers.push(node.setup_pod(&format!("bench/web-{i}")).await?);
        }
        node.route_services(SERVICE_CIDR.parse()?).await?;
        anyhow::Ok((node, client, servers))
    })?;
    let peers = Arc::new(Mutex::new(BTreeSet::new()));
    let mut listeners = Vec::new();
    for s in &servers {
        for port in [POD_PORT, TARGET_PORT] {
            listeners.push(Netns::open(&s.netns)?.run(move || std::net::TcpListener::bind(("0.0.0.0", port)))??);
        }
    }
    start_server(listeners, peers.clone(), a.pin.then_some(0));
    let endpoints: Vec<(Ipv4Addr, u16)> = servers.iter().map(|s| (s.ip, TARGET_PORT)).collect();
    let direct: Vec<SocketAddr> = servers.iter().map(|s| SocketAddr::from((s.ip, POD_PORT))).collect();
    let mut table = ServiceTable::ensure(cidr)?;
    let bridged =
        std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables").is_ok_and(|v| v.trim() == "1");
    let client_ns = Netns::open(&client.netns)?;
    println!(
        "client pod {}, server pods {:?}, ClusterIP {VIP}:{VIP_PORT}; br_netfilter {}; {} connections, {} rounds of {} s; {}",
        client.ip,
        servers.iter().map(|s| s.ip).collect::<Vec<_>>(),
        if bridged { "on" } else { "off" },
        a.connections,
        a.rounds,
        a.seconds,
        if a.pin { "server on CPU 0, generator on CPU 1" } else { "threads not pinned" }
    );
    let mut phases = vec![0];
    if a.services > 0 {
        phases.push(a.services);
    }
    for others in phases {
        let t = Instant::now();
        table.apply(&services(&endpoints, others))?;
        println!(
            "\n== 1 + {others} services in the table (applied in {} ms)",
            t.elapsed().as_millis()
        );
        for mode in [Mode::KeepAlive, Mode::NewConnection] {
            println!("-- {}", mode.name());
            measure(&a, &client_ns, mode, &direct, &peers)?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    skiff_bench::enter_node_namespaces(
        "service-routing",
        "makes namespaces, a bridge, veth pairs and nftables rules",
    )?;
    inner(a)
}
