//! Container probes as the kubelet runs them: exec (in the container, through the OCI runtime),
//! httpGet over HTTP or HTTPS ([`http`]), tcpSocket and gRPC health checks ([`grpc`]), all
//! from the node to the pod's address, with `initialDelaySeconds`, `periodSeconds`,
//! `timeoutSeconds`, `successThreshold` and `failureThreshold`. Failure messages are the
//! kubelet's, so what `kubectl describe` shows matches Kubernetes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_runtime::{bundle, ContainerManager, ContainerStdio};

mod grpc;
mod http;

/// Where one probe of one container attempt stands.
#[derive(Clone, Debug, Default)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
    last: Option<Instant>,
    /// The verdict once a threshold was reached: `Some(true)` passing, `Some(false)` failing.
    pub verdict: Option<bool>,
    /// The last failure's message.
    pub message: String,
}

/// The timing fields with Kubernetes' defaults.
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

impl ProbeState {
    /// Whether the probe should run now, `running_for` after the container started.
    pub fn due(&self, t: &Timing, running_for: Duration) -> bool {
        running_for >= t.initial_delay && self.last.is_none_or(|l| l.elapsed() >= t.period)
    }

    /// Record an outcome; returns the verdict when it changed.
    pub fn record(&mut self, t: &Timing, outcome: Result<(), String>) -> Option<bool> {
        self.last = Some(Instant::now());
        let before = self.verdict;
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= t.success_threshold {
                    self.verdict = Some(true);
                }
            }
            Err(m) => {
                self.successes = 0;
                self.failures += 1;
                self.message = m;
                if self.failures >= t.failure_threshold {
                    self.verdict = Some(false);
                }
            }
        }
        (self.verdict != before).then_some(self.verdict).flatten()
    }
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {p}: must be between 1 and 65535")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a named port of container {}", c.name)),
    }
}

/// A probe's `host` (an address or a name) or, when it names none, the pod's address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    fn of(host: Option<&str>, pod_ip: Option<IpAddr>) -> Result<Self, String> {
        match host.filter(|h| !h.is_empty()) {
            // `[fd00::1]` as a URL writes it.
            Some(h) => Ok(match h.trim_start_matches('[').trim_end_matches(']').parse() {
                Ok(ip) => Host::Ip(ip),
                Err(_) => Host::Name(h.to_string()),
            }),
            None => pod_ip.map(Host::Ip).ok_or_else(|| "the pod has no IP yet".to_string()),
        }
    }

    /// `host:port` as Go's `net.JoinHostPort` writes it (IPv6 in brackets).
    fn join(&self, port: u16) -> String {
        match self {
            Host::Ip(ip) => SocketAddr::new(*ip, port).to_string(),
            Host::Name(n) => format!("{n}:{port}"),
        }
    }

    /// Connects over TCP, resolving a name first (each of its addresses in turn, as Go's
    /// dialer falls back). Errors read like Go's dialer's
    /// (`dial tcp 10.42.0.5:80: connect: connection refused`), as the kubelet reports them.
    async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let addrs: Vec<SocketAddr> = match self {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(n) => tokio::net::lookup_host((n.as_str(), port))
                .await
                .map_err(|e| format!("dial tcp: lookup {n}: {}", go_error(&e)))?
                .collect(),
        };
        let mut last = match self {
            Host::Name(n) => format!("dial tcp: lookup {n}: no such host"),
            Host::Ip(_) => String::new(),
        };
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("dial tcp {addr}: connect: {}", go_error(&e)),
            }
        }
        Err(last)
    }
}

/// An I/O error as Go words it: lower case, without Rust's `(os error N)`.
fn go_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

/// The Kubernetes version probes announce (`User-Agent: kube-probe/1.33`), as the kubelet
/// whose version the node reports.
const KUBE_VERSION: &str = "1.33";

