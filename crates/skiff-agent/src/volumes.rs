//! A pod's volumes on the node, as host directories the containers bind-mount: emptyDir (a
//! tmpfs for `medium: Memory`), hostPath, configMap, secret (on a tmpfs, never on disk),
//! downwardAPI, projected (of those and of service-account tokens, see [`crate::tokens`]), and
//! persistentVolumeClaim for the built-in local-path provisioner's volumes.
//!
//! The files of configMap, secret, downwardAPI and projected volumes are written as the
//! kubelet's atomic writer does: into a fresh `..<timestamp>` directory that the `..data`
//! symlink is then switched to, with each top-level name a symlink into `..data`. A reader
//! sees the old set of files or the new one, never a mix (a rotated token with the CA and
//! namespace it came with).

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::api::Api;
use kube::{Client, ResourceExt};

/// Files a configMap, secret or downwardAPI source puts in a volume: (relative path, bytes, mode).
type Files = Vec<(String, Vec<u8>, u32)>;

fn safe_rel(p: &str) -> Result<(), String> {
    // `..` at the start of a name is the atomic writer's (`..data`).
    if p.is_empty() || p.starts_with('/') || p.starts_with("..") || p.split('/').any(|s| s == "..") {
        Err(format!("volume item path {p:?} must be a relative path without '..'"))
    } else {
        Ok(())
    }
}

fn pick(
    data: HashMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    what: &str,
) -> Result<Files, String> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, mode)).collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                safe_rel(&i.path)?;
                let v = data
                    .get(&i.key)
                    .cloned()
                    .ok_or_else(|| format!("{what} has no key {:?}", i.key))?;
                Ok((i.path.clone(), v, i.mode.map_or(mode, |m| m as u32)))
            })
            .collect(),
    }
}

/// `kind` `name` from the API: `Ok(None)` when it does not exist.
pub(crate) async fn fetch<K>(client: &Client, ns: &str, kind: &str, name: &str) -> Result<Option<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| format!("{kind} {name:?}: {e}"))
}

/// The files of a config map or secret source (`data` given by `bytes_of`).
async fn source_files<K>(
    client: &Client,
    ns: &str,
    (kind, name): (&str, &str),
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
    mode: u32,
    bytes_of: impl FnOnce(K) -> HashMap<String, Vec<u8>>,
) -> Result<Files, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match fetch::<K>(client, ns, kind, name).await? {
        Some(obj) => pick(bytes_of(obj), items, mode, &format!("{kind} {name:?}")),
        None if optional => Ok(Vec::new()),
        None => Err(format!("{kind} {name:?} not found")),
    }
}

/// A config map's keys and bytes (`data` and `binaryData`).
fn config_map_data(cm: ConfigMap) -> HashMap<String, Vec<u8>> {
    let mut data: HashMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    data.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
    data
}

/// A secret's keys and bytes.
fn secret_data(s: Secret) -> HashMap<String, Vec<u8>> {
    s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], mode: u32) -> Result<Files, String> {
    let node_ip: IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.host_ip.as_deref())
        .and_then(|i| i.parse().ok())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|i| i.parse().ok());
    items
        .iter()
        .map(|i| {
            safe_rel(&i.path)?;
            let value = match (&i.field_ref, &i.resource_field_ref) {
                (Some(f), _) => match f.field_path.as_str() {
                    "metadata.labels" => kv_lines(pod.labels()),
                    "metadata.annotations" => kv_lines(pod.annotations()),
                    p => crate::env::field_value(pod, p, node_ip, pod_ip)?,
                },
                (None, Some(r)) => {
                    return Err(format!(
                        "downwardAPI resourceFieldRef {:?} is not supported yet",
                        r.resource
                    ))
                }
                (None, None) => return Err(format!("downwardAPI item {:?} names no field", i.path)),
            };
            Ok((i.path.clone(), value.into_bytes(), i.mode.map_or(mode, |m| m as u32)))
        })
        .collect()
}

