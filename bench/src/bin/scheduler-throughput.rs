//! Scheduler throughput at scale: `skiff server --simulated-nodes 5000`, 50,000 pods created
//! as Deployments; how fast the pods are bound (and Running), against a baseline measured in the
//! same run: the API alone creating the same 50,000 pods (no controllers, no scheduler, no
//! nodes) with as many concurrent clients as the ReplicaSet controller uses at most. Also the
//! server's memory with all of it in place.
//!
//! Usage: `scheduler-throughput --skiff target/release/skiff [--nodes 5000] [--pods 50000]
//! [--deployments 50] [--timeline 1]`; `--timeline 1` prints how many pods exist, are bound and
//! are Running every second.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, PostParams, WatchEvent};
use serde::Deserialize;
use skiff_bench::{client, proc_cpu_seconds, proc_status_kib, start};

struct Args {
    skiff: PathBuf,
    nodes: usize,
    pods: usize,
    deployments: usize,
    timeline: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        skiff: PathBuf::from("target/release/skiff"),
        nodes: 5000,
        pods: 50_000,
        deployments: 50,
        timeline: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--skiff" => a.skiff = v.into(),
            "--nodes" => a.nodes = v.parse()?,
            "--pods" => a.pods = v.parse()?,
            "--deployments" => a.deployments = v.parse()?,
            "--timeline" => a.timeline = v != "0",
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

fn template() -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.2.3",
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    })
}

/// Only what the count needs, so the benchmark's own parsing stays cheap.
#[derive(Deserialize, Clone)]
struct MiniPod {
    metadata: MiniMeta,
    #[serde(default)]
    spec: MiniSpec,
    #[serde(default)]
    status: MiniStatus,
}
#[derive(Deserialize, Clone, Default)]
struct MiniMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
}
#[derive(Deserialize)]
struct MiniPodList {
    metadata: MiniListMeta,
    items: Vec<MiniPod>,
}
#[derive(Deserialize)]
struct MiniListMeta {
    #[serde(rename = "resourceVersion")]
    resource_version: String,
}
#[derive(Deserialize, Clone, Default)]
struct MiniSpec {
    #[serde(default, rename = "nodeName")]
    node_name: Option<String>,
}
#[derive(Deserialize, Clone, Default)]
struct MiniStatus {
    #[serde(default)]
    phase: Option<String>,
}

