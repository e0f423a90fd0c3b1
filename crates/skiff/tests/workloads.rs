//! Controllers, scheduler and simulated nodes together in a real `skiff server` process:
//! a ReplicaSet's pods are created, scheduled, run, replaced and scaled down; a pod that fits
//! nowhere is reported Unschedulable.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::{client, eventually, SkiffServer};

fn running_on_sim_nodes(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| n.starts_with("sim-node-"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_pods_are_scheduled_run_replaced_and_scaled() {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "2"]);
    let c = client(&server).await;
    let nodes: Api<Node> = Api::all(c.clone());
    let ready = eventually(20, "2 Ready simulated nodes", || async {
        let n = nodes.list(&ListParams::default()).await.ok()?;
        let with_status = n
            .items
            .iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.allocatable.as_ref()).is_some())
            .count();
        (n.items.len() == 2 && with_status == 2).then_some(n)
    })
    .await;
    assert!(ready.items.iter().all(|n| n
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .is_some_and(|a| a.contains_key("cpu"))));

    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.local/web:1", "resources": {"requests": {"cpu": "500m"}}}]}}}
    }))
    .expect("rs");
    rss.create(&PostParams::default(), &rs).await.expect("create rs");
    let list = eventually(20, "3 running pods", || async {
        let l = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (running_on_sim_nodes(&l.items) == 3).then_some(l)
    })
    .await;
    // Spread by least allocation: both nodes get pods.
    let used: std::collections::HashSet<_> = list
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(used.len(), 2, "pods spread over both nodes");
    assert!(list.items.iter().all(|p| p
        .owner_references()
        .iter()
        .any(|o| o.kind == "ReplicaSet" && o.controller == Some(true))));
    eventually(20, "rs status ready 3", || async {
        let s = rss.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(3) && s.observed_generation == Some(1)).then_some(())
    })
    .await;

    // A deleted pod is replaced.
    let victim = list.items[0].metadata.name.clone().expect("name");
    pods.delete(&victim, &DeleteParams::default())
        .await
        .expect("delete pod");
    eventually(20, "replacement", || async {
        let l = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        let names: Vec<_> = l.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
        (running_on_sim_nodes(&l.items) == 3 && !names.contains(&victim)).then_some(())
    })
    .await;

    // Scale down to 1.
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale");
    eventually(20, "one pod left", || async {
        let l = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (l.items.len() == 1 && running_on_sim_nodes(&l.items) == 1).then_some(())
    })
    .await;
    eventually(20, "rs status 1 (generation 2 observed)", || async {
        let s = rss.get("web").await.ok()?.status?;
        (s.replicas == 1 && s.observed_generation == Some(2)).then_some(())
    })
    .await;

    // A pod that fits nowhere: reported, not bound.
    let big: Pod = serde_json::from_value(json!({
        "metadata": {"name": "huge"},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "64"}}}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &big).await.expect("create");
    let cond = eventually(20, "PodScheduled=False", || async {
        let p = pods.get("huge").await.ok()?;
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        cond.message.as_deref(),
        Some("0/2 nodes are available: 2 Insufficient cpu.")
    );
    assert!(pods
        .get("huge")
        .await
        .expect("get")
        .spec
        .and_then(|s| s.node_name)
        .is_none());
}

