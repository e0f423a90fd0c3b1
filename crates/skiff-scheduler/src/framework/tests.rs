//! Filters and scores, each against the situation a user would set up.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use super::*;
use serde_json::{json, Value};

fn node(name: &str, labels: Value, extra: Value) -> Arc<Node> {
    let mut n = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    });
    merge(&mut n, extra);
    Arc::new(serde_json::from_value(n).unwrap())
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn pod(name: &str, labels: Value, spec: Value) -> PodInfo {
    let mut s = json!({"containers": [{"name": "c", "image": "busybox"}]});
    merge(&mut s, spec);
    PodInfo::new(Arc::new(
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": s}),
        )
        .unwrap(),
    ))
}

fn cache(nodes: Vec<Arc<Node>>) -> Cache {
    let mut c = Cache::default();
    c.replace_nodes(nodes);
    c
}

fn zones() -> Cache {
    cache(vec![
        node("a1", json!({"zone": "a", "kubernetes.io/hostname": "a1"}), json!({})),
        node("a2", json!({"zone": "a", "kubernetes.io/hostname": "a2"}), json!({})),
        node("b1", json!({"zone": "b", "kubernetes.io/hostname": "b1"}), json!({})),
    ])
}

fn place(c: &mut Cache, p: PodInfo) -> Result<String, String> {
    let d = schedule(c, &p, &Objects::default())?;
    // As the scheduler keeps a placed pod: what later pods' checks read of it must survive.
    c.assume(p.settled(), &d.node);
    Ok(d.node)
}

#[test]
fn resources_fill_nodes_evenly_then_report_what_is_short() {
    let mut c = cache(vec![node("n1", json!({}), json!({})), node("n2", json!({}), json!({}))]);
    let big = || json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m", "memory": "1Gi"}}}]});
    let mut placed = BTreeMap::new();
    for i in 0..4 {
        *placed
            .entry(place(&mut c, pod(&format!("p{i}"), json!({}), big())).unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(
        placed.values().copied().collect::<Vec<_>>(),
        vec![2, 2],
        "least allocated spreads"
    );
    let err = place(&mut c, pod("p4", json!({}), big())).unwrap_err();
    assert_eq!(err, "0/2 nodes are available: 2 Insufficient cpu.");
    // Removing a pod frees its share.
    c.remove_pod("default/p0");
    assert!(place(&mut c, pod("p5", json!({}), big())).is_ok());
    let gpu = json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]});
    assert_eq!(
        place(&mut c, pod("g", json!({}), gpu)).unwrap_err(),
        "0/2 nodes are available: 2 Insufficient example.com/gpu."
    );
}

#[test]
fn pod_count_limit() {
    let mut c = cache(vec![node(
        "n1",
        json!({}),
        json!({"status": {"allocatable": {"pods": "2"}}}),
    )]);
    place(&mut c, pod("a", json!({}), json!({}))).unwrap();
    place(&mut c, pod("b", json!({}), json!({}))).unwrap();
    assert_eq!(
        place(&mut c, pod("c", json!({}), json!({}))).unwrap_err(),
        "0/1 nodes are available: 1 Too many pods."
    );
}

#[test]
fn taints_unschedulable_and_readiness() {
    let mut c = cache(vec![
        node(
            "tainted",
            json!({}),
            json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
        ),
        node("cordoned", json!({}), json!({"spec": {"unschedulable": true}})),
        node(
            "down",
            json!({}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
    ]);
    let err = place(&mut c, pod("p", json!({}), json!({}))).unwrap_err();
    assert_eq!(
        err,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."
    );
    let tolerant =
        json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]});
    assert_eq!(place(&mut c, pod("db", json!({}), tolerant)).unwrap(), "tainted");
    let wrong_value = json!({"tolerations": [{"key": "dedicated", "value": "web"}]});
    assert!(place(&mut c, pod("web", json!({}), wrong_value)).is_err());
    let everything = json!({"tolerations": [{"operator": "Exists"}]});
    assert!(place(&mut c, pod("any", json!({}), everything)).is_ok());
}

