//! Attaching to a container's main process (`kubectl attach`, `kubectl run -it`), as conmon
//! serves it: the shim holds the container's stdin (a pipe, or the terminal of a `tty`
//! container) and listens on `<dir>/attach.sock`; each client sees what the container writes
//! from then on and may write to its stdin and resize its terminal.
//!
//! The protocol on the socket (ours; both ends are Skiff's): the client first sends one JSON
//! line, [`AttachHello`]; then both sides send frames of `type: u8, length: u32 (big-endian),
//! payload`, numbered as the agent tunnel's (`skiff_client::tunnel::frame`), so the agent
//! relays them unchanged. The shim sends [`STDOUT`] and [`STDERR`] frames; the client sends [`STDIN`],
//! [`RESIZE`] (JSON `{"width":…,"height":…}`) and [`STDIN_CLOSE`]. The shim closes every
//! connection once the container has exited and its output is drained.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// A frame of the container's stdout (shim → client).
pub const STDOUT: u8 = 1;
/// A frame of the container's stderr (shim → client).
pub const STDERR: u8 = 2;
/// Bytes for the container's stdin (client → shim).
pub const STDIN: u8 = 0;
/// A terminal size (client → shim).
pub const RESIZE: u8 = 4;
/// The client's stdin ended (client → shim).
pub const STDIN_CLOSE: u8 = 255;

/// The largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// Output frames queued per client; a client that falls further behind misses output (the
/// container never waits for an attached client).
const CLIENT_QUEUE: usize = 256;

/// The socket's name in the container's directory.
pub const SOCKET: &str = "attach.sock";

/// What a client asks for, its first line on the socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachHello {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A terminal size in a [`RESIZE`] frame (named as kubectl names them, so the agent relays
/// kubectl's sizes as they are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A frame's header.
pub fn header(kind: u8, len: usize) -> [u8; 5] {
    let l = (len as u32).to_be_bytes();
    [kind, l[0], l[1], l[2], l[3]]
}

/// Reads one frame; `None` at the end of the stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 5];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("attach frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], payload)))
}

/// A path to `name` in `dir` short enough for a unix socket address (at most 108 bytes):
/// through `/proc/self/fd` of an open directory when `dir` itself is too long, as conmon does.
/// Keep the returned `File` open while the path is used.
pub fn socket_path(dir: &Path, name: &str) -> io::Result<(PathBuf, Option<File>)> {
    let direct = dir.join(name);
    if direct.as_os_str().len() < 100 {
        return Ok((direct, None));
    }
    let d = File::open(dir)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&d);
    Ok((PathBuf::from(format!("/proc/self/fd/{fd}/{name}")), Some(d)))
}

/// Receives the terminal master a runtime sends to a console socket (`--console-socket`):
/// one `SCM_RIGHTS` message on the first connection.
pub fn receive_terminal(listener: &UnixListener) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    recvmsg(
        &stream,
        &mut [io::IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the console socket carried no terminal",
    ))
}

/// The shim's side: the container's input and the attached clients.
pub struct Attach {
    /// The container's stdin (pipe write end or terminal master), while open.
    stdin: Mutex<Option<File>>,
    /// The terminal of a `tty` container, for resizes.
    terminal: Option<File>,
    /// Close the container's stdin when the first client's stdin ends (`stdinOnce`).
    stdin_once: bool,
    clients: Mutex<Vec<Client>>,
}

struct Client {
    wants: AttachHello,
    out: SyncSender<(u8, Arc<[u8]>)>,
    stream: UnixStream,
}

impl Attach {
    pub fn new(stdin: Option<File>, terminal: Option<File>, stdin_once: bool) -> Arc<Attach> {
        Arc::new(Attach {
            stdin: Mutex::new(stdin),
            terminal,
            stdin_once,
            clients: Mutex::new(Vec::new()),
        })
    }

