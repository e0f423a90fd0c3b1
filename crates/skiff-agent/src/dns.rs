//! Runs the node's cluster DNS server (`skiff dns`, crate `skiff-dns`) and keeps it running.
//!
//! The cluster DNS address is put on a dummy interface of the node, so pods (through the
//! bridge), host-network pods and the node itself reach it without any rule. The server runs in
//! a process of its own, in a session of its own, like a container's shim: it keeps answering
//! when the agent or the whole `skiff server` process dies (even by SIGKILL), and a restarted
//! agent adopts it instead of starting another. It is replaced when its command line changed
//! or its binary was replaced on disk.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::AgentConfig;

/// The dummy interface that holds the cluster DNS address (loopback where the kernel has no
/// dummy driver).
pub const INTERFACE: &str = "skiff-dns";

/// What the agent knows of a DNS process it started or adopted.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Record {
    pid: i32,
    /// The process's start time (field 22 of `/proc/<pid>/stat`): a recycled PID is not it.
    start_time: u64,
    args: Vec<String>,
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after the last ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the recorded process still runs the binary that is on disk now.
fn alive(rec: &Record) -> bool {
    if start_time(rec.pid) != Some(rec.start_time) {
        return false;
    }
    match std::fs::read_link(format!("/proc/{}/exe", rec.pid)) {
        Ok(exe) => !exe.to_string_lossy().ends_with(" (deleted)"),
        Err(_) => false,
    }
}

/// The node's resolvers from a resolv.conf text (port 53), for names outside the cluster.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The command line of the node's DNS server.
fn args(cfg: &AgentConfig, kubeconfig: &Path) -> Vec<String> {
    let mut a = vec![
        "dns".to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--cluster-domain".into(),
        cfg.cluster_domain.clone(),
    ];
    for ip in &cfg.cluster_dns {
        a.push("--listen".into());
        a.push(SocketAddr::new(*ip, 53).to_string());
    }
    for up in &cfg.dns_upstreams {
        a.push("--upstream".into());
        a.push(up.to_string());
    }
    a
}

struct Paths {
    kubeconfig: PathBuf,
    record: PathBuf,
    log: PathBuf,
}

fn paths(cfg: &AgentConfig) -> Paths {
    let dir = cfg.data_dir.join("dns");
    Paths {
        kubeconfig: dir.join("kubeconfig"),
        record: cfg.run_dir.join("dns.json"),
        log: dir.join("dns.log"),
    }
}

/// Writes `text` to `path` (mode 0600) unless it is there already; whether it changed.
fn write_private(path: &Path, text: &str) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

fn spawn(cfg: &AgentConfig, p: &Paths, args: &[String]) -> anyhow::Result<(Record, std::process::Child)> {
    use anyhow::Context;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .with_context(|| format!("opening {}", p.log.display()))?;
    let child = std::process::Command::new(&cfg.exe)
        .args(args)
        // As for the shims: mimalloc would commit a whole arena up front.
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {} dns", cfg.exe.display()))?;
    let pid = child.id() as i32;
    // The start time is there as soon as the process exists.
    let start_time = start_time(pid).context("reading the DNS process's start time")?;
    let rec = Record {
        pid,
        start_time,
        args: args.to_vec(),
    };
    write_private(&p.record, &serde_json::to_string(&rec)?)?;
    Ok((rec, child))
}

/// Puts the cluster DNS address(es) on the node and keeps the DNS server running with
/// `kubeconfig` (its credentials) until the agent ends — the server itself stays.
pub async fn keep_running(cfg: std::sync::Arc<AgentConfig>, kubeconfig: String) {
    if cfg.cluster_dns.is_empty() {
        return;
    }
    match skiff_net::ensure_local_addresses(INTERFACE, &cfg.cluster_dns).await {
        Ok(link) => tracing::debug!(interface = %link, "the node holds the cluster DNS address"),
        Err(e) => {
            tracing::error!(error = %e, "cannot give the node the cluster DNS address; pods will not resolve cluster names");
            return;
        }
    }
    let p = paths(&cfg);
    if let Some(dir) = p.kubeconfig.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // New credentials or a new server address: a running server must start over with them.
    let mut stale = match write_private(&p.kubeconfig, &kubeconfig) {
        Ok(changed) => changed,
        Err(e) => {
            tracing::error!(error = %e, "writing the DNS server's kubeconfig");
            return;
        }
    };
    let want = args(&cfg, &p.kubeconfig);
    let mut backoff = Duration::from_secs(1);
    loop {
        let recorded: Option<Record> = std::fs::read(&p.record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let child = match recorded {
            Some(rec) if alive(&rec) && rec.args == want && !stale => {
                tracing::info!(pid = rec.pid, "adopted the running cluster DNS server");
                watch_adopted(&rec).await;
                None
            }
            other => {
                stale = false;
                if let Some(old) = other.filter(|r| start_time(r.pid) == Some(r.start_time)) {
                    tracing::info!(
                        pid = old.pid,
                        "replacing the cluster DNS server (new binary or settings)"
                    );
                    if let Some(pid) = rustix::process::Pid::from_raw(old.pid).filter(|_| old.pid > 1) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                match spawn(&cfg, &p, &want) {
                    Ok((rec, child)) => {
                        tracing::info!(pid = rec.pid, "started the cluster DNS server");
                        Some(child)
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "starting the cluster DNS server");
                        None
                    }
                }
            }
        };
        if let Some(mut child) = child {
            // Our child: reap it when it ends.
            let status = tokio::task::spawn_blocking(move || child.wait()).await;
            tracing::warn!(status = ?status, "the cluster DNS server exited; restarting it");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Returns when an adopted (not our child) DNS process has ended.
async fn watch_adopted(rec: &Record) {
    while alive(rec) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::warn!(pid = rec.pid, "the cluster DNS server is gone; restarting it");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_the_nodes_resolv_conf() {
        let text = "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch corp.example\nnameserver bad\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().expect("addr"),
                "[fe80::1]:53".parse().expect("addr"),
            ]
        );
    }

    #[test]
    fn a_recorded_process_is_alive_only_while_it_runs_the_same_start() {
        let me = std::process::id() as i32;
        let st = start_time(me).expect("own start time");
        assert!(alive(&Record {
            pid: me,
            start_time: st,
            args: vec![]
        }));
        assert!(!alive(&Record {
            pid: me,
            start_time: st + 1,
            args: vec![]
        }));
    }
}
