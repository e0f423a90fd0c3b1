//! Containers end to end, as the agent will run them: an image built from busybox-static and
//! imported into the image store, a bundle from a Kubernetes container spec, an overlayfs
//! root, and a detached shim that runs the container through the OCI runtime contract.
//!
//! The same conformance suite runs against the built-in runtime (`skiff oci-runtime`) and runc
//! (`apt-get install runc`; `scripts/test.sh` installs it).
//!
//! **These tests need root** (mounts, namespaces, cgroups) and fail, rather than pass
//! silently, without it. Each test re-executes itself in a private mount namespace
//! (`unshare --mount --propagation private`), so the overlay mounts it makes vanish with it;
//! containers get network namespaces of their own (no interfaces but loopback). Drop guards
//! delete containers, unmount roots and remove the test's cgroups.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, SecurityContext};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use oci_spec::runtime::Mount;
use skiff_runtime::bundle::{self, ContainerInput, PodContext};
use skiff_runtime::oci::{OciRuntime, RuntimeSelector, Status};
use skiff_runtime::shim::{self, log::parse, ShimConfig, ShimState, ShimStatus};
use skiff_runtime::testing::{self, layer, Compression, ManifestKind};
use skiff_runtime::{rootfs, ImageRecord, ImageStore, Platform};

#[path = "support/vm.rs"]
mod vm;

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");
const IN_NS: &str = "SKIFF_CONTAINER_TEST_IN_NS";
const WAIT: Duration = Duration::from_secs(30);

/// Runs the test `name` of this binary again inside a private mount namespace and reports its
/// result; `true` means "this is that run: do the work".
fn in_private_mount_ns(name: &str) -> bool {
    assert!(
        testing::is_root(),
        "container tests need root (mounts, namespaces, cgroups); run them as root as CI does"
    );
    if std::env::var_os(IN_NS).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([name, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(IN_NS, "1")
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{name} failed in its mount namespace");
    assert!(stdout.contains("1 passed"), "{name} did not run in its mount namespace");
    false
}

/// The busybox applets the tests use, linked in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "id", "sleep", "cat", "touch", "tail", "echo", "pwd", "ls", "readlink", "head", "tr", "seq", "tty", "stty",
];

/// A test image: busybox with applets, `/etc/passwd` with an `app` user, `/tmp`.
fn test_image() -> testing::TestImage {
    let base = layer(|l| {
        l.dir("bin", 0o755).busybox("bin/busybox");
        for a in APPLETS {
            l.symlink(&format!("bin/{a}"), "busybox");
        }
        l.dir("etc", 0o755)
            .file(
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
                0o644,
            )
            .file("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644)
            .dir("tmp", 0o1777)
            .dir("srv", 0o755);
    });
    let top = layer(|l| {
        l.dir("srv", 0o755).file("srv/motd", b"from the top layer\n", 0o644);
    });
    testing::image(
        ManifestKind::Oci,
        &Platform::host().architecture,
        &[(base, Compression::Gzip), (top, Compression::None)],
    )
}

/// A runtime under test, a data dir with the test image, and the test's cgroup parent.
struct Node {
    data: tempfile::TempDir,
    store: ImageStore,
    image: ImageRecord,
    selector: RuntimeSelector,
    cgroup_parent: String,
}

impl Node {
    fn new(runtime: &str) -> Self {
        let selector = match runtime {
            "builtin" => RuntimeSelector::Builtin { exe: SKIFF.into() },
            "runc" => {
                let found = Command::new("runc").arg("--version").output();
                assert!(
                    found.is_ok_and(|o| o.status.success()),
                    "runc is not installed (apt-get install runc; scripts/test.sh does)"
                );
                RuntimeSelector::External { program: "runc".into() }
            }
            other => panic!("unknown runtime {other}"),
        };
        let data = testing::data_dir();
        let store = ImageStore::open(data.path()).expect("store");
        let archive = data.path().join("image.tar");
        testing::write_oci_archive(&archive, &[("registry.test/busybox:1", &test_image())]);
        let image = skiff_runtime::import_archive(&store, &archive, &Platform::host())
            .expect("import")
            .remove(0);
        let cgroup_parent = format!("/skiff-test-{}-{}", std::process::id(), runtime);
        Self {
            data,
            store,
            image,
            selector,
            cgroup_parent,
        }
    }

    fn runtime(&self) -> OciRuntime {
        OciRuntime::new(self.selector.clone(), self.data.path().join("runtime"))
    }

    /// Prepares the container's root and bundle (not started).
    fn prepare(&self, id: &str, c: &Container, pod: &PodContext) -> Prepared<'_> {
        self.prepare_with(id, c, pod, rootfs::RootfsMode::Overlay)
    }

    fn prepare_with(&self, id: &str, c: &Container, pod: &PodContext, mode: rootfs::RootfsMode) -> Prepared<'_> {
        self.prepare_full(id, c, pod, mode, vec![])
    }

    fn prepare_mounts(&self, id: &str, c: &Container, pod: &PodContext, mounts: Vec<Mount>) -> Prepared<'_> {
        self.prepare_full(id, c, pod, rootfs::RootfsMode::Overlay, mounts)
    }

    fn prepare_full(
        &self,
        id: &str,
        c: &Container,
        pod: &PodContext,
        mode: rootfs::RootfsMode,
        mounts: Vec<Mount>,
    ) -> Prepared<'_> {
        let dir = self.data.path().join("containers").join(id);
        let root = rootfs::prepare(&self.store, &self.image, &dir, mode).expect("rootfs");
        let want = match mode {
            rootfs::RootfsMode::Copy => rootfs::RootfsKind::Copy,
            _ => rootfs::RootfsKind::Overlay,
        };
        assert_eq!(root.kind, want);
        let (passwd, group) = rootfs::user_files(&root.path);
        let image_config = self.store.config(&self.image).expect("image config");
        let env = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        let spec = bundle::container_spec(&ContainerInput {
            container: c,
            image: &image_config,
            pod,
            env,
            rootfs: root.path.clone(),
            mounts,
            cgroups_path: format!("{}/{id}", self.cgroup_parent),
            passwd,
            group,
        })
        .expect("bundle");
        bundle::write_config(&dir, &spec).expect("config.json");
        Prepared {
            node: self,
            id: id.to_string(),
            dir,
        }
    }

    /// Prepares and starts a container through a shim.
    fn run(&self, id: &str, c: &Container) -> (Prepared<'_>, ShimState, Duration) {
        let p = self.prepare(id, c, &pod());
        let started = Instant::now();
        let state = shim::spawn(Path::new(SKIFF), &p.dir, &p.shim_config()).expect("shim started the container");
        let took = started.elapsed();
        (p, state, took)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Runtimes remove the containers' cgroups on delete; the parent is ours.
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for hierarchy in rd.flatten() {
                let _ = std::fs::remove_dir(hierarchy.path().join(self.cgroup_parent.trim_start_matches('/')));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(self.cgroup_parent.trim_start_matches('/')));
    }
}