/// Run `probe` once against the container `id` of `c`; `Err` carries the kubelet's reason.
pub async fn run(
    containers: &ContainerManager,
    id: &str,
    c: &Container,
    probe: &Probe,
    pod_ip: Option<IpAddr>,
) -> Result<(), String> {
    let t = timing(probe);
    if let Some(e) = &probe.exec {
        let command = e.command.clone().unwrap_or_default();
        let (containers, id) = (containers.clone(), id.to_string());
        let work = async move {
            let code = tokio::task::spawn_blocking(move || -> Result<i32, String> {
                let dir = containers.dir(&id);
                let spec = bundle::read_config(&dir).map_err(|e| e.to_string())?;
                let process = bundle::exec_process(&spec, command, false).map_err(|e| e.to_string())?;
                containers
                    .runtime()
                    .exec(&id, &process, ContainerStdio::default(), &dir)
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())??;
            if code == 0 {
                Ok(())
            } else {
                Err(format!("command exited with {code}"))
            }
        };
        return match tokio::time::timeout(t.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("probe timed out after {}s", t.timeout.as_secs())),
        };
    }
    if let Some(h) = &probe.http_get {
        return http::probe(h, c, pod_ip, t.timeout).await;
    }
    if let Some(s) = &probe.tcp_socket {
        let host = Host::of(s.host.as_deref(), pod_ip)?;
        let port = port_of(c, &s.port)?;
        return match tokio::time::timeout(t.timeout, host.connect(port)).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(format!("dial tcp {}: i/o timeout", host.join(port))),
        };
    }
    if let Some(g) = &probe.grpc {
        return grpc::probe(g, pod_ip, t.timeout).await;
    }
    Err("the probe names no handler".into())
}

/// Run a lifecycle hook (`postStart`, `preStop`) of container `c`, bounded by `limit`: exec,
/// httpGet and tcpSocket as a probe runs them, `sleep` as a pause.
pub async fn run_hook(
    containers: &ContainerManager,
    id: &str,
    c: &Container,
    hook: &k8s_openapi::api::core::v1::LifecycleHandler,
    pod_ip: Option<IpAddr>,
    limit: Duration,
) -> Result<(), String> {
    if let Some(s) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(limit)).await;
        return Ok(());
    }
    let as_probe = Probe {
        exec: hook.exec.clone(),
        http_get: hook.http_get.clone(),
        tcp_socket: hook.tcp_socket.clone(),
        timeout_seconds: Some(limit.as_secs().clamp(1, i32::MAX as u64) as i32),
        ..Default::default()
    };
    run(containers, id, c, &as_probe, pod_ip).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_decide_the_verdict() {
        let probe = Probe {
            failure_threshold: Some(2),
            success_threshold: Some(2),
            period_seconds: Some(1),
            initial_delay_seconds: Some(5),
            ..Default::default()
        };
        let t = timing(&probe);
        let mut s = ProbeState::default();
        assert!(!s.due(&t, Duration::from_secs(4)), "initial delay");
        assert!(s.due(&t, Duration::from_secs(5)));
        assert_eq!(s.record(&t, Err("no".into())), None);
        assert!(!s.due(&t, Duration::from_secs(6)), "period not over");
        assert_eq!(s.record(&t, Err("no".into())), Some(false));
        assert_eq!(s.message, "no");
        assert_eq!(s.record(&t, Ok(())), None, "one success is not enough");
        assert_eq!(s.record(&t, Ok(())), Some(true));
        let d = timing(&Probe::default());
        assert_eq!(
            (d.period, d.timeout, d.success_threshold, d.failure_threshold),
            (Duration::from_secs(10), Duration::from_secs(1), 1, 3)
        );
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .expect("container");
        assert_eq!(port_of(&c, &IntOrString::String("http".into())), Ok(8080));
        assert!(port_of(&c, &IntOrString::String("nope".into())).is_err());
        assert_eq!(port_of(&c, &IntOrString::Int(81)), Ok(81));
    }
}
