//! The watch cache: Services and EndpointSlices of every namespace, reflected into stores and
//! turned into a [`Zone`] after each change. When the API server goes away the watches retry
//! with back-off and the last zone keeps being served; a re-list replaces the stores whole.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::Notify;

use crate::{Shared, Zone};

/// Changes that arrive together are folded into one rebuild.
const SETTLE: Duration = Duration::from_millis(10);

/// Keeps `shared`'s zone up to date with the cluster behind `client` until the task is dropped.
pub async fn run(client: kube::Client, domain: String, shared: Arc<Shared>) {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(Notify::new());
    fn feed<T>(
        name: &'static str,
        changed: Arc<Notify>,
    ) -> impl FnMut(Result<T, watcher::Error>) -> std::future::Ready<()> {
        move |ev| {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => {
                    tracing::warn!(watch = name, error = %e, "watch failed; retrying (answers come from the cache meanwhile)")
                }
            }
            std::future::ready(())
        }
    }
    let service_feed = reflector(
        services_writer,
        watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|s| s.meta_mut().managed_fields = None),
    )
    .for_each(feed("services", changed.clone()));
    let slice_feed = reflector(
        slices_writer,
        watcher(Api::<EndpointSlice>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(|s| s.meta_mut().managed_fields = None),
    )
    .for_each(feed("endpointslices", changed.clone()));
    let rebuild = async {
        let _ = services.wait_until_ready().await;
        let _ = slices.wait_until_ready().await;
        loop {
            let (svcs, eps) = (services.state(), slices.state());
            let zone = Zone::build(&domain, svcs.iter().map(|s| s.as_ref()), eps.iter().map(|s| s.as_ref()));
            let first = !shared.synced();
            shared.publish(zone);
            if first {
                tracing::info!(services = svcs.len(), "cluster DNS cache synced");
            }
            changed.notified().await;
            tokio::time::sleep(SETTLE).await;
        }
    };
    tokio::join!(service_feed, slice_feed, rebuild);
}
