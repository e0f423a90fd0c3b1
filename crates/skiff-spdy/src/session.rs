//! The server side of one SPDY/3.1 connection: a reader task that parses frames and feeds
//! streams, and a writer task that owns the write half and the outgoing zlib context.
//!
//! ```text
//!  peer ──frames──▶ read task ──SpdyStream──▶ Incoming::next
//!                     │  └──DATA──▶ StreamReader (one bounded queue per stream)
//!                     └──SYN_REPLY, PING, RST──┐
//!  StreamWriter ──DATA (bounded queue)─────────┴──▶ write task ──frames──▶ peer
//! ```
//!
//! Lifetime: the write task ends, sends GOAWAY and shuts the connection down once [`Incoming`]
//! and every [`StreamWriter`] are dropped (the queue's senders; the read task holds only a weak
//! one), or at once after a malformed frame. The read task ends at the connection's end, after a
//! malformed frame, or when the write task ends; its end gives every reader EOF and ends
//! `Incoming`. A GOAWAY from the peer ends `Incoming` only: streams already open go on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{debug, trace, warn};

use crate::error::{FrameError, HeaderError};
use crate::frame::{self, goaway, rst, Frame, FLAG_FIN};
use crate::header::{self, Deflater, Inflater};
use crate::stream::{SpdyStream, StreamReader, StreamState, StreamWriter};

/// Frames queued for the connection writer. With DATA at most [`crate::MAX_DATA_FRAME`] bytes,
/// at most about 1 MiB waits here; writers wait for room.
pub const OUTGOING_QUEUE: usize = 64;
/// DATA frames buffered per stream before the session stops reading the connection.
pub const STREAM_BUFFER: usize = 16;
/// Opened streams waiting for [`Incoming::next`] before the session stops reading.
const INCOMING_QUEUE: usize = 16;
/// Bytes gathered into one write to the connection.
const WRITE_BATCH: usize = 64 * 1024;

/// What the session's writer sends. Header blocks are compressed by the writer, in wire order.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Data { stream_id: u32, data: Bytes, fin: bool },
    Reply { stream_id: u32 },
    Reset { stream_id: u32, status: u32 },
    Ping { id: u32 },
}

/// What the two tasks and [`Incoming`] share.
#[derive(Debug, Default)]
struct Shared {
    /// Wakes the write task to send GOAWAY.
    goaway: Notify,
    /// This side asked for GOAWAY (`Incoming::goaway`): refuse new streams.
    local_goaway: AtomicBool,
    /// The session ends now (malformed input): GOAWAY with PROTOCOL_ERROR, then close.
    abort: AtomicBool,
    /// The highest stream id handed to the application, for GOAWAY.
    last_stream_id: AtomicU32,
}

/// Runs a SPDY/3.1 server session over `io`, the connection after `101 Switching Protocols`.
///
/// Two tokio tasks drive the connection (so this needs a runtime); the returned [`Incoming`]
/// yields the streams the peer opens, each already answered with SYN_REPLY.
pub fn serve<IO>(io: IO) -> Incoming
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
    let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
    let (stop_tx, stop_rx) = oneshot::channel();
    let shared = Arc::new(Shared::default());

    let reader = ReadLoop {
        io: read_half,
        buf: BytesMut::with_capacity(16 * 1024),
        inflater: Inflater::new(),
        streams: HashMap::new(),
        out: out_tx.downgrade(),
        incoming: Some(incoming_tx),
        shared: shared.clone(),
        last_stream_id: 0,
        peer_goaway: false,
    };
    tokio::spawn(reader.run(stop_rx));
    tokio::spawn(write_loop(write_half, out_rx, shared.clone(), stop_tx));

    Incoming {
        rx: incoming_rx,
        out: out_tx,
        shared,
    }
}

