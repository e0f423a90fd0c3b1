//! Service-account tokens end to end against the in-process server: TokenRequests
//! (`serviceaccounts/{name}/token`) and their errors, tokens as bearer credentials (and when
//! they stop being accepted), and the ServiceAccount admission plugin on pod creation.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::{Method, Request};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

struct TestServer {
    server: skiff_apiserver::Server,
    admin: Client,
    dir: tempfile::TempDir,
}

async fn start_in(dir: tempfile::TempDir) -> TestServer {
    let store =
        skiff_store::SqliteStore::open(skiff_store::SqliteOptions::new(dir.path().join("state.db"))).expect("store");
    let mut cfg = skiff_apiserver::Config::new(dir.path());
    cfg.port = 0;
    let server = skiff_apiserver::start(cfg, Arc::new(store)).await.expect("start");
    let admin = client_from(&server.kubeconfig()).await;
    TestServer { server, admin, dir }
}

/// A server with the `default` account in `default`, as the controller manager makes it.
async fn start() -> TestServer {
    let t = start_in(tempfile::tempdir().expect("tempdir")).await;
    create(
        &t.admin,
        "/api/v1/namespaces/default/serviceaccounts",
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    t
}

async fn client_from(kubeconfig: &str) -> Client {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// A client that presents `token` and nothing else.
async fn token_client(t: &TestServer, token: &str) -> Client {
    let ca = base64::engine::general_purpose::STANDARD.encode(&t.server.pki.ca_pem);
    client_from(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: {token}\n",
        t.server.addr
    ))
    .await
}

/// Send a request; (status code, parsed body).
async fn send(c: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if body.is_some() {
        b = b.header("Content-Type", "application/json");
    }
    let bytes = body.map(|v| serde_json::to_vec(&v).expect("json")).unwrap_or_default();
    let resp = c
        .send(b.body(kube::client::Body::from(bytes)).expect("request"))
        .await
        .expect("response");
    let code = resp.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn create(c: &Client, path: &str, body: Value) -> Value {
    let (code, out) = send(c, Method::POST, path, Some(body)).await;
    assert_eq!(code, 201, "create at {path}: {out}");
    out
}

fn status_of(resp: &(u16, Value)) -> (u16, &str, &str) {
    let (code, body) = resp;
    assert_eq!(body["kind"], "Status", "a Status: {body}");
    (
        *code,
        body["reason"].as_str().unwrap_or(""),
        body["message"].as_str().unwrap_or(""),
    )
}

const SAS: &str = "/api/v1/namespaces/default/serviceaccounts";
const PODS: &str = "/api/v1/namespaces/default/pods";

async fn token_request(c: &Client, sa: &str, spec: Value) -> (u16, Value) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    send(c, Method::POST, &format!("{SAS}/{sa}/token"), Some(body)).await
}

async fn token_for(c: &Client, sa: &str, spec: Value) -> String {
    let (code, out) = token_request(c, sa, spec).await;
    assert_eq!(code, 201, "{out}");
    out["status"]["token"].as_str().expect("a token").to_string()
}

/// The claims of a JWT, decoded without checking anything.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json claims")
}

fn since_epoch(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("a time")
        .timestamp()
}

