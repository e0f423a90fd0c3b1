//! OCI bundles from Kubernetes containers: [`container_spec`] turns a container of a pod spec,
//! its image's config and what the agent resolved (env, mounts, the pod's namespaces, the
//! cgroup) into an OCI runtime `config.json`, with the semantics of the kubelet and containerd's
//! CRI plugin: command/args over the image's Entrypoint/Cmd, `$(VAR)` expansion, env merged over
//! the image's, working dir, user from the security context or the image, capabilities over
//! Kubernetes' default set, cgroup values derived from requests and limits as the kubelet does,
//! and the default mounts, masked and read-only paths. Pure: it reads nothing from disk
//! (the image's `/etc/passwd` and `/etc/group` come in as text).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::io_error::IoError;
use crate::quantity;

/// The capabilities a container gets unless its security context says otherwise: Kubernetes'
/// default set, as containerd's CRI plugin grants it.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability Linux knows, in kernel bit order (for `add: [ALL]` and privileged
/// containers); the ones the spec library does not know are left out.
const ALL_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Paths hidden from unprivileged containers (containerd's defaults).
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in unprivileged containers (containerd's defaults).
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// `PATH` when neither the image nor the container sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cgroup CPU period the kubelet uses (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const MIN_QUOTA_US: i64 = 1_000;

/// How a container gets one kind of namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NamespaceMode {
    /// A new namespace of its own.
    #[default]
    New,
    /// Join the namespace at this path (a bind-mounted `/proc/PID/ns/…` file the pod
    /// sandbox holds, so a pod's containers share it without a pause container).
    Join(PathBuf),
    /// The host's (no namespace entry): `hostNetwork`, `hostIPC`, `hostPID`.
    Host,
}

/// The pod-level context of a container: what its pod shares and what the agent decided.
#[derive(Clone, Debug, Default)]
pub struct PodContext {
    /// The pod's security context.
    pub security: Option<PodSecurityContext>,
    /// The pod's hostname (its name, or its `hostname` field): the `HOSTNAME` env, and the
    /// UTS hostname when the container has a UTS namespace of its own.
    pub hostname: Option<String>,
    /// Network namespace.
    pub network: NamespaceMode,
    /// IPC namespace.
    pub ipc: NamespaceMode,
    /// UTS namespace.
    pub uts: NamespaceMode,
    /// PID namespace (`Join` for `shareProcessNamespace`).
    pub pid: NamespaceMode,
    /// Give the container a cgroup namespace (as containerd does on cgroup v2 hosts).
    pub cgroup_namespace: bool,
    /// The host runs cgroup v2 only ([`crate::oci::cgroup_v2_host`]): the spec sets
    /// `cpu.weight` itself (`unified`, by [`cpu_weight`]), so every runtime gives a container
    /// the same weight (each converts `shares` its own way: runc 1.1 linearly, youki and
    /// runc ≥ 1.3.2 as [`cpu_weight`] does).
    pub cgroup_v2: bool,
    /// The node's pod PID limit, applied to each container's cgroup.
    pub pids_limit: Option<i64>,
    /// The OOM score adjustment for the pod's QoS class.
    pub oom_score_adj: Option<i32>,
    /// The capabilities the host grants (a bounding-set mask, see
    /// [`crate::oci::host_capabilities`]): what privileged containers and `add: [ALL]` get.
    /// `None`: every capability Linux knows.
    pub host_capabilities: Option<u64>,
}

/// Everything [`container_spec`] needs.
#[derive(Clone, Debug)]
pub struct ContainerInput<'a> {
    /// The container of the pod spec.
    pub container: &'a Container,
    /// The image's config (`config` part: Entrypoint, Cmd, Env, WorkingDir, User).
    pub image: &'a oci_spec::image::ImageConfiguration,
    /// The pod-level context.
    pub pod: &'a PodContext,
    /// The container's env as the agent resolved it (`value`, and `valueFrom` looked up), in
    /// the pod spec's order; `$(VAR)` references are expanded here.
    pub env: Vec<(String, String)>,
    /// The root filesystem (absolute, or relative to the bundle).
    pub rootfs: PathBuf,
    /// Mounts from volumes, `/etc/hosts`, `/etc/resolv.conf`, the termination log …; one at a
    /// default mount's destination replaces it (e.g. a pod-shared `/dev/shm`).
    pub mounts: Vec<Mount>,
    /// The container's cgroup (e.g. `/skiff/pod<uid>/<container-id>`).
    pub cgroups_path: String,
    /// The image's `/etc/passwd`, for user names.
    pub passwd: Option<String>,
    /// The image's `/etc/group`, for group names and supplementary groups.
    pub group: Option<String>,
}

