//! Namespace lifecycle inside the API server: the built-in namespaces exist, a deleted
//! namespace has its content deleted and is then finalized (upstream's namespace controller
//! does this as an API client; here it is part of the server because the API promises it).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::objects::{DeleteOpts, Outcome, Part, WriteOpts};
use crate::server::Shared;

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

fn ns_type(shared: &Shared) -> Arc<skiff_api::ResourceType> {
    shared
        .types
        .find("", "v1", "namespaces")
        .expect("namespaces are always served")
}

pub async fn ensure_system_namespaces(shared: &Shared) -> ApiResult<()> {
    let rt = ns_type(shared);
    for ns in SYSTEM_NAMESPACES {
        shared
            .objects
            .ensure(
                &rt,
                None,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await?;
    }
    // The `kubernetes` service: the API server at the first address of the service range.
    let svc = shared
        .types
        .find("", "v1", "services")
        .expect("services are always served");
    let kubernetes = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": crate::alloc::KUBERNETES_SERVICE_IP,
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}});
    shared.objects.ensure(&svc, Some("default"), kubernetes).await?;
    Ok(())
}

/// PUT namespaces/{name}/finalize: set `spec.finalizers`.
pub async fn finalize(shared: &Shared, name: &str, body: Value, opts: &WriteOpts) -> ApiResult<Outcome> {
    let rt = ns_type(shared);
    let fins = body["spec"]["finalizers"].clone();
    shared
        .objects
        .update_with(&rt, None, name, Part::Main, opts, false, |cur| {
            let mut next = cur.ok_or_else(|| ApiError::namespace_not_found(name))?;
            next["spec"]["finalizers"] = if fins.is_null() { json!([]) } else { fins.clone() };
            if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
                next["metadata"]["resourceVersion"] = json!(rv);
            }
            Ok(next)
        })
        .await
}

/// Empty a terminating namespace; finalize it once nothing is left.
async fn reconcile(shared: &Arc<Shared>, ns: &str) {
    let mut remaining = 0;
    for storage in shared.types.namespaced_storages() {
        let Some(rt) = shared.types.by_storage(&storage) else {
            continue;
        };
        let (objs, _) = shared.objects.cache.list(&rt.prefix(Some(ns)));
        for o in objs {
            remaining += 1;
            if o.deleting {
                continue;
            }
            let name = o.name.clone();
            let opts = DeleteOpts {
                propagation: Some("Background".into()),
                ..Default::default()
            };
            if let Err(e) = shared.objects.delete(&rt, Some(ns), &name, &opts).await {
                if e.code != 404 {
                    tracing::warn!(namespace = ns, kind = %rt.kind, name, error = %e, "deleting namespace content");
                }
            }
        }
    }
    if remaining > 0 {
        return;
    }
    let opts = WriteOpts {
        manager: "namespace-controller".into(),
        ..Default::default()
    };
    let rt = ns_type(shared);
    let res = shared
        .objects
        .update_with(&rt, None, ns, Part::Main, &opts, false, |cur| {
            let mut next = cur.ok_or_else(|| ApiError::namespace_not_found(ns))?;
            next["spec"]["finalizers"] = json!([]);
            Ok(next)
        })
        .await;
    if let Err(e) = res {
        if e.code != 404 {
            tracing::warn!(namespace = ns, error = %e, "finalizing namespace");
        }
    }
}

/// Runs until shutdown: reacts to every change (a namespace marked for deletion, or an object
/// in one going away) and re-checks periodically.
pub async fn run(shared: Arc<Shared>) {
    let mut events = shared.objects.cache.list_and_watch("/registry/").2;
    let mut shutdown = shared.shutdown.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            ev = events.recv() => {
                match ev {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    // Only namespace changes and deletions can move a namespace's deletion on.
                    Ok(e) if !e.obj.key.starts_with("/registry/namespaces/") && e.kind != crate::cache::WatchEventType::Deleted => continue,
                    _ => {}
                }
                // Drain what is queued, then act once.
                while events.try_recv().is_ok() {}
            }
        }
        let (namespaces, _) = shared.objects.cache.list("/registry/namespaces/");
        for n in namespaces.iter().filter(|n| n.deleting) {
            reconcile(&shared, &n.name).await;
        }
    }
}
