//! Three Skiff nodes on one machine ([`support::cluster`]): pods reach pods on other nodes
//! directly and through a ClusterIP, with their addresses kept; scaling and a rolling update
//! never fail a request of a client that retries an idempotent GET once; a node that leaves
//! takes its routes and its pods' endpoints with it. Driven by real kubectl 1.27 and 1.33.
//!
//! **Needs root**; runs itself inside fresh namespaces, where the test builds its own LAN.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::cluster::Cluster;
use support::node::{inside_namespaces, wait_for, IMAGE};
use support::Kubectl;

/// An httpd that answers `GET /` with its pod's name (its hostname), logging every request
/// with the client's address; spread over the nodes; ready once it answers. It stops at once
/// on SIGTERM, as most servers do (a bare httpd as PID 1 would ignore it until SIGKILL).
fn echo_deployment() -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "echo"}},
  "spec": {{"replicas": 3, "selector": {{"matchLabels": {{"app": "echo"}}}},
    "template": {{"metadata": {{"labels": {{"app": "echo"}}}},
      "spec": {{"terminationGracePeriodSeconds": 5,
        "topologySpreadConstraints": [{{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
          "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {{"matchLabels": {{"app": "echo"}}}},
          "matchLabelKeys": ["pod-template-hash"]}}],
        "containers": [{{"name": "httpd", "image": "{IMAGE}", "imagePullPolicy": "IfNotPresent",
          "command": ["sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && httpd -f -v -p 8080 -h /tmp/www & trap 'kill $!; exit 0' TERM; wait"],
          "ports": [{{"name": "http", "containerPort": 8080}}],
          "readinessProbe": {{"httpGet": {{"path": "/", "port": "http"}}, "periodSeconds": 1}}}}]}}}}}}}}"#
    )
}

const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
  "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": "http"}]}}"#;

/// A pod on `node` that runs `command`.
fn pod_on(name: &str, node: &str, command: &[&str]) -> String {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1, "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": command}]}})
    .to_string()
}

/// (busybox 1.35's `wget -T` crashes: the timeout is `timeout`'s.)
/// The client: GETs `http://$1/` in a loop until `/tmp/stop` exists, retrying a failed GET
/// once; the names that answered go to `/tmp/names`, failures to `/tmp/log`, the counts to
/// `/tmp/result` at the end (then it sleeps: a restarted container would start afresh).
const LOAD: &str = r#"
ok=0; retried=0; failed=0
while [ ! -e /tmp/stop ]; do
  if body=$(timeout 5 wget -q -O - "http://$1/" 2>/tmp/err1); then
    ok=$((ok+1))
  elif body=$(timeout 5 wget -q -O - "http://$1/" 2>/tmp/err2); then
    ok=$((ok+1)); retried=$((retried+1))
    echo "$(date +%T) retried after: $(cat /tmp/err1)" >> /tmp/log
  else
    failed=$((failed+1))
    echo "$(date +%T) failed twice: $(cat /tmp/err1) / $(cat /tmp/err2)" >> /tmp/log
  fi
  echo "$body" >> /tmp/names
done
echo "ok=$ok retried=$retried failed=$failed" > /tmp/result
exec sleep 3600
"#;

fn jsonpath(k: &Kubectl, args: &[&str], path: &str) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend(["-o", &p]);
    k.ok(&all).trim().to_string()
}

/// `pod name -> (node, pod IP)` of the echo pods that are Ready.
fn ready_echo_pods(k: &Kubectl) -> BTreeMap<String, (String, String)> {
    let text = jsonpath(
        k,
        &["get", "pods", "-l", "app=echo"],
        r#"{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.metadata.deletionTimestamp} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
    );
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Terminating pods have a fourth field (the deletion timestamp) before "True".
            (f.len() == 4 && f[3] == "True").then(|| (f[0].to_string(), (f[1].to_string(), f[2].to_string())))
        })
        .collect()
}

