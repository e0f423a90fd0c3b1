//! Several Skiff nodes on one machine, for tests of many nodes and of faults between them.
//!
//! Inside the test's own namespaces ([`super::node::inside_namespaces`]) the harness builds a
//! small LAN: a bridge `lan0` (192.168.77.1/24, so the test itself — and kubectl — reach every
//! host) and N "hosts", each a network namespace (bound to a file in the cluster's directory,
//! entered with `nsenter`; `/run/netns` is never touched) with loopback up and `eth0`, a veth
//! to `lan0`, at 192.168.77.(10+i). Host 0 runs `skiff server` with its embedded agent
//! (node `node-0`), the others `skiff agent` joined to it (`node-i`), each with its own data
//! and run directories. Nothing leaves the machine.
//!
//! Faults: [`Cluster::kill`] kills a node's process (its pods keep running, as on a machine
//! whose agent crashed), [`Cluster::stop`] stops it with SIGTERM, [`Cluster::restart`] starts
//! it again on the same state, [`Host::exec`] runs a command on a host (`ip`, `nft`, …).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::node::{import_test_image, wait_for};
use super::Kubectl;

/// The API server's port on host 0.
pub const API_PORT: u16 = 6443;

/// The LAN's bridge in the test's namespace.
pub const LAN_BRIDGE: &str = "lan0";

/// Host `i`'s address on the LAN.
pub fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, 10 + u8::try_from(i).expect("fewer than 245 hosts"))
}

/// The address of the `k`-th host on a network of its own (192.168.(80+k).10/24), reached
/// through the test's namespace as a router: not on the LAN's segment.
pub fn far_host_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 80 + u8::try_from(k).expect("fewer than 16 far hosts"), 10)
}

/// One host: a network namespace on the LAN, running one Skiff node.
pub struct Host {
    pub index: usize,
    /// The Node's name (`node-<index>`).
    pub node: String,
    pub ip: Ipv4Addr,
    /// The host's network namespace (a bound nsfs file).
    pub netns: PathBuf,
    /// The node process's `--data-dir` (its agent's state is under `agent/`).
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    process: Option<Child>,
}