/// Why a container cannot be turned into a bundle. The agent shows these as
/// `CreateContainerConfigError` with this message.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Neither the container nor its image says what to run.
    #[error("container {container}: no command specified (neither command/args nor the image's Entrypoint/Cmd)")]
    NoCommand {
        /// The container.
        container: String,
    },
    /// A resource quantity that is not one.
    #[error("container {container}: invalid {field} {value:?}")]
    BadQuantity {
        /// The container.
        container: String,
        /// `resources.limits.memory` …
        field: String,
        /// The text.
        value: String,
    },
    /// A capability name Linux does not have.
    #[error("container {container}: unknown capability {name:?}")]
    BadCapability {
        /// The container.
        container: String,
        /// The name.
        name: String,
    },
    /// The image's user cannot be resolved.
    #[error("container {container}: unable to find user {user}: {reason}")]
    UnknownUser {
        /// The container.
        container: String,
        /// The image's `User`.
        user: String,
        /// Why.
        reason: String,
    },
    /// `runAsNonRoot` with a root (or unverifiable) user.
    #[error("container {container}: {reason}")]
    RunAsNonRoot {
        /// The container.
        container: String,
        /// The kubelet's wording.
        reason: String,
    },
    /// An env entry of the image that is not `NAME=value`, or an empty env name.
    #[error("container {container}: invalid environment entry {entry:?}")]
    BadEnv {
        /// The container.
        container: String,
        /// The entry.
        entry: String,
    },
    /// The spec library refused a value.
    #[error("container {container}: {source}")]
    Spec {
        /// The container.
        container: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// Writing the bundle failed (the message reads `writing bundle {path}: {source}`).
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Builds the OCI runtime spec of one container.
pub fn container_spec(input: &ContainerInput<'_>) -> Result<Spec, BundleError> {
    let c = input.container;
    let name = c.name.as_str();
    let spec_err = |source| BundleError::Spec {
        container: name.to_string(),
        source,
    };
    let img = input.image.config().as_ref();
    let sc = c.security_context.as_ref();
    let psc = input.pod.security.as_ref();
    let privileged = sc.and_then(|s| s.privileged).unwrap_or(false);

    // Env: the image's, then the container's over it (expanded), HOSTNAME, a default PATH.
    let mut env: Vec<(String, String)> = Vec::new();
    for e in img.and_then(|i| i.env().as_ref()).into_iter().flatten() {
        let (k, v) = e.split_once('=').ok_or_else(|| BundleError::BadEnv {
            container: name.to_string(),
            entry: e.clone(),
        })?;
        set_env(&mut env, k, v.to_string());
    }
    let container_env = expand_env(&input.env);
    for (k, v) in &container_env {
        if k.is_empty() {
            return Err(BundleError::BadEnv {
                container: name.to_string(),
                entry: format!("={v}"),
            });
        }
        set_env(&mut env, k, v.clone());
    }
    // HOSTNAME is the pod's hostname whether or not the container has the UTS namespace
    // that carries it (the sandbox sets that one).
    if let Some(h) = &input.pod.hostname {
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            env.push(("HOSTNAME".into(), h.clone()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }

    let lookup: HashMap<&str, &str> = container_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = process_args(c, img, &lookup)?;
    let cwd = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| img.and_then(|i| i.working_dir().clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());

    let user = resolve_user(input)?;
    let mut user_b = UserBuilder::default().uid(user.uid).gid(user.gid);
    if !user.additional_gids.is_empty() {
        user_b = user_b.additional_gids(user.additional_gids.clone());
    }
    let caps = capabilities(name, sc, privileged, input.pod.host_capabilities)?;
    let cap_set: HashSet<Capability> = caps.into_iter().collect();
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(spec_err)?;
    // Kubernetes: no_new_privs unless privilege escalation is allowed (the default) or the
    // container is privileged.
    let no_new_privs = !privileged && sc.and_then(|s| s.allow_privilege_escalation) == Some(false);
    let mut process = ProcessBuilder::default()
        .terminal(c.tty.unwrap_or(false))
        .user(user_b.build().map_err(spec_err)?)
        .args(args)
        .env(env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
        .cwd(cwd)
        .capabilities(caps)
        .no_new_privileges(no_new_privs);
    if let Some(adj) = input.pod.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    let mut process = process.build().map_err(spec_err)?;
    // The builders start from the library's example spec: no rlimits of its own (the
    // container inherits the node's, as with containerd).
    process.set_rlimits(None);

    let read_only_root = sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false);
    let root = RootBuilder::default()
        .path(input.rootfs.clone())
        .readonly(read_only_root)
        .build()
        .map_err(spec_err)?;

    let mut linux_b = LinuxBuilder::default()
        .namespaces(namespaces(input.pod).map_err(spec_err)?)
        .resources(resources(name, c, input.pod, privileged)?)
        .cgroups_path(PathBuf::from(&input.cgroups_path));
    if !privileged {
        linux_b = linux_b
            .masked_paths(MASKED_PATHS.iter().map(|p| p.to_string()).collect::<Vec<_>>())
            .readonly_paths(READONLY_PATHS.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    }
    let sysctls: HashMap<String, String> = psc
        .and_then(|p| p.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    if !sysctls.is_empty() {
        linux_b = linux_b.sysctl(sysctls);
    }
    let mut linux = linux_b.build().map_err(spec_err)?;
    if privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(root)
        .process(process)
        .mounts(mounts(&input.mounts, privileged).map_err(spec_err)?)
        .linux(linux);
    if let (Some(h), NamespaceMode::New) = (&input.pod.hostname, &input.pod.uts) {
        spec = spec.hostname(h.clone());
    }
    let mut spec = spec.build().map_err(spec_err)?;
    if !matches!((&input.pod.hostname, &input.pod.uts), (Some(_), NamespaceMode::New)) {
        spec.set_hostname(None);
    }
    spec.set_annotations(None);
    Ok(spec)
}

/// The process of an exec in a container (`kubectl exec`, exec probes): the container's own
/// process (user, env, working dir, capabilities, no_new_privs) running `command`.
pub fn exec_process(spec: &Spec, command: Vec<String>, tty: bool) -> Result<oci_spec::runtime::Process, BundleError> {
    let mut p = spec.process().clone().unwrap_or_default();
    if command.is_empty() {
        return Err(BundleError::NoCommand {
            container: "exec".into(),
        });
    }
    p.set_args(Some(command));
    p.set_terminal(Some(tty));
    Ok(p)
}

/// The operation [`BundleError::Io`] names for reading or writing `config.json` (one wording for
/// both, as the agent has always shown it).
const WRITING: &str = "writing bundle";

/// Reads a bundle's `config.json` (for [`exec_process`]).
pub fn read_config(dir: &Path) -> Result<Spec, BundleError> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path).map_err(IoError::at(WRITING, &path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| IoError::new(WRITING, path, io::Error::new(io::ErrorKind::InvalidData, e)).into())
}

/// Writes `spec` as `<dir>/config.json` (atomically: a runtime never reads half a file).
pub fn write_config(dir: &Path, spec: &Spec) -> Result<(), BundleError> {
    let path = dir.join("config.json");
    std::fs::create_dir_all(dir).map_err(IoError::at(WRITING, &path))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(IoError::at(WRITING, &path))?;
    serde_json::to_writer_pretty(tmp.as_file(), spec).map_err(|e| IoError::new(WRITING, &path, io::Error::other(e)))?;
    tmp.persist(&path).map_err(IoError::at(WRITING, &path))?;
    Ok(())
}

fn set_env(env: &mut Vec<(String, String)>, k: &str, v: String) {
    match env.iter_mut().find(|(n, _)| n == k) {
        Some(e) => e.1 = v,
        None => env.push((k.to_string(), v)),
    }
}

/// The kubelet's env expansion: each value may refer to variables defined before it as
/// `$(NAME)`; `$$` is a literal `$`; unknown references stay as written.
pub fn expand_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (k, v) in env {
        let lookup: HashMap<&str, &str> = seen.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let value = expand(v, &lookup);
        seen.insert(k.clone(), value.clone());
        set_env(&mut out, k, value);
    }
    out
}

/// Expands `$(NAME)` references in `s` (Kubernetes' `expansion.Expand`).
pub fn expand(s: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What the container runs: Kubernetes' rules over the image's Entrypoint and Cmd.
fn process_args(
    c: &Container,
    img: Option<&oci_spec::image::Config>,
    vars: &HashMap<&str, &str>,
) -> Result<Vec<String>, BundleError> {
    let entrypoint = img.and_then(|i| i.entrypoint().clone()).unwrap_or_default();
    let cmd = img.and_then(|i| i.cmd().clone()).unwrap_or_default();
    let expand_all = |v: &Vec<String>| v.iter().map(|a| expand(a, vars)).collect::<Vec<_>>();
    let command = c.command.as_ref().filter(|v| !v.is_empty()).map(expand_all);
    let args = c.args.as_ref().filter(|v| !v.is_empty()).map(expand_all);
    let out: Vec<String> = match (command, args) {
        (Some(mut command), args) => {
            command.extend(args.unwrap_or_default());
            command
        }
        (None, Some(args)) => entrypoint.into_iter().chain(args).collect(),
        (None, None) => entrypoint.into_iter().chain(cmd).collect(),
    };
    if out.is_empty() {
        return Err(BundleError::NoCommand {
            container: c.name.clone(),
        });
    }
    Ok(out)
}

/// The user a container runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// UID.
    pub uid: u32,
    /// Primary GID.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

fn passwd_entries(text: Option<&str>) -> impl Iterator<Item = Vec<&str>> {
    text.unwrap_or("")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

/// runAsUser/runAsGroup (container over pod) or the image's `User` (`uid`, `uid:gid`, `name`,
/// `name:group`, names looked up in the image's files), with supplementary groups from
/// `/etc/group`, the pod's `supplementalGroups` and `fsGroup`; enforces `runAsNonRoot`.
pub fn resolve_user(input: &ContainerInput<'_>) -> Result<ResolvedUser, BundleError> {
    let name = &input.container.name;
    let sc: Option<&SecurityContext> = input.container.security_context.as_ref();
    let psc = input.pod.security.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|p| p.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|p| p.run_as_group));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| psc.and_then(|p| p.run_as_non_root));
    let image_user = input
        .image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let unknown = |reason: &str| BundleError::UnknownUser {
        container: name.clone(),
        user: image_user.clone(),
        reason: reason.to_string(),
    };
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| BundleError::UnknownUser {
            container: name.clone(),
            user: v.to_string(),
            reason: format!("{what} out of range"),
        })
    };
    let passwd = input.passwd.as_deref();
    let group = input.group.as_deref();
    let (image_name, image_group) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user.as_str(), None),
    };

    let (uid, user_name, mut gid): (u32, Option<String>, Option<u32>) = match run_as_user {
        Some(u) => {
            let uid = id(u, "runAsUser")?;
            let entry = passwd_entries(passwd).find(|e| e.len() > 3 && e[2].parse() == Ok(uid));
            (
                uid,
                entry.as_ref().map(|e| e[0].to_string()),
                entry.and_then(|e| e[3].parse().ok()),
            )
        }
        None if image_name.is_empty() => (0, Some("root".into()), None),
        None => match image_name.parse::<u32>() {
            Ok(uid) => {
                let entry = passwd_entries(passwd).find(|e| e.len() > 3 && e[2].parse() == Ok(uid));
                (
                    uid,
                    entry.as_ref().map(|e| e[0].to_string()),
                    entry.and_then(|e| e[3].parse().ok()),
                )
            }
            Err(_) => {
                if passwd.is_none() {
                    return Err(unknown("no /etc/passwd in the image"));
                }
                let e = passwd_entries(passwd)
                    .find(|e| e.len() > 3 && e[0] == image_name)
                    .ok_or_else(|| unknown("no matching entries in passwd file"))?;
                let uid = e[2].parse().map_err(|_| unknown("bad passwd entry"))?;
                (uid, Some(image_name.to_string()), e[3].parse().ok())
            }
        },
    };
    if run_as_user.is_none() {
        if let Some(g) = image_group.filter(|g| !g.is_empty()) {
            gid = Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => passwd_entries(group)
                    .find(|e| e.len() > 2 && e[0] == g)
                    .and_then(|e| e[2].parse().ok())
                    .ok_or_else(|| unknown("no matching entries in group file"))?,
            });
        }
    }
    let gid = match run_as_group {
        Some(g) => id(g, "runAsGroup")?,
        None => gid.unwrap_or(0),
    };
    if non_root == Some(true) && uid == 0 {
        return Err(BundleError::RunAsNonRoot {
            container: name.clone(),
            reason: "container has runAsNonRoot and image will run as root".into(),
        });
    }
    let mut additional: Vec<u32> = Vec::new();
    if let Some(u) = &user_name {
        for e in passwd_entries(group) {
            if e.len() > 3 && e[3].split(',').any(|m| m == u) {
                if let Ok(g) = e[2].parse::<u32>() {
                    additional.push(g);
                }
            }
        }
    }
    for g in psc
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(psc.and_then(|p| p.fs_group))
    {
        additional.push(id(g, "supplemental group")?);
    }
    additional.retain(|g| *g != gid);
    additional.sort_unstable();
    additional.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