/// A container's directory; deleted (forcibly), unmounted and removed on drop.
struct Prepared<'a> {
    node: &'a Node,
    id: String,
    dir: PathBuf,
}

impl Prepared<'_> {
    fn shim_config(&self) -> ShimConfig {
        ShimConfig {
            id: self.id.clone(),
            bundle: self.dir.clone(),
            runtime: self.node.selector.clone(),
            runtime_root: self.node.data.path().join("runtime"),
            log_path: self.log_path(),
            log_max_size: shim::DEFAULT_LOG_MAX_SIZE,
            log_max_files: 2,
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log/0.log")
    }

    fn wait(&self) -> ShimState {
        shim::wait_for_exit(&self.dir, WAIT).expect("container exits")
    }

    /// The container's log as (stream, text) of full lines.
    fn log(&self) -> Vec<(String, String)> {
        parse(&std::fs::read_to_string(self.log_path()).unwrap_or_default())
            .into_iter()
            .map(|e| (e.stream, e.text))
            .collect()
    }

    fn stdout(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|(s, _)| s == "stdout")
            .map(|(_, t)| t)
            .collect()
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        let rt = self.node.runtime();
        let _ = rt.delete(&self.id, true);
        // The shim exits once the container is gone; give it a moment to record that.
        let _ = shim::wait_for_exit(&self.dir, Duration::from_secs(5));
        if let Err(e) = rootfs::remove(&self.dir) {
            eprintln!("cleanup of {}: {e}", self.dir.display());
        }
    }
}

fn pod() -> PodContext {
    PodContext {
        hostname: Some("test-pod".into()),
        host_capabilities: skiff_runtime::oci::host_capabilities(),
        // As the agent decides them: on a cgroup v2 host, a cgroup namespace of its own and
        // the CPU weight set in the spec.
        cgroup_namespace: skiff_runtime::oci::cgroup_v2_host(),
        cgroup_v2: skiff_runtime::oci::cgroup_v2_host(),
        ..Default::default()
    }
}

fn sh(name: &str, script: &str) -> Container {
    Container {
        name: name.into(),
        command: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

/// A child process killed (and reaped) when the test ends, even by a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Rss` and `Pss` (shared pages divided among their users) of a process, for the record.
fn memory_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Rss:") || l.starts_with("Pss:") || l.starts_with("Private_Dirty:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            // The state field follows the parenthesised command name.
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z" && st != "X"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Polls `f` until it holds (bounded), for state written by other processes.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// The conformance cases, each run against one runtime.

fn echo_exit_code_and_logs(runtime: &str) {
    let node = Node::new(runtime);
    let c = sh(
        "echo",
        "echo hello; echo oops >&2; cat /srv/motd; printf 'no newline'; exit 3",
    );
    let (p, state, took) = node.run("echo", &c);
    println!("{runtime}: shim spawn (create + start) took {took:?}");
    assert_eq!(state.status, ShimStatus::Running);
    assert!(state.pid.is_some_and(|p| p > 0));
    let end = p.wait();
    assert_eq!(end.status, ShimStatus::Exited);
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(end.signal, None);
    assert!(!end.oom_killed);
    assert!(end.finished_at >= end.started_at);
    let log = p.log();
    assert!(log.contains(&("stdout".into(), "hello".into())), "{log:?}");
    assert!(log.contains(&("stderr".into(), "oops".into())), "{log:?}");
    assert!(log.contains(&("stdout".into(), "from the top layer".into())), "{log:?}");
    assert!(log.contains(&("stdout".into(), "no newline".into())), "{log:?}");
    let raw = std::fs::read_to_string(p.log_path()).expect("log");
    let first = raw.lines().next().expect("a line");
    let time = first.split(' ').next().expect("time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z') && time.len() == 30,
        "CRI time with nanoseconds: {first}"
    );
    // The runtime still knows the stopped container until it is deleted.
    let rt = node.runtime();
    assert_eq!(rt.state("echo").expect("state").status, Status::Stopped);
    rt.delete("echo", false).expect("delete");
    assert!(matches!(
        rt.state("echo"),
        Err(skiff_runtime::oci::RuntimeError::NotFound { .. })
    ));
}

fn sigterm_and_sigkill_are_recorded(runtime: &str) {
    let node = Node::new(runtime);
    let c = sh(
        "term",
        "trap 'echo got TERM; exit 7' TERM; echo ready; while true; do sleep 1; done",
    );
    let (p, state, _) = node.run("term", &c);
    eventually("ready", || p.stdout().contains(&"ready".to_string()));
    let rt = node.runtime();
    let st = rt.state("term").expect("state");
    assert_eq!(st.status, Status::Running);
    assert_eq!(st.pid, state.pid);
    rt.kill("term", 15).expect("SIGTERM");
    let end = p.wait();
    assert_eq!(end.exit_code, Some(7));
    assert!(p.stdout().contains(&"got TERM".to_string()));
    // PID 1 of a namespace ignores SIGTERM without a handler; SIGKILL always works.
    let c = sh("stubborn", "echo ready; while true; do sleep 1; done");
    let (p2, _, _) = node.run("stubborn", &c);
    eventually("ready", || p2.stdout().contains(&"ready".to_string()));
    rt.kill("stubborn", 9).expect("SIGKILL");
    let end = p2.wait();
    assert_eq!((end.exit_code, end.signal), (Some(137), Some(9)));
    // Signalling a stopped container is a typed error, not a panic.
    assert!(
        matches!(
            rt.kill("stubborn", 9),
            Err(skiff_runtime::oci::RuntimeError::NotRunning { .. })
        ),
        "{:?}",
        rt.kill("stubborn", 9)
    );
    assert!(matches!(
        rt.kill("never-created", 9),
        Err(skiff_runtime::oci::RuntimeError::NotFound { .. })
    ));
}

fn env_args_working_dir_and_user(runtime: &str) {
    let node = Node::new(runtime);
    let mut c = sh(
        "whoami",
        "id -u; id -g; id -G; pwd; echo $FOO; echo $GREETING; echo $HOSTNAME; echo \"$@\"",
    );
    c.args = Some(vec!["argv0".into(), "a1".into(), "a 2".into()]);
    c.working_dir = Some("/srv".into());
    c.env = Some(vec![
        k8s_openapi::api::core::v1::EnvVar {
            name: "FOO".into(),
            value: Some("bar".into()),
            ..Default::default()
        },
        k8s_openapi::api::core::v1::EnvVar {
            name: "GREETING".into(),
            value: Some("hi $(FOO)".into()),
            ..Default::default()
        },
    ]);
    c.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        run_as_group: Some(1000),
        ..Default::default()
    });
    let (p, _, _) = node.run("whoami", &c);
    let end = p.wait();
    assert_eq!(end.exit_code, Some(0), "{:?}", p.log());
    assert_eq!(
        p.stdout(),
        ["1000", "1000", "1000", "/srv", "bar", "hi bar", "test-pod", "a1 a 2"],
        "{:?}",
        p.log()
    );
}

