//! Controller edge cases users hit, against a real `skiff server` with simulated nodes:
//! a rolling update that never dips below capacity, rollback to a revision, scaling in the
//! middle of a rollout (and while paused), StatefulSet ordering, Job backoff and deadlines,
//! CronJob missed schedules, starting deadlines and `Forbid`.
//!
//! Where a test needs a pod to fail or finish on cue it gives the pod a scheduler nobody runs
//! (`schedulerName: manual`), so the pod stays unbound, and writes the pod's status itself
//! the way a kubelet would.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use support::{client, eventually, SkiffServer};

/// A server with three simulated nodes, once all three report capacity.
async fn start() -> (SkiffServer, kube::Client) {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "3"]);
    let c = client(&server).await;
    let nodes: Api<Node> = Api::all(c.clone());
    eventually(30, "3 simulated nodes with capacity", || async {
        let n = nodes.list(&ListParams::default()).await.ok()?;
        let ready = n
            .items
            .iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.allocatable.as_ref()).is_some())
            .count();
        (ready == 3).then_some(())
    })
    .await;
    (server, c)
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a well-formed object")
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

/// Ready and not on its way out: what a Service would send traffic to.
fn serving(p: &Pod) -> bool {
    !terminating(p)
        && phase(p) == "Running"
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn rs_image(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn rs_spec(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Watch the objects matching `labels` and call `observe` with the whole set after every
/// change (once the initial list is in). A watch delivers every intermediate state in order,
/// which polling could miss.
fn watch_all<K, F>(api: Api<K>, labels: &str, mut observe: F) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
    F: FnMut(&BTreeMap<String, K>, &watcher::Event<K>) + Send + 'static,
{
    let cfg = watcher::Config::default().labels(labels);
    tokio::spawn(async move {
        let mut objs = BTreeMap::new();
        let mut init = BTreeMap::new();
        let mut stream = watcher(api, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            match &ev {
                watcher::Event::Init => {
                    init.clear();
                    continue;
                }
                watcher::Event::InitApply(o) => {
                    init.insert(o.name_any(), o.clone());
                    continue;
                }
                watcher::Event::InitDone => objs = std::mem::take(&mut init),
                watcher::Event::Apply(o) => {
                    objs.insert(o.name_any(), o.clone());
                }
                watcher::Event::Delete(o) => {
                    objs.remove(&o.name_any());
                }
            }
            observe(&objs, &ev);
        }
    })
}

fn deployment(name: &str, replicas: i32, image: &str, min_ready: i32) -> Deployment {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                 "selector": {"matchLabels": {"app": name}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}}
    }))
}

/// What `kubectl rollout status` waits for: the latest generation observed, every replica
/// updated and available, no old replicas left.
/// Create a Deployment and wait until it has rolled out; returns the deployments, pods and
/// ReplicaSets of the default namespace.
async fn rolled_out_deployment(
    c: &kube::Client,
    name: &str,
    replicas: i32,
    image: &str,
    min_ready: i32,
) -> (Api<Deployment>, Api<Pod>, Api<ReplicaSet>) {
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment(name, replicas, image, min_ready))
        .await
        .expect("create");
    eventually(40, &format!("{name} rolled out"), || {
        rolled_out(&deploys, name, replicas)
    })
    .await;
    (
        deploys,
        Api::namespaced(c.clone(), "default"),
        Api::namespaced(c.clone(), "default"),
    )
}

async fn rolled_out(api: &Api<Deployment>, name: &str, replicas: i32) -> Option<Deployment> {
    let d = api.get(name).await.ok()?;
    let s = d.status.as_ref()?;
    (s.observed_generation >= d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas))
    .then_some(d)
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})),
    )
    .await
    .expect("set image");
}

#[derive(Debug, Default)]
struct Capacity {
    /// The watch has delivered its initial list.
    started: bool,
    /// Fewest pods serving at any point.
    min_serving: usize,
    /// Most pods not terminating at any point (before and after the scale, if any).
    max_live_before: usize,
    max_live_after: usize,
    /// Whether the scale had been sent when the state was seen.
    scaled: bool,
    /// Pods of the new image seen serving.
    new_serving: std::collections::BTreeSet<String>,
}