/// The streams the peer opens on a session.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<SpdyStream>,
    /// Keeps the write task alive so new streams can be answered.
    out: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl Incoming {
    /// The next stream the peer opened, or `None` once the peer sent GOAWAY, the connection
    /// ended, or [`Incoming::goaway`] was called (streams opened before it are still yielded).
    pub async fn next(&mut self) -> Option<SpdyStream> {
        if self.shared.local_goaway.load(Ordering::Acquire) {
            return self.rx.try_recv().ok();
        }
        self.rx.recv().await
    }

    /// Sends GOAWAY: the peer may open no more streams, and those it tries are refused. Streams
    /// already open go on; the connection closes once they and this `Incoming` are dropped,
    /// after every queued frame is written.
    pub fn goaway(&self) {
        self.shared.local_goaway.store(true, Ordering::Release);
        self.shared.goaway.notify_one();
    }

    /// Whether the session's writer has stopped (the connection is closed or failed).
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }
}

/// One stream as the read task sees it.
struct StreamEntry {
    /// Where the peer's DATA goes; `None` after its FIN, its RST, or the reader was dropped.
    data: Option<mpsc::Sender<Bytes>>,
    state: Arc<StreamState>,
}

/// Why the read loop stops.
enum Stop {
    /// The connection's read side ended (EOF or error) or the writer is gone.
    Closed,
    /// The peer broke the protocol: the session ends at once.
    Malformed(FrameError),
}

struct ReadLoop<R> {
    io: R,
    buf: BytesMut,
    inflater: Inflater,
    streams: HashMap<u32, StreamEntry>,
    /// Weak, so that the read task alone does not keep the session open.
    out: mpsc::WeakSender<Outgoing>,
    /// `None` once the peer sent GOAWAY or the application dropped `Incoming`.
    incoming: Option<mpsc::Sender<SpdyStream>>,
    shared: Arc<Shared>,
    /// The highest stream id the peer opened, accepted or not.
    last_stream_id: u32,
    peer_goaway: bool,
}