fn kv_lines(m: &std::collections::BTreeMap<String, String>) -> String {
    m.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

const DATA_LINK: &str = "..data";
const DATA_TMP_LINK: &str = "..data_tmp";

/// Whether the directory `dir` holds exactly `files` (paths, bytes and modes).
fn holds_exactly(dir: &Path, files: &Files) -> bool {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, std::fs::Metadata)>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let md = e.metadata()?;
            if md.is_dir() {
                walk(&e.path(), &rel, out)?;
            } else {
                out.push((rel, md));
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    if walk(dir, "", &mut found).is_err() || found.len() != files.len() {
        return false;
    }
    files.iter().all(|(rel, data, mode)| {
        found
            .iter()
            .find(|(r, _)| r == rel)
            .is_some_and(|(_, md)| md.permissions().mode() & 0o7777 == *mode && md.len() == data.len() as u64)
            && std::fs::read(dir.join(rel)).is_ok_and(|d| d == *data)
    })
}

/// Replace the volume's files with `files`, all at once (the kubelet's atomic writer):
/// updates of config maps, secrets and tokens reach running pods on the next sync. Nothing is
/// written when nothing changed.
fn write_files(dir: &Path, files: &Files) -> Result<(), String> {
    let io = |e: std::io::Error| format!("writing volume {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let current = std::fs::read_link(dir.join(DATA_LINK)).ok();
    if current.as_ref().is_some_and(|c| holds_exactly(&dir.join(c), files)) {
        return Ok(());
    }
    // The new generation, complete before anyone can see it.
    let generation = format!("..{}", chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S.%f"));
    let gen_dir = dir.join(&generation);
    std::fs::create_dir(&gen_dir).map_err(io)?;
    std::fs::set_permissions(&gen_dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    for (rel, data, mode) in files {
        let path = gen_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, data).map_err(io)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).map_err(io)?;
    }
    // Switch `..data` to it in one rename.
    let tmp = dir.join(DATA_TMP_LINK);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&generation, &tmp).map_err(io)?;
    std::fs::rename(&tmp, dir.join(DATA_LINK)).map_err(io)?;
    // The names users see: `<name> -> ..data/<name>`, for the top-level entries only.
    let tops: std::collections::BTreeSet<&str> = files.iter().filter_map(|(rel, _, _)| rel.split('/').next()).collect();
    for top in &tops {
        let path = dir.join(top);
        let target = Path::new(DATA_LINK).join(top);
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_symlink() && std::fs::read_link(&path).is_ok_and(|t| t == target) => continue,
            // A plain file or directory of an older layout, or a stale link.
            Ok(md) if md.is_dir() => std::fs::remove_dir_all(&path).map_err(io)?,
            Ok(_) => std::fs::remove_file(&path).map_err(io)?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &path).map_err(io)?;
    }
    // What the new generation no longer has, and the old generation.
    for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = if name.starts_with("..") {
            name != DATA_LINK && name != generation && name.len() > 2
        } else {
            !tops.contains(name.as_str())
        };
        if stale {
            let p = e.path();
            let gone = match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
            if let Err(err) = gone {
                tracing::warn!(path = %p.display(), error = %err, "removing an old volume file");
            }
        }
    }
    Ok(())
}

fn is_tmpfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == 0x0102_1994)
}

/// A tmpfs at `dir` (memory-backed `emptyDir`, secrets: never written to disk). Mounting
/// again over one already there is skipped.
fn ensure_tmpfs(dir: &Path, size: Option<i128>, mode: u32) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if is_tmpfs(dir) {
        return Ok(());
    }
    let mut data = format!("mode={mode:o}");
    if let Some(bytes) = size.filter(|b| *b > 0) {
        data.push_str(&format!(",size={bytes}"));
    }
    let data = std::ffi::CString::new(data).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID | rustix::mount::MountFlags::NODEV,
        Some(data.as_c_str()),
    )
    .map_err(|e| format!("mounting a tmpfs at {}: {e}", dir.display()))
}

