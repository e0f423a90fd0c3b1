//! The image store under `<data-dir>/images`: blobs (see [`crate::content`]), one record per
//! image name (`refs/`), per-layer snapshots shared by all images (`snapshots/<chain-id>`), and
//! the two ways to turn an image into a root filesystem (overlay lowerdirs, or a copy).
//!
//! Processes coordinate through `lock` (flock): pulls, imports and snapshotting hold it shared,
//! removal of unreferenced content holds it exclusive, so nothing a pull has written but not
//! yet recorded is swept away under it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::content::{ContentError, ContentStore, Digest};
use crate::io_error::IoError;
use crate::reference::ImageRef;
use crate::unpack::{self, UnpackError, UnpackOptions, WhiteoutMode};

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob's digest (compressed, as stored).
    pub digest: Digest,
    /// The digest of the uncompressed tar (from the image config).
    pub diff_id: Digest,
    /// The blob's size.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
}

/// An image known under one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The normalised reference (`docker.io/library/busybox:1.36`, or `name@sha256:…`).
    pub name: String,
    /// The digest the registry knows the image by (the index's, for a multi-arch image).
    pub repo_digest: Digest,
    /// The platform manifest.
    pub manifest: Digest,
    /// The image config; its digest is the image ID.
    pub config: Digest,
    /// The layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// Bytes of content (manifest, config and compressed layers).
    pub size: u64,
    /// When this name was stored.
    pub created: DateTime<Utc>,
    /// When the image was last pulled or used (image GC removes the least recent first).
    pub last_used: DateTime<Utc>,
}

impl ImageRecord {
    /// The image ID (the config digest).
    pub fn id(&self) -> &Digest {
        &self.config
    }

    /// Repository and tag for listings (`<none>` when the name has no tag).
    pub fn repository_and_tag(&self) -> (String, String) {
        match ImageRef::parse(&self.name) {
            Ok(r) => (r.name(), r.tag().unwrap_or("<none>").to_string()),
            Err(_) => (self.name.clone(), "<none>".to_string()),
        }
    }
}

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Blob store failure.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// No image under that name.
    #[error("image {name:?} not found")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A stored document could not be read.
    #[error("corrupt {what} {path}: {source}")]
    Corrupt {
        /// What it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The image config does not match the manifest.
    #[error("image {image}: {message}")]
    BadImage {
        /// The image.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// Unpacking a layer failed.
    #[error("unpacking layer {layer} of {image}: {source}")]
    Unpack {
        /// The image.
        image: String,
        /// The layer blob.
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A held store lock (shared or exclusive); released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: fs::File,
}

/// What removing unreferenced content freed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs: usize,
    /// Snapshots deleted.
    pub snapshots: usize,
    /// Bytes of blobs deleted.
    pub bytes: u64,
}

/// The image store.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    content: ContentStore,
}

