//! Real kubectl (the oldest and newest supported, 1.27 and 1.33) against a real `skiff server`
//! process: the verbs users run, checked by what kubectl prints.

mod support;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use support::{repo_file, Kubectl, SkiffServer};

fn nginx_yaml() -> String {
    std::fs::read_to_string(repo_file("examples/nginx.yaml")).expect("examples/nginx.yaml")
}

const DEPLOY: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  labels: {app: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: registry.local/api:1
";

const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string}
";

fn scenario(version: &str) {
    // The API on its own: controllers would write status between a `get` and a `replace`.
    let server = SkiffServer::start_with(
        tempfile::tempdir().expect("tempdir"),
        0,
        &["--disable-controller-manager", "--disable-scheduler"],
    );
    let k = Kubectl::new(version, &server);
    let nginx = nginx_yaml();

    // Discovery and version.
    let resources = k.ok(&["api-resources"]);
    for r in [
        "statefulsets",
        "customresourcedefinitions",
        "horizontalpodautoscalers",
        "endpointslices",
        "leases",
    ] {
        assert!(resources.contains(r), "api-resources lists {r}:\n{resources}");
    }
    let versions = k.ok(&["api-versions"]);
    for gv in [
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "autoscaling/v1",
        "v1",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(versions.lines().any(|l| l == gv), "api-versions lists {gv}");
    }
    let v = k.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&v).expect("version json");
    assert_eq!(
        (
            v["serverVersion"]["major"].as_str(),
            v["serverVersion"]["minor"].as_str()
        ),
        (Some("1"), Some("33"))
    );
    let ns = k.ok(&["get", "ns"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(n), "namespace {n} exists");
    }

    // explain reads the server's OpenAPI schemas.
    let ex = k.ok(&["explain", "statefulset.spec"]);
    assert!(
        ex.contains("KIND:       StatefulSet") && ex.contains("serviceName") && ex.contains("volumeClaimTemplates"),
        "{ex}"
    );
    // The same from the protobuf OpenAPI v2 document kubectl 1.27/1.28 read.
    let ex = k.ok(&["explain", "statefulset.spec", "--output=plaintext-openapiv2"]);
    assert!(
        ex.contains("KIND:     StatefulSet") && ex.contains("serviceName"),
        "{ex}"
    );
    let ex = k.ok(&["explain", "pods.spec.containers.image"]);
    assert!(ex.contains("image") && ex.contains("<string>"), "{ex}");

    // auth can-i (a SelfSubjectAccessReview; protobuf from kubectl >= 1.32).
    assert_eq!(k.ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");

    // apply: create path, then the update path (strategic merge patch) after 2 -> 3 replicas.
    let out = k.ok_stdin(&["apply", "-f", "-"], &nginx);
    assert!(
        out.contains("service/nginx created") && out.contains("statefulset.apps/web created"),
        "{out}"
    );
    let edited = nginx.replace("replicas: 2", "replicas: 3");
    let out = k.ok_stdin(&["apply", "-f", "-"], &edited);
    assert!(
        out.contains("service/nginx unchanged") && out.contains("statefulset.apps/web configured"),
        "{out}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.spec.replicas}/{.metadata.generation}"
        ]),
        "3/2"
    );
    // The apply kept what kubectl does not send: the server's defaults and the pull secret.
    assert_eq!(
        k.ok(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.spec.podManagementPolicy},{.spec.template.spec.imagePullSecrets[0].name}"
        ]),
        "OrderedReady,huoban-harbor"
    );

    // get in every output format.
    let wide = k.ok(&["get", "svc,statefulset", "-o", "wide"]);
    assert!(
        wide.contains("CLUSTER-IP") && wide.contains("None") && wide.contains("80/TCP") && wide.contains("app=nginx"),
        "{wide}"
    );
    assert!(
        wide.contains("statefulset.apps/web") && wide.contains("0/3") && wide.contains("nginx:latest"),
        "{wide}"
    );
    assert!(k.ok(&["get", "sts", "web", "-o", "yaml"]).contains("kind: StatefulSet"));
    let json: serde_json::Value = serde_json::from_str(&k.ok(&["get", "sts", "-o", "json"])).expect("json");
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["metadata"]["name"], "web");
    assert_eq!(k.ok(&["get", "sts", "-o", "name"]).trim(), "statefulset.apps/web");
    let cc = k.ok(&[
        "get",
        "sts",
        "-o",
        "custom-columns=N:.metadata.name,R:.spec.replicas,IMG:.spec.template.spec.containers[0].image",
    ]);
    assert_eq!(
        cc.lines().nth(1).map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["web", "3", "nginx:latest"])
    );
    assert_eq!(
        k.ok(&["get", "svc", "-l", "app=nginx", "-o", "name"]).trim(),
        "service/nginx"
    );
    assert_eq!(
        k.ok(&["get", "svc", "-l", "app,app notin (nginx)", "-o", "name"])
            .trim(),
        ""
    );
    let desc = k.ok(&["describe", "statefulset", "web"]);
    assert!(
        desc.contains("Replicas:") && desc.contains("3 desired") && desc.contains("StorageClass:  managed-nfs-storage"),
        "{desc}"
    );

    // label, annotate, the three client patch types, scale, replace.
    k.ok(&["label", "sts", "web", "tier=frontend"]);
    k.ok(&["annotate", "sts", "web", "owner=team-a"]);
    assert_eq!(
        k.ok(&[
            "get",
            "sts",
            "-l",
            "tier=frontend",
            "-o",
            "jsonpath={.items[0].metadata.annotations.owner}"
        ]),
        "team-a"
    );
    k.ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ]);
    k.ok(&[
        "patch",
        "sts",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "sts",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    assert_eq!(k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas} {.metadata.labels.patched} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort}"]), "4 merge nginx:1.27 80");
    assert!(k.ok(&["scale", "sts", "web", "--replicas=5"]).contains("scaled"));
    assert_eq!(k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"]), "5");
    let live = k.ok(&["get", "sts", "web", "-o", "yaml"]);
    let replaced = live.replace("replicas: 5", "replicas: 6");
    assert!(k.ok_stdin(&["replace", "-f", "-"], &replaced).contains("replaced"));
    assert_eq!(k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"]), "6");
    // The same stale object again: the server rejects the out-of-date resourceVersion.
    let err = k.fails_stdin(&["replace", "-f", "-"], &replaced);
    assert!(err.contains("the object has been modified"), "{err}");

    // diff: a change shows and exits 1; no change exits 0.
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\n  labels:\n    app: nginx\nspec:\n  ports:\n  - port: 80\n    name: web\n  clusterIP: None\n  selector:\n    app: nginx\n";
    let out = k.run_stdin(&["diff", "-f", "-"], svc);
    assert_eq!(
        out.status.code(),
        Some(0),
        "no diff expected: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = k.run_stdin(&["diff", "-f", "-"], &svc.replace("port: 80", "port: 8080"));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a diff expected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8080"));

    // Server-side apply, a conflict with another field manager, then --force-conflicts.
    let out = k.ok_stdin(&["apply", "--server-side", "-f", "-"], DEPLOY);
    assert!(out.contains("deployment.apps/api serverside-applied"), "{out}");
    k.ok(&["scale", "deploy", "api", "--replicas=4"]);
    let err = k.fails_stdin(&["apply", "--server-side", "-f", "-"], DEPLOY);
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    k.ok_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], DEPLOY);
    assert_eq!(k.ok(&["get", "deploy", "api", "-o", "jsonpath={.spec.replicas}"]), "2");
    let managers = k.ok(&[
        "get",
        "deploy",
        "api",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");
    // Dropping a field from the applied config removes it.
    let without_label = DEPLOY.replace("  labels: {app: api}\n", "");
    k.ok_stdin(&["apply", "--server-side", "-f", "-"], &without_label);
    assert_eq!(k.ok(&["get", "deploy", "api", "-o", "jsonpath={.metadata.labels}"]), "");

    // create generators (kubectl >= 1.32 sends these as protobuf).
    k.ok(&["create", "namespace", "team"]);
    k.ok(&[
        "-n",
        "team",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    k.ok(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=s3cr3t",
    ]);
    k.ok(&[
        "-n",
        "team",
        "create",
        "deployment",
        "web",
        "--image=registry.local/web:1",
        "--replicas=0",
    ]);
    assert_eq!(
        k.ok(&["-n", "team", "get", "cm", "cfg", "-o", "jsonpath={.data.b}"]),
        "2"
    );
    assert_eq!(
        k.ok(&["-n", "team", "get", "secret", "pw", "-o", "jsonpath={.data.password}"]),
        "czNjcjN0"
    );
    assert_eq!(
        k.ok(&[
            "-n",
            "team",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas},{.spec.template.spec.containers[0].image}"
        ]),
        "0,registry.local/web:1"
    );

    // get -w sees a concurrent change.
    let mut watch = k
        .cmd(&[
            "get",
            "cm",
            "-n",
            "team",
            "-w",
            "--output-watch-events",
            "--request-timeout=20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("watch");
    std::thread::sleep(Duration::from_millis(700));
    k.ok(&["-n", "team", "create", "configmap", "late", "--from-literal=x=y"]);
    k.ok(&["-n", "team", "delete", "configmap", "late"]);
    std::thread::sleep(Duration::from_millis(700));
    let _ = watch.kill();
    let mut seen = String::new();
    watch
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut seen)
        .expect("read");
    let _ = watch.wait();
    assert!(
        seen.contains("ADDED") && seen.contains("late") && seen.contains("DELETED"),
        "watch output:\n{seen}"
    );

    // A CRD and its custom resources.
    k.ok_stdin(&["apply", "-f", "-"], CRD);
    k.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.example.com",
        "--timeout=10s",
    ]);
    let ex = k.ok(&["explain", "widgets.spec"]);
    assert!(
        ex.contains("KIND:       Widget") && ex.contains("size") && ex.contains("<integer>"),
        "{ex}"
    );
    let w = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 2\n";
    assert!(k
        .ok_stdin(&["apply", "-f", "-"], w)
        .contains("widget.example.com/w1 created"));
    assert!(k
        .ok_stdin(&["apply", "-f", "-"], &w.replace("size: 2", "size: 3"))
        .contains("configured"));
    let list = k.ok(&["get", "widgets"]);
    assert!(
        list.contains("SIZE")
            && list
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("w1") && l.contains('3')),
        "{list}"
    );
    k.ok(&[
        "patch",
        "wd",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"color":"blue"}}"#,
    ]);
    assert_eq!(k.ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.color}"]), "blue");
    let err = k.fails(&["patch", "wd", "w1", "--type=merge", "-p", r#"{"spec":{"size":0}}"#]);
    assert!(
        err.contains("spec.size") && err.contains("greater than or equal to 1"),
        "{err}"
    );
    let err = k.fails_stdin(&["apply", "-f", "-"], &w.replace("size: 2", "size: 2\n  shape: round"));
    assert!(err.contains("unknown field \"spec.shape\""), "{err}");
    k.ok(&["delete", "wd", "w1"]);
    assert!(k.run(&["get", "wd", "w1"]).status.code() == Some(1));

    // Errors as kubectl shows them.
    let err = k.fails(&["create", "configmap", "Bad_Name"]);
    assert!(err.contains("is invalid") && err.contains("metadata.name"), "{err}");
    let err = k.fails(&["get", "sts", "nope"]);
    assert!(
        err.contains("NotFound") && err.contains("statefulsets.apps \"nope\" not found"),
        "{err}"
    );
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\ndata:\n  a: b\ndatta:\n  c: d\n";
    let err = k.fails_stdin(&["apply", "--validate=strict", "-f", "-"], bad);
    assert!(err.contains("unknown field \"datta\""), "{err}");
    let unauth = server.dir.path().join("bad-kubeconfig.yaml");
    let cfg = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    let cfg: String = cfg
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &unauth,
        cfg.replace("user: {}", "")
            .replace("  user:\n", "  user:\n    token: wrong\n"),
    )
    .expect("write");
    let out = std::process::Command::new(&k.bin)
        .arg("--kubeconfig")
        .arg(&unauth)
        .args(["get", "pods"])
        .output()
        .expect("kubectl");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && (err.contains("Unauthorized") || err.contains("must be logged in")),
        "{err}"
    );

    // delete: by file, by label, --all, and a namespace with everything in it.
    let out = k.ok_stdin(&["delete", "-f", "-"], &nginx);
    assert!(
        out.contains("service \"nginx\" deleted") && out.contains("statefulset.apps \"web\" deleted"),
        "{out}"
    );
    k.ok(&["create", "configmap", "l1", "--from-literal=a=1"]);
    k.ok(&["label", "cm", "l1", "group=x"]);
    k.ok(&["create", "configmap", "l2", "--from-literal=a=1"]);
    assert!(k.ok(&["delete", "cm", "-l", "group=x"]).contains("\"l1\" deleted"));
    k.ok(&["delete", "cm", "--all"]);
    assert_eq!(k.ok(&["get", "cm", "-o", "name"]).trim(), "");
    assert!(k.ok(&["delete", "ns", "team"]).contains("deleted"));
    assert!(k.fails(&["get", "ns", "team"]).contains("NotFound"));
    assert_eq!(
        k.ok(&["get", "cm,secret,deploy", "-n", "team", "-o", "name"]).trim(),
        ""
    );
}

