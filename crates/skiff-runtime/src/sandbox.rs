//! A pod sandbox without a pause container: the pod's network, IPC and UTS namespaces are
//! created once and held by bind mounts of their `/proc/…/ns` files in the pod's sandbox
//! directory (as `ip netns add` holds a network namespace), so every container of the pod
//! joins them by path ([`crate::bundle::NamespaceMode::Join`]) and they outlive the agent as the
//! containers do. Pod networking (`skiff-net`) configures the network namespace through its
//! path.
//!
//! With its own IPC namespace a pod also gets its own `/dev/shm` (a tmpfs in the sandbox
//! directory), bind-mounted into each container, so POSIX shared memory is shared as System V
//! IPC is.
//!
//! The namespaces are made on a thread of their own, which `unshare`s them (only that thread
//! moves), sets the pod's hostname, bind-mounts its namespace files and exits. The mounts are
//! made in the caller's mount namespace: the host's, for the agent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::bundle::{NamespaceMode, PodContext};
use crate::io_error::IoError;

/// Errors making or removing a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A step failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The hostname is not one (RFC 1123 label, at most 64 bytes).
    #[error("invalid pod hostname {0:?}")]
    Hostname(String),
}

/// Which namespaces a pod gets of its own (the others are the host's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxOptions {
    /// A network namespace (`false` for `hostNetwork: true`).
    pub network: bool,
    /// An IPC namespace (`false` for `hostIPC: true`).
    pub ipc: bool,
    /// A UTS namespace with this hostname (`None` for `hostNetwork: true`, which keeps the
    /// node's).
    pub hostname: Option<String>,
}

/// A pod's held namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSandbox {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// The network namespace file, if the pod has its own.
    pub network: Option<PathBuf>,
    /// The IPC namespace file, if the pod has its own.
    pub ipc: Option<PathBuf>,
    /// The UTS namespace file, if the pod has its own.
    pub uts: Option<PathBuf>,
    /// The pod's `/dev/shm` (a tmpfs), shared like its IPC namespace, if it has its own.
    pub shm: Option<PathBuf>,
}

/// The size of a pod's `/dev/shm` (containerd's default).
pub const SHM_SIZE: &str = "65536k";

const KINDS: [&str; 3] = ["net", "ipc", "uts"];

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with(['-', '.'])
}

impl PodSandbox {
    /// Creates the pod's namespaces in `dir` (created; `net`, `ipc`, `uts` files). Needs root.
    /// On failure nothing is left mounted.
    pub fn create(dir: &Path, opts: &SandboxOptions) -> Result<Self, SandboxError> {
        if let Some(h) = &opts.hostname {
            if !valid_hostname(h) {
                return Err(SandboxError::Hostname(h.clone()));
            }
        }
        fs::create_dir_all(dir).map_err(IoError::at("creating", dir))?;
        let wanted: Vec<&str> = KINDS
            .into_iter()
            .filter(|k| match *k {
                "net" => opts.network,
                "ipc" => opts.ipc,
                _ => opts.hostname.is_some(),
            })
            .collect();
        for k in &wanted {
            let p = dir.join(k);
            fs::write(&p, b"").map_err(IoError::at("creating", &p))?;
        }
        let (dir_owned, wanted_owned, hostname) = (
            dir.to_path_buf(),
            wanted.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            opts.hostname.clone(),
        );
        let made = std::thread::spawn(move || hold_namespaces(&dir_owned, &wanted_owned, hostname.as_deref()))
            .join()
            .unwrap_or_else(|_| {
                Err(SandboxError::Io(IoError::new(
                    "creating namespaces in",
                    dir,
                    io::Error::other("the namespace thread panicked"),
                )))
            });
        let shm = made.and_then(|()| {
            if !opts.ipc {
                return Ok(());
            }
            let shm = dir.join("shm");
            fs::create_dir_all(&shm).map_err(IoError::at("creating", &shm))?;
            let data = std::ffi::CString::new(format!("mode=1777,size={SHM_SIZE}")).expect("no NUL in the options");
            use rustix::mount::MountFlags;
            rustix::mount::mount(
                "shm",
                &shm,
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                data.as_c_str(),
            )
            .map_err(|e| IoError::at("mounting the pod's /dev/shm at", &shm)(e).into())
        });
        if let Err(e) = shm {
            let _ = Self::remove(dir);
            return Err(e);
        }
        Ok(Self::open(dir))
    }

    /// The sandbox in `dir` as it is on disk (after an agent restart).
    pub fn open(dir: &Path) -> Self {
        let held = |k: &str| {
            let p = dir.join(k);
            crate::rootfs::is_mount_point(&p).then_some(p)
        };
        Self {
            dir: dir.to_path_buf(),
            network: held("net"),
            ipc: held("ipc"),
            uts: held("uts"),
            shm: held("shm"),
        }
    }

