//! Bad input on purpose: every client mistake is a Kubernetes `Status` with the right code and
//! reason; nothing makes the server answer 500 or stop answering.

use std::sync::Arc;

use http::{Method, Request};
use serde_json::Value;

async fn server() -> (skiff_apiserver::Server, kube::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        skiff_store::SqliteStore::open(skiff_store::SqliteOptions::new(dir.path().join("state.db"))).expect("store");
    let mut cfg = skiff_apiserver::Config::new(dir.path());
    cfg.port = 0;
    let server = skiff_apiserver::start(cfg, Arc::new(store)).await.expect("start");
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    // What the controller manager would do: pods run as the namespace's `default` account.
    let (code, _) = send(
        &client,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts",
        Some("application/json"),
        br#"{"metadata": {"name": "default"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 201, "the default service account");
    (server, client, dir)
}

/// Send a request; return (status code, parsed body).
async fn send(c: &kube::Client, method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header("Content-Type", ct);
    }
    let resp = c
        .send(b.body(kube::client::Body::from(body)).expect("request"))
        .await
        .expect("response");
    let code = resp.status().as_u16();

    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn assert_status(resp: &(u16, Value), code: u16, reason: &str, message_part: &str) {
    let (got, body) = resp;
    assert_eq!(*got, code, "status code; body {body}");
    assert_eq!(body["kind"], "Status", "a Status body: {body}");
    assert_eq!(body["code"], code);
    assert_eq!(body["reason"], reason, "{body}");
    let msg = body["message"].as_str().unwrap_or("");
    assert!(
        msg.contains(message_part),
        "message {msg:?} should contain {message_part:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_statuses() {
    let (_server, c, _dir) = server().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let json = Some("application/json");

    assert_status(
        &send(&c, Method::POST, cms, json, b"{not json".to_vec()).await,
        400,
        "BadRequest",
        "error decoding JSON body",
    );
    assert_status(
        &send(&c, Method::POST, cms, json, b"".to_vec()).await,
        400,
        "BadRequest",
        "empty",
    );
    assert_status(
        &send(&c, Method::POST, cms, json, b"[1,2]".to_vec()).await,
        400,
        "BadRequest",
        "JSON object",
    );
    assert_status(
        &send(&c, Method::POST, cms, Some("text/plain"), b"x".to_vec()).await,
        415,
        "UnsupportedMediaType",
        "text/plain",
    );
    assert_status(
        &send(&c, Method::POST, cms, Some("application/yaml"), b"a: [".to_vec()).await,
        400,
        "BadRequest",
        "YAML",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            cms,
            Some("application/vnd.kubernetes.protobuf"),
            b"garbage".to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "unable to decode body",
    );
    let big = format!(
        r#"{{"metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    assert_status(
        &send(&c, Method::POST, cms, json, big.into_bytes()).await,
        413,
        "RequestEntityTooLarge",
        "too large",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            cms,
            json,
            br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"a"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "does not match the expected API version",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            cms,
            json,
            br#"{"metadata":{"name":"a","namespace":"other"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "does not match the namespace",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            cms,
            json,
            br#"{"metadata":{"name":"a"},"data":{"k":5}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "data.k",
    );
    assert_status(
        &send(&c, Method::POST, cms, json, br#"{"metadata":{}}"#.to_vec()).await,
        422,
        "Invalid",
        "metadata.name: Required value",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            cms,
            json,
            br#"{"metadata":{"name":"x","labels":{"a b":"c"}}}"#.to_vec(),
        )
        .await,
        422,
        "Invalid",
        "metadata.labels",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            "/api/v1/namespaces/default/services",
            json,
            br#"{"metadata":{"name":"s"},"spec":{"ports":[{"port":70000}]}}"#.to_vec(),
        )
        .await,
        422,
        "Invalid",
        "spec.ports[0].port",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            &format!("{cms}?dryRun=Maybe"),
            json,
            br#"{"metadata":{"name":"a"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "dryRun",
    );
    assert_status(
        &send(
            &c,
            Method::POST,
            &format!("{cms}?fieldValidation=Loose"),
            json,
            br#"{"metadata":{"name":"a"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "fieldValidation",
    );

    // Reads.
    assert_status(
        &send(&c, Method::GET, "/apis/nope.example.com/v1/things", None, vec![]).await,
        404,
        "NotFound",
        "could not find",
    );
    assert_status(
        &send(
            &c,
            Method::GET,
            &format!("{cms}?labelSelector=a%20in%20b"),
            None,
            vec![],
        )
        .await,
        400,
        "BadRequest",
        "",
    );
    assert_status(
        &send(
            &c,
            Method::GET,
            &format!("{cms}?fieldSelector=spec.x%3D1"),
            None,
            vec![],
        )
        .await,
        400,
        "BadRequest",
        "field label not supported",
    );
    assert_status(
        &send(&c, Method::GET, &format!("{cms}?resourceVersion=abc"), None, vec![]).await,
        400,
        "BadRequest",
        "resourceVersion",
    );
    assert_status(
        &send(&c, Method::GET, &format!("{cms}?continue=%25%25%25"), None, vec![]).await,
        400,
        "BadRequest",
        "continue",
    );
    assert_status(
        &send(&c, Method::GET, &format!("{cms}?limit=x"), None, vec![]).await,
        400,
        "BadRequest",
        "limit",
    );
    assert_status(
        &send(
            &c,
            Method::GET,
            &format!("{cms}?resourceVersionMatch=Exact"),
            None,
            vec![],
        )
        .await,
        400,
        "BadRequest",
        "resourceVersionMatch",
    );

    // Writes to an object.
    let (code, _) = send(
        &c,
        Method::POST,
        cms,
        json,
        br#"{"metadata":{"name":"p"},"data":{"a":"1"}}"#.to_vec(),
    )
    .await;
    assert_eq!(code, 201);
    let obj = format!("{cms}/p");
    assert_status(
        &send(
            &c,
            Method::PATCH,
            &obj,
            Some("application/json-patch+json"),
            b"{}".to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "patch",
    );
    assert_status(
        &send(
            &c,
            Method::PATCH,
            &obj,
            Some("application/json-patch+json"),
            br#"[{"op":"test","path":"/data/a","value":"2"}]"#.to_vec(),
        )
        .await,
        422,
        "Invalid",
        "",
    );
    assert_status(
        &send(
            &c,
            Method::PATCH,
            &obj,
            Some("application/merge-patch+json"),
            b"[1]".to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "",
    );
    assert_status(
        &send(
            &c,
            Method::PATCH,
            &obj,
            Some("application/strategic-merge-patch+json"),
            br#"{"data":"notamap"}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "",
    );
    assert_status(
        &send(
            &c,
            Method::PATCH,
            &obj,
            Some("application/apply-patch+yaml"),
            b"data: {}".to_vec(),
        )
        .await,
        422,
        "Invalid",
        "fieldManager",
    );
    assert_status(
        &send(
            &c,
            Method::PATCH,
            &format!("{obj}?force=true"),
            Some("application/merge-patch+json"),
            b"{}".to_vec(),
        )
        .await,
        422,
        "Invalid",
        "force",
    );
    assert_status(
        &send(&c, Method::PATCH, &obj, Some("application/xml"), b"<x/>".to_vec()).await,
        415,
        "UnsupportedMediaType",
        "",
    );
    assert_status(
        &send(
            &c,
            Method::PUT,
            &obj,
            json,
            br#"{"metadata":{"name":"other"}}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "does not match the name on the URL",
    );
    assert_status(
        &send(
            &c,
            Method::PUT,
            &obj,
            json,
            br#"{"metadata":{"name":"p","resourceVersion":"1"}}"#.to_vec(),
        )
        .await,
        409,
        "Conflict",
        "the object has been modified",
    );
    assert_status(
        &send(
            &c,
            Method::DELETE,
            &obj,
            json,
            br#"{"propagationPolicy":"Sideways"}"#.to_vec(),
        )
        .await,
        400,
        "BadRequest",
        "propagationPolicy",
    );
    assert_status(
        &send(
            &c,
            Method::DELETE,
            &obj,
            json,
            br#"{"preconditions":{"uid":"not-the-uid"}}"#.to_vec(),
        )
        .await,
        409,
        "Conflict",
        "Precondition failed",
    );
    assert_status(
        &send(&c, Method::PUT, &format!("{obj}/scale"), json, b"{}".to_vec()).await,
        404,
        "NotFound",
        "",
    );
    assert_status(
        &send(&c, Method::GET, &format!("{cms}/nope"), None, vec![]).await,
        404,
        "NotFound",
        "configmaps \"nope\" not found",
    );
    assert_status(
        &send(&c, Method::DELETE, &format!("{cms}/nope"), None, vec![]).await,
        404,
        "NotFound",
        "not found",
    );

    // The server is still healthy and the object intact.
    let (code, body) = send(&c, Method::GET, &obj, None, vec![]).await;
    assert_eq!((code, body["data"]["a"].as_str()), (200, Some("1")));
}

/// `pods/binding` (written in place by the server): a binding without a target, to a pod that
/// does not exist, to a pod that is already bound, or to a pod being deleted, is a Status; a
/// refused binding leaves the pod as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bindings_are_statuses() {
    let (_server, c, _dir) = server().await;
    let json = Some("application/json");
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str| {
        serde_json::to_vec(&serde_json::json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}))
        .expect("json")
    };
    let bind = |node: &str| {
        serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}}))
        .expect("json")
    };
    assert_eq!(send(&c, Method::POST, pods, json, pod("p")).await.0, 201);
    let binding = format!("{pods}/p/binding");

    assert_status(
        &send(&c, Method::POST, &binding, json, bind("")).await,
        422,
        "Invalid",
        "target.name",
    );
    assert_status(
        &send(&c, Method::POST, &format!("{pods}/nope/binding"), json, bind("n1")).await,
        404,
        "NotFound",
        "nope",
    );
    assert_eq!(send(&c, Method::POST, &binding, json, bind("n1")).await.0, 201);
    assert_status(
        &send(&c, Method::POST, &binding, json, bind("n2")).await,
        409,
        "Conflict",
        "already assigned to node \"n1\"",
    );
    let (code, bound) = send(&c, Method::GET, &format!("{pods}/p"), None, Vec::new()).await;
    assert_eq!(code, 200);
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let scheduled: Vec<&Value> = bound["status"]["conditions"]
        .as_array()
        .map(|c| c.iter().filter(|c| c["type"] == "PodScheduled").collect())
        .unwrap_or_default();
    assert_eq!(scheduled.len(), 1, "{bound}");
    assert_eq!(scheduled[0]["status"], "True");

    // A pod being deleted (held by a finalizer) cannot be bound.
    let mut held: Value = serde_json::from_slice(&pod("q")).expect("json");
    held["metadata"]["finalizers"] = serde_json::json!(["example.com/hold"]);
    let held = serde_json::to_vec(&held).expect("json");
    assert_eq!(send(&c, Method::POST, pods, json, held).await.0, 201);
    assert!(send(&c, Method::DELETE, &format!("{pods}/q"), None, Vec::new()).await.0 < 300);
    assert_status(
        &send(&c, Method::POST, &format!("{pods}/q/binding"), json, bind("n1")).await,
        409,
        "Conflict",
        "being deleted",
    );
}
