//! Applying a layer (a tar stream, plain, gzip or zstd) onto a directory, with OCI whiteouts.
//!
//! Every path is resolved inside the target directory: `..` in an entry is refused, and
//! symlinks met on the way are followed as if the target were `/` (an absolute link points at
//! the target's root, never the host's), so no entry can write outside the target.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::content::Digest;
use crate::io_error::IoError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What to do with whiteout entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Delete what the whiteout hides from the directory (layers applied in order onto one
    /// directory: the copy fallback).
    Apply,
    /// Convert to overlayfs' format in a per-layer directory: a 0/0 character device for
    /// `.wh.<name>`, the `trusted.overlay.opaque=y` xattr for `.wh..wh..opq`. Needs root.
    Overlay,
}

/// How to unpack.
#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Whiteout handling.
    pub whiteouts: WhiteoutMode,
    /// Set owners from the archive and create device nodes (needs root).
    pub privileged: bool,
}

impl UnpackOptions {
    /// Options for this process: privileged when running as root.
    pub fn for_current_user(whiteouts: WhiteoutMode) -> Self {
        Self {
            whiteouts,
            privileged: rustix::process::geteuid().is_root(),
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry tried to leave the target directory.
    #[error("layer entry {entry:?} escapes the target directory; refusing the layer")]
    PathTraversal {
        /// The entry's path (or link target) as written in the archive.
        entry: String,
    },
    /// The uncompressed layer did not hash to its diff ID.
    #[error("layer content hashed to {actual}, expected diff ID {expected}")]
    DiffIdMismatch {
        /// The diff ID from the image config.
        expected: Digest,
        /// What the uncompressed bytes hash to.
        actual: Digest,
    },
    /// Reading the archive failed (corrupt data, bad compression).
    #[error("reading layer archive: {source}")]
    Archive {
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on an entry failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps `r` in the decompressor its first bytes call for (gzip, zstd, or none), as containerd
/// does rather than trusting media types.
pub fn decompress<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Box::new(zstd::stream::read::Decoder::with_buffer(r)?))
    } else {
        Ok(Box::new(r))
    }
}

/// Applies the (possibly compressed) layer `r` onto `root` and returns its diff ID (the digest
/// of the uncompressed tar). When `expected_diff_id` is given, a mismatch is an error (the
/// directory then holds a partial layer and must be discarded by the caller).
pub fn apply_layer(
    r: impl Read,
    root: &Path,
    opts: UnpackOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<Digest, UnpackError> {
    apply_layer_over(r, root, &[], opts, expected_diff_id)
}

/// Like [`apply_layer`], for a layer unpacked into its own directory above `lowers` (the
/// snapshots of the layers below, top first), as overlayfs will stack them: paths resolve
/// through the merged view, so a symlink or directory of a lower layer is followed or its
/// metadata copied up, and a hard link to a lower layer's file becomes a copy.
pub fn apply_layer_over(
    r: impl Read,
    root: &Path,
    lowers: &[PathBuf],
    opts: UnpackOptions,
    expected_diff_id: Option<&Digest>,
) -> Result<Digest, UnpackError> {
    let plain = decompress(r).map_err(|source| UnpackError::Archive { source })?;
    let mut hashing = HashingReader {
        inner: plain,
        hasher: Sha256::new(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let mut applier = Applier {
            root,
            lowers,
            opts,
            this_layer: HashSet::new(),
            dir_times: Vec::new(),
        };
        let entries = archive.entries().map_err(|source| UnpackError::Archive { source })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| UnpackError::Archive { source })?;
            applier.entry(&mut entry)?;
        }
        // Directory times last: creating their children changed them.
        for (path, mtime) in applier.dir_times.iter().rev() {
            if let Ok(f) = fs::File::open(path) {
                let _ = f.set_modified(*mtime);
            }
        }
    }
    // The tar's end-of-archive padding belongs to the diff ID too.
    io::copy(&mut hashing, &mut io::sink()).map_err(|source| UnpackError::Archive { source })?;
    let actual = Digest::from_hasher(hashing.hasher);
    if let Some(expected) = expected_diff_id {
        if *expected != actual {
            return Err(UnpackError::DiffIdMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(actual)
}

/// An entry path split into normal components; `..` anywhere is refused.
fn clean(path: &Path, shown: &[u8]) -> Result<Vec<OsString>, UnpackError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p.to_os_string()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::PathTraversal {
                    entry: String::from_utf8_lossy(shown).into_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// What a lower layer has at a path.
enum LowerEntry {
    Dir(fs::Metadata),
    Symlink(PathBuf),
    File(PathBuf),
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf[..]), Ok(1) if buf[0] == b'y')
}

/// Looks `rel` up in the lower layers (top first) as overlayfs would: the first layer that has
/// it wins, an overlay whiteout hides it, an opaque directory (in `root`, the layer being
/// unpacked, or a lower one) hides what is below it. Only real directories are walked in each
/// layer, so a lower layer's symlinks never lead to the host's files.
fn lookup_lower(root: &Path, lowers: &[PathBuf], rel: &[OsString]) -> Option<LowerEntry> {
    if lowers.is_empty() {
        return None;
    }
    let mut p = root.to_path_buf();
    for c in &rel[..rel.len().saturating_sub(1)] {
        p.push(c);
        if is_opaque(&p) {
            return None;
        }
    }
    'layers: for l in lowers {
        let mut p = l.clone();
        let mut opaque = false;
        for (i, c) in rel.iter().enumerate() {
            p.push(c);
            let Ok(m) = fs::symlink_metadata(&p) else {
                if opaque {
                    return None;
                }
                continue 'layers;
            };
            let last = i + 1 == rel.len();
            if m.file_type().is_char_device() && m.rdev() == 0 {
                return None; // whited out here
            }
            if !last {
                if m.is_dir() {
                    opaque |= is_opaque(&p);
                    continue;
                }
                // A symlink or file on the way: this layer does not have `rel` as a real path.
                if opaque {
                    return None;
                }
                continue 'layers;
            }
            return Some(if m.file_type().is_symlink() {
                LowerEntry::Symlink(fs::read_link(&p).ok()?)
            } else if m.is_dir() {
                LowerEntry::Dir(m)
            } else {
                LowerEntry::File(p)
            });
        }
    }
    None
}

/// Resolves the directory `rel` inside `root`, following symlinks as if `root` were `/` (and,
/// through `lowers`, the layers below), creating missing directories. Returns a path whose
/// every component is a real directory inside `root`.
fn resolve_dir(root: &Path, lowers: &[PathBuf], rel: &[OsString], privileged: bool) -> Result<PathBuf, UnpackError> {
    let mut todo: Vec<OsString> = rel.iter().rev().cloned().collect();
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    let mut follow = |p: &Path, target: PathBuf, cur: &mut Vec<OsString>, todo: &mut Vec<OsString>| {
        hops += 1;
        if hops > 40 {
            return Err(UnpackError::Io(IoError::new(
                "resolving",
                p,
                io::Error::other("too many levels of symbolic links"),
            )));
        }
        if target.is_absolute() {
            cur.clear();
        }
        for tc in target.components().rev() {
            match tc {
                Component::Normal(x) => todo.push(x.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
        Ok(())
    };
    while let Some(c) = todo.pop() {
        if c == OsStr::new(".") || c.is_empty() {
            continue;
        }
        if c == OsStr::new("..") {
            // Only symlink targets bring `..` here; it stops at the root.
            cur.pop();
            continue;
        }
        let mut p = root.to_path_buf();
        p.extend(&cur);
        p.push(&c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p).map_err(IoError::at("reading link", &p))?;
                follow(&p, target, &mut cur, &mut todo)?;
            }
            Ok(m) if m.is_dir() => cur.push(c),
            Ok(_) => {
                return Err(UnpackError::Io(IoError::new(
                    "entering",
                    p,
                    io::Error::other("not a directory"),
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut rel_c = cur.clone();
                rel_c.push(c.clone());
                match lookup_lower(root, lowers, &rel_c) {
                    Some(LowerEntry::Symlink(target)) => follow(&p, target, &mut cur, &mut todo)?,
                    Some(LowerEntry::File(_)) => {
                        return Err(UnpackError::Io(IoError::new(
                            "entering",
                            p,
                            io::Error::other("not a directory (in a lower layer)"),
                        )))
                    }
                    Some(LowerEntry::Dir(m)) => {
                        // Copy the directory up with its metadata: in overlayfs the top
                        // directory's mode and owner are the ones seen.
                        fs::create_dir(&p).map_err(IoError::at("creating directory", &p))?;
                        if privileged {
                            std::os::unix::fs::lchown(&p, Some(m.uid()), Some(m.gid()))
                                .map_err(IoError::at("changing owner of", &p))?;
                        }
                        let mode = m.permissions().mode() & 0o7777;
                        let mode = if privileged { mode } else { mode | 0o700 };
                        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                            .map_err(IoError::at("changing mode of", &p))?;
                        cur.push(c);
                    }
                    None => {
                        fs::create_dir(&p).map_err(IoError::at("creating directory", &p))?;
                        cur.push(c);
                    }
                }
            }
            Err(e) => return Err(IoError::at("inspecting", &p)(e).into()),
        }
    }
    let mut p = root.to_path_buf();
    p.extend(&cur);
    Ok(p)
}

/// Copies a lower layer's regular file to `dst` with its mode and (privileged) owner.
fn copy_up(src: &Path, dst: &Path, privileged: bool) -> Result<(), UnpackError> {
    let m = fs::symlink_metadata(src).map_err(IoError::at("inspecting", src))?;
    if !m.is_file() {
        return Err(UnpackError::Io(IoError::new(
            "copying up",
            src,
            io::Error::other("hard link target is not a regular file"),
        )));
    }
    fs::copy(src, dst).map_err(IoError::at("copying up", dst))?;
    if privileged {
        std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(IoError::at("changing owner of", dst))?;
    }
    fs::set_permissions(dst, fs::Permissions::from_mode(m.permissions().mode() & 0o7777))
        .map_err(IoError::at("changing mode of", dst))?;
    Ok(())
}

/// The target a link entry names (`what` it is: "symlink", "hard link"; `dst` where it goes);
/// an archive error when it names none.
fn link_target<'e, R: Read>(
    entry: &'e tar::Entry<'_, R>,
    what: &str,
    dst: &Path,
) -> Result<Cow<'e, Path>, UnpackError> {
    entry
        .link_name()
        .map_err(|source| UnpackError::Archive { source })?
        .ok_or_else(|| UnpackError::Archive {
            source: io::Error::other(format!("{what} {} has no target", dst.display())),
        })
}

/// Removes `p` whatever it is, without following a symlink; absent is fine.
fn remove_any(p: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| IoError::at("removing", p)(e).into()),
        Ok(_) => fs::remove_file(p).map_err(|e| IoError::at("removing", p)(e).into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IoError::at("inspecting", p)(e).into()),
    }
}

struct Applier<'a> {
    root: &'a Path,
    lowers: &'a [PathBuf],
    opts: UnpackOptions,
    /// Paths this layer wrote (and their ancestors): an opaque whiteout keeps them.
    this_layer: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, SystemTime)>,
}