    /// The mount that gives a container the pod's `/dev/shm` (for
    /// [`crate::bundle::ContainerInput::mounts`]; it replaces the container's own).
    pub fn shm_mount(&self) -> Option<oci_spec::runtime::Mount> {
        self.shm
            .as_ref()
            .and_then(|p| crate::bundle::bind_mount(p, "/dev/shm", false).ok())
    }

    /// Points `pod`'s namespaces at this sandbox's (the host's where it has none).
    pub fn apply(&self, pod: &mut PodContext) {
        let mode = |p: &Option<PathBuf>| match p {
            Some(p) => NamespaceMode::Join(p.clone()),
            None => NamespaceMode::Host,
        };
        pod.network = mode(&self.network);
        pod.ipc = mode(&self.ipc);
        pod.uts = mode(&self.uts);
    }

    /// Unmounts the namespace files (the namespaces end with their last process) and removes
    /// `dir`. Idempotent.
    pub fn remove(dir: &Path) -> Result<(), SandboxError> {
        for k in KINDS.into_iter().chain(["shm"]) {
            let p = dir.join(k);
            if crate::rootfs::is_mount_point(&p) {
                rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH)
                    .map_err(IoError::at("unmounting", &p))?;
            }
        }
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IoError::at("removing", dir)(e).into()),
        }
    }
}

/// Runs on a thread of its own, which it moves into new namespaces.
fn hold_namespaces(dir: &Path, kinds: &[String], hostname: Option<&str>) -> Result<(), SandboxError> {
    use rustix::thread::UnshareFlags;
    let mut flags = UnshareFlags::empty();
    for k in kinds {
        flags |= match k.as_str() {
            "net" => UnshareFlags::NEWNET,
            "ipc" => UnshareFlags::NEWIPC,
            _ => UnshareFlags::NEWUTS,
        };
    }
    // SAFETY: `unshare_unsafe` is unsafe only for `UnshareFlags::FILES` (a thread with its own
    // descriptor table could see descriptors of others go stale). Only NEWNET, NEWIPC and
    // NEWUTS are passed: they move this thread alone into new namespaces, and the thread ends
    // right after.
    #[allow(unsafe_code)]
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(IoError::at("unsharing namespaces for", dir))?;
    if let Some(h) = hostname {
        rustix::system::sethostname(h.as_bytes()).map_err(IoError::at("setting the hostname of", dir))?;
    }
    for k in kinds {
        let source = PathBuf::from(format!("/proc/thread-self/ns/{k}"));
        let target = dir.join(k);
        rustix::mount::mount_bind(&source, &target).map_err(IoError::at("holding a namespace at", &target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked() {
        for ok in ["web-0", "a", "pod.example", &"x".repeat(64)] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", &"x".repeat(65), "ü"] {
            assert!(!valid_hostname(bad), "{bad}");
        }
        let dir = tempfile::tempdir().expect("dir");
        let opts = SandboxOptions {
            network: true,
            ipc: true,
            hostname: Some("bad host".into()),
        };
        assert!(matches!(
            PodSandbox::create(&dir.path().join("s"), &opts),
            Err(SandboxError::Hostname(_))
        ));
        assert!(!dir.path().join("s").exists(), "nothing made for a refused sandbox");
    }

    #[test]
    fn apply_points_the_pod_at_held_or_host_namespaces() {
        let s = PodSandbox {
            dir: "/s".into(),
            network: Some("/s/net".into()),
            ipc: None,
            uts: Some("/s/uts".into()),
            shm: Some("/s/shm".into()),
        };
        let mut pod = PodContext::default();
        s.apply(&mut pod);
        assert_eq!(pod.network, NamespaceMode::Join("/s/net".into()));
        assert_eq!(pod.ipc, NamespaceMode::Host);
        assert_eq!(pod.uts, NamespaceMode::Join("/s/uts".into()));
        let shm = s.shm_mount().expect("shm mount");
        assert_eq!(shm.destination(), Path::new("/dev/shm"));
        assert_eq!(shm.source().as_deref(), Some(Path::new("/s/shm")));
        let empty = PodSandbox::open(Path::new("/nonexistent"));
        assert!(empty.shm_mount().is_none());
        assert_eq!(
            (empty.network, empty.ipc, empty.uts, empty.shm),
            (None, None, None, None)
        );
        PodSandbox::remove(Path::new("/nonexistent/sandbox")).expect("idempotent");
    }
}