impl Host {
    /// A command that runs `program` in this host's network namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns.display())).arg("--").arg(program);
        c
    }

    /// Runs `program args…` on this host and returns what it did.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().expect("nsenter (util-linux)")
    }

    /// Runs `program args…` on this host, requires success and returns its stdout.
    pub fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} on {} failed: {}{}",
            self.node,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The IPv4 routes of the host's main table (`ip -4 route`), one per line.
    pub fn routes(&self) -> Vec<String> {
        self.ok("ip", &["-4", "route", "show", "table", "main"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Whether the node's process is running.
    pub fn running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// Several Skiff nodes on one LAN. Dropping it kills every node process; the namespaces,
/// bridge and mounts go with the test's namespaces.
pub struct Cluster {
    pub hosts: Vec<Host>,
    /// The admin kubeconfig (server `https://192.168.77.10:6443`).
    pub kubeconfig: PathBuf,
    /// The join token.
    pub token: String,
    /// How long from the first process started to every node Ready.
    pub ready_after: Duration,
    dir: tempfile::TempDir,
}

/// Runs `program args…` in the test's own namespace, requiring success.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Builds the LAN and `n` hosts (at least 1), imports the test image on each, starts the
    /// server on host 0 and an agent on every other host, and waits until every node is
    /// Ready. Only inside namespaces the test made.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, 0)
    }

    /// [`Cluster::start`] with `lan` hosts on the LAN (at least 1: the server's) and `far` more
    /// hosts each on a network of its own ([`far_host_ip`]), routed through the test's
    /// namespace: nodes that are not on one segment, as in different racks or sites.
    pub fn start_with(lan: usize, far: usize) -> Cluster {
        let n = lan + far;
        assert!(lan >= 1, "a cluster has a server");
        super::node::bring_up_loopback();
        let dir = tempfile::tempdir().expect("tempdir");
        let ns_dir = dir.path().join("netns");
        std::fs::create_dir_all(&ns_dir).expect("netns dir");
        run("ip", &["link", "add", LAN_BRIDGE, "type", "bridge"]);
        run("ip", &["addr", "add", "192.168.77.1/24", "dev", LAN_BRIDGE]);
        run("ip", &["link", "set", LAN_BRIDGE, "up"]);
        if far > 0 {
            // The test's namespace routes between the LAN and the far hosts' networks.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward in the test's namespace");
        }
        let mut hosts = Vec::new();
        for i in 0..n {
            let far_k = i.checked_sub(lan);
            let netns = ns_dir.join(format!("host-{i}"));
            std::fs::write(&netns, b"").expect("netns file");
            // A persistent namespace bound to the file (in the test's private mount namespace).
            run("unshare", &[&format!("--net={}", netns.display()), "true"]);
            let lan_end = match far_k {
                None => format!("lan-h{i}"),
                Some(k) => format!("far-h{k}"),
            };
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &lan_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    netns.to_str().expect("path"),
                ],
            );
            let ip = match far_k {
                None => {
                    run("ip", &["link", "set", &lan_end, "master", LAN_BRIDGE, "up"]);
                    host_ip(i)
                }
                Some(k) => {
                    let gw = Ipv4Addr::new(192, 168, 80 + u8::try_from(k).expect("far host"), 1);
                    run("ip", &["addr", "add", &format!("{gw}/24"), "dev", &lan_end]);
                    run("ip", &["link", "set", &lan_end, "up"]);
                    far_host_ip(k)
                }
            };
            let host = Host {
                index: i,
                node: format!("node-{i}"),
                ip,
                netns,
                data_dir: dir.path().join(format!("host-{i}")),
                run_dir: dir.path().join(format!("host-{i}/run")),
                process: None,
            };
            host.ok("ip", &["link", "set", "lo", "up"]);
            host.ok("ip", &["addr", "add", &format!("{}/24", host.ip), "dev", "eth0"]);
            host.ok("ip", &["link", "set", "eth0", "up"]);
            match far_k {
                // A far host goes everywhere through its router; LAN hosts reach far networks
                // through the test's namespace on the LAN.
                Some(k) => {
                    host.ok(
                        "ip",
                        &["route", "add", "default", "via", &format!("192.168.{}.1", 80 + k)],
                    );
                }
                None if far > 0 => {
                    host.ok("ip", &["route", "add", "192.168.80.0/20", "via", "192.168.77.1"]);
                }
                None => {}
            }
            import_test_image(&host.data_dir.join("agent"));
            hosts.push(host);
        }
        let started = Instant::now();
        let mut cluster = Cluster {
            hosts,
            kubeconfig: dir.path().join("host-0/kubeconfig.yaml"),
            token: String::new(),
            ready_after: Duration::ZERO,
            dir,
        };
        cluster.launch(0);
        cluster.token = std::fs::read_to_string(cluster.hosts[0].data_dir.join("token"))
            .expect("the server's join token")
            .trim()
            .to_string();
        for i in 1..n {
            cluster.launch(i);
        }
        let k = cluster.kubectl("1.33");
        wait_for(120, "every node Ready", || {
            let out = k.run(&["get", "nodes", "--no-headers"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let ready = text
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                .count();
            (ready == n).then_some(())
        });
        cluster.ready_after = started.elapsed();
        cluster
    }

    /// The flags every node process gets.
    fn node_flags(host: &Host) -> Vec<String> {
        let mut flags: Vec<String> = [
            "--node-name",
            &host.node,
            "--node-ip",
            &host.ip.to_string(),
            "--private-registry",
            "/nonexistent/registries.yaml",
            // Whether image GC would run depends on how full the test machine's disk is.
            "--image-gc-high-threshold",
            "100",
            // Names outside the cluster go nowhere: tests never load the machine's resolvers.
            "--cluster-dns-upstream",
            "127.0.0.1:9",
        ]
        .map(str::to_string)
        .to_vec();
        flags.push("--run-dir".into());
        flags.push(host.run_dir.display().to_string());
        flags.push("--data-dir".into());
        flags.push(host.data_dir.display().to_string());
        flags
    }

    /// Starts host `i`'s node process (the server on host 0, an agent elsewhere).
    fn launch(&mut self, i: usize) {
        let host = &self.hosts[i];
        let mut cmd = host.command(env!("CARGO_BIN_EXE_skiff"));
        if i == 0 {
            cmd.args(["server", "--bind-address", &host.ip.to_string()])
                .args(["--https-listen-port", &API_PORT.to_string()]);
        } else {
            cmd.args(["agent", "--server", &format!("https://{}:{API_PORT}", host_ip(0))])
                .args(["--token", &self.token])
                .arg("--ca-file")
                .arg(self.hosts[0].data_dir.join("tls/ca.crt"));
        }
        cmd.args(Self::node_flags(host));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("node log");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start a skiff node");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let banner = if i == 0 {
            "Skiff API server listening on https://"
        } else {
            "Skiff agent running node "
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut up = false;
        while Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if line.starts_with(banner) {
                up = true;
                break;
            }
        }
        assert!(up, "{} did not start; its log:\n{}", host.node, self.log(i));
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.hosts[i].process = Some(child);
    }

    /// Where host `i`'s node process logs (stderr).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}.log"))
    }

    /// Host `i`'s node log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// kubectl `version` (`1.27` … `1.33`) with the admin kubeconfig; it runs in the test's
    /// namespace and reaches the server over `lan0`.
    pub fn kubectl(&self, version: &str) -> Kubectl {
        Kubectl::at(version, &self.kubeconfig)
    }

    /// A kube-rs client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Kills host `i`'s node process with SIGKILL (its containers keep running, as when an
    /// agent crashes; on host 0 that is the whole control plane).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops host `i`'s node process with SIGTERM and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].process.take() {
            let pid = rustix::process::Pid::from_child(&c);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts host `i`'s node process again on its state (after [`Cluster::kill`] or
    /// [`Cluster::stop`]).
    pub fn restart(&mut self, i: usize) {
        assert!(self.hosts[i].process.is_none(), "node-{i} is still running");
        self.launch(i);
    }

    /// The cluster's directory (hosts' state, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Agents first, the server last.
        for i in (0..self.hosts.len()).rev() {
            self.kill(i);
        }
    }
}
