//! `kubectl exec` and `kubectl port-forward` on the node, as the kubelet serves them through
//! its container runtime: a process run in a running container through the OCI runtime's
//! `exec` (its stdio on pipes, or on a terminal the agent holds), and connections to a port
//! on the pod's loopback, made inside the pod's network namespace.

use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use skiff_client::streams::{
    ExecExit, ExecRequest, ExecSession, PortConnection, PortForwardRequest, Reader, TerminalSize, Writer,
};
use skiff_runtime::{bundle, ContainerManager, ContainerStdio, ShimStatus};
use tokio::io::{AsyncRead, ReadBuf};

/// The running attempt of container `name` of pod `uid`, as the runtime knows it
/// (`<uid>-<name>-<attempt>`, the newest running one).
pub fn running_container(containers: &ContainerManager, uid: &str, name: &str) -> Result<String, String> {
    let prefix = format!("{uid}-{name}-");
    let mut attempts: Vec<(u32, String)> = containers
        .ids()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|id| {
            let n = id.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, id))
        })
        .collect();
    attempts.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
    attempts
        .into_iter()
        .map(|(_, id)| id)
        .find(|id| containers.state(id).is_ok_and(|s| s.status == ShimStatus::Running))
        .ok_or_else(|| format!("container not found ({name:?})"))
}

fn pipe() -> Result<(std::io::PipeReader, std::io::PipeWriter), String> {
    std::io::pipe().map_err(|e| format!("making a pipe: {e}"))
}

fn reader(r: std::io::PipeReader) -> Result<Reader, String> {
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(r)).map_err(|e| e.to_string())?;
    Ok(Box::pin(rx))
}

fn writer(w: std::io::PipeWriter) -> Result<Writer, String> {
    let tx = tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(w)).map_err(|e| e.to_string())?;
    Ok(Box::pin(tx))
}

/// Runs `req.command` in its container. Without a terminal, the process's stdio are pipes
/// (what was not asked for is `/dev/null`). With one, the runtime gets a terminal the agent
/// holds the other side of, as its controlling terminal: the runtime makes the container's
/// terminal and copies between the two (and the size, on `SIGWINCH`), as `runc exec -t` does
/// from a shell.
pub fn exec(containers: ContainerManager, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, String>> {
    Box::pin(async move {
        let (c, r) = (containers.clone(), req.clone());
        let (id, process) = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let id = running_container(&c, &r.uid, &r.container)?;
            let spec = bundle::read_config(&c.dir(&id)).map_err(|e| e.to_string())?;
            let process = bundle::exec_process(&spec, r.command.clone(), r.tty).map_err(|e| e.to_string())?;
            Ok((id, process))
        })
        .await
        .map_err(|e| e.to_string())??;
        let mut stdio = ContainerStdio::default();
        let mut session = ExecSession {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
            exit: Box::pin(async { ExecExit::Code(0) }),
        };
        if req.tty {
            let (master, slave) = open_terminal()?;
            let read = master.try_clone().map_err(|e| e.to_string())?;
            stdio.stdin = Some(Stdio::from(slave.try_clone().map_err(|e| e.to_string())?));
            stdio.stdout = Some(Stdio::from(slave.try_clone().map_err(|e| e.to_string())?));
            stdio.stderr = Some(Stdio::from(slave));
            stdio.controlling_terminal = true;
            if req.stdout || req.stderr {
                session.stdout = Some(Box::pin(TerminalReader(tokio::fs::File::from_std(read))));
            }
            let resize_fd = master.try_clone().map_err(|e| e.to_string())?;
            if req.stdin {
                session.stdin = Some(Box::pin(tokio::fs::File::from_std(master)));
            }
            let (tx, mut rx) = tokio::sync::mpsc::channel::<TerminalSize>(4);
            tokio::spawn(async move {
                while let Some(size) = rx.recv().await {
                    let ws = rustix::termios::Winsize {
                        ws_row: size.height,
                        ws_col: size.width,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    if let Err(e) = rustix::termios::tcsetwinsize(&resize_fd, ws) {
                        tracing::debug!(error = %e, "resizing an exec terminal");
                    }
                }
            });
            session.resize = Some(tx);
        } else {
            if req.stdin {
                let (r, w) = pipe()?;
                stdio.stdin = Some(Stdio::from(r));
                session.stdin = Some(writer(w)?);
            }
            if req.stdout {
                let (r, w) = pipe()?;
                stdio.stdout = Some(Stdio::from(w));
                session.stdout = Some(reader(r)?);
            }
            if req.stderr {
                let (r, w) = pipe()?;
                stdio.stderr = Some(Stdio::from(w));
                session.stderr = Some(reader(r)?);
            }
        }
        let run = tokio::task::spawn_blocking(move || {
            let dir = containers.dir(&id);
            containers.runtime().exec(&id, &process, stdio, &dir)
        });
        session.exit = Box::pin(async move {
            match run.await {
                Ok(Ok(code)) => ExecExit::Code(code),
                Ok(Err(e)) => ExecExit::Error(e.to_string()),
                Err(e) => ExecExit::Error(e.to_string()),
            }
        });
        Ok(session)
    })
}