/// Unmount every tmpfs volume of a pod (before its directory is removed).
pub fn unmount_volumes(pod_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(pod_dir.join("volumes")) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if is_tmpfs(&path) {
            if let Err(err) = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH) {
                tracing::warn!(path = %path.display(), error = %err, "unmounting a pod volume");
            }
        }
    }
}

async fn host_path_for_claim(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| format!("persistentvolumeclaim {claim:?}: {e}"))?
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} not found"))?;
    let pv_name = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} is not bound yet"))?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&pv_name)
        .await
        .map_err(|e| format!("persistentvolume {pv_name:?}: {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(l) = spec.local {
        return Ok(PathBuf::from(l.path));
    }
    let h = spec
        .host_path
        .ok_or_else(|| format!("persistentvolume {pv_name:?} is neither a local nor a hostPath volume"))?;
    // The hostPath type is honoured as for a pod's hostPath volume: the local-path
    // provisioner's volumes are `DirectoryOrCreate`, made on the node that first mounts them
    // (the provisioner runs in the control plane, not on the node).
    let existed = std::path::Path::new(&h.path).exists();
    let path = host_path(&h.path, h.type_.as_deref()).map_err(|e| format!("persistentvolume {pv_name:?}: {e}"))?;
    if !existed && h.type_.as_deref() == Some("DirectoryOrCreate") {
        use std::os::unix::fs::PermissionsExt;
        // As the local-path provisioner makes them: writable by any container user.
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777));
    }
    Ok(path)
}

/// A hostPath on the node, checked or made according to its `type` as the kubelet does.
fn host_path(path: &str, type_: Option<&str>) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    match type_.unwrap_or("") {
        "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(|e| format!("hostPath {path}: {e}"))?,
        "FileOrCreate" if !p.exists() => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("hostPath {path}: {e}"))?;
            }
            std::fs::write(&p, b"").map_err(|e| format!("hostPath {path}: {e}"))?;
        }
        "Directory" if !p.is_dir() => return Err(format!("hostPath type check failed: {path} is not a directory")),
        "File" if !p.is_file() => return Err(format!("hostPath type check failed: {path} is not a file")),
        _ => {}
    }
    Ok(p)
}

