//! Image garbage collection by disk usage, as the kubelet does it: when the filesystem holding
//! the images is fuller than the high threshold, remove unused images, least recently used
//! first, until the expected usage is below the low threshold; then remove the blobs and
//! snapshots no image refers to. [`ImageGc`] runs it repeatedly and, like the kubelet's image
//! manager, remembers when it last saw each image in use.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::content::Digest;
use crate::io_error::IoError;
use crate::store::{ImageRecord, ImageStore, PruneReport, StoreError};

/// Thresholds in percent of the filesystem and the youngest image collected (the kubelet's
/// defaults: 85, 80 and 2 minutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Collect when usage is at or above this (100: never, as the kubelet reads it).
    pub high_threshold_percent: u8,
    /// Collect until usage is below this.
    pub low_threshold_percent: u8,
    /// Images used (or pulled) more recently than this are kept (the kubelet's
    /// `imageMinimumGCAge`): an image pulled for a container that is not made yet is not in use
    /// by any container, but must stay.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// A policy whose thresholds cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GcPolicyError {
    /// A threshold above 100%.
    #[error("the image GC {which} threshold {value}% is not a percentage (0 to 100)")]
    NotAPercentage {
        /// `high` or `low`.
        which: &'static str,
        /// The value given.
        value: u8,
    },
    /// The low threshold is not below the high one.
    #[error("the image GC low threshold ({low}%) must be less than the high threshold ({high}%)")]
    LowNotBelowHigh {
        /// The low threshold.
        low: u8,
        /// The high threshold.
        high: u8,
    },
}

impl GcPolicy {
    /// The thresholds, checked as the kubelet checks them (each 0–100, low below high), with
    /// the default minimum age.
    pub fn new(high_threshold_percent: u8, low_threshold_percent: u8) -> Result<Self, GcPolicyError> {
        for (which, value) in [("high", high_threshold_percent), ("low", low_threshold_percent)] {
            if value > 100 {
                return Err(GcPolicyError::NotAPercentage { which, value });
            }
        }
        if low_threshold_percent >= high_threshold_percent {
            return Err(GcPolicyError::LowNotBelowHigh {
                low: low_threshold_percent,
                high: high_threshold_percent,
            });
        }
        Ok(Self {
            high_threshold_percent,
            low_threshold_percent,
            ..Self::default()
        })
    }

    /// A high threshold of 100 turns image GC off (the kubelet's reading).
    pub fn disabled(&self) -> bool {
        self.high_threshold_percent >= 100
    }
}

/// Size and free space of a filesystem, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Total size.
    pub capacity: u64,
    /// Free for unprivileged use.
    pub available: u64,
}

impl DiskUsage {
    /// Usage of the filesystem holding `path` (statvfs).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let s = rustix::fs::statvfs(path)?;
        Ok(Self {
            capacity: s.f_blocks.saturating_mul(s.f_frsize),
            available: s.f_bavail.saturating_mul(s.f_frsize),
        })
    }

    /// Percent used (0 for an empty filesystem).
    pub fn used_percent(&self) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        100 - self.available.min(self.capacity) * 100 / self.capacity
    }
}

/// One image as GC sees it: all the names of one image ID together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcImage {
    /// The image ID.
    pub id: Digest,
    /// Its names.
    pub names: Vec<String>,
    /// Bytes it takes.
    pub size: u64,
    /// Most recent use of any of its names.
    pub last_used: DateTime<Utc>,
    /// Whether a container uses it.
    pub in_use: bool,
}

/// Groups records by image ID; an image is in use when `in_use` holds any of its names, its
/// ID, or its repo digest (`name@sha256:…`).
pub fn gc_images(records: &[ImageRecord], in_use: &HashSet<String>) -> Vec<GcImage> {
    let mut by_id: BTreeMap<Digest, GcImage> = BTreeMap::new();
    for r in records {
        let used = in_use.contains(&r.name)
            || in_use.contains(r.config.as_str())
            || in_use.contains(&format!("{}@{}", r.repository_and_tag().0, r.repo_digest));
        let e = by_id.entry(r.config.clone()).or_insert_with(|| GcImage {
            id: r.config.clone(),
            names: Vec::new(),
            size: r.size,
            last_used: r.last_used,
            in_use: false,
        });
        e.names.push(r.name.clone());
        e.last_used = e.last_used.max(r.last_used);
        e.in_use |= used;
    }
    by_id.into_values().collect()
}

