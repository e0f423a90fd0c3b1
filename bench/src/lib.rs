//! What the benchmarks share: a release `skiff server` as its own process on loopback with a
//! fresh data dir, a kube-rs client for it, and the server's memory from /proc.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A running `skiff server`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub kubeconfig: PathBuf,
    /// From spawn to "listening".
    pub startup: Duration,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The server's data dir (`token`, `tls/ca.crt`).
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `skiff server` (without the agent, logging warnings only) with `extra` flags.
pub fn start(skiff: &Path, extra: &[&str]) -> Result<Server> {
    start_on(skiff, "127.0.0.1", extra)
}

/// [`start`] listening on `bind` (an address other nodes reach).
pub fn start_on(skiff: &Path, bind: &str, extra: &[&str]) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    let mut child = Command::new(skiff)
        .args(["server", "--disable-agent", "--bind-address", bind])
        .args(["--https-listen-port", "0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        // `SKIFF_BENCH_SERVER_LOG=<filter>` shows the server's log (on stderr) when studying a run.
        .env(
            "SKIFF_LOG",
            std::env::var("SKIFF_BENCH_SERVER_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(match std::env::var_os("SKIFF_BENCH_SERVER_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        })
        .spawn()
        .context("starting skiff")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut ready = None;
    for line in lines.by_ref() {
        if line?.starts_with("Skiff API server listening on") {
            ready = Some(t0.elapsed());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let startup = ready.context("server never became ready")?;
    Ok(Server {
        child,
        kubeconfig: dir.path().join("kubeconfig.yaml"),
        startup,
        _dir: dir,
    })
}

/// `skiff agent` joining `server` as node `node` at `ip`, with data and run dirs under `dir`
/// (`<dir>/agent-data-<node>`, `<dir>/run-<node>`), no registries.yaml, logging warnings;
/// run in the network namespace at `netns` (through `nsenter`) if one is given. Callers add
/// what differs and spawn it.
pub fn agent_command(
    skiff: &Path,
    server: &Server,
    dir: &Path,
    node: &str,
    ip: &str,
    netns: Option<&Path>,
) -> Result<Command> {
    let kc = std::fs::read_to_string(&server.kubeconfig)?;
    let url = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .context("server URL in the kubeconfig")?
        .to_string();
    let token = std::fs::read_to_string(server.data_dir().join("token"))?;
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("--").arg(skiff);
            c
        }
        None => Command::new(skiff),
    };
    c.args(["agent", "--server", &url, "--token", token.trim(), "--ca-file"])
        .arg(server.data_dir().join("tls/ca.crt"))
        .arg("--data-dir")
        .arg(dir.join(format!("agent-data-{node}")))
        .arg("--run-dir")
        .arg(dir.join(format!("run-{node}")))
        .args([
            "--node-name",
            node,
            "--node-ip",
            ip,
            "--private-registry",
            "/nonexistent",
        ])
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Ok(c)
}

/// Waits until at least `want` Nodes are Ready, polling every `every`; fails after `timeout`.
pub async fn wait_nodes_ready(client: &kube::Client, want: usize, every: Duration, timeout: Duration) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let t = Instant::now();
    loop {
        let ready = nodes
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= want {
            return Ok(());
        }
        if t.elapsed() > timeout {
            anyhow::bail!("only {ready} of {want} nodes Ready after {timeout:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A kube-rs client with the server's admin kubeconfig.
pub async fn client(s: &Server) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A `/proc/<pid>/status` figure in KiB: `VmRSS:` (resident now) or `VmHWM:` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) the process has used, in seconds: `/proc/<pid>/stat` fields 14 and
/// 15, in USER_HZ (100 per second on Linux). Unlike wall time it hardly moves when other work
/// shares the machine.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name (field 2) may hold spaces; fields after it are plain.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

/// For benchmarks that play a node (root): outside, runs this benchmark again inside fresh
/// network, mount and PID namespaces (`unshare`) with the same arguments and exits with its
/// status; inside, returns so the benchmark goes on. `needs` says why root is needed.
pub fn enter_node_namespaces(bench: &str, needs: &str) -> Result<()> {
    const INNER: &str = "SKIFF_BENCH_INNER";
    if std::env::var_os(INNER).is_some() {
        return Ok(());
    }
    if !skiff_runtime::testing::is_root() {
        anyhow::bail!("{bench} needs root: it {needs}");
    }
    let exe = std::env::current_exe()?;
    let status = skiff_runtime::testing::in_node_namespaces(&exe)
        .args(std::env::args().skip(1))
        .env(INNER, "1")
        .status()
        .context("unshare (util-linux)")?;
    std::process::exit(status.code().unwrap_or(1));
}