fn pod(name: &str, spec: Value) -> Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_issue_bound_tokens() {
    let t = start().await;
    let sa = create(&t.admin, SAS, json!({"metadata": {"name": "robot"}})).await;
    let sa_uid = sa["metadata"]["uid"].as_str().expect("uid").to_string();

    // Defaults: the API server's audience, an hour.
    let before = chrono::Utc::now().timestamp();
    let (code, out) = token_request(&t.admin, "robot", json!({})).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(
        (&out["kind"], &out["apiVersion"]),
        (&json!("TokenRequest"), &json!("authentication.k8s.io/v1"))
    );
    assert_eq!(out["spec"], json!({"audiences": [ISSUER], "expirationSeconds": 3600}));
    let expires = since_epoch(
        out["status"]["expirationTimestamp"]
            .as_str()
            .expect("expirationTimestamp"),
    );
    assert!((before + 3600..=before + 3605).contains(&expires), "{out}");
    let c = claims(out["status"]["token"].as_str().expect("token"));
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "system:serviceaccount:default:robot");
    assert_eq!(c["aud"], json!([ISSUER]));
    let iat = c["iat"].as_i64().expect("iat");
    assert_eq!((c["exp"].as_i64(), c["nbf"].as_i64()), (Some(iat + 3600), Some(iat)));
    assert!(c["exp"].as_i64().expect("exp") >= expires);
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        c["kubernetes.io"],
        json!({"namespace": "default", "serviceaccount": {"name": "robot", "uid": sa_uid}})
    );

    // kube-rs' typed call, with audiences and a lifetime.
    let sas: Api<ServiceAccount> = Api::namespaced(t.admin.clone(), "default");
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(7200),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let typed = sas
        .create_token_request("robot", &PostParams::default(), &req)
        .await
        .expect("token request");
    let c = claims(&typed.status.expect("status").token);
    assert_eq!(c["aud"], json!(["vault"]));
    assert_eq!(c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"), 7200);

    // Bound to a pod on a node: the pod and the node are in the claims.
    let node = create(&t.admin, "/api/v1/nodes", json!({"metadata": {"name": "n1"}})).await;
    let p = create(
        &t.admin,
        PODS,
        pod(
            "p",
            json!({"serviceAccountName": "robot", "nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}),
        ),
    )
    .await;
    let pod_uid = p["metadata"]["uid"].as_str().expect("uid");
    let bound = json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod_uid}});
    let (code, out) = token_request(&t.admin, "robot", bound.clone()).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["spec"]["boundObjectRef"]["name"], "p");
    let c = claims(out["status"]["token"].as_str().expect("token"));
    assert_eq!(c["kubernetes.io"]["pod"], json!({"name": "p", "uid": pod_uid}));
    assert_eq!(
        c["kubernetes.io"]["node"],
        json!({"name": "n1", "uid": node["metadata"]["uid"]})
    );
    assert!(c["kubernetes.io"]["warnafter"].is_null());

    // The projected volume's lifetime (3607 s) for the API server: valid for a year, with a
    // warning after the asked-for lifetime; the status says when to rotate.
    let mut spec = bound.clone();
    spec["expirationSeconds"] = json!(3607);
    let (code, out) = token_request(&t.admin, "robot", spec.clone()).await;
    assert_eq!(code, 201, "{out}");
    let c = claims(out["status"]["token"].as_str().expect("token"));
    let iat = c["iat"].as_i64().expect("iat");
    assert_eq!(c["exp"].as_i64(), Some(iat + 365 * 24 * 3600));
    assert_eq!(c["kubernetes.io"]["warnafter"].as_i64(), Some(iat + 3607));
    let expires = since_epoch(
        out["status"]["expirationTimestamp"]
            .as_str()
            .expect("expirationTimestamp"),
    );
    assert!((iat + 3606..=iat + 3608).contains(&expires), "{out}");
    // Not for another audience.
    spec["audiences"] = json!(["vault"]);
    let c = claims(&token_for(&t.admin, "robot", spec).await);
    assert_eq!(c["exp"].as_i64().expect("exp") - c["iat"].as_i64().expect("iat"), 3607);

    // Bound to a secret.
    let s = create(
        &t.admin,
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    let c = claims(
        &token_for(
            &t.admin,
            "robot",
            json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"}}),
        )
        .await,
    );
    assert_eq!(
        c["kubernetes.io"]["secret"],
        json!({"name": "s", "uid": s["metadata"]["uid"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_errors_are_statuses() {
    let t = start().await;
    create(&t.admin, SAS, json!({"metadata": {"name": "robot"}})).await;
    create(
        &t.admin,
        PODS,
        pod("p", json!({"containers": [{"name": "c", "image": "i"}]})),
    )
    .await;

    let r = token_request(&t.admin, "ghost", json!({})).await;
    assert_eq!(status_of(&r), (404, "NotFound", "serviceaccounts \"ghost\" not found"));

    let r = token_request(&t.admin, "robot", json!({"expirationSeconds": 599})).await;
    assert_eq!(
        status_of(&r),
        (
            422,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        )
    );
    assert_eq!(r.1["details"]["causes"][0]["field"], "spec.expirationSeconds");
    assert_eq!(r.1["details"]["group"], "authentication.k8s.io");

    let r = token_request(
        &t.admin,
        "robot",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "nope"}}),
    )
    .await;
    assert_eq!(status_of(&r), (404, "NotFound", "pods \"nope\" not found"));

    // `p` runs as `default`, not as `robot`.
    let r = token_request(
        &t.admin,
        "robot",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}),
    )
    .await;
    assert_eq!(
        status_of(&r),
        (
            400,
            "BadRequest",
            "cannot bind token for serviceaccount \"robot\" to pod running with different serviceaccount name."
        )
    );
    let r = token_request(
        &t.admin,
        "default",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "0000"}}),
    )
    .await;
    let (code, reason, message) = status_of(&r);
    assert_eq!((code, reason), (409, "Conflict"));
    assert!(
        message.starts_with("Operation cannot be fulfilled on Pod \"p\": the UID in the bound object reference (0000) does not match the UID in record"),
        "{message}"
    );
    let r = token_request(
        &t.admin,
        "robot",
        json!({"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "d"}}),
    )
    .await;
    assert_eq!(
        status_of(&r),
        (
            400,
            "BadRequest",
            "cannot bind token to object of type apps/v1, Kind=Deployment"
        )
    );

    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "metadata": {"name": "other"}});
    let r = send(&t.admin, Method::POST, &format!("{SAS}/robot/token"), Some(body)).await;
    assert_eq!(status_of(&r).0, 422);
    assert_eq!(r.1["details"]["causes"][0]["field"], "metadata.name");

    let body = json!({"apiVersion": "v1", "kind": "Pod"});
    let r = send(&t.admin, Method::POST, &format!("{SAS}/robot/token"), Some(body)).await;
    assert_eq!(status_of(&r).0, 400);
    let body = json!({"spec": {"expirationSeconds": "an hour"}});
    let r = send(&t.admin, Method::POST, &format!("{SAS}/robot/token"), Some(body)).await;
    assert_eq!(status_of(&r).0, 400);
    // Only `create`; only on service accounts.
    let r = send(&t.admin, Method::GET, &format!("{SAS}/robot/token"), None).await;
    assert_eq!(status_of(&r).0, 405);
    let r = send(&t.admin, Method::POST, &format!("{PODS}/p/token"), Some(json!({}))).await;
    assert_eq!(status_of(&r).0, 404);

    // Discovery lists the subresource like upstream.
    let (_, core) = send(&t.admin, Method::GET, "/api/v1", None).await;
    let token = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token listed");
    assert_eq!(
        (&token["group"], &token["version"], &token["kind"], &token["verbs"]),
        (
            &json!("authentication.k8s.io"),
            &json!("v1"),
            &json!("TokenRequest"),
            &json!(["create"])
        )
    );
}

