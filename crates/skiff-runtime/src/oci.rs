//! The OCI runtime contract: containers are created, started, inspected, signalled and deleted
//! by an OCI runtime's command line, in runc's dialect (`--root DIR create --bundle B
//! --pid-file F ID`, `start`, `state`, `kill ID SIG`, `delete [--force]`). One code path serves
//! every runtime: runc, crun, youki, and Skiff's built-in one (`skiff oci-runtime`, the same
//! binary run in its own process).
//!
//! Calls are synchronous: they spawn the runtime and wait for it. The async agent calls them
//! from a blocking task; the shim calls them directly.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::io_error::IoError;

/// Which OCI runtime runs containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeSelector {
    /// The runtime built into the `skiff` binary at `exe` (`/proc/self/exe` in the agent), run
    /// as `exe oci-runtime …`.
    Builtin {
        /// The `skiff` binary.
        exe: PathBuf,
    },
    /// An external runtime with runc's command line: `runc`, `crun`, `youki` or a path.
    External {
        /// The program (looked up in `PATH` unless it contains a `/`).
        program: PathBuf,
    },
}

impl Default for RuntimeSelector {
    fn default() -> Self {
        Self::Builtin {
            exe: PathBuf::from("/proc/self/exe"),
        }
    }
}

impl FromStr for RuntimeSelector {
    type Err = RuntimeError;

    /// `builtin` (or empty) selects the built-in runtime of the running binary; anything else
    /// names an external runtime (`runc`, or a path).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "builtin" | "skiff" => Ok(Self::default()),
            p if p.contains(char::is_whitespace) => Err(RuntimeError::BadSelector { value: s.to_string() }),
            p => Ok(Self::External {
                program: PathBuf::from(p),
            }),
        }
    }
}

impl fmt::Display for RuntimeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin { .. } => f.write_str("builtin"),
            Self::External { program } => write!(f, "{}", program.display()),
        }
    }
}

/// Errors of OCI runtime calls. Each carries what the runtime said.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime selector is not usable.
    #[error("invalid container runtime {value:?}: give `builtin`, a program name or a path")]
    BadSelector {
        /// What was given.
        value: String,
    },
    /// A container ID the runtimes would refuse (or that could escape their state directory).
    #[error("invalid container id {id:?}: use letters, digits, `_`, `+`, `-` and `.`")]
    BadId {
        /// The ID.
        id: String,
    },
    /// The runtime could not be started.
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No container with that ID.
    #[error("container {id} does not exist: {stderr}")]
    NotFound {
        /// The container.
        id: String,
        /// The runtime's message.
        stderr: String,
    },
    /// `create` with an ID that the runtime already has.
    #[error("container {id} already exists: {stderr}")]
    AlreadyExists {
        /// The container.
        id: String,
        /// The runtime's message.
        stderr: String,
    },
    /// The container's process is not running (a signal to a stopped container).
    #[error("container {id} is not running: {stderr}")]
    NotRunning {
        /// The container.
        id: String,
        /// The runtime's message.
        stderr: String,
    },
    /// The runtime refused or failed.
    #[error("{runtime} {command} {id} failed ({status}): {stderr}")]
    Failed {
        /// The runtime.
        runtime: String,
        /// The subcommand.
        command: &'static str,
        /// The container.
        id: String,
        /// How it exited.
        status: ExitStatus,
        /// What it said (its stderr, or its log for `create`).
        stderr: String,
    },
    /// The runtime's `state` output is not an OCI state document.
    #[error("{runtime} state {id}: unreadable output {output:?}: {source}")]
    BadState {
        /// The runtime.
        runtime: String,
        /// The container.
        id: String,
        /// What it printed.
        output: String,
        #[source]
        source: serde_json::Error,
    },
    /// A file the call needs could not be used.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A container's status as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, its process waiting for `start`.
    Created,
    /// Running the user's process.
    Running,
    /// Its process has exited.
    Stopped,
    /// Frozen.
    Paused,
    /// A status this code does not know.
    #[serde(untagged)]
    Other(String),
}

/// The OCI state document (`runtime state ID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// The OCI runtime spec version.
    #[serde(default)]
    pub oci_version: String,
    /// The container ID.
    pub id: String,
    /// Its status.
    pub status: Status,
    /// The init process (0 or absent once stopped, for some runtimes).
    #[serde(default)]
    pub pid: Option<i32>,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// Where a new container's stdin, stdout and stderr go. The runtime's own process gets them
