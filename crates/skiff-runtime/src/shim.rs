//! The per-container shim (like conmon or containerd's shim): one small process per container
//! that outlives the agent. [`spawn`] starts it as `skiff shim --dir DIR`, which re-executes
//! itself detached (a session of its own, stdio on files, not the agent's child) and reports
//! back once the container runs. The shim
//!
//! - becomes the child subreaper, so the container's init is reparented to it and it alone
//!   learns the exit status;
//! - creates and starts the container through the OCI runtime contract ([`crate::oci`]), holding
//!   the container's stdout and stderr pipes;
//! - writes them to the container's log in the CRI format with size-based rotation
//!   ([`log`]);
//! - records the exit code (and whether the cgroup saw an OOM kill) when the init exits.
//!
//! Everything a restarted agent needs to re-adopt the container without restarting it is on
//! disk under the container's directory: `shim.json` (what to run, written by [`spawn`]),
//! `state.json` (status, PIDs, times, exit; replaced atomically) and `shim.log` (the shim's
//! own messages). Killing the agent, even with SIGKILL, never stops a container.
//!
//! The shim is synchronous (threads for the two pipes, no async runtime) and must never
//! depend on the API server or any Kubernetes client.

pub mod attach;
pub mod log;

use std::fs;
use std::io::{self, BufRead as _, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::io_error::IoError;
use crate::oci::{ContainerStdio, OciRuntime, RuntimeSelector};

/// Default size at which a container log is rotated (the kubelet's `containerLogMaxSize`).
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of log files kept (the kubelet's `containerLogMaxFiles`).
pub const DEFAULT_LOG_MAX_FILES: usize = 5;
/// How long the shim waits for the container's pipes to drain after its init exited (other
/// processes may still hold them when the PID namespace is shared).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What a shim runs; written to `<dir>/shim.json` by [`spawn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container ID (the runtime's).
    pub id: String,
    /// The bundle directory (`config.json`, rootfs).
    pub bundle: PathBuf,
    /// The OCI runtime.
    pub runtime: RuntimeSelector,
    /// The runtime's state directory (`--root`).
    pub runtime_root: PathBuf,
    /// The container's CRI log file.
    pub log_path: PathBuf,
    /// Rotate the log when it reaches this size.
    #[serde(default = "default_max_size")]
    pub log_max_size: u64,
    /// Keep this many log files in all.
    #[serde(default = "default_max_files")]
    pub log_max_files: usize,
    /// The container reads stdin (the pod spec's `stdin`): the shim holds it open for
    /// attached clients.
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when the first attached client is done with it.
    #[serde(default)]
    pub stdin_once: bool,
    /// The container has a terminal (`tty`): its output is the terminal's.
    #[serde(default)]
    pub tty: bool,
}

fn default_max_size() -> u64 {
    DEFAULT_LOG_MAX_SIZE
}

fn default_max_files() -> usize {
    DEFAULT_LOG_MAX_FILES
}

impl ShimConfig {
    /// The runtime this shim uses.
    pub fn oci_runtime(&self) -> OciRuntime {
        OciRuntime::new(self.runtime.clone(), &self.runtime_root)
    }
}

/// Where a shim's container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShimStatus {
    /// The runtime is creating it.
    Creating,
    /// Its process runs.
    Running,
    /// Its process exited; the exit is recorded.
    Exited,
    /// It could not be created or started (see `error`).
    Failed,
}

/// `<dir>/state.json`: what the shim knows, for the agent (also after a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    /// Status.
    pub status: ShimStatus,
    /// The shim's PID.
    pub shim_pid: i32,
    /// The container's init PID (host namespace).
    pub pid: Option<i32>,
    /// When the container's process was started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it exited.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its exit code (128 + signal when killed by one, as the kubelet shows it).
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// The container's cgroup recorded an OOM kill.
    pub oom_killed: bool,
    /// Why creating or starting failed, or why the exit status is unknown.
    pub error: Option<String>,
}