fn track_capacity(pods: Api<Pod>, app: &str, new_image: &str) -> (Arc<Mutex<Capacity>>, tokio::task::JoinHandle<()>) {
    let cap = Arc::new(Mutex::new(Capacity {
        min_serving: usize::MAX,
        ..Default::default()
    }));
    let c = cap.clone();
    let new_image = new_image.to_string();
    let task = watch_all(pods, &format!("app={app}"), move |pods, _| {
        let mut c = c.lock().expect("lock");
        c.started = true;
        let serving: Vec<&Pod> = pods.values().filter(|p| serving(p)).collect();
        c.min_serving = c.min_serving.min(serving.len());
        let live = pods.values().filter(|p| !terminating(p)).count();
        if c.scaled {
            c.max_live_after = c.max_live_after.max(live);
        } else {
            c.max_live_before = c.max_live_before.max(live);
        }
        for p in serving.iter().filter(|p| image(p) == new_image) {
            c.new_serving.insert(p.name_any());
        }
    });
    (cap, task)
}

/// RollingUpdate with maxUnavailable=0, maxSurge=1: every state of the pods during the
/// rollout has at least `replicas` serving and at most `replicas + 1` alive, and the rollout
/// ends with every pod on the new template and the old ReplicaSet at zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_with_max_unavailable_zero_never_drops_capacity() {
    let (_server, c) = start().await;
    let (deploys, pods, rss) = rolled_out_deployment(&c, "web", 4, "registry.local/web:1", 0).await;

    let (cap, task) = track_capacity(pods.clone(), "web", "registry.local/web:2");
    eventually(10, "the pod watch to start", || async {
        cap.lock().expect("lock").started.then_some(())
    })
    .await;
    set_image(&deploys, "web", "registry.local/web:2").await;
    eventually(50, "web rolled out at v2", || rolled_out(&deploys, "web", 4)).await;
    // The final state reaches the watch too, then the record is complete.
    eventually(10, "the watch to see 4 new pods serving", || async {
        (cap.lock().expect("lock").new_serving.len() >= 4).then_some(())
    })
    .await;
    task.abort();

    let cap = std::mem::take(&mut *cap.lock().expect("lock"));
    assert!(
        cap.min_serving >= 4,
        "serving pods dropped to {} with maxUnavailable=0",
        cap.min_serving
    );
    assert!(
        cap.max_live_before <= 5,
        "{} pods alive at once with maxSurge=1",
        cap.max_live_before
    );
    let rs_list = rss.list(&ListParams::default().labels("app=web")).await.expect("rs");
    assert_eq!(rs_list.items.len(), 2, "one ReplicaSet per template");
    for rs in &rs_list.items {
        let (want, got) = (if rs_image(rs) == "registry.local/web:2" { 4 } else { 0 }, rs_spec(rs));
        assert_eq!(got, want, "{} ({}) replicas", rs.name_any(), rs_image(rs));
    }
    let live: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| !terminating(p))
        .collect();
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|p| image(p) == "registry.local/web:2" && serving(p)));
}