/// too and hands them to the container's init (runc's "pass-through" mode).
#[derive(Debug, Default)]
pub struct ContainerStdio {
    /// The container's stdin (default: `/dev/null`).
    pub stdin: Option<Stdio>,
    /// The container's stdout (default: `/dev/null`).
    pub stdout: Option<Stdio>,
    /// The container's stderr (default: `/dev/null`).
    pub stderr: Option<Stdio>,
    /// The runtime runs in a session of its own with its stdin (a terminal) as the
    /// controlling terminal: how `exec` of a `terminal` process gets its host console (runc
    /// copies that terminal's size to the container's on `SIGWINCH`).
    pub controlling_terminal: bool,
    /// `create` of a `terminal` container: the runtime sends the terminal's master to this
    /// unix socket (`--console-socket`).
    pub console_socket: Option<PathBuf>,
}

/// Whether the host runs cgroup v2 only (the unified hierarchy at `/sys/fs/cgroup`): then
/// containers get a cgroup namespace of their own, as containerd gives them
/// ([`crate::bundle::PodContext::cgroup_namespace`]).
pub fn cgroup_v2_host() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The capabilities this process may grant (its bounding set from `/proc/self/status`, a
/// bit per capability), for [`crate::bundle::PodContext::host_capabilities`]: a runtime
/// cannot give a container more than it has itself.
pub fn host_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// An OCI runtime with its state directory (`--root`).
#[derive(Clone, Debug)]
pub struct OciRuntime {
    selector: RuntimeSelector,
    root: PathBuf,
}

/// Checks a container ID the way runc does: non-empty, `[A-Za-z0-9_+.-]`, not `.`/`..`.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::BadId { id: id.to_string() })
    }
}

impl OciRuntime {
    /// A runtime keeping its container state under `root` (created on first use by the
    /// runtime). Give each runtime its own root: their state formats differ.
    pub fn new(selector: RuntimeSelector, root: impl Into<PathBuf>) -> Self {
        Self {
            selector,
            root: root.into(),
        }
    }

    /// The selector this runtime was made from.
    pub fn selector(&self) -> &RuntimeSelector {
        &self.selector
    }

