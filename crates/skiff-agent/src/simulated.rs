//! Simulated nodes: registration, lease heartbeats, and pod lifecycle without containers.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone, Debug)]
pub struct SimulatedNodesConfig {
    pub count: usize,
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// How often the lease is renewed.
    pub heartbeat: Duration,
}

impl Default for SimulatedNodesConfig {
    fn default() -> Self {
        SimulatedNodesConfig {
            count: 1,
            name_prefix: "sim-node-".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: "110".into(),
            heartbeat: Duration::from_secs(10),
        }
    }
}

pub struct SimulatedNodes {
    client: Client,
    cfg: SimulatedNodesConfig,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

const MANAGER: &str = "skiff-simulated-node";

/// What moving a bound pod along needs from it: small, as thousands may wait for their turn.
struct Step {
    name: String,
    ns: String,
    node: String,
    deleting: bool,
    phase: String,
    runs_to_completion: bool,
    /// Name and image of each container.
    containers: Vec<(String, Option<String>)>,
}

impl Step {
    fn of(pod: SimPod) -> Option<Step> {
        let spec = pod.spec;
        Some(Step {
            node: spec.node_name?,
            name: pod.metadata.name.unwrap_or_default(),
            ns: pod.metadata.namespace.unwrap_or_default(),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            phase: pod.status.phase.unwrap_or_default(),
            runs_to_completion: matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure")),
            containers: spec.containers.into_iter().map(|c| (c.name, c.image)).collect(),
        })
    }
}

/// A pod as a simulated node reads it off its watch: what [`Step`] needs, the rest of the
/// object skipped unread (not a whole typed `PodSpec` for every event of every bound pod).
#[derive(Clone, Debug, Deserialize)]
struct SimPod {
    #[serde(deserialize_with = "skiff_client::lean::meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: SimSpec,
    #[serde(default)]
    status: SimStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SimSpec {
    #[serde(default)]
    node_name: Option<String>,
    #[serde(default)]
    restart_policy: Option<String>,
    #[serde(default)]
    containers: Vec<SimContainer>,
}

#[derive(Clone, Debug, Deserialize)]
struct SimContainer {
    name: String,
    #[serde(default)]
    image: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct SimStatus {
    #[serde(default)]
    phase: Option<String>,
}

skiff_client::pod_resource!(SimPod);

use crate::AbortOnDrop;

impl SimulatedNodes {
    pub fn new(client: Client, cfg: SimulatedNodesConfig) -> Self {
        SimulatedNodes { client, cfg }
    }

    fn names(&self) -> Vec<String> {
        (0..self.cfg.count)
            .map(|i| format!("{}{i}", self.cfg.name_prefix))
            .collect()
    }

    fn node_ip(index: usize) -> String {
        // Addresses in TEST-NET-2: documentation-only, never routed; simulated nodes carry no
        // traffic.
        format!("198.51.{}.{}", 100 + index / 250, 1 + index % 250)
    }