/// Bytes to free so that usage gets down to the low threshold, when it is at or above the
/// high one; 0 otherwise.
pub fn bytes_to_free(usage: DiskUsage, policy: GcPolicy) -> u64 {
    if usage.capacity == 0 || usage.used_percent() < u64::from(policy.high_threshold_percent) {
        return 0;
    }
    // Free until available ≥ (100 - low)% of capacity.
    let want_available = usage.capacity / 100 * u64::from(100 - policy.low_threshold_percent.min(100));
    want_available.saturating_sub(usage.available)
}

/// The pure decision: which images to remove (least recently used first, never one in use),
/// given the usage now. Empty when usage is below the high threshold.
pub fn select_for_removal(images: &[GcImage], usage: DiskUsage, policy: GcPolicy) -> Vec<GcImage> {
    let mut to_free = bytes_to_free(usage, policy);
    let mut candidates: Vec<&GcImage> = images.iter().filter(|i| !i.in_use).collect();
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then_with(|| a.id.cmp(&b.id)));
    let mut out = Vec::new();
    for c in candidates {
        if to_free == 0 {
            break;
        }
        to_free = to_free.saturating_sub(c.size);
        out.push(c.clone());
    }
    out
}

/// What a GC run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Names removed.
    pub removed: Vec<String>,
    /// Content removed afterwards.
    pub pruned: PruneReport,
    /// The usage the run started from.
    pub usage: DiskUsage,
    /// Bytes that had to go to get down to the low threshold (0: below the high one).
    pub to_free: u64,
    /// Bytes of the images chosen for removal (their content's size, as the kubelet counts).
    pub eligible: u64,
    /// The usage measured after removal, when anything was removed.
    pub usage_after: Option<DiskUsage>,
}

impl GcReport {
    /// Why the run did not get usage below the low threshold (the kubelet's
    /// `FreeDiskSpaceFailed` message), or `None` when it did or had nothing to do. A measured
    /// usage after removal is the judge; without one, the estimate.
    pub fn failure(&self, policy: GcPolicy) -> Option<String> {
        if self.to_free == 0 {
            return None;
        }
        let low = u64::from(policy.low_threshold_percent);
        if self.usage_after.is_some_and(|u| u.used_percent() <= low) {
            return None;
        }
        let mut message = format!(
            "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
            self.to_free, self.eligible
        );
        if let Some(after) = self.usage_after {
            if self.eligible >= self.to_free {
                message = format!(
                    "Failed to garbage collect required amount of images. Removed {} bytes of unused images, but the disk is still {}% full (low threshold {low}%).",
                    self.eligible,
                    after.used_percent()
                );
            }
        }
        Some(message)
    }
}

/// Image GC across runs. Remembers when each image was last seen in use, as the kubelet's
/// image manager does, so an image whose container went a minute ago counts as used a minute
/// ago rather than when it was pulled (memory only: after a restart, images in use are seen
/// again at the first run).
#[derive(Debug, Default)]
pub struct ImageGc {
    policy: GcPolicy,
    last_seen: HashMap<Digest, DateTime<Utc>>,
}

impl ImageGc {
    /// GC by `policy`.
    pub fn new(policy: GcPolicy) -> Self {
        Self {
            policy,
            last_seen: HashMap::new(),
        }
    }

    /// The policy it runs by.
    pub fn policy(&self) -> GcPolicy {
        self.policy
    }

