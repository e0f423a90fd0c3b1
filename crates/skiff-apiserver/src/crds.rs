//! CustomResourceDefinitions inside the API server: serving the kinds they define as soon as
//! they are written, setting their status (names accepted, established), and deleting their
//! custom resources when a CRD is deleted.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::objects::{DeleteOpts, Part, WriteOpts};
use crate::server::Shared;

const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn crd_type(shared: &Shared) -> Arc<skiff_api::ResourceType> {
    shared
        .types
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("CRDs are always served")
}

/// Rebuild the served types from the CRDs in the cache.
pub fn refresh(shared: &Shared) {
    let (crds, _) = shared
        .objects
        .cache
        .list("/registry/apiextensions.k8s.io/customresourcedefinitions/");
    let objs: Vec<Arc<Value>> = crds.iter().map(|c| Arc::new(c.value())).collect();
    shared.types.set_custom(&objs);
}

fn wanted_status(crd: &Value) -> Value {
    let now = crate::objects::now();
    let cond = |ty: &str, reason: &str, msg: &str| {
        let existing = crd["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty && c["status"] == "True"))
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map(str::to_string);
        json!({"type": ty, "status": "True", "lastTransitionTime": existing.unwrap_or_else(|| now.clone()), "reason": reason, "message": msg})
    };
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())
        .collect();
    let mut stored: Vec<Value> = crd["status"]["storedVersions"].as_array().cloned().unwrap_or_default();
    for s in storage {
        if !stored.contains(&s) {
            stored.push(s);
        }
    }
    json!({
        "conditions": [cond("NamesAccepted", "NoConflicts", "no conflicts found"), cond("Established", "InitialNamesAccepted", "the initial names have been accepted")],
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": stored,
    })
}

async fn reconcile(shared: &Arc<Shared>, crd: &Value) {
    let rt = crd_type(shared);
    let name = crd["metadata"]["name"].as_str().unwrap_or("").to_string();
    let opts = WriteOpts {
        manager: "apiextensions-controller".into(),
        ..Default::default()
    };
    if !crd["metadata"]["deletionTimestamp"].is_null() {
        // Delete every custom resource of the CRD, then let it go.
        let prefix = format!(
            "/registry/{}/{}/",
            crd["spec"]["group"].as_str().unwrap_or(""),
            crd["spec"]["names"]["plural"].as_str().unwrap_or("")
        );
        let (objs, _) = shared.objects.cache.list(&prefix);
        let storage = prefix
            .trim_start_matches("/registry/")
            .trim_end_matches('/')
            .to_string();
        if let Some(crt) = shared.types.by_storage(&storage) {
            for o in &objs {
                let n = o.name.as_str();
                let ns = o.namespace.as_deref();
                if !o.deleting {
                    let _ = shared.objects.delete(&crt, ns, n, &DeleteOpts::default()).await;
                }
            }
        }
        if objs.is_empty() {
            let _ = shared
                .objects
                .update_with(&rt, None, &name, Part::Main, &opts, false, |cur| {
                    let mut next = cur.unwrap_or(Value::Null);
                    if let Some(f) = next["metadata"]["finalizers"].as_array_mut() {
                        f.retain(|x| x != CLEANUP_FINALIZER);
                    }
                    Ok(next)
                })
                .await;
        }
        return;
    }
    let has_finalizer = crd["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
    if !has_finalizer {
        let _ = shared
            .objects
            .update_with(&rt, None, &name, Part::Main, &opts, false, |cur| {
                let mut next = cur.unwrap_or(Value::Null);
                let mut f = next["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
                if !f.iter().any(|x| x == CLEANUP_FINALIZER) {
                    f.push(json!(CLEANUP_FINALIZER));
                }
                next["metadata"]["finalizers"] = json!(f);
                Ok(next)
            })
            .await;
    }
    let want = wanted_status(crd);
    if crd["status"] != want {
        let res = shared
            .objects
            .update_with(&rt, None, &name, Part::Status, &opts, false, |cur| {
                let mut next = cur.unwrap_or(Value::Null);
                next["status"] = wanted_status(&next);
                Ok(next)
            })
            .await;
        if let Err(e) = res {
            if e.code != 404 {
                tracing::warn!(crd = name, error = %e, "updating CRD status");
            }
        }
    }
}

pub async fn run(shared: Arc<Shared>) {
    let mut events = shared
        .objects
        .cache
        .list_and_watch("/registry/apiextensions.k8s.io/customresourcedefinitions/")
        .2;
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            ev = events.recv() => {
                match ev {
                    Ok(e) if !e.obj.key.starts_with("/registry/apiextensions.k8s.io/customresourcedefinitions/") => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
                while events.try_recv().is_ok() {}
            }
        }
        refresh(&shared);
        let (crds, _) = shared
            .objects
            .cache
            .list("/registry/apiextensions.k8s.io/customresourcedefinitions/");
        for c in crds {
            reconcile(&shared, &c.value()).await;
        }
        refresh(&shared);
    }
}
