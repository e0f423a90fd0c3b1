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
        .env("SKIFF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