impl ImageStore {
    /// Opens (creating) the store in `<data_dir>/images`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let root = data_dir.join("images");
        let content = ContentStore::open(&root)?;
        for d in ["refs", "snapshots"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(IoError::at("creating", &p))?;
        }
        Ok(Self { root, content })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn lock(&self, exclusive: bool) -> Result<StoreLock, StoreError> {
        let p = self.root.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(IoError::at("opening", &p))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&f, op).map_err(IoError::at("locking", &p))?;
        Ok(StoreLock { _file: f })
    }

    /// Takes the shared lock (blocking): held while adding content.
    pub fn lock_shared(&self) -> Result<StoreLock, StoreError> {
        self.lock(false)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root
            .join("refs")
            .join(format!("{}.json", Digest::of(name.as_bytes()).hex()))
    }

    /// Writes (replaces) the record of `record.name`.
    pub fn put_record(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let p = self.record_path(&record.name);
        let dir = self.root.join("refs");
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(IoError::at("creating a temp file in", &dir))?;
        serde_json::to_writer_pretty(tmp.as_file(), record).map_err(|source| StoreError::Corrupt {
            what: "image record",
            path: p.clone(),
            source,
        })?;
        tmp.persist(&p).map_err(IoError::at("renaming into", &p))?;
        Ok(())
    }

    /// The image stored under `reference`'s normalised name, if any.
    pub fn get(&self, reference: &ImageRef) -> Result<Option<ImageRecord>, StoreError> {
        self.get_name(&reference.to_string())
    }

    pub(crate) fn get_name(&self, name: &str) -> Result<Option<ImageRecord>, StoreError> {
        let p = self.record_path(name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    what: "image record",
                    path: p,
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(IoError::at("reading", &p)(e).into()),
        }
    }

    /// Finds an image by name (normalised: `busybox` finds `docker.io/library/busybox:latest`),
    /// by ID or a unique ID prefix (`sha256:` optional), or by repo digest (`name@sha256:…`).
    pub fn resolve(&self, what: &str) -> Result<Option<ImageRecord>, StoreError> {
        if let Ok(r) = ImageRef::parse(what) {
            if let Some(rec) = self.get(&r)? {
                return Ok(Some(rec));
            }
            if let Some(d) = r.digest() {
                let name = r.name();
                return Ok(self
                    .list()?
                    .into_iter()
                    .find(|i| i.repo_digest.as_str() == d && i.repository_and_tag().0 == name));
            }
        }
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = self
                .list()?
                .into_iter()
                .filter(|i| i.config.hex().starts_with(hex))
                .collect();
            let ids: HashSet<_> = matches.iter().map(|i| i.config.clone()).collect();
            if ids.len() == 1 {
                return Ok(matches.into_iter().next());
            }
        }
        Ok(None)
    }

    /// Every image record, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("refs");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(IoError::at("listing", &dir))? {
            let e = e.map_err(IoError::at("listing", &dir))?;
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fs::read(&p) {
                Ok(b) => match serde_json::from_slice::<ImageRecord>(&b) {
                    Ok(r) => out.push(r),
                    Err(err) => tracing::warn!(path = %p.display(), error = %err, "skipping corrupt image record"),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(IoError::at("reading", &p)(e).into()),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the record `name` (content stays until [`ImageStore::prune`]).
    pub fn remove_record(&self, name: &str) -> Result<ImageRecord, StoreError> {
        let rec = self
            .get_name(name)?
            .ok_or_else(|| StoreError::NotFound { name: name.to_string() })?;
        let p = self.record_path(name);
        fs::remove_file(&p).map_err(IoError::at("removing", &p))?;
        Ok(rec)
    }

    /// Removes the image `what` (see [`ImageStore::resolve`]; an ID removes every name of
    /// that image) and then the content no image needs any more.
    pub fn remove(&self, what: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let rec = self
            .resolve(what)?
            .ok_or_else(|| StoreError::NotFound { name: what.to_string() })?;
        let by_id = !ImageRef::parse(what).is_ok_and(|r| r.to_string() == rec.name);
        let names: Vec<String> = if by_id {
            self.list()?
                .into_iter()
                .filter(|i| i.config == rec.config)
                .map(|i| i.name)
                .collect()
        } else {
            vec![rec.name.clone()]
        };
        let mut removed = Vec::new();
        for n in names {
            removed.push(self.remove_record(&n)?);
        }
        self.prune()?;
        Ok(removed)
    }

    /// Marks an image used now (image GC removes the least recently used first).
    pub fn touch(&self, name: &str) -> Result<(), StoreError> {
        if let Some(mut r) = self.get_name(name)? {
            r.last_used = Utc::now();
            self.put_record(&r)?;
        }
        Ok(())
    }

    /// Deletes blobs and snapshots that no image record refers to. Waits for running pulls
    /// and imports (exclusive lock).
    pub fn prune(&self) -> Result<PruneReport, StoreError> {
        let _lock = self.lock(true)?;
        let images = self.list()?;
        let mut keep_blobs = HashSet::new();
        let mut keep_snaps = HashSet::new();
        for i in &images {
            keep_blobs.insert(i.repo_digest.clone());
            keep_blobs.insert(i.manifest.clone());
            keep_blobs.insert(i.config.clone());
            for l in &i.layers {
                keep_blobs.insert(l.digest.clone());
            }
            for c in chain_ids(i) {
                keep_snaps.insert(c.hex().to_string());
            }
        }
        let mut report = PruneReport::default();
        for (d, size) in self.content.list()? {
            if !keep_blobs.contains(&d) {
                self.content.delete(&d)?;
                report.blobs += 1;
                report.bytes += size;
            }
        }
        let snaps = self.root.join("snapshots");
        for e in fs::read_dir(&snaps).map_err(IoError::at("listing", &snaps))? {
            let e = e.map_err(IoError::at("listing", &snaps))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep_snaps.contains(&name) {
                // Also leftovers of interrupted unpacks (`.tmp-*`): nobody holds the lock.
                remove_tree(&e.path())?;
                report.snapshots += 1;
            }
        }
        let ingest = self.root.join("ingest");
        if let Ok(rd) = fs::read_dir(&ingest) {
            // Leftovers of interrupted pulls and imports.
            for e in rd.flatten() {
                let p = e.path();
                let res = if p.is_dir() {
                    remove_tree(&p)
                } else {
                    fs::remove_file(&p).map_err(|e| IoError::at("removing", &p)(e).into())
                };
                if let Err(err) = res {
                    tracing::warn!(error = %err, "could not remove an ingest leftover");
                }
            }
        }
        tracing::debug!(
            blobs = report.blobs,
            snapshots = report.snapshots,
            bytes = report.bytes,
            "pruned image content"
        );
        Ok(report)
    }

    /// The image's config document (entrypoint, env, working dir, diff IDs …).
    pub fn config(&self, record: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration, StoreError> {
        let b = self.content.read(&record.config)?;
        serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
            what: "image config",
            path: self.content.blob_path(&record.config),
            source,
        })
    }

    /// The snapshot directory of the layer stack with `chain_id` (present or not).
    pub fn snapshot_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain_id.hex())
    }

    /// Makes sure every layer of `record` is unpacked into its snapshot (whiteouts in overlay
    /// format; needs root when a layer has whiteouts) and returns overlayfs' `lowerdir` list:
    /// the top layer first. Mounting is the container runtime's job.
    pub fn overlay_lowerdirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>, StoreError> {
        let _lock = self.lock_shared()?;
        // Top first, as overlayfs wants them and as each layer is unpacked above the others.
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (l, chain) in record.layers.iter().zip(chain_ids(record)) {
            let dir = self.ensure_snapshot(record, l, &chain, &dirs)?;
            dirs.insert(0, dir);
        }
        Ok(dirs)
    }

    fn ensure_snapshot(
        &self,
        record: &ImageRecord,
        layer: &LayerRecord,
        chain_id: &Digest,
        lowers: &[PathBuf],
    ) -> Result<PathBuf, StoreError> {
        let dst = self.snapshot_path(chain_id);
        if dst.is_dir() {
            return Ok(dst);
        }
        let snaps = self.root.join("snapshots");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&snaps)
            .map_err(IoError::at("creating a temp dir in", &snaps))?;
        // The container's `/` unless the layer says otherwise (temp dirs start as 0700).
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
                .map_err(IoError::at("changing mode of", tmp.path()))?;
        }
        let blob = self.content.open_blob(&layer.digest)?;
        let opts = UnpackOptions::for_current_user(WhiteoutMode::Overlay);
        unpack::apply_layer_over(io::BufReader::new(blob), tmp.path(), lowers, opts, Some(&layer.diff_id)).map_err(
            |source| StoreError::Unpack {
                image: record.name.clone(),
                layer: layer.digest.clone(),
                source,
            },
        )?;
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &dst) {
            Ok(()) => {}
            // Another unpack of the same layer won the race: use its result.
            Err(_) if dst.is_dir() => remove_tree(&tmp_path)?,
            Err(e) => {
                let _ = remove_tree(&tmp_path);
                return Err(IoError::at("renaming into", &dst)(e).into());
            }
        }
        tracing::debug!(layer = %layer.diff_id, chain = %chain_id, path = %dst.display(), "snapshot ready");
        Ok(dst)
    }

    /// The copy fallback: materialises the image's root filesystem in `target` (created if
    /// missing, normally empty) by applying the layers in order, whiteouts deleting.
    pub fn materialize_rootfs(&self, record: &ImageRecord, target: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(target).map_err(IoError::at("creating", target))?;
        let opts = UnpackOptions::for_current_user(WhiteoutMode::Apply);
        for l in &record.layers {
            let blob = self.content.open_blob(&l.digest)?;
            unpack::apply_layer(io::BufReader::new(blob), target, opts, Some(&l.diff_id)).map_err(|source| {
                StoreError::Unpack {
                    image: record.name.clone(),
                    layer: l.digest.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Removes a tree that may contain read-only directories (unpacked layers do).
fn remove_tree(p: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(p);
            fs::remove_dir_all(p).map_err(|e| IoError::at("removing", p)(e).into())
        }
    }
}

fn make_writable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::symlink_metadata(p) {
        if m.is_dir() {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(m.permissions().mode() | 0o700));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

/// The OCI chain IDs of an image's layers, bottom first: a snapshot is the result of a layer
/// applied over the ones below it, so it is addressed by the whole stack (as in containerd),
/// and images sharing a base share its snapshots.
pub fn chain_ids(record: &ImageRecord) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for l in &record.layers {
        let next = match out.last() {
            None => l.diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {}", l.diff_id).as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Builds a record from a stored manifest and config (shared by pull and import).
pub(crate) fn record_from(
    store: &ImageStore,
    name: &str,
    repo_digest: &Digest,
    manifest_digest: &Digest,
    manifest: &ParsedManifest,
) -> Result<ImageRecord, StoreError> {
    let cfg_bytes = store.content.read(&manifest.config.digest)?;
    let cfg: oci_spec::image::ImageConfiguration =
        serde_json::from_slice(&cfg_bytes).map_err(|source| StoreError::Corrupt {
            what: "image config",
            path: store.content.blob_path(&manifest.config.digest),
            source,
        })?;
    let diff_ids = cfg.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers.len() {
        return Err(StoreError::BadImage {
            image: name.to_string(),
            message: format!(
                "manifest has {} layers but config lists {} diff IDs",
                manifest.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, d) in manifest.layers.iter().zip(diff_ids) {
        let diff_id = Digest::parse(d).map_err(|e| StoreError::BadImage {
            image: name.to_string(),
            message: e.to_string(),
        })?;
        layers.push(LayerRecord {
            digest: l.digest.clone(),
            diff_id,
            size: l.size,
            media_type: l.media_type.clone(),
        });
    }
    let now = Utc::now();
    let size = manifest.config.size + layers.iter().map(|l| l.size).sum::<u64>();
    Ok(ImageRecord {
        name: name.to_string(),
        repo_digest: repo_digest.clone(),
        manifest: manifest_digest.clone(),
        config: manifest.config.digest.clone(),
        layers,
        size,
        created: now,
        last_used: now,
    })
}

/// A descriptor with a validated digest.
#[derive(Clone, Debug)]
pub(crate) struct Desc {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// An image manifest (OCI or Docker schema 2) reduced to what the store needs.
#[derive(Clone, Debug)]
pub(crate) struct ParsedManifest {
    pub config: Desc,
    pub layers: Vec<Desc>,
}

/// A manifest document: one image, or an index of them.
pub(crate) enum ManifestDoc {
    Image(ParsedManifest),
    Index(Box<oci_spec::image::ImageIndex>),
}

pub(crate) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Parses a manifest or index; `Err` carries a human-readable reason.
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<ManifestDoc, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not JSON: {e}"))?;
    let media_type = v.get("mediaType").and_then(|m| m.as_str()).unwrap_or("");
    if v.get("schemaVersion").and_then(|s| s.as_i64()) != Some(2) {
        return Err("only schema version 2 manifests are supported (Docker schema 1 is obsolete)".into());
    }
    let is_index = INDEX_TYPES.contains(&media_type) || (media_type.is_empty() && v.get("manifests").is_some());
    if is_index {
        let idx: oci_spec::image::ImageIndex =
            serde_json::from_value(v).map_err(|e| format!("invalid image index: {e}"))?;
        return Ok(ManifestDoc::Index(Box::new(idx)));
    }
    if !media_type.is_empty() && !MANIFEST_TYPES.contains(&media_type) {
        return Err(format!("unsupported manifest media type {media_type:?}"));
    }
    let m: oci_spec::image::ImageManifest =
        serde_json::from_value(v).map_err(|e| format!("invalid image manifest: {e}"))?;
    let desc = |d: &oci_spec::image::Descriptor| -> Result<Desc, String> {
        Ok(Desc {
            media_type: d.media_type().to_string(),
            digest: Digest::parse(d.digest().as_ref()).map_err(|e| e.to_string())?,
            size: d.size(),
        })
    };
    Ok(ManifestDoc::Image(ParsedManifest {
        config: desc(m.config())?,
        layers: m.layers().iter().map(desc).collect::<Result<_, _>>()?,
    }))
}
