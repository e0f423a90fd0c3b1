//! The node's containers, as the agent uses them: [`ContainerManager`] ties the pieces
//! together — a root filesystem from the image store ([`crate::rootfs`]), a bundle from the
//! Kubernetes container ([`crate::bundle`]), a shim that runs it ([`crate::shim`]), and the OCI
//! runtime for signals and removal ([`crate::oci`]) — with one directory per container under
//! `<data-dir>/containers/<id>`. Synchronous: the agent calls it from blocking tasks.
//!
//! Each container directory records the container's image (`image.json`), so image garbage
//! collection can tell which images the node's containers use, running or exited
//! ([`ContainerManager::images_in_use`]).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use oci_spec::runtime::Mount;

use crate::bundle::{self, BundleError, ContainerInput, PodContext};
use crate::content::Digest;
use crate::io_error::IoError;
use crate::oci::{OciRuntime, RuntimeError, RuntimeSelector};
use crate::rootfs::{self, RootfsError, RootfsMode};
use crate::shim::{self, Adoption, ShimConfig, ShimError, ShimState};
use crate::store::{ImageRecord, ImageStore, StoreError};

/// Errors of container operations; the agent shows them in the container's status.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The container's spec cannot be turned into a bundle (`CreateContainerConfigError`).
    #[error(transparent)]
    Config(#[from] BundleError),
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The root filesystem could not be made or removed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The shim could not start the container (`CreateContainerError`, `RunContainerError`).
    #[error(transparent)]
    Shim(#[from] ShimError),
    /// The OCI runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A container directory could not be used.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A container found on disk by [`ContainerManager::list`].
#[derive(Debug)]
pub struct ListedContainer {
    /// Its ID (directory name).
    pub id: String,
    /// What its shim recorded, or why that cannot be read.
    pub adoption: Result<Adoption, ShimError>,
}

/// The image a container was made from, as its directory records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerImage {
    /// The image's name in the store (`docker.io/library/busybox:1.36`).
    pub name: String,
    /// The image ID (its config's digest).
    pub id: Digest,
}

/// The images the node's containers use, by [`ContainerManager::images_in_use`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagesInUse {
    /// The names and IDs of the images of every container on the node, running or exited
    /// (what [`crate::gc::gc_images`] matches).
    pub images: HashSet<String>,
    /// Containers that were started but do not record their image (made by an older Skiff,
    /// or the record is unreadable): which images they use is unknown.
    pub unknown: Vec<String>,
}

const IMAGE_FILE: &str = "image.json";

/// One container to run.
#[derive(Clone, Debug)]
pub struct ContainerRequest<'a> {
    /// The runtime's ID (unique on the node; `[A-Za-z0-9_+.-]`).
    pub id: String,
    /// The image, already in the store.
    pub image: &'a ImageRecord,
    /// The container of the pod spec.
    pub container: &'a Container,
    /// What the pod shares and decided.
    pub pod: &'a PodContext,
    /// The resolved env (see [`ContainerInput::env`]).
    pub env: Vec<(String, String)>,
    /// Volume and pod-file mounts.
    pub mounts: Vec<Mount>,
    /// The container's cgroup.
    pub cgroups_path: String,
    /// The CRI log file (`/var/log/pods/<ns>_<pod>_<uid>/<container>/<restart>.log`).
    pub log_path: PathBuf,
}

/// The node's containers.
#[derive(Clone, Debug)]
pub struct ContainerManager {
    root: PathBuf,
    store: ImageStore,
    runtime: OciRuntime,
    exe: PathBuf,
    rootfs_mode: RootfsMode,
    /// Rotate container logs at this size.
    pub log_max_size: u64,
    /// Keep this many log files per container.
    pub log_max_files: usize,
}

impl ContainerManager {
    /// Containers under `<data_dir>/containers`, run by `selector` with its state in
    /// `runtime_root` (e.g. `/run/skiff/runtime`: gone after a reboot, as the containers
    /// are), shims started from the `skiff` binary `exe` (`/proc/self/exe` in the agent).
    pub fn new(
        data_dir: &Path,
        store: ImageStore,
        selector: RuntimeSelector,
        runtime_root: &Path,
        exe: &Path,
    ) -> Result<Self, ContainerError> {
        let root = data_dir.join("containers");
        fs::create_dir_all(&root).map_err(IoError::at("creating", &root))?;
        Ok(Self {
            root,
            store,
            runtime: OciRuntime::new(selector, runtime_root),
            exe: exe.to_path_buf(),
            rootfs_mode: RootfsMode::default(),
            log_max_size: shim::DEFAULT_LOG_MAX_SIZE,
            log_max_files: shim::DEFAULT_LOG_MAX_FILES,
        })
    }

