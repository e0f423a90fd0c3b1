//! The API server in-process on 127.0.0.1:0, driven by kube-rs (typed `Api<T>`, `watcher`):
//! the semantics client libraries rely on.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;

struct TestServer {
    server: Option<skiff_apiserver::Server>,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn start_with(watch_cache_events: usize) -> TestServer {
    start_with_limits(watch_cache_events, 10_000).await
}

async fn start_with_limits(watch_cache_events: usize, watch_replay_max: u64) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        skiff_store::SqliteStore::open(skiff_store::SqliteOptions::new(dir.path().join("state.db"))).expect("store");
    let mut cfg = skiff_apiserver::Config::new(dir.path());
    cfg.port = 0;
    cfg.watch_cache_events = watch_cache_events;
    cfg.watch_replay_max = watch_replay_max;
    let server = skiff_apiserver::start(cfg, Arc::new(store)).await.expect("start");
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    // What the controller manager would do: pods run as the namespace's `default` account.
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .expect("the default service account");
    TestServer {
        server: Some(server),
        client,
        _dir: dir,
    }
}

async fn start() -> TestServer {
    start_with(10_000).await
}

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .expect("configmap")
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_with_kubernetes_errors() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let created = cms
        .create(&PostParams::default(), &cm("a", &[("k", "v")]))
        .await
        .expect("create");
    let rv1 = created.metadata.resource_version.clone().expect("resourceVersion");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());

    let dup = api_error(
        cms.create(&PostParams::default(), &cm("a", &[]))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "v2".to_string())].into());
    let replaced = cms
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_ne!(replaced.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    // The same stale resourceVersion again: a conflict.
    let stale = api_error(
        cms.replace("a", &PostParams::default(), &changed)
            .await
            .expect_err("stale"),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));

    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"x": "y"}})))
        .await
        .expect("patch");
    assert_eq!(
        patched.data.as_ref().and_then(|d| d.get("x")).map(String::as_str),
        Some("y")
    );

    let missing = api_error(cms.get("nope").await.expect_err("missing"));
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    cms.delete("a", &DeleteParams::default()).await.expect("delete");
    assert!(cms.get_opt("a").await.expect("get").is_none());

    // A namespace that does not exist.
    let nowhere: Api<ConfigMap> = Api::namespaced(t.client.clone(), "nowhere");
    let e = api_error(
        nowhere
            .create(&PostParams::default(), &cm("a", &[]))
            .await
            .expect_err("no namespace"),
    );
    assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"nowhere\" not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_reports_every_bad_field() {
    let t = start().await;
    let deploys: Api<Deployment> = Api::namespaced(t.client.clone(), "default");
    let bad: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "Bad_Name"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))
    .expect("deployment");
    let e = api_error(deploys.create(&PostParams::default(), &bad).await.expect_err("invalid"));
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes: Vec<String> = e
        .details
        .expect("details")
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(
        causes,
        [
            "metadata.name",
            "spec.template.metadata.labels",
            "spec.template.spec.containers[0].image"
        ]
    );
    assert!(
        e.message.starts_with("Deployment.apps \"Bad_Name\" is invalid: ["),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_moves_with_spec_not_status_or_metadata() {
    let t = start().await;
    let deploys: Api<Deployment> = Api::namespaced(t.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}
    }))
    .expect("deployment");
    let d = deploys.create(&PostParams::default(), &d).await.expect("create");
    assert_eq!(d.metadata.generation, Some(1));
    // Defaults the user did not write.
    let spec = d.spec.expect("spec");
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.strategy.and_then(|s| s.type_).as_deref(), Some("RollingUpdate"));
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .expect("label");
    assert_eq!(d.metadata.generation, Some(1));
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .expect("scale");
    assert_eq!(d.metadata.generation, Some(2));
    // The main resource ignores status; the status subresource takes only status.
    let d = deploys
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 9}})),
        )
        .await
        .expect("status via main");
    assert_eq!(d.status.and_then(|s| s.replicas), None);
    let d = deploys
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 2, "replicas": 3}, "spec": {"replicas": 7}})),
        )
        .await
        .expect("status");
    assert_eq!(d.status.and_then(|s| s.replicas), Some(3));
    assert_eq!(d.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(d.metadata.generation, Some(2));
    let scale = deploys.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(scale.status.and_then(|s| s.selector).as_deref(), Some("app=web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_and_selectors() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    for i in 0..5 {
        let mut c = cm(&format!("c{i}"), &[]);
        c.metadata.labels = Some(
            [(
                "parity".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        cms.create(&PostParams::default(), &c).await.expect("create");
    }
    let page1 = cms.list(&ListParams::default().limit(2)).await.expect("page 1");
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().expect("continue token");
    // A write between pages does not show up in later pages.
    cms.create(&PostParams::default(), &cm("c2a", &[]))
        .await
        .expect("create");
    let page2 = cms
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    let names: Vec<_> = page2
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["c2", "c3"]);
    assert_eq!(page2.metadata.resource_version, page1.metadata.resource_version);
    let even = cms
        .list(&ListParams::default().labels("parity=even"))
        .await
        .expect("even");
    assert_eq!(even.items.len(), 3);
    let by_name = cms
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .expect("by name");
    assert_eq!(by_name.items.len(), 1);
    let bad = api_error(
        cms.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .expect_err("bad field"),
    );
    assert_eq!(
        (bad.code, bad.message.as_str()),
        (400, "field label not supported: spec.bogus")
    );
    let pods: Api<Pod> = Api::all(t.client.clone());
    assert!(pods
        .list(&ListParams::default().fields("spec.nodeName=n1,status.phase=Running"))
        .await
        .expect("pods")
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_changes_and_selector_transitions() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let stream = watcher(cms.clone(), watcher::Config::default().labels("team=a")).applied_objects();
    let mut stream = Box::pin(stream);
    let mut c = cm("w", &[]);
    c.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    cms.create(&PostParams::default(), &c).await.expect("create");
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("event in time")
        .expect("ok")
        .expect("some");
    assert_eq!(first.metadata.name.as_deref(), Some("w"));
    cms.patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"n": "1"}})))
        .await
        .expect("patch");
    let second = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("event in time")
        .expect("ok")
        .expect("some");
    assert_eq!(second.data.and_then(|d| d.get("n").cloned()).as_deref(), Some("1"));

    // A raw watch: leaving the selector is a DELETED event for this watcher.
    let rv = cms.get("w").await.expect("get").metadata.resource_version.expect("rv");
    let mut raw = cms
        .watch(&WatchParams::default().labels("team=a"), &rv)
        .await
        .expect("watch")
        .boxed();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"team": "b"}}})),
    )
    .await
    .expect("relabel");
    match tokio::time::timeout(Duration::from_secs(10), raw.next())
        .await
        .expect("in time")
        .expect("event")
        .expect("ok")
    {
        WatchEvent::Deleted(o) => {
            assert_eq!(o.metadata.name.as_deref(), Some("w"));
            // The last state this watcher matched, not the new one.
            assert_eq!(
                o.metadata.labels.and_then(|l| l.get("team").cloned()).as_deref(),
                Some("a")
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_before_the_window_resumes_from_history_until_compacted() {
    let t = start_with(4).await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let first = cms
        .create(&PostParams::default(), &cm("g0", &[]))
        .await
        .expect("create");
    for i in 1..10 {
        cms.create(&PostParams::default(), &cm(&format!("g{i}"), &[]))
            .await
            .expect("create");
    }
    let old = first.metadata.resource_version.expect("rv");
    // Older than the cache's window of 4 events, but still in the store's history: a watcher
    // that fell behind gets every event it missed, in order, instead of having to re-list.
    let mut w = cms.watch(&WatchParams::default(), &old).await.expect("watch").boxed();
    for i in 1..10 {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("in time")
            .expect("event")
        {
            Ok(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some(format!("g{i}").as_str())),
            other => panic!("expected ADDED g{i}, got {other:?}"),
        }
    }
    // Once the store has compacted past it, the revision is gone: 410.
    let store = t.server.as_ref().expect("server").shared.objects.store.clone();
    let now = store.current_revision().await.expect("revision");
    store.compact(now).await.expect("compact");
    let mut w = cms.watch(&WatchParams::default(), &old).await.expect("watch").boxed();
    expect_gone(&mut w).await;
}

/// The next thing a watch sends is 410 Gone (as an event or as the response).
async fn expect_gone<S>(w: &mut S)
where
    S: futures::Stream<Item = Result<WatchEvent<ConfigMap>, kube::Error>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("in time")
        .expect("event")
    {
        Ok(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_too_far_behind_to_replay_gets_410() {
    // A window of 4 events; at most 5 revisions are replayed from the store's history.
    let t = start_with_limits(4, 5).await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let mut rvs = Vec::new();
    for i in 0..10 {
        let c = cms
            .create(&PostParams::default(), &cm(&format!("r{i}"), &[]))
            .await
            .expect("create");
        rvs.push(c.metadata.resource_version.expect("rv"));
    }
    // Nine revisions behind: 410 Gone, the client re-lists (as upstream answers any watch from
    // before its cache's window).
    let mut w = cms
        .watch(&WatchParams::default(), &rvs[0])
        .await
        .expect("watch")
        .boxed();
    expect_gone(&mut w).await;
    // Five behind (one before the window): replayed, in order.
    let mut w = cms
        .watch(&WatchParams::default(), &rvs[4])
        .await
        .expect("watch")
        .boxed();
    for i in 5..10 {
        match tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("in time")
            .expect("event")
        {
            Ok(WatchEvent::Added(c)) => assert_eq!(c.metadata.name.as_deref(), Some(format!("r{i}").as_str())),
            other => panic!("expected ADDED r{i}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_and_namespaces_cascade() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let mut c = cm("held", &[]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.expect("create");
    cms.delete("held", &DeleteParams::default()).await.expect("delete");
    let held = cms.get("held").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    let e = api_error(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}})),
        )
        .await
        .expect_err("no new finalizers"),
    );
    assert_eq!(e.code, 422);
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    assert!(cms.get_opt("held").await.expect("get").is_none());

    let nss: Api<Namespace> = Api::all(t.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns"),
    )
    .await
    .expect("ns");
    let inner: Api<ConfigMap> = Api::namespaced(t.client.clone(), "doomed");
    inner
        .create(&PostParams::default(), &cm("x", &[]))
        .await
        .expect("create");
    // A finalizer keeps the namespace terminating until it is released.
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    inner.create(&PostParams::default(), &held).await.expect("create");
    nss.delete("doomed", &DeleteParams::default()).await.expect("delete ns");
    let e = api_error(
        inner
            .create(&PostParams::default(), &cm("y", &[]))
            .await
            .expect_err("terminating"),
    );
    assert_eq!(e.code, 403);
    assert!(e.message.contains("because it is being terminated"), "{}", e.message);
    for _ in 0..100 {
        if inner.get_opt("x").await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(inner.get_opt("x").await.expect("get").is_none(), "content deleted");
    let ns = nss.get("doomed").await.expect("still terminating");
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Terminating"));
    inner
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release");
    for _ in 0..100 {
        if nss.get_opt("doomed").await.expect("get").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        nss.get_opt("doomed").await.expect("get").is_none(),
        "namespace finalized"
    );
    assert!(inner.list(&ListParams::default()).await.expect("list").items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_watches() {
    let mut t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let mut w = cms.watch(&WatchParams::default(), "0").await.expect("watch").boxed();
    let server = t.server.take().expect("server");
    let started = std::time::Instant::now();
    server.shutdown(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "watches end promptly on shutdown"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = w.next().await {}
    })
    .await;
    assert!(end.is_ok(), "the watch stream ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watch_gets_initial_events_and_bookmark() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("s{i}"), &[]))
            .await
            .expect("create");
    }
    // kube-rs' streaming lists use sendInitialEvents=true + the initial-events-end bookmark.
    let stream = watcher(cms.clone(), watcher::Config::default().streaming_lists());
    let mut stream = Box::pin(stream);
    let mut initial = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("in time")
            .expect("ok")
            .expect("some");
        match ev {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["s0", "s1", "s2"]);
    cms.create(&PostParams::default(), &cm("s3", &[]))
        .await
        .expect("create");
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("in time")
        .expect("ok")
        .expect("some")
    {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("s3")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_storage_versions_convert() {
    use k8s_openapi::api::autoscaling::{v1 as hv1, v2 as hv2};
    let t = start().await;
    let v1: Api<hv1::HorizontalPodAutoscaler> = Api::namespaced(t.client.clone(), "default");
    let v2: Api<hv2::HorizontalPodAutoscaler> = Api::namespaced(t.client.clone(), "default");
    let h: hv1::HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}
    }))
    .expect("hpa");
    v1.create(&PostParams::default(), &h).await.expect("create via v1");
    let as_v2 = v2.get("web").await.expect("read via v2");
    let metrics = as_v2.spec.and_then(|s| s.metrics).expect("metrics");
    assert_eq!(
        metrics[0].resource.as_ref().and_then(|r| r.target.average_utilization),
        Some(70)
    );
    assert_eq!(
        v1.get("web")
            .await
            .expect("v1")
            .spec
            .and_then(|s| s.target_cpu_utilization_percentage),
        Some(70)
    );
    assert_eq!(v2.list(&ListParams::default()).await.expect("list v2").items.len(), 1);

    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let core: Api<CoreEvent> = Api::namespaced(t.client.clone(), "default");
    let newer: Api<NewEvent> = Api::namespaced(t.client.clone(), "default");
    let e: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
        "reason": "Started", "message": "started container", "type": "Normal"
    }))
    .expect("event");
    core.create(&PostParams::default(), &e).await.expect("create");
    let seen = newer.get("e1").await.expect("events.k8s.io view");
    assert_eq!(seen.note.as_deref(), Some("started container"));
    assert_eq!(seen.regarding.and_then(|r| r.name).as_deref(), Some("p1"));
    let by_field = newer
        .list(&ListParams::default().fields("regarding.name=p1"))
        .await
        .expect("field selector");
    assert_eq!(by_field.items.len(), 1);
    let by_field = core
        .list(&ListParams::default().fields("involvedObject.name=p1,reason=Started"))
        .await
        .expect("field selector");
    assert_eq!(by_field.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_collection_by_label() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    for (name, keep) in [("a", "no"), ("b", "no"), ("c", "yes")] {
        let mut c = cm(name, &[]);
        c.metadata.labels = Some([("keep".to_string(), keep.to_string())].into());
        cms.create(&PostParams::default(), &c).await.expect("create");
    }
    cms.delete_collection(&DeleteParams::default(), &ListParams::default().labels("keep=no"))
        .await
        .expect("deletecollection");
    let left: Vec<_> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_dry_run_and_propagation_policies() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let a = cms.create(&PostParams::default(), &g).await.expect("create");
    let b = cms.create(&PostParams::default(), &g).await.expect("create");
    let (an, bn) = (a.metadata.name.expect("name"), b.metadata.name.expect("name"));
    assert!(an.starts_with("gen-") && an.len() == 9 && an != bn, "{an} {bn}");

    // dryRun=All validates and answers, but stores nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let shown = cms.create(&dry, &cm("dry", &[("k", "v")])).await.expect("dry run");
    assert_eq!(shown.metadata.name.as_deref(), Some("dry"));
    assert!(cms.get_opt("dry").await.expect("get").is_none());
    assert_eq!(
        api_error(
            cms.create(&dry, &cm("Bad_Name", &[]))
                .await
                .expect_err("still validated")
        )
        .code,
        422
    );

    // Foreground and orphan deletion are recorded as finalizers for the garbage collector.
    cms.create(&PostParams::default(), &cm("fg", &[]))
        .await
        .expect("create");
    cms.delete("fg", &DeleteParams::foreground()).await.expect("delete");
    let fg = cms.get("fg").await.expect("held for the garbage collector");
    assert!(fg.metadata.deletion_timestamp.is_some());
    assert_eq!(fg.metadata.finalizers, Some(vec!["foregroundDeletion".to_string()]));
    cms.create(&PostParams::default(), &cm("or", &[]))
        .await
        .expect("create");
    cms.delete("or", &DeleteParams::orphan()).await.expect("delete");
    assert_eq!(
        cms.get("or").await.expect("held").metadata.finalizers,
        Some(vec!["orphan".to_string()])
    );
    // Background deletes at once.
    cms.create(&PostParams::default(), &cm("bg", &[]))
        .await
        .expect("create");
    cms.delete("bg", &DeleteParams::background()).await.expect("delete");
    assert!(cms.get_opt("bg").await.expect("get").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_pod_deletion_and_force() {
    let t = start().await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "finalizers": ["example.com/hold"]},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30, "containers": [{"name": "c", "image": "i"}]}}))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &pod("p")).await.expect("create");
    pods.delete("p", &DeleteParams::default()).await.expect("delete");
    let p = pods.get("p").await.expect("terminating");
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    // A forced delete shortens the grace to 0; releasing the finalizer then removes the pod.
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("force");
    assert_eq!(
        pods.get("p")
            .await
            .expect("held by finalizer")
            .metadata
            .deletion_grace_period_seconds,
        Some(0)
    );
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    assert!(
        pods.get_opt("p").await.expect("get").is_none(),
        "gone once nothing holds it"
    );

    // Without finalizers, the node's confirmation (grace 0) removes a terminating pod.
    let mut plain = pod("q");
    plain.metadata.finalizers = None;
    pods.create(&PostParams::default(), &plain).await.expect("create");
    pods.delete("q", &DeleteParams::default()).await.expect("delete");
    assert!(pods
        .get("q")
        .await
        .expect("terminating")
        .metadata
        .deletion_timestamp
        .is_some());
    pods.delete(
        "q",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("confirm");
    assert!(pods.get_opt("q").await.expect("get").is_none());

    // A server-side dry-run create of an existing name is a conflict, as for a real create.
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    cms.create(&PostParams::default(), &cm("exists", &[]))
        .await
        .expect("create");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(
        api_error(cms.create(&dry, &cm("exists", &[])).await.expect_err("exists")).code,
        409
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ips_and_node_ports_are_unique_under_concurrency() {
    use k8s_openapi::api::core::v1::Service;
    let t = start().await;
    let svcs: Api<Service> = Api::namespaced(t.client.clone(), "default");
    let kubernetes = svcs.get("kubernetes").await.expect("the kubernetes service exists");
    assert_eq!(kubernetes.spec.and_then(|s| s.cluster_ip).as_deref(), Some("10.43.0.1"));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let svcs = svcs.clone();
        tasks.push(tokio::spawn(async move {
            let s: Service = serde_json::from_value(json!({"metadata": {"name": format!("s{i}")},
                "spec": {"type": "NodePort", "ports": [{"port": 80}]}}))
            .expect("svc");
            svcs.create(&PostParams::default(), &s).await.expect("create")
        }));
    }
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for t in tasks {
        let s = t.await.expect("task").spec.expect("spec");
        let ip = s.cluster_ip.expect("clusterIP");
        assert!(ip.starts_with("10.43."), "{ip}");
        assert!(ips.insert(ip), "duplicate ClusterIP");
        let np = s.ports.expect("ports")[0].node_port.expect("nodePort");
        assert!((30000..=32767).contains(&np));
        assert!(ports.insert(np), "duplicate nodePort");
    }
    // A taken port is refused; once released it can be had again.
    let taken = *ports.iter().next().expect("a port");
    let s: Service = serde_json::from_value(
        json!({"metadata": {"name": "dup"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": taken}]}}),
    )
    .expect("svc");
    let e = api_error(svcs.create(&PostParams::default(), &s).await.expect_err("taken"));
    assert!(
        e.code == 422 && e.message.contains("already allocated"),
        "{}",
        e.message
    );
    let owner = svcs
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .find(|x| {
            x.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|p| p[0].node_port == Some(taken))
        })
        .expect("owner");
    svcs.delete(&owner.metadata.name.expect("name"), &DeleteParams::default())
        .await
        .expect("delete");
    svcs.create(&PostParams::default(), &s)
        .await
        .expect("the released port is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_a_node_once() {
    let t = start().await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("pod");
    let created = pods.create(&PostParams::default(), &p).await.expect("create");
    let bind = |node: &str| {
        let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"}, "target": {"kind": "Node", "name": node}})).expect("json");
        http::Request::post("/api/v1/namespaces/default/pods/b/binding")
            .header("Content-Type", "application/json")
            .body(body)
            .expect("request")
    };
    t.client.request_text(bind("n1")).await.expect("bind");
    let bound = pods.get("b").await.expect("get");
    assert_eq!(bound.spec.and_then(|s| s.node_name).as_deref(), Some("n1"));
    let cond = bound
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("PodScheduled");
    assert_eq!(cond.status, "True");
    // The rest of the pod is as it was: metadata (managed fields among them) but for the
    // revision, and the spec but for the node.
    let mut meta = bound.metadata.clone();
    assert_ne!(meta.resource_version, created.metadata.resource_version);
    meta.resource_version = created.metadata.resource_version.clone();
    assert_eq!(meta, created.metadata);
    assert!(meta.managed_fields.is_some_and(|m| !m.is_empty()));
    let mut spec = pods.get("b").await.expect("get").spec.expect("spec");
    spec.node_name = None;
    assert_eq!(Some(spec), created.spec);
    match t.client.request_text(bind("n2")).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("a second binding must conflict, got {other:?}"),
    }
}

/// What a create, an update, a patch and a status patch answer is the object as stored, with
/// its new resourceVersion: what a GET right after returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_responses_are_the_stored_object() {
    let t = start().await;
    let maps: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let created = maps
        .create(&PostParams::default(), &cm("w", &[("a", "1")]))
        .await
        .expect("create");
    assert_eq!(created, maps.get("w").await.expect("get"));
    let mut changed = created.clone();
    changed.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = maps
        .replace("w", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_ne!(replaced.metadata.resource_version, created.metadata.resource_version);
    assert_eq!(replaced, maps.get("w").await.expect("get"));
    let patched = maps
        .patch("w", &PatchParams::default(), &Patch::Merge(json!({"data": {"b": "3"}})))
        .await
        .expect("patch");
    assert_eq!(
        patched.data.as_ref().and_then(|d| d.get("b")).map(String::as_str),
        Some("3")
    );
    assert_eq!(patched, maps.get("w").await.expect("get"));

    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let p: Pod = serde_json::from_value(
        json!({"metadata": {"name": "w"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .expect("pod");
    let created = pods.create(&PostParams::default(), &p).await.expect("create");
    assert_eq!(created, pods.get("w").await.expect("get"));
    let running = pods
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .expect("status");
    assert_eq!(
        running.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(running, pods.get("w").await.expect("get"));
}

/// Metadata informers (`Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`) get
/// each object's metadata and nothing else, for get, list and watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_reads() {
    let t = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(t.client.clone(), "default");
    let mut c = cm("meta", &[("secretish", "payload-value")]);
    c.metadata.labels = Some([("app".to_string(), "m".to_string())].into());
    cms.create(&PostParams::default(), &c).await.expect("create");
    let metas: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::namespaced(t.client.clone(), "default");
    let got = metas.get_metadata("meta").await.expect("get metadata");
    assert_eq!(
        got.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("m")
    );
    let listed = metas
        .list_metadata(&ListParams::default().labels("app=m"))
        .await
        .expect("list metadata");
    assert_eq!(listed.items.len(), 1);
    assert!(listed.metadata.resource_version.is_some());

    let raw = |path: &str, accept: &str| {
        http::Request::get(path)
            .header("Accept", accept)
            .body(Vec::new())
            .expect("request")
    };
    let list = t
        .client
        .request_text(raw(
            "/api/v1/namespaces/default/configmaps",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        ))
        .await
        .expect("raw list");
    let v: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(v["kind"], "PartialObjectMetadataList");
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(v["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(v["items"][0]["metadata"]["name"], "meta");
    assert!(!list.contains("payload-value"), "{list}");

    let rv = v["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let watch = tokio::spawn({
        let client = t.client.clone();
        async move {
            client
                .request_text(raw(
                    &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=2"),
                    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
                ))
                .await
                .expect("raw watch")
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    cms.create(&PostParams::default(), &cm("later", &[("secretish", "payload-value")]))
        .await
        .expect("create later");
    let events = watch.await.expect("watch task");
    let first: serde_json::Value = serde_json::from_str(events.lines().next().expect("an event")).expect("event json");
    assert_eq!(first["type"], "ADDED");
    assert_eq!(first["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(first["object"]["metadata"]["name"], "later");
    assert!(!events.contains("payload-value"), "{events}");

    // Without the parameter, the same requests return whole objects.
    let full = cms.get("meta").await.expect("get");
    assert_eq!(
        full.data.and_then(|d| d.get("secretish").cloned()).as_deref(),
        Some("payload-value")
    );
}
