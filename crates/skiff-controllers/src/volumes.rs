//! PersistentVolumeClaims: the default `local-path` StorageClass, its provisioner (one
//! directory per volume under the data dir on the node that uses it), and binding. The default
//! class binds on first consumer, as k3s's does: the scheduler chooses the node, the volume is
//! made there and its node affinity keeps later pods of the claim on that node. A claim that
//! names a StorageClass that does not exist stays Pending with a Warning event saying so.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

pub const LOCAL_PATH: &str = "skiff.dev/local-path";
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const MANAGER: &str = "persistentvolume-controller";
/// Set by the scheduler on a claim of a WaitForFirstConsumer class.
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The last event recorded about a claim that is not bound yet, so it is not repeated.
const NOTED: &str = "skiff.dev/last-event";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API error: {0}")]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    root: String,
}

/// Make sure the default `local-path` StorageClass exists.
pub async fn ensure_default_class(client: &Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    if api.get_opt("local-path").await?.is_some() {
        return Ok(());
    }
    let sc: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "local-path", "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_PATH, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .expect("a StorageClass from literals");
    match api.create(&PostParams::default(), &sc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Record an event about a pending claim once per reason and message, not on every pass.
async fn note_once(
    ctx: &Ctx,
    pvc: &PersistentVolumeClaim,
    ty: &str,
    reason: &str,
    message: &str,
) -> Result<(), ReconcileError> {
    let noted = format!("{reason}: {message}");
    if pvc.annotations().get(NOTED) == Some(&noted) {
        return Ok(());
    }
    crate::events::record(&ctx.client, pvc, ty, reason, message, MANAGER).await;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    api.patch(
        &pvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": {NOTED: noted}}})),
    )
    .await?;
    Ok(())
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    if pvc.metadata.deletion_timestamp.is_some()
        || pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    {
        return Ok(Action::await_change());
    }
    let spec = pvc.spec.clone().unwrap_or_default();
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let class = match spec.storage_class_name.as_deref() {
        Some("") => return Ok(Action::await_change()), // statically bound claims only
        Some(c) => classes.get_opt(c).await?,
        None => classes
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|c| c.annotations().get(DEFAULT_CLASS).map(String::as_str) == Some("true")),
    };
    let Some(class) = class else {
        let wanted = spec.storage_class_name.clone().unwrap_or_default();
        let msg = if wanted.is_empty() {
            "no default StorageClass exists and the claim names none".to_string()
        } else {
            format!("storageclass.storage.k8s.io \"{wanted}\" not found")
        };
        note_once(&ctx, &pvc, "Warning", "ProvisioningFailed", &msg).await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    if class.provisioner != LOCAL_PATH {
        // Another provisioner's claim: not ours.
        return Ok(Action::await_change());
    }
    // WaitForFirstConsumer: the scheduler picks the node of the first pod that uses the claim
    // and names it in an annotation; the volume is made there and pinned to it.
    let selected = pvc.annotations().get(SELECTED_NODE).cloned();
    let delayed = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    if delayed && selected.is_none() {
        note_once(
            &ctx,
            &pvc,
            "Normal",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )
        .await?;
        return Ok(Action::await_change());
    }
    let node_affinity = match selected.as_deref().filter(|_| delayed) {
        Some(node) => {
            let hostname = Api::<Node>::all(ctx.client.clone())
                .get_opt(node)
                .await?
                .and_then(|n| n.labels().get("kubernetes.io/hostname").cloned())
                .unwrap_or_else(|| node.to_string());
            json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]}]}]}})
        }
        None => serde_json::Value::Null,
    };
    let uid = pvc.uid().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "1Gi".into());
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if pvs.get_opt(&pv_name).await?.is_none() {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": LOCAL_PATH}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
                "storageClassName": class.name_any(),
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": format!("{}/{pv_name}_{ns}_{name}", ctx.root), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
                "nodeAffinity": node_affinity,
            }
        }))
        .expect("a PV from typed parts");
        match pvs
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.into()),
                    ..Default::default()
                },
                &pv,
            )
            .await
        {
            Ok(_) => {
                crate::events::record(
                    &ctx.client,
                    pvc.as_ref(),
                    "Normal",
                    "ProvisioningSucceeded",
                    &format!("Successfully provisioned volume {pv_name}"),
                    MANAGER,
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    pvs.patch_status(
        &pv_name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
    )
    .await?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let mut ann = serde_json::Map::new();
    ann.insert("pv.kubernetes.io/bind-completed".into(), json!("yes"));
    ann.insert("pv.kubernetes.io/bound-by-controller".into(), json!("yes"));
    ann.insert("volume.kubernetes.io/storage-provisioner".into(), json!(LOCAL_PATH));
    ann.insert(NOTED.into(), serde_json::Value::Null);
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": ann}, "spec": {"volumeName": pv_name, "storageClassName": class.name_any()}}))).await?;
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Bound", "capacity": {"storage": storage}, "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()])}})),
    )
    .await?;
    Ok(Action::await_change())
}

/// Run the provisioner/binder; volumes live under `root` on the nodes.
pub async fn run(client: Client, root: String) -> anyhow::Result<()> {
    ensure_default_class(&client).await?;
    let api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let classes: Api<StorageClass> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, root });
    Controller::new(api, watcher::Config::default())
        .with_config(crate::controller_config())
        // A StorageClass created later (the fix for a Pending claim) re-runs every claim.
        .reconcile_all_on(
            watcher(classes, watcher::Config::default())
                .filter_map(|e| async move { matches!(e, Ok(watcher::Event::Apply(_))).then_some(()) }),
        )
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}
