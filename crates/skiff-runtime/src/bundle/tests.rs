use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, ResourceRequirements, Sysctl};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;

fn image(config: serde_json::Value) -> oci_spec::image::ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .expect("image config")
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        ..Default::default()
    }
}

struct Case {
    container: Container,
    image: oci_spec::image::ImageConfiguration,
    pod: PodContext,
    env: Vec<(String, String)>,
    passwd: Option<String>,
    group: Option<String>,
    mounts: Vec<Mount>,
}

impl Case {
    fn new(c: Container) -> Self {
        Self {
            container: c,
            image: image(serde_json::json!({"Env": ["PATH=/bin:/usr/bin", "LANG=C"], "Entrypoint": ["/entry"], "Cmd": ["--default"], "WorkingDir": "/srv"})),
            pod: PodContext {
                hostname: Some("web-0".into()),
                ..Default::default()
            },
            env: vec![],
            passwd: Some("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\napp:x:1000:1001::/home/app:/bin/sh\n".into()),
            group: Some("root:x:0:\nwheel:x:10:app,other\napp:x:1001:\nstaff:x:50:app\n".into()),
            mounts: vec![],
        }
    }
    fn input(&self) -> ContainerInput<'_> {
        ContainerInput {
            container: &self.container,
            image: &self.image,
            pod: &self.pod,
            env: self.env.clone(),
            rootfs: "rootfs".into(),
            mounts: self.mounts.clone(),
            cgroups_path: "/skiff/pod1/c1".into(),
            passwd: self.passwd.clone(),
            group: self.group.clone(),
        }
    }
    fn spec(&self) -> Spec {
        container_spec(&self.input()).expect("spec")
    }
    fn err(&self) -> BundleError {
        container_spec(&self.input()).expect_err("should fail")
    }
}

fn args(s: &Spec) -> Vec<String> {
    s.process().as_ref().expect("process").args().clone().expect("args")
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn command_and_args_follow_kubernetes_rules() {
    // Neither: the image's Entrypoint + Cmd.
    assert_eq!(args(&Case::new(container("c")).spec()), ["/entry", "--default"]);
    // Only args: Entrypoint + args.
    let mut c = container("c");
    c.args = strings(&["-x"]);
    assert_eq!(args(&Case::new(c.clone()).spec()), ["/entry", "-x"]);
    // Command: command + args, the image's both ignored.
    c.command = strings(&["/bin/sh", "-c"]);
    c.args = strings(&["echo hi"]);
    assert_eq!(args(&Case::new(c.clone()).spec()), ["/bin/sh", "-c", "echo hi"]);
    c.args = None;
    assert_eq!(args(&Case::new(c).spec()), ["/bin/sh", "-c"]);
    // Empty lists count as unset.
    let mut c = container("c");
    c.command = Some(vec![]);
    c.args = Some(vec![]);
    assert_eq!(args(&Case::new(c).spec()), ["/entry", "--default"]);
}

#[test]
fn no_command_anywhere_is_an_error() {
    let mut case = Case::new(container("c"));
    case.image = image(serde_json::json!({}));
    assert!(matches!(case.err(), BundleError::NoCommand { container } if container == "c"));
    // An image without a config section at all.
    case.image = serde_json::from_value(
        serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
    )
    .expect("bare config");
    assert!(matches!(case.err(), BundleError::NoCommand { .. }));
}

#[test]
fn env_merges_over_the_image_and_expands() {
    let mut c = container("c");
    c.command = strings(&["echo", "$(GREETING)", "$$(GREETING)", "$(MISSING)", "$(UNCLOSED"]);
    let mut case = Case::new(c);
    case.env = vec![
        ("NAME".into(), "world".into()),
        ("GREETING".into(), "hello $(NAME)".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("LATE".into(), "$(LATER)".into()),
        ("LATER".into(), "x".into()),
    ];
    let s = case.spec();
    assert_eq!(
        args(&s),
        ["echo", "hello world", "$(GREETING)", "$(MISSING)", "$(UNCLOSED"]
    );
    let env = s.process().as_ref().expect("process").env().clone().expect("env");
    assert_eq!(
        env,
        [
            "PATH=/bin:/usr/bin",
            "LANG=C.UTF-8",
            "NAME=world",
            "GREETING=hello world",
            "LATE=$(LATER)",
            "LATER=x",
            "HOSTNAME=web-0",
        ],
        "image env first (overridden in place), then the container's, references only to earlier vars"
    );
}

#[test]
fn default_path_and_bad_env() {
    let mut case = Case::new(container("c"));
    case.image = image(serde_json::json!({"Cmd": ["x"]}));
    let env = env_map(&case.spec());
    assert_eq!(env.get("PATH").map(String::as_str), Some(DEFAULT_PATH));
    case.image = image(serde_json::json!({"Cmd": ["x"], "Env": ["NOEQUALS"]}));
    assert!(matches!(case.err(), BundleError::BadEnv { .. }));
    case.image = image(serde_json::json!({"Cmd": ["x"]}));
    case.env = vec![(String::new(), "v".into())];
    assert!(matches!(case.err(), BundleError::BadEnv { .. }));
}

#[test]
fn working_dir_container_over_image_over_root() {
    let mut c = container("c");
    assert_eq!(
        Case::new(c.clone()).spec().process().as_ref().expect("p").cwd(),
        Path::new("/srv")
    );
    c.working_dir = Some("/data".into());
    assert_eq!(
        Case::new(c).spec().process().as_ref().expect("p").cwd(),
        Path::new("/data")
    );
    let mut case = Case::new(container("c"));
    case.image = image(serde_json::json!({"Cmd": ["x"]}));
    assert_eq!(case.spec().process().as_ref().expect("p").cwd(), Path::new("/"));
}

fn user_of(case: &Case) -> (u32, u32, Vec<u32>) {
    let s = case.spec();
    let u = s.process().as_ref().expect("process").user().clone();
    (u.uid(), u.gid(), u.additional_gids().clone().unwrap_or_default())
}

#[test]
fn users_from_security_context_and_image() {
    // Default: root.
    assert_eq!(user_of(&Case::new(container("c"))), (0, 0, vec![]));
    // Image user by name: uid, primary gid and groups from the image's files.
    let mut case = Case::new(container("c"));
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "app"}));
    assert_eq!(user_of(&case), (1000, 1001, vec![10, 50]));
    // name:group and uid:gid.
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "app:staff"}));
    assert_eq!(user_of(&case), (1000, 50, vec![10]));
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "4242:4343"}));
    assert_eq!(user_of(&case), (4242, 4343, vec![]));
    // runAsUser/runAsGroup win, container over pod; pod groups and fsGroup added.
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    let mut case = Case::new(c);
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "nobody"}));
    case.pod.security = Some(PodSecurityContext {
        run_as_user: Some(7),
        run_as_group: Some(8),
        supplemental_groups: Some(vec![100, 8]),
        fs_group: Some(2000),
        ..Default::default()
    });
    assert_eq!(user_of(&case), (1000, 8, vec![10, 50, 100, 2000]));
}

