//! One stream the peer opened: its headers, the bytes it sends, and a way to answer.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::header::Headers;
use crate::session::Outgoing;

/// The largest DATA payload this side sends. A write of more is cut into several frames. 16 KiB
/// keeps one busy stream from holding the connection's single writer for long, and is well
/// under the 24-bit frame limit every SPDY peer accepts.
pub const MAX_DATA_FRAME: usize = 16 * 1024;

/// What the session and a stream's writers share about the stream.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// The peer sent RST_STREAM: writes fail with `BrokenPipe`.
    pub(crate) reset: AtomicBool,
    /// This side sent its FIN (or the stream was refused): no more DATA may follow.
    pub(crate) fin_sent: AtomicBool,
}

/// A stream the peer opened with SYN_STREAM. The session has already answered SYN_REPLY.
#[derive(Debug)]
pub struct SpdyStream {
    id: u32,
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl SpdyStream {
    pub(crate) fn new(id: u32, headers: Headers, reader: StreamReader, writer: StreamWriter) -> Self {
        SpdyStream {
            id,
            headers,
            reader,
            writer,
        }
    }

    /// The stream id (odd: the client opens streams).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The first value of header `name` (lower-case, e.g. `streamtype`, `port`, `requestid`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every header in wire order; a header with several values appears once per value.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The two directions of the stream.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// The bytes the peer sends on one stream.
///
/// Reads end (EOF) at the peer's FIN, at its RST_STREAM, or when the connection's read side
/// ends. Until it is read, a stream buffers at most [`crate::STREAM_BUFFER`] frames; past that
/// the session stops reading the connection, as spdystream does, so a stream nobody reads
/// should have its reader dropped (its DATA is then discarded).
#[derive(Debug)]
pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl StreamReader {
    pub(crate) fn new(id: u32, rx: mpsc::Receiver<Bytes>) -> Self {
        StreamReader {
            id,
            rx,
            chunk: Bytes::new(),
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if self.chunk.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.chunk = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.chunk.len().min(buf.remaining());
        buf.put_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Sends bytes on one stream as DATA frames of at most [`MAX_DATA_FRAME`] bytes.
///
/// Writes queue frames for the session's single connection writer; a write waits while that
/// queue is full. `poll_flush` returns at once (queued frames are written in order by the
/// session, also after every writer is dropped). `poll_shutdown` queues an empty DATA frame with
/// FLAG_FIN; after it, and after the peer's RST_STREAM or the end of the connection, writes fail
/// with `BrokenPipe`. Clones write to the same stream and share its FIN. Dropping every writer
/// does not FIN the stream: shut it down first.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    tx: PollSender<Outgoing>,
    state: Arc<StreamState>,
}

impl StreamWriter {
    pub(crate) fn new(id: u32, tx: mpsc::Sender<Outgoing>, state: Arc<StreamState>) -> Self {
        StreamWriter {
            id,
            tx: PollSender::new(tx),
            state,
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn check_open(&self) -> io::Result<()> {
        if self.state.reset.load(Ordering::Acquire) {
            return Err(broken_pipe(self.id, "reset by the peer"));
        }
        if self.state.fin_sent.load(Ordering::Acquire) {
            return Err(broken_pipe(self.id, "already shut down"));
        }
        Ok(())
    }

    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let id = self.id;
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken_pipe(id, "connection closed"))?;
        Poll::Ready(Ok(()))
    }

    fn send(&mut self, data: Bytes, fin: bool) -> io::Result<()> {
        let id = self.id;
        self.tx
            .send_item(Outgoing::Data {
                stream_id: id,
                data,
                fin,
            })
            .map_err(|_| broken_pipe(id, "connection closed"))
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check_open()?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_reserve(cx))?;
        // The stream may have been reset or shut down (by a clone) while waiting.
        if let Err(e) = self.check_open() {
            self.tx.abort_send();
            return Poll::Ready(Err(e));
        }
        let n = buf.len().min(MAX_DATA_FRAME);
        self.send(Bytes::copy_from_slice(&buf[..n]), false)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing to close on a stream that already ended on this side or was reset.
        if self.state.fin_sent.load(Ordering::Acquire) || self.state.reset.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_reserve(cx))?;
        if self.state.fin_sent.swap(true, Ordering::AcqRel) {
            self.tx.abort_send();
            return Poll::Ready(Ok(()));
        }
        self.send(Bytes::new(), true)?;
        Poll::Ready(Ok(()))
    }
}

fn broken_pipe(id: u32, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, format!("spdy stream {id}: {why}"))
}