fn read_only_root_refuses_writes(runtime: &str) {
    let node = Node::new(runtime);
    let mut c = sh("ro", "touch /newfile && exit 0; touch /tmp/x 2>/dev/null; exit 42");
    c.security_context = Some(SecurityContext {
        read_only_root_filesystem: Some(true),
        ..Default::default()
    });
    let (p, _, _) = node.run("ro", &c);
    assert_eq!(p.wait().exit_code, Some(42), "{:?}", p.log());
    assert!(
        p.log()
            .iter()
            .any(|(s, t)| s == "stderr" && t.contains("Read-only file system")),
        "{:?}",
        p.log()
    );
    // Without the flag the same write works, and lands in the container's upper dir only.
    let c = sh("rw", "touch /newfile && exit 0; exit 42");
    let (p, _, _) = node.run("rw", &c);
    assert_eq!(p.wait().exit_code, Some(0), "{:?}", p.log());
    assert!(p.dir.join("upper/newfile").exists());
}

fn copied_root_and_log_rotation(runtime: &str) {
    let node = Node::new(runtime);
    let script = "head -c 40000 /dev/zero | tr '\\0' x; echo; seq 1 300; echo done";
    let p = node.prepare_with("copied", &sh("copied", script), &pod(), rootfs::RootfsMode::Copy);
    let cfg = ShimConfig {
        log_max_size: 8 * 1024,
        log_max_files: 3,
        ..p.shim_config()
    };
    shim::spawn(Path::new(SKIFF), &p.dir, &cfg).expect("start");
    assert_eq!(p.wait().exit_code, Some(0), "{:?}", p.log());
    // Rotated by size, three files kept in all.
    let rotated = |n: usize| shim::log::LogFile::rotated_path(&p.log_path(), n);
    assert!(rotated(1).exists() && rotated(2).exists() && !rotated(3).exists());
    for f in [p.log_path(), rotated(1)] {
        let size = std::fs::metadata(&f).expect("log file").len();
        assert!(size <= 8 * 1024 + 100, "{} is {size} bytes", f.display());
    }
    let current = p.stdout();
    assert_eq!(current.last().map(String::as_str), Some("done"));
    // The 40,000-character line (rotated away above) is cut into partial entries: check the
    // splitting on a fresh container with a roomy log.
    let p2 = node.prepare(
        "long",
        &sh("long", "head -c 40000 /dev/zero | tr '\\0' x; echo"),
        &pod(),
    );
    shim::spawn(Path::new(SKIFF), &p2.dir, &p2.shim_config()).expect("start");
    assert_eq!(p2.wait().exit_code, Some(0));
    let entries = parse(&std::fs::read_to_string(p2.log_path()).expect("log"));
    let partial: Vec<bool> = entries.iter().map(|e| e.partial).collect();
    assert_eq!(partial, [true, true, false], "16 KiB pieces");
    assert_eq!(entries.iter().map(|e| e.text.len()).sum::<usize>(), 40000);
}

fn manager_stops_gracefully_and_removes(runtime: &str) {
    let node = Node::new(runtime);
    let manager = skiff_runtime::ContainerManager::new(
        &node.data.path().join("node"),
        node.store.clone(),
        node.selector.clone(),
        &node.data.path().join("runtime"),
        Path::new(SKIFF),
    )
    .expect("manager");
    let pod = pod();
    let start = |id: &str, script: &str| {
        let c = sh(id, script);
        manager.start(&skiff_runtime::ContainerRequest {
            id: id.into(),
            image: &node.image,
            container: &c,
            pod: &pod,
            env: vec![],
            mounts: vec![],
            cgroups_path: format!("{}/{id}", node.cgroup_parent),
            log_path: node.data.path().join(format!("logs/{id}/0.log")),
        })
    };
    let ready = |id: &str| {
        let log = node.data.path().join(format!("logs/{id}/0.log"));
        eventually("ready", || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready"))
        });
    };
    start("polite", "trap 'echo bye; exit 0' TERM; echo ready; sleep 1000 & wait").expect("start");
    start("stubborn", "trap '' TERM; echo ready; while true; do sleep 1; done").expect("start");
    ready("polite");
    ready("stubborn");
    // The same ID again is refused and leaves the running container alone.
    assert!(matches!(
        start("polite", "exit 0"),
        Err(skiff_runtime::ContainerError::Runtime(
            skiff_runtime::RuntimeError::AlreadyExists { .. }
        ))
    ));
    assert_eq!(manager.state("polite").expect("state").status, ShimStatus::Running);

    let t = Instant::now();
    let s = manager.stop("polite", Duration::from_secs(5)).expect("stop");
    let polite = t.elapsed();
    assert_eq!(s.exit_code, Some(0));
    assert!(
        polite < Duration::from_secs(2),
        "a process that exits on SIGTERM stops at once: {polite:?}"
    );
    let t = Instant::now();
    let s = manager.stop("stubborn", Duration::from_secs(2)).expect("stop");
    let stubborn = t.elapsed();
    assert_eq!((s.exit_code, s.signal), (Some(137), Some(9)));
    assert!(
        stubborn >= Duration::from_secs(2) && stubborn < Duration::from_secs(5),
        "SIGKILL after the grace period: {stubborn:?}"
    );
    println!("{runtime}: stop took {polite:?} (exits on SIGTERM) and {stubborn:?} (ignores it, 2 s grace)");
    // A container whose shim was killed: stop still ends it and records the lost status.
    start("orphan", "echo ready; while true; do sleep 1; done").expect("start");
    ready("orphan");
    let st = manager.state("orphan").expect("state");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(st.shim_pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill the shim");
    eventually("the shim to go", || !st.shim_alive(&manager.dir("orphan")));
    assert!(matches!(
        shim::adopt(&manager.dir("orphan")),
        Ok(shim::Adoption::Orphaned(_))
    ));
    let s = manager.stop("orphan", Duration::from_secs(1)).expect("stop an orphan");
    assert_eq!((s.status, s.exit_code), (ShimStatus::Exited, None));
    assert!(!pid_alive(st.pid.expect("pid")));
    manager.remove("orphan").expect("remove");
    // After a reboot: the state says running, the shim and the runtime's state are gone.
    start("rebooted", "echo ready; while true; do sleep 1; done").expect("start");
    ready("rebooted");
    let st = manager.state("rebooted").expect("state");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(st.shim_pid).expect("pid"),
        rustix::process::Signal::KILL,
    )
    .expect("kill the shim");
    manager
        .runtime()
        .delete("rebooted", true)
        .expect("forget the container");
    let s = manager
        .stop("rebooted", Duration::from_secs(1))
        .expect("stop after a reboot");
    assert_eq!((s.status, s.exit_code), (ShimStatus::Exited, None));
    manager.remove("rebooted").expect("remove");
    // Stopping again is fine; listing finds both, finished.
    manager.stop("polite", Duration::from_secs(1)).expect("stop again");
    let listed = manager.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|l| matches!(l.adoption, Ok(shim::Adoption::Finished(_)))));
    for id in ["polite", "stubborn"] {
        manager.remove(id).expect("remove");
        manager.remove(id).expect("remove again");
        assert!(!manager.dir(id).exists());
        assert!(matches!(
            manager.runtime().state(id),
            Err(skiff_runtime::RuntimeError::NotFound { .. })
        ));
    }
    assert!(manager.list().expect("list").is_empty());
    // A bad container spec fails before anything runs and leaves nothing behind.
    let c = Container {
        name: "bad".into(),
        resources: Some(ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity("lots".into()))].into()),
            ..Default::default()
        }),
        ..sh("bad", "exit 0")
    };
    let err = manager
        .start(&skiff_runtime::ContainerRequest {
            id: "bad".into(),
            image: &node.image,
            container: &c,
            pod: &pod,
            env: vec![],
            mounts: vec![],
            cgroups_path: format!("{}/bad", node.cgroup_parent),
            log_path: node.data.path().join("logs/bad/0.log"),
        })
        .expect_err("bad quantity");
    assert!(matches!(err, skiff_runtime::ContainerError::Config(_)), "{err}");
    assert!(!manager.dir("bad").exists());
}