/// `kubectl rollout undo --to-revision=1` after three revisions: kubectl copies revision 1's
/// template into the deployment; the controller revives that ReplicaSet as revision 4 instead
/// of creating a new one.
fn rollback_to_revision(version: &str) {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "3"]);
    let k = support::Kubectl::new(version, &server);
    let rolled_out = |k: &support::Kubectl| {
        assert!(k
            .ok(&["rollout", "status", "deployment/hello", "--timeout=60s"])
            .contains("successfully rolled out"));
    };
    k.ok(&[
        "create",
        "deployment",
        "hello",
        "--image=registry.local/hello:1",
        "--replicas=3",
    ]);
    rolled_out(&k);
    for v in [2, 3] {
        k.ok(&[
            "set",
            "image",
            "deployment/hello",
            &format!("hello=registry.local/hello:{v}"),
        ]);
        rolled_out(&k);
    }
    let rs_table = |k: &support::Kubectl| -> BTreeMap<String, (String, String, String)> {
        k.ok(&[
            "get",
            "rs",
            "-l",
            "app=hello",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision} {.spec.replicas}{\"\\n\"}{end}",
        ])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "{l}");
            (f[0].to_string(), (f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
    };
    let before = rs_table(&k);
    assert_eq!(before.len(), 3, "{before:?}");
    let v1 = before
        .iter()
        .find(|(_, (img, _, _))| img == "registry.local/hello:1")
        .map(|(n, _)| n.clone())
        .expect("the revision 1 ReplicaSet");
    assert_eq!(before[&v1].1, "1");

    k.ok(&["rollout", "undo", "deployment/hello", "--to-revision=1"]);
    rolled_out(&k);
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "hello",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image} {.metadata.annotations.deployment\\.kubernetes\\.io/revision}"
        ]),
        "registry.local/hello:1 4"
    );
    let after = rs_table(&k);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the rollback reuses revision 1's ReplicaSet: {after:?}"
    );
    for (name, (img, rev, replicas)) in &after {
        if *name == v1 {
            assert_eq!((rev.as_str(), replicas.as_str()), ("4", "3"), "{img}");
        } else {
            assert_eq!(replicas, "0", "{name} {img}");
        }
    }
    // Revision 1 became revision 4: history lists 2, 3, 4.
    let hist = k.ok(&["rollout", "history", "deployment/hello"]);
    let revs: Vec<&str> = hist
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revs, ["2", "3", "4"], "{hist}");
    // The pods are revision 1's again.
    let pod_images = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            k.ok(&[
                "get",
                "pods",
                "-l",
                "app=hello",
                "-o",
                "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}",
            ])
        })
        .find(|out| out.lines().count() == 3 && out.lines().all(|l| l == "registry.local/hello:1"))
        .unwrap_or_default();
    assert_eq!(pod_images.lines().count(), 3, "three hello:1 pods");
}

#[test]
fn rollback_to_revision_kubectl_1_27() {
    rollback_to_revision("1.27");
}

#[test]
fn rollback_to_revision_kubectl_1_33() {
    rollback_to_revision("1.33");
}

