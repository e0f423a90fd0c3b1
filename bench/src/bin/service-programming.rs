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
//!
//! `service-programming --skiff target/release/skiff [--services 1000] [--samples 100]`

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use skiff_bench::{client, start};
use skiff_runtime::testing;

const INNER: &str = "SKIFF_BENCH_INNER";
/// The endpoint every service gets: a listener on a local address of the node.
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

struct Args {
    skiff: PathBuf,
    services: usize,
    samples: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        skiff: PathBuf::from("target/release/skiff"),
        services: 1000,
        samples: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--skiff" => a.skiff = v.into(),
            "--services" => a.services = v.parse()?,
            "--samples" => a.samples = v.parse()?,
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
    }
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
    let server = start(&a.skiff, &[])?;
    let kc = std::fs::read_to_string(&server.kubeconfig)?;
    let url = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("server URL in the kubeconfig")?
        .to_string();
    let token = std::fs::read_to_string(server.data_dir().join("token"))?;
    let mut agent = Command::new(&a.skiff)
        .args(["agent", "--server", &url, "--token", token.trim(), "--ca-file"])
        .arg(server.data_dir().join("tls/ca.crt"))
        .arg("--data-dir")
        .arg(work.path().join("agent-data"))
        .arg("--run-dir")
        .arg(work.path().join("run"))
        .args(["--node-name", "bench-node", "--node-ip", "127.0.0.1"])
        .args([
            "--private-registry",
            "/nonexistent",
            "--cluster-dns-upstream",
            "127.0.0.1:1",
        ])
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the agent")?;
    let client = client(&server).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let t = Instant::now();
    loop {
        let ready = nodes.get_opt("bench-node").await?.is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the node did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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
    println!("all {} programmed {programmed:?} after the first create", vips.len());

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for s in 0..a.samples {
        let (name, ip) = &vips[(s * 7) % vips.len()];
        let vip = SocketAddr::from((*ip, 80));
        let body = slice(name)?;
        let t0 = Instant::now();
        slices.create(&PostParams::default(), &body).await?;
        add.push(until(vip, Vip::Answers, t0, Duration::from_secs(10))?);
        let t0 = Instant::now();
        slices
            .delete(&format!("{name}-bench"), &DeleteParams::default())
            .await?;
        remove.push(until(vip, Vip::Refuses, t0, Duration::from_secs(10))?);
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
    for v in [&mut add, &mut remove, &mut floor] {
        v.sort();
    }
    println!("{} samples with {} services:", a.samples, vips.len());
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
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    if std::env::var_os(INNER).is_none() {
        if !testing::is_root() {
            bail!("service-programming needs root: it makes namespaces and nftables rules");
        }
        let exe = std::env::current_exe()?;
        let status = testing::in_node_namespaces(&exe)
            .args(std::env::args().skip(1))
            .env(INNER, "1")
            .status()
            .context("unshare (util-linux)")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(inner(a))
}
