//! The node agent end to end: `skiff server` with its embedded agent runs pods as real OCI
//! containers (built-in runtime), on the pod network, driven by real kubectl 1.27 and 1.33.
//!
//! **Needs root** (namespaces, mounts, cgroups, a bridge); fails without it. The test runs
//! itself again inside fresh network, mount and PID namespaces (`unshare`): that namespace is
//! the node, so the bridge, veths and mounts never touch the machine's own, and every process
//! the test started (server, shims, containers) dies with it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_runtime::testing;
use support::node::{
    bring_up_loopback, http_get, http_get_path, import_test_image, inside_namespaces, test_image, wait_for, IMAGE,
};
use support::{Kubectl, SkiffServer};

fn jsonpath(k: &Kubectl, pod: &str, path: &str) -> String {
    let out = k.run(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The CRI log lines of a pod's container, message part only.
fn log_lines(agent_dir: &Path, pod: &str, container: &str) -> Vec<String> {
    let Ok(pods) = std::fs::read_dir(agent_dir.join("pod-logs")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in pods.flatten() {
        if !d.file_name().to_string_lossy().starts_with(&format!("default_{pod}_")) {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(d.path().join(container).join("0.log")) {
            out.extend(text.lines().filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string)));
        }
    }
    out
}

/// `kubectl run web` with busybox httpd serving the image's page on port 8080.
fn run_web(k: &Kubectl) {
    k.ok(&[
        "run",
        "web",
        "--image",
        IMAGE,
        "--image-pull-policy=IfNotPresent",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/srv",
    ]);
}

/// The embedded agent's flags: node `test-node` at 127.0.0.1.
fn agent_flags(run_dir: &Path, registries: &Path) -> Vec<String> {
    [
        "--node-name",
        "test-node",
        "--node-ip",
        "127.0.0.1",
        "--run-dir",
        run_dir.to_str().expect("path"),
        "--private-registry",
        registries.to_str().expect("path"),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The test's node: loopback up, the test image imported, `skiff server` with its embedded
/// agent (node `test-node` at 127.0.0.1). Returns the server, the agent's and the run
/// directories.
fn start_node() -> (SkiffServer, std::path::PathBuf, std::path::PathBuf) {
    start_node_with(Path::new("/nonexistent/registries.yaml"), &[])
}

/// [`start_node`] with a registries.yaml and more `skiff server` flags.
fn start_node_with(registries: &Path, extra: &[&str]) -> (SkiffServer, std::path::PathBuf, std::path::PathBuf) {
    bring_up_loopback();
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    import_test_image(&agent_dir);
    let run_dir = dir.path().join("run");
    let flags = agent_flags(&run_dir, registries);
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    (SkiffServer::start_with_agent(dir, &flags), agent_dir, run_dir)
}

#[test]
fn pods_run_as_containers_on_the_pod_network() {
    if !inside_namespaces("pods_run_as_containers_on_the_pod_network") {
        return;
    }
    let (server, agent_dir, run_dir) = start_node();
    let new = Kubectl::new("1.33", &server);
    let old = Kubectl::new("1.27", &server);

    // The machine is a Ready node with its facts.
    wait_for(60, "the node to be Ready", || {
        let out = old.run(&["get", "nodes", "-o", "wide", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.contains("test-node") && text.contains(" Ready ")).then_some(text)
    });
    let wide = new.ok(&["get", "nodes", "-o", "wide"]);
    assert!(wide.contains("skiff://"), "container runtime shown: {wide}");
    assert!(wide.contains("127.0.0.1"), "internal IP shown: {wide}");
    let cidr = new.ok(&["get", "node", "test-node", "-o", "jsonpath={.spec.podCIDR}"]);
    assert!(
        cidr.starts_with("10.42.") && cidr.ends_with("/24"),
        "pod CIDR assigned: {cidr}"
    );

    // A web server pod, created with the oldest kubectl, serves on its pod IP.
    run_web(&old);
    new.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let ip = jsonpath(&new, "web", "{.status.podIP}");
    let net: ipnet::Ipv4Net = cidr.parse().expect("cidr");
    let pod_ip: std::net::Ipv4Addr = ip.parse().expect("pod IP");
    assert!(net.contains(&pod_ip), "pod IP {ip} in the node's CIDR {cidr}");
    let page = http_get(SocketAddr::from((pod_ip, 8080))).expect("reach the pod");
    assert!(page.contains("hello from a skiff pod"), "{page}");
    let row = new.ok(&["get", "pod", "web", "--no-headers"]);
    assert!(row.contains("1/1") && row.contains("Running"), "{row}");

    // Probes: readiness over HTTP and TCP, liveness by exec in the container.
    let probed = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
      "spec": {"terminationGracePeriodSeconds": 1, "containers": [
        {"name": "web", "image": "registry.test/busybox:1", "imagePullPolicy": "IfNotPresent",
         "command": ["httpd", "-f", "-p", "8080", "-h", "/srv"],
         "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1}},
        {"name": "closed", "image": "registry.test/busybox:1", "imagePullPolicy": "IfNotPresent",
         "command": ["sleep", "3600"],
         "readinessProbe": {"tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 1}},
        {"name": "flaky", "image": "registry.test/busybox:1", "imagePullPolicy": "IfNotPresent",
         "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"],
         "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1}}]}}"#;
    new.ok_stdin(&["apply", "-f", "-"], probed);
    wait_for(60, "probes to decide", || {
        let ready = jsonpath(&new, "probed", "{.status.containerStatuses[*].ready}");
        let restarts = jsonpath(&new, "probed", "{.status.containerStatuses[2].restartCount}");
        (ready.starts_with("true false") && restarts.parse::<u32>().is_ok_and(|r| r >= 1)).then_some(ready)
    });
    let cond = jsonpath(&new, "probed", "{.status.conditions[?(@.type==\"Ready\")].status}");
    assert_eq!(cond, "False", "a container that is not ready keeps the pod not ready");
    let events = new.ok(&["get", "events", "--field-selector", "involvedObject.name=probed"]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    assert!(events.contains("failed liveness probe, will be restarted"), "{events}");
    new.ok(&["delete", "pod", "probed", "--grace-period=1"]);

    // Env from a config map and the downward API, a config map volume, the pod's files.
    new.ok(&["create", "configmap", "greet", "--from-literal=greeting=ahoy"]);
    new.ok(&["create", "secret", "generic", "token", "--from-literal=token=s3cret"]);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "env", "labels": {"app": "env"}},
      "spec": {"restartPolicy": "Never", "volumes": [{"name": "cfg", "configMap": {"name": "greet"}},
          {"name": "sec", "secret": {"secretName": "token"}}, {"name": "mem", "emptyDir": {"medium": "Memory"}}],
        "containers": [{"name": "main", "image": "registry.test/busybox:1", "imagePullPolicy": "IfNotPresent",
          "command": ["sh", "-c", "echo env=$GREETING/$POD_NAME/$NODE; echo file=$(cat /cfg/greeting); echo host=$(hostname); cat /etc/resolv.conf; echo secret=$(cat /sec/token); grep -E ' /(sec|mem) ' /proc/mounts; cd /var/run/secrets/kubernetes.io/serviceaccount && echo sa-ns=$(cat namespace) && echo sa-token=$(cat token) && cat ca.crt"],
          "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "greet", "key": "greeting"}}},
                  {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                  {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
          "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec", "readOnly": true},
                           {"name": "mem", "mountPath": "/mem"}]}]}}"#;
    new.ok_stdin(&["apply", "-f", "-"], pod);
    wait_for(60, "the env pod to finish", || {
        let phase = jsonpath(&new, "env", "{.status.phase}");
        (phase == "Succeeded").then_some(phase)
    });
    let row = new.ok(&["get", "pod", "env", "--no-headers"]);
    assert!(row.contains("Completed"), "{row}");
    let lines = log_lines(&agent_dir, "env", "main");
    assert!(lines.contains(&"env=ahoy/env/test-node".to_string()), "{lines:?}");
    assert!(lines.contains(&"file=ahoy".to_string()), "{lines:?}");
    assert!(lines.contains(&"host=env".to_string()), "{lines:?}");
    assert!(lines.contains(&"secret=s3cret".to_string()), "{lines:?}");
    for vol in ["/sec", "/mem"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("tmpfs ") && l.contains(&format!(" {vol} tmpfs "))),
            "{vol} is a tmpfs: {lines:?}"
        );
    }
    assert!(lines.contains(&"nameserver 10.43.0.10".to_string()), "{lines:?}");
    // The API credentials the ServiceAccount admission plugin mounted: the namespace, the
    // cluster CA and a token bound to the pod that the API server accepts.
    assert!(lines.contains(&"sa-ns=default".to_string()), "{lines:?}");
    let ca = std::fs::read_to_string(server.dir.path().join("tls/ca.crt")).expect("the cluster CA");
    let begin = lines
        .iter()
        .position(|l| l == "-----BEGIN CERTIFICATE-----")
        .expect("ca.crt in the pod");
    let end = begin
        + lines[begin..]
            .iter()
            .position(|l| l == "-----END CERTIFICATE-----")
            .expect("the end of ca.crt");
    assert_eq!(lines[begin..=end].join("\n"), ca.trim_end(), "ca.crt is the cluster CA");
    let token = lines
        .iter()
        .find_map(|l| l.strip_prefix("sa-token="))
        .expect("the token in the pod")
        .to_string();
    let claims: serde_json::Value = {
        use base64::Engine;
        let payload = token.split('.').nth(1).expect("a JWT");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("claims")
    };
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["kubernetes.io"]["pod"]["name"], "env");
    assert_eq!(claims["kubernetes.io"]["node"]["name"], "test-node");
    let anonymous = new.without_credentials(&server);
    let me = anonymous.ok(&[
        &format!("--token={token}"),
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(me, "system:serviceaccount:default:default");
    anonymous.ok(&[&format!("--token={token}"), "get", "pods"]);
    assert!(
        lines.contains(&"search default.svc.cluster.local svc.cluster.local cluster.local".to_string()),
        "{lines:?}"
    );

    // kubectl logs, through the API server from the node's agent.
    let logs = old.ok(&["logs", "env"]);
    assert!(logs.contains("env=ahoy/env/test-node\nfile=ahoy\nhost=env\n"), "{logs}");
    assert_eq!(new.ok(&["logs", "env", "--tail=1"]).lines().count(), 1);
    let stamped = new.ok(&["logs", "env", "--timestamps", "--tail=1"]);
    assert!(stamped.starts_with("20") && stamped.contains("Z "), "{stamped}");
    let err = new.fails(&["logs", "env", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod env"), "{err}");
    let err = new.fails(&["get", "--raw", "/api/v1/namespaces/default/pods/env/log?tailLines=-2"]);
    assert!(err.contains("must be greater than or equal to 0"), "{err}");
    new.ok(&[
        "run",
        "ticker",
        "--restart=Never",
        "--image",
        IMAGE,
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick $i; sleep 1; done",
    ]);
    new.ok(&["wait", "--for=condition=Ready", "pod/ticker", "--timeout=60s"]);
    // --follow streams until the container exits.
    let followed = new.ok(&["logs", "-f", "ticker"]);
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");

    // A container that keeps failing is restarted with back-off, as kubectl shows it.
    new.ok(&[
        "run",
        "crash",
        "--image",
        IMAGE,
        "--image-pull-policy=IfNotPresent",
        "--",
        "sh",
        "-c",
        "echo boom; exit 3",
    ]);
    let row = wait_for(60, "crash to be restarted and back off", || {
        let row = new.ok(&["get", "pod", "crash", "--no-headers"]);
        let restarts: u32 = row.split_whitespace().nth(3).and_then(|r| r.parse().ok()).unwrap_or(0);
        (restarts >= 1 && row.contains("CrashLoopBackOff")).then_some(row)
    });
    assert!(row.contains("0/1"), "{row}");
    let last = jsonpath(
        &new,
        "crash",
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last, "3", "the last exit code is reported");
    assert_eq!(new.ok(&["logs", "crash", "--previous"]), "boom\n");

    // An image that is not there and may not be pulled.
    new.ok(&[
        "run",
        "missing",
        "--image",
        "registry.test/nothing:1",
        "--image-pull-policy=Never",
    ]);
    wait_for(30, "ErrImageNeverPull", || {
        let row = new.ok(&["get", "pod", "missing", "--no-headers"]);
        row.contains("ErrImageNeverPull").then_some(row)
    });
    let err = new.fails(&["logs", "missing"]);
    assert!(err.contains("is waiting to start: ErrImageNeverPull"), "{err}");

    // The agent goes (kill -9 of the whole server): the container keeps serving, and the
    // restarted agent adopts it without restarting it.
    let started = jsonpath(&new, "web", "{.status.containerStatuses[0].state.running.startedAt}");
    let image_id = jsonpath(&new, "web", "{.status.containerStatuses[0].imageID}");
    assert!(image_id.starts_with("registry.test/busybox@sha256:"), "{image_id}");
    let dir = server.kill9();
    let page = http_get(SocketAddr::from((pod_ip, 8080))).expect("the pod serves with the agent down");
    assert!(page.contains("hello from a skiff pod"));
    let flags = agent_flags(&run_dir, Path::new("/nonexistent/registries.yaml"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = SkiffServer::start_with_agent(dir, &flags);
    let new = Kubectl::new("1.33", &server);
    wait_for(60, "the node Ready again", || ready_node(&new, "test-node"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jsonpath(&new, "web", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(
        jsonpath(&new, "web", "{.status.containerStatuses[0].state.running.startedAt}"),
        started,
        "the same container, not a new one"
    );
    assert_eq!(
        jsonpath(&new, "web", "{.status.containerStatuses[0].imageID}"),
        image_id
    );

    // Deleting the pod stops it gracefully and releases its address and namespace.
    new.ok(&["delete", "pod", "web", "--grace-period=3", "--timeout=60s"]);
    let gone = new.run(&["get", "pod", "web"]);
    assert!(!gone.status.success(), "the pod is gone");
    assert!(
        http_get(SocketAddr::from((pod_ip, 8080))).is_err(),
        "nothing serves on the old pod IP"
    );
    // Left: crash and missing; the finished env pod gave its network back too.
    let mut netns: Vec<String> = std::fs::read_dir(run_dir.join("netns"))
        .expect("netns dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    netns.sort();
    let mut want: Vec<String> = ["crash", "missing"]
        .iter()
        .map(|p| jsonpath(&new, p, "{.metadata.uid}"))
        .collect();
    want.sort();
    assert_eq!(netns, want, "a network namespace for each running pod only");
}

/// The container PIDs of a pod's containers, from the shims' records on disk.
fn container_pids(agent_dir: &Path, uid: &str) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(agent_dir.join("containers"))
        .expect("containers dir")
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if !id.starts_with(uid) {
            continue;
        }
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.path().join("state.json")).expect("state")).expect("json");
        out.push((id, state["pid"].as_i64().expect("pid")));
    }
    out.sort();
    out
}

/// The pod's cgroup directories (`…/kubepods/[class/]pod<uid>`) in every cgroup hierarchy.
fn pod_cgroups(uid: &str) -> Vec<std::path::PathBuf> {
    let name = format!("pod{uid}");
    let mut found = Vec::new();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let hierarchies: Vec<std::path::PathBuf> = if v2 {
        vec!["/sys/fs/cgroup".into()]
    } else {
        std::fs::read_dir("/sys/fs/cgroup")
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for h in hierarchies {
        for class in ["", "burstable", "besteffort"] {
            let p = h.join("kubepods").join(class).join(&name);
            if p.is_dir() {
                found.push(p);
            }
        }
    }
    found
}

/// `kubectl get node NAME`'s row once the node is Ready (`None` before, also while the node
/// is not registered yet).
fn ready_node(k: &Kubectl, name: &str) -> Option<String> {
    let out = k.run(&["get", "node", name, "--no-headers"]);
    let row = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && row.contains(" Ready ")).then_some(row)
}

/// How long `kubectl delete pod NAME` takes.
fn timed_delete(k: &Kubectl, pod: &str) -> Duration {
    let t = Instant::now();
    k.ok(&["delete", "pod", pod, "--timeout=60s"]);
    t.elapsed()
}

/// The example images (scripts/example-image.sh) imported with `skiff image import` into the
/// node whose server data dir is `data_dir`, as the quickstart does.
fn import_example_images(data_dir: &Path) {
    let archive = data_dir.join("example-images.tar");
    support::run_script("scripts/example-image.sh", &archive);
    let imported = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["image", "--data-dir"])
        .arg(data_dir)
        .arg("import")
        .arg(&archive)
        .output()
        .expect("skiff image import");
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
}

/// A registry on loopback holding `image` as `repo:tag`, and a registries.yaml in `dir` that
/// makes it docker.io's mirror. The registry stops when dropped.
fn docker_io_mirror(
    dir: &Path,
    repo: &str,
    tag: &str,
    image: &testing::TestImage,
) -> (testing::Registry, std::path::PathBuf) {
    let registry = testing::Registry::start(None);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(registry.push(repo, tag, image));
    let registries = dir.join("registries.yaml");
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint:\n      - http://{}\n",
        registry.addr
    );
    std::fs::write(&registries, yaml).expect("registries.yaml");
    (registry, registries)
}

#[test]
fn pulls_through_a_mirror_and_keeps_pods_across_agent_restarts() {
    if !inside_namespaces("pulls_through_a_mirror_and_keeps_pods_across_agent_restarts") {
        return;
    }
    bring_up_loopback();
    // A registry on loopback serves busybox as docker.io/library/busybox:1.36 through a
    // registries.yaml mirror; nothing is imported beforehand.
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_dir = dir.path().join("agent");
    let img = test_image();
    let (registry, registries) = docker_io_mirror(dir.path(), "library/busybox", "1.36", &img);
    let run_dir = dir.path().join("run");
    let flags = agent_flags(&run_dir, &registries);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = SkiffServer::start_with_agent(dir, &flags);
    let k = Kubectl::new("1.33", &server);
    wait_for(60, "the node to be Ready", || {
        let row = k.ok(&["get", "nodes", "--no-headers"]);
        row.contains(" Ready ").then_some(row)
    });

    // Pulled through the mirror; the pull secret nobody created is a warning, not a failure.
    k.ok(&["create", "configmap", "greet", "--from-literal=greeting=v1"]);
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pulled"},
      "spec": {"imagePullSecrets": [{"name": "huoban-harbor"}], "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "cfg", "configMap": {"name": "greet"}}],
        "containers": [{"name": "main", "image": "busybox:1.36",
          "command": ["sh", "-c", "while true; do cat /cfg/greeting; echo; sleep 0.5; done"],
          "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}]}}"#;
    k.ok_stdin(&["apply", "-f", "-"], pod);
    k.ok(&["wait", "--for=condition=Ready", "pod/pulled", "--timeout=90s"]);
    let events = k.ok(&["get", "events", "--field-selector", "involvedObject.name=pulled"]);
    assert!(events.contains("FailedToRetrieveImagePullSecret"), "{events}");
    assert!(events.contains("Pulled"), "{events}");
    let image_id = jsonpath(&k, "pulled", "{.status.containerStatuses[0].imageID}");
    assert!(image_id.starts_with("docker.io/library/busybox@sha256:"), "{image_id}");
    // A config map update reaches the running pod's volume.
    wait_for(30, "v1 in the log", || {
        k.ok(&["logs", "pulled"]).contains("v1").then_some(String::new())
    });
    let cm = k.ok(&[
        "create",
        "configmap",
        "greet",
        "--from-literal=greeting=v2",
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    k.ok_stdin(&["apply", "-f", "-"], &cm);
    wait_for(30, "the update in the running pod", || {
        k.ok(&["logs", "pulled", "--tail=2"])
            .contains("v2")
            .then_some(String::new())
    });
    assert_eq!(
        jsonpath(&k, "pulled", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // A container over its memory limit is OOM-killed and says so.
    let oom = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "oom"},
      "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36",
        "command": ["sh", "-c", "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived"],
        "resources": {"limits": {"memory": "32Mi"}}}]}}"#;
    k.ok_stdin(&["apply", "-f", "-"], oom);
    let reason = wait_for(60, "the OOM kill", || {
        let r = jsonpath(&k, "oom", "{.status.containerStatuses[0].state.terminated.reason}");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(reason, "OOMKilled");
    let row = k.ok(&["get", "pod", "oom", "--no-headers"]);
    assert!(row.contains("OOMKilled"), "{row}");

    // Graceful deletion: a process that ignores SIGTERM holds for the grace period, one that
    // exits on it goes at once.
    let stubborn = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stubborn"},
      "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "main", "image": "busybox:1.36",
        "command": ["sleep", "3600"]}]}}"#;
    let polite = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "polite"},
      "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "main", "image": "busybox:1.36",
        "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]}]}}"#;
    k.ok_stdin(&["apply", "-f", "-"], stubborn);
    k.ok_stdin(&["apply", "-f", "-"], polite);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/stubborn",
        "pod/polite",
        "--timeout=60s",
    ]);
    let uids = [
        jsonpath(&k, "stubborn", "{.metadata.uid}"),
        jsonpath(&k, "polite", "{.metadata.uid}"),
    ];
    assert!(
        uids.iter().all(|u| !pod_cgroups(u).is_empty()),
        "each pod has a cgroup of its own (per hierarchy): {uids:?}"
    );
    let slow = timed_delete(&k, "stubborn");
    let fast = timed_delete(&k, "polite");
    // The pods' cgroups go with them (runtimes remove only the containers' own).
    wait_for(10, "the deleted pods' cgroups to be removed", || {
        uids.iter().all(|u| pod_cgroups(u).is_empty()).then_some(())
    });
    assert!(
        slow >= Duration::from_millis(4500) && slow < Duration::from_secs(12),
        "SIGTERM-ignoring pod took {slow:?}"
    );
    assert!(fast < Duration::from_millis(2500), "SIGTERM-handling pod took {fast:?}");

    // Lifecycle hooks: postStart runs in the container before it counts as started, preStop
    // runs before SIGTERM (it writes to a hostPath the test reads).
    let hooks_dir = tempfile::tempdir().expect("tempdir");
    let hooks = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "hooks"}},
      "spec": {{"terminationGracePeriodSeconds": 5,
        "volumes": [{{"name": "out", "hostPath": {{"path": "{}"}}}}],
        "containers": [{{"name": "main", "image": "busybox:1.36",
          "command": ["sh", "-c", "sleep 1; cat /tmp/poststart; trap 'exit 0' TERM; while true; do sleep 0.1; done"],
          "volumeMounts": [{{"name": "out", "mountPath": "/out"}}],
          "lifecycle": {{"postStart": {{"exec": {{"command": ["sh", "-c", "echo started-hook > /tmp/poststart"]}}}},
                        "preStop": {{"exec": {{"command": ["sh", "-c", "echo stopping > /out/prestop"]}}}}}}}}]}}}}"#,
        hooks_dir.path().display()
    );
    k.ok_stdin(&["apply", "-f", "-"], &hooks);
    k.ok(&["wait", "--for=condition=Ready", "pod/hooks", "--timeout=60s"]);
    wait_for(30, "the postStart hook's file", || {
        k.ok(&["logs", "hooks"])
            .contains("started-hook")
            .then_some(String::new())
    });
    k.ok(&["delete", "pod", "hooks", "--timeout=60s"]);
    let said = std::fs::read_to_string(hooks_dir.path().join("prestop")).expect("the preStop hook ran");
    assert_eq!(said, "stopping\n");

    // Ten pods survive a kill -9 of the agent: same containers, same PIDs, none restarted.
    k.ok(&[
        "create",
        "deployment",
        "many",
        "--image=busybox:1.36",
        "--replicas=10",
        "--",
        "sleep",
        "3600",
    ]);
    k.ok(&["rollout", "status", "deployment/many", "--timeout=120s"]);
    let uids: Vec<String> = k
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=many",
            "-o",
            "jsonpath={.items[*].metadata.uid}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(uids.len(), 10);
    let before: Vec<Vec<(String, i64)>> = uids.iter().map(|u| container_pids(&agent_dir, u)).collect();
    assert!(before.iter().all(|p| p.len() == 1), "{before:?}");
    let dir = server.kill9();
    let server = SkiffServer::start_with_agent(dir, &flags);
    let k = Kubectl::new("1.33", &server);
    wait_for(60, "the node Ready again", || {
        let row = k.ok(&["get", "nodes", "--no-headers"]);
        row.contains(" Ready ").then_some(row)
    });
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<Vec<(String, i64)>> = uids.iter().map(|u| container_pids(&agent_dir, u)).collect();
    assert_eq!(before, after, "the same containers with the same PIDs");
    for pids in &after {
        assert!(
            Path::new(&format!("/proc/{}", pids[0].1)).exists(),
            "container process {} alive",
            pids[0].1
        );
    }
    let restarts = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=many",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].restartCount}",
    ]);
    assert_eq!(
        restarts.split_whitespace().filter(|r| *r == "0").count(),
        10,
        "{restarts}"
    );
    let ready = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=many",
        "-o",
        "jsonpath={.items[*].status.containerStatuses[0].ready}",
    ]);
    assert_eq!(ready.split_whitespace().filter(|r| *r == "true").count(), 10, "{ready}");
    drop(registry);
}