/// The deployment verbs of the controllers issue with real kubectl: create, set image,
/// rollout status/history/undo, scale.
fn deployment_rollout(version: &str) {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "3"]);
    let k = support::Kubectl::new(version, &server);
    k.ok(&[
        "create",
        "deployment",
        "hello",
        "--image=registry.local/hello:1",
        "--replicas=3",
    ]);
    assert!(k
        .ok(&["rollout", "status", "deployment/hello", "--timeout=60s"])
        .contains("successfully rolled out"));
    k.ok(&["set", "image", "deployment/hello", "hello=registry.local/hello:2"]);
    assert!(k
        .ok(&["rollout", "status", "deployment/hello", "--timeout=60s"])
        .contains("successfully rolled out"));
    let hist = k.ok(&["rollout", "history", "deployment/hello"]);
    assert!(
        hist.lines().any(|l| l.starts_with("1 ")) && hist.lines().any(|l| l.starts_with("2 ")),
        "{hist}"
    );
    let rs = k.ok(&[
        "get",
        "rs",
        "-l",
        "app=hello",
        "-o",
        "jsonpath={range .items[*]}{.spec.template.spec.containers[0].image}={.spec.replicas};{end}",
    ]);
    assert!(
        rs.contains("registry.local/hello:1=0") && rs.contains("registry.local/hello:2=3"),
        "{rs}"
    );
    k.ok(&["rollout", "undo", "deployment/hello"]);
    assert!(k
        .ok(&["rollout", "status", "deployment/hello", "--timeout=60s"])
        .contains("successfully rolled out"));
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "hello",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "registry.local/hello:1"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "hello",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ]),
        "3"
    );
    k.ok(&["scale", "deployment/hello", "--replicas=10"]);
    assert!(k
        .ok(&["rollout", "status", "deployment/hello", "--timeout=60s"])
        .contains("successfully rolled out"));
    let ready = k.ok(&[
        "get",
        "deploy",
        "hello",
        "-o",
        "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}/{.status.availableReplicas}",
    ]);
    assert_eq!(ready, "10/10/10");
    let running = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=hello",
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    ]);
    assert_eq!(running.lines().count(), 10);
    let table = k.ok(&["get", "deploy", "hello"]);
    assert!(table.contains("10/10"), "{table}");

    // A Job runs to completion.
    k.ok(&[
        "create",
        "job",
        "pi",
        "--image=registry.local/perl:5",
        "--",
        "perl",
        "-e",
        "print 1",
    ]);
    k.ok(&["wait", "--for=condition=complete", "job/pi", "--timeout=60s"]);
    let job = k.ok(&["get", "job", "pi"]);
    assert!(job.contains("Complete") && job.contains("1/1"), "{job}");
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "-l",
            "job-name=pi",
            "-o",
            "jsonpath={.items[*].status.phase}"
        ]),
        "Succeeded"
    );

    // Deleting the deployment leaves nothing behind: its ReplicaSets (all revisions) and
    // their pods are collected.
    k.ok(&["delete", "deployment", "hello"]);
    let left = (0..150)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            k.ok(&["get", "rs,pods", "-l", "app=hello", "-o", "name"])
        })
        .find(|out| out.trim().is_empty());
    assert!(
        left.is_some(),
        "left behind after deleting the deployment: {}",
        k.ok(&["get", "rs,pods", "-l", "app=hello", "-o", "name"])
    );
}

#[test]
fn deployment_rollout_kubectl_1_27() {
    deployment_rollout("1.27");
}

#[test]
fn deployment_rollout_kubectl_1_33() {
    deployment_rollout("1.33");
}