#[test]
fn bad_users_are_errors() {
    let mut case = Case::new(container("c"));
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "ghost"}));
    assert!(matches!(case.err(), BundleError::UnknownUser { .. }));
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "app:nogroup"}));
    assert!(matches!(case.err(), BundleError::UnknownUser { .. }));
    case.passwd = None;
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "app"}));
    assert!(matches!(case.err(), BundleError::UnknownUser { .. }));
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        run_as_user: Some(-1),
        ..Default::default()
    });
    assert!(matches!(Case::new(c).err(), BundleError::UnknownUser { .. }));
}

#[test]
fn run_as_non_root_refuses_root() {
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    let mut case = Case::new(c);
    assert!(matches!(case.err(), BundleError::RunAsNonRoot { .. }));
    case.image = image(serde_json::json!({"Cmd": ["x"], "User": "app"}));
    assert_eq!(user_of(&case).0, 1000);
    // The pod's setting applies too.
    let mut case = Case::new(container("c"));
    case.pod.security = Some(PodSecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    });
    assert!(matches!(case.err(), BundleError::RunAsNonRoot { .. }));
}

fn caps(sc: Option<SecurityContext>) -> Result<Vec<String>, BundleError> {
    let privileged = sc.as_ref().and_then(|s| s.privileged).unwrap_or(false);
    let mut v: Vec<String> = capabilities("c", sc.as_ref(), privileged, None)?
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    v.sort();
    Ok(v)
}

fn with_caps(add: &[&str], drop: &[&str]) -> Option<SecurityContext> {
    Some(SecurityContext {
        capabilities: Some(Capabilities {
            add: strings(add),
            drop: strings(drop),
        }),
        ..Default::default()
    })
}

