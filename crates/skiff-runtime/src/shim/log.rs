//! Container logs in the CRI format (`<RFC 3339 nano time> <stdout|stderr> <F|P> <text>`), as
//! the kubelet and `kubectl logs` read them: one line per line the container wrote, lines
//! longer than [`MAX_LINE`] cut into partial (`P`) pieces ending in a full (`F`) one, and the
//! file rotated by size, keeping a fixed number of files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};

/// The longest line written as one entry (containerd's default `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the container's streams a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Splits a byte stream into log entries: `(text, partial)`.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes read from the stream; returns the entries they complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        self.pending.extend_from_slice(data);
        loop {
            match self.pending.iter().position(|b| *b == b'\n') {
                Some(i) if i <= MAX_LINE => {
                    let mut line: Vec<u8> = self.pending.drain(..=i).collect();
                    line.pop();
                    out.push((line, false));
                }
                _ if self.pending.len() > MAX_LINE => {
                    out.push((self.pending.drain(..MAX_LINE).collect(), true));
                }
                _ => break,
            }
        }
        out
    }

    /// The stream ended: what is left is a last, full entry (as containerd writes it).
    pub fn finish(&mut self) -> Option<(Vec<u8>, bool)> {
        (!self.pending.is_empty()).then(|| (std::mem::take(&mut self.pending), false))
    }
}

/// Formats one CRI log line (with its newline).
pub fn format_entry(time: DateTime<Utc>, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(text.len() + 48);
    line.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_str().as_bytes());
    line.extend_from_slice(if partial { b" P " } else { b" F " });
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// A CRI log file that rotates when it reaches `max_size`: `path` is current, `path.1` the
/// one before, up to `max_files` files in all.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    max_size: u64,
    max_files: usize,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    /// Opens (appending to) `path`, creating its directory.
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    /// The `n`th older file (`path.n`).
    pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
        let mut p = path.as_os_str().to_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Appends one entry, rotating first if it would not fit.
    pub fn write_entry(&mut self, time: DateTime<Utc>, stream: Stream, partial: bool, text: &[u8]) -> io::Result<()> {
        let line = format_entry(time, stream, partial, text);
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files > 1 {
            let oldest = Self::rotated_path(&self.path, self.max_files - 1);
            match fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            for n in (1..self.max_files - 1).rev() {
                let from = Self::rotated_path(&self.path, n);
                if from.exists() {
                    fs::rename(&from, Self::rotated_path(&self.path, n + 1))?;
                }
            }
            fs::rename(&self.path, Self::rotated_path(&self.path, 1))?;
            self.file = open_append(&self.path)?;
        } else {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// One parsed CRI log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The time as written.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// A partial line (more of it follows).
    pub partial: bool,
    /// The text.
    pub text: String,
}

/// Parses a CRI log file's text (for tests and `kubectl logs`); malformed lines are skipped.
pub fn parse(text: &str) -> Vec<LogEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            let time = it.next()?.to_string();
            let stream = it.next()?.to_string();
            let tag = it.next()?;
            let text = it.next().unwrap_or("").to_string();
            Some(LogEntry {
                time,
                stream,
                partial: tag == "P",
                text,
            })
        })
        .collect()
}

/// What [`read_logs`] returns (the options of `kubectl logs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only the last N lines (`--tail`).
    pub tail: Option<usize>,
    /// Only lines written at or after this time (`--since`, `--since-time`).
    pub since: Option<DateTime<Utc>>,
    /// Prefix each line with its time (`--timestamps`).
    pub timestamps: bool,
}

/// Pieces of a line per stream (stdout, stderr) until the entry that ends it arrives.
pub type Pending = [Option<(String, Vec<u8>)>; 2];

/// Whole lines from CRI entries, as (time of the line's first piece, text): pieces of long
/// lines joined per stream. `pending` carries unfinished lines from one call to the next (a
/// reader following a growing file).
pub fn join_lines(entries: &[LogEntry], pending: &mut Pending) -> Vec<(String, Vec<u8>)> {
    let mut lines = Vec::new();
    for e in entries {
        let slot = usize::from(e.stream == "stderr");
        let entry = pending[slot].get_or_insert_with(|| (e.time.clone(), Vec::new()));
        entry.1.extend_from_slice(e.text.as_bytes());
        if !e.partial {
            if let Some(done) = pending[slot].take() {
                lines.push(done);
            }
        }
    }
    lines
}

