//! The content-addressed blob store: `blobs/sha256/<hex>`, every blob verified against its
//! digest before it becomes visible. Writers stream into `ingest/` and rename into place, so
//! concurrent pulls of the same blob (in one process or several) never see a half-written file.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::io_error::IoError;

/// A `sha256:<64 lowercase hex>` digest. Validated, so it is safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// A string that is not a sha256 digest.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest {digest:?}: only sha256:<64 hex digits> is supported")]
pub struct DigestError {
    /// What was given.
    pub digest: String,
}

impl Digest {
    /// Parses `sha256:<hex>`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        match s.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
                Ok(Self(s.to_string()))
            }
            _ => Err(DigestError { digest: s.to_string() }),
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub(crate) fn from_hasher(h: Sha256) -> Self {
        Self(format!("sha256:{}", hex::encode(h.finalize())))
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, as `docker images` and `crictl images` show IDs.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// The full `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> Self {
        d.0
    }
}

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Content did not hash to the digest it was announced with.
    #[error("content of {expected} hashed to {actual} ({size} bytes): corrupt or tampered download")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
        /// Bytes received.
        size: u64,
    },
    /// Content had another size than announced.
    #[error("content of {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A blob that should be present is not.
    #[error("blob {digest} is not in the content store")]
    NotFound {
        /// The blob.
        digest: Digest,
    },
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// The blob store rooted at `<data-dir>/images`.
#[derive(Clone, Debug)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating) the store's directories under `root`.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        for d in ["blobs/sha256", "ingest"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(IoError::at("creating", &p))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where the blob `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is present.
    pub fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The blob's bytes.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, ContentError> {
        let p = self.blob_path(digest);
        fs::read(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound { digest: digest.clone() }
            } else {
                ContentError::Io(IoError::new("reading", p, e))
            }
        })
    }

    /// Opens the blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File, ContentError> {
        let p = self.blob_path(digest);
        fs::File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ContentError::NotFound { digest: digest.clone() }
            } else {
                ContentError::Io(IoError::new("opening", p, e))
            }
        })
    }

    /// Stores `bytes`, which must hash to `expected` when it is given; returns the digest.
    pub fn put(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest, ContentError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(IoError::at("writing", &self.root))?;
        w.commit(expected, None)
    }

    /// Streams a blob into the store, verifying digest and size.
    pub fn put_reader(
        &self,
        r: &mut dyn Read,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest, ContentError> {
        let mut w = self.writer()?;
        io::copy(r, &mut w).map_err(IoError::at("copying into", &self.root))?;
        w.commit(expected, size)
    }

    /// A writer into `ingest/`; [`BlobWriter::commit`] verifies and moves it into place.
    pub fn writer(&self) -> Result<BlobWriter, ContentError> {
        let dir = self.root.join("ingest");
        let file = tempfile::NamedTempFile::new_in(&dir).map_err(IoError::at("creating a temp file in", &dir))?;
        Ok(BlobWriter {
            file: io::BufWriter::new(file),
            hasher: Sha256::new(),
            size: 0,
            store: self.clone(),
        })
    }

    /// Every blob present, with its size.
    pub fn list(&self) -> Result<Vec<(Digest, u64)>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(IoError::at("listing", &dir))? {
            let e = e.map_err(IoError::at("listing", &dir))?;
            let Some(name) = e.file_name().to_str().map(|s| format!("sha256:{s}")) else {
                continue;
            };
            if let Ok(d) = Digest::parse(&name) {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((d, len));
            }
        }
        Ok(out)
    }

    /// Deletes a blob (absent is fine).
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContentError::Io(IoError::new("removing", p, e))),
            _ => Ok(()),
        }
    }
}

/// A blob being written; hashes as it goes.
pub struct BlobWriter {
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: Sha256,
    size: u64,
    store: ContentStore,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size
    }

    /// Verifies and moves the blob into place. A blob that another writer committed first is
    /// kept (same digest, same bytes).
    pub fn commit(self, expected: Option<&Digest>, size: Option<u64>) -> Result<Digest, ContentError> {
        let actual = Digest::from_hasher(self.hasher);
        if let Some(expected) = expected {
            if *expected != actual {
                return Err(ContentError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                    size: self.size,
                });
            }
        }
        if let Some(size) = size {
            if size != self.size {
                return Err(ContentError::SizeMismatch {
                    digest: actual,
                    expected: size,
                    actual: self.size,
                });
            }
        }
        let dst = self.store.blob_path(&actual);
        let tmp = self
            .file
            .into_inner()
            .map_err(|e| IoError::new("flushing", &dst, e.into_error()))?;
        tmp.as_file().sync_all().map_err(IoError::at("syncing", &dst))?;
        tmp.persist(&dst).map_err(IoError::at("renaming into", &dst))?;
        Ok(actual)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated() {
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        let d = Digest::of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(d.short(), "2cf24dba5fb0");
    }

    #[test]
    fn verifies_and_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ContentStore::open(dir.path()).expect("open");
        let d = s.put(b"hello", None).expect("put");
        assert!(s.has(&d));
        assert_eq!(s.read(&d).expect("read"), b"hello");
        let wrong = Digest::of(b"other");
        let err = s.put(b"hello!", Some(&wrong)).expect_err("mismatch");
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        assert!(!s.has(&Digest::of(b"hello!")), "a mismatching blob must not be stored");
        let err = s
            .put_reader(&mut &b"abc"[..], Some(&Digest::of(b"abc")), Some(4))
            .expect_err("size");
        assert!(matches!(err, ContentError::SizeMismatch { .. }), "{err}");
        // Nothing is left behind in ingest/.
        assert_eq!(fs::read_dir(dir.path().join("ingest")).expect("ingest").count(), 0);
        assert_eq!(s.list().expect("list"), vec![(d, 5)]);
    }

    #[test]
    fn concurrent_writers_of_one_blob_agree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = ContentStore::open(dir.path()).expect("open");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let want = Digest::of(&data);
        std::thread::scope(|sc| {
            for _ in 0..8 {
                sc.spawn(|| {
                    let mut w = s.writer().expect("writer");
                    for chunk in data.chunks(997) {
                        w.write_all(chunk).expect("write");
                    }
                    w.commit(Some(&want), Some(data.len() as u64)).expect("commit");
                });
            }
        });
        assert_eq!(s.read(&want).expect("read"), data);
    }
}
