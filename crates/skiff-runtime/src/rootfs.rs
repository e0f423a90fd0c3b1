//! A container's root filesystem from the image store: an overlayfs mount of the image's
//! snapshots (read-only lowerdirs, shared by every container of the image) with a writable
//! upper and work dir of the container's own, or, where overlayfs cannot be mounted, a copy of
//! the image. The mount lives in the host's mount namespace, so it outlives the agent like the
//! container does; [`remove`] undoes it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::io_error::IoError;
use crate::store::{ImageRecord, ImageStore, StoreError};

/// How a root filesystem was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootfsKind {
    /// overlayfs over the image's snapshots.
    Overlay,
    /// A copy of the image.
    Copy,
}

/// Which ways to make a root filesystem are allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// overlayfs, falling back to a copy where it cannot be mounted.
    #[default]
    OverlayOrCopy,
    /// overlayfs only.
    Overlay,
    /// Always a copy.
    Copy,
}

/// A prepared root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rootfs {
    /// The directory to give the runtime (`<dir>/rootfs`).
    pub path: PathBuf,
    /// How it was made.
    pub kind: RootfsKind,
}

/// Errors preparing or removing a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The image store failed (unpacking, reading layers).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// overlayfs could not be mounted (and no fallback was allowed).
    #[error("mounting overlayfs at {target}: {source}")]
    Mount {
        /// The mount point.
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The lowerdir list does not fit in overlayfs' mount options or has a path it cannot
    /// express.
    #[error("cannot express the image's {layers} layers as overlayfs options: {reason}")]
    Options {
        /// How many layers.
        layers: usize,
        /// Why.
        reason: String,
    },
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// overlayfs' mount data for these lowerdirs (top first), upper and work dir.
pub fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, RootfsError> {
    let bad = |reason: String| RootfsError::Options {
        layers: lowers.len(),
        reason,
    };
    if lowers.is_empty() {
        return Err(bad("an image without layers".into()));
    }
    let mut parts = Vec::new();
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_str().ok_or_else(|| bad(format!("{} is not UTF-8", p.display())))?;
        if s.contains([',', ':', '\\']) {
            return Err(bad(format!("{s} contains a character overlayfs options cannot carry")));
        }
        parts.push(s);
    }
    let (dirs, uw) = parts.split_at(lowers.len());
    let data = format!("lowerdir={},upperdir={},workdir={}", dirs.join(":"), uw[0], uw[1]);
    // The kernel copies mount data into one page.
    if data.len() >= 4096 {
        return Err(bad(format!("{} bytes of options, more than a page", data.len())));
    }
    Ok(data)
}

/// Makes `<dir>/rootfs` for `image`: overlayfs over its snapshots with `<dir>/upper` and
/// `<dir>/work`, or a copy in `<dir>/rootfs`, as `mode` allows. Needs root (mount, and
/// snapshots of layers with whiteouts).
pub fn prepare(store: &ImageStore, image: &ImageRecord, dir: &Path, mode: RootfsMode) -> Result<Rootfs, RootfsError> {
    let target = dir.join("rootfs");
    fs::create_dir_all(&target).map_err(IoError::at("creating", &target))?;
    if mode != RootfsMode::Copy {
        match mount_overlay(store, image, dir, &target) {
            Ok(()) => {
                return Ok(Rootfs {
                    path: target,
                    kind: RootfsKind::Overlay,
                })
            }
            Err(e) if mode == RootfsMode::OverlayOrCopy && !matches!(e, RootfsError::Store(_)) => {
                tracing::warn!(error = %e, image = %image.name, "overlayfs unavailable; copying the image");
            }
            Err(e) => return Err(e),
        }
    }
    store.materialize_rootfs(image, &target)?;
    Ok(Rootfs {
        path: target,
        kind: RootfsKind::Copy,
    })
}

