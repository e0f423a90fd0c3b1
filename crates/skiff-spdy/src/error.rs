//! Why a session ended early. These surface only in logs: a broken peer ends its own session.

/// A frame that cannot be parsed; the session ends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("unsupported spdy version {version} in a control frame")]
    UnsupportedVersion { version: u16 },
    #[error("{frame} frame with payload length {length} (needs {expected})")]
    BadLength {
        frame: &'static str,
        length: u32,
        expected: u32,
    },
    #[error("bad header block on stream {stream_id}")]
    HeaderBlock {
        stream_id: u32,
        #[source]
        source: HeaderError,
    },
}

/// A header block that cannot be (de)compressed or parsed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("zlib inflate failed")]
    Inflate(#[source] flate2::DecompressError),
    #[error("zlib deflate failed")]
    Deflate(#[source] flate2::CompressError),
    #[error("compressed header block makes no progress ({left} bytes left)")]
    Stuck { left: usize },
    #[error("header block longer than {limit} bytes uncompressed")]
    TooLarge { limit: usize },
    #[error("header block truncated")]
    Truncated,
    #[error("header block has {extra} bytes after its last header")]
    Trailing { extra: usize },
}