/// What the filters know of a node (ready, cordoned, tainted) follows its updates.
#[test]
fn node_updates_reach_the_filters() {
    let mut c = cache(vec![node("n", json!({}), json!({}))]);
    assert_eq!(place(&mut c, pod("first", json!({}), json!({}))).unwrap(), "n");
    c.set_node(node("n", json!({}), json!({"spec": {"unschedulable": true}})));
    assert_eq!(
        place(&mut c, pod("cordoned", json!({}), json!({}))).unwrap_err(),
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    c.set_node(node(
        "n",
        json!({}),
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    ));
    assert_eq!(
        place(&mut c, pod("down", json!({}), json!({}))).unwrap_err(),
        "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
    );
    c.set_node(node(
        "n",
        json!({}),
        json!({"spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}),
    ));
    assert_eq!(
        place(&mut c, pod("tainted", json!({}), json!({}))).unwrap_err(),
        "0/1 nodes are available: 1 node(s) had untolerated taint {k: }."
    );
    c.set_node(node("n", json!({}), json!({})));
    assert_eq!(place(&mut c, pod("back", json!({}), json!({}))).unwrap(), "n");
}

#[test]
fn prefer_no_schedule_is_avoided_not_forbidden() {
    let mut c = cache(vec![
        node(
            "soft",
            json!({}),
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        ),
        node("clean", json!({}), json!({})),
    ]);
    for i in 0..3 {
        assert_eq!(
            place(&mut c, pod(&format!("p{i}"), json!({}), json!({}))).unwrap(),
            "clean"
        );
    }
    c.remove_node("clean");
    assert_eq!(place(&mut c, pod("q", json!({}), json!({}))).unwrap(), "soft");
}

#[test]
fn node_selector_and_node_affinity() {
    let mut c = zones();
    assert_eq!(
        place(&mut c, pod("s", json!({}), json!({"nodeSelector": {"zone": "b"}}))).unwrap(),
        "b1"
    );
    let required = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]}]}}}});
    assert_eq!(
        place(&mut c, pod("r", json!({}), required)).unwrap_err(),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    );
    let preferred = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a2"]}]}},
        {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}});
    for i in 0..3 {
        assert_eq!(
            place(&mut c, pod(&format!("p{i}"), json!({}), preferred.clone())).unwrap(),
            "a2"
        );
    }
}

#[test]
fn host_ports_conflict_per_protocol_and_address() {
    let mut c = cache(vec![node("n1", json!({}), json!({}))]);
    let port = |p: i32, proto: &str, ip: &str| json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": p, "protocol": proto, "hostIP": ip}]}]});
    place(&mut c, pod("a", json!({}), port(8080, "TCP", ""))).unwrap();
    place(&mut c, pod("b", json!({}), port(8080, "UDP", ""))).unwrap();
    assert_eq!(
        place(&mut c, pod("c", json!({}), port(8080, "TCP", "127.0.0.1"))).unwrap_err(),
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    );
    place(&mut c, pod("d", json!({}), port(9090, "TCP", "127.0.0.1"))).unwrap();
    place(&mut c, pod("e", json!({}), port(9090, "TCP", "127.0.0.2"))).unwrap();
    c.remove_pod("default/a");
    place(&mut c, pod("f", json!({}), port(8080, "TCP", "127.0.0.1"))).unwrap();
}

fn anti(app: &str, key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

#[test]
fn required_anti_affinity_puts_one_replica_per_host() {
    let mut c = zones();
    let mut hosts = BTreeSet::new();
    for i in 0..3 {
        hosts.insert(
            place(
                &mut c,
                pod(
                    &format!("w{i}"),
                    json!({"app": "web"}),
                    anti("web", "kubernetes.io/hostname"),
                ),
            )
            .unwrap(),
        );
    }
    assert_eq!(hosts.len(), 3);
    assert_eq!(
        place(
            &mut c,
            pod("w3", json!({"app": "web"}), anti("web", "kubernetes.io/hostname"))
        )
        .unwrap_err(),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // A pod without the rule but matching the others' rule is kept away by theirs.
    assert_eq!(
        place(&mut c, pod("x", json!({"app": "web"}), json!({}))).unwrap_err(),
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    // Other apps are unaffected.
    assert!(place(&mut c, pod("y", json!({"app": "db"}), json!({}))).is_ok());
}

#[test]
fn zone_anti_affinity_and_affinity() {
    let mut c = zones();
    let first = place(&mut c, pod("z0", json!({"app": "z"}), anti("z", "zone"))).unwrap();
    let second = place(&mut c, pod("z1", json!({"app": "z"}), anti("z", "zone"))).unwrap();
    let zone = |n: &str| if n.starts_with('a') { "a" } else { "b" };
    assert_ne!(zone(&first), zone(&second));
    assert!(place(&mut c, pod("z2", json!({"app": "z"}), anti("z", "zone"))).is_err());

    // Affinity: the cache follows the db pod's zone.
    let mut c = zones();
    let near_db = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}});
    assert_eq!(
        place(&mut c, pod("cache0", json!({"app": "cache"}), near_db.clone())).unwrap_err(),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules."
    );
    place(
        &mut c,
        pod("db", json!({"app": "db"}), json!({"nodeSelector": {"zone": "b"}})),
    )
    .unwrap();
    for i in 0..3 {
        assert_eq!(
            place(
                &mut c,
                pod(&format!("cache{i}"), json!({"app": "cache"}), near_db.clone())
            )
            .unwrap(),
            "b1"
        );
    }
    // The first pod of a group that selects itself may go anywhere.
    let mut c = zones();
    let self_group = json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "g"}}, "topologyKey": "zone"}]}}});
    let z = zone(&place(&mut c, pod("g0", json!({"app": "g"}), self_group.clone())).unwrap()).to_string();
    for i in 1..4 {
        let n = place(&mut c, pod(&format!("g{i}"), json!({"app": "g"}), self_group.clone())).unwrap();
        assert_eq!(zone(&n), z);
    }
}

