//! Image garbage collection on the node, as the kubelet runs it: shortly after start and then
//! every five minutes, when the filesystem holding the agent's data dir is at or above
//! `--image-gc-high-threshold` percent full, unused images go, least recently used first,
//! until it is below `--image-gc-low-threshold` ([`skiff_runtime::ImageGc`]). An image is in
//! use when a container on the node (running, or exited and not removed) was made from it, or
//! a pod bound to the node names it (its container may be about to be made). When the
//! thresholds cannot be met, a `FreeDiskSpaceFailed` warning is logged and recorded on the
//! Node; when a run fails, `ImageGCFailed`.
//!
//! Runs are synchronous file-system work (statvfs, listing and deleting blobs and snapshots)
//! and go to a blocking task, so they never stall the agent's async work.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::Client;
use skiff_runtime::{ContainerError, ContainerManager, DiskUsage, GcPolicy, GcReport, ImageGc, ImageStore, StoreError};

/// How often GC runs (the kubelet's `ImageGCPeriod`).
pub const PERIOD: Duration = Duration::from_secs(5 * 60);

/// When the first run comes after the agent starts: soon, but after pod workers have
/// re-adopted their containers and the pods' images are known.
pub const FIRST_RUN: Duration = Duration::from_secs(30);

/// Why a run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    /// The node's containers could not be listed, so the images in use are unknown.
    #[error("finding the images the node's containers use: {0}")]
    Containers(#[source] ContainerError),
    /// Containers that do not record their image: collecting now might remove theirs.
    #[error(
        "containers {ids:?} do not record which image they use (made by an older Skiff); image GC waits until they are removed"
    )]
    UnknownImages {
        /// Their IDs.
        ids: Vec<String>,
    },
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The images of pods bound to the node, by pod UID, as normalised image names; the pod
/// watch keeps it.
pub type PodImages = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// One GC run at `now`: the images in use are those `containers` record and `pod_images`;
/// `usage` measures the filesystem of `store`.
pub fn run_once(
    gc: &mut ImageGc,
    store: &ImageStore,
    containers: &ContainerManager,
    pod_images: &HashSet<String>,
    usage: impl Fn(&Path) -> io::Result<DiskUsage>,
    now: DateTime<Utc>,
) -> Result<GcReport, ImageGcError> {
    let used = containers.images_in_use().map_err(ImageGcError::Containers)?;
    if !used.unknown.is_empty() {
        return Err(ImageGcError::UnknownImages { ids: used.unknown });
    }
    let mut in_use = used.images;
    in_use.extend(pod_images.iter().cloned());
    Ok(gc.run(store, &in_use, usage, now)?)
}