impl<R: AsyncRead + Unpin> ReadLoop<R> {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let stopped = tokio::select! {
            stopped = self.read_frames() => stopped,
            _ = &mut stop => Stop::Closed,
        };
        match stopped {
            Stop::Closed => debug!(streams = self.streams.len(), "spdy session read side ended"),
            Stop::Malformed(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "spdy session ended: malformed frame"
                );
                self.shared.abort.store(true, Ordering::Release);
                self.shared.goaway.notify_one();
            }
        }
        // Dropping `self` drops every stream's DATA sender (readers see EOF) and the incoming
        // sender (`Incoming::next` returns `None`). Writers of streams still open learn of the
        // end from the write task's queue closing, or from their next write failing on a
        // closed connection.
    }

    async fn read_frames(&mut self) -> Stop {
        loop {
            loop {
                match Frame::decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        if let Err(stop) = self.handle(frame).await {
                            return stop;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => return Stop::Malformed(error),
                }
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Stop::Closed,
                Ok(_) => {}
                Err(error) => {
                    debug!(%error, "spdy session read failed");
                    return Stop::Closed;
                }
            }
        }
    }

    /// Queues a frame for the writer; fails once every strong handle is gone.
    async fn send(&mut self, out: Outgoing) -> Result<(), Stop> {
        let tx = self.out.upgrade().ok_or(Stop::Closed)?;
        tx.send(out).await.map_err(|_| Stop::Closed)
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), Stop> {
        if let Frame::Data { stream_id, flags, data } = &frame {
            // Payloads stay out of logs: they are a user's terminal or traffic.
            trace!(stream_id, flags, len = data.len(), "spdy: DATA in");
        } else {
            trace!(?frame, "spdy: frame in");
        }
        match frame {
            Frame::Data { stream_id, flags, data } => self.on_data(stream_id, flags, data).await,
            Frame::SynStream {
                stream_id,
                flags,
                header_block,
                ..
            } => self.on_syn_stream(stream_id, flags, &header_block).await,
            Frame::SynReply {
                stream_id,
                header_block,
                ..
            }
            | Frame::Headers {
                stream_id,
                header_block,
                ..
            } => {
                // Neither is expected from a client; the block still goes through the
                // inflater to keep its context in step with the peer's deflater.
                self.decode_headers(stream_id, &header_block)?;
                debug!(stream_id, "spdy: ignoring SYN_REPLY/HEADERS from the client");
                Ok(())
            }
            Frame::RstStream { stream_id, status } => {
                debug!(stream_id, status, "spdy: peer reset stream");
                if let Some(entry) = self.streams.remove(&stream_id) {
                    entry.state.reset.store(true, Ordering::Release);
                }
                Ok(())
            }
            Frame::Ping { id } => self.send(Outgoing::Ping { id }).await,
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                debug!(last_good_stream_id, status, "spdy: peer sent GOAWAY");
                self.peer_goaway = true;
                self.incoming = None;
                Ok(())
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } => Ok(()),
            Frame::Unknown { frame_type, length, .. } => {
                debug!(frame_type, length, "spdy: skipping unknown control frame");
                Ok(())
            }
        }
    }

    fn decode_headers(&mut self, stream_id: u32, block: &[u8]) -> Result<header::Headers, Stop> {
        self.inflater
            .decompress(block)
            .and_then(|raw| header::decode_block(&raw))
            .map_err(|source| Stop::Malformed(FrameError::HeaderBlock { stream_id, source }))
    }

    async fn on_syn_stream(&mut self, stream_id: u32, flags: u8, block: &[u8]) -> Result<(), Stop> {
        let headers = self.decode_headers(stream_id, block)?;
        if stream_id == 0 || stream_id & 1 == 0 || stream_id <= self.last_stream_id {
            // Ids the client may not use, or reuse; refuse the stream, keep the session.
            debug!(stream_id, last = self.last_stream_id, "spdy: bad SYN_STREAM id");
            if stream_id != 0 {
                self.send(Outgoing::Reset {
                    stream_id,
                    status: rst::PROTOCOL_ERROR,
                })
                .await?;
            }
            return Ok(());
        }
        self.last_stream_id = stream_id;
        if self.peer_goaway || self.shared.local_goaway.load(Ordering::Acquire) {
            debug!(stream_id, "spdy: refusing stream after GOAWAY");
            return self
                .send(Outgoing::Reset {
                    stream_id,
                    status: rst::REFUSED_STREAM,
                })
                .await;
        }
        let Some(incoming) = self.incoming.clone() else {
            return self
                .send(Outgoing::Reset {
                    stream_id,
                    status: rst::REFUSED_STREAM,
                })
                .await;
        };
        let out = self.out.upgrade().ok_or(Stop::Closed)?;
        trace!(stream_id, ?headers, "spdy: SYN_STREAM");
        // Answer first: the client waits for SYN_REPLY before it opens its next stream.
        out.send(Outgoing::Reply { stream_id })
            .await
            .map_err(|_| Stop::Closed)?;

        let (data_tx, data_rx) = mpsc::channel(STREAM_BUFFER);
        let state = Arc::new(StreamState::default());
        let stream = SpdyStream::new(
            stream_id,
            headers,
            StreamReader::new(stream_id, data_rx),
            StreamWriter::new(stream_id, out, state.clone()),
        );
        // A SYN_STREAM with FIN opens a stream the client will not write to.
        let data = (flags & FLAG_FIN == 0).then_some(data_tx);
        self.prune();
        self.streams.insert(stream_id, StreamEntry { data, state });
        self.shared.last_stream_id.store(stream_id, Ordering::Release);
        if incoming.send(stream).await.is_err() {
            // `Incoming` was dropped after all; nobody will serve the stream.
            self.incoming = None;
            self.streams.remove(&stream_id);
            self.send(Outgoing::Reset {
                stream_id,
                status: rst::CANCEL,
            })
            .await?;
        }
        Ok(())
    }

    async fn on_data(&mut self, stream_id: u32, flags: u8, data: Bytes) -> Result<(), Stop> {
        let Some(entry) = self.streams.get_mut(&stream_id) else {
            // Unknown, finished or reset: as spdystream, drop it.
            trace!(stream_id, len = data.len(), "spdy: DATA for no open stream");
            return Ok(());
        };
        if !data.is_empty() {
            if let Some(tx) = &entry.data {
                if tx.send(data).await.is_err() {
                    // The application dropped the reader; discard what follows.
                    entry.data = None;
                }
            }
        }
        if flags & FLAG_FIN != 0 {
            entry.data = None;
        }
        Ok(())
    }

    /// Forgets streams that are finished in both directions, so a long port-forward session
    /// does not keep an entry per connection it ever carried.
    fn prune(&mut self) {
        self.streams.retain(|_, entry| {
            let peer_open = entry.data.as_ref().is_some_and(|tx| !tx.is_closed());
            let local_open = Arc::strong_count(&entry.state) > 1 && !entry.state.fin_sent.load(Ordering::Acquire);
            peer_open || local_open
        });
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut io: W,
    mut rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    // Dropped when this task ends, which stops the read task.
    _stop: oneshot::Sender<()>,
) {
    let mut deflater = Deflater::new();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    let mut goaway_sent = false;
    loop {
        let mut done = false;
        tokio::select! {
            biased;
            () = shared.goaway.notified() => {
                let abort = shared.abort.load(Ordering::Acquire);
                if !goaway_sent {
                    goaway_sent = true;
                    encode_goaway(&shared, abort, &mut buf);
                }
                done = abort;
            }
            out = rx.recv() => match out {
                Some(out) => {
                    let mut encoded = encode(out, &mut deflater, &mut buf);
                    // Gather what else is queued into the same write.
                    while encoded.is_ok() && buf.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(out) => encoded = encode(out, &mut deflater, &mut buf),
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = encoded {
                        // Only a corrupted zlib state fails; no later header block could be
                        // read by the peer, so the session ends.
                        warn!(error = &error as &dyn std::error::Error, "spdy: header compression failed");
                        shared.abort.store(true, Ordering::Release);
                        done = true;
                    }
                }
                None => done = true,
            },
        }
        if done && !goaway_sent {
            goaway_sent = true;
            encode_goaway(&shared, shared.abort.load(Ordering::Acquire), &mut buf);
        }
        if !buf.is_empty() {
            let written = async {
                io.write_all(&buf).await?;
                io.flush().await
            }
            .await;
            buf.clear();
            if let Err(error) = written {
                debug!(%error, "spdy session write failed");
                break;
            }
        }
        if done {
            break;
        }
    }
    // Writers still holding a sender now fail with BrokenPipe.
    rx.close();
    if let Err(error) = io.shutdown().await {
        debug!(%error, "spdy session shutdown failed");
    }
    debug!("spdy session closed");
}