fn mount_overlay(store: &ImageStore, image: &ImageRecord, dir: &Path, target: &Path) -> Result<(), RootfsError> {
    let lowers = store.overlay_lowerdirs(image)?;
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work] {
        fs::create_dir_all(d).map_err(IoError::at("creating", d))?;
    }
    let data = overlay_options(&lowers, &upper, &work)?;
    let data = std::ffi::CString::new(data).map_err(|e| RootfsError::Options {
        layers: lowers.len(),
        reason: e.to_string(),
    })?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| RootfsError::Mount {
        target: target.to_path_buf(),
        source: e.into(),
    })
}

/// Whether `path` is a mount point (its device differs from its parent's, or it is listed in
/// `/proc/self/mountinfo`).
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == canon)
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d[0] <= b'3' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `<dir>/rootfs` if mounted and removes the container's root filesystem
/// directories (`rootfs`, `upper`, `work`). Idempotent.
pub fn remove(dir: &Path) -> Result<(), RootfsError> {
    let target = dir.join("rootfs");
    if is_mount_point(&target) {
        rustix::mount::unmount(&target, rustix::mount::UnmountFlags::DETACH)
            .map_err(IoError::at("unmounting", &target))?;
    }
    for d in ["rootfs", "upper", "work"] {
        let p = dir.join(d);
        match fs::remove_dir_all(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(IoError::at("removing", &p)(e).into()),
        }
    }
    Ok(())
}

/// The image's `/etc/passwd` and `/etc/group` (for [`crate::bundle::ContainerInput`]), read
/// from a prepared root filesystem without following links out of it.
pub fn user_files(rootfs: &Path) -> (Option<String>, Option<String>) {
    let read = |rel: &str| -> Option<String> {
        let mut p = rootfs.to_path_buf();
        for part in rel.split('/') {
            p.push(part);
            if fs::symlink_metadata(&p).ok()?.file_type().is_symlink() {
                return None;
            }
        }
        fs::read_to_string(p).ok()
    };
    (read("etc/passwd"), read("etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_are_built_and_checked() {
        let lowers = vec![PathBuf::from("/s/2"), PathBuf::from("/s/1")];
        assert_eq!(
            overlay_options(&lowers, Path::new("/c/upper"), Path::new("/c/work")).expect("options"),
            "lowerdir=/s/2:/s/1,upperdir=/c/upper,workdir=/c/work"
        );
        assert!(matches!(
            overlay_options(&[], Path::new("/u"), Path::new("/w")),
            Err(RootfsError::Options { .. })
        ));
        assert!(matches!(
            overlay_options(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w")),
            Err(RootfsError::Options { .. })
        ));
        assert!(matches!(
            overlay_options(&[PathBuf::from("/a")], Path::new("/u,x"), Path::new("/w")),
            Err(RootfsError::Options { .. })
        ));
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/var/lib/skiff/images/snapshots/{i:064}")))
            .collect();
        assert!(matches!(
            overlay_options(&many, Path::new("/u"), Path::new("/w")),
            Err(RootfsError::Options { .. })
        ));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
        assert!(is_mount_point(Path::new("/proc")));
        assert!(!is_mount_point(Path::new("/nonexistent-path")));
    }

    #[test]
    fn user_files_do_not_follow_links() {
        let dir = tempfile::tempdir().expect("dir");
        let etc = dir.path().join("etc");
        fs::create_dir_all(&etc).expect("mkdir");
        fs::write(etc.join("passwd"), "root:x:0:0::/:/bin/sh\n").expect("write");
        std::os::unix::fs::symlink("/etc/group", etc.join("group")).expect("symlink");
        let (p, g) = user_files(dir.path());
        assert!(p.is_some_and(|p| p.starts_with("root:")));
        assert_eq!(g, None);
        assert_eq!(user_files(&dir.path().join("missing")), (None, None));
    }

    #[test]
    fn remove_is_idempotent() {
        let dir = tempfile::tempdir().expect("dir");
        fs::create_dir_all(dir.path().join("rootfs/bin")).expect("mkdir");
        remove(dir.path()).expect("remove");
        assert!(!dir.path().join("rootfs").exists());
        remove(dir.path()).expect("again");
    }
}