#[test]
fn affinity_terms_are_namespaced() {
    let mut c = zones();
    let mut other = pod(
        "w",
        json!({"app": "web"}),
        json!({"nodeSelector": {"kubernetes.io/hostname": "a1"}}),
    );
    let mut p = (*other.pod).clone();
    p.metadata.namespace = Some("other".into());
    other = PodInfo::new(Arc::new(p));
    place(&mut c, other).unwrap();
    // Same labels in another namespace do not count for a term without namespaces...
    let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}},
        "nodeSelector": {"kubernetes.io/hostname": "a1"}});
    assert!(schedule(&mut c, &pod("mine", json!({}), spec.clone()), &Objects::default()).is_ok());
    // ...but do with an empty namespaceSelector (all namespaces).
    let mut all = spec;
    all["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["namespaceSelector"] =
        json!({});
    assert!(schedule(&mut c, &pod("mine", json!({}), all), &Objects::default()).is_err());
}

#[test]
fn preferred_pod_affinity_and_anti_affinity_score() {
    let mut c = zones();
    place(
        &mut c,
        pod(
            "db",
            json!({"app": "db"}),
            json!({"nodeSelector": {"kubernetes.io/hostname": "a2"}}),
        ),
    )
    .unwrap();
    let near = json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}}]}}});
    assert_eq!(place(&mut c, pod("n", json!({}), near)).unwrap(), "a2");
    let away = json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}});
    assert_eq!(place(&mut c, pod("f", json!({}), away)).unwrap(), "b1");
}

fn spread(key: &str, skew: i32, when: &str) -> Value {
    json!({"topologySpreadConstraints": [{"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
        "labelSelector": {"matchLabels": {"app": "s"}}}]})
}

#[test]
fn topology_spread_do_not_schedule_balances_zones() {
    let mut c = zones();
    let mut per_zone = BTreeMap::new();
    for i in 0..6 {
        let n = place(
            &mut c,
            pod(
                &format!("s{i}"),
                json!({"app": "s"}),
                spread("zone", 1, "DoNotSchedule"),
            ),
        )
        .unwrap();
        *per_zone.entry(n.starts_with('a')).or_insert(0) += 1;
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), vec![3, 3]);
    // Zone b cannot take more when a is blocked, because the skew would pass 1.
    let only_b = {
        let mut s = spread("zone", 1, "DoNotSchedule");
        s["nodeSelector"] = json!({"zone": "b"});
        s["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!("Ignore");
        s
    };
    place(&mut c, pod("s6", json!({"app": "s"}), only_b.clone())).unwrap();
    assert_eq!(
        place(&mut c, pod("s7", json!({"app": "s"}), only_b)).unwrap_err(),
        "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, \
         2 node(s) didn't match Pod's node affinity/selector."
    );
    // A node without the topology label is not a place for a constrained pod.
    let mut c = cache(vec![node("bare", json!({}), json!({}))]);
    assert_eq!(
        place(
            &mut c,
            pod("x", json!({"app": "s"}), spread("zone", 1, "DoNotSchedule"))
        )
        .unwrap_err(),
        "0/1 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label)."
    );
}

#[test]
fn topology_spread_schedule_anyway_prefers_the_emptier_zone() {
    let mut c = zones();
    for i in 0..2 {
        place(
            &mut c,
            pod(
                &format!("a{i}"),
                json!({"app": "s"}),
                json!({"nodeSelector": {"zone": "a"}}),
            ),
        )
        .unwrap();
    }
    assert_eq!(
        place(
            &mut c,
            pod("s", json!({"app": "s"}), spread("zone", 1, "ScheduleAnyway"))
        )
        .unwrap(),
        "b1"
    );
}