/// The container's output as `kubectl logs` shows it: the rotated files oldest first, then the
/// current one; partial entries joined into their lines; both streams interleaved in order.
/// A missing file is no error (no output yet, or rotated away).
pub fn read_logs(path: &Path, max_files: usize, opts: &ReadOptions) -> io::Result<Vec<u8>> {
    let mut files: Vec<PathBuf> = (1..max_files.max(1))
        .rev()
        .map(|n| LogFile::rotated_path(path, n))
        .collect();
    files.push(path.to_path_buf());
    let mut lines: Vec<(String, Vec<u8>)> = Vec::new();
    let mut pending = Pending::default();
    for f in files {
        let text = match fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        lines.extend(join_lines(&parse(&text), &mut pending));
    }
    if let Some(since) = opts.since {
        lines.retain(|(t, _)| DateTime::parse_from_rfc3339(t).is_ok_and(|t| t.with_timezone(&Utc) >= since));
    }
    if let Some(n) = opts.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for (time, text) in lines {
        if opts.timestamps {
            out.extend_from_slice(time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&text);
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_partials_and_the_rest() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"hello\nwor"), vec![(b"hello".to_vec(), false)]);
        assert_eq!(s.push(b"ld\n\n"), vec![(b"world".to_vec(), false), (Vec::new(), false)]);
        assert_eq!(s.push(b"tail"), vec![]);
        assert_eq!(s.finish(), Some((b"tail".to_vec(), false)));
        assert_eq!(s.finish(), None);

        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut data = long.clone();
        data.push(b'\n');
        let out = s.push(&data);
        assert_eq!(out.len(), 3);
        assert!(out[0].1 && out[1].1 && !out[2].1);
        assert_eq!(out[0].0.len(), MAX_LINE);
        assert_eq!(out[2].0.len(), 10);
        // Exactly MAX_LINE is still one entry.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.push(b'\n');
        assert_eq!(s.push(&exact), vec![(vec![b'y'; MAX_LINE], false)]);
    }

    #[test]
    fn formats_cri_lines() {
        let t = DateTime::parse_from_rfc3339("2026-11-27T17:00:00.123456789Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(
            format_entry(t, Stream::Stdout, false, b"hi there"),
            b"2026-11-27T17:00:00.123456789Z stdout F hi there\n".to_vec()
        );
        assert_eq!(
            format_entry(t, Stream::Stderr, true, b""),
            b"2026-11-27T17:00:00.123456789Z stderr P \n".to_vec()
        );
        let parsed = parse("2026-11-27T17:00:00.123456789Z stdout F a b c\ngarbage\n");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].text, "a b c");
    }

    #[test]
    fn reads_logs_as_kubectl_shows_them() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.log");
        let mut f = LogFile::open(&path, 120, 3).expect("open");
        let t = |s: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-11-27T17:00:{s:02}.000000001Z"))
                .expect("time")
                .with_timezone(&Utc)
        };
        f.write_entry(t(1), Stream::Stdout, false, b"one").expect("write");
        f.write_entry(t(2), Stream::Stdout, true, b"tw").expect("write");
        f.write_entry(t(3), Stream::Stderr, false, b"err").expect("write");
        f.write_entry(t(4), Stream::Stdout, false, b"o").expect("write");
        f.write_entry(t(5), Stream::Stdout, false, b"three").expect("write");
        assert!(LogFile::rotated_path(&path, 1).exists(), "spread over rotated files");
        let all = read_logs(&path, 3, &ReadOptions::default()).expect("read");
        assert_eq!(String::from_utf8_lossy(&all), "one\nerr\ntwo\nthree\n");
        let tail = read_logs(
            &path,
            3,
            &ReadOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .expect("tail");
        assert_eq!(String::from_utf8_lossy(&tail), "two\nthree\n");
        let since = ReadOptions {
            since: Some(t(5)),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8_lossy(&read_logs(&path, 3, &since).expect("since")),
            "2026-11-27T17:00:05.000000001Z three\n"
        );
        assert!(read_logs(&dir.path().join("none.log"), 3, &ReadOptions::default())
            .expect("no file")
            .is_empty());
    }

    #[test]
    fn rotates_by_size_keeping_n_files() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pods/c/0.log");
        let mut f = LogFile::open(&path, 100, 3).expect("open");
        let t = Utc::now();
        for i in 0..20 {
            f.write_entry(t, Stream::Stdout, false, format!("line {i:02}").as_bytes())
                .expect("write");
        }
        // Each entry is 48 bytes: two fit in a file.
        assert!(path.exists());
        assert!(LogFile::rotated_path(&path, 1).exists());
        assert!(LogFile::rotated_path(&path, 2).exists());
        assert!(!LogFile::rotated_path(&path, 3).exists(), "only 3 files kept");
        let current = parse(&fs::read_to_string(&path).expect("read"));
        assert_eq!(current.last().map(|e| e.text.as_str()), Some("line 19"));
        let older = parse(&fs::read_to_string(LogFile::rotated_path(&path, 1)).expect("read"));
        assert!(older.iter().all(|e| e.text.as_str() < "line 19"));
        for p in [path.clone(), LogFile::rotated_path(&path, 1)] {
            assert!(fs::metadata(&p).expect("meta").len() <= 102);
        }
        // A single file: truncated in place.
        let single = dir.path().join("one.log");
        let mut f = LogFile::open(&single, 60, 1).expect("open");
        for i in 0..5 {
            f.write_entry(t, Stream::Stderr, false, format!("entry {i}").as_bytes())
                .expect("write");
        }
        let entries = parse(&fs::read_to_string(&single).expect("read"));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].text, "entry 4");
        // Reopening appends.
        let mut f = LogFile::open(&single, 1000, 1).expect("reopen");
        f.write_entry(t, Stream::Stdout, false, b"more").expect("write");
        assert_eq!(parse(&fs::read_to_string(&single).expect("read")).len(), 2);
    }
}
