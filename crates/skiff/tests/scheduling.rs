//! The scheduler as a user meets it through real kubectl, on simulated nodes: topology spread,
//! anti-affinity with the Unschedulable reason and a node added by `skiff agent --simulated`
//! (a separate process), cordons and taints, host ports, and volumes bound where their first
//! consumer runs.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Kubectl, SkiffServer};

/// Poll until `f` returns `Some`, for up to 30 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// `node=count` of the running pods with label `app`.
fn placement(k: &Kubectl, app: &str) -> BTreeMap<String, usize> {
    let out = k.ok(&[
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let mut m = BTreeMap::new();
    for n in out.lines().filter(|l| !l.is_empty()) {
        *m.entry(n.to_string()).or_insert(0) += 1;
    }
    m
}

fn deployment(name: &str, replicas: u32, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n{pod_spec}      containers:\n      - name: c\n        image: registry.local/app:1\n"
    )
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `skiff agent --simulated` in its own process, joining with the server's token and CA.
fn agent(server: &SkiffServer, prefix: &str, nodes: usize) -> Agent {
    let token = std::fs::read_to_string(server.dir.path().join("token")).expect("token");
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["agent", "--simulated", "--heartbeat", "2", "--node-name-prefix", prefix])
        .args(["--simulated-nodes", &nodes.to_string()])
        .args(["--server", &format!("https://127.0.0.1:{}", server.port)])
        .args(["--token", token.trim()])
        .arg("--ca-file")
        .arg(server.dir.path().join("tls/ca.crt"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start skiff agent");
    Agent(child)
}

fn scheduling_constraints(version: &str) {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "3"]);
    let k = Kubectl::new(version, &server);
    eventually("3 nodes", || {
        (k.ok(&["get", "nodes", "-o", "name"]).lines().count() == 3).then_some(())
    });
    for (node, zone) in [("sim-node-0", "a"), ("sim-node-1", "a"), ("sim-node-2", "b")] {
        k.ok(&["label", "node", node, &format!("topology.kubernetes.io/zone={zone}")]);
    }

    // Spread evenly over zones: with maxSkew 1, zone b's one node takes half.
    let spread = "      topologySpreadConstraints:\n      - maxSkew: 1\n        topologyKey: topology.kubernetes.io/zone\n        whenUnsatisfiable: DoNotSchedule\n        labelSelector:\n          matchLabels:\n            app: spread\n";
    k.ok_stdin(&["apply", "-f", "-"], &deployment("spread", 4, spread));
    k.ok(&["rollout", "status", "deployment/spread", "--timeout=60s"]);
    let p = placement(&k, "spread");
    assert_eq!(p.get("sim-node-2"), Some(&2), "{p:?}");

    // One replica per host: the fourth cannot run, and says why.
    let anti = "      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - topologyKey: kubernetes.io/hostname\n            labelSelector:\n              matchLabels:\n                app: solo\n";
    k.ok_stdin(&["apply", "-f", "-"], &deployment("solo", 4, anti));
    let pending = eventually("an unschedulable solo pod", || {
        let out = k.ok(&[
            "get",
            "pods",
            "-l",
            "app=solo",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"PodScheduled\")].message};{end}",
        ]);
        out.split(';')
            .find(|e| e.contains("nodes are available"))
            .map(str::to_string)
    });
    assert!(
        pending.ends_with("=0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."),
        "{pending}"
    );
    assert_eq!(placement(&k, "solo").len(), 3);
    let pod = pending.split('=').next().expect("name").to_string();
    let events = eventually("a FailedScheduling event", || {
        let out = k.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod},reason=FailedScheduling"),
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert!(events.contains("didn't match pod anti-affinity rules"), "{events}");

    // A node joins from another process: the fourth replica runs there.
    let _agent = agent(&server, "extra-", 1);
    k.ok(&["rollout", "status", "deployment/solo", "--timeout=60s"]);
    assert_eq!(placement(&k, "solo").get("extra-0"), Some(&1));
    assert_eq!(
        k.ok(&["get", "node", "extra-0", "-o", "jsonpath={.status.capacity.pods}"]),
        "110"
    );

    // Cordoned and tainted nodes take no new pods; a toleration opens the tainted one.
    k.ok(&["cordon", "extra-0"]);
    k.ok(&["taint", "node", "sim-node-0", "dedicated=db:NoSchedule"]);
    k.ok_stdin(&["apply", "-f", "-"], &deployment("plain", 6, ""));
    k.ok(&["rollout", "status", "deployment/plain", "--timeout=60s"]);
    let p = placement(&k, "plain");
    assert!(!p.contains_key("extra-0") && !p.contains_key("sim-node-0"), "{p:?}");
    let tolerate = "      tolerations:\n      - key: dedicated\n        operator: Equal\n        value: db\n        effect: NoSchedule\n      nodeSelector:\n        kubernetes.io/hostname: sim-node-0\n";
    k.ok_stdin(&["apply", "-f", "-"], &deployment("db", 1, tolerate));
    k.ok(&["rollout", "status", "deployment/db", "--timeout=60s"]);
    assert_eq!(placement(&k, "db").get("sim-node-0"), Some(&1));

    // Two pods cannot hold the same host port on one node.
    let port = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: ports\nspec:\n  nodeSelector:\n    kubernetes.io/hostname: sim-node-1\n  containers:\n  - name: c\n    image: registry.local/app:1\n    ports:\n    - containerPort: 80\n      hostPort: 8080\n")
    };
    k.ok_stdin(&["apply", "-f", "-"], &port("port-a"));
    k.ok(&["wait", "--for=condition=Ready", "pod/port-a", "--timeout=30s"]);
    k.ok_stdin(&["apply", "-f", "-"], &port("port-b"));
    let why = eventually("port-b unschedulable", || {
        let out = k.ok(&[
            "get",
            "pod",
            "port-b",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert!(
        why.contains("1 node(s) didn't have free ports for the requested pod ports"),
        "{why}"
    );
    // Freeing the port lets the waiting pod in.
    k.ok(&["delete", "pod", "port-a", "--wait=false"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/port-b", "--timeout=30s"]);
}

#[test]
fn scheduling_constraints_kubectl_1_27() {
    scheduling_constraints("1.27");
}

#[test]
fn scheduling_constraints_kubectl_1_33() {
    scheduling_constraints("1.33");
}

/// The default `local-path` class binds when the first pod that uses a claim is scheduled; the
/// volume then pins later pods of the claim to that node.
#[test]
fn volumes_bind_where_their_first_consumer_runs() {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "3"]);
    let k = Kubectl::new("1.33", &server);
    k.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n",
    );
    let events = eventually("a WaitForFirstConsumer event", || {
        let out = k.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=data,reason=WaitForFirstConsumer",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(events, "waiting for first consumer to be created before binding");
    assert_eq!(
        k.ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]),
        "Pending"
    );
    let pod = |name: &str, selector: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{selector}  containers:\n  - name: c\n    image: registry.local/app:1\n    volumeMounts:\n    - name: d\n      mountPath: /data\n  volumes:\n  - name: d\n    persistentVolumeClaim:\n      claimName: data\n")
    };
    k.ok_stdin(&["apply", "-f", "-"], &pod("writer", ""));
    k.ok(&["wait", "--for=condition=Ready", "pod/writer", "--timeout=30s"]);
    assert_eq!(k.ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]), "Bound");
    let node = k.ok(&["get", "pod", "writer", "-o", "jsonpath={.spec.nodeName}"]);
    let pv = k.ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    assert_eq!(
        k.ok(&[
            "get",
            "pv",
            &pv,
            "-o",
            "jsonpath={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
        ]),
        node
    );
    k.ok(&["delete", "pod", "writer"]);
    // Elsewhere is impossible; anywhere means the volume's node.
    let other = ["sim-node-0", "sim-node-1", "sim-node-2"]
        .into_iter()
        .find(|n| *n != node)
        .expect("another node");
    k.ok_stdin(
        &["apply", "-f", "-"],
        &pod(
            "elsewhere",
            &format!("  nodeSelector:\n    kubernetes.io/hostname: {other}\n"),
        ),
    );
    let why = eventually("elsewhere unschedulable", || {
        let out = k.ok(&[
            "get",
            "pod",
            "elsewhere",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(
        why,
        "0/3 nodes are available: 1 node(s) had volume node affinity conflict, \
         2 node(s) didn't match Pod's node affinity/selector."
    );
    for i in 0..3 {
        let name = format!("reader-{i}");
        k.ok_stdin(&["apply", "-f", "-"], &pod(&name, ""));
        k.ok(&["wait", "--for=condition=Ready", &format!("pod/{name}"), "--timeout=30s"]);
        assert_eq!(k.ok(&["get", "pod", &name, "-o", "jsonpath={.spec.nodeName}"]), node);
    }
}

/// `skiff agent` says what is wrong instead of starting half-configured.
#[test]
fn agent_refuses_bad_invocations() {
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &[]);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("agent")
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("SKIFF_TOKEN")
            .env_remove("SKIFF_URL")
            .output()
            .expect("run skiff agent");
        assert!(!out.status.success(), "skiff agent {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&[]);
    if skiff_runtime::testing::is_root() {
        assert!(err.contains("say which server to join"), "{err}");
    } else {
        assert!(err.contains("the node agent needs root"), "{err}");
    }
    assert!(run(&["--simulated"]).contains("say which server to join"));
    let url = format!("https://127.0.0.1:{}", server.port);
    let err = run(&["--simulated", "--server", &url, "--token", "t"]);
    assert!(err.contains("--ca-file"), "{err}");
    let ca = server.dir.path().join("tls/ca.crt");
    let ca = ca.to_str().expect("path");
    let err = run(&[
        "--simulated",
        "--server",
        &url,
        "--token",
        "not-the-token",
        "--ca-file",
        ca,
    ]);
    assert!(err.contains("contacting the server") && err.contains("401"), "{err}");
    let err = run(&[
        "--simulated",
        "--server",
        &url,
        "--token",
        "t",
        "--ca-file",
        "/nonexistent/ca.crt",
    ]);
    assert!(err.contains("reading /nonexistent/ca.crt"), "{err}");
    // Nothing joined.
    let k = Kubectl::new("1.33", &server);
    assert_eq!(k.ok(&["get", "nodes", "-o", "name"]), "");
}
