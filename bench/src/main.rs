//! `skiff-bench`: the API server benchmarks of BENCHMARKS.md. Starts the release `skiff server`
//! as a separate process on loopback, drives it with kube-rs, and measures each figure next to
//! a baseline taken in the same run on the same machine.
//!
//! Usage: `skiff-bench --skiff target/release/skiff [--pods 10000] [--creates 20000]`

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use skiff_bench::{client, proc_status_kib, start};

struct Args {
    skiff: PathBuf,
    pods: usize,
    creates: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        skiff: PathBuf::from("target/release/skiff"),
        pods: 10_000,
        creates: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--skiff" => a.skiff = v.into(),
            "--pods" => a.pods = v.parse()?,
            "--creates" => a.creates = v.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"bench": "true"}}, "data": {"key": "value-0123456789", "other": "x".repeat(200)}}))
        .expect("configmap")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.2.3", "ports": [{"containerPort": 8080, "name": "http"}],
                 "env": [{"name": "MODE", "value": "bench"}], "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                 "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}}}]}
    }))
    .expect("pod")
}

/// Raw SQLite with the store's durability settings: one autocommit insert per row.
fn sqlite_baseline(rows: usize, value: &[u8]) -> Result<(f64, Duration)> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB);",
    )?;
    let mut lat = Vec::with_capacity(rows);
    let t0 = Instant::now();
    let mut stmt = conn.prepare("INSERT INTO kv (k, v) VALUES (?1, ?2)")?;
    for i in 0..rows {
        let t = Instant::now();
        stmt.execute(rusqlite::params![format!("/registry/configmaps/default/c{i}"), value])?;
        lat.push(t.elapsed());
    }
    let rate = rows as f64 / t0.elapsed().as_secs_f64();
    Ok((rate, percentile(&mut lat, 0.99)))
}

