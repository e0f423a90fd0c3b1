//! Every namespace has a `default` ServiceAccount.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

struct Ctx {
    client: Client,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns.name_any());
    if api.get_opt("default").await?.is_none() {
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).expect("literal");
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 403 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

pub async fn run(client: Client) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client });
    // A deleted `default` account comes back.
    let sa_changes = watcher(sas, watcher::Config::default())
        .filter_map(|e| async move { matches!(e, Ok(watcher::Event::Delete(_))).then_some(()) });
    Controller::new(nss, watcher::Config::default())
        .with_config(crate::controller_config())
        .reconcile_all_on(sa_changes)
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}