fn exec_runs_as_the_container(runtime: &str) {
    let node = Node::new(runtime);
    let mut c = sh("execd", "echo ready; while true; do sleep 1; done");
    c.env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
        name: "FOO".into(),
        value: Some("from-env".into()),
        ..Default::default()
    }]);
    c.security_context = Some(SecurityContext {
        run_as_user: Some(1000),
        ..Default::default()
    });
    let (p, state, _) = node.run("execd", &c);
    eventually("ready", || p.stdout().contains(&"ready".to_string()));
    let spec = bundle::read_config(&p.dir).expect("config");
    let rt = node.runtime();
    let exec = |args: &[&str]| {
        let out = tempfile::NamedTempFile::new().expect("out");
        let process =
            bundle::exec_process(&spec, args.iter().map(|a| a.to_string()).collect(), false).expect("process");
        let stdio = skiff_runtime::ContainerStdio {
            stdout: Some(out.reopen().expect("reopen").into()),
            ..Default::default()
        };
        let code = rt.exec("execd", &process, stdio, &p.dir);
        (code, std::fs::read_to_string(out.path()).expect("output"))
    };
    let (code, out) = exec(&[
        "sh",
        "-c",
        "id -u; echo $FOO; pwd; cat /proc/1/cmdline | tr '\\0' ' '; exit 5",
    ]);
    assert_eq!(code.expect("exec"), 5);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["1000", "from-env", "/"], "{out}");
    assert!(
        lines[3].starts_with("/bin/sh -c echo ready"),
        "the exec joined the container's PID namespace: {out}"
    );
    let (code, _) = exec(&["/bin/not-there"]);
    assert!(code.is_err(), "a missing command is the runtime's error: {code:?}");
    // The exec'd processes did not disturb the container.
    assert_eq!(rt.state("execd").expect("state").pid, state.pid);
    rt.kill("execd", 9).expect("kill");
    p.wait();
    let (code, _) = exec(&["true"]);
    assert!(
        matches!(
            code,
            Err(skiff_runtime::RuntimeError::NotRunning { .. }) | Err(skiff_runtime::RuntimeError::Failed { .. })
        ),
        "exec in a stopped container: {code:?}"
    );
}

/// A terminal pair: the master (the agent's side) and the slave (the runtime's stdio).
fn terminal() -> (std::fs::File, std::fs::File) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("name"))
        .expect("open the slave");
    (std::fs::File::from(master), slave)
}

fn set_size(master: &std::fs::File, rows: u16, cols: u16) {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master, ws).expect("set the terminal size");
}

/// `exec` of a terminal process, as `kubectl exec -it` asks for it: the runtime, with a
/// terminal as its stdio and controlling terminal, gives the process a terminal of the
/// container's, copies between the two, and follows the outer terminal's size.
fn exec_on_a_terminal(runtime: &str) {
    let node = Node::new(runtime);
    let c = sh("termd", "echo ready; while true; do sleep 1; done");
    let (p, _, _) = node.run("termd", &c);
    eventually("ready", || p.stdout().contains(&"ready".to_string()));
    let spec = bundle::read_config(&p.dir).expect("config");
    // The runtime makes the container's terminal and sizes it once the process has it (runc
    // and the built-in runtime alike, as containerd's shim does): a process that asks at
    // once can see no size yet (busybox's stty then fails), so it asks until it has one.
    let script = "tty; until [ -n \"$(stty size 2>/dev/null)\" ]; do sleep 0.1; done; stty size; \
                  read x; stty size; echo got-$x; exit 4";
    let process = bundle::exec_process(&spec, vec!["sh".into(), "-c".into(), script.into()], true).expect("process");
    let (master, slave) = terminal();
    set_size(&master, 33, 101);
    let stdio = skiff_runtime::ContainerStdio {
        stdin: Some(slave.try_clone().expect("dup").into()),
        stdout: Some(slave.try_clone().expect("dup").into()),
        stderr: Some(slave.into()),
        controlling_terminal: true,
        console_socket: None,
    };
    let rt = node.runtime().clone();
    let dir = p.dir.clone();
    let run = std::thread::spawn(move || rt.exec("termd", &process, stdio, &dir));
    let mut reader = master.try_clone().expect("dup");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        // Until EIO: nobody holds the terminal's other side any more.
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            screen.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&screen).into_owned());
        }
    });
    let mut screen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !screen.contains("33 101") {
        assert!(std::time::Instant::now() < deadline, "no terminal output: {screen:?}");
        if run.is_finished() {
            panic!("exec ended early: {:?}; screen: {screen:?}", run.join());
        }
        if let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
            screen = s;
        }
    }
    // Resized while it runs, then typed at.
    set_size(&master, 40, 120);
    std::thread::sleep(Duration::from_millis(800));
    (&master).write_all(b"abc\n").expect("type");
    let code = run.join().expect("exec thread").expect("exec");
    while let Ok(s) = rx.recv_timeout(Duration::from_secs(2)) {
        screen = s;
    }
    assert_eq!(code, 4, "{screen:?}");
    assert!(screen.contains("/dev/pts/"), "the process has a terminal: {screen:?}");
    assert!(screen.contains("40 120"), "the resize reached it: {screen:?}");
    assert!(screen.contains("got-abc"), "what was typed reached it: {screen:?}");
}