/// Who a client is, by a SelfSubjectReview (`kubectl auth whoami`).
async fn whoami(c: &Client) -> (u16, Value) {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    send(
        c,
        Method::POST,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(body),
    )
    .await
}

fn tamper(token: &str) -> String {
    // Another service account's name in the same signed payload.
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims(token);
    c["sub"] = json!("system:serviceaccount:kube-system:admin");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).expect("json"));
    format!("{}.{payload}.{}", parts[0], parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_authenticate_while_their_objects_live() {
    let t = start().await;
    create(&t.admin, SAS, json!({"metadata": {"name": "robot"}})).await;
    let token = token_for(&t.admin, "robot", json!({})).await;
    let robot = token_client(&t, &token).await;

    let (code, me) = whoami(&robot).await;
    assert_eq!(code, 201, "{me}");
    assert_eq!(
        me["status"]["userInfo"],
        json!({"username": "system:serviceaccount:default:robot",
               "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]})
    );
    // No authorization yet: the account may read (and do) anything.
    assert_eq!(send(&robot, Method::GET, PODS, None).await.0, 200);

    // Not ours, not for us, or not intact: 401 as for any bad credential.
    let unauthorized = |r: (u16, Value)| {
        assert_eq!(status_of(&r), (401, "Unauthorized", "Unauthorized"));
    };
    unauthorized(send(&token_client(&t, &tamper(&token)).await, Method::GET, PODS, None).await);
    let vault = token_for(&t.admin, "robot", json!({"audiences": ["vault"]})).await;
    unauthorized(send(&token_client(&t, &vault).await, Method::GET, PODS, None).await);
    let other = start().await;
    let foreign = token_for(&other.admin, "default", json!({})).await;
    unauthorized(send(&token_client(&t, &foreign).await, Method::GET, PODS, None).await);
    unauthorized(send(&token_client(&t, "not.a.token").await, Method::GET, PODS, None).await);

    // Deleting the account ends its tokens; an account of the same name is another account.
    assert_eq!(
        send(&t.admin, Method::DELETE, &format!("{SAS}/robot"), None).await.0,
        200
    );
    unauthorized(send(&robot, Method::GET, PODS, None).await);
    create(&t.admin, SAS, json!({"metadata": {"name": "robot"}})).await;
    unauthorized(send(&robot, Method::GET, PODS, None).await);

    // A pod-bound token lives as long as its pod.
    let p = create(
        &t.admin,
        PODS,
        pod(
            "p",
            json!({"serviceAccountName": "robot", "containers": [{"name": "c", "image": "i"}]}),
        ),
    )
    .await;
    let bound = token_for(
        &t.admin,
        "robot",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": p["metadata"]["uid"]}}),
    )
    .await;
    let bound = token_client(&t, &bound).await;
    assert_eq!(send(&bound, Method::GET, PODS, None).await.0, 200);
    assert_eq!(send(&t.admin, Method::DELETE, &format!("{PODS}/p"), None).await.0, 200);
    unauthorized(send(&bound, Method::GET, PODS, None).await);

    // So does a secret-bound one.
    create(
        &t.admin,
        "/api/v1/namespaces/default/secrets",
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    let held = token_for(
        &t.admin,
        "robot",
        json!({"boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s"}}),
    )
    .await;
    let held = token_client(&t, &held).await;
    assert_eq!(whoami(&held).await.0, 201);
    assert_eq!(
        send(&t.admin, Method::DELETE, "/api/v1/namespaces/default/secrets/s", None)
            .await
            .0,
        200
    );
    unauthorized(whoami(&held).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_outlives_a_restart() {
    let t = start().await;
    let token = token_for(&t.admin, "default", json!({})).await;
    let key = std::fs::read(t.dir.path().join("tls/sa.key")).expect("sa.key");
    let TestServer { server, dir, .. } = t;
    server.shutdown(Duration::from_secs(5)).await;
    let t = start_in(dir).await;
    assert_eq!(std::fs::read(t.dir.path().join("tls/sa.key")).expect("sa.key"), key);
    assert_eq!(whoami(&token_client(&t, &token).await).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_mounts_api_credentials_into_pods() {
    let t = start().await;
    let created = create(
        &t.admin,
        PODS,
        pod(
            "p",
            json!({
                "initContainers": [{"name": "init", "image": "i"}],
                "containers": [
                    {"name": "a", "image": "i"},
                    {"name": "own", "image": "i", "volumeMounts": [{"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]},
                ],
                "volumes": [{"name": "mine", "emptyDir": {}}],
            }),
        ),
    )
    .await;
    let spec = &created["spec"];
    assert_eq!(
        (&spec["serviceAccountName"], &spec["serviceAccount"]),
        (&json!("default"), &json!("default"))
    );
    let volume = &spec["volumes"][1];
    let name = volume["name"].as_str().expect("a volume name");
    let suffix = name.strip_prefix("kube-api-access-").expect("kube-api-access-<suffix>");
    assert!(
        suffix.len() == 5 && suffix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{name}"
    );
    assert_eq!(
        volume,
        &json!({"name": name, "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420}})
    );
    let mount = json!({"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
    assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(
        spec["containers"][1]["volumeMounts"],
        json!([{"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]),
        "a container with its own mount there keeps it"
    );
    // What the admission added is not the client's in the managed fields.
    let managed = serde_json::to_string(&created["metadata"]["managedFields"]).expect("json");
    assert!(!managed.contains("kube-api-access"), "{managed}");

    // automountServiceAccountToken: the pod's wins over the account's.
    let mounts = |p: &Value| p["spec"]["containers"][0]["volumeMounts"].clone();
    let off = create(
        &t.admin,
        PODS,
        pod(
            "off",
            json!({"automountServiceAccountToken": false, "containers": [{"name": "a", "image": "i"}]}),
        ),
    )
    .await;
    assert!(off["spec"]["volumes"].is_null() && mounts(&off).is_null(), "{off}");
    create(
        &t.admin,
        SAS,
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "regcred"}]}),
    )
    .await;
    let quiet = create(
        &t.admin,
        PODS,
        pod(
            "quiet",
            json!({"serviceAccountName": "quiet", "containers": [{"name": "a", "image": "i"}]}),
        ),
    )
    .await;
    assert!(quiet["spec"]["volumes"].is_null(), "{quiet}");
    assert_eq!(quiet["spec"]["imagePullSecrets"], json!([{"name": "regcred"}]));
    let loud = create(
        &t.admin,
        PODS,
        pod(
            "loud",
            json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true,
                   "imagePullSecrets": [{"name": "mine"}], "containers": [{"name": "a", "image": "i"}]}),
        ),
    )
    .await;
    assert_eq!(
        mounts(&loud)[0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(loud["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));

    // An account that does not exist.
    let r = send(
        &t.admin,
        Method::POST,
        PODS,
        Some(pod(
            "lost",
            json!({"serviceAccountName": "ghost", "containers": [{"name": "a", "image": "i"}]}),
        )),
    )
    .await;
    assert_eq!(
        status_of(&r),
        (
            403,
            "Forbidden",
            "pods \"lost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"
        )
    );
    // A missing namespace is said first (and at once).
    let r = send(
        &t.admin,
        Method::POST,
        "/api/v1/namespaces/nowhere/pods",
        Some(pod("x", json!({"containers": [{"name": "a", "image": "i"}]}))),
    )
    .await;
    assert_eq!(status_of(&r), (404, "NotFound", "namespaces \"nowhere\" not found"));

    // A pod in a namespace whose `default` account is still being made waits for it.
    create(&t.admin, "/api/v1/namespaces", json!({"metadata": {"name": "fresh"}})).await;
    let admin = t.admin.clone();
    let waiting = tokio::spawn(async move {
        send(
            &admin,
            Method::POST,
            "/api/v1/namespaces/fresh/pods",
            Some(pod("early", json!({"containers": [{"name": "a", "image": "i"}]}))),
        )
        .await
    });
    // The account comes a moment later (as from the controller manager).
    tokio::time::sleep(Duration::from_millis(300)).await;
    create(
        &t.admin,
        "/api/v1/namespaces/fresh/serviceaccounts",
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    let (code, early) = waiting.await.expect("join");
    assert_eq!(code, 201, "{early}");
    assert_eq!(early["spec"]["serviceAccountName"], "default");
}