fn parse_capability(container: &str, name: &str) -> Result<Capability, BundleError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| BundleError::BadCapability {
        container: container.to_string(),
        name: name.to_string(),
    })
}

/// The capabilities in a kernel capability mask (bit N is capability N, as in
/// `/proc/self/status`); every known one without a mask.
fn all_capabilities(mask: Option<u64>) -> Vec<Capability> {
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask.is_none_or(|m| m & (1u64 << bit) != 0))
        .filter_map(|(_, c)| Capability::from_str(c).ok())
        .collect()
}

/// The container's capability set: Kubernetes' default, `drop: [ALL]` empties it,
/// `add: [ALL]` (or privileged) fills it with every capability the host has (`host`, the
/// runtime's bounding set as a mask, as containerd's "all current capabilities"), then the
/// named adds and drops.
pub fn capabilities(
    container: &str,
    sc: Option<&SecurityContext>,
    privileged: bool,
    host: Option<u64>,
) -> Result<Vec<Capability>, BundleError> {
    if privileged {
        return Ok(all_capabilities(host));
    }
    let add = sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    let drop = sc
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let mut caps: Vec<Capability> = if drop.iter().any(is_all) {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| parse_capability(container, c))
            .collect::<Result<_, _>>()?
    };
    if add.iter().any(is_all) {
        caps = all_capabilities(host);
    }
    for a in add.iter().filter(|a| !is_all(a)) {
        let cap = parse_capability(container, a)?;
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    for d in drop.iter().filter(|d| !is_all(d)) {
        let cap = parse_capability(container, d)?;
        caps.retain(|c| *c != cap);
    }
    Ok(caps)
}