impl ShimState {
    fn new(status: ShimStatus) -> Self {
        Self {
            status,
            shim_pid: rustix::process::getpid().as_raw_nonzero().get(),
            pid: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            error: None,
        }
    }

    /// Whether the shim process that wrote this state still runs.
    pub fn shim_alive(&self, dir: &Path) -> bool {
        // The PID may have been reused: check it is a shim for this directory.
        fs::read(format!("/proc/{}/cmdline", self.shim_pid))
            .map(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.contains(&b"shim".as_slice()) && args.contains(&dir.as_os_str().as_encoded_bytes())
            })
            .unwrap_or(false)
    }
}

/// Errors of starting and reading shims.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A file of the shim could not be used.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A state or config file is not what the shim writes.
    #[error("corrupt {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The shim could not create or start the container.
    #[error("starting container {id}: {message}")]
    Start {
        /// The container.
        id: String,
        /// The runtime's or the shim's message.
        message: String,
    },
    /// The container did not start or exit in time.
    #[error("container in {dir}: no answer after {waited:?}")]
    Timeout {
        /// The container's directory.
        dir: PathBuf,
        /// How long was waited.
        waited: Duration,
    },
}

/// Writes JSON atomically (temp file + rename in the same directory), so a reader never sees
/// half a file. Not fsynced: the state only matters while the machine runs (after a crash of
/// the machine its containers are gone anyway).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ShimError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(IoError::at("creating a temp file in", dir))?;
    serde_json::to_writer_pretty(tmp.as_file(), value).map_err(|source| ShimError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    tmp.persist(path).map_err(IoError::at("renaming into", path))?;
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ShimError> {
    let bytes = fs::read(path).map_err(IoError::at("reading", path))?;
    serde_json::from_slice(&bytes).map_err(|source| ShimError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// The state file of the container in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

/// Reads the state the shim of `dir` last recorded.
pub fn read_state(dir: &Path) -> Result<ShimState, ShimError> {
    read_json(&state_path(dir))
}

/// Reads the config of the shim in `dir`.
pub fn read_config(dir: &Path) -> Result<ShimConfig, ShimError> {
    read_json(&dir.join("shim.json"))
}

/// What a (restarted) agent finds in a container's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Adoption {
    /// The shim runs and holds the container: carry on; the state file will get the exit.
    Supervised(ShimState),
    /// The container has exited (or never started); the state has the outcome.
    Finished(ShimState),
    /// The state says creating or running but the shim is gone (killed): nobody collects the
    /// container's output or its exit status. The agent should stop it and treat it as failed.
    Orphaned(ShimState),
}

/// Re-adopts the container in `dir` without touching it: reads its state and checks that its
/// shim still runs.
pub fn adopt(dir: &Path) -> Result<Adoption, ShimError> {
    let state = read_state(dir)?;
    Ok(match state.status {
        ShimStatus::Exited | ShimStatus::Failed => Adoption::Finished(state),
        ShimStatus::Creating | ShimStatus::Running if state.shim_alive(dir) => Adoption::Supervised(state),
        ShimStatus::Creating | ShimStatus::Running => {
            // The shim may have recorded the exit between the two reads.
            let again = read_state(dir)?;
            if matches!(again.status, ShimStatus::Exited | ShimStatus::Failed) {
                Adoption::Finished(again)
            } else {
                Adoption::Orphaned(again)
            }
        }
    })
}

/// Records that the container in `dir` has stopped without its shim (which was killed): exited,
/// exit status unknown. For the agent, after it stopped an orphaned container.
pub fn record_lost_exit(dir: &Path) -> Result<ShimState, ShimError> {
    let mut s = read_state(dir)?;
    if matches!(s.status, ShimStatus::Exited | ShimStatus::Failed) {
        return Ok(s);
    }
    s.status = ShimStatus::Exited;
    s.finished_at = Some(Utc::now());
    s.error = Some("the container's shim was gone; its exit status is unknown".into());
    write_json(&state_path(dir), &s)?;
    Ok(s)
}

/// The launcher's one-line report.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    ok: bool,
    #[serde(default)]
    state: Option<ShimState>,
    #[serde(default)]
    error: Option<String>,
}

/// How long [`spawn`] waits for a container to start (the kubelet's default
/// `--runtime-request-timeout`).
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts a shim for `cfg` with its files in `dir` (created), using the `skiff` binary `exe`
/// (`/proc/self/exe` in the agent). Returns once the container runs (or failed to start), at
/// most after [`START_TIMEOUT`]. The shim is detached: it is not the caller's child by then,
/// and survives the caller.
pub fn spawn(exe: &Path, dir: &Path, cfg: &ShimConfig) -> Result<ShimState, ShimError> {
    spawn_with_timeout(exe, dir, cfg, START_TIMEOUT)
}

/// [`spawn`] with a bound of its own. On [`ShimError::Timeout`] the shim may still bring the
/// container up later: the caller should remove it (`delete --force`).
pub fn spawn_with_timeout(exe: &Path, dir: &Path, cfg: &ShimConfig, timeout: Duration) -> Result<ShimState, ShimError> {
    crate::oci::validate_id(&cfg.id).map_err(|e| ShimError::Start {
        id: cfg.id.clone(),
        message: e.to_string(),
    })?;
    fs::create_dir_all(dir).map_err(IoError::at("creating", dir))?;
    write_json(&dir.join("shim.json"), cfg)?;
    let child = Command::new(exe)
        .arg("shim")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(IoError::at("running", exe))?;
    let launcher = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(IoError::at("running", exe))?,
        Err(_) => {
            // The launcher only relays; ending it leaves the daemon (if any) to the caller's
            // clean-up. Its waiting thread then reaps it.
            if let Some(pid) = i32::try_from(launcher).ok().and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            return Err(ShimError::Timeout {
                dir: dir.to_path_buf(),
                waited: timeout,
            });
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Report>(text.trim()) {
        Ok(Report {
            ok: true,
            state: Some(state),
            ..
        }) => Ok(state),
        Ok(r) => Err(ShimError::Start {
            id: cfg.id.clone(),
            message: r.error.unwrap_or_else(|| "the shim reported no state".into()),
        }),
        Err(_) => Err(ShimError::Start {
            id: cfg.id.clone(),
            message: format!(
                "the shim exited ({}) without a report: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

/// Waits (polling the state file) until the container in `dir` has exited.
pub fn wait_for_exit(dir: &Path, timeout: Duration) -> Result<ShimState, ShimError> {
    let start = Instant::now();
    loop {
        let s = read_state(dir)?;
        if matches!(s.status, ShimStatus::Exited | ShimStatus::Failed) {
            return Ok(s);
        }
        if start.elapsed() >= timeout {
            return Err(ShimError::Timeout {
                dir: dir.to_path_buf(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `skiff shim --dir DIR [--daemon]`: the launcher (without `--daemon`) starts the detached
/// daemon and prints its report; the daemon runs the container.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let mut dir: Option<PathBuf> = None;
    let mut daemon = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--dir") => dir = it.next().map(PathBuf::from),
            Some("--daemon") => daemon = true,
            _ => {
                eprintln!("usage: skiff shim --dir DIR [--daemon]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: skiff shim --dir DIR [--daemon]");
        return ExitCode::from(2);
    };
    if daemon {
        run_daemon(&dir)
    } else {
        launch(&dir)
    }
}

fn print_report(r: &Report) {
    let mut out = io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = writeln!(out);
    let _ = out.flush();
}

/// The launcher: re-executes the shim detached, relays its report, exits (so the daemon is
/// nobody's child but init's or a subreaper's).
fn launch(dir: &Path) -> ExitCode {
    let fail = |error: String| {
        print_report(&Report {
            ok: false,
            state: None,
            error: Some(error),
        });
        ExitCode::from(1)
    };
    let log_path = dir.join("shim.log");
    let log = match fs::OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(e) => return fail(format!("opening {}: {e}", log_path.display())),
    };
    let child = Command::new("/proc/self/exe")
        .arg("shim")
        .arg("--dir")
        .arg(dir)
        .arg("--daemon")
        // The binary's allocator (mimalloc) would otherwise commit a whole arena up front:
        // 6 MiB of private memory for every container's shim.
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(format!("starting the shim: {e}")),
    };
    let mut line = String::new();
    let read = child.stdout.take().map(|s| io::BufReader::new(s).read_line(&mut line));
    match (read, serde_json::from_str::<Report>(line.trim())) {
        (Some(Ok(_)), Ok(r)) => {
            let ok = r.ok;
            print_report(&r);
            if ok {
                ExitCode::SUCCESS
            } else {
                // The daemon exits after a failure: reap it.
                let _ = child.wait();
                ExitCode::from(1)
            }
        }
        _ => {
            let _ = child.wait();
            let tail = fs::read_to_string(&log_path).unwrap_or_default();
            fail(format!(
                "the shim died before reporting: {}",
                tail.lines().last().unwrap_or("").trim()
            ))
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

/// Copies one of the container's streams into the log (and to attached clients) until it
/// closes.
fn pump(
    reader: OwnedFd,
    stream: log::Stream,
    out: Arc<Mutex<log::LogFile>>,
    attached: Arc<attach::Attach>,
    done: mpsc::Sender<()>,
) {
    let kind = match stream {
        log::Stream::Stderr => attach::STDERR,
        _ => attach::STDOUT,
    };
    let mut file = fs::File::from(reader);
    let mut splitter = log::LineSplitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    let write = |entries: Vec<(Vec<u8>, bool)>| {
        if entries.is_empty() {
            return;
        }
        let now = Utc::now();
        // A poisoned lock only means another pump panicked mid-write; keep logging.
        let mut f = out.lock().unwrap_or_else(|p| p.into_inner());
        for (text, partial) in entries {
            if let Err(e) = f.write_entry(now, stream, partial, &text) {
                eprintln!("skiff shim: writing the container log: {e}");
            }
        }
    };
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                attached.broadcast(kind, &buf[..n]);
                write(splitter.push(&buf[..n]));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A terminal whose other side is gone.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
            Err(e) => {
                eprintln!("skiff shim: reading the container's {stream:?}: {e}");
                break;
            }
        }
    }
    write(splitter.finish().into_iter().collect());
    let _ = done.send(());
}

/// The daemon: detaches, runs the container, logs, records the exit, exits.
fn run_daemon(dir: &Path) -> ExitCode {
    // A session of its own: no signal sent to the agent's process group or terminal reaches it.
    if let Err(e) = rustix::process::setsid() {
        eprintln!("skiff shim: setsid: {e}");
    }
    let report_fail = |state: &mut ShimState, error: String| {
        eprintln!("skiff shim: {error}");
        state.status = ShimStatus::Failed;
        state.error = Some(error.clone());
        let _ = write_json(&state_path(dir), state);
        print_report(&Report {
            ok: false,
            state: None,
            error: Some(error),
        });
        ExitCode::from(1)
    };
    let mut state = ShimState::new(ShimStatus::Creating);
    let cfg = match read_config(dir) {
        Ok(c) => c,
        Err(e) => return report_fail(&mut state, e.to_string()),
    };
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        return report_fail(&mut state, format!("becoming the child subreaper: {e}"));
    }
    if let Err(e) = write_json(&state_path(dir), &state) {
        return report_fail(&mut state, e.to_string());
    }
    let logfile = match log::LogFile::open(&cfg.log_path, cfg.log_max_size, cfg.log_max_files) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => return report_fail(&mut state, format!("opening {}: {e}", cfg.log_path.display())),
    };
    let runtime = cfg.oci_runtime();
    let pid_file = dir.join("init.pid");
    let mut stdio = ContainerStdio::default();
    // The container's output: two pipes, or its terminal (known once it is created).
    let mut outputs: Vec<(OwnedFd, log::Stream)> = Vec::new();
    let mut stdin_writer = None;
    let mut console = None;
    if cfg.tty {
        let listen = || -> io::Result<(std::os::unix::net::UnixListener, PathBuf)> {
            let name = "console.sock";
            let _ = fs::remove_file(dir.join(name));
            let (path, _keep) = attach::socket_path(dir, name)?;
            let listener = std::os::unix::net::UnixListener::bind(&path)?;
            // The runtime is another process: name the directory through ours.
            let path = match path.strip_prefix("/proc/self/") {
                Ok(rest) => Path::new("/proc").join(std::process::id().to_string()).join(rest),
                Err(_) => path,
            };
            Ok((listener, path))
        };
        match listen() {
            Ok((listener, path)) => {
                stdio.console_socket = Some(path);
                console = Some(listener);
            }
            Err(e) => return report_fail(&mut state, format!("making the console socket: {e}")),
        }
    } else {
        let (out_r, out_w, err_r, err_w) = match (pipe(), pipe()) {
            (Ok((a, b)), Ok((c, d))) => (a, b, c, d),
            (Err(e), _) | (_, Err(e)) => return report_fail(&mut state, format!("creating pipes: {e}")),
        };
        stdio.stdout = Some(Stdio::from(out_w));
        stdio.stderr = Some(Stdio::from(err_w));
        outputs.push((out_r, log::Stream::Stdout));
        outputs.push((err_r, log::Stream::Stderr));
        if cfg.stdin {
            match pipe() {
                Ok((r, w)) => {
                    stdio.stdin = Some(Stdio::from(r));
                    stdin_writer = Some(fs::File::from(w));
                }
                Err(e) => return report_fail(&mut state, format!("creating pipes: {e}")),
            }
        }
    }
    // The write ends go to the runtime and are closed here when `create` returns, so the
    // pumps see EOF once the container's processes are gone.
    if let Err(e) = runtime.create(&cfg.id, &cfg.bundle, &pid_file, stdio) {
        // Whatever the runtime left half-made would block the ID.
        if !matches!(e, crate::oci::RuntimeError::AlreadyExists { .. }) {
            let _ = runtime.delete(&cfg.id, true);
        }
        return report_fail(&mut state, e.to_string());
    }
    let mut terminal = None;
    if let Some(listener) = console {
        let received = attach::receive_terminal(&listener).and_then(|master| {
            let m = fs::File::from(master);
            Ok((m.try_clone()?, m.try_clone()?, m))
        });
        let _ = fs::remove_file(dir.join("console.sock"));
        match received {
            Ok((read, write, resize)) => {
                outputs.push((OwnedFd::from(read), log::Stream::Stdout));
                if cfg.stdin {
                    stdin_writer = Some(write);
                }
                terminal = Some(resize);
            }
            Err(e) => {
                let _ = runtime.delete(&cfg.id, true);
                return report_fail(&mut state, format!("receiving the container's terminal: {e}"));
            }
        }
    }
    let attached = attach::Attach::new(stdin_writer, terminal, cfg.stdin_once);
    if let Err(e) = attached.listen(dir) {
        let _ = runtime.delete(&cfg.id, true);
        return report_fail(&mut state, format!("listening for attach: {e}"));
    }
    let pid = match fs::read_to_string(&pid_file).map(|s| s.trim().parse::<i32>()) {
        Ok(Ok(p)) if p > 0 => p,
        other => {
            let _ = runtime.delete(&cfg.id, true);
            return report_fail(
                &mut state,
                format!("reading the init's PID from {}: {other:?}", pid_file.display()),
            );
        }
    };
    state.pid = Some(pid);
    let (done_tx, done_rx) = mpsc::channel();
    let pumps = outputs.len();
    for (r, s) in outputs {
        let (out, done, attached) = (logfile.clone(), done_tx.clone(), attached.clone());
        std::thread::spawn(move || pump(r, s, out, attached, done));
    }
    drop(done_tx);
    if let Err(e) = runtime.start(&cfg.id) {
        let _ = runtime.delete(&cfg.id, true);
        return report_fail(&mut state, e.to_string());
    }
    state.status = ShimStatus::Running;
    state.started_at = Some(Utc::now());
    if let Err(e) = write_json(&state_path(dir), &state) {
        eprintln!("skiff shim: {e}");
    }
    print_report(&Report {
        ok: true,
        state: Some(state.clone()),
        error: None,
    });
    // Nobody reads the launcher's pipe any more.
    if let Ok(null) = fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }

    let exit = wait_init(pid);
    let finished = Utc::now();
    // Let the pumps write what the container wrote last.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    for _ in 0..pumps {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    attached.close_all();
    reap_all();
    state.finished_at = Some(finished);
    match exit {
        Ok(Exit::Code(c)) => state.exit_code = Some(c),
        Ok(Exit::Signal(s)) => {
            state.signal = Some(s);
            state.exit_code = Some(128 + s);
        }
        Err(e) => state.error = Some(e),
    }
    state.oom_killed = cgroup_of(&cfg.bundle).is_some_and(|cg| oom_killed(Path::new("/sys/fs/cgroup"), &cg));
    state.status = ShimStatus::Exited;
    if let Err(e) = write_json(&state_path(dir), &state) {
        eprintln!("skiff shim: recording the exit: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

enum Exit {
    Code(i32),
    Signal(i32),
}

/// Reaps children (the shim is their subreaper) until the container's init exits.
fn wait_init(init: i32) -> Result<Exit, String> {
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == init => {
                return match (status.exit_status(), status.terminating_signal()) {
                    (Some(c), _) => Ok(Exit::Code(c)),
                    (_, Some(s)) => Ok(Exit::Signal(s)),
                    _ => Err(format!("unexpected wait status {status:?}")),
                };
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::CHILD) => {
                // The init was not reparented to us (a runtime that keeps it as its own
                // child): wait for it to disappear; its exit status is lost.
                while Path::new(&format!("/proc/{init}")).exists() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Err("the container's init was not the shim's child; exit status unknown".into());
            }
            Err(e) => return Err(format!("waiting for the container: {e}")),
        }
    }
}

/// Reaps whatever exited children are left (the container's orphans).
fn reap_all() {
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
}

/// The container's cgroup path from its bundle's `config.json`.
fn cgroup_of(bundle: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).ok()?).ok()?;
    v.pointer("/linux/cgroupsPath")?.as_str().map(str::to_string)
}

/// Whether the cgroup at `path` (as in `config.json`) recorded an OOM kill: `oom_kill` in
/// `memory.events` (v2) or `memory.oom_control` (v1), under the cgroup mount `root`.
pub fn oom_killed(root: &Path, path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    let candidates = [
        root.join(rel).join("memory.events"),
        root.join("memory").join(rel).join("memory.oom_control"),
    ];
    candidates.iter().any(|p| {
        fs::read_to_string(p).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counters_v1_and_v2() {
        let root = tempfile::tempdir().expect("dir");
        let v2 = root.path().join("skiff/pod1/c1");
        fs::create_dir_all(&v2).expect("mkdir");
        fs::write(v2.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").expect("write");
        assert!(oom_killed(root.path(), "/skiff/pod1/c1"));
        fs::write(v2.join("memory.events"), "low 0\nmax 3\noom 0\noom_kill 0\n").expect("write");
        assert!(!oom_killed(root.path(), "/skiff/pod1/c1"));
        let v1 = root.path().join("memory/skiff/pod1/c2");
        fs::create_dir_all(&v1).expect("mkdir");
        fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("write");
        assert!(oom_killed(root.path(), "/skiff/pod1/c2"));
        assert!(!oom_killed(root.path(), "/skiff/none"));
    }

    #[test]
    fn states_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = ShimState::new(ShimStatus::Exited);
        s.exit_code = Some(3);
        s.finished_at = Some(Utc::now());
        write_json(&state_path(dir.path()), &s).expect("write");
        assert_eq!(read_state(dir.path()).expect("read"), s);
        assert!(!s.shim_alive(dir.path()), "this test process is no shim");
        fs::write(state_path(dir.path()), "{not json").expect("write");
        assert!(matches!(read_state(dir.path()), Err(ShimError::Corrupt { .. })));
        let missing = dir.path().join("nope");
        assert!(matches!(read_state(&missing), Err(ShimError::Io(_))));
    }

    #[test]
    fn adoption_tells_supervised_finished_and_orphaned_apart() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = ShimState::new(ShimStatus::Running);
        // No process has this PID (above the kernel's maximum).
        s.shim_pid = 1 << 23;
        s.pid = Some(1 << 23);
        write_json(&state_path(dir.path()), &s).expect("write");
        assert_eq!(adopt(dir.path()).expect("adopt"), Adoption::Orphaned(s.clone()));
        let lost = record_lost_exit(dir.path()).expect("record");
        assert_eq!((lost.status, lost.exit_code), (ShimStatus::Exited, None));
        assert!(lost.error.is_some() && lost.finished_at.is_some());
        assert_eq!(record_lost_exit(dir.path()).expect("again"), lost, "recorded once");
        s.status = ShimStatus::Exited;
        s.exit_code = Some(0);
        write_json(&state_path(dir.path()), &s).expect("write");
        assert_eq!(adopt(dir.path()).expect("adopt"), Adoption::Finished(s));
        assert!(matches!(adopt(&dir.path().join("none")), Err(ShimError::Io(_))));
    }

    /// A config for container `id` with everything in `dir`.
    fn test_config(id: &str, dir: &Path) -> ShimConfig {
        ShimConfig {
            id: id.into(),
            bundle: dir.into(),
            runtime: RuntimeSelector::default(),
            runtime_root: dir.into(),
            log_path: dir.join("log"),
            log_max_size: 1,
            log_max_files: 1,
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    #[test]
    fn a_hanging_start_times_out() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let exe = dir.path().join("hangs");
        fs::write(&exe, "#!/bin/sh\nexec sleep 30\n").expect("script");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
        let cfg = test_config("slow", dir.path());
        let t = Instant::now();
        let r = spawn_with_timeout(&exe, &dir.path().join("c"), &cfg, Duration::from_millis(200));
        assert!(matches!(r, Err(ShimError::Timeout { .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // A launcher that prints no report is an error with its stderr.
        fs::write(&exe, "#!/bin/sh\necho broken >&2\nexit 1\n").expect("script");
        match spawn(&exe, &dir.path().join("c"), &cfg) {
            Err(ShimError::Start { message, .. }) => assert!(message.contains("broken"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configs_default_their_log_limits() {
        let c: ShimConfig = serde_json::from_value(serde_json::json!({
            "id": "c1",
            "bundle": "/b",
            "runtime": {"external": {"program": "runc"}},
            "runtime_root": "/run/r",
            "log_path": "/var/log/pods/x/c/0.log",
        }))
        .expect("config");
        assert_eq!(c.log_max_size, DEFAULT_LOG_MAX_SIZE);
        assert_eq!(c.log_max_files, DEFAULT_LOG_MAX_FILES);
    }

    #[test]
    fn spawn_refuses_bad_ids_and_missing_binaries() {
        let dir = tempfile::tempdir().expect("dir");
        let cfg = test_config("../evil", dir.path());
        assert!(matches!(
            spawn(Path::new("/nonexistent"), dir.path(), &cfg),
            Err(ShimError::Start { .. })
        ));
        let cfg = ShimConfig { id: "ok".into(), ..cfg };
        assert!(matches!(
            spawn(Path::new("/nonexistent"), dir.path(), &cfg),
            Err(ShimError::Io(_))
        ));
    }
}
