//! Importing image tarballs for air-gapped machines: docker-archive (`docker save`:
//! `manifest.json` + `repositories`) and OCI-archive (`oci-layout` + `index.json`, names from
//! the `io.containerd.image.name` or `org.opencontainers.image.ref.name` annotations). The
//! tarball may be gzip- or zstd-compressed.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::content::{ContentError, Digest};
use crate::platform::Platform;
use crate::reference::ImageRef;
use crate::store::{self, Desc, ImageRecord, ImageStore, ManifestDoc, ParsedManifest, StoreError};

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read or unpacked.
    #[error("reading archive {path}: {source}")]
    Read {
        /// The archive.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Neither `manifest.json` nor `oci-layout` + `index.json`.
    #[error("{path} is neither a docker-archive (manifest.json) nor an OCI archive (oci-layout, index.json)")]
    UnknownFormat {
        /// The archive.
        path: PathBuf,
    },
    /// A document in the archive is invalid.
    #[error("{path}: invalid {document}: {message}")]
    Invalid {
        /// The archive.
        path: PathBuf,
        /// Which document.
        document: String,
        /// What is wrong.
        message: String,
    },
    /// A blob in the archive does not match its digest.
    #[error("{path}: {source}")]
    Content {
        /// The archive.
        path: PathBuf,
        #[source]
        source: ContentError,
    },
    /// The archive holds no image with a name.
    #[error("{path}: no named image in the archive (tag images before saving them)")]
    NoImages {
        /// The archive.
        path: PathBuf,
    },
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports every named image in the archive at `path`; returns the records written.
pub fn import_archive(store: &ImageStore, path: &Path, platform: &Platform) -> Result<Vec<ImageRecord>, ImportError> {
    let _lock = store.lock_shared()?;
    let read_err = |source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Unpack into the store's own filesystem so blobs can be hashed from files.
    let tmp = tempfile::Builder::new()
        .prefix("import-")
        .tempdir_in(store.root().join("ingest"))
        .map_err(read_err)?;
    {
        let f = fs::File::open(path).map_err(read_err)?;
        let r = crate::unpack::decompress(f).map_err(read_err)?;
        let mut a = tar::Archive::new(r);
        a.set_preserve_permissions(false);
        // `tar` skips entries with `..` and refuses to write through symlinks out of `tmp`.
        a.unpack(tmp.path()).map_err(read_err)?;
    }
    let dir = tmp.path();
    let records = if dir.join("manifest.json").is_file() {
        import_docker(store, path, dir)?
    } else if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        import_oci(store, path, dir, platform)?
    } else {
        return Err(ImportError::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    if records.is_empty() {
        return Err(ImportError::NoImages {
            path: path.to_path_buf(),
        });
    }
    for r in &records {
        tracing::debug!(image = %r.name, id = %r.config, "imported");
    }
    Ok(records)
}

/// A path inside the unpacked archive; `..` and absolute paths are refused.
fn inside(archive: &Path, dir: &Path, rel: &str) -> Result<PathBuf, ImportError> {
    let p = Path::new(rel);
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(ImportError::Invalid {
            path: archive.to_path_buf(),
            document: "manifest.json".into(),
            message: format!("path {rel:?} leaves the archive"),
        });
    }
    Ok(dir.join(p))
}

fn put_file(
    store: &ImageStore,
    archive: &Path,
    file: &Path,
    expected: Option<&Digest>,
) -> Result<(Digest, u64), ImportError> {
    let mut f = fs::File::open(file).map_err(|source| ImportError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let d = store
        .content()
        .put_reader(&mut f, expected, Some(size))
        .map_err(|source| ImportError::Content {
            path: archive.to_path_buf(),
            source,
        })?;
    Ok((d, size))
}

fn layer_media_type(file: &Path) -> String {
    let mut head = [0u8; 4];
    let n = fs::File::open(file).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        "application/vnd.docker.image.rootfs.diff.tar.gzip".into()
    } else if n == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
        "application/vnd.oci.image.layer.v1.tar+zstd".into()
    } else {
        "application/vnd.docker.image.rootfs.diff.tar".into()
    }
}

