//! Foreground `exec` of a terminal process, as runc does it (its "new terminal" mode in the
//! foreground): libcontainer makes the container's terminal and sends its master over a
//! console socket; this process puts its own stdin terminal in raw mode, copies between its
//! stdio and the master, and follows its terminal's size.

use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::termios::{isatty, tcgetattr, tcgetwinsize, tcsetattr, tcsetwinsize, OptionalActions};

/// A console socket, listening before the container process is made (the process sends the
/// master without waiting for an `accept`).
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Listens on a socket of this process's own under `dir`.
    pub fn listen(dir: &Path) -> std::io::Result<ConsoleSocket> {
        let path = dir.join(format!(".console-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The terminal master the container process sent.
    pub fn receive(&self) -> std::io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let mut buf = [0u8; 4096];
        recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut buf)],
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
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the console socket carried no terminal",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies between this process's stdio and the terminal `master` until `wait` returns (the
/// process's exit), then drains what the terminal still holds for a moment.
pub fn relay<T>(master: OwnedFd, wait: impl FnOnce() -> T) -> std::io::Result<T> {
    let stdin = std::io::stdin();
    let saved = if isatty(stdin.as_fd()) {
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Some(saved)
    } else {
        None
    };
    let master = std::fs::File::from(master);
    let done = Arc::new(AtomicBool::new(false));
    // Size: copied at start and followed (polled; this process handles no signals).
    if let Ok(size) = tcgetwinsize(stdin.as_fd()) {
        let _ = tcsetwinsize(&master, size);
        let (m, done) = (master.try_clone()?, done.clone());
        std::thread::spawn(move || {
            let mut last = size;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if let Ok(now) = tcgetwinsize(std::io::stdin().as_fd()) {
                    if (now.ws_row, now.ws_col) != (last.ws_row, last.ws_col) {
                        let _ = tcsetwinsize(&m, now);
                        last = now;
                    }
                }
            }
        });
    }
    let mut input = master.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if input.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    let mut output = master;
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout().lock();
        // EIO: every holder of the terminal's other side is gone.
        while let Ok(n @ 1..) = output.read(&mut buf) {
            if stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                break;
            }
        }
        let _ = tx.send(());
    });
    let result = wait();
    done.store(true, Ordering::Relaxed);
    // A child of the process may hold the terminal open: do not wait for it.
    let _ = rx.recv_timeout(Duration::from_secs(1));
    if let Some(saved) = saved {
        let _ = tcsetattr(stdin.as_fd(), OptionalActions::Now, &saved);
    }
    Ok(result)
}