fn objects(claims: Vec<Value>, volumes: Vec<Value>, classes: Vec<Value>) -> Objects {
    let mut o = Objects::default();
    for c in claims {
        let c: PersistentVolumeClaim = serde_json::from_value(c).unwrap();
        o.claims
            .insert(format!("default/{}", c.metadata.name.clone().unwrap()), Arc::new(c));
    }
    for v in volumes {
        let v: PersistentVolume = serde_json::from_value(v).unwrap();
        o.volumes.insert(v.metadata.name.clone().unwrap(), Arc::new(v));
    }
    for c in classes {
        let c: StorageClass = serde_json::from_value(c).unwrap();
        o.classes.insert(c.metadata.name.clone().unwrap(), Arc::new(c));
    }
    o
}

#[test]
fn volumes_pin_pods_and_delay_binding() {
    let mut c = zones();
    let with_claim = |claim: &str| {
        pod(
            "p",
            json!({}),
            json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}),
        )
    };
    let classes = vec![
        json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
               "provisioner": "skiff.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"}),
        json!({"metadata": {"name": "now"}, "provisioner": "x", "volumeBindingMode": "Immediate"}),
    ];
    let claims = vec![
        json!({"metadata": {"name": "bound", "namespace": "default"}, "spec": {"volumeName": "pv1", "storageClassName": "local-path"}}),
        json!({"metadata": {"name": "later", "namespace": "default"}, "spec": {}}),
        json!({"metadata": {"name": "waiting", "namespace": "default"}, "spec": {"storageClassName": "now"}}),
        json!({"metadata": {"name": "nfs", "namespace": "default"}, "spec": {"storageClassName": "managed-nfs-storage"}}),
    ];
    let volumes = vec![
        json!({"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a2"]}]}]}}}}),
    ];
    let o = objects(claims, volumes, classes);
    for _ in 0..3 {
        assert_eq!(schedule(&mut c, &with_claim("bound"), &o).unwrap().node, "a2");
    }
    let d = schedule(&mut c, &with_claim("later"), &o).unwrap();
    assert_eq!(d.provision, vec!["default/later".to_string()]);
    assert_eq!(
        schedule(&mut c, &with_claim("waiting"), &o).unwrap_err(),
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims."
    );
    assert_eq!(
        schedule(&mut c, &with_claim("nfs"), &o).unwrap_err(),
        "0/3 nodes are available: storageclass.storage.k8s.io \"managed-nfs-storage\" not found."
    );
    assert_eq!(
        schedule(&mut c, &with_claim("missing"), &o).unwrap_err(),
        "0/3 nodes are available: persistentvolumeclaim \"missing\" not found."
    );
    let mut pinned = with_claim("bound");
    pinned = pod("q", json!({}), {
        let mut s = serde_json::to_value(pinned.pod.spec.clone().unwrap()).unwrap();
        s["nodeSelector"] = json!({"zone": "b"});
        s
    });
    assert_eq!(
        schedule(&mut c, &pinned, &o).unwrap_err(),
        "0/3 nodes are available: 1 node(s) had volume node affinity conflict, \
         2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn large_clusters_are_sampled_and_rotated() {
    assert_eq!(feasible_nodes_to_find(50), 50);
    assert_eq!(feasible_nodes_to_find(1000), 420);
    assert_eq!(feasible_nodes_to_find(5000), 500);
    assert_eq!(feasible_nodes_to_find(100_000), 5000);
    let nodes = (0..1000)
        .map(|i| node(&format!("n{i}"), json!({}), json!({})))
        .collect();
    let mut c = cache(nodes);
    let mut used = BTreeSet::new();
    for i in 0..1000 {
        used.insert(place(&mut c, pod(&format!("p{i}"), json!({}), json!({}))).unwrap());
    }
    assert!(
        used.len() > 900,
        "pods spread over the cluster: {} nodes used",
        used.len()
    );
}

#[test]
fn cache_tracks_bound_pods_and_ghost_nodes() {
    let mut c = zones();
    let p = pod(
        "p",
        json!({}),
        json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}),
    );
    c.assume(p.clone(), "a1");
    assert!(c.is_assumed("default/p"));
    assert_eq!(c.node("a1").unwrap().requested.cpu, 1000);
    // The API shows it bound elsewhere: the assumption is replaced.
    c.add_pod(p.clone(), "b1");
    assert!(!c.is_assumed("default/p"));
    assert_eq!(c.node("a1").unwrap().requested.cpu, 0);
    assert_eq!(c.node("b1").unwrap().requested.cpu, 1000);
    // A pod on an unknown node keeps a placeholder that is not schedulable.
    c.add_pod(pod("q", json!({}), json!({})), "ghost");
    assert_eq!(c.node_count(), 3);
    c.remove_pod("default/q");
    assert!(c.node("ghost").is_none());
    c.remove_node("b1");
    assert!(c.node("b1").is_some(), "kept while a pod is there");
    c.remove_pod("default/p");
    assert!(c.node("b1").is_none());
}

use std::collections::BTreeSet;