fn encode_goaway(shared: &Shared, abort: bool, buf: &mut BytesMut) {
    Frame::GoAway {
        last_good_stream_id: shared.last_stream_id.load(Ordering::Acquire),
        status: if abort { goaway::PROTOCOL_ERROR } else { goaway::OK },
    }
    .encode(buf);
}

fn encode(out: Outgoing, deflater: &mut Deflater, buf: &mut BytesMut) -> Result<(), HeaderError> {
    let frame = match out {
        Outgoing::Data { stream_id, data, fin } => Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data,
        },
        // kubectl ignores the reply's headers; the empty block still goes through the
        // connection's compressor, whose context the peer tracks.
        Outgoing::Reply { stream_id } => Frame::SynReply {
            stream_id,
            flags: 0,
            header_block: deflater.compress(&header::encode_block(&[]))?,
        },
        Outgoing::Reset { stream_id, status } => Frame::RstStream { stream_id, status },
        Outgoing::Ping { id } => Frame::Ping { id },
    };
    frame.encode(buf);
    Ok(())
}

// `frame::MAX_PAYLOAD` bounds what `Frame::encode` accepts; DATA must stay under it.
const _: () = assert!(crate::stream::MAX_DATA_FRAME <= frame::MAX_PAYLOAD);

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use bytes::BufMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::time::timeout;

    use super::*;
    use crate::dictionary::SPDY3_DICTIONARY;
    use crate::MAX_DATA_FRAME;

    const WAIT: Duration = Duration::from_secs(5);

    /// A minimal SPDY client built from the crate's own frame and header codecs.
    struct Client {
        io: DuplexStream,
        buf: BytesMut,
        deflater: Deflater,
        inflater: Inflater,
    }

    impl Client {
        fn new(io: DuplexStream) -> Self {
            Client {
                io,
                buf: BytesMut::new(),
                deflater: Deflater::new(),
                inflater: Inflater::new(),
            }
        }

        async fn send(&mut self, frame: Frame) {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            self.send_raw(&buf).await;
        }

        async fn send_raw(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.expect("write to session");
        }

        async fn syn(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
            let header_block = self.deflater.compress(&header::encode_block(headers)).expect("deflate");
            self.send(Frame::SynStream {
                stream_id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                header_block,
            })
            .await;
        }

        async fn data(&mut self, stream_id: u32, data: &'static [u8], fin: bool) {
            self.send(Frame::Data {
                stream_id,
                flags: if fin { FLAG_FIN } else { 0 },
                data: Bytes::from_static(data),
            })
            .await;
        }

        /// The next frame, or `None` at EOF. Fails the test after `WAIT`.
        async fn recv(&mut self) -> Option<Frame> {
            timeout(WAIT, async {
                loop {
                    if let Some(frame) = Frame::decode(&mut self.buf).expect("session sends valid frames") {
                        return Some(frame);
                    }
                    if self.io.read_buf(&mut self.buf).await.expect("read") == 0 {
                        return None;
                    }
                }
            })
            .await
            .expect("a frame or EOF in time")
        }

        /// Expects SYN_REPLY for `stream_id` with an empty header block.
        async fn expect_reply(&mut self, stream_id: u32) {
            match self.recv().await {
                Some(Frame::SynReply {
                    stream_id: id,
                    flags: 0,
                    header_block,
                }) => {
                    assert_eq!(id, stream_id);
                    let raw = self.inflater.decompress(&header_block).expect("inflate");
                    assert_eq!(header::decode_block(&raw).expect("block"), vec![]);
                }
                other => panic!("expected SYN_REPLY {stream_id}, got {other:?}"),
            }
        }
    }

    fn session() -> (Client, Incoming) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        (Client::new(ours), serve(theirs))
    }

    async fn next(incoming: &mut Incoming) -> Option<SpdyStream> {
        timeout(WAIT, incoming.next()).await.expect("Incoming::next in time")
    }

    async fn read_to_end(reader: &mut StreamReader) -> Vec<u8> {
        let mut out = Vec::new();
        timeout(WAIT, reader.read_to_end(&mut out))
            .await
            .expect("reader ends in time")
            .expect("read");
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_hand_built_syn_stream_is_answered_and_yielded() {
        let (mut client, mut incoming) = session();
        // The uncompressed block, byte by byte: two headers.
        let mut raw = Vec::new();
        raw.put_u32(2);
        for s in ["streamtype", "error", "requestid", "0"] {
            raw.put_u32(s.len() as u32);
            raw.put_slice(s.as_bytes());
        }
        // Compressed with plain zlib and the dictionary, as Go's compress/zlib does it.
        let mut z = flate2::Compress::new(flate2::Compression::best(), true);
        z.set_dictionary(&SPDY3_DICTIONARY).expect("fresh stream");
        let mut block = Vec::with_capacity(256);
        z.compress_vec(&raw, &mut block, flate2::FlushCompress::Sync)
            .expect("deflate");
        let mut frame = vec![0x80, 0x03, 0x00, 0x01, 0x00];
        frame.extend_from_slice(&(10 + block.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x00]);
        frame.extend_from_slice(&block);
        client.send_raw(&frame).await;

        client.expect_reply(1).await;
        let stream = next(&mut incoming).await.expect("a stream");
        assert_eq!(stream.id(), 1);
        assert_eq!(stream.header("streamtype"), Some("error"));
        assert_eq!(stream.header("requestid"), Some("0"));
        assert_eq!(stream.header("port"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn data_flows_both_ways_and_fin_ends_each_direction() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "stdin")]).await;
        client.expect_reply(1).await;
        // The compression context carries over to the next stream's headers.
        client.syn(3, &[("streamtype", "stdout")]).await;
        client.expect_reply(3).await;
        let stdin = next(&mut incoming).await.expect("stdin");
        let stdout = next(&mut incoming).await.expect("stdout");
        assert_eq!(stdout.header("streamtype"), Some("stdout"));

        client.data(1, b"hello ", false).await;
        client.data(1, b"world", true).await;
        let (mut reader, _) = stdin.split();
        assert_eq!(read_to_end(&mut reader).await, b"hello world");

        let (_, mut writer) = stdout.split();
        let payload: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        writer.write_all(&payload).await.expect("write");
        writer.shutdown().await.expect("shutdown");
        let mut received = Vec::new();
        loop {
            match client.recv().await {
                Some(Frame::Data {
                    stream_id: 3,
                    flags,
                    data,
                }) => {
                    assert!(data.len() <= MAX_DATA_FRAME);
                    received.extend_from_slice(&data);
                    if flags & FLAG_FIN != 0 {
                        assert!(data.is_empty(), "FIN comes on an empty frame");
                        break;
                    }
                }
                other => panic!("expected DATA on 3, got {other:?}"),
            }
        }
        assert_eq!(received, payload);
        let err = writer.write_all(b"late").await.expect_err("write after FIN");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test(start_paused = true)]
    async fn ping_is_echoed_and_settings_window_update_unknown_are_ignored() {
        let (mut client, _incoming) = session();
        client
            .send(Frame::Settings {
                flags: 0,
                payload: Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 1, 0]),
            })
            .await;
        client
            .send(Frame::WindowUpdate {
                stream_id: 1,
                delta: 1024,
            })
            .await;
        client
            .send_raw(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x02, 0xaa, 0xbb])
            .await;
        client.send(Frame::Ping { id: 7 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 7 }));
        client.send(Frame::Ping { id: 9 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 9 }));
    }

    #[tokio::test(start_paused = true)]
    async fn rst_stream_ends_the_reader_and_fails_the_writer() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "data")]).await;
        client.expect_reply(1).await;
        let (mut reader, mut writer) = next(&mut incoming).await.expect("stream").split();
        client.data(1, b"partial", false).await;
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: rst::CANCEL,
            })
            .await;
        assert_eq!(read_to_end(&mut reader).await, b"partial");
        let err = writer.write_all(b"x").await.expect_err("write after RST");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        // Shutting down a reset stream sends nothing and succeeds.
        writer.shutdown().await.expect("shutdown");
        client.send(Frame::Ping { id: 1 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 1 }));
    }

    #[tokio::test(start_paused = true)]
    async fn peer_goaway_ends_incoming_but_not_open_streams() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "error")]).await;
        client.expect_reply(1).await;
        client
            .send(Frame::GoAway {
                last_good_stream_id: 0,
                status: goaway::OK,
            })
            .await;
        let stream = next(&mut incoming).await.expect("opened before GOAWAY");
        assert!(next(&mut incoming).await.is_none());
        // A stream opened after GOAWAY is refused.
        client.syn(3, &[("streamtype", "error")]).await;
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: rst::REFUSED_STREAM
            })
        );
        // The open stream still works, and the connection closes when it is dropped.
        let (_, mut writer) = stream.split();
        writer.write_all(b"{}").await.expect("write");
        writer.shutdown().await.expect("shutdown");
        drop((writer, incoming));
        assert!(matches!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                ..
            })
        ));
        assert!(matches!(
            client.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                ..
            })
        ));
        assert_eq!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: goaway::OK
            })
        );
        assert_eq!(client.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn local_goaway_refuses_new_streams() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "error")]).await;
        client.expect_reply(1).await;
        incoming.goaway();
        assert_eq!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: goaway::OK
            })
        );
        client.syn(3, &[("streamtype", "stdin")]).await;
        assert_eq!(
            client.recv().await,
            Some(Frame::RstStream {
                stream_id: 3,
                status: rst::REFUSED_STREAM
            })
        );
        assert_eq!(next(&mut incoming).await.map(|s| s.id()), Some(1));
        assert!(next(&mut incoming).await.is_none());
        drop(incoming);
        assert_eq!(client.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_frame_ends_the_session() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "stdin")]).await;
        client.expect_reply(1).await;
        let (mut reader, mut writer) = next(&mut incoming).await.expect("stream").split();
        // A PING whose payload is 3 bytes long.
        client
            .send_raw(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 1, 2, 3])
            .await;
        assert_eq!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 1,
                status: goaway::PROTOCOL_ERROR
            })
        );
        assert_eq!(client.recv().await, None);
        assert!(next(&mut incoming).await.is_none());
        assert_eq!(read_to_end(&mut reader).await, b"");
        let err = writer.write_all(b"x").await.expect_err("connection closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert!(incoming.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn bad_header_block_ends_the_session() {
        let (mut client, mut incoming) = session();
        client
            .send(Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                header_block: Bytes::from_static(b"definitely not zlib"),
            })
            .await;
        assert!(matches!(
            client.recv().await,
            Some(Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            })
        ));
        assert_eq!(client.recv().await, None);
        assert!(next(&mut incoming).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn connection_end_gives_readers_eof() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "stdin")]).await;
        client.expect_reply(1).await;
        let (mut reader, _writer) = next(&mut incoming).await.expect("stream").split();
        client.data(1, b"abc", false).await;
        drop(client);
        assert_eq!(read_to_end(&mut reader).await, b"abc");
        assert!(next(&mut incoming).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_every_handle_closes_the_connection() {
        let (mut client, mut incoming) = session();
        client.syn(1, &[("streamtype", "data")]).await;
        client.expect_reply(1).await;
        let stream = next(&mut incoming).await.expect("stream");
        drop(incoming);
        // The stream's writer alone keeps the session open.
        client.send(Frame::Ping { id: 3 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 3 }));
        drop(stream);
        assert!(matches!(client.recv().await, Some(Frame::GoAway { .. })));
        assert_eq!(client.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_does_not_read_holds_writers_back() {
        // Room for a few KiB on the wire, then the session's bounded queue, then writers wait.
        let (ours, theirs) = tokio::io::duplex(4 * 1024);
        let mut client = Client::new(ours);
        let mut incoming = serve(theirs);
        client.syn(1, &[("streamtype", "stdout")]).await;
        client.expect_reply(1).await;
        let (_, mut writer) = next(&mut incoming).await.expect("stream").split();
        let bound = (OUTGOING_QUEUE + 2) * MAX_DATA_FRAME + WRITE_BATCH;
        let chunk = vec![7u8; MAX_DATA_FRAME];
        let mut written = 0;
        let stalled = timeout(Duration::from_secs(1), async {
            loop {
                writer.write_all(&chunk).await.expect("write");
                written += chunk.len();
            }
        })
        .await;
        assert!(stalled.is_err(), "writes never waited");
        assert!(written <= bound, "{written} bytes queued, bound {bound}");
        // Once the peer reads, the writer moves again.
        let reader = tokio::spawn(async move { while client.recv().await.is_some() {} });
        timeout(WAIT, writer.write_all(&chunk))
            .await
            .expect("writer moves once the peer reads")
            .expect("write");
        reader.abort();
    }
}
