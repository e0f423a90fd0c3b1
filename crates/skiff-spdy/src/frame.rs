//! SPDY/3 frames: the 8-byte frame header, the control frames kubectl exchanges, and DATA.
//!
//! ```text
//! control: |1| version(15) = 3 | type(16) | flags(8) | length(24) | payload
//! data:    |0| stream-id(31)              | flags(8) | length(24) | payload
//! ```
//!
//! Header blocks stay compressed here; [`crate::header`] owns the zlib contexts, which must see
//! the blocks in wire order.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::FrameError;

/// The only protocol version spoken.
pub(crate) const VERSION: u16 = 3;
/// Bytes in every frame header.
pub(crate) const HEADER_LEN: usize = 8;
/// `FLAG_FIN` on DATA, SYN_STREAM, SYN_REPLY and HEADERS: the sender's last frame on the stream.
pub(crate) const FLAG_FIN: u8 = 0x01;
/// Largest payload the 24-bit length field can carry.
pub(crate) const MAX_PAYLOAD: usize = 0x00ff_ffff;

/// Control frame types (SPDY/3 section 2.6).
mod kind {
    pub(super) const SYN_STREAM: u16 = 1;
    pub(super) const SYN_REPLY: u16 = 2;
    pub(super) const RST_STREAM: u16 = 3;
    pub(super) const SETTINGS: u16 = 4;
    pub(super) const PING: u16 = 6;
    pub(super) const GOAWAY: u16 = 7;
    pub(super) const HEADERS: u16 = 8;
    pub(super) const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes used by this crate.
pub(crate) mod rst {
    pub(crate) const PROTOCOL_ERROR: u32 = 1;
    pub(crate) const REFUSED_STREAM: u32 = 3;
    pub(crate) const CANCEL: u32 = 5;
}

/// GOAWAY status codes.
pub(crate) mod goaway {
    pub(crate) const OK: u32 = 0;
    pub(crate) const PROTOCOL_ERROR: u32 = 1;
}

/// One frame. Header blocks are the compressed bytes as they travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        /// The 3-bit priority, already shifted down.
        priority: u8,
        flags: u8,
        header_block: Bytes,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Read and ignored: spdystream sends none and does no flow control.
    Settings {
        flags: u8,
        payload: Bytes,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Bytes,
    },
    /// Read and ignored (no flow control).
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A control frame type SPDY/3 does not define; skipped by its length.
    Unknown {
        frame_type: u16,
        flags: u8,
        length: u32,
    },
}

impl Frame {
    /// Takes one whole frame off the front of `buf`, or returns `None` (leaving `buf` as it was)
    /// until the frame has fully arrived.
    pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]);
        let total = HEADER_LEN + length as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(HEADER_LEN);
        let mut payload = frame;

        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first,
                flags,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { version });
        }
        let frame_type = (first & 0xffff) as u16;
        let need = |name: &'static str, min: u32, exact: bool| {
            let ok = if exact { length == min } else { length >= min };
            if ok {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    frame: name,
                    length,
                    expected: min,
                })
            }
        };
        let frame = match frame_type {
            kind::SYN_STREAM => {
                need("SYN_STREAM", 10, false)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                let associated_to = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                let _slot = payload.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    header_block: payload,
                }
            }
            kind::SYN_REPLY => {
                need("SYN_REPLY", 4, false)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                Frame::SynReply {
                    stream_id,
                    flags,
                    header_block: payload,
                }
            }
            kind::RST_STREAM => {
                need("RST_STREAM", 8, true)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            kind::SETTINGS => {
                need("SETTINGS", 4, false)?;
                Frame::Settings { flags, payload }
            }
            kind::PING => {
                need("PING", 4, true)?;
                Frame::Ping { id: payload.get_u32() }
            }
            kind::GOAWAY => {
                need("GOAWAY", 8, true)?;
                Frame::GoAway {
                    last_good_stream_id: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            kind::HEADERS => {
                need("HEADERS", 4, false)?;
                let stream_id = payload.get_u32() & 0x7fff_ffff;
                Frame::Headers {
                    stream_id,
                    flags,
                    header_block: payload,
                }
            }
            kind::WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8, true)?;
                Frame::WindowUpdate {
                    stream_id: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                }
            }
            frame_type => Frame::Unknown {
                frame_type,
                flags,
                length,
            },
        };
        Ok(Some(frame))
    }

    /// Appends the frame's bytes to `dst`.
    ///
    /// Panics if a payload exceeds [`MAX_PAYLOAD`]; the session never builds such a frame (DATA
    /// is cut at [`crate::MAX_DATA_FRAME`], its header blocks are a few bytes).
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Data { stream_id, flags, data } => {
                dst.put_u32(stream_id & 0x7fff_ffff);
                put_flags_length(dst, *flags, data.len());
                dst.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                header_block,
            } => {
                put_control(dst, kind::SYN_STREAM, *flags, 10 + header_block.len());
                dst.put_u32(*stream_id);
                dst.put_u32(*associated_to);
                dst.put_u8(priority << 5);
                dst.put_u8(0);
                dst.put_slice(header_block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                put_control(dst, kind::SYN_REPLY, *flags, 4 + header_block.len());
                dst.put_u32(*stream_id);
                dst.put_slice(header_block);
            }
            Frame::RstStream { stream_id, status } => {
                put_control(dst, kind::RST_STREAM, 0, 8);
                dst.put_u32(*stream_id);
                dst.put_u32(*status);
            }
            Frame::Settings { flags, payload } => {
                put_control(dst, kind::SETTINGS, *flags, payload.len());
                dst.put_slice(payload);
            }
            Frame::Ping { id } => {
                put_control(dst, kind::PING, 0, 4);
                dst.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control(dst, kind::GOAWAY, 0, 8);
                dst.put_u32(*last_good_stream_id);
                dst.put_u32(*status);
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                put_control(dst, kind::HEADERS, *flags, 4 + header_block.len());
                dst.put_u32(*stream_id);
                dst.put_slice(header_block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control(dst, kind::WINDOW_UPDATE, 0, 8);
                dst.put_u32(*stream_id);
                dst.put_u32(*delta);
            }
            Frame::Unknown {
                frame_type,
                flags,
                length,
            } => {
                // Only the header was kept; the payload goes out as zeros.
                put_control(dst, *frame_type, *flags, *length as usize);
                dst.put_bytes(0, *length as usize);
            }
        }
    }
}