/// examples/nginx.yaml on simulated nodes: ordered pods, per-pod claims, the missing
/// StorageClass reported and then provided, scale up and down in order.
fn statefulset_example(version: &str) {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "2"]);
    let k = support::Kubectl::new(version, &server);
    let nginx = support::repo_file("examples/nginx.yaml");
    let nginx = nginx.to_str().expect("path");
    k.ok(&["apply", "-f", nginx]);
    // The claim names a StorageClass that does not exist: it stays Pending with the reason
    // visible, and web-0 cannot be scheduled (web-1 waits for web-0, OrderedReady).
    let events = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            k.ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=www-web-0,reason=ProvisioningFailed",
                "-o",
                "jsonpath={.items[*].message}",
            ])
        })
        .find(|e| !e.is_empty())
        .unwrap_or_default();
    assert!(
        events.contains("storageclass.storage.k8s.io \"managed-nfs-storage\" not found"),
        "{events}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pvc",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.phase};{end}"
        ]),
        "www-web-0=Pending;"
    );
    // The first attempt may have run before the scheduler saw the claim (then the message
    // names the claim); the retry once it appears must name the missing class.
    let expected = "0/2 nodes are available: storageclass.storage.k8s.io \"managed-nfs-storage\" not found.";
    let mut why = String::new();
    for _ in 0..150 {
        std::thread::sleep(Duration::from_millis(100));
        why = k.ok(&[
            "get",
            "pod",
            "web-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        if why == expected {
            break;
        }
    }
    assert_eq!(why, expected);
    assert!(k.fails(&["get", "pod", "web-1"]).contains("NotFound"));
    // Creating the StorageClass with the local-path provisioner binds the claims and the set
    // rolls out in order.
    k.ok_stdin(&["apply", "-f", "-"], "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: managed-nfs-storage\nprovisioner: skiff.dev/local-path\n");
    assert!(k
        .ok(&["rollout", "status", "sts/web", "--timeout=60s"])
        .contains("roll out complete"));
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Bound",
        "pvc/www-web-0",
        "pvc/www-web-1",
        "--timeout=30s",
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "-l",
            "app=nginx",
            "-o",
            "jsonpath={.items[*].metadata.name}"
        ]),
        "web-0 web-1"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.spec.hostname}.{.spec.subdomain}"
        ]),
        "web-1.nginx"
    );
    // One revision: creating the set does not roll it (its first status must not change the
    // revision's hash).
    let revisions = k.ok(&["get", "controllerrevisions", "-l", "app=nginx", "-o", "name"]);
    assert_eq!(revisions.lines().count(), 1, "{revisions}");
    // The headless service's endpoints list both pods, by hostname, on port 80.
    let eps = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            k.ok(&[
                "get",
                "endpoints",
                "nginx",
                "-o",
                "jsonpath={.subsets[*].addresses[*].hostname} {.subsets[*].ports[*].port}",
            ])
        })
        .find(|e| e.contains("web-0") && e.contains("web-1"))
        .unwrap_or_default();
    assert!(eps.ends_with(" 80"), "{eps}");
    let slice = k.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=nginx",
        "-o",
        "jsonpath={.items[0].endpoints[*].conditions.ready}",
    ]);
    assert_eq!(slice, "true true");
    assert_eq!(
        k.ok(&["get", "sa", "default", "-o", "name"]).trim(),
        "serviceaccount/default"
    );
    assert!(k.ok(&["get", "sc", "local-path"]).contains("(default)"));
    // Scale up: web-2 and its claim; scale down: highest ordinals go first.
    k.ok(&["scale", "sts", "web", "--replicas=3"]);
    assert!(k
        .ok(&["rollout", "status", "sts/web", "--timeout=60s"])
        .contains("roll out complete"));
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Bound",
        "pvc/www-web-2",
        "--timeout=30s",
    ]);
    k.ok(&["scale", "sts", "web", "--replicas=1"]);
    k.ok(&["wait", "--for=delete", "pod/web-2", "pod/web-1", "--timeout=30s"]);
    assert_eq!(
        k.ok(&[
            "get",
            "pods",
            "-l",
            "app=nginx",
            "-o",
            "jsonpath={.items[*].metadata.name}"
        ]),
        "web-0"
    );
    // Claims are retained (the default policy).
    assert_eq!(k.ok(&["get", "pvc", "-o", "name"]).lines().count(), 3);
}

#[test]
fn statefulset_example_kubectl_1_27() {
    statefulset_example("1.27");
}

