//! The SPDY/3 header-compression dictionary.
//!
//! Source: "SPDY Protocol - Draft 3", section 2.6.10.1 "Compression"
//! (<https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3/>, also published as
//! draft-mbelshe-httpbis-spdy-00). The spec prints it as a 1423-byte hex table; the same bytes
//! are here as what they are: 65 length-prefixed header names and values (u32 big-endian length,
//! then the bytes), then one unprefixed run of common status lines, dates and media types. Both
//! zlib contexts of a connection are primed with it, so it must be byte-exact: the tests check
//! its length and the Adler-32 checksum (0xe3c6a7c2) that peers put in the zlib header.

/// The words, each written with a u32 big-endian length prefix.
const WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// Written after the words, without a length prefix.
const TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec ",
    "00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,",
    "publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// Length of the dictionary in bytes.
pub(crate) const LEN: usize = 1423;

/// The SPDY/3 dictionary, laid out at compile time from [`WORDS`] and [`TAIL`].
pub(crate) const SPDY3_DICTIONARY: [u8; LEN] = build();

const fn build() -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let mut at = 0;
    let mut w = 0;
    while w < WORDS.len() {
        let word = WORDS[w].as_bytes();
        let len = (word.len() as u32).to_be_bytes();
        let mut i = 0;
        while i < 4 {
            out[at] = len[i];
            at += 1;
            i += 1;
        }
        let mut i = 0;
        while i < word.len() {
            out[at] = word[i];
            at += 1;
            i += 1;
        }
        w += 1;
    }
    let tail = TAIL.as_bytes();
    let mut i = 0;
    while i < tail.len() {
        out[at] = tail[i];
        at += 1;
        i += 1;
    }
    // Fails the build if the words and tail do not fill exactly LEN bytes.
    assert!(at == LEN, "SPDY/3 dictionary must be 1423 bytes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert_eq!(&SPDY3_DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(SPDY3_DICTIONARY.ends_with(b"utf-,*,enq=0."));
        // set_dictionary returns the dictionary's Adler-32, the DICTID peers send.
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        let adler = deflate
            .set_dictionary(&SPDY3_DICTIONARY)
            .expect("a fresh zlib stream takes a dictionary");
        assert_eq!(adler, 0xe3c6_a7c2);
    }
}