    /// The runtime's state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn spawn_err(&self) -> impl FnOnce(io::Error) -> RuntimeError + '_ {
        move |source| RuntimeError::Spawn {
            program: self.program().to_path_buf(),
            source,
        }
    }

    fn name(&self) -> String {
        self.selector.to_string()
    }

    fn program(&self) -> &Path {
        match &self.selector {
            RuntimeSelector::Builtin { exe } => exe,
            RuntimeSelector::External { program } => program,
        }
    }

    /// The command line up to and including the global flags.
    fn command(&self) -> Command {
        let mut c = Command::new(self.program());
        if matches!(self.selector, RuntimeSelector::Builtin { .. }) {
            c.arg("oci-runtime");
        }
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs a subcommand that has no container stdio; returns its stdout.
    fn run(&self, command: &'static str, id: &str, args: &[OsString]) -> Result<Vec<u8>, RuntimeError> {
        validate_id(id)?;
        let mut c = self.command();
        c.arg(command).args(args).arg(id).stdin(Stdio::null());
        let out = c.output().map_err(self.spawn_err())?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(self.failure(command, id, out.status, stderr))
    }

    fn failure(&self, command: &'static str, id: &str, status: ExitStatus, stderr: String) -> RuntimeError {
        let lower = stderr.to_ascii_lowercase();
        if lower.contains("does not exist") || lower.contains("not exist") || lower.contains("no such container") {
            return RuntimeError::NotFound {
                id: id.to_string(),
                stderr,
            };
        }
        if command == "create" && lower.contains("exists") {
            return RuntimeError::AlreadyExists {
                id: id.to_string(),
                stderr,
            };
        }
        if matches!(command, "kill" | "exec")
            && (lower.contains("not running") || lower.contains("process already finished"))
        {
            return RuntimeError::NotRunning {
                id: id.to_string(),
                stderr,
            };
        }
        RuntimeError::Failed {
            runtime: self.name(),
            command,
            id: id.to_string(),
            status,
            stderr,
        }
    }

    /// `create`: sets up the container from `bundle` and leaves its init waiting for
    /// [`OciRuntime::start`]. The init's PID is written to `pid_file`. The runtime's own
    /// messages go to `<bundle>/runtime.log` (JSON lines), read back into the error.
    pub fn create(&self, id: &str, bundle: &Path, pid_file: &Path, stdio: ContainerStdio) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let log = bundle.join("runtime.log");
        // A stale log would be mistaken for this call's.
        match std::fs::remove_file(&log) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(RuntimeError::Io(IoError::new("removing", log, source))),
        }
        let mut args = vec![
            OsStr::new("--bundle"),
            bundle.as_os_str(),
            OsStr::new("--pid-file"),
            pid_file.as_os_str(),
        ];
        let console = stdio.console_socket.clone();
        if let Some(c) = &console {
            args.extend([OsStr::new("--console-socket"), c.as_os_str()]);
        }
        let (status, message) = self.run_logged("create", &args, id, stdio, &log)?;
        if status.success() {
            return Ok(());
        }
        Err(self.failure("create", id, status, message))
    }

    /// Runs `COMMAND ARGS… ID` with the container's `stdio`, the runtime's own messages going
    /// to `log` as JSON lines; returns the exit status and, when it failed, the errors the log
    /// holds (empty if none or unreadable).
    fn run_logged(
        &self,
        command: &'static str,
        args: &[&OsStr],
        id: &str,
        stdio: ContainerStdio,
        log: &Path,
    ) -> Result<(ExitStatus, String), RuntimeError> {
        let mut c = self.command();
        c.arg("--log")
            .arg(log)
            .arg("--log-format")
            .arg("json")
            .arg(command)
            .args(args)
            .arg(id)
            .stdin(stdio.stdin.unwrap_or_else(Stdio::null))
            .stdout(stdio.stdout.unwrap_or_else(Stdio::null))
            .stderr(stdio.stderr.unwrap_or_else(Stdio::null));
        if stdio.controlling_terminal {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only makes two
            // system calls (setsid, ioctl), which are async-signal-safe; it allocates nothing.
            #[allow(unsafe_code)]
            unsafe {
                c.pre_exec(|| {
                    rustix::process::setsid()?;
                    rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
                    Ok(())
                });
            }
        }
        let status = c.status().map_err(self.spawn_err())?;
        if status.success() {
            return Ok((status, String::new()));
        }
        let message = std::fs::read_to_string(log).map(|s| log_errors(&s)).unwrap_or_default();
        Ok((status, message))
    }

    /// `exec --process FILE ID`: runs `process` in the running container with `stdio` and
    /// waits for it; returns its exit code (128 + signal when a signal ended it). The process
    /// JSON and the runtime's log are written to temp files in `scratch` (the container's
    /// directory). Failures of the runtime itself (no such container, not running, a command
    /// that does not exist) are errors, told apart from the process's own non-zero exit by the
    /// runtime's log.
    pub fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        stdio: ContainerStdio,
        scratch: &Path,
    ) -> Result<i32, RuntimeError> {
        validate_id(id)?;
        let proc_file = tempfile::Builder::new()
            .prefix(".exec-")
            .suffix(".json")
            .tempfile_in(scratch)
            .map_err(IoError::at("creating a temp file in", scratch))?;
        serde_json::to_writer(proc_file.as_file(), process)
            .map_err(|e| IoError::new("writing a process to", scratch, e))?;
        let log = tempfile::Builder::new()
            .prefix(".exec-")
            .suffix(".log")
            .tempfile_in(scratch)
            .map_err(IoError::at("creating a temp file in", scratch))?;
        let args = [OsStr::new("--process"), proc_file.path().as_os_str()];
        let (status, message) = self.run_logged("exec", &args, id, stdio, log.path())?;
        if status.success() {
            return Ok(0);
        }
        match status.code() {
            Some(code) if message.is_empty() => Ok(code),
            _ => Err(self.failure("exec", id, status, message)),
        }
    }

    /// `start`: runs the user's process in a created container.
    pub fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run("start", id, &[]).map(drop)
    }

    /// `state`: the container's OCI state.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let out = self.run("state", id, &[])?;
        serde_json::from_slice(&out).map_err(|source| RuntimeError::BadState {
            runtime: self.name(),
            id: id.to_string(),
            output: String::from_utf8_lossy(&out).into_owned(),
            source,
        })
    }

    /// `kill ID SIGNAL`: signals the container's init (`signal` as a number).
    pub fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        validate_id(id)?;
        let mut c = self.command();
        c.arg("kill").arg(id).arg(signal.to_string()).stdin(Stdio::null());
        let out = c.output().map_err(self.spawn_err())?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(self.failure("kill", id, out.status, stderr))
    }

    /// `delete [--force]`: removes a stopped container (with `force`, kills a running one
    /// first) and its cgroup.
    pub fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let args: Vec<OsString> = if force { vec!["--force".into()] } else { vec![] };
        self.run("delete", id, &args).map(drop)
    }

    /// The runtime's `--version` output (first line), for the node's runtime version.
    pub fn version(&self) -> Result<String, RuntimeError> {
        let mut c = Command::new(self.program());
        if matches!(self.selector, RuntimeSelector::Builtin { .. }) {
            c.arg("oci-runtime");
        }
        let out = c
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(self.spawn_err())?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().next().unwrap_or_default().trim().to_string())
    }
}