    /// Sends what the container wrote on `kind` ([`STDOUT`]/[`STDERR`]) to every client that
    /// asked for it; never blocks.
    pub fn broadcast(&self, kind: u8, data: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.is_empty() {
            return;
        }
        let data: Arc<[u8]> = Arc::from(data);
        clients.retain(|c| {
            let wanted = if kind == STDERR { c.wants.stderr } else { c.wants.stdout };
            if !wanted {
                return true;
            }
            match c.out.try_send((kind, data.clone())) {
                Ok(()) | Err(TrySendError::Full(_)) => true,
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// Ends every client's connection (the container has exited).
    pub fn close_all(&self) {
        let clients = std::mem::take(&mut *self.clients.lock().unwrap_or_else(|p| p.into_inner()));
        for c in clients {
            drop(c.out);
            let _ = c.stream.shutdown(std::net::Shutdown::Read);
        }
    }

    /// Listens on `<dir>/attach.sock` and serves clients on threads of their own.
    pub fn listen(self: &Arc<Self>, dir: &Path) -> io::Result<()> {
        let (path, _keep) = socket_path(dir, SOCKET)?;
        let _ = std::fs::remove_file(dir.join(SOCKET));
        let listener = UnixListener::bind(&path)?;
        let me = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let me = me.clone();
                std::thread::spawn(move || {
                    if let Err(e) = me.serve(conn) {
                        eprintln!("skiff shim: an attached client: {e}");
                    }
                });
            }
        });
        Ok(())
    }

    fn serve(self: &Arc<Self>, conn: UnixStream) -> io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let wants: AttachHello = serde_json::from_str(line.trim())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("attach hello: {e}")))?;
        if wants.stdout || wants.stderr {
            let (tx, rx) = sync_channel::<(u8, Arc<[u8]>)>(CLIENT_QUEUE);
            let mut writer = conn.try_clone()?;
            std::thread::spawn(move || {
                for (kind, data) in rx {
                    let ok = writer
                        .write_all(&header(kind, data.len()))
                        .and_then(|()| writer.write_all(&data));
                    if ok.is_err() {
                        return;
                    }
                }
                // The container exited: the client sees the end of the stream.
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
            self.clients.lock().unwrap_or_else(|p| p.into_inner()).push(Client {
                wants,
                out: tx,
                stream: conn.try_clone()?,
            });
        }
        while let Some((kind, payload)) = read_frame(&mut reader)? {
            match kind {
                STDIN if wants.stdin => {
                    let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&payload).is_err() {
                            *stdin = None;
                        }
                    }
                }
                RESIZE => {
                    if let (Some(t), Ok(size)) = (&self.terminal, serde_json::from_slice::<Size>(&payload)) {
                        let ws = rustix::termios::Winsize {
                            ws_row: size.height,
                            ws_col: size.width,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(t.as_fd(), ws);
                    }
                }
                STDIN_CLOSE if wants.stdin => break,
                _ => {}
            }
        }
        // The client is gone or done with stdin: with `stdinOnce`, so is the container's.
        if wants.stdin && self.stdin_once {
            let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(w), Some(_)) = (stdin.as_mut(), &self.terminal) {
                // Other handles of the terminal stay open (output, resizes): its end of input
                // is the terminal's EOF character, as typing Ctrl-D.
                let _ = w.write_all(&[0x04]);
            }
            stdin.take();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&header(STDIN, 3));
        buf.extend_from_slice(b"abc");
        buf.extend_from_slice(&header(STDIN_CLOSE, 0));
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).expect("frame"), Some((STDIN, b"abc".to_vec())));
        assert_eq!(read_frame(&mut r).expect("frame"), Some((STDIN_CLOSE, Vec::new())));
        assert_eq!(read_frame(&mut r).expect("end"), None);
        let big = header(STDIN, MAX_FRAME + 1);
        assert!(read_frame(&mut &big[..]).is_err());
    }

    #[test]
    fn clients_get_what_they_asked_for_and_stdin_once_closes_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (r, w) = std::io::pipe().expect("pipe");
        let attach = Attach::new(Some(File::from(std::os::fd::OwnedFd::from(w))), None, true);
        attach.listen(dir.path()).expect("listen");
        let mut c = UnixStream::connect(dir.path().join(SOCKET)).expect("connect");
        c.write_all(b"{\"stdin\":true,\"stdout\":true,\"stderr\":false}\n")
            .expect("hello");
        // The client is registered once its hello is read.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while attach.clients.lock().expect("lock").is_empty() {
            assert!(std::time::Instant::now() < deadline, "client never registered");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        attach.broadcast(STDERR, b"not for this client");
        attach.broadcast(STDOUT, b"hello");
        let mut rd = c.try_clone().expect("clone");
        assert_eq!(read_frame(&mut rd).expect("frame"), Some((STDOUT, b"hello".to_vec())));
        c.write_all(&header(STDIN, 5)).expect("write");
        c.write_all(b"typed").expect("write");
        c.write_all(&header(STDIN_CLOSE, 0)).expect("write");
        // The container's stdin got the bytes, then its end (stdinOnce).
        let mut got = String::new();
        (&r).read_to_string(&mut got).expect("stdin");
        assert_eq!(got, "typed");
        attach.close_all();
        assert_eq!(read_frame(&mut rd).expect("end"), None);
    }
}