/// A client of a shim's attach socket: sends `hello`, returns the connection.
fn attach_client(dir: &Path, hello: &str) -> std::os::unix::net::UnixStream {
    let (path, _keep) = shim::attach::socket_path(dir, shim::attach::SOCKET).expect("socket path");
    let mut c = std::os::unix::net::UnixStream::connect(path).expect("connect to the attach socket");
    c.write_all(hello.as_bytes()).expect("hello");
    c
}

fn send_frame(c: &mut std::os::unix::net::UnixStream, kind: u8, data: &[u8]) {
    c.write_all(&shim::attach::header(kind, data.len())).expect("frame");
    c.write_all(data).expect("frame");
}

/// `kubectl run -it` / `kubectl attach`: a `tty` + `stdin` container gets a terminal the shim
/// holds; an attached client types into it and sees its output, which also reaches the log;
/// with `stdinOnce` the container's stdin ends when the client is done.
fn attach_to_a_terminal_container(runtime: &str) {
    let node = Node::new(runtime);
    let mut c = sh("term", "");
    c.command = Some(vec!["sh".into()]);
    c.args = None;
    c.tty = Some(true);
    c.stdin = Some(true);
    c.stdin_once = Some(true);
    let p = node.prepare("term", &c, &pod());
    let cfg = ShimConfig {
        stdin: true,
        stdin_once: true,
        tty: true,
        ..p.shim_config()
    };
    shim::spawn(Path::new(SKIFF), &p.dir, &cfg).expect("shim started the container");
    let mut client = attach_client(&p.dir, "{\"stdin\":true,\"stdout\":true,\"stderr\":true}\n");
    send_frame(&mut client, shim::attach::RESIZE, b"{\"Width\":99,\"Height\":22}");
    std::thread::sleep(Duration::from_millis(300));
    send_frame(&mut client, shim::attach::STDIN, b"tty; stty size; echo hi-$((40+2))\n");
    std::thread::sleep(Duration::from_millis(300));
    send_frame(&mut client, shim::attach::STDIN_CLOSE, b"");
    client.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut screen = Vec::new();
    while let Some((kind, data)) = shim::attach::read_frame(&mut client).expect("frame") {
        assert_eq!(kind, shim::attach::STDOUT, "a terminal has one output");
        screen.extend_from_slice(&data);
    }
    let screen = String::from_utf8_lossy(&screen);
    assert!(screen.contains("/dev/pts/"), "{screen:?}");
    assert!(screen.contains("22 99"), "the resize reached the terminal: {screen:?}");
    assert!(screen.contains("hi-42"), "{screen:?}");
    // The end of stdin (stdinOnce) ended the shell; its output is in the log too.
    let state = p.wait();
    assert_eq!(state.exit_code, Some(0), "{state:?}");
    assert!(p.log().iter().any(|(_, t)| t.contains("hi-42")), "{:?}", p.log());
}

/// A non-terminal container with `stdin`: attached clients write its stdin pipe and get
/// stdout and stderr apart.
fn attach_to_a_stdin_container(runtime: &str) {
    let node = Node::new(runtime);
    let mut c = sh("piped", "while read l; do echo out-$l; echo err-$l >&2; done; echo bye");
    c.stdin = Some(true);
    let p = node.prepare("piped", &c, &pod());
    let cfg = ShimConfig {
        stdin: true,
        ..p.shim_config()
    };
    shim::spawn(Path::new(SKIFF), &p.dir, &cfg).expect("shim started the container");
    let mut client = attach_client(&p.dir, "{\"stdin\":true,\"stdout\":true,\"stderr\":true}\n");
    std::thread::sleep(Duration::from_millis(200));
    send_frame(&mut client, shim::attach::STDIN, b"a\nb\n");
    client.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let (mut out, mut err) = (String::new(), String::new());
    while !(out.contains("out-b") && err.contains("err-b")) {
        let (kind, data) = shim::attach::read_frame(&mut client)
            .expect("frame")
            .expect("more output");
        match kind {
            shim::attach::STDOUT => out.push_str(&String::from_utf8_lossy(&data)),
            shim::attach::STDERR => err.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("unexpected frame {other}"),
        }
    }
    assert_eq!(out, "out-a\nout-b\n");
    assert_eq!(err, "err-a\nerr-b\n");
    // Without stdinOnce the client leaving does not end the container's stdin.
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.runtime().state("piped").expect("state").status, Status::Running);
    node.runtime().kill("piped", 9).expect("kill");
    p.wait();
}

fn capabilities_reach_the_process(runtime: &str) {
    let node = Node::new(runtime);
    let status_of = |id: &str, sc: Option<SecurityContext>| {
        let mut c = sh(id, "cat /proc/self/status");
        c.security_context = sc;
        let (p, _, _) = node.run(id, &c);
        assert_eq!(p.wait().exit_code, Some(0), "{:?}", p.log());
        let field = |name: &str| {
            p.stdout()
                .iter()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in {:?}", p.log()))
        };
        (field("CapEff:"), field("CapBnd:"), field("NoNewPrivs:"))
    };
    // Kubernetes' (containerd's) default set: the well-known a80425fb.
    assert_eq!(
        status_of("caps-default", None),
        ("00000000a80425fb".into(), "00000000a80425fb".into(), "0".into())
    );
    let narrowed = status_of(
        "caps-narrow",
        Some(SecurityContext {
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
                add: Some(vec!["NET_BIND_SERVICE".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        }),
    );
    assert_eq!(
        narrowed,
        ("0000000000000400".into(), "0000000000000400".into(), "1".into())
    );
    // Privileged: every capability the host has.
    let host_bounding = std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string()))
        .expect("CapBnd");
    let privileged = status_of(
        "caps-privileged",
        Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
    );
    assert_eq!((privileged.0, privileged.1), (host_bounding.clone(), host_bounding));
}