/// Scale 4 → 8 in the middle of a slow rollout (minReadySeconds): the extra replicas are
/// shared out over the old and the new ReplicaSet in proportion (as upstream does), the pods
/// alive never exceed replicas + maxSurge, serving pods never drop below the original 4, and
/// the end state is 8 pods of the new template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_during_a_rollout_is_proportional_and_converges() {
    let (_server, c) = start().await;
    let (deploys, pods, rss) = rolled_out_deployment(&c, "slow", 4, "registry.local/slow:1", 2).await;
    // Available means Ready for minReadySeconds (2 s): no pod counted before that.
    let now = chrono::Utc::now().timestamp();
    for p in pods
        .list(&ListParams::default().labels("app=slow"))
        .await
        .expect("pods")
        .items
    {
        let ready_at = p
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready" && c.status == "True")
            .and_then(|c| c.last_transition_time)
            .expect("Ready since")
            .0
            .as_second();
        assert!(now - ready_at >= 2, "available {} s after Ready", now - ready_at);
    }

    let (cap, task) = track_capacity(pods.clone(), "slow", "registry.local/slow:2");
    // The largest size the old ReplicaSet is given after the scale.
    let old_max_after = Arc::new(Mutex::new((false, 0)));
    let o = old_max_after.clone();
    let rs_task = watch_all(rss.clone(), "app=slow", move |all, _| {
        let mut o = o.lock().expect("lock");
        if o.0 {
            for rs in all.values().filter(|rs| rs_image(rs) == "registry.local/slow:1") {
                o.1 = o.1.max(rs_spec(rs));
            }
        }
    });
    eventually(10, "the pod watch to start", || async {
        cap.lock().expect("lock").started.then_some(())
    })
    .await;
    set_image(&deploys, "slow", "registry.local/slow:2").await;
    // Mid-rollout: some new pods, the old ReplicaSet not yet down to zero.
    let (old_before, new_before) = eventually(30, "the rollout under way", || async {
        let l = rss.list(&ListParams::default().labels("app=slow")).await.ok()?;
        let old = l.items.iter().find(|r| rs_image(r) == "registry.local/slow:1")?;
        let new = l.items.iter().find(|r| rs_image(r) == "registry.local/slow:2")?;
        let new_ready = new.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        (new_ready >= 1 && rs_spec(old) >= 2).then_some((rs_spec(old), rs_spec(new)))
    })
    .await;
    cap.lock().expect("lock").scaled = true;
    old_max_after.lock().expect("lock").0 = true;
    deploys
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 8}})),
        )
        .await
        .expect("scale");
    eventually(60, "slow rolled out at v2 with 8 replicas", || {
        rolled_out(&deploys, "slow", 8)
    })
    .await;
    eventually(10, "the watch to see 8 new pods serving", || async {
        (cap.lock().expect("lock").new_serving.len() >= 8).then_some(())
    })
    .await;
    task.abort();
    rs_task.abort();

    let cap = std::mem::take(&mut *cap.lock().expect("lock"));
    assert!(cap.min_serving >= 4, "serving pods dropped to {}", cap.min_serving);
    assert!(
        cap.max_live_before <= 5,
        "{} pods alive before the scale",
        cap.max_live_before
    );
    assert!(
        cap.max_live_after <= 9,
        "{} pods alive after scaling to 8 with maxSurge=1",
        cap.max_live_after
    );
    // Proportional scaling: 4 more replicas fit (8 + 1 − old − new); the old ReplicaSet gets
    // its share rather than everything going to the new one.
    let old_max = old_max_after.lock().expect("lock").1;
    assert!(
        old_max > old_before,
        "old ReplicaSet ({old_before} replicas, new {new_before}) was not scaled up with the deployment (max seen {old_max})"
    );
    let rs_list = rss.list(&ListParams::default().labels("app=slow")).await.expect("rs");
    for rs in &rs_list.items {
        let want = if rs_image(rs) == "registry.local/slow:2" { 8 } else { 0 };
        assert_eq!(rs_spec(rs), want, "{} ({})", rs.name_any(), rs_image(rs));
    }
    let live: Vec<Pod> = pods
        .list(&ListParams::default().labels("app=slow"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| !terminating(p))
        .collect();
    assert_eq!(live.len(), 8);
    assert!(live.iter().all(|p| image(p) == "registry.local/slow:2" && serving(p)));
}

/// `kubectl rollout pause` then `kubectl scale`: the scale still happens (upstream syncs the
/// replica count of a paused deployment; only the rollout is held), and no new ReplicaSet
/// appears for a template changed while paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_deployment_still_scales() {
    let (_server, c) = start().await;
    let (deploys, pods, rss) = rolled_out_deployment(&c, "held", 2, "registry.local/held:1", 0).await;
    deploys
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .expect("pause");
    set_image(&deploys, "held", "registry.local/held:2").await;
    deploys
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    eventually(40, "5 serving pods of the paused deployment", || async {
        let l = pods.list(&ListParams::default().labels("app=held")).await.ok()?;
        (l.items.iter().filter(|p| serving(p)).count() == 5).then_some(())
    })
    .await;
    let rs_list = rss.list(&ListParams::default().labels("app=held")).await.expect("rs");
    assert_eq!(rs_list.items.len(), 1, "no ReplicaSet for the paused template");
    assert_eq!(rs_spec(&rs_list.items[0]), 5);
    assert_eq!(rs_image(&rs_list.items[0]), "registry.local/held:1");
    // Resumed, it rolls out the new template at the new size.
    deploys
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .expect("resume");
    eventually(50, "held rolled out at v2", || rolled_out(&deploys, "held", 5)).await;
}