fn namespaces(pod: &PodContext) -> Result<Vec<LinuxNamespace>, oci_spec::OciSpecError> {
    let mut out = vec![LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Mount)
        .build()?];
    for (typ, mode) in [
        (LinuxNamespaceType::Network, &pod.network),
        (LinuxNamespaceType::Ipc, &pod.ipc),
        (LinuxNamespaceType::Uts, &pod.uts),
        (LinuxNamespaceType::Pid, &pod.pid),
    ] {
        match mode {
            NamespaceMode::New => out.push(LinuxNamespaceBuilder::default().typ(typ).build()?),
            NamespaceMode::Join(p) => out.push(LinuxNamespaceBuilder::default().typ(typ).path(p.clone()).build()?),
            NamespaceMode::Host => {}
        }
    }
    if pod.cgroup_namespace {
        out.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()?,
        );
    }
    Ok(out)
}

/// The cgroup values of a container, as the kubelet derives them from its resources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupValues {
    /// `cpu.shares` (v1; runtimes convert it to `cpu.weight` on v2).
    pub cpu_shares: u64,
    /// CFS quota per [`CPU_PERIOD_US`], when there is a CPU limit.
    pub cpu_quota: Option<i64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
}

/// Requests and limits → cgroup values: shares from the CPU request (the limit when only that
/// is set; 2 for none), quota from the CPU limit (at least 1 ms per period), the memory limit.
pub fn cgroup_values(c: &Container) -> Result<CgroupValues, BundleError> {
    let res = c.resources.as_ref();
    let get = |which: &str, key: &str| -> Option<(String, String)> {
        let m = match which {
            "requests" => res.and_then(|r| r.requests.as_ref()),
            _ => res.and_then(|r| r.limits.as_ref()),
        }?;
        m.get(key).map(|q| (format!("resources.{which}.{key}"), q.0.clone()))
    };
    let parse = |(field, v): (String, String), milli: bool| -> Result<i128, BundleError> {
        let parsed = if milli {
            quantity::milli_value(&v)
        } else {
            quantity::value(&v)
        };
        parsed.ok_or(BundleError::BadQuantity {
            container: c.name.clone(),
            field,
            value: v,
        })
    };
    let cpu_request = get("requests", "cpu").map(|q| parse(q, true)).transpose()?;
    let cpu_limit = get("limits", "cpu").map(|q| parse(q, true)).transpose()?;
    let memory_limit = get("limits", "memory").map(|q| parse(q, false)).transpose()?;
    let share_basis = match (cpu_request, cpu_limit) {
        (Some(r), _) if r > 0 => r,
        (_, Some(l)) => l,
        _ => 0,
    };
    let shares = (share_basis * 1024 / 1000).clamp(MIN_SHARES as i128, MAX_SHARES as i128) as u64;
    let cpu_quota = cpu_limit
        .filter(|l| *l > 0)
        .map(|l| (l * CPU_PERIOD_US as i128 / 1000).clamp(MIN_QUOTA_US as i128, i64::MAX as i128) as i64);
    let memory_limit = memory_limit.filter(|m| *m > 0).map(|m| m.min(i64::MAX as i128) as i64);
    Ok(CgroupValues {
        cpu_shares: shares,
        cpu_quota,
        memory_limit,
    })
}