impl Applier<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) || kind == tar::EntryType::GNULongLink
        {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let path = entry.path().map_err(|source| UnpackError::Archive { source })?;
        let comps = clean(&path, &raw)?;
        let Some((name, parent_rel)) = comps.split_last() else {
            // The root itself (`./`): its mode is the container's `/`.
            if kind.is_dir() {
                let header = entry.header().clone();
                let mode = header.mode().unwrap_or(0o755) & 0o7777;
                return self.metadata(entry, &header, self.root, kind, mode);
            }
            return Ok(());
        };
        let parent = resolve_dir(self.root, self.lowers, parent_rel, self.opts.privileged)?;
        let name_str = name.to_string_lossy();

        if name_str == OPAQUE_WHITEOUT {
            return self.opaque(&parent);
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::PathTraversal {
                    entry: String::from_utf8_lossy(&raw).into_owned(),
                });
            }
            return self.whiteout(&parent.join(hidden));
        }

        let dst = parent.join(name);
        self.mark(&dst);
        let existing = fs::symlink_metadata(&dst).ok();
        if let Some(m) = &existing {
            if !(kind.is_dir() && m.is_dir()) {
                remove_any(&dst)?;
            }
        }
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::create_dir(&dst).map_err(IoError::at("creating directory", &dst))?;
                }
            }
            tar::EntryType::Symlink => {
                let target = link_target(entry, "symlink", &dst)?;
                // Stored verbatim: it is read inside the container, where `/` is the rootfs.
                symlink(&target, &dst).map_err(IoError::at("creating symlink", &dst))?;
            }
            tar::EntryType::Link => {
                let raw_target = entry.link_name_bytes().map(|b| b.into_owned()).unwrap_or_default();
                let target = link_target(entry, "hard link", &dst)?;
                let tcomps = clean(&target, &raw_target)?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(UnpackError::PathTraversal {
                        entry: String::from_utf8_lossy(&raw_target).into_owned(),
                    });
                };
                let src = resolve_dir(self.root, self.lowers, tparent, self.opts.privileged)?.join(tname);
                if fs::symlink_metadata(&src).is_err() {
                    // The target is in a lower layer: copy it up (overlayfs would too).
                    let rel: Vec<OsString> = src
                        .strip_prefix(self.root)
                        .map(|r| r.iter().map(|c| c.to_os_string()).collect())
                        .unwrap_or_default();
                    if let Some(LowerEntry::File(lower)) = lookup_lower(self.root, self.lowers, &rel) {
                        copy_up(&lower, &src, self.opts.privileged)?;
                        self.mark(&src);
                    }
                }
                fs::hard_link(&src, &dst).map_err(IoError::at("creating hard link", &dst))?;
                // A hard link shares the target's inode and so its metadata.
                return Ok(());
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    tar::EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                if ft != rustix::fs::FileType::Fifo && !self.opts.privileged {
                    tracing::debug!(path = %dst.display(), "skipping device node (not root)");
                    return Ok(());
                }
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                rustix::fs::mknodat(rustix::fs::CWD, &dst, ft, rustix::fs::Mode::from_raw_mode(mode), dev)
                    .map_err(IoError::at("creating device node", &dst))?;
            }
            _ => {
                // Regular files (and, as POSIX asks, unknown types).
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dst)
                    .map_err(IoError::at("creating file", &dst))?;
                io::copy(entry, &mut f).map_err(|source| UnpackError::Archive { source })?;
                if let Ok(mtime) = header.mtime() {
                    let _ = f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
                }
            }
        }
        self.metadata(entry, &header, &dst, kind, mode)
    }

    fn metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        header: &tar::Header,
        dst: &Path,
        kind: tar::EntryType,
        mode: u32,
    ) -> Result<(), UnpackError> {
        if self.opts.privileged {
            let uid = header.uid().unwrap_or(0) as u32;
            let gid = header.gid().unwrap_or(0) as u32;
            std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).map_err(IoError::at("changing owner of", dst))?;
        }
        if kind != tar::EntryType::Symlink {
            // Unprivileged, keep directories writable for the rest of the layer.
            let mode = if kind.is_dir() && !self.opts.privileged {
                mode | 0o700
            } else {
                mode
            };
            fs::set_permissions(dst, fs::Permissions::from_mode(mode)).map_err(IoError::at("changing mode of", dst))?;
        }
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
                    continue;
                };
                if let Err(e) = rustix::fs::lsetxattr(dst, name, ext.value_bytes(), rustix::fs::XattrFlags::empty()) {
                    if self.opts.privileged {
                        return Err(IoError::at("setting xattr on", dst)(e).into());
                    }
                    tracing::debug!(path = %dst.display(), xattr = name, error = %e, "xattr not set (not root)");
                }
            }
        }
        if kind.is_dir() {
            if let Ok(mtime) = header.mtime() {
                self.dir_times
                    .push((dst.to_path_buf(), SystemTime::UNIX_EPOCH + Duration::from_secs(mtime)));
            }
        }
        Ok(())
    }

    fn mark(&mut self, p: &Path) {
        let mut cur = Some(p);
        while let Some(c) = cur {
            if c == self.root || !self.this_layer.insert(c.to_path_buf()) {
                break;
            }
            cur = c.parent();
        }
    }

    fn whiteout(&mut self, hidden: &Path) -> Result<(), UnpackError> {
        match self.opts.whiteouts {
            WhiteoutMode::Apply => remove_any(hidden),
            WhiteoutMode::Overlay => {
                remove_any(hidden)?;
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    hidden,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(IoError::at("creating overlay whiteout (needs root)", hidden))?;
                self.mark(hidden);
                Ok(())
            }
        }
    }

    fn opaque(&mut self, dir: &Path) -> Result<(), UnpackError> {
        self.mark(dir);
        match self.opts.whiteouts {
            WhiteoutMode::Apply => self.remove_lower(dir),
            WhiteoutMode::Overlay => {
                rustix::fs::lsetxattr(dir, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| IoError::at("marking overlay-opaque (needs root)", dir)(e).into())
            }
        }
    }

    /// Removes everything under `dir` that this layer did not write.
    fn remove_lower(&self, dir: &Path) -> Result<(), UnpackError> {
        for e in fs::read_dir(dir).map_err(IoError::at("listing", dir))? {
            let e = e.map_err(IoError::at("listing", dir))?;
            let p = e.path();
            if !self.this_layer.contains(&p) {
                remove_any(&p)?;
            } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                self.remove_lower(&p)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn tar_of(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        b.into_inner().expect("tar")
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).expect("append");
    }

    fn raw_entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, link: Option<&str>) {
        // Write names with `set_path`-bypassing bytes so `..` reaches the archive.
        let mut h = tar::Header::new_old();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o644);
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            let ln = &mut h.as_old_mut().linkname;
            ln[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, io::empty()).expect("append");
    }

    fn apply(root: &Path, t: &[u8]) -> Result<Digest, UnpackError> {
        apply_layer(
            t,
            root,
            UnpackOptions {
                whiteouts: WhiteoutMode::Apply,
                privileged: false,
            },
            None,
        )
    }

    #[test]
    fn whiteouts_delete_and_opaque_dirs_hide_lower_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        apply(
            root,
            &tar_of(|b| {
                file(b, "etc/keep", b"k", 0o644);
                file(b, "etc/gone", b"g", 0o644);
                file(b, "opt/a/old", b"o", 0o644);
                file(b, "opt/b", b"b", 0o644);
            }),
        )
        .expect("layer 1");
        apply(
            root,
            &tar_of(|b| {
                file(b, "etc/.wh.gone", b"", 0o644);
                file(b, "opt/a/new", b"n", 0o644);
                file(b, "opt/.wh..wh..opq", b"", 0o644);
            }),
        )
        .expect("layer 2");
        assert!(root.join("etc/keep").exists());
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("etc/.wh.gone").exists());
        assert!(root.join("opt/a/new").exists(), "written by the opaque layer itself");
        assert!(
            !root.join("opt/a/old").exists(),
            "lower content under an opaque dir is hidden"
        );
        assert!(!root.join("opt/b").exists());
    }

    #[test]
    fn modes_symlinks_and_hardlinks_survive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let t = tar_of(|b| {
            file(b, "bin/tool", b"#!/bin/sh\n", 0o4755);
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "bin/sh", "tool").expect("symlink");
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "bin/tool2", "bin/tool").expect("hardlink");
        });
        let diff_id = apply(root, &t).expect("apply");
        assert_eq!(diff_id, Digest::of(&t), "diff ID is the digest of the uncompressed tar");
        let m = fs::metadata(root.join("bin/tool")).expect("tool");
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(fs::read_link(root.join("bin/sh")).expect("link"), Path::new("tool"));
        let m2 = fs::metadata(root.join("bin/tool2")).expect("tool2");
        assert_eq!(m.ino(), m2.ino(), "hard link shares the inode");
    }

    #[test]
    fn compressed_layers_and_diff_id_check() {
        let t = tar_of(|b| file(b, "x", b"data", 0o644));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, &t).expect("gz");
        let gz = gz.finish().expect("gz");
        let zst = zstd::encode_all(&t[..], 3).expect("zstd");
        for data in [&t, &gz, &zst] {
            let dir = tempfile::tempdir().expect("tempdir");
            let opts = UnpackOptions {
                whiteouts: WhiteoutMode::Apply,
                privileged: false,
            };
            let d = apply_layer(&data[..], dir.path(), opts, Some(&Digest::of(&t))).expect("apply");
            assert_eq!(d, Digest::of(&t));
            assert_eq!(fs::read(dir.path().join("x")).expect("x"), b"data");
            let err = apply_layer(&data[..], dir.path(), opts, Some(&Digest::of(b"nope"))).expect_err("mismatch");
            assert!(matches!(err, UnpackError::DiffIdMismatch { .. }));
        }
    }

    #[test]
    fn traversal_is_refused_and_nothing_lands_outside() {
        let outer = tempfile::tempdir().expect("tempdir");
        let root = outer.path().join("root");
        fs::create_dir(&root).expect("root");
        let outside = outer.path().join("outside");
        fs::create_dir(&outside).expect("outside");

        // `../` in a file name.
        let t = tar_of(|b| raw_entry(b, tar::EntryType::Regular, "../outside/pwned", None));
        let err = apply(&root, &t).expect_err("dotdot");
        assert!(matches!(err, UnpackError::PathTraversal { .. }), "{err}");

        // A symlink to an absolute host path, then a write through it: lands inside the root.
        let t = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "escape", outside.to_str().expect("utf8"))
                .expect("symlink");
            file(b, "escape/pwned", b"x", 0o644);
        });
        apply(&root, &t).expect("absolute symlinks resolve inside the root");
        let inside = root.join(outside.strip_prefix("/").expect("absolute")).join("pwned");
        assert!(inside.exists(), "written at {}", inside.display());

        // A relative symlink climbing out, then a write through it.
        let t = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "up", "../../../../../../..").expect("symlink");
            raw_entry(b, tar::EntryType::Regular, "up/outside/pwned2", None);
        });
        apply(&root, &t).expect("climbing symlinks stop at the root");
        assert!(root.join("outside/pwned2").exists());

        // A hard link to a file outside.
        fs::write(outside.join("secret"), b"s").expect("secret");
        let t = tar_of(|b| raw_entry(b, tar::EntryType::Link, "stolen", Some("../outside/secret")));
        let err = apply(&root, &t).expect_err("hardlink out");
        assert!(matches!(err, UnpackError::PathTraversal { .. }), "{err}");

        // A whiteout aimed at the parent.
        let t = tar_of(|b| raw_entry(b, tar::EntryType::Regular, "../.wh.outside", None));
        assert!(apply(&root, &t).is_err());

        let names: Vec<_> = fs::read_dir(&outside)
            .expect("outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![OsString::from("secret")],
            "nothing written outside the root"
        );
    }
}