#[test]
fn a_separately_joined_agent_runs_pods() {
    if !inside_namespaces("a_separately_joined_agent_runs_pods") {
        return;
    }
    bring_up_loopback();
    let server = SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &[]);
    let agent_data = tempfile::tempdir().expect("tempdir");
    import_test_image(&agent_data.path().join("agent"));
    let token = std::fs::read_to_string(server.dir.path().join("token")).expect("token");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", server.port),
            "--token",
            token.trim(),
        ])
        .arg("--ca-file")
        .arg(server.dir.path().join("tls/ca.crt"))
        .arg("--data-dir")
        .arg(agent_data.path())
        .arg("--run-dir")
        .arg(agent_data.path().join("run"))
        .args([
            "--node-name",
            "joined",
            "--node-ip",
            "127.0.0.1",
            "--private-registry",
            "/nonexistent",
            // Whether image GC would run depends on the test machine's disk.
            "--image-gc-high-threshold",
            "100",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("skiff agent");
    let k = Kubectl::new("1.33", &server);
    // The agent registers its Node after its tunnel is up: until then the node is not found.
    wait_for(60, "the joined node Ready", || ready_node(&k, "joined"));
    run_web(&k);
    k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    let ip: std::net::Ipv4Addr = jsonpath(&k, "web", "{.status.podIP}").parse().expect("pod IP");
    let page = http_get(SocketAddr::from((ip, 8080))).expect("reach the pod");
    assert!(page.contains("hello from a skiff pod"), "{page}");
    assert_eq!(jsonpath(&k, "web", "{.spec.nodeName}"), "joined");
    // A hostNetwork pod serves on the node's own address.
    let host = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"},
      "spec": {"hostNetwork": true, "containers": [{"name": "main", "image": "registry.test/busybox:1",
        "imagePullPolicy": "IfNotPresent", "command": ["httpd", "-f", "-p", "18081", "-h", "/srv"]}]}}"#;
    k.ok_stdin(&["apply", "-f", "-"], host);
    k.ok(&["wait", "--for=condition=Ready", "pod/hostnet", "--timeout=60s"]);
    assert_eq!(jsonpath(&k, "hostnet", "{.status.podIP}"), "127.0.0.1");
    let page = wait_for(10, "the hostNetwork pod to serve", || {
        http_get(SocketAddr::from(([127, 0, 0, 1], 18081))).ok()
    });
    assert!(page.contains("hello from a skiff pod"), "{page}");
    // The joined agent's tunnel to the server carries logs, exec (both transports of
    // kubectl), attach and port-forward of its pods.
    let talker = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
      "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "main", "image": "registry.test/busybox:1",
        "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", "echo hello-from-joined; sleep 3600"]}]}}"#;
    k.ok_stdin(&["apply", "-f", "-"], talker);
    k.ok(&["wait", "--for=condition=Ready", "pod/talker", "--timeout=60s"]);
    let logs = wait_for(30, "logs through the tunnel", || {
        let out = k.run(&["logs", "talker"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(logs, "hello-from-joined\n");
    let old = Kubectl::new("1.27", &server);
    for kc in [&k, &old] {
        let up = kc.ok_stdin(
            &["exec", "-i", "talker", "--", "tr", "a-z", "A-Z"],
            "through the tunnel\n",
        );
        assert_eq!(up, "THROUGH THE TUNNEL\n");
        let out = kc.run(&["exec", "talker", "--", "sh", "-c", "exit 4"]);
        assert_eq!(out.status.code(), Some(4));
        let (mut pf, local) = port_forward(kc, "pod/web", 8080);
        let page = http_get(SocketAddr::from(([127, 0, 0, 1], local)));
        let _ = pf.kill();
        let _ = pf.wait();
        assert!(
            page.as_ref().is_ok_and(|p| p.contains("hello from a skiff pod")),
            "{page:?}"
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
}

/// `kubectl port-forward pod/NAME :PORT` running; returns it and the local port it chose.
fn port_forward(k: &Kubectl, target: &str, port: u16) -> (std::process::Child, u16) {
    let mut child = k
        .cmd(&["port-forward", target, &format!(":{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            // "Forwarding from 127.0.0.1:40211 -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let local = rest.split(' ').next().and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(local);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Some(local)) => (child, local),
        other => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("kubectl");
            panic!(
                "kubectl port-forward did not start ({other:?}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Runs `kubectl ARGS` on a terminal (`script` gives it one), typing `input`; returns what
/// the terminal showed and kubectl's exit code.
fn on_terminal(k: &Kubectl, args: &[&str], input: &str) -> (String, Option<i32>) {
    let mut line = vec![k.bin.to_string_lossy().into_owned()];
    line.extend(["--kubeconfig".into(), k.kubeconfig.to_string_lossy().into_owned()]);
    line.extend(["--cache-dir".into(), k.cache.path().to_string_lossy().into_owned()]);
    line.extend(args.iter().map(|a| a.to_string()));
    let quoted: Vec<String> = line.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
    let mut child = Command::new("script")
        .args(["-qefc", &quoted.join(" "), "/dev/null"])
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (bsdutils)");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    std::thread::spawn(move || {
        // Typed slowly, as a person would: the shell must be up to read it.
        std::thread::sleep(Duration::from_secs(2));
        for line in input.split_inclusive('\n') {
            let _ = stdin.write_all(line.as_bytes());
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl {args:?} on a terminal did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let _ = child.stdout.take().expect("stdout").read_to_string(&mut out);
    (out, status.code())
}

#[test]
fn exec_and_port_forward_with_both_kubectls() {
    if !inside_namespaces("exec_and_port_forward_with_both_kubectls") {
        return;
    }
    let (server, agent_dir, _) = start_node();
    let new = Kubectl::new("1.33", &server);
    let old = Kubectl::new("1.27", &server);
    wait_for(60, "the node to be Ready", || {
        let row = new.ok(&["get", "nodes", "--no-headers"]);
        row.contains(" Ready ").then_some(row)
    });
    // Two containers: one serves on the pod IP, the other only on the pod's loopback (so
    // port-forward must connect inside the pod's network namespace).
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
      "spec": {"terminationGracePeriodSeconds": 1, "containers": [
        {"name": "web", "image": "registry.test/busybox:1", "imagePullPolicy": "IfNotPresent",
         "command": ["httpd", "-f", "-p", "8080", "-h", "/srv"]},
        {"name": "local", "image": "registry.test/busybox:1", "imagePullPolicy": "IfNotPresent",
         "command": ["httpd", "-f", "-p", "127.0.0.1:9090", "-h", "/srv"]}]}}"#;
    new.ok_stdin(&["apply", "-f", "-"], pod);
    new.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);

    for (name, k) in [("1.27 (SPDY)", &old), ("1.33 (WebSocket)", &new)] {
        // Output on both streams, and the exit code, come back.
        let out = k.run(&[
            "exec",
            "web",
            "-c",
            "web",
            "--",
            "sh",
            "-c",
            "echo out-$((40+2)); echo err >&2; exit 3",
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out-42\n", "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{name}: the exit code is kubectl's: {stderr}"
        );
        assert!(stderr.starts_with("err\n"), "{name}: {stderr}");
        // stdin reaches the process and its end ends it.
        let echoed = k.ok_stdin(
            &[
                "exec",
                "-i",
                "web",
                "-c",
                "web",
                "--",
                "sh",
                "-c",
                "tr a-z A-Z; echo done",
            ],
            "hello\nskiff\n",
        );
        assert_eq!(echoed, "HELLO\nSKIFF\ndone\n", "{name}");
        // The process runs in the container: its files, hostname and environment.
        let seen = k.ok(&[
            "exec",
            "web",
            "-c",
            "local",
            "--",
            "sh",
            "-c",
            "cat /srv/index.html; hostname",
        ]);
        assert_eq!(seen, "hello from a skiff pod\nweb\n", "{name}");
        // Mistakes are named.
        let err = k.fails(&["exec", "web", "-c", "nope", "--", "true"]);
        assert!(err.contains("container nope is not valid for pod web"), "{name}: {err}");
        let err = k.fails(&["exec", "missing", "--", "true"]);
        assert!(err.contains("pods \"missing\" not found"), "{name}: {err}");
        let err = k.fails(&["exec", "web", "-c", "web", "--", "no-such-command"]);
        assert!(err.contains("no-such-command"), "{name}: {err}");

        // A terminal: the process has one, with the size kubectl's terminal has, and what
        // is typed reaches an interactive shell; its exit code comes back.
        let (screen, code) = on_terminal(
            k,
            &["exec", "-it", "web", "-c", "web", "--", "sh"],
            "tty; stty size; echo typed-$((6*7))\nexit 7\n",
        );
        assert!(screen.contains("/dev/pts/"), "{name}: {screen}");
        assert!(screen.contains("typed-42"), "{name}: {screen}");
        assert_eq!(code, Some(7), "{name}: {screen}");

        // Port forwarding: two connections in turn, one to a port that only listens on the
        // pod's loopback.
        for (port, what) in [(8080u16, "the pod IP port"), (9090, "the pod's loopback port")] {
            let (mut pf, local) = port_forward(k, "pod/web", port);
            for _ in 0..2 {
                let page = http_get(SocketAddr::from(([127, 0, 0, 1], local)));
                if !page.as_ref().is_ok_and(|p| p.contains("hello from a skiff pod")) {
                    let _ = pf.kill();
                    let out = pf.wait_with_output().expect("kubectl");
                    panic!(
                        "{name} {what}: {page:?}; kubectl: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            let _ = pf.kill();
            let _ = pf.wait();
        }
        // A port nothing listens on: the connection is closed, kubectl says why.
        let (mut pf, local) = port_forward(k, "pod/web", 7777);
        let got = http_get(SocketAddr::from(([127, 0, 0, 1], local)));
        assert!(!got.as_ref().is_ok_and(|p| p.contains("200")), "{name}: {got:?}");
        let _ = pf.kill();
        let out = pf.wait_with_output().expect("kubectl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("7777"), "{name}: kubectl tells the port: {stderr}");
    }
    // hostPort: the pod's port is published on the node: from the node itself (its
    // loopback) and from another pod through the node's address on the bridge; withdrawn
    // when the pod goes.
    let published = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "published"},
      "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "web", "image": "registry.test/busybox:1",
        "imagePullPolicy": "IfNotPresent", "command": ["httpd", "-f", "-p", "8080", "-h", "/srv"],
        "ports": [{"containerPort": 8080, "hostPort": 18080}]}]}}"#;
    new.ok_stdin(&["apply", "-f", "-"], published);
    new.ok(&["wait", "--for=condition=Ready", "pod/published", "--timeout=60s"]);
    let page = wait_for(10, "the host port", || {
        http_get(SocketAddr::from(([127, 0, 0, 1], 18080))).ok()
    });
    assert!(page.contains("hello from a skiff pod"), "{page}");
    let gateway = {
        let cidr = new.ok(&["get", "node", "test-node", "-o", "jsonpath={.spec.podCIDR}"]);
        let net: ipnet::Ipv4Net = cidr.trim().parse().expect("cidr");
        net.hosts().next().expect("gateway")
    };
    let from_pod = new.ok(&[
        "exec",
        "web",
        "-c",
        "web",
        "--",
        "wget",
        "-qO-",
        &format!("http://{gateway}:18080/index.html"),
    ]);
    assert_eq!(
        from_pod, "hello from a skiff pod\n",
        "a pod reaches another pod's host port"
    );
    // Grace period 0: the object goes at once, the agent tears the pod down just after.
    new.ok(&["delete", "pod", "published", "--wait"]);
    wait_for(10, "the host port to be withdrawn with its pod", || {
        http_get(SocketAddr::from(([127, 0, 0, 1], 18080)))
            .is_err()
            .then(String::new)
    });

    // Services: a Deployment exposed as a NodePort service answers on its ClusterIP (from the
    // node and from a pod) and on the node port of 127.0.0.1; without ready endpoints the VIP
    // refuses at once.
    new.ok(&[
        "create",
        "deployment",
        "echo",
        "--image",
        IMAGE,
        "--replicas",
        "2",
        "--",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/srv",
    ]);
    new.ok(&[
        "expose",
        "deployment",
        "echo",
        "--port",
        "80",
        "--target-port",
        "8080",
        "--type",
        "NodePort",
    ]);
    new.ok(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    let vip: std::net::Ipv4Addr = new
        .ok(&["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .parse()
        .expect("cluster IP");
    let node_port: u16 = new
        .ok(&["get", "service", "echo", "-o", "jsonpath={.spec.ports[0].nodePort}"])
        .trim()
        .parse()
        .expect("node port");
    let page = wait_for(10, "the ClusterIP", || http_get(SocketAddr::from((vip, 80))).ok());
    assert!(page.contains("hello from a skiff pod"), "{page}");
    let page = http_get(SocketAddr::from(([127, 0, 0, 1], node_port))).expect("the node port");
    assert!(page.contains("hello from a skiff pod"), "{page}");
    let from_pod = old.ok(&[
        "exec",
        "web",
        "-c",
        "web",
        "--",
        "wget",
        "-qO-",
        &format!("http://{vip}/index.html"),
    ]);
    assert_eq!(from_pod, "hello from a skiff pod\n");
    new.ok(&["scale", "deployment/echo", "--replicas=0"]);
    let refused = wait_for(
        30,
        "the VIP to refuse without endpoints",
        || match TcpStream::connect_timeout(&SocketAddr::from((vip, 80)), Duration::from_secs(2)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(e.to_string()),
            _ => None,
        },
    );
    assert!(!refused.is_empty());
    new.ok(&["delete", "service", "echo"]);
    new.ok(&["delete", "deployment", "echo"]);
    // The quickstart's app: its image built by scripts/example-image.sh and imported with
    // `skiff image`, then examples/hello.yaml (the Service, with a named target port, made
    // before its pods are ready) answers on its node port.
    import_example_images(agent_dir.parent().expect("data dir"));
    let hello = support::repo_file("examples/hello.yaml");
    new.ok(&["apply", "-f", hello.to_str().expect("path")]);
    new.ok(&["rollout", "status", "deployment/hello", "--timeout=60s"]);
    let page = wait_for(10, "the example app on its node port", || {
        http_get(SocketAddr::from(([127, 0, 0, 1], 30081))).ok()
    });
    assert!(page.contains("<h1>Hello from Skiff</h1>"), "{page}");
    let ports = new.ok(&[
        "get",
        "endpointslice",
        "-l",
        "kubernetes.io/service-name=hello",
        "-o",
        "jsonpath={.items[*].ports}",
    ]);
    assert_eq!(
        ports.trim(),
        r#"[{"name":"http","port":8080,"protocol":"TCP"}]"#,
        "one port, resolved from the pods' named port"
    );
    new.ok(&["delete", "-f", hello.to_str().expect("path")]);

    // The `kubernetes` service leads pods to the API server.
    let ep = wait_for(90, "the kubernetes service's endpoints", || {
        let out = new.run(&[
            "get",
            "endpointslice",
            "kubernetes",
            "-o",
            "jsonpath={.endpoints[0].addresses[0]}:{.ports[0].port}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    });
    assert_eq!(ep, format!("127.0.0.1:{}", server.port));
    // busybox's TLS shares no cipher suite with the server's, so the handshake ends in an
    // alert; that alert, from 10.43.0.1:443, is the API server answering through the VIP.
    let reached = new.ok(&[
        "exec",
        "web",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "wget -qO- --no-check-certificate https://10.43.0.1/version 2>&1; true",
    ]);
    assert!(
        reached.contains("gitVersion") || reached.contains("TLS error from peer"),
        "{reached}"
    );

    // Attach: `kubectl run -it --rm` gives a shell on the new container's terminal, and the
    // pod is gone afterwards; `kubectl attach -i` feeds a running container's stdin.
    for (name, k) in [("1.27 (SPDY)", &old), ("1.33 (WebSocket)", &new)] {
        let (screen, code) = on_terminal(
            k,
            &[
                "run",
                "-it",
                "--rm",
                "--restart=Never",
                "shell",
                "--image",
                IMAGE,
                "--image-pull-policy=IfNotPresent",
                "--",
                "sh",
            ],
            "\necho in-pod-$((2+3)); tty\nexit 5\n",
        );
        assert!(screen.contains("in-pod-5"), "{name}: {screen}");
        assert!(screen.contains("/dev/pts/"), "{name}: {screen}");
        assert_eq!(code, Some(5), "{name}: the shell's exit code is kubectl's: {screen}");
        wait_for(30, "the --rm pod to be deleted", || {
            let out = k.run(&["get", "pod", "shell"]);
            (!out.status.success()).then(String::new)
        });
        let reader = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "reader"},
          "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.test/busybox:1",
            "imagePullPolicy": "IfNotPresent", "stdin": true, "stdinOnce": true,
            "command": ["sh", "-c", "echo started; while read l; do echo got-$l; echo err-$l >&2; done; echo bye"]}]}}"#;
        k.ok_stdin(&["apply", "-f", "-"], reader);
        k.ok(&["wait", "--for=condition=Ready", "pod/reader", "--timeout=60s"]);
        let out = k.run_stdin(&["attach", "-i", "reader"], "one\ntwo\n");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("got-one\ngot-two\n"), "{name}: {stdout}");
        assert!(
            !stdout.contains("started"),
            "{name}: output from before the attach is not replayed: {stdout}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("err-two"), "{name}");
        // stdinOnce: the end of kubectl's stdin was the container's; it finished.
        wait_for(30, "the reader to finish", || {
            (jsonpath(k, "reader", "{.status.phase}") == "Succeeded").then(String::new)
        });
        k.ok(&["delete", "pod", "reader"]);
    }

    // kubectl 1.33 used WebSocket (not its SPDY fallback): for exec, and for port-forward
    // as the SPDY tunnel.
    let out = new.run(&["exec", "-v=7", "web", "-c", "web", "--", "true"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("The subprotocol is v5.channel.k8s.io"),
        "{log}"
    );
    let mut pf = new
        .cmd(&["port-forward", "-v=7", "pod/web", ":8080"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    std::thread::sleep(Duration::from_secs(3));
    let _ = pf.kill();
    let log = String::from_utf8_lossy(&pf.wait_with_output().expect("kubectl").stderr).into_owned();
    assert!(
        log.contains("SPDY/3.1+portforward.k8s.io") && log.contains("101 Switching Protocols"),
        "{log}"
    );
    // Exec into a pod that has finished is refused with the pod's phase.
    let done = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done"},
      "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "registry.test/busybox:1",
        "imagePullPolicy": "IfNotPresent", "command": ["true"]}]}}"#;
    new.ok_stdin(&["apply", "-f", "-"], done);
    wait_for(60, "the pod to finish", || {
        (jsonpath(&new, "done", "{.status.phase}") == "Succeeded")
            .then_some(())
            .map(|()| String::new())
    });
    let err = new.fails(&["exec", "done", "--", "true"]);
    assert!(err.contains("completed pod"), "{err}");
}

/// A resolver standing in for the node's (names outside the cluster), on loopback: `example.com`
/// has A 192.0.2.1, every other name is NXDOMAIN. Hand-made answers: the test must not load the
/// machine's real resolvers.
fn fake_upstream_resolver() -> SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the fake resolver");
    let addr = sock.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            // The question: labels from byte 12, then type and class.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + len).min(n)]).to_ascii_lowercase());
                i += 1 + len;
            }
            if i + 5 > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let question = &q[12..i + 5];
            let hit = labels.join(".") == "example.com" && qtype == 1;
            let mut r = Vec::from(&q[..2]);
            r.extend_from_slice(if hit || labels.join(".") == "example.com" {
                &[0x81, 0x80]
            } else {
                &[0x81, 0x83]
            });
            r.extend_from_slice(&[0, 1, 0, u8::from(hit), 0, 0, 0, 0]);
            r.extend_from_slice(question);
            if hit {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            }
            let _ = sock.send_to(&r, from);
        }
    });
    addr
}

/// Runs `script` with the machine's busybox inside a pod's network namespace: what the pod
/// sees, without the API server (kubectl exec needs it).
fn in_pod_netns(run_dir: &Path, uid: &str, script: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", run_dir.join("netns").join(uid).display()))
        .args(["/bin/busybox", "sh", "-c", script])
        .output()
        .expect("nsenter (util-linux)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An HTTP GET with busybox nc (its wget crashes in Debian's busybox-static 1.35).
fn nc_get(host: &str, port: u16, path: &str) -> String {
    format!("printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

/// Beside examples/nginx.yaml: a ClusterIP service over its pods and an ExternalName.
const DNS_EXTRAS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: webvip}
spec:
  selector: {app: nginx}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: managed-nfs-storage}
provisioner: skiff.dev/local-path
"#;

/// The services issue's user session with kubectl 1.27 and 1.33: examples/nginx.yaml (the real
/// nginx, image built by scripts/nginx-image.sh and pulled through a docker.io mirror on
/// loopback; PVCs bound once the StorageClass it names exists), a client pod resolving and
/// calling it by its cluster names, the shop, and DNS and VIPs outliving `kill -9`.
#[test]
fn cluster_dns_answers_pods_and_outlives_the_server() {
    if std::env::var_os(support::node::INNER).is_none() {
        // Downloads Debian's nginx package: before the namespaces, which have no network.
        support::node::build_nginx_image();
    }
    if !inside_namespaces("cluster_dns_answers_pods_and_outlives_the_server") {
        return;
    }
    bring_up_loopback();
    let upstream = fake_upstream_resolver().to_string();
    let work = tempfile::tempdir().expect("tempdir");
    let nginx_tar = support::node::nginx_image_path();
    let nginx = testing::read_oci_archive(&nginx_tar, "docker.io/library/nginx:latest");
    let (_registry, registries) = docker_io_mirror(work.path(), "library/nginx", "latest", &nginx);
    let (server, _agent_dir, run_dir) = start_node_with(&registries, &["--cluster-dns-upstream", &upstream]);
    let old = Kubectl::new("1.27", &server);
    let new = Kubectl::new("1.33", &server);
    wait_for(60, "the node Ready", || ready_node(&new, "test-node"));
    // The cluster DNS service is there for tools that look for it.
    let dns_ip = wait_for(30, "the kube-dns service", || {
        let out = new.run(&[
            "get",
            "svc",
            "-n",
            "kube-system",
            "kube-dns",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    });
    assert_eq!(dns_ip, "10.43.0.10");

    let nginx_yaml = support::repo_file("examples/nginx.yaml");
    old.ok_stdin(&["apply", "-f", "-"], DNS_EXTRAS);
    old.ok(&["apply", "-f", nginx_yaml.to_str().expect("path")]);
    old.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    let pvcs = new.ok(&["get", "pvc", "--no-headers"]);
    for claim in ["www-web-0", "www-web-1"] {
        assert!(
            pvcs.lines().any(|l| l.starts_with(claim) && l.contains("Bound")),
            "{claim} bound: {pvcs}"
        );
    }
    // The claim is mounted over nginx's html directory: give each pod a page.
    for pod in ["web-0", "web-1"] {
        let script = format!("echo 'hello from {pod}' > /usr/share/nginx/html/index.html");
        new.ok(&["exec", pod, "--", "sh", "-c", &script]);
    }
    new.ok(&[
        "run",
        "client",
        "--image",
        IMAGE,
        "--image-pull-policy=IfNotPresent",
        "--",
        "sleep",
        "3600",
    ]);
    new.ok(&["wait", "--for=condition=Ready", "pod/client", "--timeout=60s"]);
    let web0 = jsonpath(&new, "web-0", "{.status.podIP}");
    let web1 = jsonpath(&new, "web-1", "{.status.podIP}");
    let vip = new.ok(&["get", "svc", "webvip", "-o", "jsonpath={.spec.clusterIP}"]);
    let sh = |k: &Kubectl, script: &str| -> String {
        let out = k.run(&["exec", "client", "--", "sh", "-c", script]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // The pod resolves through the cluster DNS with Kubernetes' search path and ndots.
    let resolv = sh(&new, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    // Headless: both pods; a StatefulSet pod by its stable name, served over HTTP.
    let both = sh(&new, "nslookup nginx; true");
    assert!(both.contains(&web0) && both.contains(&web1), "nslookup nginx: {both}");
    let page = sh(&old, "wget -qO- http://web-0.nginx.default.svc.cluster.local");
    assert!(page.contains("hello from web-0"), "web-0 by name: {page}");
    // A ClusterIP service by its short name, through the VIP.
    let short = sh(&new, "nslookup webvip; true");
    assert!(short.contains(&vip), "nslookup webvip: {short}");
    let page = sh(&new, &nc_get("webvip", 80, "/"));
    assert!(page.contains("hello from web-"), "webvip by name: {page}");
    // A service without a selector, with Endpoints written by hand (mirrored into a slice).
    let manual = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: manual}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: manual}}\nsubsets: [{{addresses: [{{ip: {web0}}}], ports: [{{name: http, port: 80}}]}}]\n"
    );
    old.ok_stdin(&["apply", "-f", "-"], &manual);
    wait_for(30, "the hand-made endpoints behind their service", || {
        let page = sh(&new, &nc_get("manual", 80, "/"));
        page.contains("hello from web-0").then_some(page)
    });
    // SRV of a named port, PTR of a pod, an ExternalName, and a name outside the cluster
    // (from the fake upstream, not the machine's resolvers).
    let srv = sh(
        &new,
        "nslookup -type=SRV _web._tcp.nginx.default.svc.cluster.local; true",
    );
    assert!(srv.contains("web-0.nginx.default.svc.cluster.local"), "SRV: {srv}");
    let ptr = sh(&new, &format!("nslookup {web1}; true"));
    assert!(ptr.contains("web-1.nginx.default.svc.cluster.local"), "PTR: {ptr}");
    let ext = sh(&new, "nslookup outside.default.svc.cluster.local; true");
    assert!(
        ext.contains("example.com") && ext.contains("192.0.2.1"),
        "ExternalName: {ext}"
    );
    let out = sh(&new, "nslookup example.com; true");
    assert!(out.contains("192.0.2.1"), "forwarded: {out}");
    let nx = sh(&new, "nslookup nothing-here.default.svc.cluster.local; true");
    assert!(nx.contains("NXDOMAIN"), "{nx}");

    // The shop (examples/shop/): frontend -> api -> store over their service names, its image
    // built by scripts/example-image.sh and imported with `skiff image`.
    import_example_images(server.dir.path());
    let shop = support::repo_file("examples/shop");
    old.ok(&["apply", "-f", shop.to_str().expect("path")]);
    for d in ["store", "api", "frontend"] {
        new.ok(&["rollout", "status", &format!("deployment/{d}"), "--timeout=90s"]);
    }
    let shop_page = || http_get_path(SocketAddr::from(([127, 0, 0, 1], 30080)), "/").unwrap_or_default();
    let page = wait_for(30, "the shop on its node port", || {
        let p = shop_page();
        p.contains("\"service\":\"store\"").then_some(p)
    });
    assert!(page.contains("Skiff shop: served by frontend pod frontend-"), "{page}");
    assert!(page.contains("frontend -> http://api/cgi-bin/catalog"), "{page}");
    assert!(
        page.contains("\"service\":\"api\",\"pod\":\"api-"),
        "the api answered: {page}"
    );
    assert!(page.contains("\"called\":\"http://store/cgi-bin/items\""), "{page}");
    assert!(
        page.contains("\"pod\":\"store-") && page.contains("kayak"),
        "the store answered: {page}"
    );

    // kill -9 of the whole server (API server and agent): names still resolve and the VIP still
    // routes, seen from inside the client pod's network namespace.
    let uid = jsonpath(&new, "client", "{.metadata.uid}");
    let dns_pid = std::fs::read_to_string(run_dir.join("dns.json")).expect("the DNS process's record");
    let dir = server.kill9();
    let seen = in_pod_netns(
        &run_dir,
        &uid,
        "nslookup web-1.nginx.default.svc.cluster.local 10.43.0.10; true",
    );
    assert!(seen.contains(&web1), "DNS with the server gone: {seen}");
    let page = in_pod_netns(&run_dir, &uid, &nc_get(&vip, 80, "/"));
    assert!(page.contains("hello from web-"), "the VIP with the server gone: {page}");
    assert_eq!(
        std::fs::read_to_string(run_dir.join("dns.json")).expect("record"),
        dns_pid,
        "the same DNS process"
    );
    let page = shop_page();
    assert!(
        page.contains("kayak") && page.contains("\"service\":\"api\""),
        "the shop, all three services, with the control plane gone: {page}"
    );

    // The server comes back: new services resolve again.
    let flags = agent_flags(&run_dir, &registries);
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(&["--cluster-dns-upstream", &upstream]);
    let server = SkiffServer::start_with_agent(dir, &flags);
    let new = Kubectl::new("1.33", &server);
    new.ok(&["create", "service", "clusterip", "late", "--tcp=80:8080"]);
    let late_ip = new.ok(&["get", "svc", "late", "-o", "jsonpath={.spec.clusterIP}"]);
    wait_for(60, "the new service to resolve", || {
        let out = in_pod_netns(
            &run_dir,
            &uid,
            "nslookup late.default.svc.cluster.local 10.43.0.10; true",
        );
        out.contains(&late_ip).then_some(out)
    });
}