    /// How root filesystems are made (default: overlayfs, else a copy).
    pub fn with_rootfs_mode(mut self, mode: RootfsMode) -> Self {
        self.rootfs_mode = mode;
        self
    }

    /// The OCI runtime.
    pub fn runtime(&self) -> &OciRuntime {
        &self.runtime
    }

    /// The directory of container `id` (bundle, rootfs, shim files).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Makes the container's root filesystem and bundle and starts it through a shim;
    /// returns once it runs. On failure, what was made is removed again.
    pub fn start(&self, req: &ContainerRequest<'_>) -> Result<ShimState, ContainerError> {
        crate::oci::validate_id(&req.id)?;
        let dir = self.dir(&req.id);
        // Never clean up (below) what belongs to another container of the same ID.
        if dir.exists() {
            return Err(RuntimeError::AlreadyExists {
                id: req.id.clone(),
                stderr: format!("{} exists", dir.display()),
            }
            .into());
        }
        let result = self.start_in(&dir, req);
        if result.is_err() {
            if let Err(e) = self.cleanup(&req.id, &dir) {
                tracing::warn!(id = %req.id, error = %e, "cleaning up a container that failed to start");
            }
        }
        result
    }

    fn start_in(&self, dir: &Path, req: &ContainerRequest<'_>) -> Result<ShimState, ContainerError> {
        // The image is recorded before anything else is made, so image GC never sees this
        // container use an image without knowing which.
        self.record_image(&req.id, req.image)?;
        let image_config = self.store.config(req.image)?;
        let root = rootfs::prepare(&self.store, req.image, dir, self.rootfs_mode)?;
        let (passwd, group) = rootfs::user_files(&root.path);
        let spec = bundle::container_spec(&ContainerInput {
            container: req.container,
            image: &image_config,
            pod: req.pod,
            env: req.env.clone(),
            rootfs: root.path,
            mounts: req.mounts.clone(),
            cgroups_path: req.cgroups_path.clone(),
            passwd,
            group,
        })?;
        bundle::write_config(dir, &spec)?;
        let cfg = ShimConfig {
            id: req.id.clone(),
            bundle: dir.to_path_buf(),
            runtime: self.runtime.selector().clone(),
            runtime_root: self.runtime.root().to_path_buf(),
            log_path: req.log_path.clone(),
            log_max_size: self.log_max_size,
            log_max_files: self.log_max_files,
            stdin: req.container.stdin.unwrap_or(false),
            stdin_once: req.container.stdin_once.unwrap_or(false),
            tty: req.container.tty.unwrap_or(false),
        };
        Ok(shim::spawn(&self.exe, dir, &cfg)?)
    }

    /// Records in the directory of container `id` (made if missing) that it uses `image`;
    /// [`ContainerManager::start`] does this first of all.
    pub fn record_image(&self, id: &str, image: &ImageRecord) -> Result<(), ContainerError> {
        crate::oci::validate_id(id)?;
        let dir = self.dir(id);
        fs::create_dir_all(&dir).map_err(IoError::at("creating", &dir))?;
        let record = ContainerImage {
            name: image.name.clone(),
            id: image.config.clone(),
        };
        let path = dir.join(IMAGE_FILE);
        let json = serde_json::to_vec(&record).expect("a name and a digest serialize");
        fs::write(&path, json).map_err(IoError::at("writing", &path))?;
        Ok(())
    }

    /// The container's state as its shim recorded it.
    pub fn state(&self, id: &str) -> Result<ShimState, ContainerError> {
        Ok(shim::read_state(&self.dir(id))?)
    }

