//! Pod startup latency on a real node, and what the agent costs in memory (the node agent
//! issue's benchmarks). Needs root: it runs itself again inside fresh network, mount and PID
//! namespaces (`unshare`), which play the node, so nothing touches the machine's own network.
//!
//! In one run:
//! - `skiff server --disable-agent` plus a separately joined `skiff agent` (so the agent's
//!   memory is its own process's), the image present on the node (imported, pull policy
//!   Never);
//! - N pods created through the API by 16 concurrent clients; per pod, the time from sending
//!   the create to the agent reporting every container running, observed via watch (the
//!   SIG-Scalability pod startup latency, measured from the client's send time rather than
//!   the second-resolution `creationTimestamp`);
//! - the baseline: `runc run --detach` of the same image's root filesystem, one container at a
//!   time;
//! - the agent's RSS idle, and per running pod: the growth of the agent's proportional set
//!   size plus each shim's, divided by N.
//!
//! `pod-startup --skiff target/release/skiff [--pods 100] [--runc-runs 20] [--rate PODS_PER_S]`
//!
//! With `--rate`, one client creates the pods at that steady rate: SIG-Scalability's pod
//! startup SLO is measured on pods created this way (its "latency pods"), not on a burst;
//! without it, all pods at once measure how the node copes with a burst (queueing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use skiff_bench::{client, proc_status_kib, start};
use skiff_runtime::testing::{self, layer, Compression, ManifestKind};
use skiff_runtime::{ImageStore, Platform};

const IMAGE: &str = "registry.bench/busybox:1";

