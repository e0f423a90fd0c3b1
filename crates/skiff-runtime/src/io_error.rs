//! The one I/O failure every error of this crate carries: what was being done, on which path,
//! and the `io::Error`. Each error enum holds it as `#[error(transparent)] Io(#[from] IoError)`,
//! so the message reads `"{op} {path}: {source}"` wherever it comes from.

use std::io;
use std::path::{Path, PathBuf};

/// A filesystem or process operation on a path failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct IoError {
    /// What was being done ("creating", "removing", "reading link", …).
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// The error of `op` on `path` that failed with `source`.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        Self {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    /// A builder for `map_err`: `fs::remove_file(p).map_err(IoError::at("removing", p))?`.
    /// It takes anything that converts into an `io::Error` (rustix's `Errno`, tempfile's
    /// `PersistError`), and copies the path only when there is an error.
    pub fn at<'a, E: Into<io::Error> + 'a>(op: &'static str, path: &'a Path) -> impl FnOnce(E) -> Self + 'a {
        move |source| Self::new(op, path, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_operation_the_path_and_the_cause() {
        let e = IoError::at("removing", Path::new("/x/y"))(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "removing /x/y: entity not found");
        assert_eq!(
            std::error::Error::source(&e).map(|s| s.to_string()).as_deref(),
            Some("entity not found")
        );
    }

    #[test]
    fn the_enums_that_carry_it_show_it_unchanged() {
        let e = || IoError::new("listing", "/c", io::Error::from(io::ErrorKind::PermissionDenied));
        let want = "listing /c: permission denied";
        let shown: Vec<(String, Option<String>)> = [
            Box::new(crate::ShimError::from(e())) as Box<dyn std::error::Error>,
            Box::new(crate::StoreError::from(e())),
            Box::new(crate::ContainerError::from(e())),
            Box::new(crate::UnpackError::from(e())),
        ]
        .iter()
        .map(|x| (x.to_string(), x.source().map(|s| s.to_string())))
        .collect();
        for (msg, source) in shown {
            assert_eq!(msg, want);
            assert_eq!(
                source.as_deref(),
                Some("permission denied"),
                "the cause is still the io::Error"
            );
        }
    }

    #[test]
    fn takes_what_converts_into_an_io_error() {
        let e = IoError::at("locking", Path::new("/l"))(rustix::io::Errno::AGAIN);
        assert_eq!(e.source.raw_os_error(), Some(rustix::io::Errno::AGAIN.raw_os_error()));
    }
}