    /// Stops a container the Kubernetes way: SIGTERM, up to `grace` for it to exit, then
    /// SIGKILL. Returns the recorded exit. A container that already exited is fine; one whose
    /// shim is gone is killed and recorded as exited with its status lost.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<ShimState, ContainerError> {
        let dir = self.dir(id);
        // Not running, or unknown to the runtime (its state is in /run: gone after a reboot):
        // either way there is nothing left to signal.
        let signal = |sig: i32| match self.runtime.kill(id, sig) {
            Ok(()) | Err(RuntimeError::NotRunning { .. } | RuntimeError::NotFound { .. }) => Ok(()),
            Err(e) => Err(ContainerError::from(e)),
        };
        match shim::adopt(&dir)? {
            Adoption::Finished(s) => return Ok(s),
            Adoption::Supervised(_) => {}
            Adoption::Orphaned(_) => {
                // Nobody will record this container's exit: stop it and record that the
                // status was lost.
                signal(9)?;
                self.wait_stopped(id)?;
                return Ok(shim::record_lost_exit(&dir)?);
            }
        }
        if !grace.is_zero() {
            signal(15)?;
            match shim::wait_for_exit(&dir, grace) {
                Ok(s) => return Ok(s),
                Err(ShimError::Timeout { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        signal(9)?;
        // SIGKILL cannot be ignored; the bound only guards against a shim that died meanwhile.
        match shim::wait_for_exit(&dir, Duration::from_secs(10)) {
            Ok(s) => Ok(s),
            Err(ShimError::Timeout { .. }) if !shim::read_state(&dir)?.shim_alive(&dir) => {
                self.wait_stopped(id)?;
                Ok(shim::record_lost_exit(&dir)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits (bounded) until the runtime reports the container stopped or gone.
    fn wait_stopped(&self, id: &str) -> Result<(), ContainerError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.runtime.state(id) {
                Ok(s) if s.status == crate::oci::Status::Stopped => return Ok(()),
                Err(RuntimeError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(_) if std::time::Instant::now() >= deadline => {
                    return Err(ShimError::Timeout {
                        dir: self.dir(id),
                        waited: Duration::from_secs(10),
                    }
                    .into())
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Removes a container: kills it if it still runs, deletes it from the runtime, unmounts
    /// and removes its root filesystem and directory. Logs stay (the kubelet keeps them for
    /// `kubectl logs --previous`). Idempotent.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        crate::oci::validate_id(id)?;
        self.cleanup(id, &self.dir(id))
    }

    fn cleanup(&self, id: &str, dir: &Path) -> Result<(), ContainerError> {
        match self.runtime.delete(id, true) {
            Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        rootfs::remove(dir)?;
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IoError::at("removing", dir)(e).into()),
        }
    }

    /// Every container directory with what a restarted agent finds there (see
    /// [`shim::adopt`]); directories without a readable state (a start interrupted before
    /// its shim wrote one) come back as errors to clean up.
    pub fn list(&self) -> Result<Vec<ListedContainer>, ContainerError> {
        Ok(self
            .ids()?
            .into_iter()
            .map(|id| ListedContainer {
                adoption: shim::adopt(&self.dir(&id)),
                id,
            })
            .collect())
    }

    /// The images of every container on the node (running, exited or being made), read from
    /// what each directory records. A directory without a record and without a shim state
    /// is a start that has not got that far or was cleaned up: it uses no image yet.
    pub fn images_in_use(&self) -> Result<ImagesInUse, ContainerError> {
        let mut out = ImagesInUse::default();
        for id in self.ids()? {
            let dir = self.dir(&id);
            let path = dir.join(IMAGE_FILE);
            match fs::read(&path) {
                Ok(b) => match serde_json::from_slice::<ContainerImage>(&b) {
                    Ok(image) => {
                        out.images.insert(image.id.to_string());
                        out.images.insert(image.name);
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unreadable image record of a container");
                        out.unknown.push(id);
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if shim::state_path(&dir).exists() {
                        out.unknown.push(id);
                    }
                }
                // Removed meanwhile.
                Err(_) if !dir.exists() => {}
                Err(e) => return Err(IoError::at("reading", &path)(e).into()),
            }
        }
        Ok(out)
    }

    /// The IDs of every container directory, sorted; nothing else is read.
    pub fn ids(&self) -> Result<Vec<String>, ContainerError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).map_err(IoError::at("listing", &self.root))? {
            let e = e.map_err(IoError::at("listing", &self.root))?;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_in_use_are_what_container_directories_record() {
        let data = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(data.path()).expect("store");
        let m = ContainerManager::new(
            data.path(),
            store,
            RuntimeSelector::default(),
            &data.path().join("run"),
            Path::new("/proc/self/exe"),
        )
        .expect("manager");
        let id = Digest::of(b"config");
        let now = chrono::Utc::now();
        let image = ImageRecord {
            name: "docker.io/library/busybox:1.36".into(),
            repo_digest: Digest::of(b"index"),
            manifest: Digest::of(b"manifest"),
            config: id.clone(),
            layers: vec![],
            size: 1,
            created: now,
            last_used: now,
        };
        m.record_image("recorded", &image).expect("record");
        assert!(m.record_image("../escape", &image).is_err(), "IDs are checked");
        // Started by a Skiff that did not record images: a shim state, no image record.
        let older = m.dir("older");
        fs::create_dir_all(&older).expect("mkdir");
        fs::write(shim::state_path(&older), b"{}").expect("write");
        // A start that has not got as far as recording anything.
        fs::create_dir_all(m.dir("starting")).expect("mkdir");

        let used = m.images_in_use().expect("images in use");
        assert_eq!(
            used.images,
            HashSet::from([id.to_string(), "docker.io/library/busybox:1.36".to_string()])
        );
        assert_eq!(used.unknown, vec!["older".to_string()]);
    }
}
