//! Skiff's built-in OCI runtime: the subset of runc's command line that Skiff's OCI runtime
//! contract uses (`--root`, `--log`, `--log-format`; `create --bundle --pid-file`, `start`,
//! `exec --process`, `state`, `kill`, `delete [--force]`, `--version`), implemented with youki's `libcontainer`.
//! The `skiff` binary runs it as the hidden subcommand `skiff oci-runtime …`, always in a
//! process of its own: `create` forks the container's init, which must never happen in the
//! multi-threaded agent.
//!
//! This crate is separate from `skiff-runtime` so that only the binary compiles libcontainer
//! (and its system-level dependencies); it must never depend on the agent or any async runtime.
//! Seccomp is not compiled in (no libseccomp): a bundle that asks for a seccomp profile is
//! refused rather than run unconfined.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod console;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;

/// The runc-compatible command line.
#[derive(Parser, Debug)]
#[command(
    name = "skiff oci-runtime",
    version,
    about = "Skiff's built-in OCI runtime (runc's command line)"
)]
struct Cli {
    /// Where container state lives.
    #[arg(long, default_value = "/run/skiff/runtime")]
    root: PathBuf,
    /// Write the runtime's own messages here instead of stderr.
    #[arg(long)]
    log: Option<PathBuf>,
    /// `text` or `json` (runc's `--log-format`).
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Accepted for runc compatibility; systemd cgroups are not supported.
    #[arg(long)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility.
    #[arg(long)]
    debug: bool,
    #[command(subcommand)]
    command: Op,
}

#[derive(Subcommand, Debug)]
enum Op {
    /// Create a container from a bundle; its init waits for `start`.
    Create {
        /// The bundle directory (holds `config.json`).
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// Write the init's PID here.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// A unix socket to send the pty master to (terminal containers).
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// Pass this many extra file descriptors (from 3 on) to the container.
        #[arg(long, default_value_t = 0)]
        preserve_fds: i32,
        /// Do not pivot_root (for ramdisk roots).
        #[arg(long)]
        no_pivot: bool,
        /// The container ID.
        id: String,
    },
    /// Run the user's process of a created container.
    Start {
        /// The container ID.
        id: String,
    },
    /// Run a process in a running container and wait for it (exit code: the process's).
    Exec {
        /// The process as OCI `process` JSON (`args`, `env`, `cwd`, `user`, capabilities).
        #[arg(long, short = 'p')]
        process: Option<PathBuf>,
        /// Do not wait for the process.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Write the process's PID here.
        #[arg(long)]
        pid_file: Option<PathBuf>,
        /// A unix socket to send the terminal master to (a detached terminal process). In
        /// the foreground this process holds the terminal and copies it to its own stdio.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        /// The container ID.
        id: String,
        /// The command, when no `--process` is given.
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Print the container's OCI state as JSON.
    State {
        /// The container ID.
        id: String,
    },
    /// Send a signal to the container's init (default SIGTERM).
    Kill {
        /// Signal every process of the container.
        #[arg(long, short = 'a')]
        all: bool,
        /// The container ID.
        id: String,
        /// Signal name or number.
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a stopped container (`--force`: also a running one).
    Delete {
        /// Kill a running container first.
        #[arg(long, short = 'f')]
        force: bool,
        /// The container ID.
        id: String,
    },
}

/// Errors of the built-in runtime's commands.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinRuntimeError {
    /// No state for that container under the root.
    #[error("container {id} does not exist")]
    NotFound {
        /// The container.
        id: String,
    },
    /// The bundle asks for something this runtime does not do.
    #[error("unsupported configuration in {bundle}: {what}")]
    Unsupported {
        /// The bundle.
        bundle: PathBuf,
        /// What.
        what: String,
    },
    /// A signal for a container whose process is not running.
    #[error("container {id} not running")]
    NotRunning {
        /// The container.
        id: String,
    },
    /// An unknown signal.
    #[error("invalid signal {0:?}")]
    Signal(String),
    /// libcontainer failed.
    #[error("{op} {id}: {source}")]
    Container {
        /// The operation.
        op: &'static str,
        /// The container.
        id: String,
        #[source]
        source: Box<libcontainer::error::LibcontainerError>,
    },
    /// The terminal of an exec'd process could not be set up or relayed.
    #[error("the terminal of a process in {id}: {source}")]
    Terminal {
        /// The container.
        id: String,
        #[source]
        source: std::io::Error,
    },
    /// Waiting for an exec'd process failed.
    #[error("waiting for the process in {id}: {source}")]
    Wait {
        /// The container.
        id: String,
        #[source]
        source: std::io::Error,
    },
    /// The state could not be printed.
    #[error("writing the state of {id}: {source}")]
    Output {
        /// The container.
        id: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `skiff oci-runtime ARGS…` (`args` without the program and subcommand names) and
/// returns the process exit code. Errors go to `--log` when given (runc's JSON lines with
/// `--log-format json`), otherwise to stderr.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(std::iter::once(OsString::from("skiff oci-runtime")).chain(args)) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are "errors" that print to stdout and succeed.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            report(&cli, &e);
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn report(cli: &Cli, e: &BuiltinRuntimeError) {
    let msg = chain(e);
    let Some(path) = &cli.log else {
        eprintln!("skiff oci-runtime: {msg}");
        return;
    };
    let line = if cli.log_format == "json" {
        serde_json::json!({
            "level": "error",
            "msg": msg,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        })
        .to_string()
    } else {
        format!("error: {msg}")
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if written.is_err() {
        eprintln!("skiff oci-runtime: {msg}");
    }
}

fn load(root: &Path, id: &str) -> Result<Container, BuiltinRuntimeError> {
    // IDs are validated on create; refuse anything that could leave the root here too.
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(BuiltinRuntimeError::NotFound { id: id.to_string() });
    }
    let dir = root.join(id);
    if !dir.join("state.json").is_file() {
        return Err(BuiltinRuntimeError::NotFound { id: id.to_string() });
    }
    Container::load(dir).map_err(lc("loading", id))
}

fn lc<'a>(
    op: &'static str,
    id: &'a str,
) -> impl FnOnce(libcontainer::error::LibcontainerError) -> BuiltinRuntimeError + 'a {
    move |source| BuiltinRuntimeError::Container {
        op,
        id: id.to_string(),
        source: Box::new(source),
    }
}

/// Refuses what this build cannot honour (seccomp without libseccomp) instead of silently
/// running the container with less confinement than asked.
fn check_bundle(bundle: &Path) -> Result<(), BuiltinRuntimeError> {
    let cfg = bundle.join("config.json");
    let Ok(text) = std::fs::read(&cfg) else {
        // libcontainer reports a missing or unreadable config itself.
        return Ok(());
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return Ok(());
    };
    if v.pointer("/linux/seccomp").is_some_and(|s| !s.is_null()) {
        return Err(BuiltinRuntimeError::Unsupported {
            bundle: bundle.to_path_buf(),
            what: "seccomp profiles (this build has no libseccomp); use an external runtime such as runc".into(),
        });
    }
    Ok(())
}

/// Whether the OCI process JSON at `path` asks for a terminal.
fn wants_terminal(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["terminal"] == true)
}

