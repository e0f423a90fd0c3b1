//! One metadata-only watch of every pod, shared by the controllers that only need to hear that
//! a pod changed: the Job, StatefulSet and DaemonSet controllers (to wake a pod's owner) and
//! the endpoints controller. Upstream's controller manager shares one pod informer the same way.
//!
//! Each of them used to hold a watch of its own. At 50,000 pods every pod change was then cut,
//! sent, decoded and mapped four times over; under load those watchers fell behind the API
//! server's feed, and keeping them current cost the server about a tenth of its CPU.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use skiff_client::LeanMeta;
use tokio::sync::mpsc;

/// A pod that changed (or was deleted), and whether it came with a (re-)list rather than as
/// a change.
#[derive(Clone)]
pub(crate) struct Change {
    pub pod: Arc<LeanMeta<Pod>>,
    pub listed: bool,
}

#[derive(Default)]
pub(crate) struct PodFeed {
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    tx: mpsc::UnboundedSender<Change>,
    /// Changes sent and not yet taken.
    queued: Arc<AtomicUsize>,
}

impl PodFeed {
    /// Every change from now on. Subscribe before [`PodFeed::run`] starts to see the first
    /// list.
    pub fn subscribe(&self) -> impl Stream<Item = Change> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Subscriber {
                tx,
                queued: queued.clone(),
            });
        futures::stream::unfold((rx, queued), |(mut rx, queued)| async move {
            let c = rx.recv().await?;
            queued.fetch_sub(1, Ordering::Relaxed);
            Some((c, (rx, queued)))
        })
    }

    /// The pods that changed, as `Controller::owns_shared_stream` takes them.
    pub fn pods(&self) -> impl Stream<Item = Arc<LeanMeta<Pod>>> + Send + 'static {
        self.subscribe().map(|c| c.pod)
    }

    /// Hand a change to every subscriber. A subscriber that is gone (its controller ended) is
    /// dropped.
    fn publish(&self, change: Change) {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner()).retain(|s| {
            s.queued.fetch_add(1, Ordering::Relaxed);
            s.tx.send(change.clone()).is_ok()
        });
    }

    /// How many changes each subscriber has yet to take.
    fn queued(&self) -> Vec<usize> {
        let subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        subs.iter().map(|s| s.queued.load(Ordering::Relaxed)).collect()
    }

    /// Watch the pods and hand every change to every subscriber, until the client fails.
    pub async fn run(self: Arc<Self>, client: Client) {
        let api: Api<LeanMeta<Pod>> = Api::all(client);
        let mut events = watcher(api, crate::cached_list()).default_backoff().boxed();
        let mut seen = 0u64;
        while let Some(ev) = events.next().await {
            let (pod, listed) = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::Delete(p)) => (p, false),
                Ok(watcher::Event::InitApply(p)) => (p, true),
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "pod watch error; retrying");
                    continue;
                }
            };
            self.publish(Change {
                pod: Arc::new(pod),
                listed,
            });
            seen += 1;
            if seen.is_multiple_of(10_000) {
                tracing::debug!(changes = seen, queued = ?self.queued(), "pod feed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(name: &str, listed: bool) -> Change {
        let pod: LeanMeta<Pod> = serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "namespace": "default"}
        }))
        .expect("metadata");
        Change {
            pod: Arc::new(pod),
            listed,
        }
    }

    fn names(changes: &[Change]) -> Vec<(String, bool)> {
        changes
            .iter()
            .map(|c| (c.pod.metadata.name.clone().unwrap_or_default(), c.listed))
            .collect()
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_change_in_order() {
        let feed = PodFeed::default();
        let (a, b) = (feed.subscribe(), feed.subscribe());
        feed.publish(change("p0", true));
        feed.publish(change("p1", false));
        assert_eq!(feed.queued(), vec![2, 2]);
        let a: Vec<Change> = a.take(2).collect().await;
        assert_eq!(names(&a), vec![("p0".to_string(), true), ("p1".to_string(), false)]);
        // One subscriber taking its changes does not take the other's.
        assert_eq!(feed.queued(), vec![0, 2]);
        let b: Vec<Change> = b.take(2).collect().await;
        assert_eq!(names(&b), names(&a));
        assert_eq!(feed.queued(), vec![0, 0]);
    }

    #[tokio::test]
    async fn a_subscriber_that_is_gone_is_dropped() {
        let feed = PodFeed::default();
        let kept = feed.subscribe();
        drop(feed.subscribe());
        feed.publish(change("p0", false));
        assert_eq!(feed.queued(), vec![1], "the dropped subscriber is gone");
        let got: Vec<Change> = kept.take(1).collect().await;
        assert_eq!(names(&got), vec![("p0".to_string(), false)]);
    }
}
