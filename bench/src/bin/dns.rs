//! Cluster DNS throughput and latency (the services/DNS issue's benchmark): Skiff's DNS server
//! (`skiff-dns`, the code `skiff dns` runs) against dnsmasq serving the same names, in the same
//! run, on loopback.
//!
//! - Names: `--services` (default 1,000) services `svc-N.bench.svc.cluster.local`, each with a
//!   ClusterIP; queries ask A records of names picked at random.
//! - Each server gets one thread: Skiff's on a current-thread Tokio runtime, dnsmasq is
//!   single-threaded. The load generator runs in this process on its own thread:
//!   `--concurrency` (default 16) clients, each with its own UDP socket, one query in flight.
//! - Rounds alternate (skiff, dnsmasq, …), `--seconds` each (default 3), `--rounds` (default 5);
//!   reported: median queries/s and median p50/p99 latency per server.
//!
//! - The clients run in a pod's network namespace on Skiff's bridge (as root, in namespaces the
//!   benchmark makes), the servers answer at 10.43.0.10 and 10.43.0.11 on the node, as pods
//!   reach the cluster DNS; `--loopback` queries both on 127.0.0.1 instead, without root.
//!
//! `dns [--services 1000] [--rounds 5] [--seconds 3] [--concurrency 16] [--loopback]` (installs
//! dnsmasq with apt when missing and root).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_dns::proto::op::{Message, Query};
use skiff_dns::proto::rr::{Name, RecordType};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ip_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 43, (i / 250) as u8 + 1, (i % 250) as u8 + 1)
}

fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        let p = u.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn start_skiff(services: usize, addr: SocketAddr) -> Result<SocketAddr> {
    let svcs: Vec<k8s_openapi::api::core::v1::Service> = (0..services)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
                "spec": {"clusterIP": ip_of(i).to_string(), "ports": [{"name": "http", "port": 80}]}}))
        })
        .collect::<Result<_, _>>()?;
    let zone = skiff_dns::Zone::build("cluster.local", &svcs, []);
    let shared = skiff_dns::Shared::new("cluster.local");
    shared.publish(zone);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            if let Err(e) = skiff_dns::serve(shared, Vec::new(), &[addr]).await {
                eprintln!("skiff dns: {e:#}");
            }
        });
    });
    Ok(addr)
}

struct Dnsmasq(std::process::Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dnsmasq(services: usize, dir: &std::path::Path, addr: SocketAddr) -> Result<(Dnsmasq, SocketAddr)> {
    if Command::new("dnsmasq").arg("--version").output().is_err() {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "dnsmasq-base"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            bail!("dnsmasq is needed: apt-get install dnsmasq-base");
        }
    }
    let hosts = dir.join("hosts");
    let text: String = (0..services)
        .map(|i| format!("{} svc-{i}.bench.svc.cluster.local\n", ip_of(i)))
        .collect();
    std::fs::write(&hosts, text)?;
    let port = addr.port();
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={}", addr.ip()),
            "--local-ttl=5",
            "--user=root",
            "--pid-file",
            &format!("--port={port}"),
            &format!("--addn-hosts={}", hosts.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    Ok((Dnsmasq(child), addr))
}

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), RecordType::A));
    m.to_vec().expect("encode")
}

/// One round's result: queries/s, p50, p99, errors.
type Round = (f64, Duration, Duration, usize);