fn run(cli: &Cli) -> Result<ExitCode, BuiltinRuntimeError> {
    let root = &cli.root;
    match &cli.command {
        Op::Create {
            bundle,
            pid_file,
            console_socket,
            preserve_fds,
            no_pivot,
            id,
        } => {
            check_bundle(bundle)?;
            ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_executor(libcontainer::workload::default::DefaultExecutor {})
                .with_pid_file(pid_file.as_ref())
                .map_err(lc("creating", id))?
                .with_console_socket(console_socket.as_ref())
                .with_root_path(root)
                .map_err(lc("creating", id))?
                .with_preserved_fds(*preserve_fds)
                .validate_id()
                .map_err(lc("creating", id))?
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .with_no_pivot(*no_pivot)
                .build()
                .map_err(lc("creating", id))?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Start { id } => {
            load(root, id)?.start().map_err(lc("starting", id))?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Exec {
            process,
            detach,
            pid_file,
            console_socket,
            id,
            command,
        } => {
            let c = load(root, id)?;
            if c.status() != libcontainer::container::ContainerStatus::Running {
                return Err(BuiltinRuntimeError::NotRunning { id: id.clone() });
            }
            let terminal = process.as_ref().is_some_and(|p| wants_terminal(p));
            let console = match (terminal && !*detach, console_socket) {
                (true, _) => Some(
                    console::ConsoleSocket::listen(root)
                        .map_err(|source| BuiltinRuntimeError::Terminal { id: id.clone(), source })?,
                ),
                _ => None,
            };
            let socket = console
                .as_ref()
                .map(|c| c.path().to_path_buf())
                .or_else(|| console_socket.clone());
            let pid = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_executor(libcontainer::workload::default::DefaultExecutor {})
                .with_root_path(root)
                .map_err(lc("exec in", id))?
                .with_pid_file(pid_file.as_ref())
                .map_err(lc("exec in", id))?
                .with_console_socket(socket.as_ref())
                .validate_id()
                .map_err(lc("exec in", id))?
                .as_tenant()
                // libcontainer takes a console socket only from a detached caller; its
                // `detach` means nothing else, and the process is waited for below either way.
                .with_detach(*detach || console.is_some())
                .with_process(process.as_ref())
                .with_container_args(command.clone())
                .build()
                .map_err(lc("exec in", id))?;
            if *detach {
                return Ok(ExitCode::SUCCESS);
            }
            // The process is this one's child (libcontainer clones it as a sibling of its
            // intermediate process): wait for it and exit as it did.
            let raw = pid.as_raw();
            let wait = || {
                rustix::process::Pid::from_raw(raw)
                    .map(|p| rustix::process::waitpid(Some(p), rustix::process::WaitOptions::empty()))
                    .ok_or(BuiltinRuntimeError::NotRunning { id: id.clone() })?
                    .map_err(|e| BuiltinRuntimeError::Wait {
                        id: id.clone(),
                        source: e.into(),
                    })
            };
            let status = match console {
                Some(console) => {
                    let terminal_err = |source| BuiltinRuntimeError::Terminal { id: id.clone(), source };
                    let master = console.receive().map_err(terminal_err)?;
                    console::relay(master, wait).map_err(terminal_err)??
                }
                None => wait()?,
            };
            let code = match status.map(|(_, s)| (s.exit_status(), s.terminating_signal())) {
                Some((Some(c), _)) => c,
                Some((_, Some(sig))) => 128 + sig,
                _ => 1,
            };
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        Op::State { id } => {
            let c = load(root, id)?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &c.state)
                .map_err(std::io::Error::from)
                .and_then(|()| writeln!(out))
                .map_err(|source| BuiltinRuntimeError::Output { id: id.clone(), source })?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Kill { all, id, signal } => {
            let sig = Signal::try_from(signal.as_str()).map_err(|_| BuiltinRuntimeError::Signal(signal.clone()))?;
            let mut c = load(root, id)?;
            if !c.can_kill() {
                // runc's wording, which the contract recognises.
                return Err(BuiltinRuntimeError::NotRunning { id: id.clone() });
            }
            c.kill(sig, *all).map_err(lc("killing", id))?;
            Ok(ExitCode::SUCCESS)
        }
        Op::Delete { force, id } => {
            let mut c = load(root, id)?;
            c.delete(*force).map_err(lc("deleting", id))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("skiff oci-runtime").chain(args.iter().copied()))
    }

    #[test]
    fn parses_runc_command_lines() {
        let c = parse(&[
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ])
        .expect("create");
        assert_eq!(c.root, PathBuf::from("/r"));
        assert!(matches!(c.command, Op::Create { ref id, ref bundle, .. } if id == "c1" && bundle == Path::new("/b")));
        let c = parse(&["--root", "/r", "kill", "c1", "9"]).expect("kill");
        assert!(matches!(c.command, Op::Kill { ref signal, .. } if signal == "9"));
        let c = parse(&["kill", "c1"]).expect("kill default");
        assert!(matches!(c.command, Op::Kill { ref signal, .. } if signal == "SIGTERM"));
        let c = parse(&["delete", "--force", "c1"]).expect("delete");
        assert!(matches!(c.command, Op::Delete { force: true, .. }));
        assert!(parse(&["create"]).is_err());
        assert!(parse(&["frobnicate", "c1"]).is_err());
    }

    #[test]
    fn unknown_containers_and_signals_are_errors() {
        let root = std::env::temp_dir().join(format!("skiff-builtin-test-{}", std::process::id()));
        assert!(matches!(load(&root, "nope"), Err(BuiltinRuntimeError::NotFound { .. })));
        assert!(matches!(
            load(&root, "../etc"),
            Err(BuiltinRuntimeError::NotFound { .. })
        ));
        let cli = parse(&["--root", root.to_str().expect("utf8"), "kill", "nope", "SIGNOPE"]).expect("parse");
        assert!(matches!(run(&cli), Err(BuiltinRuntimeError::Signal(_))));
        let msg = chain(&BuiltinRuntimeError::NotFound { id: "x".into() });
        assert_eq!(msg, "container x does not exist");
    }

    #[test]
    fn seccomp_bundles_are_refused() {
        let dir = tempfile_dir();
        std::fs::write(
            dir.join("config.json"),
            r#"{"linux":{"seccomp":{"defaultAction":"SCMP_ACT_ERRNO"}}}"#,
        )
        .expect("write");
        assert!(matches!(
            check_bundle(&dir),
            Err(BuiltinRuntimeError::Unsupported { .. })
        ));
        std::fs::write(dir.join("config.json"), r#"{"linux":{}}"#).expect("write");
        assert!(check_bundle(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("skiff-builtin-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
