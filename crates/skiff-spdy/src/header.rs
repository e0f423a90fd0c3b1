//! Header blocks: the name/value list of SYN_STREAM, SYN_REPLY and HEADERS, and the zlib
//! contexts that compress them.
//!
//! Uncompressed, a block is `u32 count` then `(u32 len, name, u32 len, value)*`, all big-endian;
//! names are lower-case and a header with several values has them joined by NUL. Each direction
//! of a connection has one zlib stream, primed with the SPDY/3 dictionary and never reset: every
//! block continues the stream of the one before it and ends with a sync flush, so a block can
//! only be decoded after all earlier blocks of the same direction, in order.

use bytes::{Buf, BufMut, Bytes};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::dictionary::SPDY3_DICTIONARY;
use crate::error::HeaderError;

/// The longest uncompressed header block accepted. kubectl's are under 100 bytes; the limit
/// stops a small compressed block from inflating without bound.
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Decoded headers in wire order: lower-case name, one value per entry (a NUL-joined header
/// becomes several entries with the same name).
pub(crate) type Headers = Vec<(String, String)>;

/// Lays out an uncompressed header block. Names are lower-cased.
pub(crate) fn encode_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u32(headers.len() as u32);
    for (name, value) in headers {
        out.put_u32(name.len() as u32);
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out
}

/// Parses an uncompressed header block.
pub(crate) fn decode_block(mut raw: &[u8]) -> Result<Headers, HeaderError> {
    let count = take_u32(&mut raw)? as usize;
    // Every header takes at least its two length fields; refuse counts the bytes cannot hold
    // before allocating for them.
    if count > raw.len() / 8 {
        return Err(HeaderError::Truncated);
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_str(&mut raw)?.to_ascii_lowercase();
        let value = take_str(&mut raw)?;
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_owned()));
        }
    }
    if !raw.is_empty() {
        return Err(HeaderError::Trailing { extra: raw.len() });
    }
    Ok(headers)
}

fn take_u32(raw: &mut &[u8]) -> Result<u32, HeaderError> {
    if raw.len() < 4 {
        return Err(HeaderError::Truncated);
    }
    Ok(raw.get_u32())
}

fn take_str(raw: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(raw)? as usize;
    if raw.len() < len {
        return Err(HeaderError::Truncated);
    }
    let s = String::from_utf8_lossy(&raw[..len]).into_owned();
    raw.advance(len);
    Ok(s)
}

/// The compressing side of one direction of a connection.
pub(crate) struct Deflater {
    z: Compress,
}