fn device_rule(allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access("rwm");
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().expect("a device rule with every field set always builds")
}

/// `cpu.shares` (2…262144) → cgroup v2 `cpu.weight` (1…10000), as youki, crun ≥ 1.23 and
/// runc ≥ 1.3.2 convert it: a quadratic in log2(shares) through the ends of both ranges and
/// the defaults (1024 → 100), so that a container asking for one CPU weighs as much as the
/// services beside it (the old linear conversion gave it 39).
pub fn cpu_weight(shares: u64) -> u64 {
    if shares <= MIN_SHARES {
        return 1;
    }
    if shares >= MAX_SHARES {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

fn resources(
    name: &str,
    c: &Container,
    pod: &PodContext,
    privileged: bool,
) -> Result<oci_spec::runtime::LinuxResources, BundleError> {
    let spec_err = |source| BundleError::Spec {
        container: name.to_string(),
        source,
    };
    let v = cgroup_values(c)?;
    let mut cpu = LinuxCpuBuilder::default().shares(v.cpu_shares);
    if let Some(q) = v.cpu_quota {
        cpu = cpu.quota(q).period(CPU_PERIOD_US);
    }
    let mut r = LinuxResourcesBuilder::default().cpu(cpu.build().map_err(spec_err)?);
    if let Some(m) = v.memory_limit {
        r = r.memory(LinuxMemoryBuilder::default().limit(m).build().map_err(spec_err)?);
    }
    if let Some(p) = pod.pids_limit.filter(|p| *p > 0) {
        r = r.pids(LinuxPidsBuilder::default().limit(p).build().map_err(spec_err)?);
    }
    if pod.cgroup_v2 {
        // Written after the runtime's own conversion of `shares` (runc and youki apply
        // `unified` last).
        r = r.unified(HashMap::from([(
            "cpu.weight".to_string(),
            cpu_weight(v.cpu_shares).to_string(),
        )]));
    }
    // Devices: everything for privileged containers; otherwise none but the standard set.
    let devices = if privileged {
        vec![device_rule(true, LinuxDeviceType::A, None, None)]
    } else {
        use LinuxDeviceType::C;
        vec![
            device_rule(false, LinuxDeviceType::A, None, None),
            device_rule(true, C, Some(1), Some(3)), // null
            device_rule(true, C, Some(1), Some(5)), // zero
            device_rule(true, C, Some(1), Some(7)), // full
            device_rule(true, C, Some(1), Some(8)), // random
            device_rule(true, C, Some(1), Some(9)), // urandom
            device_rule(true, C, Some(5), Some(0)), // tty
            device_rule(true, C, Some(5), Some(1)), // console
            device_rule(true, C, Some(5), Some(2)), // ptmx
            device_rule(true, C, Some(136), None),  // pts/*
        ]
    };
    r.devices(devices).build().map_err(spec_err)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
}

/// The default mounts (containerd's), then the caller's; a caller's mount replaces a default
/// one at the same destination.
fn mounts(extra: &[Mount], privileged: bool) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    let defaults = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", sys_mode])?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ];
    let extra_dests: HashSet<&Path> = extra.iter().map(|m| m.destination().as_path()).collect();
    Ok(defaults
        .into_iter()
        .filter(|m| !extra_dests.contains(m.destination().as_path()))
        .chain(extra.iter().cloned())
        .collect())
}

/// A read-write or read-only bind mount (for volumes and the pod's files).
pub fn bind_mount(source: &Path, destination: &str, read_only: bool) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(vec![
            "rbind".to_string(),
            "rprivate".to_string(),
            if read_only { "ro" } else { "rw" }.to_string(),
        ])
        .build()
}

/// Sorted `(name, value)` pairs of a spec's env, for tests and diagnostics.
pub fn env_map(spec: &Spec) -> BTreeMap<String, String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests;