fn cgroup_limits_are_applied(runtime: &str) {
    let node = Node::new(runtime);
    // The container's own view: its cgroup membership and the limits it can read (what a
    // JVM or Go runtime sizes itself by).
    let script = "cat /proc/self/cgroup; echo --; \
                  if [ -e /sys/fs/cgroup/cgroup.controllers ]; then \
                    cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; \
                  else \
                    cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/memory/memory.limit_in_bytes \
                        /sys/fs/cgroup/pids/pids.max; \
                  fi; echo ready; while true; do sleep 1; done";
    let mut c = sh("limited", script);
    c.resources = Some(ResourceRequirements {
        requests: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
        limits: Some(
            [
                ("cpu".to_string(), Quantity("500m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ]
            .into(),
        ),
        ..Default::default()
    });
    let mut pod = pod();
    pod.pids_limit = Some(64);
    let p = node.prepare("limited", &c, &pod);
    shim::spawn(Path::new(SKIFF), &p.dir, &p.shim_config()).expect("start");
    eventually("ready", || p.stdout().contains(&"ready".to_string()));
    let cg = format!("{}/limited", node.cgroup_parent.trim_start_matches('/'));
    let read = |rel: String| {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(&rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_string()
    };
    let out = p.stdout();
    let split = out.iter().position(|l| l == "--").expect("the container's output");
    let ready = out.iter().position(|l| l == "ready").expect("ready");
    let (membership, limits) = (&out[..split], &out[split + 1..ready]);
    let init = shim::read_state(&p.dir).expect("state").pid.expect("pid");
    let v2 = skiff_runtime::oci::cgroup_v2_host();
    let procs = if v2 {
        assert_eq!(read(format!("{cg}/cpu.max")), "50000 100000");
        // The same weight from both runtimes (Skiff sets it; see `PodContext::cgroup_v2`).
        assert_eq!(read(format!("{cg}/cpu.weight")), bundle::cpu_weight(256).to_string());
        assert_eq!(read(format!("{cg}/memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(format!("{cg}/pids.max")), "64");
        // A cgroup namespace: the container is at the root of its own hierarchy, and its
        // /sys/fs/cgroup is its own cgroup.
        assert_eq!(membership, ["0::/"], "{out:?}");
        read(format!("{cg}/cgroup.procs"))
    } else {
        assert_eq!(read(format!("cpu/{cg}/cpu.shares")), "256");
        assert_eq!(read(format!("cpu/{cg}/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(format!("cpu/{cg}/cpu.cfs_period_us")), "100000");
        assert_eq!(
            read(format!("memory/{cg}/memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read(format!("pids/{cg}/pids.max")), "64");
        for controller in ["memory", "pids"] {
            assert!(
                membership
                    .iter()
                    .any(|l| l.contains(controller) && l.ends_with(&format!(":/{cg}"))),
                "{controller}: {out:?}"
            );
        }
        read(format!("memory/{cg}/cgroup.procs"))
    };
    let quota = if v2 { "50000 100000" } else { "50000" };
    assert_eq!(
        limits,
        [quota.to_string(), (64u64 << 20).to_string(), "64".to_string()],
        "the limits as the container sees them: {out:?}"
    );
    assert!(
        procs.lines().any(|l| l == init.to_string()),
        "init in its cgroup: {procs}"
    );
}

fn memory_limit_oom_is_recorded(runtime: &str) {
    let node = Node::new(runtime);
    // The init itself is the memory hog, so the OOM kill ends the container.
    let mut c = sh("oom", "echo start; exec tail /dev/zero");
    c.resources = Some(ResourceRequirements {
        limits: Some([("memory".to_string(), Quantity("16Mi".into()))].into()),
        ..Default::default()
    });
    let (p, _, _) = node.run("oom", &c);
    let end = p.wait();
    assert!(end.oom_killed, "OOM kill recorded: {end:?} {:?}", p.log());
    assert_eq!((end.exit_code, end.signal), (Some(137), Some(9)), "{end:?}");
    assert!(p.stdout().contains(&"start".to_string()));
}

fn survives_the_agent_being_killed(runtime: &str) {
    let node = Node::new(runtime);
    let c = sh("longrun", "echo ready; while true; do sleep 1; done");
    let p = node.prepare("longrun", &c, &pod());
    // A stand-in agent: this test binary in its helper mode starts the shim, then idles.
    let cfg = serde_json::to_string(&p.shim_config()).expect("config");
    let mut agent = KillOnDrop(
        Command::new(std::env::current_exe().expect("test binary"))
            .args(["helper_agent_process", "--exact", "--ignored", "--nocapture"])
            .env("SKIFF_TEST_AGENT_DIR", &p.dir)
            .env("SKIFF_TEST_AGENT_CONFIG", cfg)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("agent"),
    );
    eventually("the container to run", || {
        shim::read_state(&p.dir).is_ok_and(|s| s.status == ShimStatus::Running)
    });
    eventually("ready", || p.stdout().contains(&"ready".to_string()));
    let before = shim::read_state(&p.dir).expect("state");
    agent.0.kill().expect("SIGKILL the agent");
    agent.0.wait().expect("reap the agent");
    std::thread::sleep(Duration::from_millis(300));
    // The container, its PID and its shim are untouched; the state is readable for re-adoption.
    let after = shim::read_state(&p.dir).expect("state after the agent died");
    assert_eq!(after, before);
    let pid = after.pid.expect("pid");
    assert!(pid_alive(pid), "the container's init survived");
    assert!(after.shim_alive(&p.dir), "the shim survived");
    assert_eq!(
        shim::adopt(&p.dir).expect("adopt"),
        shim::Adoption::Supervised(after.clone())
    );
    println!("{runtime}: shim memory {}", memory_of(after.shim_pid));
    let rt = node.runtime();
    let st = rt.state("longrun").expect("runtime state");
    assert_eq!((st.status, st.pid), (Status::Running, Some(pid)));
    // The re-adopting agent stops it; the surviving shim records the exit.
    rt.kill("longrun", 9).expect("kill");
    let end = p.wait();
    assert_eq!(end.exit_code, Some(137));
    assert_eq!(end.pid, Some(pid));
}

fn bad_bundles_fail_cleanly(runtime: &str) {
    let node = Node::new(runtime);
    // A command that does not exist in the image: `create` fails with the runtime's message
    // (both runtimes check the executable before the container's process exists).
    let c = Container {
        name: "missing".into(),
        command: Some(vec!["/bin/does-not-exist".into()]),
        ..Default::default()
    };
    let p = node.prepare("missing", &c, &pod());
    match shim::spawn(Path::new(SKIFF), &p.dir, &p.shim_config()) {
        Err(shim::ShimError::Start { message, .. }) => {
            println!("{runtime}: a missing command: {message}");
            assert!(message.contains("does-not-exist"), "{message}");
            let s = shim::read_state(&p.dir).expect("state");
            assert_eq!(s.status, ShimStatus::Failed);
            assert_eq!(
                s.error.as_deref(),
                Some(message.trim_start_matches("starting container missing: "))
            );
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    // The failed container left nothing behind in the runtime: the ID is free again.
    assert!(matches!(
        node.runtime().state("missing"),
        Err(skiff_runtime::oci::RuntimeError::NotFound { .. })
    ));
    // Two containers cannot share an ID.
    let c = sh("dup", "sleep 30");
    let (p1, _, _) = node.run("dup", &c);
    let err = shim::spawn(
        Path::new(SKIFF),
        &node.data.path().join("containers/dup2"),
        &p1.shim_config(),
    );
    assert!(
        matches!(&err, Err(shim::ShimError::Start { message, .. }) if message.contains("already exists")),
        "a second container with the same id: {err:?}"
    );
    // The first one is untouched by the failed second create.
    let st = node.runtime().state("dup").expect("state");
    assert_eq!(st.status, Status::Running);
}

fn pod_containers_share_joined_namespaces(runtime: &str) {
    let node = Node::new(runtime);
    // A sandbox without a pause container: the pod's namespaces held by bind mounts.
    let sandbox_dir = node.data.path().join("sandbox");
    let sandbox = skiff_runtime::PodSandbox::create(
        &sandbox_dir,
        &skiff_runtime::SandboxOptions {
            network: true,
            ipc: true,
            hostname: Some("sandbox-host".into()),
        },
    )
    .expect("sandbox");
    assert!(sandbox.network.is_some() && sandbox.ipc.is_some() && sandbox.uts.is_some());
    assert_eq!(
        skiff_runtime::PodSandbox::open(&sandbox_dir),
        sandbox,
        "found again after a restart"
    );
    let mut pod = pod();
    sandbox.apply(&mut pod);
    // The first container leaves a file in /dev/shm; the second sees it.
    let script =
        "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; cat /proc/sys/kernel/hostname; echo $HOSTNAME; \
                  cat /dev/shm/note 2>/dev/null || echo none; echo shared > /dev/shm/note";
    let mut outputs = Vec::new();
    for id in ["share-a", "share-b"] {
        let p = node.prepare_mounts(id, &sh(id, script), &pod, sandbox.shm_mount().into_iter().collect());
        shim::spawn(Path::new(SKIFF), &p.dir, &p.shim_config()).expect("start");
        assert_eq!(p.wait().exit_code, Some(0), "{:?}", p.log());
        outputs.push(p.stdout());
    }
    assert_eq!(
        outputs[0][..4],
        outputs[1][..4],
        "both containers in the same namespaces"
    );
    assert_eq!(
        (outputs[0][4].as_str(), outputs[1][4].as_str()),
        ("none", "shared"),
        "one /dev/shm"
    );
    assert!(sandbox_dir.join("shm/note").exists());
    assert_eq!(outputs[0][2], "sandbox-host", "the sandbox's hostname");
    assert_eq!(outputs[0][3], "test-pod", "HOSTNAME from the pod");
    for (i, kind) in ["net", "ipc"].iter().enumerate() {
        let host = std::fs::read_link(format!("/proc/self/ns/{kind}")).expect("host ns");
        assert_ne!(
            outputs[0][i],
            host.display().to_string(),
            "not the host's {kind} namespace"
        );
    }
    // The test process itself stayed where it was.
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("hostname")
            .trim(),
        "sandbox-host"
    );
    skiff_runtime::PodSandbox::remove(&sandbox_dir).expect("remove");
    assert!(!sandbox_dir.exists());
    skiff_runtime::PodSandbox::remove(&sandbox_dir).expect("idempotent");
    // hostNetwork: no network or UTS namespace of the pod's own.
    let host_net = skiff_runtime::PodSandbox::create(
        &sandbox_dir,
        &skiff_runtime::SandboxOptions {
            network: false,
            ipc: true,
            hostname: None,
        },
    )
    .expect("host-network sandbox");
    assert_eq!(
        (
            host_net.network.is_none(),
            host_net.ipc.is_some(),
            host_net.uts.is_none()
        ),
        (true, true, true)
    );
    skiff_runtime::PodSandbox::remove(&sandbox_dir).expect("remove");
}

/// A measurement, not a test (`--ignored`): container start latency per runtime. For each
/// runtime, `SKIFF_BENCH_RUNS` (default 20) containers of `sh -c 'exit 0'` are prepared
/// (overlay root, bundle) and then started through a shim (create + start, until the shim
/// reports the container running), and the same number are created and started by the
/// runtime alone; prints the median and p90 of each. `SKIFF_BENCH_BIN` selects the `skiff`
/// binary (e.g. a release build) for the built-in runtime and the shim.
#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn measure_start_latency() {
    if !in_private_mount_ns("measure_start_latency") {
        return;
    }
    let bin = std::env::var("SKIFF_BENCH_BIN").unwrap_or_else(|_| SKIFF.to_string());
    let runs: usize = std::env::var("SKIFF_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let pct = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * q).round() as usize]
    };
    for runtime in ["builtin", "runc"] {
        let mut node = Node::new(runtime);
        if runtime == "builtin" {
            node.selector = RuntimeSelector::Builtin {
                exe: bin.clone().into(),
            };
        }
        let (mut shimmed, mut bare) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let id = format!("bench-shim-{i}");
            let p = node.prepare(&id, &sh(&id, "exit 0"), &pod());
            let t = Instant::now();
            shim::spawn(Path::new(&bin), &p.dir, &p.shim_config()).expect("start");
            shimmed.push(t.elapsed());
            p.wait();
            let id = format!("bench-bare-{i}");
            let p = node.prepare(&id, &sh(&id, "exit 0"), &pod());
            let rt = node.runtime();
            let t = Instant::now();
            rt.create(&id, &p.dir, &p.dir.join("init.pid"), Default::default())
                .expect("create");
            rt.start(&id).expect("start");
            bare.push(t.elapsed());
        }
        println!(
            "{runtime}: through the shim p50 {:?} p90 {:?}; runtime alone p50 {:?} p90 {:?} ({runs} runs)",
            pct(&mut shimmed, 0.5),
            pct(&mut shimmed, 0.9),
            pct(&mut bare, 0.5),
            pct(&mut bare, 0.9),
        );
    }
}

/// Not a test: the stand-in agent of `survives_the_agent_being_killed`, run by it in a child
/// process (`--ignored`). Starts a shim, then idles until killed.
#[test]
#[ignore = "helper process of survives_the_agent_being_killed"]
fn helper_agent_process() {
    let dir = PathBuf::from(std::env::var_os("SKIFF_TEST_AGENT_DIR").expect("run by survives_the_agent_being_killed"));
    let cfg: ShimConfig =
        serde_json::from_str(&std::env::var("SKIFF_TEST_AGENT_CONFIG").expect("config")).expect("config");
    shim::spawn(Path::new(SKIFF), &dir, &cfg).expect("shim");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The conformance cases `cgroup_v2_in_a_vm` runs, for both runtimes: the cgroup ones and a
/// plain run and exec (the VM may be emulated, so not all of them).
const IN_THE_VM: &[&str] = &[
    "echo_exit_code_and_logs",
    "exec_runs_as_the_container",
    "cgroup_limits_are_applied",
    "memory_limit_oom_is_recorded",
];

/// The conformance suite on a **cgroup v2-only** kernel, whatever the host has: boots Debian's
/// stock kernel in qemu (`support/vm.rs`: KVM where it runs a stock kernel, else TCG) with
/// `cgroup_no_v1=all`, the host's root read-only over 9p and cgroup2 alone at
/// `/sys/fs/cgroup`, and runs this test binary there, filtered to [`IN_THE_VM`] for both
/// runtimes. A share written by the VM brings back the test output and exit status, the
/// root cgroup's controllers and cgroup mounts (to prove it was v2) and the cgroups left
/// afterwards. The kernel is downloaded once (`apt-get download`) and cached under
/// `/var/tmp/skiff-test-images`. `SKIFF_VM_TESTS="builtin:: runc::"` runs other filters
/// (here: the whole suite); `SKIFF_VM_ACCEL=kvm|tcg` picks the accelerator.
#[test]
fn cgroup_v2_in_a_vm() {
    assert!(
        testing::is_root(),
        "the VM test needs root (it shares the host's whole root filesystem with the VM)"
    );
    let exe = std::env::current_exe().expect("test binary");
    for bin in [exe.as_path(), Path::new(SKIFF)] {
        assert!(
            !bin.starts_with("/tmp") && !bin.starts_with("/run"),
            "{} is under /tmp or /run, which the VM replaces with its own tmpfs",
            bin.display()
        );
    }
    let (filters, expected): (Vec<String>, Vec<String>) = match std::env::var("SKIFF_VM_TESTS") {
        Ok(f) => (f.split_whitespace().map(String::from).collect(), Vec::new()),
        Err(_) => {
            let names: Vec<String> = ["builtin", "runc"]
                .iter()
                .flat_map(|r| IN_THE_VM.iter().map(move |c| format!("{r}::{c}")))
                .collect();
            (names.iter().cloned().chain(["--exact".to_string()]).collect(), names)
        }
    };
    let kernel = vm::debian_kernel();
    let share = tempfile::tempdir().expect("share");
    let out = vm::SHARE;
    let job = format!(
        "cd /\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root RUST_BACKTRACE=1\n\
         cat /sys/fs/cgroup/cgroup.controllers > {out}/controllers\n\
         grep cgroup /proc/mounts > {out}/cgroup-mounts\n\
         '{exe}' {filters} --test-threads=2 > {out}/tests.log 2>&1\n\
         echo $? > {out}/tests.status\n\
         ls /sys/fs/cgroup > {out}/cgroups-after\n\
         /bin/busybox sync\n\
         /bin/busybox poweroff -f\n",
        exe = exe.display(),
        filters = filters.join(" "),
    );
    std::fs::write(share.path().join("job.sh"), job).expect("job.sh");
    let accel = vm::Accel::detect();
    let timeout = match accel {
        vm::Accel::Kvm => Duration::from_secs(180),
        vm::Accel::Tcg => Duration::from_secs(600),
    };
    let booted = vm::boot(&kernel, share.path(), accel, timeout);
    let read = |f: &str| std::fs::read_to_string(share.path().join(f));
    let log = read("tests.log").unwrap_or_default();
    let booted = booted.unwrap_or_else(|e| panic!("{e}\n--- the tests' output so far ---\n{log}"));
    println!("{log}");
    let status = read("tests.status").unwrap_or_else(|_| {
        panic!(
            "the tests in the VM did not finish\n--- console ---\n{}\n--- the tests' output ---\n{log}",
            booted.console
        )
    });
    assert_eq!(status.trim(), "0", "the tests in the VM failed; their output is above");
    let read = |f: &str| read(f).unwrap_or_else(|e| panic!("{f} from the VM: {e}"));

    // It was cgroup v2, and only that.
    let controllers = read("controllers");
    for c in ["cpu", "memory", "pids", "io"] {
        assert!(
            controllers.split_whitespace().any(|w| w == c),
            "the {c} controller on cgroup2: {controllers:?}"
        );
    }
    let mounts = read("cgroup-mounts");
    let types: Vec<&str> = mounts.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == "cgroup2"),
        "cgroup2 alone is mounted: {mounts:?}"
    );

    // The tests ran, and passed.
    let result = log
        .lines()
        .rfind(|l| l.starts_with("test result: "))
        .unwrap_or_else(|| panic!("no test result in the VM's output"));
    let passed: usize = result
        .split("; ")
        .find_map(|p| {
            p.strip_prefix("test result: ok. ")
                .and_then(|n| n.strip_suffix(" passed"))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not ok: {result}"));
    assert!(passed > 0, "no test ran in the VM: {result}");
    assert!(result.contains("; 0 failed;"), "{result}");
    for name in &expected {
        assert!(
            log.lines().any(|l| l == format!("test {name} ... ok")),
            "{name} passed in the VM"
        );
    }
    if !expected.is_empty() {
        assert_eq!(passed, expected.len(), "{result}");
    }
    // The tests removed their cgroups.
    let after = read("cgroups-after");
    let left: Vec<&str> = after.lines().filter(|l| l.starts_with("skiff-test-")).collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    println!(
        "cgroup v2 VM ({accel:?}, {}): {passed} tests passed, {:?} from boot to power-off",
        kernel.name, booted.took
    );
}

/// Generates, for every runtime, a module with one test per case (`builtin::echo_…`,
/// `runc::echo_…`), each running the case in its own mount namespace.
macro_rules! conformance {
    (runtimes: [$($runtime:ident),*], cases: $cases:tt) => {
        $( conformance!(@module $runtime $cases); )*
    };
    (@module $runtime:ident [$($case:ident),* $(,)?]) => {
        mod $runtime {
            $(
                #[test]
                fn $case() {
                    if super::in_private_mount_ns(concat!(stringify!($runtime), "::", stringify!($case))) {
                        super::$case(stringify!($runtime));
                    }
                }
            )*
        }
    };
}

conformance!(
    runtimes: [builtin, runc],
    cases: [
        echo_exit_code_and_logs,
        sigterm_and_sigkill_are_recorded,
        env_args_working_dir_and_user,
        read_only_root_refuses_writes,
        copied_root_and_log_rotation,
        manager_stops_gracefully_and_removes,
        exec_runs_as_the_container,
        exec_on_a_terminal,
        attach_to_a_terminal_container,
        attach_to_a_stdin_container,
        capabilities_reach_the_process,
        cgroup_limits_are_applied,
        memory_limit_oom_is_recorded,
        survives_the_agent_being_killed,
        bad_bundles_fail_cleanly,
        pod_containers_share_joined_namespaces,
    ]
);
