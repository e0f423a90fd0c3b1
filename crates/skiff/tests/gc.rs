//! The garbage collector in a real `skiff server` process, driven through kube-rs: background,
//! foreground and orphan propagation, dependents with several owners, and a custom resource
//! as an owner.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::ResourceExt;
use serde_json::json;
use support::{client, eventually, SkiffServer};

fn start() -> SkiffServer {
    SkiffServer::start_with(tempfile::tempdir().expect("tempdir"), 0, &["--simulated-nodes", "1"])
}

fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: None,
        block_owner_deletion: block.then_some(true),
    }
}

async fn configmap(api: &Api<ConfigMap>, name: &str, owners: Vec<OwnerReference>) -> ConfigMap {
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owners},
        "data": {"k": "v"}
    }))
    .expect("configmap");
    api.create(&PostParams::default(), &cm).await.expect("create configmap")
}

fn cm_ref(cm: &ConfigMap, block: bool) -> OwnerReference {
    owner_ref("v1", "ConfigMap", &cm.name_any(), &cm.uid().expect("uid"), block)
}

async fn gone(api: &Api<ConfigMap>, name: &str) -> bool {
    matches!(api.get_opt(name).await, Ok(None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_removes_a_replicasets_pods() {
    let server = start();
    let c = client(&server).await;
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "registry.local/web:1"}]}}}
    }))
    .expect("rs");
    rss.create(&PostParams::default(), &rs).await.expect("create rs");
    let names: Vec<String> = eventually(30, "2 pods of the ReplicaSet", || async {
        let l = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        (l.items.len() == 2).then(|| l.items.iter().map(|p| p.name_any()).collect())
    })
    .await;

    rss.delete("web", &DeleteParams::background()).await.expect("delete rs");
    assert!(
        rss.get_opt("web").await.expect("get rs").is_none(),
        "background deletes the owner at once"
    );
    eventually(30, "the pods to be collected", || async {
        let l = pods.list(&ListParams::default().labels("app=web")).await.ok()?;
        l.items.is_empty().then_some(())
    })
    .await;
    for n in names {
        assert!(pods.get_opt(&n).await.expect("get pod").is_none(), "{n} collected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let server = start();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let owner = configmap(&cms, "owner", vec![]).await;
    // A finalizer of our own holds one dependent, so the owner is observably held back.
    let held: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "dep-held", "finalizers": ["test.skiff.dev/hold"],
                     "ownerReferences": [cm_ref(&owner, true)]}
    }))
    .expect("cm");
    cms.create(&PostParams::default(), &held)
        .await
        .expect("create held dependent");
    configmap(&cms, "dep-free", vec![cm_ref(&owner, true)]).await;

    cms.delete("owner", &DeleteParams::foreground())
        .await
        .expect("foreground delete");
    let marked = cms.get("owner").await.expect("owner stays while dependents exist");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(marked.finalizers().iter().any(|f| f == "foregroundDeletion"));

    eventually(30, "the free dependent to go", || async {
        gone(&cms, "dep-free").await.then_some(())
    })
    .await;
    eventually(30, "the held dependent to be marked deleted", || async {
        cms.get("dep-held").await.ok()?.metadata.deletion_timestamp.map(|_| ())
    })
    .await;
    // Still blocked by the held dependent.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = cms.get("owner").await.expect("owner still held");
    assert!(still.finalizers().iter().any(|f| f == "foregroundDeletion"));

    // Release the held dependent: then the owner goes too.
    cms.patch(
        "dep-held",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release");
    eventually(30, "the owner to be deleted after its dependents", || async {
        (gone(&cms, "dep-held").await && gone(&cms, "owner").await).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let server = start();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let owner = configmap(&cms, "owner", vec![]).await;
    configmap(&cms, "dep-1", vec![cm_ref(&owner, true)]).await;
    configmap(&cms, "dep-2", vec![cm_ref(&owner, false)]).await;

    cms.delete("owner", &DeleteParams::orphan())
        .await
        .expect("orphan delete");
    eventually(30, "the owner to go", || async {
        gone(&cms, "owner").await.then_some(())
    })
    .await;
    // Give a wrongly-cascading collector time to act before looking.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in ["dep-1", "dep-2"] {
        let d = cms.get(n).await.expect("orphaned dependent remains");
        assert!(d.owner_references().is_empty(), "{n} lost its owner reference");
        assert!(d.metadata.deletion_timestamp.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_with_another_owner_survives() {
    let server = start();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let a = configmap(&cms, "owner-a", vec![]).await;
    let b = configmap(&cms, "owner-b", vec![]).await;
    configmap(&cms, "shared", vec![cm_ref(&a, false), cm_ref(&b, false)]).await;
    configmap(&cms, "only-a", vec![cm_ref(&a, false)]).await;

    cms.delete("owner-a", &DeleteParams::background())
        .await
        .expect("delete owner-a");
    eventually(30, "the sole dependent of owner-a to go", || async {
        gone(&cms, "only-a").await.then_some(())
    })
    .await;
    let shared = eventually(30, "the dangling reference to be removed", || async {
        let s = cms.get("shared").await.ok()?;
        (s.owner_references().len() == 1).then_some(s)
    })
    .await;
    assert_eq!(shared.owner_references()[0].uid, b.uid().expect("uid"));
    assert!(shared.metadata.deletion_timestamp.is_none());

    // Once the last owner goes, so does the dependent.
    cms.delete("owner-b", &DeleteParams::default())
        .await
        .expect("delete owner-b");
    eventually(30, "the shared dependent to go with its last owner", || async {
        gone(&cms, "shared").await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_owns_a_configmap() {
    let server = start();
    let c = client(&server).await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.gc.skiff.dev"},
        "spec": {
            "group": "gc.skiff.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object",
                              "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("crd");
    crds.create(&PostParams::default(), &crd).await.expect("create crd");
    eventually(30, "the CRD to be established", || async {
        let crd = crds.get("widgets.gc.skiff.dev").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("gc.skiff.dev", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gc.skiff.dev/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 1}
    }))
    .expect("widget");
    let w = eventually(30, "the widget to be created", || async {
        widgets.create(&PostParams::default(), &w).await.ok()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    configmap(
        &cms,
        "widget-config",
        vec![owner_ref(
            "gc.skiff.dev/v1",
            "Widget",
            "w1",
            &w.uid().expect("uid"),
            true,
        )],
    )
    .await;
    // A live owner keeps its dependent, even one whose kind the collector just learned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cms.get_opt("widget-config").await.expect("get").is_some());

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete widget");
    eventually(30, "the widget's ConfigMap to be collected", || async {
        gone(&cms, "widget-config").await.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_cascades_through_chains() {
    let server = start();
    let c = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    // Background: root ← mid ← leaf; deleting root takes mid, then leaf.
    let root = configmap(&cms, "bg-root", vec![]).await;
    let mid = configmap(&cms, "bg-mid", vec![cm_ref(&root, false)]).await;
    configmap(&cms, "bg-leaf", vec![cm_ref(&mid, false)]).await;
    cms.delete("bg-root", &DeleteParams::background())
        .await
        .expect("delete bg-root");
    eventually(30, "the background chain to be collected", || async {
        (gone(&cms, "bg-mid").await && gone(&cms, "bg-leaf").await).then_some(())
    })
    .await;

    // Foreground: the root outlives its blocking descendants.
    let root = configmap(&cms, "fg-root", vec![]).await;
    let mid = configmap(&cms, "fg-mid", vec![cm_ref(&root, true)]).await;
    configmap(&cms, "fg-leaf", vec![cm_ref(&mid, true)]).await;
    cms.delete("fg-root", &DeleteParams::foreground())
        .await
        .expect("delete fg-root");
    eventually(30, "the foreground chain to be collected", || async {
        let all_gone = gone(&cms, "fg-leaf").await && gone(&cms, "fg-mid").await && gone(&cms, "fg-root").await;
        all_gone.then_some(())
    })
    .await;
}