/// Runs GC by `policy` until the task is dropped; warnings go to the log and to the Node
/// `node` as events.
pub(crate) async fn run(
    client: Client,
    node: String,
    policy: GcPolicy,
    store: ImageStore,
    containers: ContainerManager,
    pod_images: PodImages,
) {
    if policy.disabled() {
        tracing::info!("image garbage collection is off (--image-gc-high-threshold=100)");
        return;
    }
    let gc = Arc::new(Mutex::new(ImageGc::new(policy)));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_RUN, PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pods: HashSet<String> = pod_images
            .lock()
            .expect("the pod image map is never poisoned (no panics under its lock)")
            .values()
            .flatten()
            .cloned()
            .collect();
        let (gc, store, containers) = (gc.clone(), store.clone(), containers.clone());
        let result = tokio::task::spawn_blocking(move || {
            let mut gc = gc.lock().expect("image GC runs one at a time and does not panic");
            run_once(&mut gc, &store, &containers, &pods, DiskUsage::of, Utc::now())
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "image garbage collection panicked");
                continue;
            }
        };
        match result {
            Ok(report) => {
                if !report.removed.is_empty() {
                    tracing::info!(
                        images = ?report.removed,
                        bytes = report.pruned.bytes,
                        used_percent = report.usage_after.map(|u| u.used_percent()),
                        "image garbage collection removed unused images"
                    );
                }
                if let Some(message) = report.failure(policy) {
                    tracing::warn!(
                        reason = "FreeDiskSpaceFailed",
                        used_percent = report.usage_after.unwrap_or(report.usage).used_percent(),
                        high = policy.high_threshold_percent,
                        low = policy.low_threshold_percent,
                        "{message}"
                    );
                    crate::events::node(&client, &node, "Warning", "FreeDiskSpaceFailed", &message).await;
                }
            }
            Err(e) => {
                tracing::warn!(reason = "ImageGCFailed", error = %e, "image garbage collection failed");
                let message = format!("Image garbage collection failed: {e}");
                crate::events::node(&client, &node, "Warning", "ImageGCFailed", &message).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::{Digest, ImageRecord, RuntimeSelector};

    const GB: u64 = 1 << 30;

    struct Node {
        _dir: tempfile::TempDir,
        store: ImageStore,
        containers: ContainerManager,
        t0: DateTime<Utc>,
    }

    impl Node {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = ImageStore::open(dir.path()).expect("store");
            let containers = ContainerManager::new(
                dir.path(),
                store.clone(),
                RuntimeSelector::default(),
                &dir.path().join("run"),
                Path::new("/proc/self/exe"),
            )
            .expect("containers");
            let t0 = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
            Self {
                _dir: dir,
                store,
                containers,
                t0,
            }
        }

        /// An image `name` of `size` GB, last used `hours_ago`; as the gc.rs tests make them.
        fn image(&self, name: &str, size: u64, hours_ago: i64) -> ImageRecord {
            let used = self.t0 - chrono::TimeDelta::hours(hours_ago);
            let r = ImageRecord {
                name: format!("docker.io/library/{name}:1"),
                repo_digest: Digest::of(format!("index {name}").as_bytes()),
                manifest: Digest::of(format!("manifest {name}").as_bytes()),
                config: Digest::of(format!("config {name}").as_bytes()),
                layers: vec![],
                size: size * GB,
                created: used,
                last_used: used,
            };
            self.store.put_record(&r).expect("put");
            r
        }

        fn names(&self) -> Vec<String> {
            self.store.list().expect("list").into_iter().map(|r| r.name).collect()
        }
    }

    /// 100 GB with `available` GB free.
    fn disk(available: u64) -> impl Fn(&Path) -> io::Result<DiskUsage> {
        move |_| {
            Ok(DiskUsage {
                capacity: 100 * GB,
                available: available * GB,
            })
        }
    }

    #[test]
    fn nothing_goes_below_the_high_threshold() {
        let n = Node::new();
        for (name, hours) in [("a", 100), ("b", 200)] {
            n.image(name, 5, hours);
        }
        let mut gc = ImageGc::new(GcPolicy::default());
        // 84% full.
        let r = run_once(&mut gc, &n.store, &n.containers, &HashSet::new(), disk(16), n.t0).expect("gc");
        assert!(r.removed.is_empty());
        assert_eq!(r.failure(gc.policy()), None);
        assert_eq!(n.names().len(), 2);
    }

    #[test]
    fn unused_images_go_least_recently_used_first_until_below_low_and_used_ones_stay() {
        let n = Node::new();
        let running = n.image("running", 1, 900);
        let exited = n.image("exited", 1, 800);
        n.image("oldest", 2, 700);
        n.image("older", 2, 600);
        n.image("old", 2, 500);
        n.image("recent", 2, 1);
        let pending = n.image("pending", 1, 1000);
        // A running and an exited (not removed) container record their images; a pod bound to
        // the node names another whose container is not made yet.
        n.containers.record_image("pod1-web-0", &running).expect("record");
        n.containers.record_image("pod2-job-0", &exited).expect("record");
        let pods: HashSet<String> = [pending.name.clone()].into();
        let mut gc = ImageGc::new(GcPolicy::default());
        // 86% full: 6 GB to free to get to 80%: oldest, older, old (2 GB each); `recent` stays.
        let r = run_once(&mut gc, &n.store, &n.containers, &pods, disk(14), n.t0).expect("gc");
        let gone = |name: &str| format!("docker.io/library/{name}:1");
        assert_eq!(r.removed, vec![gone("oldest"), gone("older"), gone("old")]);
        assert_eq!(
            n.names(),
            vec![gone("exited"), gone("pending"), gone("recent"), gone("running")]
        );
        // 99% full: everything unused goes and it is not enough.
        let r = run_once(&mut gc, &n.store, &n.containers, &pods, disk(1), n.t0).expect("gc");
        assert_eq!(r.removed, vec![gone("recent")]);
        assert_eq!(
            n.names(),
            vec![gone("exited"), gone("pending"), gone("running")],
            "images in use are never removed"
        );
        let failure = r.failure(gc.policy()).expect("short of the low threshold");
        assert!(
            failure.starts_with("Failed to garbage collect required amount of images. Attempted to free 20401094656 bytes, but only found 2147483648 bytes eligible"),
            "{failure}"
        );
    }

    #[test]
    fn containers_that_do_not_record_their_image_stop_gc() {
        let n = Node::new();
        n.image("a", 5, 100);
        let dir = n.containers.dir("older-skiff-0");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(skiff_runtime::shim::state_path(&dir), b"{}").expect("state");
        let mut gc = ImageGc::new(GcPolicy::default());
        let e = run_once(&mut gc, &n.store, &n.containers, &HashSet::new(), disk(1), n.t0).expect_err("unknown");
        assert!(
            matches!(e, ImageGcError::UnknownImages { ref ids } if ids == &["older-skiff-0"]),
            "{e}"
        );
        assert_eq!(n.names().len(), 1);
    }
}