fn statefulset(name: &str, replicas: i32, policy: &str, scheduler: &str) -> StatefulSet {
    from_json(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": policy,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"schedulerName": scheduler,
                                       "containers": [{"name": "app", "image": "registry.local/sts:1"}]}}}
    }))
}

/// OrderedReady scale-down removes the highest ordinal first and waits for each pod to be
/// gone before touching the next; Parallel creates every pod at once, even pods that never
/// become Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_scales_down_in_reverse_order_and_parallel_creates_at_once() {
    let (_server, c) = start().await;
    let sets: Api<StatefulSet> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    sets.create(
        &PostParams::default(),
        &statefulset("web", 4, "OrderedReady", "default-scheduler"),
    )
    .await
    .expect("create web");
    // Parallel, with pods that are never scheduled and so never Ready: all four still appear.
    sets.create(&PostParams::default(), &statefulset("par", 4, "Parallel", "manual"))
        .await
        .expect("create par");
    // The same with OrderedReady stops at the first pod.
    sets.create(&PostParams::default(), &statefulset("ord", 4, "OrderedReady", "manual"))
        .await
        .expect("create ord");

    eventually(40, "web with 4 ready replicas", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(4)).then_some(())
    })
    .await;
    let names = |l: &[Pod]| -> Vec<String> {
        let mut n: Vec<String> = l.iter().map(|p| p.name_any()).collect();
        n.sort();
        n
    };
    let par = eventually(20, "par's 4 pods", || async {
        let l = pods.list(&ListParams::default().labels("app=par")).await.ok()?;
        (l.items.len() == 4).then_some(l.items)
    })
    .await;
    assert_eq!(names(&par), ["par-0", "par-1", "par-2", "par-3"]);
    assert!(par.iter().all(|p| !serving(p)), "par's pods are never scheduled");
    let ord = pods.list(&ListParams::default().labels("app=ord")).await.expect("ord");
    assert_eq!(names(&ord.items), ["ord-0"], "OrderedReady waits for ord-0 to be Ready");

    // Record, in watch order, when each pod starts terminating and when it is gone.
    let log: Arc<Mutex<(bool, Vec<String>)>> = Arc::default();
    let l = log.clone();
    let task = watch_all(pods.clone(), "app=web", move |_, ev| {
        let mut l = l.lock().expect("lock");
        l.0 = true;
        match ev {
            watcher::Event::Apply(p) if terminating(p) => {
                let entry = format!("terminating {}", p.name_any());
                if !l.1.contains(&entry) {
                    l.1.push(entry);
                }
            }
            watcher::Event::Delete(p) => {
                if !l.1.contains(&format!("terminating {}", p.name_any())) {
                    l.1.push(format!("terminating {}", p.name_any()));
                }
                l.1.push(format!("gone {}", p.name_any()));
            }
            _ => {}
        }
    });
    eventually(10, "the pod watch to start", || async {
        log.lock().expect("lock").0.then_some(())
    })
    .await;
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale web");
    eventually(40, "web down to web-0", || async {
        let l = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (names(&l.items) == ["web-0"] && serving(&l.items[0])).then_some(())
    })
    .await;
    eventually(10, "the watch to see web-1 go", || async {
        log.lock()
            .expect("lock")
            .1
            .contains(&"gone web-1".to_string())
            .then_some(())
    })
    .await;
    task.abort();
    assert_eq!(
        log.lock().expect("lock").1,
        [
            "terminating web-3",
            "gone web-3",
            "terminating web-2",
            "gone web-2",
            "terminating web-1",
            "gone web-1"
        ]
    );
    eventually(10, "web's status at 1 replica", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.replicas == 1 && s.ready_replicas == Some(1)).then_some(())
    })
    .await;

    // Parallel scale-down does not wait: all extras go.
    sets.patch(
        "par",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale par");
    eventually(20, "par down to par-0", || async {
        let l = pods.list(&ListParams::default().labels("app=par")).await.ok()?;
        (names(&l.items) == ["par-0"]).then_some(())
    })
    .await;
    // ord is still waiting on ord-0.
    let ord = pods.list(&ListParams::default().labels("app=ord")).await.expect("ord");
    assert_eq!(names(&ord.items), ["ord-0"]);
}