fn import_docker(store: &ImageStore, archive: &Path, dir: &Path) -> Result<Vec<ImageRecord>, ImportError> {
    let invalid = |message: String| ImportError::Invalid {
        path: archive.to_path_buf(),
        document: "manifest.json".into(),
        message,
    };
    let text = fs::read(dir.join("manifest.json")).map_err(|source| ImportError::Read {
        path: archive.to_path_buf(),
        source,
    })?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let mut out = Vec::new();
    for e in entries {
        let (config, config_size) = put_file(store, archive, &inside(archive, dir, &e.config)?, None)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let file = inside(archive, dir, l)?;
            let media_type = layer_media_type(&file);
            let (digest, size) = put_file(store, archive, &file, None)?;
            layers.push(Desc {
                media_type,
                digest,
                size,
            });
        }
        // A Docker schema 2 manifest for the image, as a registry would serve it.
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config_size,
                "digest": config.as_str(),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type,
                "size": l.size,
                "digest": l.digest.as_str(),
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest_json).map_err(|e| invalid(e.to_string()))?;
        let manifest_digest = store
            .content()
            .put(&bytes, None)
            .map_err(|source| ImportError::Content {
                path: archive.to_path_buf(),
                source,
            })?;
        let parsed = ParsedManifest {
            config: Desc {
                media_type: "application/vnd.docker.container.image.v1+json".into(),
                digest: config,
                size: config_size,
            },
            layers,
        };
        let tags = e.repo_tags.unwrap_or_default();
        if tags.is_empty() {
            tracing::warn!(archive = %archive.display(), config = %parsed.config.digest, "skipping an image without RepoTags");
        }
        for tag in tags {
            let r = ImageRef::parse(&tag).map_err(|err| invalid(err.to_string()))?;
            let rec = store::record_from(store, &r.to_string(), &manifest_digest, &manifest_digest, &parsed)?;
            store.put_record(&rec)?;
            out.push(rec);
        }
    }
    Ok(out)
}

fn import_oci(
    store: &ImageStore,
    archive: &Path,
    dir: &Path,
    platform: &Platform,
) -> Result<Vec<ImageRecord>, ImportError> {
    let invalid = |document: &str, message: String| ImportError::Invalid {
        path: archive.to_path_buf(),
        document: document.to_string(),
        message,
    };
    // Every blob goes in, verified against its file name.
    let blobs = dir.join("blobs/sha256");
    if let Ok(rd) = fs::read_dir(&blobs) {
        for e in rd.flatten() {
            let name = format!("sha256:{}", e.file_name().to_string_lossy());
            let d = Digest::parse(&name).map_err(|err| invalid("blobs", err.to_string()))?;
            put_file(store, archive, &e.path(), Some(&d))?;
        }
    }
    let index_bytes = fs::read(dir.join("index.json")).map_err(|source| ImportError::Read {
        path: archive.to_path_buf(),
        source,
    })?;
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| invalid("index.json", e.to_string()))?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let annotations = desc.annotations().clone().unwrap_or_default();
        // `io.containerd.image.name` is a full reference; `org.opencontainers.image.ref.name`
        // may be one too, or only a tag (`1.36`), which names no repository.
        let name = annotations.get("io.containerd.image.name").cloned().or_else(|| {
            annotations
                .get("org.opencontainers.image.ref.name")
                .filter(|n| n.contains('/') || n.contains(':'))
                .cloned()
        });
        let top = Digest::parse(desc.digest().as_ref()).map_err(|e| invalid("index.json", e.to_string()))?;
        let Some(name) = name else {
            tracing::warn!(archive = %archive.display(), digest = %top, "skipping an image without a full name annotation");
            continue;
        };
        let r = ImageRef::parse(&name).map_err(|e| invalid("index.json", e.to_string()))?;
        let bytes = store.content().read(&top).map_err(|source| ImportError::Content {
            path: archive.to_path_buf(),
            source,
        })?;
        let (manifest_digest, manifest) =
            match store::parse_manifest(&bytes).map_err(|m| invalid(&format!("manifest {top}"), m))? {
                ManifestDoc::Image(m) => (top.clone(), m),
                ManifestDoc::Index(idx) => {
                    let entry = platform
                        .select(&idx)
                        .ok_or_else(|| invalid(&format!("index {top}"), format!("no manifest for {platform}")))?;
                    let child = Digest::parse(entry.digest().as_ref()).map_err(|e| invalid("index", e.to_string()))?;
                    let cb = store.content().read(&child).map_err(|source| ImportError::Content {
                        path: archive.to_path_buf(),
                        source,
                    })?;
                    match store::parse_manifest(&cb).map_err(|m| invalid(&format!("manifest {child}"), m))? {
                        ManifestDoc::Image(m) => (child, m),
                        ManifestDoc::Index(_) => return Err(invalid("index", "nested index".into())),
                    }
                }
            };
        for b in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !store.content().has(&b.digest) {
                return Err(ImportError::Content {
                    path: archive.to_path_buf(),
                    source: ContentError::NotFound {
                        digest: b.digest.clone(),
                    },
                });
            }
        }
        let rec = store::record_from(store, &r.to_string(), &top, &manifest_digest, &manifest)?;
        store.put_record(&rec)?;
        out.push(rec);
    }
    Ok(out)
}