#[test]
fn statefulset_example_kubectl_1_33() {
    statefulset_example("1.33");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_heartbeating_is_tainted_and_its_pods_evicted() {
    use k8s_openapi::api::coordination::v1::Lease;
    let server = SkiffServer::start_with(
        tempfile::tempdir().expect("tempdir"),
        0,
        &["--simulated-nodes", "1", "--node-monitor-grace-period", "3"],
    );
    let c = client(&server).await;
    // A node registered by hand: it heartbeats once, then never again.
    let nodes: Api<Node> = Api::all(c.clone());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "gone-1"}})).expect("node");
    nodes.create(&PostParams::default(), &node).await.expect("node");
    nodes
        .patch_status("gone-1", &PatchParams::default(), &Patch::Merge(json!({"status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}})))
        .await
        .expect("status");
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "gone-1"}, "spec": {"holderIdentity": "gone-1", "renewTime": now}}),
    )
    .expect("lease");
    leases.create(&PostParams::default(), &lease).await.expect("lease");
    // An RS pod pinned there, tolerating unreachability for 1 s.
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "pinned"}},
                 "template": {"metadata": {"labels": {"app": "pinned"}},
                              "spec": {"nodeName": "gone-1", "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1}],
                                       "containers": [{"name": "c", "image": "i"}]}}}
    }))
    .expect("rs");
    rss.create(&PostParams::default(), &rs).await.expect("rs");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    eventually(20, "the pinned pod exists", || async {
        (pods
            .list(&ListParams::default().labels("app=pinned"))
            .await
            .ok()?
            .items
            .len()
            == 1)
            .then_some(())
    })
    .await;
    // NotReady and tainted after the grace period; the pod evicted after its toleration.
    let tainted = eventually(20, "node NotReady with the unreachable taint", || async {
        let n = nodes.get("gone-1").await.ok()?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .clone();
        let taints = n.spec.as_ref()?.taints.clone()?;
        (ready == "Unknown"
            && taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute"))
        .then_some(n)
    })
    .await;
    assert!(tainted
        .spec
        .and_then(|s| s.taints)
        .is_some_and(|t| t.iter().any(|t| t.effect == "NoSchedule")));
    eventually(20, "the pod evicted (terminating)", || async {
        let l = pods.list(&ListParams::default().labels("app=pinned")).await.ok()?;
        l.items
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    // The healthy simulated node stays Ready.
    let sim = nodes.get("sim-node-0").await.expect("sim node");
    assert!(sim.spec.and_then(|s| s.taints).unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_runs_one_pod_per_eligible_node_and_rolls() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "3"]);
    let c = client(&server).await;
    let nodes: Api<Node> = Api::all(c.clone());
    eventually(20, "3 nodes", || async {
        (nodes.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(())
    })
    .await;
    // One node opts out by label.
    nodes
        .patch(
            "sim-node-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"logs": "off"}}})),
        )
        .await
        .expect("label");
    for n in ["sim-node-0", "sim-node-1"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"logs": "on"}}})),
            )
            .await
            .expect("label");
    }
    let dss: Api<DaemonSet> = Api::namespaced(c.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "logs"},
        "spec": {"selector": {"matchLabels": {"app": "logs"}},
                 "template": {"metadata": {"labels": {"app": "logs"}},
                              "spec": {"nodeSelector": {"logs": "on"}, "containers": [{"name": "c", "image": "registry.local/logs:1"}]}}}
    }))
    .expect("ds");
    dss.create(&PostParams::default(), &ds).await.expect("create");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let nodes_of = |l: &[Pod]| -> Vec<String> {
        let mut v: Vec<String> = l
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        v.sort();
        v
    };
    eventually(20, "daemon pods on the two labelled nodes", || async {
        let l = pods.list(&ListParams::default().labels("app=logs")).await.ok()?;
        (nodes_of(&l.items) == ["sim-node-0", "sim-node-1"] && running_on_sim_nodes(&l.items) == 2).then_some(())
    })
    .await;
    eventually(20, "status 2/2 ready", || async {
        let s = dss.get("logs").await.ok()?.status?;
        (s.desired_number_scheduled == 2 && s.number_ready == 2).then_some(())
    })
    .await;
    // A rolling update replaces both pods with the new image.
    dss.patch(
        "logs",
        &PatchParams::default(),
        &Patch::Strategic(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "registry.local/logs:2"}]}}}}),
        ),
    )
    .await
    .expect("update");
    eventually(20, "updated pods", || async {
        let l = pods.list(&ListParams::default().labels("app=logs")).await.ok()?;
        let live: Vec<&Pod> = l
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let images: Vec<String> = live
            .iter()
            .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .collect();
        (live.len() == 2 && images.iter().all(|i| i == "registry.local/logs:2") && running_on_sim_nodes(&l.items) == 2)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_starts_a_job_on_schedule_and_keeps_history() {
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "1"]);
    let c = client(&server).await;
    let cjs: Api<CronJob> = Api::namespaced(c.clone(), "default");
    let cj: CronJob = serde_json::from_value(json!({
        "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "successfulJobsHistoryLimit": 1,
                 "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.local/tick:1"}]}}}}}
    }))
    .expect("cronjob");
    cjs.create(&PostParams::default(), &cj).await.expect("create");
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    // The next minute boundary starts a Job named after its scheduled minute; it completes.
    let mut done = None;
    for _ in 0..750 {
        let l = jobs.list(&ListParams::default()).await.expect("list");
        if let Some(j) = l.items.into_iter().find(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
        }) {
            done = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = done.expect("a scheduled Job completed within 75 s");
    let name = job.metadata.name.clone().expect("name");
    assert!(
        name.starts_with("tick-") && name["tick-".len()..].parse::<i64>().is_ok(),
        "{name}"
    );
    assert!(job
        .metadata
        .owner_references
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == "CronJob" && o.name == "tick"));
    let status = eventually(20, "lastScheduleTime", || async {
        cjs.get("tick").await.ok()?.status?.last_schedule_time
    })
    .await;
    assert!(status.0.as_second() > 0);
}