#[test]
fn kubectl_1_27() {
    scenario("1.27");
}

/// `kubectl create token` and the token as kubectl's credential (`--token`), with the
/// controller manager making the `default` account.
fn service_account_tokens(version: &str) {
    let server = SkiffServer::start();
    let admin = Kubectl::new(version, &server);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !admin.run(&["get", "serviceaccount", "default"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the default service account");
        std::thread::sleep(Duration::from_millis(200));
    }
    let token = admin.ok(&["create", "token", "default"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let anonymous = admin.without_credentials(&server);
    let err = anonymous.fails(&["--token=garbage", "get", "pods"]);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    let flag = format!("--token={token}");
    let out = anonymous.ok(&[&flag, "get", "pods"]);
    assert!(out.is_empty(), "{out}");
    admin.ok(&["create", "configmap", "seen", "--from-literal=a=b"]);
    let out = anonymous.ok(&[&flag, "get", "configmaps", "seen", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/seen");
    if version != "1.27" {
        // `auth whoami` reads authentication.k8s.io/v1 from 1.28 on.
        let me = anonymous.ok(&[&flag, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
        assert_eq!(me, "system:serviceaccount:default:default");
    }

    // A token with another audience, or changed, is no credential here.
    let vault = admin.ok(&["create", "token", "default", "--audience=vault"]);
    let err = anonymous.fails(&[&format!("--token={}", vault.trim()), "get", "pods"]);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    let mut forged = token.clone();
    forged.push('x');
    let err = anonymous.fails(&[&format!("--token={forged}"), "get", "pods"]);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );

    // The server's answers to bad requests, as kubectl shows them.
    let err = admin.fails(&["create", "token", "ghost"]);
    assert!(err.contains("serviceaccounts \"ghost\" not found"), "{err}");
    let err = admin.fails(&["create", "token", "default", "--duration=5m"]);
    assert!(err.contains("may not specify a duration less than 10 minutes"), "{err}");
    let err = admin.fails(&[
        "create",
        "token",
        "default",
        "--bound-object-kind=Pod",
        "--bound-object-name=nope",
    ]);
    assert!(err.contains("pods \"nope\" not found"), "{err}");
}

#[test]
fn service_account_tokens_kubectl_1_27() {
    service_account_tokens("1.27");
}

#[test]
fn service_account_tokens_kubectl_1_33() {
    service_account_tokens("1.33");
}

#[test]
fn kubectl_1_33() {
    scenario("1.33");
}
