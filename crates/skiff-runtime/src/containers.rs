//! The node's containers, as the agent uses them: [`ContainerManager`] ties the pieces
//! together — a root filesystem from the image store ([`crate::rootfs`]), a bundle from the
//! Kubernetes container ([`crate::bundle`]), a shim that runs it ([`crate::shim`]), and the OCI
//! runtime for signals and removal ([`crate::oci`]) — with one directory per container under
//! `<data-dir>/containers/<id>`. Synchronous: the agent calls it from blocking tasks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use oci_spec::runtime::Mount;

use crate::bundle::{self, BundleError, ContainerInput, PodContext};
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
