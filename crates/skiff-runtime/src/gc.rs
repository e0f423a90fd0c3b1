//! Image garbage collection by disk usage, as the kubelet does it: when the filesystem holding
//! the images is fuller than the high threshold, remove unused images, least recently used
//! first, until the expected usage is below the low threshold; then remove the blobs and
//! snapshots no image refers to.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::content::Digest;
use crate::io_error::IoError;
use crate::store::{ImageRecord, ImageStore, PruneReport, StoreError};

/// Thresholds in percent of the filesystem (the kubelet's defaults are 85 and 80).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Collect when usage is at or above this.
    pub high_threshold_percent: u8,
    /// Collect until usage is below this.
    pub low_threshold_percent: u8,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
        }
    }
}

/// Size and free space of a filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The pure decision: which images to remove (least recently used first, never one in use),
/// given the usage now. Empty when usage is below the high threshold.
pub fn select_for_removal(images: &[GcImage], usage: DiskUsage, policy: GcPolicy) -> Vec<GcImage> {
    if usage.capacity == 0 || usage.used_percent() < u64::from(policy.high_threshold_percent) {
        return Vec::new();
    }
    // Free until available ≥ (100 - low)% of capacity.
    let want_available = usage.capacity / 100 * u64::from(100 - policy.low_threshold_percent.min(100));
    let mut to_free = want_available.saturating_sub(usage.available);
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
}

/// Runs image GC on `store`: reads the usage of its filesystem through `usage`, removes the
/// images [`select_for_removal`] picks, then the unreferenced content.
pub fn collect_garbage(
    store: &ImageStore,
    in_use: &HashSet<String>,
    policy: GcPolicy,
    usage: impl Fn(&Path) -> std::io::Result<DiskUsage>,
) -> Result<GcReport, StoreError> {
    let root = store.root().to_path_buf();
    let now = usage(&root).map_err(IoError::at("measuring disk usage of", &root))?;
    let images = gc_images(&store.list()?, in_use);
    let chosen = select_for_removal(&images, now, policy);
    let mut report = GcReport::default();
    if chosen.is_empty() {
        return Ok(report);
    }
    for img in chosen {
        for n in img.names {
            tracing::info!(image = %n, id = %img.id, "image GC: removing");
            store.remove_record(&n)?;
            report.removed.push(n);
        }
    }
    report.pruned = store.prune()?;
    Ok(report)
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
}