struct Args {
    skiff: PathBuf,
    pods: usize,
    runc_runs: usize,
    /// Create pods at this many per second (one client, as SIG-Scalability's latency pods);
    /// 0: all at once from 16 clients (a saturation run: it measures queueing).
    rate: f64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        skiff: PathBuf::from("target/release/skiff"),
        pods: 100,
        runc_runs: 20,
        rate: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--skiff" => a.skiff = v.into(),
            "--pods" => a.pods = v.parse()?,
            "--runc-runs" => a.runc_runs = v.parse()?,
            "--rate" => a.rate = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    a.skiff = std::fs::canonicalize(&a.skiff).with_context(|| format!("{} not found", a.skiff.display()))?;
    Ok(a)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Proportional set size of a process in KiB (`/proc/<pid>/smaps_rollup`).
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn image() -> testing::TestImage {
    let base = layer(|l| {
        l.dir("bin", 0o755).busybox("bin/busybox");
        for a in ["sh", "sleep"] {
            l.symlink(&format!("bin/{a}"), "busybox");
        }
        l.dir("etc", 0o755).dir("tmp", 0o1777);
    });
    testing::image(
        ManifestKind::Oci,
        &Platform::host().architecture,
        &[(base, Compression::Gzip)],
    )
}

/// `runc run --detach` of the image's root filesystem, `runs` times; the durations.
fn runc_baseline(
    store: &ImageStore,
    record: &skiff_runtime::ImageRecord,
    dir: &Path,
    runs: usize,
) -> Result<Vec<Duration>> {
    let bundle = dir.join("runc-bundle");
    std::fs::create_dir_all(&bundle)?;
    store.materialize_rootfs(record, &bundle.join("rootfs"))?;
    let ok = Command::new("runc").args(["spec", "--bundle"]).arg(&bundle).status()?;
    if !ok.success() {
        bail!("runc spec failed (apt-get install runc)");
    }
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["sleep", "3600"]);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg)?)?;
    let root = dir.join("runc-root");
    let mut out = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let status = Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["run", "--detach", "--bundle"])
            .arg(&bundle)
            .arg(format!("bench-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("runc run failed");
        }
        out.push(t.elapsed());
        for cmd in [vec!["kill", "-a"], vec!["delete", "--force"]] {
            let mut c = Command::new("runc");
            c.arg("--root").arg(&root).args(&cmd).arg(format!("bench-{i}"));
            if cmd[0] == "kill" {
                c.arg("KILL");
            }
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
    Ok(out)
}

async fn inner(a: Args) -> Result<()> {
    let up = Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
    if !up.success() {
        bail!("bringing up loopback failed (iproute2)");
    }
    let work = tempfile::tempdir()?;
    // skiff_bench::agent_command's data dir for the node.
    let agent_data = work.path().join("agent-data-bench-node");
    // The agent keeps images in <data-dir>/agent.
    let store_dir = agent_data.join("agent");
    std::fs::create_dir_all(&store_dir)?;
    let archive = work.path().join("image.tar");
    testing::write_oci_archive(&archive, &[(IMAGE, &image())]);
    let store = ImageStore::open(&store_dir)?;
    let record = skiff_runtime::import_archive(&store, &archive, &Platform::host())?.remove(0);

    let server = start(&a.skiff, &[])?;
    let mut agent = skiff_bench::agent_command(&a.skiff, &server, work.path(), "bench-node", "127.0.0.1", None)?
        .env(
            "SKIFF_LOG",
            std::env::var("SKIFF_BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .context("starting skiff agent")?;
    let agent_pid = agent.id();
    let agent_started = Instant::now();
    let c = client(&server).await?;
    let t_node = Instant::now();
    skiff_bench::wait_nodes_ready(&c, 1, Duration::from_millis(50), Duration::from_secs(60)).await?;
    println!(
        "agent joined and its node Ready in {:.2} s",
        t_node.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "agent just started: RSS {:.1} MiB (PSS {:.1} MiB)",
        proc_status_kib(agent_pid, "VmRSS:") as f64 / 1024.0,
        pss_kib(agent_pid) as f64 / 1024.0
    );
    // Idle is the steady state: after the agent has dropped its start-up code (20 s after
    // start, crates/skiff/src/trim.rs) and its first image GC run (30 s), the median of ten
    // readings a second apart.
    tokio::time::sleep_until((agent_started + Duration::from_secs(40)).into()).await;
    let mut readings = Vec::new();
    for _ in 0..10 {
        readings.push((proc_status_kib(agent_pid, "VmRSS:"), pss_kib(agent_pid)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    readings.sort();
    let (idle_rss, _) = readings[readings.len() / 2];
    let mut pss: Vec<u64> = readings.iter().map(|r| r.1).collect();
    pss.sort();
    let idle_pss = pss[pss.len() / 2];
    println!(
        "agent idle (40-50 s after start, median): RSS {:.1} MiB (max {:.1}), PSS {:.1} MiB",
        idle_rss as f64 / 1024.0,
        readings.last().map_or(0, |r| r.0) as f64 / 1024.0,
        idle_pss as f64 / 1024.0
    );
    if std::env::var_os("SKIFF_BENCH_SMAPS").is_some() {
        // Where the agent's memory is: the whole rollup, and the largest mappings.
        print!(
            "{}",
            std::fs::read_to_string(format!("/proc/{agent_pid}/smaps_rollup"))?
        );
        let smaps = std::fs::read_to_string(format!("/proc/{agent_pid}/smaps"))?;
        let mut maps: Vec<(u64, String)> = Vec::new();
        let mut name = String::new();
        for l in smaps.lines() {
            if l.split_whitespace().next().is_some_and(|f| f.contains('-')) {
                name = l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
                if name.is_empty() {
                    name = format!("[anon {}]", l.split_whitespace().next().unwrap_or(""));
                }
            } else if let Some(v) = l.strip_prefix("Rss:") {
                maps.push((
                    v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0),
                    name.clone(),
                ));
            }
        }
        maps.sort_by_key(|m| std::cmp::Reverse(m.0));
        for (kib, n) in maps.iter().take(12) {
            println!("  {kib:>7} kB  {n}");
        }
    }

    // Watch first, then create.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let (pods, sent, n) = (pods.clone(), sent.clone(), a.pods);
        tokio::spawn(async move {
            let mut done: HashMap<String, Duration> = HashMap::new();
            let mut stream = Box::pin(pods.watch(&WatchParams::default(), "0").await?);
            while let Some(ev) = stream.next().await {
                if let Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) = ev {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let running = p
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| {
                            !cs.is_empty() && cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                        });
                    if running && !done.contains_key(&name) {
                        if let Some(t) = sent.lock().map_err(|_| anyhow::anyhow!("lock"))?.get(&name) {
                            done.insert(name, t.elapsed());
                        }
                    }
                    if done.len() == n {
                        return Ok::<_, anyhow::Error>(done);
                    }
                }
            }
            bail!("the watch ended after {} of {n} pods", done.len())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t_all = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    let (clients, gap) = if a.rate > 0.0 {
        (1, Some(Duration::from_secs_f64(1.0 / a.rate)))
    } else {
        (16, None)
    };
    for _ in 0..clients {
        let (pods, sent, next, n) = (pods.clone(), sent.clone(), next.clone(), a.pods);
        workers.push(tokio::spawn(async move {
            let start = Instant::now();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                if let Some(gap) = gap {
                    tokio::time::sleep_until((start + gap * i as u32).into()).await;
                }
                let name = format!("p{i}");
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"terminationGracePeriodSeconds": 0, "nodeName": "bench-node",
                             "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "Never",
                                             "command": ["sleep", "3600"]}]}
                }))?;
                sent.lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .insert(name, Instant::now());
                pods.create(&PostParams::default(), &pod).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let done = tokio::time::timeout(Duration::from_secs(300), watch).await???;
    let all = t_all.elapsed();
    let mut lat: Vec<Duration> = done.into_values().collect();
    lat.sort();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let how = if a.rate > 0.0 {
        format!("created at {} pods/s", a.rate)
    } else {
        "created at once by 16 clients".to_string()
    };
    println!(
        "{} pods ({how}; bound to the node at creation, image present): startup latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all running {:.2} s after the first create",
        a.pods,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        all.as_secs_f64()
    );

    // Memory per running pod: the agent's growth plus every shim.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy_pss = pss_kib(agent_pid);
    let busy_rss = proc_status_kib(agent_pid, "VmRSS:");
    let mut shim_pss = 0u64;
    let mut shim_rss = 0u64;
    let mut shims = 0;
    for e in std::fs::read_dir(store_dir.join("containers"))?.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        if let Some(pid) = v["shim_pid"].as_u64() {
            shim_pss += pss_kib(pid as u32);
            shim_rss += proc_status_kib(pid as u32, "VmRSS:");
            shims += 1;
        }
    }
    let per_pod = (busy_pss.saturating_sub(idle_pss) + shim_pss) as f64 / a.pods as f64 / 1024.0;
    println!(
        "with {} pods: agent RSS {:.1} MiB (PSS {:.1} MiB); {shims} shims, PSS {:.1} MiB in all (RSS {:.1} MiB, most of it the shared binary); per pod (agent PSS growth + shim PSS) {:.2} MiB",
        a.pods,
        busy_rss as f64 / 1024.0,
        busy_pss as f64 / 1024.0,
        shim_pss as f64 / 1024.0,
        shim_rss as f64 / 1024.0,
        per_pod
    );

    let mut runc = runc_baseline(&store, &record, work.path(), a.runc_runs)?;
    runc.sort();
    let (r50, r99) = (percentile(&runc, 0.5), percentile(&runc, 0.99));
    println!(
        "baseline: runc run --detach of the same image, {} times one after another: p50 {:.0} ms, p99 {:.0} ms",
        a.runc_runs,
        r50.as_secs_f64() * 1e3,
        r99.as_secs_f64() * 1e3
    );
    println!(
        "ratio of pod startup to bare runc run: p50 {:.1}x, p99 {:.1}x",
        p50.as_secs_f64() / r50.as_secs_f64(),
        p99.as_secs_f64() / r99.as_secs_f64()
    );
    let _ = agent.kill();
    let _ = agent.wait();
    Ok(())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    skiff_bench::enter_node_namespaces(
        "pod-startup",
        "runs containers and makes namespaces, a bridge and mounts",
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(inner(a))
}