/// The messages of a runtime's JSON log (`{"level":"error","msg":"…"}` lines) at warning
/// level or above, joined; lines that are not JSON are kept as they are.
fn log_errors(log: &str) -> String {
    let mut out = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("error");
                if matches!(level, "error" | "fatal" | "panic" | "warning" | "warn") {
                    if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                        out.push(m.to_string());
                    }
                }
            }
            Err(_) => out.push(line.trim().to_string()),
        }
    }
    out.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        assert_eq!(
            "builtin".parse::<RuntimeSelector>().ok(),
            Some(RuntimeSelector::default())
        );
        assert_eq!("".parse::<RuntimeSelector>().ok(), Some(RuntimeSelector::default()));
        assert_eq!(
            "runc".parse::<RuntimeSelector>().ok(),
            Some(RuntimeSelector::External { program: "runc".into() })
        );
        assert_eq!(
            "/usr/local/bin/crun".parse::<RuntimeSelector>().ok(),
            Some(RuntimeSelector::External {
                program: "/usr/local/bin/crun".into()
            })
        );
        assert!(matches!(
            "runc --debug".parse::<RuntimeSelector>(),
            Err(RuntimeError::BadSelector { .. })
        ));
    }

    #[test]
    fn ids_are_checked() {
        for ok in ["a", "pod_1.web-2+x", &"x".repeat(64)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "é", "a\0b"] {
            assert!(matches!(validate_id(bad), Err(RuntimeError::BadId { .. })), "{bad:?}");
        }
    }

    #[test]
    fn states_parse() {
        let s: ContainerState = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","id":"c1","status":"running","pid":42,"bundle":"/b","rootfs":"/b/rootfs","created":"x","owner":""}"#,
        )
        .expect("runc state");
        assert_eq!(s.status, Status::Running);
        assert_eq!(s.pid, Some(42));
        let s: ContainerState =
            serde_json::from_str(r#"{"id":"c1","status":"weird","bundle":"/b"}"#).expect("unknown status");
        assert_eq!(s.status, Status::Other("weird".into()));
        assert!(serde_json::from_str::<ContainerState>(r#"{"status":"running"}"#).is_err());
    }

    #[test]
    fn log_messages_are_extracted() {
        let log = "{\"level\":\"info\",\"msg\":\"hi\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": not found\"}\nplain text\n";
        assert_eq!(log_errors(log), "exec: \"nope\": not found; plain text");
        assert_eq!(log_errors(""), "");
    }

    /// A stand-in runtime: a shell script that answers like runc does.
    fn fake_runtime(dir: &Path) -> OciRuntime {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("fake-runc");
        std::fs::write(
            &script,
            r#"#!/bin/sh
# Global flags first, as runc takes them.
log=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) shift 2 ;;
    --log) log="$2"; shift 2 ;;
    --log-format) shift 2 ;;
    *) break ;;
  esac