/// One round against `addr`.
fn round(addr: SocketAddr, services: usize, seconds: u64, concurrency: usize) -> Round {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for c in 0..concurrency {
            tasks.push(tokio::spawn(async move {
                let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("bind");
                sock.connect(addr).await.expect("connect");
                let mut lat = Vec::new();
                let mut errors = 0usize;
                let mut buf = [0u8; 512];
                let mut seed = (c as u64 + 1) * 0x9E37_79B9_7F4A_7C15;
                let mut id: u16 = 0;
                while Instant::now() < deadline {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let name = format!("svc-{}.bench.svc.cluster.local.", seed as usize % services);
                    id = id.wrapping_add(1);
                    let q = query(&name, id);
                    let t = Instant::now();
                    if sock.send(&q).await.is_err() {
                        errors += 1;
                        continue;
                    }
                    match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                        Ok(Ok(n)) if n > 12 && buf[..2] == q[..2] && buf[3] & 0x0f == 0 && buf[7] >= 1 => {
                            lat.push(t.elapsed())
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.expect("client");
            all.extend(l);
            errors += e;
        }
        all.sort();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        (all.len() as f64 / seconds as f64, pct(0.50), pct(0.99), errors)
    })
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let services = arg("--services", 1000);
    let rounds = arg("--rounds", 5);
    let seconds = arg("--seconds", 3) as u64;
    let concurrency = arg("--concurrency", 16);
    let loopback = std::env::args().any(|a| a == "--loopback");
    if !loopback {
        skiff_bench::enter_node_namespaces(
            "dns",
            "makes a pod network (use --loopback to query on loopback without root)",
        )?;
    }
    let dir = tempfile::tempdir()?;
    // From a pod (default): the servers answer at service addresses on the node, the clients
    // run in a pod's network namespace behind the node's bridge, as pods reach the cluster DNS.
    let rt = tokio::runtime::Runtime::new()?;
    let mut _network = None;
    let (skiff_addr, dnsmasq_addr, pod) = if loopback {
        let a = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let b = SocketAddr::from(([127, 0, 0, 1], free_port()));
        (a, b, None)
    } else {
        let (net, pod) = rt.block_on(async {
            let up = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
            if !up.success() {
                bail!("bringing up loopback failed");
            }
            let cfg = skiff_net::NodeNetworkConfig::new(
                "10.42.0.0/24".parse()?,
                &dir.path().join("data"),
                &dir.path().join("run"),
            );
            let net = skiff_net::NodeNetwork::start(cfg).await?;
            let pod = net.setup_pod("dns-client").await?;
            let ips = [Ipv4Addr::new(10, 43, 0, 10).into(), Ipv4Addr::new(10, 43, 0, 11).into()];
            skiff_net::ensure_local_addresses("skiff-dns", &ips).await?;
            anyhow::Ok((net, pod))
        })?;
        _network = Some(net);
        (
            SocketAddr::from(([10, 43, 0, 10], 53)),
            SocketAddr::from(([10, 43, 0, 11], 53)),
            Some(skiff_net::Netns::open(&pod.netns)?),
        )
    };
    let skiff = start_skiff(services, skiff_addr)?;
    let (_dnsmasq, baseline) = start_dnsmasq(services, dir.path(), dnsmasq_addr)?;
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "{services} services, {concurrency} clients {}, {rounds} rounds of {seconds} s each",
        if pod.is_some() { "in a pod" } else { "on loopback" }
    );
    let mut results: Vec<(&str, Vec<Round>)> = vec![("skiff", Vec::new()), ("dnsmasq", Vec::new())];
    for r in 0..rounds {
        for (name, addr) in [("skiff", skiff), ("dnsmasq", baseline)] {
            let res = match &pod {
                Some(ns) => ns.run(move || round(addr, services, seconds, concurrency))?,
                None => round(addr, services, seconds, concurrency),
            };
            println!(
                "round {r} {name:8} {:>9.0} q/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
                res.0,
                res.1.as_micros(),
                res.2.as_micros(),
                res.3
            );
            results
                .iter_mut()
                .find(|(n, _)| *n == name)
                .expect("server")
                .1
                .push(res);
        }
    }
    let summary: Vec<(f64, u128, u128)> = results
        .iter()
        .map(|(_, v)| {
            (
                median(v.iter().map(|r| r.0).collect()),
                median(v.iter().map(|r| r.1.as_micros()).collect()),
                median(v.iter().map(|r| r.2.as_micros()).collect()),
            )
        })
        .collect();
    for ((name, _), (qps, p50, p99)) in results.iter().zip(&summary) {
        println!("median {name:8} {qps:>9.0} q/s  p50 {p50:>6} µs  p99 {p99:>6} µs");
    }
    println!(
        "skiff/dnsmasq: throughput {:.2}x, p99 {:.2}x",
        summary[0].0 / summary[1].0,
        summary[0].2 as f64 / summary[1].2 as f64
    );
    Ok(())
}