    /// One run at `now` on `store`: reads the usage of its filesystem through `usage`; when
    /// that is at or above the high threshold, removes images that no name or ID in `in_use`
    /// holds and that were not used within the minimum age, least recently used first, until
    /// the estimate is below the low threshold; then the unreferenced content. A name pulled
    /// again since the decision (newer `last_used`, or another image) is left alone.
    pub fn run(
        &mut self,
        store: &ImageStore,
        in_use: &HashSet<String>,
        usage: impl Fn(&Path) -> std::io::Result<DiskUsage>,
        now: DateTime<Utc>,
    ) -> Result<GcReport, StoreError> {
        let root = store.root().to_path_buf();
        let before = usage(&root).map_err(IoError::at("measuring disk usage of", &root))?;
        let mut images = gc_images(&store.list()?, in_use);
        let present: HashSet<&Digest> = images.iter().map(|i| &i.id).collect();
        self.last_seen.retain(|id, _| present.contains(id));
        for img in &mut images {
            if img.in_use {
                self.last_seen.insert(img.id.clone(), now);
            }
            if let Some(seen) = self.last_seen.get(&img.id) {
                img.last_used = img.last_used.max(*seen);
            }
        }
        let mut report = GcReport {
            usage: before,
            to_free: bytes_to_free(before, self.policy),
            ..GcReport::default()
        };
        if report.to_free == 0 {
            return Ok(report);
        }
        let min_age = chrono::TimeDelta::from_std(self.policy.min_age).unwrap_or(chrono::TimeDelta::MAX);
        let old_enough: Vec<GcImage> = images
            .into_iter()
            .filter(|i| now.signed_duration_since(i.last_used) >= min_age)
            .collect();
        let chosen = select_for_removal(&old_enough, before, self.policy);
        report.eligible = chosen.iter().map(|i| i.size).sum();
        for img in chosen {
            for n in img.names {
                match store.get_name(&n)? {
                    Some(r) if r.config == img.id && r.last_used <= img.last_used => {}
                    _ => {
                        tracing::info!(image = %n, "image GC: pulled again meanwhile; kept");
                        continue;
                    }
                }
                tracing::info!(image = %n, id = %img.id, "image GC: removing");
                store.remove_record(&n)?;
                report.removed.push(n);
            }
        }
        if !report.removed.is_empty() {
            report.pruned = store.prune()?;
            report.usage_after = usage(&root).ok();
        }
        Ok(report)
    }
}