fn put_control(dst: &mut BytesMut, frame_type: u16, flags: u8, length: usize) {
    dst.reserve(HEADER_LEN + length);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    put_flags_length(dst, flags, length);
}

fn put_flags_length(dst: &mut BytesMut, flags: u8, length: usize) {
    assert!(length <= MAX_PAYLOAD, "frame payload of {length} bytes");
    dst.put_u32(u32::from(flags) << 24 | length as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        // A frame that has not fully arrived is left in place.
        let mut partial = BytesMut::from(&buf[..buf.len() - 1]);
        assert_eq!(Frame::decode(&mut partial).expect("valid prefix"), None);
        assert_eq!(partial.len(), buf.len() - 1);
        // Two frames back to back come out one at a time.
        let len = buf.len();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), 2 * len);
        let first = Frame::decode(&mut buf).expect("valid").expect("whole");
        assert_eq!(first, frame);
        let second = Frame::decode(&mut buf).expect("valid").expect("whole");
        assert_eq!(second, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_round_trip() {
        let block = Bytes::from_static(b"\x78\xbb\x01\x02");
        for frame in [
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 0x7fff_ffff,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                header_block: block.clone(),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                header_block: block.clone(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                payload: Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 7, 0, 1, 0, 0]),
            },
            Frame::Ping { id: 0xdead_beef },
            Frame::GoAway {
                last_good_stream_id: 7,
                status: goaway::OK,
            },
            Frame::Headers {
                stream_id: 9,
                flags: 0,
                header_block: block,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
        ] {
            round_trip(frame);
        }
    }

    #[test]
    fn wire_layout_matches_the_spec() {
        let mut buf = BytesMut::new();
        Frame::Ping { id: 1 }.encode(&mut buf);
        assert_eq!(&buf[..], &[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1]);
        buf.clear();
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        }
        .encode(&mut buf);
        assert_eq!(&buf[..], &[0, 0, 0, 3, 0x01, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn unknown_control_frames_are_skipped_by_length() {
        // Type 10 (CREDENTIAL in SPDY/3, unused by kubectl), 3-byte payload, then a PING.
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x03, 1, 2, 3][..]);
        Frame::Ping { id: 9 }.encode(&mut buf);
        assert_eq!(
            Frame::decode(&mut buf).expect("valid"),
            Some(Frame::Unknown {
                frame_type: 10,
                flags: 0,
                length: 3
            })
        );
        assert_eq!(Frame::decode(&mut buf).expect("valid"), Some(Frame::Ping { id: 9 }));
    }

    #[test]
    fn malformed_control_frames_are_errors() {
        // PING with a 3-byte payload.
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x03, 1, 2, 3][..]);
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::BadLength { frame: "PING", .. })
        ));
        // SPDY/2.
        let mut buf = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1][..]);
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::UnsupportedVersion { version: 2 })
        ));
        // SYN_STREAM too short for its fixed fields.
        let mut buf = BytesMut::from(&[0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1][..]);
        assert!(Frame::decode(&mut buf).is_err());
    }
}