#[test]
fn capabilities_over_the_default_set() {
    let default = caps(None).expect("default");
    assert_eq!(default.len(), DEFAULT_CAPABILITIES.len());
    assert!(default.contains(&"CAP_NET_RAW".to_string()) || default.contains(&"NET_RAW".to_string()));
    let added = caps(with_caps(&["NET_ADMIN", "cap_sys_time"], &["NET_RAW"])).expect("add/drop");
    assert_eq!(added.len(), DEFAULT_CAPABILITIES.len() + 1);
    assert!(added.iter().any(|c| c.ends_with("NET_ADMIN")));
    assert!(added.iter().any(|c| c.ends_with("SYS_TIME")));
    assert!(!added.iter().any(|c| c.ends_with("NET_RAW")));
    let only = caps(with_caps(&["NET_BIND_SERVICE"], &["ALL"])).expect("drop all");
    assert_eq!(only.len(), 1);
    assert!(only[0].ends_with("NET_BIND_SERVICE"));
    let all = caps(with_caps(&["ALL"], &["SYS_ADMIN"])).expect("add all");
    assert!(all.len() > 35);
    assert!(!all.iter().any(|c| c.ends_with("SYS_ADMIN")));
    let privileged = caps(Some(SecurityContext {
        privileged: Some(true),
        ..Default::default()
    }))
    .expect("privileged");
    assert!(privileged.iter().any(|c| c.ends_with("SYS_ADMIN")));
    assert!(matches!(
        caps(with_caps(&["NOT_A_CAP"], &[])),
        Err(BundleError::BadCapability { name, .. }) if name == "NOT_A_CAP"
    ));
    assert!(matches!(
        caps(with_caps(&[], &[""])),
        Err(BundleError::BadCapability { .. })
    ));
    // With the host's mask, "all" is what the host has (here: all but SYS_RESOURCE, bit 24).
    let mask = 0x1ff_feff_ffff_u64;
    let host_all = capabilities("c", None, true, Some(mask)).expect("privileged");
    assert_eq!(host_all.len(), 40);
    assert!(!host_all.contains(&Capability::SysResource));
    assert!(host_all.contains(&Capability::SysAdmin));
    let added = capabilities("c", with_caps(&["ALL"], &[]).as_ref(), false, Some(mask)).expect("add all");
    assert_eq!(added.len(), 40);
    assert_eq!(capabilities("c", None, true, Some(0)).expect("none").len(), 0);
}

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
    let q = |v: &[(&str, &str)]| -> Option<BTreeMap<String, Quantity>> {
        (!v.is_empty()).then(|| {
            v.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    };
    Container {
        name: "c".into(),
        resources: Some(ResourceRequirements {
            requests: q(requests),
            limits: q(limits),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn cgroup_values_like_the_kubelet() {
    let v = cgroup_values(&container("c")).expect("none");
    assert_eq!(
        v,
        CgroupValues {
            cpu_shares: 2,
            cpu_quota: None,
            memory_limit: None
        }
    );
    let v = cgroup_values(&resources(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")])).expect("burstable");
    assert_eq!(v.cpu_shares, 256);
    assert_eq!(v.cpu_quota, Some(50_000));
    assert_eq!(v.memory_limit, Some(64 << 20));
    // Limit only: shares from the limit.
    let v = cgroup_values(&resources(&[], &[("cpu", "2")])).expect("limit only");
    assert_eq!((v.cpu_shares, v.cpu_quota), (2048, Some(200_000)));
    // Tiny values hit the floors.
    let v = cgroup_values(&resources(&[("cpu", "1m")], &[("cpu", "1m")])).expect("tiny");
    assert_eq!((v.cpu_shares, v.cpu_quota), (2, Some(1000)));
    // Huge requests hit the ceiling.
    let v = cgroup_values(&resources(&[("cpu", "1000")], &[])).expect("huge");
    assert_eq!(v.cpu_shares, 262_144);
    for (req, lim) in [(vec![("cpu", "lots")], vec![]), (vec![], vec![("memory", "-5Mi")])] {
        assert!(matches!(
            cgroup_values(&resources(&req, &lim)),
            Err(BundleError::BadQuantity { .. })
        ));
    }
}

#[test]
fn cpu_weight_from_shares() {
    // The ends of both ranges and the defaults meet; 250m (256 shares) as current runtimes
    // give it.
    let cases = [
        (0, 1),
        (2, 1),
        (256, 35),
        (1024, 100),
        (262_144, 10_000),
        (1 << 30, 10_000),
    ];
    for (shares, weight) in cases {
        assert_eq!(cpu_weight(shares), weight, "{shares} shares");
    }
    let weights: Vec<u64> = (2..=262_144).step_by(97).map(cpu_weight).collect();
    assert!(weights.windows(2).all(|w| w[0] <= w[1]), "monotonic");
}

#[test]
fn cgroup_v2_sets_the_cpu_weight() {
    let mut case = Case::new(resources(&[("cpu", "250m")], &[]));
    let unified = |s: &Spec| {
        s.linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .and_then(|r| r.unified().clone())
    };
    assert_eq!(unified(&case.spec()), None, "cgroup v1: shares alone");
    case.pod.cgroup_v2 = true;
    let s = case.spec();
    assert_eq!(
        unified(&s),
        Some(HashMap::from([("cpu.weight".to_string(), "35".to_string())]))
    );
    let cpu = s
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .and_then(|r| r.cpu().clone());
    assert_eq!(cpu.and_then(|c| c.shares()), Some(256), "shares stay, for v1 readers");
}

#[test]
fn resources_reach_the_spec() {
    let mut case = Case::new(resources(&[("cpu", "100m")], &[("cpu", "1"), ("memory", "32Mi")]));
    case.pod.pids_limit = Some(512);
    case.pod.oom_score_adj = Some(-997);
    let s = case.spec();
    let linux = s.linux().as_ref().expect("linux");
    let r = linux.resources().as_ref().expect("resources");
    let cpu = r.cpu().as_ref().expect("cpu");
    assert_eq!(cpu.shares(), Some(102));
    assert_eq!(cpu.quota(), Some(100_000));
    assert_eq!(cpu.period(), Some(CPU_PERIOD_US));
    assert_eq!(r.memory().as_ref().and_then(|m| m.limit()), Some(32 << 20));
    assert_eq!(r.pids().as_ref().map(|p| p.limit()), Some(512));
    assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/skiff/pod1/c1")));
    assert_eq!(s.process().as_ref().and_then(|p| p.oom_score_adj()), Some(-997));
    let devices = r.devices().as_ref().expect("devices");
    assert!(!devices[0].allow(), "deny all first");
    assert!(devices.len() > 5);
    assert!(matches!(
        Case::new(resources(&[], &[("memory", "many")])).err(),
        BundleError::BadQuantity { field, .. } if field == "resources.limits.memory"
    ));
}

fn ns(s: &Spec) -> Vec<(String, Option<PathBuf>)> {
    s.linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .map(|n| (n.typ().to_string(), n.path().clone()))
        .collect()
}

#[test]
fn namespaces_new_joined_or_host() {
    let case = Case::new(container("c"));
    let s = case.spec();
    let names: Vec<String> = ns(&s).into_iter().map(|(t, _)| t).collect();
    assert_eq!(names, ["mnt", "net", "ipc", "uts", "pid"]);
    assert_eq!(s.hostname().as_deref(), Some("web-0"));

    let mut case = Case::new(container("c"));
    case.pod.network = NamespaceMode::Join("/run/skiff/netns/pod1".into());
    case.pod.ipc = NamespaceMode::Join("/run/skiff/ipcns/pod1".into());
    case.pod.uts = NamespaceMode::Join("/run/skiff/utsns/pod1".into());
    case.pod.cgroup_namespace = true;
    let s = case.spec();
    assert_eq!(
        ns(&s),
        [
            ("mnt".to_string(), None),
            ("net".to_string(), Some(PathBuf::from("/run/skiff/netns/pod1"))),
            ("ipc".to_string(), Some(PathBuf::from("/run/skiff/ipcns/pod1"))),
            ("uts".to_string(), Some(PathBuf::from("/run/skiff/utsns/pod1"))),
            ("pid".to_string(), None),
            ("cgroup".to_string(), None),
        ]
    );
    assert_eq!(
        s.hostname(),
        &None,
        "a joined UTS namespace keeps the sandbox's hostname"
    );
    assert_eq!(env_map(&s).get("HOSTNAME").map(String::as_str), Some("web-0"));

    let mut case = Case::new(container("c"));
    case.pod.network = NamespaceMode::Host;
    let names: Vec<String> = ns(&case.spec()).into_iter().map(|(t, _)| t).collect();
    assert_eq!(names, ["mnt", "ipc", "uts", "pid"]);
}

fn destinations(s: &Spec) -> Vec<String> {
    s.mounts()
        .as_ref()
        .expect("mounts")
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect()
}

#[test]
fn default_mounts_and_replacements() {
    let defaults = [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/shm",
    ];
    let s = Case::new(container("c")).spec();
    assert_eq!(destinations(&s), defaults);
    let linux = s.linux().as_ref().expect("linux");
    assert!(linux
        .masked_paths()
        .as_ref()
        .is_some_and(|m| m.contains(&"/proc/kcore".to_string())));
    assert!(linux
        .readonly_paths()
        .as_ref()
        .is_some_and(|m| m.contains(&"/proc/sys".to_string())));

    let mut case = Case::new(container("c"));
    case.mounts = vec![
        bind_mount(Path::new("/run/skiff/pods/p1/shm"), "/dev/shm", false).expect("shm"),
        bind_mount(Path::new("/run/skiff/pods/p1/hosts"), "/etc/hosts", true).expect("hosts"),
    ];
    let s = case.spec();
    // /dev/shm is replaced where it stands; /etc/hosts comes after the defaults.
    assert_eq!(destinations(&s), [&defaults[..], &["/etc/hosts"]].concat());
    let shm = &s.mounts().as_ref().expect("mounts")[6];
    assert_eq!(shm.typ().as_deref(), Some("bind"));
    let hosts = &s.mounts().as_ref().expect("mounts")[7];
    assert!(hosts.options().as_ref().is_some_and(|o| o.contains(&"ro".to_string())));
}

#[test]
fn security_context_flags() {
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        ..Default::default()
    });
    let s = Case::new(c).spec();
    assert!(s.root().as_ref().expect("root").readonly().unwrap_or(false));
    assert_eq!(s.process().as_ref().and_then(|p| p.no_new_privileges()), Some(true));

    let plain = Case::new(container("c")).spec();
    assert!(
        plain.process().as_ref().is_some_and(|p| p.rlimits().is_none()),
        "rlimits inherited"
    );
    assert!(plain.annotations().is_none());
    assert!(!plain.root().as_ref().expect("root").readonly().unwrap_or(false));
    assert_eq!(
        plain.process().as_ref().and_then(|p| p.no_new_privileges()),
        Some(false)
    );

    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        privileged: Some(true),
        allow_privilege_escalation: Some(false),
        ..Default::default()
    });
    let s = Case::new(c).spec();
    let linux = s.linux().as_ref().expect("linux");
    assert!(linux.masked_paths().is_none());
    assert!(linux.readonly_paths().is_none());
    let devices = linux
        .resources()
        .as_ref()
        .and_then(|r| r.devices().clone())
        .expect("devices");
    assert!(devices.len() == 1 && devices[0].allow());
    assert_eq!(s.process().as_ref().and_then(|p| p.no_new_privileges()), Some(false));
    let sys = s
        .mounts()
        .as_ref()
        .expect("mounts")
        .iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .cloned();
    assert!(sys
        .and_then(|m| m.options().clone())
        .is_some_and(|o| o.contains(&"rw".to_string())));
}

#[test]
fn sysctls_and_tty() {
    let mut c = container("c");
    c.tty = Some(true);
    let mut case = Case::new(c);
    case.pod.security = Some(PodSecurityContext {
        sysctls: Some(vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".into(),
            value: "0".into(),
        }]),
        ..Default::default()
    });
    let s = case.spec();
    assert_eq!(
        s.linux()
            .as_ref()
            .and_then(|l| l.sysctl().clone())
            .and_then(|m| m.get("net.ipv4.ip_unprivileged_port_start").cloned())
            .as_deref(),
        Some("0")
    );
    assert_eq!(s.process().as_ref().and_then(|p| p.terminal()), Some(true));
}

#[test]
fn config_json_round_trips() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Case::new(container("c")).spec();
    write_config(dir.path(), &s).expect("write");
    let back: Spec =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).expect("read")).expect("parse");
    assert_eq!(back, s);
    let text = std::fs::read_to_string(dir.path().join("config.json")).expect("read");
    assert!(
        text.contains("\"CAP_CHOWN\""),
        "capabilities are written with their CAP_ names"
    );
}

#[test]
fn exec_processes_keep_the_containers_identity() {
    let mut c = container("c");
    c.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    let s = Case::new(c).spec();
    let p = exec_process(&s, vec!["ls".into(), "-l".into()], false).expect("exec");
    assert_eq!(p.args().clone(), strings(&["ls", "-l"]));
    assert_eq!(p.user().uid(), 1000);
    assert_eq!(p.env(), s.process().as_ref().expect("process").env());
    assert_eq!(p.cwd(), Path::new("/srv"));
    assert!(matches!(
        exec_process(&s, vec![], false),
        Err(BundleError::NoCommand { .. })
    ));
    let dir = tempfile::tempdir().expect("dir");
    write_config(dir.path(), &s).expect("write");
    assert_eq!(read_config(dir.path()).expect("read"), s);
    let missing = dir.path().join("none");
    let err = read_config(&missing).expect_err("no config");
    assert!(matches!(err, BundleError::Io(_)));
    assert!(
        err.to_string()
            .starts_with(&format!("writing bundle {}/config.json: ", missing.display())),
        "{err}"
    );
}