/// A pod that never gets a node (its scheduler does not exist); the test plays kubelet.
fn job(name: &str, extra: serde_json::Value) -> Job {
    let mut spec = json!({"template": {"spec": {"schedulerName": "manual", "restartPolicy": "Never",
                                                "containers": [{"name": "c", "image": "registry.local/job:1"}]}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    from_json(json!({"metadata": {"name": name}, "spec": spec}))
}

/// Finish a pod the way a kubelet reports it: terminal phase, terminated container, Ready=False.
async fn finish_pod(pods: &Api<Pod>, name: &str, succeeded: bool) {
    let ts = now_rfc3339();
    let (phase, code, reason) = if succeeded {
        ("Succeeded", 0, "Completed")
    } else {
        ("Failed", 1, "Error")
    };
    let status = json!({"status": {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": ts}],
        "containerStatuses": [{"name": "c", "image": "registry.local/job:1", "imageID": "", "ready": false, "restartCount": 0,
                               "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": ts, "finishedAt": ts}}}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
}

fn job_condition(j: &Job, ty: &str) -> Option<String> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

/// Job backoff: each failed pod is replaced after an exponential delay (10 s, then 20 s, as
/// upstream) until failures exceed backoffLimit; then the Job is Failed with
/// BackoffLimitExceeded and no pod is created. A Job past activeDeadlineSeconds fails with
/// DeadlineExceeded and its pods are removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_backoff_limit_and_active_deadline() {
    let (_server, c) = start().await;
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job("deadline", json!({"activeDeadlineSeconds": 2})),
    )
    .await
    .expect("create deadline");
    jobs.create(&PostParams::default(), &job("flaky", json!({"backoffLimit": 2})))
        .await
        .expect("create flaky");

    let list = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut failed_at: Option<Instant> = None;
    for attempt in 0..3u32 {
        let pod = eventually(45, &format!("flaky pod {}", attempt + 1), || async {
            list("flaky")
                .await
                .into_iter()
                .find(|p| !terminating(p) && !matches!(phase(p), "Failed" | "Succeeded"))
        })
        .await;
        assert!(!seen.contains(&pod.name_any()));
        if let Some(t) = failed_at {
            // Backoff 10 s × 2^(failures − 1), counted from the failure (second precision).
            let backoff = Duration::from_secs(10 << (attempt - 1));
            let waited = t.elapsed();
            assert!(
                waited + Duration::from_secs(2) >= backoff,
                "replacement {} after {waited:?}, backoff is {backoff:?}",
                attempt + 1
            );
        }
        seen.push(pod.name_any());
        // Taken before the pod's finish time is, so the backoff measured here is never longer
        // than the controller's.
        failed_at = Some(Instant::now());
        finish_pod(&pods, &pod.name_any(), false).await;
    }
    let j = eventually(20, "flaky Failed", || async {
        let j = jobs.get("flaky").await.ok()?;
        job_condition(&j, "Failed").is_some().then_some(j)
    })
    .await;
    assert_eq!(job_condition(&j, "Failed").as_deref(), Some("BackoffLimitExceeded"));
    let s = j.status.expect("status");
    assert_eq!((s.failed, s.active.unwrap_or(0)), (Some(3), 0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = list("flaky").await;
    assert_eq!(all.len(), 3, "no pod after the Job failed: {:?}", names_of(&all));
    assert!(all.iter().all(|p| phase(p) == "Failed"));

    // The deadline Job gave up long ago: Failed, DeadlineExceeded, no pods left running.
    let j = eventually(20, "deadline Failed", || async {
        let j = jobs.get("deadline").await.ok()?;
        job_condition(&j, "Failed").is_some().then_some(j)
    })
    .await;
    assert_eq!(job_condition(&j, "Failed").as_deref(), Some("DeadlineExceeded"));
    // Not before the deadline: the Failed condition is at least 2 s after startTime.
    let st = j.status.expect("status");
    let start = st.start_time.expect("startTime").0.as_second();
    let failed = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.last_transition_time)
        .expect("Failed condition time")
        .0
        .as_second();
    assert!(failed - start >= 2, "failed {} s after start", failed - start);
    eventually(20, "the deadline Job's pods removed", || async {
        list("deadline").await.iter().all(terminating).then_some(())
    })
    .await;
}

fn names_of(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

fn cronjob(name: &str, extra: serde_json::Value) -> CronJob {
    let mut spec = json!({"schedule": "*/1 * * * *", "suspend": true,
        "jobTemplate": {"spec": {"template": {"spec": {"schedulerName": "manual", "restartPolicy": "Never",
                                                         "containers": [{"name": "c", "image": "registry.local/cron:1"}]}}}}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    from_json(json!({"metadata": {"name": name}, "spec": spec}))
}

async fn owned_jobs(jobs: &Api<Job>, uid: &str) -> Vec<Job> {
    jobs.list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .filter(|j| j.owner_references().iter().any(|o| o.uid == uid))
        .collect()
}

/// CronJob catch-up, as upstream's `mostRecentScheduleTime`: after ten missed minutes only
/// the most recent one runs, as `<cronjob>-<minutes since epoch>`; with
/// startingDeadlineSeconds=10 a schedule missed by more than that is not run (and not
/// recorded as run); with Forbid, nothing starts while a Job is active, and the missed run
/// starts once that Job finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cronjob_missed_schedules_starting_deadline_and_forbid() {
    let (_server, c) = start().await;
    let cjs: Api<CronJob> = Api::namespaced(c.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let ten_min_ago = (chrono::Utc::now() - chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string();
    let mut uids = BTreeMap::new();
    for (name, extra) in [
        ("missed", json!({})),
        ("late", json!({"startingDeadlineSeconds": 10})),
        ("forbid", json!({"concurrencyPolicy": "Forbid"})),
    ] {
        let cj = cjs
            .create(&PostParams::default(), &cronjob(name, extra))
            .await
            .expect("create cronjob");
        uids.insert(name, cj.uid().expect("uid"));
        cjs.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": ten_min_ago}})),
        )
        .await
        .expect("status");
    }
    // A run of `forbid` that is still going: a Job it owns whose pod never finishes.
    let forbid = cjs.get("forbid").await.expect("forbid");
    let mut running = job("forbid-running", json!({}));
    running.metadata.owner_references = Some(vec![forbid.controller_owner_ref(&()).expect("owner ref")]);
    jobs.create(&PostParams::default(), &running)
        .await
        .expect("running job");
    let running_pod = eventually(20, "forbid-running's pod", || async {
        pods.list(&ListParams::default().labels("job-name=forbid-running"))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    for (name, running) in [("missed", 0), ("late", 0), ("forbid", 1)] {
        let s = cjs.get(name).await.expect("cronjob").status.expect("status");
        assert_eq!(
            s.last_schedule_time.map(|t| t.0.to_string()),
            Some(ten_min_ago.clone()),
            "{name}'s lastScheduleTime is what the test set"
        );
        assert_eq!(
            owned_jobs(&jobs, &uids[name]).await.len(),
            running,
            "{name} is suspended"
        );
    }

    // Start between :12 and :30 of a minute: the most recent schedule is then more than 10 s
    // old (for `late`) and the next one at least 30 s away.
    loop {
        let s = chrono::Utc::now().timestamp() % 60;
        if (12..=30).contains(&s) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let minute = chrono::Utc::now().timestamp() / 60;
    for name in ["missed", "late", "forbid"] {
        cjs.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .expect("resume");
    }

    let want = format!("missed-{minute}");
    let missed = eventually(15, "missed's catch-up Job", || async {
        let j = owned_jobs(&jobs, &uids["missed"]).await;
        (!j.is_empty()).then_some(j)
    })
    .await;
    assert_eq!(
        names_of_jobs(&missed),
        [want.as_str()],
        "one Job for the latest missed time"
    );
    let scheduled = chrono::DateTime::from_timestamp(minute * 60, 0)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert_eq!(
        missed[0]
            .annotations()
            .get("batch.kubernetes.io/cronjob-scheduled-timestamp"),
        Some(&scheduled)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let missed = owned_jobs(&jobs, &uids["missed"]).await;
    assert_eq!(
        names_of_jobs(&missed),
        [want],
        "still one Job, not one per missed minute"
    );
    let s = cjs.get("missed").await.expect("missed").status.expect("status");
    assert_eq!(s.last_schedule_time.map(|t| t.0.to_string()), Some(scheduled.clone()));
    assert_eq!(s.active.unwrap_or_default().len(), 1);

    // Missed by more than startingDeadlineSeconds: not run, and not recorded as run.
    assert!(
        owned_jobs(&jobs, &uids["late"]).await.is_empty(),
        "late ran past its deadline"
    );
    let s = cjs.get("late").await.expect("late").status.unwrap_or_default();
    assert_eq!(s.last_schedule_time.map(|t| t.0.to_string()), Some(ten_min_ago));

    // Forbid: nothing new while forbid-running runs ...
    assert_eq!(
        names_of_jobs(&owned_jobs(&jobs, &uids["forbid"]).await),
        ["forbid-running"]
    );
    // ... and once it finishes, the run it held back starts (well before the next minute,
    // which would start a run of its own).
    finish_pod(&pods, &running_pod.name_any(), true).await;
    let started = eventually(15, "forbid's held-back run", || async {
        let j: Vec<String> = names_of_jobs(&owned_jobs(&jobs, &uids["forbid"]).await)
            .into_iter()
            .filter(|n| n != "forbid-running")
            .collect();
        (!j.is_empty()).then_some(j)
    })
    .await;
    let now_minute = chrono::Utc::now().timestamp() / 60;
    assert!(
        started == [format!("forbid-{minute}")] || (now_minute > minute && started == [format!("forbid-{now_minute}")]),
        "{started:?}"
    );
}

fn names_of_jobs(jobs: &[Job]) -> Vec<String> {
    let mut n: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
    n.sort();
    n
}

/// `kube-root-ca.crt` (the cluster CA, which every pod gets at
/// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`) is in every namespace, new ones
/// too, and comes back when deleted or edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_ca_config_map_in_every_namespace() {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    let server = SkiffServer::start();
    let c = client(&server).await;
    let ca = std::fs::read_to_string(server.dir.path().join("tls/ca.crt")).expect("the cluster CA");
    let ca_in = |ns: &str| {
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        async move {
            let cm = cms.get_opt("kube-root-ca.crt").await.ok()??;
            Some((cm.metadata.uid.clone()?, cm.data?.get("ca.crt")?.clone()))
        }
    };
    for ns in ["default", "kube-system"] {
        let (_, got) = eventually(30, "kube-root-ca.crt in an existing namespace", || ca_in(ns)).await;
        assert_eq!(got, ca, "{ns}: the cluster CA");
    }
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "team"}})),
    )
    .await
    .expect("namespace");
    let (uid, got) = eventually(30, "kube-root-ca.crt in a new namespace", || ca_in("team")).await;
    assert_eq!(got, ca);

    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    cms.delete("kube-root-ca.crt", &Default::default())
        .await
        .expect("delete");
    let (again, got) = eventually(30, "kube-root-ca.crt back after deletion", || async {
        ca_in("team").await.filter(|(u, _)| *u != uid)
    })
    .await;
    assert_eq!(got, ca);

    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "not a CA", "extra": "x"}})),
    )
    .await
    .expect("edit");
    eventually(30, "kube-root-ca.crt put right after an edit", || async {
        let cm = cms.get("kube-root-ca.crt").await.ok()?;
        let data = cm.data.unwrap_or_default();
        (cm.metadata.uid.as_deref() == Some(again.as_str())
            && data.get("ca.crt") == Some(&ca)
            && !data.contains_key("extra"))
        .then_some(())
    })
    .await;
}