/// Attaches to the container's main process through its shim's attach socket
/// ([`skiff_runtime::shim::attach`]): what it writes from now on, its stdin if the container
/// has one, and its terminal's size. The session ends when the container exits.
pub fn attach(containers: ContainerManager, req: ExecRequest) -> BoxFuture<'static, Result<ExecSession, String>> {
    use skiff_runtime::shim::attach::{self as proto, AttachHello};
    Box::pin(async move {
        let hello = AttachHello {
            stdin: req.stdin,
            stdout: req.stdout || (req.tty && req.stderr),
            stderr: req.stderr && !req.tty,
        };
        let r = req.clone();
        let stream = tokio::task::spawn_blocking(move || -> Result<std::os::unix::net::UnixStream, String> {
            let id = running_container(&containers, &r.uid, &r.container)?;
            let dir = containers.dir(&id);
            let connect = || -> std::io::Result<std::os::unix::net::UnixStream> {
                let (path, _keep) = proto::socket_path(&dir, proto::SOCKET)?;
                let mut c = std::os::unix::net::UnixStream::connect(path)?;
                let mut line = serde_json::to_vec(&hello).map_err(std::io::Error::other)?;
                line.push(b'\n');
                std::io::Write::write_all(&mut c, &line)?;
                c.set_nonblocking(true)?;
                Ok(c)
            };
            connect().map_err(|e| format!("attaching to container {:?}: {e}", r.container))
        })
        .await
        .map_err(|e| e.to_string())??;
        let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
        let (rd, wr) = stream.into_split();
        Ok(skiff_client::tunnel::framed_session(rd, wr, &req))
    })
}

/// A new terminal: its master (the agent's side) and its slave (the runtime's stdio).
fn open_terminal() -> Result<(std::fs::File, std::fs::File), String> {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let err = |e: rustix::io::Errno| format!("making a terminal: {e}");
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(err)?;
    grantpt(&master).map_err(err)?;
    unlockpt(&master).map_err(err)?;
    let name = ptsname(&master, Vec::new()).map_err(err)?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(std::ffi::OsStr::from_bytes(name.to_bytes()))
        .map_err(|e| format!("opening a terminal: {e}"))?;
    Ok((std::fs::File::from(master), slave))
}

/// A terminal master read until the other side is gone: Linux then fails reads with `EIO`,
/// which is the end of the stream, not an error.
struct TerminalReader(tokio::fs::File);

impl AsyncRead for TerminalReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Connects to `req.port` on the pod's loopback: inside its network namespace, or on the
/// node for a `hostNetwork` pod.
pub fn port_forward(
    netns_dir: std::path::PathBuf,
    req: PortForwardRequest,
) -> BoxFuture<'static, Result<PortConnection, String>> {
    Box::pin(async move {
        let port = req.port;
        let connect = move || std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
        let stream = if req.host_network {
            tokio::task::spawn_blocking(connect).await.map_err(|e| e.to_string())?
        } else {
            let path = skiff_net::node::pod_netns_path(&netns_dir, &req.uid);
            tokio::task::spawn_blocking(move || {
                let ns = skiff_net::Netns::open(&path).map_err(|e| e.to_string())?;
                ns.run(connect).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())??
        }
        .map_err(|e| {
            format!(
                "failed to connect to localhost:{port} inside namespace of pod {:?}: {e}",
                req.pod
            )
        })?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let stream = tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())?;
        let (read, write) = stream.into_split();
        Ok(PortConnection {
            read: Box::pin(read),
            write: Box::pin(write),
        })
    })
}
