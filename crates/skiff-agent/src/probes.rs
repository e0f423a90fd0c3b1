//! Container probes as the kubelet runs them: exec (in the container, through the OCI runtime),
//! httpGet and tcpSocket (from the node to the pod's address), with `initialDelaySeconds`,
//! `periodSeconds`, `timeoutSeconds`, `successThreshold` and `failureThreshold`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_runtime::{bundle, ContainerManager, ContainerStdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("port {name:?} is not a named port of container {}", c.name)),
    }
}

async fn http_get(addr: SocketAddr, host: &str, path: &str, headers: &[(String, String)]) -> Result<(), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1024];
    let mut got = 0;
    while got < buf.len() {
        let n = s.read(&mut buf[got..]).await.map_err(|e| e.to_string())?;
        if n == 0 || buf[..got + n].contains(&b'\n') {
            got += n;
            break;
        }
        got += n;
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed HTTP response from {addr}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Run `probe` once against the container `id` of `c`; `Err` carries the kubelet-style reason.
pub async fn run(
    containers: &ContainerManager,
    id: &str,
    c: &Container,
    probe: &Probe,
    pod_ip: Option<IpAddr>,
) -> Result<(), String> {
    let t = timing(probe);
    let work = async {
        if let Some(e) = &probe.exec {
            let command = e.command.clone().unwrap_or_default();
            let (containers, id) = (containers.clone(), id.to_string());
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
            return if code == 0 {
                Ok(())
            } else {
                Err(format!("command exited with {code}"))
            };
        }
        if let Some(h) = &probe.http_get {
            if h.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS")) {
                return Err("HTTPS probes are not supported yet".into());
            }
            let ip: IpAddr = match h.host.as_deref().filter(|h| !h.is_empty()) {
                Some(host) => host
                    .parse()
                    .map_err(|_| format!("probe host {host:?} is not an IP address"))?,
                None => pod_ip.ok_or("the pod has no IP yet")?,
            };
            let port = port_of(c, &h.port)?;
            let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect();
            return http_get(SocketAddr::new(ip, port), &format!("{ip}:{port}"), &path, &headers).await;
        }
        if let Some(s) = &probe.tcp_socket {
            let ip: IpAddr = match s.host.as_deref().filter(|h| !h.is_empty()) {
                Some(host) => host
                    .parse()
                    .map_err(|_| format!("probe host {host:?} is not an IP address"))?,
                None => pod_ip.ok_or("the pod has no IP yet")?,
            };
            let addr = SocketAddr::new(ip, port_of(c, &s.port)?);
            return tokio::net::TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}"));
        }
        if probe.grpc.is_some() {
            return Err("gRPC probes are not supported yet".into());
        }
        Err("the probe names no handler".into())
    };
    match tokio::time::timeout(t.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe timed out after {}s", t.timeout.as_secs())),
    }
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
