//! The root CA publisher (upstream's `root-ca-cert-publisher`): every namespace has a
//! ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA, so pods can check the API
//! server's certificate (the ServiceAccount admission plugin projects it into every pod at
//! `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`). A deleted one comes back, an
//! edited one is put right.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

pub const CONFIG_MAP: &str = "kube-root-ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Ctx {
    client: Client,
    ca_pem: String,
}

fn wanted_data(ca_pem: &str) -> BTreeMap<String, String> {
    [("ca.crt".to_string(), ca_pem.to_string())].into()
}

/// Whether `cm` already says what it should.
fn up_to_date(cm: &ConfigMap, ca_pem: &str) -> bool {
    cm.data.as_ref() == Some(&wanted_data(ca_pem))
        && cm
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
            .is_some_and(|d| !d.is_empty())
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns.name_any());
    match api.get_opt(CONFIG_MAP).await? {
        None => {
            let cm = ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(CONFIG_MAP.into()),
                    annotations: Some([(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string())].into()),
                    ..Default::default()
                },
                data: Some(wanted_data(&ctx.ca_pem)),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => {}
                // Made meanwhile, or the namespace is gone or going: nothing to retry.
                Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404 | 409) => {}
                Err(e) => return Err(e),
            }
        }
        Some(cm) if up_to_date(&cm, &ctx.ca_pem) => {}
        Some(mut cm) => {
            cm.data = Some(wanted_data(&ctx.ca_pem));
            cm.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(DESCRIPTION_ANNOTATION.into(), DESCRIPTION.into());
            match api.replace(CONFIG_MAP, &PostParams::default(), &cm).await {
                Ok(_) => {}
                // A newer version or none at all: the watch brings us back.
                Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Action::await_change())
}

/// Keep `kube-root-ca.crt` (with `ca_pem`) in every namespace until the process ends.
pub async fn run(client: Client, ca_pem: String) -> anyhow::Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::all(client.clone());
    let ctx = Arc::new(Ctx { client, ca_pem });
    Controller::new(nss, watcher::Config::default())
        .with_config(crate::controller_config())
        .watches(
            cms,
            watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
            |cm| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .run(reconcile, crate::retry_on_error, ctx)
        .for_each(crate::log_event)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_ca_and_the_description_count() {
        let ca = "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n";
        let mut cm = ConfigMap {
            data: Some(wanted_data(ca)),
            ..Default::default()
        };
        assert!(!up_to_date(&cm, ca), "the description is missing");
        cm.metadata.annotations = Some([(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string())].into());
        cm.metadata.labels = Some([("extra".to_string(), "kept".to_string())].into());
        assert!(up_to_date(&cm, ca));
        cm.data
            .get_or_insert_with(Default::default)
            .insert("other".into(), "x".into());
        assert!(!up_to_date(&cm, ca), "other keys go");
        assert!(!up_to_date(
            &ConfigMap {
                data: Some(wanted_data("another CA")),
                ..cm.clone()
            },
            ca
        ));
    }
}