impl Deflater {
    pub(crate) fn new() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&SPDY3_DICTIONARY)
            .expect("a fresh zlib stream accepts a preset dictionary");
        Deflater { z }
    }

    /// Compresses one block and sync-flushes, so the peer can inflate it whole.
    pub(crate) fn compress(&mut self, raw: &[u8]) -> Result<Bytes, HeaderError> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0;
        loop {
            let before = self.z.total_in();
            self.z
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(HeaderError::Deflate)?;
            consumed += (self.z.total_in() - before) as usize;
            // The flush is complete once zlib stops short of filling the output.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out.into());
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// The decompressing side of one direction of a connection.
pub(crate) struct Inflater {
    z: Decompress,
}

impl Inflater {
    pub(crate) fn new() -> Self {
        Inflater {
            z: Decompress::new(true),
        }
    }

    /// Inflates one compressed block (the continuation of all earlier ones).
    pub(crate) fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(256);
        let mut consumed = 0;
        loop {
            let before_in = self.z.total_in();
            let before_out = out.len();
            let result = self
                .z
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.z.total_in() - before_in) as usize;
            match result {
                Ok(_) => {}
                // The first block names the dictionary by its Adler-32 right after the zlib
                // header; zlib checks it against the one set here.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(&SPDY3_DICTIONARY).map_err(HeaderError::Inflate)?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Inflate(e)),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(HeaderError::TooLarge {
                    limit: MAX_HEADER_BLOCK,
                });
            }
            let room_left = out.len() < out.capacity();
            if consumed == input.len() && room_left {
                return Ok(out);
            }
            if room_left && out.len() == before_out && self.z.total_in() == before_in {
                return Err(HeaderError::Stuck {
                    left: input.len() - consumed,
                });
            }
            if !room_left {
                out.reserve(out.capacity());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_uncompressed() {
        let raw = encode_block(&[("streamType", "error"), ("port", "80\u{0}8080")]);
        assert_eq!(
            decode_block(&raw).expect("valid"),
            vec![
                ("streamtype".to_owned(), "error".to_owned()),
                ("port".to_owned(), "80".to_owned()),
                ("port".to_owned(), "8080".to_owned()),
            ]
        );
        assert_eq!(decode_block(&encode_block(&[])).expect("valid"), vec![]);
    }

    #[test]
    fn bad_blocks_are_errors() {
        let raw = encode_block(&[("streamtype", "stdin")]);
        assert!(matches!(
            decode_block(&raw[..raw.len() - 1]),
            Err(HeaderError::Truncated)
        ));
        let mut long = raw.clone();
        long.push(0);
        assert!(matches!(decode_block(&long), Err(HeaderError::Trailing { extra: 1 })));
        // A count far beyond what the bytes can hold is refused before allocating.
        assert!(matches!(
            decode_block(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            Err(HeaderError::Truncated)
        ));
    }

    #[test]
    fn contexts_persist_across_frames() {
        let mut deflate = Deflater::new();
        let mut inflate = Inflater::new();
        let blocks = [
            encode_block(&[("streamtype", "error")]),
            encode_block(&[("streamtype", "stdin")]),
            encode_block(&[]),
            encode_block(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            encode_block(&[("streamtype", "data"), ("port", "80"), ("requestid", "1")]),
        ];
        let compressed: Vec<Bytes> = blocks.iter().map(|b| deflate.compress(b).expect("deflate")).collect();
        // Only the first block carries the zlib header (CMF 0x78, FLG with FDICT set).
        assert_eq!(compressed[0][0], 0x78);
        assert_ne!(compressed[0][1] & 0x20, 0);
        // A repeated block compresses to less the second time: the window remembers it.
        assert!(compressed[4].len() < compressed[3].len());
        for (raw, z) in blocks.iter().zip(&compressed) {
            assert_eq!(&inflate.decompress(z).expect("inflate"), raw);
        }
        // A fresh inflater cannot start in the middle of the stream.
        assert!(Inflater::new().decompress(&compressed[1]).is_err());
    }

    #[test]
    fn inflates_kubectl_127_exec_header_blocks() {
        // The header blocks of the four SYN_STREAMs `kubectl.1.27 exec -i p -- cat` sent, in
        // order, captured from the integration test. Only the first has the zlib header; the
        // others decode only with the context the earlier ones left.
        let blocks: [&[u8]; 4] = [
            b"x\xf9\xe3\xc6\xa7\xc2b```\x04\xa7\xb3\x92\xa2\xd4\xc4\\hQ\xc2\x9a\n\nh\0\0\0\0\xff\xff",
            b"\xc2.U\\\x92\x92\x99\x07\0\0\0\xff\xff",
            b"\xc2*\xc5V\\\x92\x92_Z\x02\0\0\0\xff\xff",
            b"\xc2)\x97ZT\x04\0\0\0\xff\xff",
        ];
        let mut inflate = Inflater::new();
        let types: Vec<Headers> = blocks
            .iter()
            .map(|z| decode_block(&inflate.decompress(z).expect("inflate")).expect("block"))
            .collect();
        let expect = |t: &str| vec![("streamtype".to_owned(), t.to_owned())];
        assert_eq!(
            types,
            [expect("error"), expect("stdin"), expect("stdout"), expect("stderr")]
        );
    }

    #[test]
    fn inflates_a_block_built_with_plain_zlib() {
        // Built with flate2 directly, as any SPDY peer would, not with `Deflater`.
        let raw = encode_block(&[("streamtype", "stdout")]);
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(&SPDY3_DICTIONARY).expect("fresh stream");
        let mut out = Vec::with_capacity(128);
        z.compress_vec(&raw, &mut out, FlushCompress::Sync).expect("deflate");
        // The zlib header names the dictionary by its Adler-32.
        assert_eq!(&out[2..6], &0xe3c6_a7c2_u32.to_be_bytes());
        let headers = decode_block(&Inflater::new().decompress(&out).expect("inflate"));
        assert_eq!(
            headers.expect("valid"),
            vec![("streamtype".to_owned(), "stdout".to_owned())]
        );
    }

    #[test]
    fn a_bomb_is_refused() {
        let mut deflate = Deflater::new();
        let mut raw = encode_block(&[("x", &"a".repeat(MAX_HEADER_BLOCK))]);
        raw.truncate(MAX_HEADER_BLOCK + 100);
        let z = deflate.compress(&raw).expect("deflate");
        assert!(z.len() < 1024);
        assert!(matches!(
            Inflater::new().decompress(&z),
            Err(HeaderError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Inflater::new().decompress(b"not zlib at all").is_err());
        let mut inflate = Inflater::new();
        let mut z = Deflater::new()
            .compress(&encode_block(&[("a", "b")]))
            .expect("deflate")
            .to_vec();
        let last = z.len() - 1;
        z[last / 2] ^= 0xff;
        // Either inflate fails or the block no longer parses; neither panics.
        let outcome = inflate.decompress(&z).map(|raw| decode_block(&raw));
        assert!(!matches!(outcome, Ok(Ok(ref h)) if h == &vec![("a".to_owned(), "b".to_owned())]));
    }
}