/// One GC run on `store` without memory of earlier runs (see [`ImageGc::run`]).
pub fn collect_garbage(
    store: &ImageStore,
    in_use: &HashSet<String>,
    policy: GcPolicy,
    usage: impl Fn(&Path) -> std::io::Result<DiskUsage>,
) -> Result<GcReport, StoreError> {
    ImageGc::new(policy).run(store, in_use, usage, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn img(c: char, size: u64, used_at: i64, in_use: bool) -> GcImage {
        GcImage {
            id: Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).expect("digest"),
            names: vec![format!("img-{c}")],
            size,
            last_used: Utc.timestamp_opt(used_at, 0).single().expect("time"),
            in_use,
        }
    }

    fn names(v: &[GcImage]) -> Vec<String> {
        v.iter().flat_map(|i| i.names.clone()).collect()
    }

    const GB: u64 = 1 << 30;

    #[test]
    fn nothing_below_the_high_threshold() {
        let images = vec![img('a', GB, 1, false)];
        let usage = DiskUsage {
            capacity: 100 * GB,
            available: 16 * GB,
        };
        assert_eq!(usage.used_percent(), 84);
        assert!(select_for_removal(&images, usage, GcPolicy::default()).is_empty());
    }

    #[test]
    fn least_recently_used_unused_first_until_below_low() {
        let images = vec![
            img('a', 3 * GB, 300, false),
            img('b', 2 * GB, 100, false),
            img('c', 4 * GB, 50, true), // oldest, but in use
            img('d', 2 * GB, 200, false),
        ];
        // 90% used: need 20 GB free, have 10: free 10 GB → b (2), d (2), a (3) = 7 < 10,
        // everything unused goes and the in-use image stays.
        let usage = DiskUsage {
            capacity: 100 * GB,
            available: 10 * GB,
        };
        assert_eq!(
            names(&select_for_removal(&images, usage, GcPolicy::default())),
            vec!["img-b", "img-d", "img-a"]
        );
        // 86% used: need 20 free, have 14: free 6 → b (2), d (2), a (3): a is needed to pass 6.
        let usage = DiskUsage {
            capacity: 100 * GB,
            available: 14 * GB,
        };
        assert_eq!(
            names(&select_for_removal(&images, usage, GcPolicy::default())),
            vec!["img-b", "img-d", "img-a"]
        );
        // 85% used (at the threshold): to reach 82% free 3 GB → b (2) and d (2); to reach
        // 83% free 2 GB → b alone.
        let usage = DiskUsage {
            capacity: 100 * GB,
            available: 15 * GB,
        };
        let policy = |low| GcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: low,
            ..GcPolicy::default()
        };
        assert_eq!(
            names(&select_for_removal(&images, usage, policy(82))),
            vec!["img-b", "img-d"]
        );
        assert_eq!(names(&select_for_removal(&images, usage, policy(83))), vec!["img-b"]);
    }

    #[test]
    fn names_of_one_image_go_together_and_any_use_protects_it() {
        let now = Utc::now();
        let rec = |name: &str, id: char| ImageRecord {
            name: name.into(),
            repo_digest: Digest::of(name.as_bytes()),
            manifest: Digest::of(name.as_bytes()),
            config: Digest::parse(&format!("sha256:{}", id.to_string().repeat(64))).expect("digest"),
            layers: vec![],
            size: 10,
            created: now,
            last_used: now,
        };
        let records = vec![
            rec("docker.io/library/a:1", 'a'),
            rec("docker.io/library/a:latest", 'a'),
            rec("docker.io/library/b:1", 'b'),
        ];
        let in_use: HashSet<String> = ["docker.io/library/a:latest".to_string()].into();
        let g = gc_images(&records, &in_use);
        assert_eq!(g.len(), 2);
        assert!(g[0].in_use, "one used name protects every name of the image");
        assert_eq!(g[0].names.len(), 2);
        assert!(!g[1].in_use);
    }

    fn record(name: &str, id: char, size: u64, last_used: DateTime<Utc>) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            repo_digest: Digest::of(name.as_bytes()),
            manifest: Digest::of(name.as_bytes()),
            config: Digest::parse(&format!("sha256:{}", id.to_string().repeat(64))).expect("digest"),
            layers: vec![],
            size,
            created: last_used,
            last_used,
        }
    }

    /// A usage of 100 GB with `available` GB free.
    fn free(available: u64) -> DiskUsage {
        DiskUsage {
            capacity: 100 * GB,
            available: available * GB,
        }
    }

    #[test]
    fn image_gc_remembers_use_between_runs_and_keeps_young_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store");
        let t0 = Utc.timestamp_opt(1_700_000_000, 0).single().expect("time");
        let hours = chrono::TimeDelta::hours;
        store.put_record(&record("a", 'a', 3 * GB, t0 - hours(1))).expect("put");
        store.put_record(&record("b", 'b', 2 * GB, t0 - hours(2))).expect("put");
        store.put_record(&record("c", 'c', 4 * GB, t0 - hours(3))).expect("put");
        let mut gc = ImageGc::new(GcPolicy::default());

        // 84% full: below the high threshold, nothing goes; `c` is seen in use.
        let r = gc
            .run(&store, &["c".to_string()].into(), |_| Ok(free(16)), t0)
            .expect("gc");
        assert_eq!((r.removed.len(), r.to_free, r.failure(gc.policy())), (0, 0, None));

        // Ten minutes later `c`'s container is gone and `d` was pulled a moment ago. 85% full:
        // 5 GB to free. By pull times `c` would go first; it was used ten minutes ago, so `b`
        // (2 GB) and `a` (3 GB) go; `d` is younger than the minimum age.
        let t1 = t0 + chrono::TimeDelta::minutes(10);
        store
            .put_record(&record("d", 'd', 9 * GB, t1 - chrono::TimeDelta::seconds(30)))
            .expect("put");
        let calls = std::cell::Cell::new(0);
        let usage = |_: &Path| {
            calls.set(calls.get() + 1);
            Ok(if calls.get() == 1 { free(15) } else { free(21) })
        };
        let r = gc.run(&store, &HashSet::new(), usage, t1).expect("gc");
        assert_eq!(r.removed, vec!["b", "a"]);
        assert_eq!((r.to_free, r.eligible), (5 * GB, 5 * GB));
        assert_eq!(r.usage_after, Some(free(21)));
        assert_eq!(r.failure(gc.policy()), None);
        let left: Vec<String> = store.list().expect("list").into_iter().map(|i| i.name).collect();
        assert_eq!(left, vec!["c", "d"]);

        // Without that memory, `c` would have gone first.
        let plain = gc_images(
            &[
                record("b", 'b', 2 * GB, t0 - hours(2)),
                record("c", 'c', 4 * GB, t0 - hours(3)),
            ],
            &HashSet::new(),
        );
        assert_eq!(
            names(&select_for_removal(&plain, free(15), GcPolicy::default())),
            vec!["c", "b"]
        );
    }

    #[test]
    fn image_gc_never_removes_an_image_in_use_and_says_when_it_falls_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store");
        let t0 = Utc.timestamp_opt(1_700_000_000, 0).single().expect("time");
        let day = chrono::TimeDelta::days(1);
        store.put_record(&record("old:1", 'a', GB, t0 - day * 3)).expect("put");
        // One image under two names; a container uses it by ID.
        store
            .put_record(&record("used:1", 'b', 5 * GB, t0 - day * 9))
            .expect("put");
        store
            .put_record(&record("used:latest", 'b', 5 * GB, t0 - day * 9))
            .expect("put");
        let in_use: HashSet<String> = [format!("sha256:{}", "b".repeat(64))].into();
        let policy = GcPolicy::default();
        // 95% full: 15 GB to free, 1 GB eligible; the disk stays full.
        let r = ImageGc::new(policy)
            .run(&store, &in_use, |_| Ok(free(5)), t0)
            .expect("gc");
        assert_eq!(r.removed, vec!["old:1"]);
        assert_eq!((r.to_free, r.eligible), (15 * GB, GB));
        assert_eq!(
            r.failure(policy).as_deref(),
            Some(
                "Failed to garbage collect required amount of images. Attempted to free 16106127360 bytes, but only found 1073741824 bytes eligible to free."
            )
        );
        let left: Vec<String> = store.list().expect("list").into_iter().map(|i| i.name).collect();
        assert_eq!(left, vec!["used:1", "used:latest"]);
        // Enough was eligible, yet the disk is still above the low threshold.
        let r = GcReport {
            to_free: GB,
            eligible: 2 * GB,
            usage_after: Some(free(18)),
            ..GcReport::default()
        };
        assert_eq!(
            r.failure(policy).as_deref(),
            Some("Failed to garbage collect required amount of images. Removed 2147483648 bytes of unused images, but the disk is still 82% full (low threshold 80%).")
        );
    }

    #[test]
    fn policies_are_checked_like_the_kubelets() {
        assert_eq!(GcPolicy::new(85, 80), Ok(GcPolicy::default()));
        assert_eq!(
            GcPolicy::new(80, 80).map_err(|e| e.to_string()),
            Err("the image GC low threshold (80%) must be less than the high threshold (80%)".to_string())
        );
        assert_eq!(
            GcPolicy::new(101, 80).map_err(|e| e.to_string()),
            Err("the image GC high threshold 101% is not a percentage (0 to 100)".to_string())
        );
        assert!(GcPolicy::new(100, 90).expect("valid").disabled());
        assert!(!GcPolicy::default().disabled());
    }
}
