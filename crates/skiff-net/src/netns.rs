//! Network namespaces held open by a bind mount, as `ip netns add` does: a pod's namespace
//! outlives every process in it (and the agent), with no pause container holding it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::mount::{mount_bind, unmount, UnmountFlags};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType, UnshareFlags};

use crate::NetError;

/// A network namespace bound at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    path: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.to_path_buf();
    move |source| NetError::Io { op, path, source }
}

impl Netns {
    /// Create a new, empty network namespace held at `dir/name`. Fails if one is there already.
    pub fn create(dir: &Path, name: &str) -> Result<Netns, NetError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(NetError::InvalidName(name.to_string()));
        }
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let path = dir.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create namespace file", &path))?;
        // A fresh thread unshares its network namespace and binds it to the file; the thread
        // then ends, and the mount keeps the namespace alive. No other thread's namespace
        // changes.
        let target = path.clone();
        #[allow(unsafe_code)]
        let bound = std::thread::spawn(move || -> std::io::Result<()> {
            // SAFETY: `unshare(CLONE_NEWNET)` changes only this thread's network namespace;
            // this thread shares no state that depends on it and ends right after the bind.
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
            mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })
        .join()
        .map_err(|_| NetError::Thread)?;
        if let Err(e) = bound {
            let _ = std::fs::remove_file(&path);
            return Err(NetError::Io {
                op: "bind network namespace",
                path,
                source: e,
            });
        }
        Ok(Netns { path })
    }

    /// The namespace (bound or not) at `path`.
    pub(crate) fn at(path: &Path) -> Netns {
        Netns {
            path: path.to_path_buf(),
        }
    }

    /// A namespace that is already bound at `path` (after an agent restart).
    pub fn open(path: &Path) -> Result<Netns, NetError> {
        let ns = Netns {
            path: path.to_path_buf(),
        };
        if !ns.is_bound() {
            return Err(NetError::NotANamespace(path.to_path_buf()));
        }
        Ok(ns)
    }

    /// Whether the path holds a network namespace (a bind mount of an nsfs inode), not just an
    /// empty file left behind.
    pub fn is_bound(&self) -> bool {
        rustix::fs::statfs(&self.path).is_ok_and(|s| s.f_type == 0x6e73_6673)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Release the namespace: unmount and remove its file. The kernel frees it (and its
    /// interfaces) once no process is left in it. Removing one that is gone is not an error.
    pub fn remove(&self) -> Result<(), NetError> {
        match unmount(&self.path, UnmountFlags::DETACH) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {}
            Err(e) => return Err(io_err("unmount namespace", &self.path)(e.into())),
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove namespace file", &self.path)(e)),
        }
    }

    /// Open the namespace (for `setns`, or to hand to a container runtime).
    pub fn file(&self) -> Result<File, NetError> {
        File::open(&self.path).map_err(io_err("open namespace", &self.path))
    }

    /// Run `f` on a fresh thread inside this namespace and return its result. Sockets `f`
    /// creates stay in the namespace after the thread ends.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetError> {
        let file = self.file()?;
        let path = self.path.clone();
        std::thread::spawn(move || -> Result<T, NetError> {
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| io_err("enter namespace", &path)(e.into()))?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetError::Thread)?
    }
}