async fn concurrent_creates<F, Fut>(n: usize, workers: usize, f: F) -> Result<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let next = next.clone();
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                f(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(t0.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // Start-up: process start to ready, against the exec of `skiff --version`.
    let mut starts = Vec::new();
    let mut execs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        Command::new(&args.skiff).arg("--version").output()?;
        execs.push(t.elapsed());
        let s = start(&args.skiff, &[])?;
        starts.push(s.startup);
    }
    let start_p50 = percentile(&mut starts, 0.5);
    let exec_p50 = percentile(&mut execs, 0.5);
    rows.push((
        "start to ready (median of 5)".into(),
        ms(start_p50),
        format!("exec `skiff --version`: {}", ms(exec_p50)),
        "≤ 300 ms".into(),
    ));

    let server = start(&args.skiff, &[])?;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proc_status_kib(pid, "VmRSS:");
    let c = client(&server).await?;

    // Single-client create latency.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut lat = Vec::new();
    for i in 0..2000 {
        let t = Instant::now();
        cms.create(&PostParams::default(), &configmap(&format!("lat-{i}")))
            .await?;
        lat.push(t.elapsed());
    }
    let p50 = percentile(&mut lat, 0.5);
    let p99 = percentile(&mut lat, 0.99);
    let value = serde_json::to_vec(&configmap("x"))?;
    let (raw_rate, raw_p99) = sqlite_baseline(args.creates, &value)?;
    rows.push((
        "create latency, 1 client (2,000 ConfigMaps)".into(),
        format!("p50 {} / p99 {}", ms(p50), ms(p99)),
        format!("raw SQLite insert p99: {}", ms(raw_p99)),
        "p99 ≤ 5 ms".into(),
    ));

    // Throughput with 16 clients.
    let c2 = c.clone();
    let took = concurrent_creates(args.creates, 16, move |i| {
        let api: Api<ConfigMap> = Api::namespaced(c2.clone(), "default");
        async move {
            api.create(&PostParams::default(), &configmap(&format!("tp-{i}")))
                .await?;
            Ok(())
        }
    })
    .await?;
    let rate = args.creates as f64 / took.as_secs_f64();
    rows.push((
        format!("create throughput, 16 clients ({} ConfigMaps)", args.creates),
        format!("{rate:.0} objects/s"),
        format!("raw SQLite inserts: {raw_rate:.0}/s (ratio {:.3})", rate / raw_rate),
        "≥ 5,000/s".into(),
    ));

    // 10,000 pods: LIST and memory.
    let c3 = c.clone();
    concurrent_creates(args.pods, 16, move |i| {
        let api: Api<Pod> = Api::namespaced(c3.clone(), "default");
        async move {
            api.create(&PostParams::default(), &pod(&format!("pod-{i}"))).await?;
            Ok(())
        }
    })
    .await?;
    let mut lists = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let req = http::Request::get("/api/v1/namespaces/default/pods")
            .header("Accept", "application/json")
            .body(Vec::new())?;
        let t = Instant::now();
        let body = c.request_text(req).await?;
        lists.push(t.elapsed());
        bytes = body.len();
    }
    let list_p50 = percentile(&mut lists, 0.5);
    // Baseline: decoding the same bytes as JSON in this process.
    let req = http::Request::get("/api/v1/namespaces/default/pods").body(Vec::new())?;
    let body = c.request_text(req).await?;
    let t = Instant::now();
    let parsed: serde_json::Value = serde_json::from_str(&body)?;
    let parse = t.elapsed();
    anyhow::ensure!(
        parsed["items"].as_array().map(Vec::len) == Some(args.pods),
        "LIST returned every pod"
    );
    rows.push((
        format!(
            "LIST {} pods, JSON ({:.1} MB), median of 7",
            args.pods,
            bytes as f64 / 1e6
        ),
        ms(list_p50),
        format!("client-side JSON parse of the same body: {}", ms(parse)),
        "≤ 100 ms".into(),
    ));
    let loaded = proc_status_kib(pid, "VmRSS:");
    rows.push((
        "server RSS idle".into(),
        format!("{:.1} MB", idle as f64 / 1024.0),
        "—".into(),
        "≤ 30 MB".into(),
    ));
    rows.push((
        format!("server RSS with {} pods stored", args.pods),
        format!("{:.1} MB", loaded as f64 / 1024.0),
        format!("the pods as JSON: {:.1} MB", bytes as f64 / 1e6),
        "≤ 150 MB".into(),
    ));

    // Watch delivery to 100 watchers.
    let wc: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    wc.create(&PostParams::default(), &configmap("watched")).await?;
    let rv = wc.get("watched").await?.metadata.resource_version.unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    for _ in 0..100 {
        let mut w = wc
            .watch(&WatchParams::default().fields("metadata.name=watched"), &rv)
            .await?
            .boxed();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = w.next().await {
                if let WatchEvent::Modified(cm) = ev {
                    let seq: usize = cm
                        .data
                        .and_then(|d| d.get("seq").cloned())
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let _ = tx.send((seq, Instant::now()));
                }
            }
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let updates = 100;
    let mut sent = Vec::new();
    let mut acks = Vec::new();
    for seq in 1..=updates {
        let t = Instant::now();
        wc.patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"seq": seq.to_string()}})),
        )
        .await?;
        acks.push(t.elapsed());
        sent.push(t);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delivery = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivery.len() < updates * 100 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            Ok(Some((seq, at))) if seq >= 1 && seq <= updates => delivery.push(at.duration_since(sent[seq - 1])),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let got = delivery.len();
    rows.push((
        format!("watch delivery, 100 watchers × {updates} updates ({got} events)"),
        format!(
            "p50 {} / p99 {}",
            ms(percentile(&mut delivery, 0.5)),
            ms(percentile(&mut delivery, 0.99))
        ),
        format!("the update's own round trip p99: {}", ms(percentile(&mut acks, 0.99))),
        "p99 ≤ 20 ms".into(),
    ));

    println!("| measurement | Skiff | baseline (same run) | target |");
    println!("|---|---|---|---|");
    for (a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    Ok(())
}