/// The API alone: create `n` pods with `workers` concurrent clients.
async fn api_only(skiff: &std::path::Path, n: usize, workers: usize) -> Result<(Duration, f64)> {
    let server = start(skiff, &["--disable-scheduler", "--disable-controller-manager"])?;
    let c = client(&server).await?;
    // Without the controller manager nobody makes the `default` account pods run as.
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))?;
    Api::<ServiceAccount>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await?;
    let cpu0 = proc_cpu_seconds(server.child.id());
    let api: Api<Pod> = Api::namespaced(c, "default");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (api, next) = (api.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let mut p = template();
                p["metadata"]["name"] = format!("p{i}").into();
                let p: Pod = serde_json::from_value(p)?;
                api.create(&PostParams::default(), &p).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((t0.elapsed(), proc_cpu_seconds(server.child.id()) - cpu0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = parse_args()?;
    let per = a.pods / a.deployments;
    let total = per * a.deployments;

    // Baseline first, on its own server, so the two runs do not share the cores.
    let (base, base_cpu) = api_only(&a.skiff, total, 64).await?;
    println!(
        "baseline: the API alone creates {total} pods (64 clients) in {:.2} s ({:.0} pods/s), server CPU {base_cpu:.1} s ({:.0} us per pod)",
        base.as_secs_f64(),
        total as f64 / base.as_secs_f64(),
        base_cpu * 1e6 / total as f64
    );

    let nodes_flag = a.nodes.to_string();
    let server = start(&a.skiff, &["--simulated-nodes", &nodes_flag])?;
    let pid = server.child.id();
    let c = client(&server).await?;
    let t_reg = Instant::now();
    skiff_bench::wait_nodes_ready(&c, a.nodes, Duration::from_millis(500), Duration::from_secs(600)).await?;
    println!(
        "{} simulated nodes registered and Ready in {:.1} s; server RSS {} MiB",
        a.nodes,
        t_reg.elapsed().as_secs_f64(),
        proc_status_kib(pid, "VmRSS:") / 1024
    );
    // Let the idle server settle (lease renewals are the only traffic).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Count bound and running pods from one watch, started before anything is created.
    // If the server ends the watch (a watcher that falls too far behind gets 410), relist and
    // watch again; pods first seen in a relist count from that moment, so a relist can only make
    // the figures worse, never better.
    let progress: std::sync::Arc<[AtomicUsize; 3]> = Default::default();
    if a.timeline {
        let progress = progress.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let [s, b, r] = &*progress;
                println!(
                    "{:5.1} s: {} created, {} bound, {} Running",
                    t0.elapsed().as_secs_f64(),
                    s.load(Relaxed),
                    b.load(Relaxed),
                    r.load(Relaxed)
                );
            }
        });
    }
    let counter = {
        let c = c.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut seen = HashSet::new();
            let mut bound = HashSet::new();
            let mut running = HashSet::new();
            let (mut all_created, mut first_bound, mut all_bound) = (None, None, None);
            let mut relists = 0u32;
            let mut note = |p: MiniPod| {
                let key = (p.metadata.namespace, p.metadata.name);
                let [s, b, r] = &*progress;
                s.store(seen.len(), Relaxed);
                b.store(bound.len(), Relaxed);
                r.store(running.len(), Relaxed);
                if seen.insert(key.clone()) && seen.len() == total {
                    all_created = Some(t0.elapsed());
                }
                if p.spec.node_name.is_some_and(|n| !n.is_empty()) && bound.insert(key.clone()) {
                    first_bound.get_or_insert(t0.elapsed());
                    if bound.len() == total {
                        all_bound = Some(t0.elapsed());
                    }
                }
                (p.status.phase.as_deref() == Some("Running") && running.insert(key) && running.len() == total)
                    .then(|| (all_created, first_bound, all_bound, t0.elapsed()))
            };
            let mut rv = Api::<Pod>::all(c.clone())
                .list(&ListParams::default().limit(1))
                .await?
                .metadata
                .resource_version
                .unwrap_or_default();
            loop {
                let req = http::Request::get(format!(
                    "/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1800"
                ))
                .body(Vec::new())?;
                let mut events = Box::pin(c.request_events::<MiniPod>(req).await?);
                while let Some(ev) = events.next().await {
                    match ev {
                        Ok(WatchEvent::Added(p)) | Ok(WatchEvent::Modified(p)) => {
                            if let Some(done) = note(p) {
                                return Ok((done, relists));
                            }
                        }
                        Ok(WatchEvent::Error(_)) => break,
                        Ok(_) => {}
                        Err(e) => bail!("watch: {e}"),
                    }
                }
                relists += 1;
                let req = http::Request::get("/api/v1/pods").body(Vec::new())?;
                let list: MiniPodList = c.request(req).await?;
                rv = list.metadata.resource_version;
                for p in list.items {
                    if let Some(done) = note(p) {
                        return Ok((done, relists));
                    }
                }
            }
        })
    };

    let cpu0 = proc_cpu_seconds(pid);
    let t0 = Instant::now();
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "default");
    for d in 0..a.deployments {
        let dep: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("bench-{d}")},
            "spec": {"replicas": per, "selector": {"matchLabels": {"app": "bench", "d": d.to_string()}},
                     "template": {"metadata": {"labels": {"app": "bench", "d": d.to_string()}},
                                  "spec": template()["spec"].clone()}}
        }))?;
        deploys.create(&PostParams::default(), &dep).await?;
    }
    let created = t0.elapsed();
    let ((all_created, first, all_bound, all_running), relists) =
        tokio::time::timeout(Duration::from_secs(1800), counter).await???;
    println!("the benchmark's own watch was ended by the server and relisted {relists} time(s)");
    let all_bound = all_bound.context("never saw every pod bound")?;
    let first = first.unwrap_or_default();
    let cpu = proc_cpu_seconds(pid) - cpu0;
    let hwm = proc_status_kib(pid, "VmHWM:");
    let rss = proc_status_kib(pid, "VmRSS:");
    println!(
        "{} Deployments x {per} replicas created in {:.2} s; first pod bound at {:.2} s",
        a.deployments,
        created.as_secs_f64(),
        first.as_secs_f64()
    );
    println!(
        "all {total} pods created (by the ReplicaSet controller) at {:.2} s",
        all_created.unwrap_or_default().as_secs_f64()
    );
    println!(
        "all {total} pods bound at {:.2} s ({:.0} pods/s end to end); all Running at {:.2} s",
        all_bound.as_secs_f64(),
        total as f64 / all_bound.as_secs_f64(),
        all_running.as_secs_f64()
    );
    println!(
        "server CPU from the first Deployment to all Running: {cpu:.1} s ({:.0} us per pod; {:.2}x the API alone)",
        cpu * 1e6 / total as f64,
        cpu / base_cpu
    );
    println!(
        "ratio to the API alone creating the pods: {:.2}",
        all_bound.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "server memory with {} nodes and {total} pods: RSS {} MiB, peak {} MiB",
        a.nodes,
        rss / 1024,
        hwm / 1024
    );
    // Once the burst is over: queues drained, nothing but lease renewals going on.
    let mut settled = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        settled.push(proc_status_kib(pid, "VmRSS:") / 1024);
    }
    println!("server RSS 10, 20 and 30 s after all pods were Running: {settled:?} MiB");
    Ok(())
}