done
cmd="$1"; shift
case "$cmd" in
  create)
    echo '{"level":"info","msg":"starting"}' >> "$log"
    echo '{"level":"error","msg":"container with given ID already exists"}' >> "$log"
    exit 1 ;;
  state)
    case "$1" in
      gone) echo "container does not exist" >&2; exit 1 ;;
      junk) echo "not json"; exit 0 ;;
      *) printf '{"ociVersion":"1.0.2","id":"%s","status":"running","pid":4242,"bundle":"/b"}' "$1"; exit 0 ;;
    esac ;;
  kill)
    [ "$1" = "done" ] && { echo "container not running" >&2; exit 1; }
    [ "$2" = "9" ] || { echo "signal $2" >&2; exit 1; }
    exit 0 ;;
  delete) echo "cannot delete $*" >&2; exit 1 ;;
  exec)
    [ "$1" = "--process" ] || exit 9
    grep -q '"args":\["false"\]' "$2" && exit 1
    grep -q '"args":\["nope"\]' "$2" && { echo '{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH"}' >> "$log"; exit 1; }
    [ "$3" = "stopped" ] && { echo '{"level":"error","msg":"cannot exec in a stopped container: container not running"}' >> "$log"; exit 1; }
    exit 0 ;;
  --version) echo "fake-runc version 9.9"; exit 0 ;;
esac
exit 3
"#,
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        OciRuntime::new(RuntimeSelector::External { program: script }, dir.join("root"))
    }

    #[test]
    fn runtime_answers_become_typed_results() {
        let dir = tempfile::tempdir().expect("dir");
        let rt = fake_runtime(dir.path());
        let s = rt.state("c1").expect("state");
        assert_eq!((s.id.as_str(), s.status, s.pid), ("c1", Status::Running, Some(4242)));
        assert!(matches!(rt.state("gone"), Err(RuntimeError::NotFound { .. })));
        assert!(matches!(rt.state("junk"), Err(RuntimeError::BadState { output, .. }) if output.contains("not json")));
        rt.kill("c1", 9).expect("kill");
        assert!(matches!(rt.kill("done", 9), Err(RuntimeError::NotRunning { .. })));
        match rt.kill("c1", 15) {
            Err(RuntimeError::Failed { command, stderr, .. }) => {
                assert_eq!((command, stderr.as_str()), ("kill", "signal 15"));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(rt.delete("c1", true), Err(RuntimeError::Failed { stderr, .. }) if stderr == "cannot delete --force c1")
        );
        // create's messages come from its log, not its stderr (that is the container's).
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).expect("bundle");
        std::fs::write(bundle.join("runtime.log"), "{\"level\":\"error\",\"msg\":\"stale\"}\n").expect("stale log");
        match rt.create("c1", &bundle, &bundle.join("pid"), ContainerStdio::default()) {
            Err(RuntimeError::AlreadyExists { stderr, .. }) => {
                assert_eq!(
                    stderr, "container with given ID already exists",
                    "the stale log was removed"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rt.start("c1"), Err(RuntimeError::Failed { .. })));
        // exec: the process's exit code, or the runtime's error from its log.
        let process = |args: &[&str]| -> oci_spec::runtime::Process {
            let mut p = oci_spec::runtime::Process::default();
            p.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
            p
        };
        assert_eq!(
            rt.exec("c1", &process(&["true"]), ContainerStdio::default(), &bundle)
                .expect("exec"),
            0
        );
        assert_eq!(
            rt.exec("c1", &process(&["false"]), ContainerStdio::default(), &bundle)
                .expect("exec"),
            1
        );
        assert!(matches!(
            rt.exec("c1", &process(&["nope"]), ContainerStdio::default(), &bundle),
            Err(RuntimeError::Failed { stderr, .. }) if stderr.contains("executable file not found")
        ));
        assert!(matches!(
            rt.exec("stopped", &process(&["true"]), ContainerStdio::default(), &bundle),
            Err(RuntimeError::NotRunning { .. })
        ));
        let leftovers: Vec<_> = std::fs::read_dir(&bundle)
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".exec-"))
            .collect();
        assert!(leftovers.is_empty(), "exec's temp files are removed");
        assert_eq!(rt.version().expect("version"), "fake-runc version 9.9");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let rt = OciRuntime::new(
            RuntimeSelector::External {
                program: "/nonexistent/runtime".into(),
            },
            "/tmp/none",
        );
        assert!(matches!(rt.state("c1"), Err(RuntimeError::Spawn { .. })));
        assert!(matches!(rt.kill("../x", 15), Err(RuntimeError::BadId { .. })));
    }
}