/// Make every volume of the pod and return where each one is on the host. An error is the
/// message of the pod's `CreateContainerConfigError`.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    tokens: &mut crate::tokens::TokenManager,
) -> Result<HashMap<String, PathBuf>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = HashMap::new();
    let vols: Vec<Volume> = pod.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
    for v in vols {
        let dir = pod_dir.join("volumes").join(&v.name);
        let path = if let Some(ed) = &v.empty_dir {
            if ed.medium.as_deref() == Some("Memory") {
                let size = ed
                    .size_limit
                    .as_ref()
                    .and_then(|q| skiff_runtime::quantity::value(&q.0));
                ensure_tmpfs(&dir, size, 0o777)?;
            } else {
                std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir {}: {e}", v.name))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(|e| format!("emptyDir {}: {e}", v.name))?;
            }
            dir
        } else if let Some(h) = &v.host_path {
            host_path(&h.path, h.type_.as_deref())?
        } else if let Some(c) = &v.config_map {
            let mode = c.default_mode.map_or(0o644, |m| m as u32);
            let optional = c.optional == Some(true);
            let files = source_files(
                client,
                &ns,
                ("configmap", &c.name),
                c.items.as_ref(),
                optional,
                mode,
                config_map_data,
            )
            .await?;
            write_files(&dir, &files)?;
            dir
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.map_or(0o644, |m| m as u32);
            let optional = s.optional == Some(true);
            let files = source_files(
                client,
                &ns,
                ("secret", &name),
                s.items.as_ref(),
                optional,
                mode,
                secret_data,
            )
            .await?;
            ensure_tmpfs(&dir, None, 0o755)?;
            write_files(&dir, &files)?;
            dir
        } else if let Some(d) = &v.downward_api {
            let files = downward_files(
                pod,
                d.items.as_deref().unwrap_or_default(),
                d.default_mode.map_or(0o644, |m| m as u32),
            )?;
            write_files(&dir, &files)?;
            dir
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.map_or(0o644, |m| m as u32);
            let mut files = Files::new();
            for src in p.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    files.extend(
                        source_files(
                            client,
                            &ns,
                            ("configmap", &c.name),
                            c.items.as_ref(),
                            c.optional == Some(true),
                            mode,
                            config_map_data,
                        )
                        .await?,
                    );
                } else if let Some(s) = &src.secret {
                    files.extend(
                        source_files(
                            client,
                            &ns,
                            ("secret", &s.name),
                            s.items.as_ref(),
                            s.optional == Some(true),
                            mode,
                            secret_data,
                        )
                        .await?,
                    );
                } else if let Some(d) = &src.downward_api {
                    files.extend(downward_files(pod, d.items.as_deref().unwrap_or_default(), mode)?);
                } else if let Some(t) = &src.service_account_token {
                    safe_rel(&t.path)?;
                    let token = tokens
                        .token(client, pod, t)
                        .await
                        .map_err(|e| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name))?;
                    files.push((t.path.clone(), token.into_bytes(), mode));
                }
            }
            write_files(&dir, &files)?;
            dir
        } else if let Some(c) = &v.persistent_volume_claim {
            host_path_for_claim(client, &ns, &c.claim_name).await?
        } else {
            return Err(format!("volume {:?}: this volume type is not supported yet", v.name));
        };
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generations(dir: &Path) -> Vec<String> {
        let mut g: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_LINK)
            .collect();
        g.sort();
        g
    }

    #[test]
    fn files_are_switched_all_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vol");
        // A file of the older, in-place layout.
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("token"), "old layout").expect("write");

        let first: Files = vec![
            ("token".into(), b"t1".to_vec(), 0o644),
            ("ca.crt".into(), b"ca".to_vec(), 0o644),
            ("deep/namespace".into(), b"default".to_vec(), 0o600),
        ];
        write_files(&dir, &first).expect("write");
        assert_eq!(
            std::fs::read_link(dir.join("token")).expect("a link"),
            Path::new("..data/token")
        );
        assert_eq!(std::fs::read_to_string(dir.join("token")).expect("read"), "t1");
        assert_eq!(
            std::fs::read_to_string(dir.join("deep/namespace")).expect("read"),
            "default"
        );
        let mode = std::fs::metadata(dir.join("deep/namespace"))
            .expect("md")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let gen1 = std::fs::read_link(dir.join(DATA_LINK)).expect("..data");
        assert_eq!(generations(&dir), [gen1.to_string_lossy().into_owned()]);

        // The same files again: nothing is rewritten.
        write_files(&dir, &first).expect("write");
        assert_eq!(std::fs::read_link(dir.join(DATA_LINK)).expect("..data"), gen1);

        // A new token, and a file that goes: one new generation, the old one removed.
        let second: Files = vec![
            ("token".into(), b"t2".to_vec(), 0o644),
            ("ca.crt".into(), b"ca".to_vec(), 0o644),
        ];
        write_files(&dir, &second).expect("write");
        let gen2 = std::fs::read_link(dir.join(DATA_LINK)).expect("..data");
        assert_ne!(gen2, gen1);
        assert_eq!(std::fs::read_to_string(dir.join("token")).expect("read"), "t2");
        assert!(
            std::fs::symlink_metadata(dir.join("deep")).is_err(),
            "gone with its generation"
        );
        assert_eq!(generations(&dir), [gen2.to_string_lossy().into_owned()]);
        let mut visible: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(".."))
            .collect();
        visible.sort();
        assert_eq!(visible, ["ca.crt", "token"]);
        assert!(safe_rel("..data/token").is_err() && safe_rel("a/../b").is_err() && safe_rel("a/b").is_ok());
    }
}