    async fn register(&self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let pp = PatchParams::apply(MANAGER).force();
        for (i, name) in self.names().into_iter().enumerate() {
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                    "type": "simulated"}},
                "spec": {"podCIDR": format!("10.42.{}.0/24", i % 256)},
            });
            nodes.patch(&name, &pp, &Patch::Apply(&node)).await?;
            let status = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {
                "capacity": {"cpu": self.cfg.cpu, "memory": self.cfg.memory, "pods": self.cfg.pods},
                "allocatable": {"cpu": self.cfg.cpu, "memory": self.cfg.memory, "pods": self.cfg.pods},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node is ready",
                                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
                "addresses": [{"type": "InternalIP", "address": Self::node_ip(i)}, {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-skiff", "containerRuntimeVersion": "simulated://1", "osImage": "Skiff simulated node",
                             "kernelVersion": "simulated", "operatingSystem": "linux", "architecture": "amd64",
                             "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": ""}
            }});
            nodes.patch_status(&name, &pp, &Patch::Apply(&status)).await?;
        }
        Ok(())
    }

    /// Renew every lease, a bounded number at a time, as kubelets do (a small merge patch of
    /// `renewTime`, not an apply: the lease exists after registration).
    async fn heartbeat(&self) -> anyhow::Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        futures::stream::iter(self.names())
            .for_each_concurrent(16, |name| {
                let leases = leases.clone();
                async move {
                    let renew = json!({"spec": {"renewTime": micro_now()}});
                    let res = match leases.patch(&name, &PatchParams::default(), &Patch::Merge(&renew)).await {
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()}});
                            leases
                                .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&lease))
                                .await
                                .map(|_| ())
                        }
                        r => r.map(|_| ()),
                    };
                    if let Err(e) = res {
                        tracing::warn!(node = name, error = %e, "lease renewal failed");
                    }
                }
            })
            .await;
        Ok(())
    }

    /// Move one pod along: bound and pending → running (or finished); terminating → gone.
    async fn step(client: Client, pod: Step, pod_ip: String) -> anyhow::Result<()> {
        let Step {
            name,
            ns,
            node,
            deleting,
            phase,
            runs_to_completion,
            containers,
        } = pod;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if deleting {
            // The "containers" stop at once; confirm the deletion.
            let _ = pods
                .delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                )
                .await;
            return Ok(());
        }
        if phase != "Pending" && !phase.is_empty() {
            return Ok(());
        }
        let node_index: usize = node.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let ts = now();
        let statuses: Vec<serde_json::Value> = containers
            .iter()
            .map(|(c, image)| {
                let state = if runs_to_completion {
                    json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": ts, "finishedAt": ts, "containerID": format!("simulated://{ns}/{name}/{c}")}})
                } else {
                    json!({"running": {"startedAt": ts}})
                };
                json!({"name": c, "image": image, "imageID": format!("simulated://{}", image.clone().unwrap_or_default()),
                       "containerID": format!("simulated://{ns}/{name}/{c}"), "ready": !runs_to_completion,
                       "started": !runs_to_completion, "restartCount": 0, "state": state})
            })
            .collect();
        let ready = if runs_to_completion { "False" } else { "True" };
        let cond = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": ts});
        let status = json!({"status": {
            "phase": if runs_to_completion { "Succeeded" } else { "Running" },
            "conditions": [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"), cond("Ready", ready), cond("ContainersReady", ready), cond("PodScheduled", "True")],
            "hostIP": Self::node_ip(node_index), "hostIPs": [{"ip": Self::node_ip(node_index)}],
            "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": ts, "containerStatuses": statuses, "qosClass": "BestEffort",
        }});
        // The answer (the whole pod) is not needed: read it as text, never parse it.
        let req = http::Request::patch(format!("/api/v1/namespaces/{ns}/pods/{name}/status"))
            .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
            .body(serde_json::to_vec(&status)?)?;
        client.request_text(req).await?;
        Ok(())
    }

    /// Register the nodes, then heartbeat and drive their pods until the client fails hard.
    pub async fn run(self) -> anyhow::Result<()> {
        self.register().await?;
        self.heartbeat().await?;
        // Heartbeats run on their own so that renewing thousands of leases never holds up pods.
        let beats = SimulatedNodes {
            client: self.client.clone(),
            cfg: self.cfg.clone(),
        };
        let heartbeats = tokio::spawn(async move {
            let mut beat = tokio::time::interval(beats.cfg.heartbeat);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                beat.tick().await;
                let _ = beats.heartbeat().await;
            }
        });
        let _stop_heartbeats = AbortOnDrop(heartbeats);
        // Only bound pods, lean (what a step needs, nothing else parsed).
        let pods: Api<SimPod> = Api::all(self.client.clone());
        let mine: std::collections::HashSet<String> = self.names().into_iter().collect();
        let stream = watcher(pods, watcher::Config::default().fields("spec.nodeName!=")).default_backoff();
        let mut stream = Box::pin(stream);
        let mut ip_seq = BTreeMap::new();
        // Pods move along concurrently, a bounded number at a time. The watch is read on at
        // once whatever the steps wait for: a watcher that stops reading falls behind the
        // server's feed, and its watch ends and starts again from the store's history, which
        // costs the server far more than the queued steps (a few strings each) cost here.
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
        loop {
            tokio::select! {
                ev = stream.next() => {
                    let Some(ev) = ev else { return Ok(()) };
                    let pods: Vec<SimPod> = match ev {
                        Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => vec![p],
                        Ok(_) => continue,
                        Err(e) => {
                            tracing::debug!(error = %e, "pod watch error; retrying");
                            continue;
                        }
                    };
                    for p in pods {
                        let on_mine = p.spec.node_name.as_ref().is_some_and(|n| mine.contains(n));
                        if on_mine {
                            let node = p.spec.node_name.clone().unwrap_or_default();
                            let node_index: usize = node.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                            let seq = ip_seq.entry(node).or_insert(1u32);
                            *seq += 1;
                            let pod_ip = format!("10.42.{}.{}", node_index % 256, 1 + (*seq % 250));
                            let Some(step) = Step::of(p) else { continue };
                            let limit = limit.clone();
                            let client = self.client.clone();
                            tokio::spawn(async move {
                                let _permit = limit.acquire_owned().await;
                                let name = step.name.clone();
                                if let Err(e) = Self::step(client, step, pod_ip).await {
                                    tracing::debug!(pod = %name, error = %e, "simulated pod step failed");
                                }
                            });
                        }
                    }
                }
            }
        }
    }
}