/// `wget -O - URL` in pod `pod`; the body, or the error.
fn wget_in(k: &Kubectl, pod: &str, url: &str) -> Result<String, String> {
    let out = k.run(&["exec", pod, "--", "timeout", "5", "wget", "-q", "-O", "-", url]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The addresses in the service's EndpointSlices that are ready.
/// The echo Deployment and its ClusterIP Service applied (with `old`), rolled out (seen by
/// `new`): its ready pods once there is one on each of the three nodes.
fn deploy_echo(old: &Kubectl, new: &Kubectl) -> BTreeMap<String, (String, String)> {
    old.ok_stdin(&["apply", "-f", "-"], &echo_deployment());
    old.ok_stdin(&["apply", "-f", "-"], SERVICE);
    new.ok(&["rollout", "status", "deployment/echo", "--timeout=120s"]);
    wait_for(60, "3 ready echo pods, one per node", || {
        let p = ready_echo_pods(new);
        let nodes: BTreeSet<&String> = p.values().map(|(n, _)| n).collect();
        (p.len() == 3 && nodes.len() == 3).then_some(p)
    })
}

fn ready_endpoints(k: &Kubectl) -> BTreeSet<String> {
    jsonpath(
        k,
        &["get", "endpointslices", "-l", "kubernetes.io/service-name=echo"],
        r#"{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}"#,
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn three_nodes_route_pods_and_services_through_scaling_and_rollouts() {
    if !inside_namespaces("three_nodes_route_pods_and_services_through_scaling_and_rollouts") {
        return;
    }
    let mut cluster = Cluster::start(3);
    println!(
        "3 nodes Ready {} ms after the server started",
        cluster.ready_after.as_millis()
    );
    let old = cluster.kubectl("1.27");
    let new = cluster.kubectl("1.33");

    // Every node has its own pod CIDR, and every other node a route to it via its address.
    let mut cidrs: BTreeMap<String, String> = BTreeMap::new();
    for h in &cluster.hosts {
        let c = jsonpath(&old, &["get", "node", &h.node], "{.spec.podCIDR}");
        assert!(c.starts_with("10.42.") && c.ends_with("/24"), "{}: {c}", h.node);
        cidrs.insert(h.node.clone(), c);
    }
    let distinct: BTreeSet<&String> = cidrs.values().collect();
    assert_eq!(distinct.len(), 3, "distinct pod CIDRs: {cidrs:?}");
    let wide = new.ok(&["get", "nodes", "-o", "wide"]);
    for h in &cluster.hosts {
        assert!(wide.contains(&h.ip.to_string()), "{} at {}: {wide}", h.node, h.ip);
    }
    for h in &cluster.hosts {
        for peer in cluster.hosts.iter().filter(|p| p.index != h.index) {
            let want = format!("{} via {} dev eth0 proto 115", cidrs[&peer.node], peer.ip);
            wait_for(20, &format!("{}'s route to {}'s pods", h.node, peer.node), || {
                h.routes().iter().any(|r| r.starts_with(&want)).then_some(())
            });
        }
    }

    // The echo Deployment, one pod per node, behind a ClusterIP.
    let pods = deploy_echo(&old, &new);
    for (name, (node, ip)) in &pods {
        let net: ipnet::Ipv4Net = cidrs[node].parse().expect("cidr");
        assert!(
            net.contains(&ip.parse::<std::net::Ipv4Addr>().expect("pod IP")),
            "{name} at {ip} in {node}'s CIDR"
        );
    }
    let cluster_ip = jsonpath(&new, &["get", "service", "echo"], "{.spec.clusterIP}");
    // Every node's proxy has every endpoint (EndpointSlices are cluster-wide).
    let endpoints: BTreeSet<String> = pods.values().map(|(_, ip)| ip.clone()).collect();
    for h in &cluster.hosts {
        wait_for(
            20,
            &format!("{}'s service rules to hold every endpoint", h.node),
            || {
                let rules = h.ok("nft", &["list", "table", "ip", "skiff-services"]);
                endpoints
                    .iter()
                    .all(|ip| rules.contains(&format!("dnat to {ip}:8080")))
                    .then_some(())
            },
        );
    }

    // A client pod on node-0 reaches the pods on node-1 and node-2 at their own addresses,
    // and they see the client's pod address (nothing masqueraded between nodes).
    new.ok_stdin(&["apply", "-f", "-"], &pod_on("probe", "node-0", &["sleep", "3600"]));
    new.ok(&["wait", "--for=condition=Ready", "pod/probe", "--timeout=60s"]);
    let probe_ip = jsonpath(&new, &["get", "pod", "probe"], "{.status.podIP}");
    for (name, (node, ip)) in pods.iter().filter(|(_, (n, _))| n != "node-0") {
        let body = wget_in(&new, "probe", &format!("http://{ip}:8080/"))
            .unwrap_or_else(|e| panic!("probe -> {name} on {node}: {e}"));
        assert_eq!(&body, name, "{name} on {node} answers with its name");
        let logs = old.ok(&["logs", name]);
        assert!(
            logs.contains(&probe_ip),
            "{name} on {node} saw the client's pod address {probe_ip}: {logs}"
        );
    }
    // Through the ClusterIP every pod answers, on every node.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        let body = wget_in(&new, "probe", &format!("http://{cluster_ip}/")).expect("probe -> the ClusterIP");
        assert!(pods.contains_key(&body), "answered by an echo pod: {body}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 3, "every pod answers through the ClusterIP: {seen:?}");
    // So does the node itself (host 0's own network namespace), to pods on other nodes.
    let mut from_host = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while from_host.len() < 3 && Instant::now() < deadline {
        from_host.insert(
            cluster.hosts[0]
                .ok(
                    "timeout",
                    &[
                        "5",
                        "busybox",
                        "wget",
                        "-q",
                        "-O",
                        "-",
                        &format!("http://{cluster_ip}/"),
                    ],
                )
                .trim()
                .to_string(),
        );
    }
    assert_eq!(
        from_host.len(),
        3,
        "every pod answers node-0 through the ClusterIP: {from_host:?}"
    );

    // The cluster DNS answers on every node (each node's own server): the service's name from
    // a pod, and from every host at the cluster DNS address.
    let by_name = wget_in(&new, "probe", "http://echo/").expect("probe -> http://echo/");
    assert!(pods.contains_key(&by_name), "answered by an echo pod: {by_name}");
    for h in &cluster.hosts {
        let out = h.exec(
            "busybox",
            &["nslookup", "echo.default.svc.cluster.local.", "10.43.0.10"],
        );
        let answer = String::from_utf8_lossy(&out.stdout);
        assert!(answer.contains(&cluster_ip), "{}'s DNS: {answer}", h.node);
    }

    // Scaling and a rolling update under load: a client on node-0 GETs the ClusterIP in a
    // loop, retrying a failed GET once; not one request may fail.
    new.ok_stdin(
        &["apply", "-f", "-"],
        &pod_on("load", "node-0", &["sh", "-c", LOAD, "sh", &cluster_ip]),
    );
    new.ok(&["wait", "--for=condition=Ready", "pod/load", "--timeout=60s"]);
    wait_for(30, "the load client's first answers", || {
        let n = new.run(&["exec", "load", "--", "sh", "-c", "wc -l < /tmp/names"]);
        String::from_utf8_lossy(&n.stdout)
            .trim()
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
            .then_some(())
    });
    let load_started = Instant::now();
    new.ok(&["scale", "deployment/echo", "--replicas=6"]);
    new.ok(&["rollout", "status", "deployment/echo", "--timeout=120s"]);
    wait_for(60, "6 ready echo pods", || {
        (ready_echo_pods(&new).len() == 6).then_some(())
    });
    old.ok(&["scale", "deployment/echo", "--replicas=3"]);
    old.ok(&["rollout", "status", "deployment/echo", "--timeout=120s"]);
    wait_for(60, "3 echo pods left", || {
        let all = jsonpath(&new, &["get", "pods", "-l", "app=echo"], "{.items[*].metadata.name}");
        (all.split_whitespace().count() == 3).then_some(())
    });
    new.ok(&["set", "env", "deployment/echo", "REVISION=2"]);
    new.ok(&["rollout", "status", "deployment/echo", "--timeout=180s"]);
    wait_for(60, "the old revision's pods gone", || {
        let all = jsonpath(&new, &["get", "pods", "-l", "app=echo"], "{.items[*].metadata.name}");
        (all.split_whitespace().count() == 3).then_some(())
    });
    // Let the last terminations settle under load too.
    std::thread::sleep(Duration::from_secs(2));
    new.ok(&["exec", "load", "--", "touch", "/tmp/stop"]);
    let mut result = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while result.is_none() && Instant::now() < deadline {
        let out = new.run(&["exec", "load", "--", "cat", "/tmp/result"]);
        result = out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string());
        std::thread::sleep(Duration::from_millis(200));
    }
    let Some(result) = result else {
        let state = new.run(&[
            "exec",
            "load",
            "--",
            "sh",
            "-c",
            "ls -la /tmp; tail -5 /tmp/names; cat /tmp/log /tmp/err1 /tmp/err2",
        ]);
        panic!(
            "the load client did not finish: {}{}",
            String::from_utf8_lossy(&state.stdout),
            String::from_utf8_lossy(&state.stderr)
        );
    };
    let log = new.run(&["exec", "load", "--", "cat", "/tmp/log"]);
    let log = String::from_utf8_lossy(&log.stdout).into_owned();
    let answered = new.ok(&["exec", "load", "--", "sh", "-c", "sort /tmp/names | uniq -c"]);
    println!(
        "load over {} ms of scaling 3 -> 6 -> 3 and a rolling update: {result}\nanswers by pod:\n{answered}retries and failures:\n{log}",
        load_started.elapsed().as_millis()
    );
    let count = |key: &str| -> u64 {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} in {result:?}"))
    };
    assert_eq!(count("failed"), 0, "requests failed even after a retry: {log}");
    assert!(count("ok") > 100, "the client kept calling: {result}");
    let answering: BTreeSet<&str> = answered.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let last: BTreeSet<String> = ready_echo_pods(&new).into_keys().collect();
    for name in pods.keys().chain(&last) {
        assert!(
            answering.contains(name.as_str()),
            "{name} (of the first or the last revision) answered the client: {answered}"
        );
    }

    // An agent restart reconciles its routes: one of Skiff's that no node wants any more goes,
    // a route someone else made stays, and pods on the other nodes stay reachable.
    cluster.kill(1);
    let h1 = &cluster.hosts[1];
    h1.ok(
        "ip",
        &["route", "add", "10.42.250.0/24", "via", "192.168.77.99", "proto", "115"],
    );
    h1.ok("ip", &["route", "add", "10.99.0.0/24", "via", "192.168.77.98"]);
    cluster.restart(1);
    let h1 = &cluster.hosts[1];
    wait_for(20, "node-1's stale route removed after its restart", || {
        (!h1.routes().iter().any(|r| r.starts_with("10.42.250.0/24"))).then_some(())
    });
    assert!(
        h1.routes()
            .iter()
            .any(|r| r.starts_with("10.99.0.0/24 via 192.168.77.98")),
        "a route Skiff did not make stays: {:?}",
        h1.routes()
    );
    for peer in [&cluster.hosts[0], &cluster.hosts[2]] {
        let want = format!("{} via {} dev eth0 proto 115", cidrs[&peer.node], peer.ip);
        assert!(
            h1.routes().iter().any(|r| r.starts_with(&want)),
            "{want}: {:?}",
            h1.routes()
        );
    }
    let on_node_1: Vec<(String, String)> = ready_echo_pods(&new)
        .into_iter()
        .filter(|(_, (n, _))| n == "node-1")
        .map(|(name, (_, ip))| (name, ip))
        .collect();
    for (name, ip) in &on_node_1 {
        let body =
            wget_in(&new, "probe", &format!("http://{ip}:8080/")).expect("a pod on node-1 after its agent restarted");
        assert_eq!(&body, name);
    }

    // A node leaves: its agent dies and its Node is deleted. The other nodes drop their route
    // to its pods, its pods leave the service, and the service keeps answering from the rest.
    let gone = cluster.hosts[2].node.clone();
    let gone_cidr = cidrs[&gone].clone();
    let gone_net: ipnet::Ipv4Net = gone_cidr.parse().expect("cidr");
    cluster.kill(2);
    old.ok(&["delete", "node", &gone]);
    let removed_at = Instant::now();
    for h in &cluster.hosts[..2] {
        wait_for(20, &format!("{}'s route to {gone}'s pods removed", h.node), || {
            (!h.routes().iter().any(|r| r.starts_with(&gone_cidr))).then_some(())
        });
    }
    println!(
        "routes to {gone}'s pods removed {} ms after its Node was deleted",
        removed_at.elapsed().as_millis()
    );
    let remaining = wait_for(60, "the service's endpoints without the gone node's pods", || {
        let eps = ready_endpoints(&new);
        let off = eps
            .iter()
            .any(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| gone_net.contains(&ip)));
        (!off && eps.len() == 3).then_some(eps)
    });
    println!(
        "endpoints without {gone}'s pods {} ms after its Node was deleted",
        removed_at.elapsed().as_millis()
    );
    let names: BTreeSet<String> = ready_echo_pods(&new).keys().cloned().collect();
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let body = wget_in(&new, "probe", &format!("http://{cluster_ip}/")).expect("the service still answers");
        assert!(
            names.contains(&body),
            "answered by a pod on a remaining node: {body} ({remaining:?})"
        );
        seen.insert(body);
    }
    assert!(seen.len() >= 2, "answers from more than one pod: {seen:?}");
}

/// A node on another network (not on the LAN's segment: routed through a router) is reached
/// over the VXLAN overlay: pods on the LAN and on the far node call each other at their own
/// addresses and through a ClusterIP, and the DNS works there too; when the far node leaves,
/// its overlay entries and route go.
#[test]
fn a_node_on_another_network_is_reached_over_vxlan() {
    if !inside_namespaces("a_node_on_another_network_is_reached_over_vxlan") {
        return;
    }
    let mut cluster = Cluster::start_with(2, 1);
    let new = cluster.kubectl("1.33");
    let old = cluster.kubectl("1.27");
    let far = &cluster.hosts[2];
    assert_eq!(far.ip.to_string(), "192.168.80.10", "node-2 is on a network of its own");
    let far_cidr = jsonpath(&new, &["get", "node", "node-2"], "{.spec.podCIDR}");
    // node-0 reaches node-2's pods over the overlay, node-1 directly.
    let via_overlay = wait_for(20, "node-0's overlay route to node-2's pods", || {
        cluster.hosts[0]
            .routes()
            .into_iter()
            .find(|r| r.starts_with(&far_cidr) && r.contains("dev skiff.vxlan") && r.contains("onlink"))
    });
    assert!(via_overlay.contains("proto 115"), "{via_overlay}");
    let lan_cidr = jsonpath(&new, &["get", "node", "node-1"], "{.spec.podCIDR}");
    assert!(
        cluster.hosts[0]
            .routes()
            .iter()
            .any(|r| r.starts_with(&format!("{lan_cidr} via 192.168.77.11 dev eth0"))),
        "node-1 stays direct"
    );
    let fdb = cluster.hosts[0].ok("bridge", &["fdb", "show", "dev", "skiff.vxlan"]);
    assert!(fdb.contains("0e:5f:c0:a8:50:0a dst 192.168.80.10"), "{fdb}");

    let pods = deploy_echo(&old, &new);
    let (far_pod, (_, far_ip)) = pods.iter().find(|(_, (n, _))| n == "node-2").expect("a pod on node-2");
    new.ok_stdin(&["apply", "-f", "-"], &pod_on("probe", "node-0", &["sleep", "3600"]));
    new.ok(&["wait", "--for=condition=Ready", "pod/probe", "--timeout=60s"]);
    let probe_ip = jsonpath(&new, &["get", "pod", "probe"], "{.status.podIP}");
    let body = wget_in(&new, "probe", &format!("http://{far_ip}:8080/")).expect("probe -> the far pod");
    assert_eq!(&body, far_pod);
    assert!(
        old.ok(&["logs", far_pod]).contains(&probe_ip),
        "the far pod saw the client's own address"
    );
    // The other way: a pod on the far node reaches every pod through the ClusterIP, by name.
    new.ok_stdin(
        &["apply", "-f", "-"],
        &pod_on("far-probe", "node-2", &["sleep", "3600"]),
    );
    new.ok(&["wait", "--for=condition=Ready", "pod/far-probe", "--timeout=60s"]);
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 3 && Instant::now() < deadline {
        seen.insert(wget_in(&new, "far-probe", "http://echo/").expect("far-probe -> http://echo/"));
    }
    assert_eq!(
        seen.len(),
        3,
        "every pod answers the far node through the ClusterIP: {seen:?}"
    );

    // The far node leaves: its route and overlay entries go from node-0.
    cluster.kill(2);
    new.ok(&["delete", "node", "node-2"]);
    wait_for(30, "node-0's overlay entries for node-2 removed", || {
        let routes = cluster.hosts[0].routes();
        let fdb = cluster.hosts[0].ok("bridge", &["fdb", "show", "dev", "skiff.vxlan"]);
        (!routes.iter().any(|r| r.starts_with(&far_cidr)) && !fdb.contains("192.168.80.10")).then_some(())
    });
}
